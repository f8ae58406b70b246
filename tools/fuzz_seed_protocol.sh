#!/usr/bin/env bash
# Seeds the protocol fuzzer's corpus with valid requests and replies of every
# op (doc/protocol.md), so it starts past the header checks.
set -euo pipefail
/usr/bin/python3 - "$1" <<'PY'
import os, struct, sys
out = sys.argv[1]
def msg(op, body, token=b"", flags=0, payload_len=0, status=0, rid=7):
    h = struct.pack("<IHHQIIIIQ", 0x4D52564B, 1, op, rid, status, len(token), len(body), flags, payload_len)
    return h + token + body
key = lambda i: struct.pack("<QQ", i, i * 31)
tok = b"tenant-token"
seeds = {
  "put": msg(1, struct.pack("<I", 2) + key(1) + struct.pack("<QI", 0, 100) + key(2) + struct.pack("<QI", 100, 50),
             tok, flags=1, payload_len=150),
  "get": msg(2, struct.pack("<I", 3) + key(1) + key(2) + key(3), tok),
  "exists": msg(3, struct.pack("<I", 2) + key(4) + key(5), tok),
  "delete": msg(4, struct.pack("<I", 1) + key(6), tok),
  "gather": msg(5, struct.pack("<I", 1) + key(7) + struct.pack("<III", 2, 0, 9), tok, flags=2),
  "attend": msg(6, struct.pack("<If", 2, 0.125) + struct.pack("<I", 1) + key(8) + struct.pack("<II", 1, 3), tok,
                payload_len=64),
  "recall": msg(7, struct.pack("<I", 2) + struct.pack("<fff", 0.5, 0.8, 0.2) + struct.pack("<fff", 1.0, 1.0, 0.0), tok),
  "get_reply": msg(0x8002, struct.pack("<I", 2) + struct.pack("<BQI", 0, 0, 64) + struct.pack("<BQI", 5, 0, 0),
                   payload_len=64),
  "exists_reply": msg(0x8003, struct.pack("<III", 3, 2, 0b011) [:9]),
  "error_reply": msg(0x8000, b"server is draining", status=14),
}
for name, b in seeds.items():
    with open(os.path.join(out, "seed_" + name), "wb") as f:
        f.write(b)
PY
