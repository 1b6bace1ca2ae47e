"""A fake `powermetrics` executable: stands in for macOS /usr/bin/powermetrics in tests.

Checks the arguments bench passes (--samplers, -i, -f plist), then writes a recorded stream
(NUL-separated plist documents) to stdout in small uneven chunks, as the real tool's pipe can
deliver a record in pieces. Controlled by environment variables:

FAKE_POWERMETRICS_STREAM  the stream file to play
FAKE_POWERMETRICS_MODE    serve (default: play, then run until killed, like the real tool),
                          exit (play, then exit 0: the tool dying mid-run),
                          reject-ane (exit 1 when asked for the ane_power sampler, standing in
                          for a macOS release that does not have it)
FAKE_POWERMETRICS_ARGV    a file to append this invocation's argv to (one JSON list per line)
"""
from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    log = os.environ.get("FAKE_POWERMETRICS_ARGV")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps(args) + "\n")
    opts = dict(zip(args[::2], args[1::2], strict=False))
    if opts.get("-f") != "plist" or not opts.get("-i", "").isdigit() or "--samplers" not in opts:
        print("powermetrics: usage: --samplers LIST -i MS -f plist", file=sys.stderr)
        return 2
    mode = os.environ.get("FAKE_POWERMETRICS_MODE", "serve")
    if mode == "reject-ane" and "ane_power" in opts["--samplers"].split(","):
        print("powermetrics: unrecognized sampler: ane_power", file=sys.stderr)
        return 1
    with open(os.environ["FAKE_POWERMETRICS_STREAM"], "rb") as f:
        data = f.read()
    out = sys.stdout.buffer
    sizes = [7, 1, 513, 64, 2]  # uneven, so NULs and documents straddle chunk boundaries
    i = k = 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        out.write(data[i:i + n])
        out.flush()
        i, k = i + n, k + 1
    if mode == "exit":
        return 0
    while True:  # the real tool samples until it is signalled
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
