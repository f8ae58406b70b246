#!/usr/bin/env bash
# Seeds the container fuzzer's corpus with a few valid blocks (built by the
# same format as codec/container.cc, so the fuzzer starts past the checksum).
set -euo pipefail
/usr/bin/python3 - "$1" <<'PY'
import struct, subprocess, sys, os
out = sys.argv[1]
def xxh3(b):
    r = subprocess.run(["xxhsum", "-H3", "-"], input=b, capture_output=True, check=True)
    return int(r.stdout.split()[-1], 16)
def block(sections, tokens=16, layers=5):
    hdr_len = 88 + 8 * len(sections)
    total = hdr_len + sum(map(len, sections)) + 8
    layout = struct.pack("<HHHHBBBBffI", layers, 8, 4, 8, 1, 2, 0, 0, 10000.0, 1.0, 0)
    h = struct.pack("<IHHHHIQ", 0x4352564B, 1, hdr_len, 1, 0, len(sections), total)
    h += struct.pack("<QQ", 0x1234, 0x5678) + layout
    h += struct.pack("<IIQII", 0, layers, 0, tokens, 0)
    h += b"".join(struct.pack("<Q", len(s)) for s in sections)
    body = h + b"".join(sections)
    return body + struct.pack("<Q", xxh3(body))
seeds = [block([]), block([b"params", b"k" * 64, b"v" * 64]), block([b"x"] * 16, tokens=1, layers=1)]
for i, s in enumerate(seeds):
    open(os.path.join(out, f"seed{i}"), "wb").write(s)
PY
