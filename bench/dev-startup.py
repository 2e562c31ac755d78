#!/usr/bin/env python3
"""Start-up time of `intraport dev`: from launch until its JSON summary is printed,
which happens only once the issuer serves, the gateway has loaded the issuer's keys
and the demo upstream listens.

    python3 bench/dev-startup.py target/release/intraport [RUNS]
"""

import subprocess
import sys
import time

binary, runs = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5
for _ in range(runs):
    started = time.monotonic()
    proc = subprocess.Popen(
        [binary, "dev", "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    for line in proc.stdout:
        if line.rstrip() == "}":
            break
    print(f"ready in {time.monotonic() - started:.3f} s")
    proc.terminate()
    proc.wait()
