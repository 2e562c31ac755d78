#!/usr/bin/env python3
"""Memory per idle TLS connection of the `intraport dev` gateway.

    target/release/intraport dev --format json > dev.json & echo $! > dev.pid
    python3 bench/idle-connections.py dev.json 9000 "$(cat dev.pid)"

Opens N TLS connections (handshakes complete, trusting the dev CA) from 127.0.3.x
source addresses, 200 per address (under the default per-source cap), leaves them idle
and prints the gateway process's RSS before, after, and per connection. Only the Python
standard library; loopback only.
"""

import asyncio
import json
import ssl
import sys
import time

info = json.load(open(sys.argv[1]))
count, pid = int(sys.argv[2]), int(sys.argv[3])
host, port = info["gateway_url"].split("//")[1].rsplit(":", 1)
ctx = ssl.create_default_context(cafile=info["ca_file"])
conns = []


def rss_kib() -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    raise SystemExit("no VmRSS")


async def connect(i: int, gate: asyncio.Semaphore) -> None:
    async with gate:
        _, writer = await asyncio.open_connection(
            host, int(port), ssl=ctx, server_hostname=host, local_addr=(f"127.0.3.{i // 200 + 1}", 0)
        )
        conns.append(writer)


async def main() -> None:
    before, started = rss_kib(), time.time()
    gate = asyncio.Semaphore(200)
    results = await asyncio.gather(*[connect(i, gate) for i in range(count)], return_exceptions=True)
    errors = [r for r in results if isinstance(r, Exception)]
    await asyncio.sleep(2)
    after = rss_kib()
    print(
        f"connections={len(conns)} errors={len(errors)} rss_before_kib={before} "
        f"rss_after_kib={after} per_connection_kib={(after - before) / max(len(conns), 1):.1f} "
        f"seconds={time.time() - started:.1f}"
    )
    await asyncio.sleep(5)
    print(f"rss_after_5s_idle_kib={rss_kib()}")


asyncio.run(main())
