#!/usr/bin/env python3
"""Turn `bazel test` output into one 'N passed, N failed, N skipped' line.

Usage: bazel_test_summary.py BAZEL_OUTPUT_LOG [TESTLOGS_DIR]

Counts individual test cases from each test target's test.xml (GoogleTest
writes it via $XML_OUTPUT_FILE; Bazel synthesises one for other tests). Only
targets listed in *this* run's summary are read, so stale XML from an earlier
run is never counted. A target that failed to build, timed out without XML or
has no status counts as one failed test; a target skipped as incompatible
(e.g. CUDA-only without --config=cuda) counts as one skipped.
"""
import os
import re
import sys
import xml.etree.ElementTree as ET

STATUS_RE = re.compile(
    r"^(//\S+|@\S+)\s+(?:\(cached\)\s+)?"
    r"(PASSED|FAILED TO BUILD|FAILED|FLAKY|TIMEOUT|NO STATUS|INCOMPLETE|SKIPPED)\b")


def count_xml(path):
    passed = failed = skipped = 0
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif (case.find("skipped") is not None
              or case.get("result") in ("skipped", "suppressed")
              or case.get("status") == "notrun"):
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped


def main():
    log = sys.argv[1]
    testlogs = sys.argv[2] if len(sys.argv) > 2 else "bazel-testlogs"
    passed = failed = skipped = 0
    seen = set()
    with open(log, errors="replace") as f:
        for line in f:
            m = STATUS_RE.match(line.rstrip())
            if not m or m.group(1) in seen:
                continue
            label, status = m.group(1), m.group(2)
            seen.add(label)
            if status == "SKIPPED":
                skipped += 1
                continue
            pkg, _, name = label.lstrip("/").partition(":")
            xml = os.path.join(testlogs, pkg, name, "test.xml")
            if status in ("PASSED", "FAILED", "FLAKY", "TIMEOUT") and os.path.exists(xml):
                try:
                    p, fl, s = count_xml(xml)
                except ET.ParseError:
                    p, fl, s = 0, 1, 0
                if status not in ("PASSED", "FLAKY") and fl == 0:
                    fl = 1  # e.g. crashed after all cases passed
                passed, failed, skipped = passed + p, failed + fl, skipped + s
            elif status == "PASSED":
                passed += 1
            else:
                failed += 1
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
