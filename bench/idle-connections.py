#!/usr/bin/env python3
"""Memory per idle TLS connection of the `intraport dev` gateway.

    target/release/intraport dev --format json > dev.json & echo $! > dev.pid
    python3 bench/idle-connections.py dev.json 10000 "$(cat dev.pid)" [SOAK_SECONDS]

Opens N TLS connections (handshakes complete, trusting the dev CA) from 127.0.3.x
source addresses, 200 per address (under the default per-source cap), leaves them idle
and prints the gateway process's RSS before, after, and per connection. Only the Python
standard library; loopback only.

With SOAK_SECONDS, the connections then stay open that long: each sends one request
(no token: answered 401, the connection kept alive) every 8 s, inside the gateway's
10 s HTTP/1.1 keep-alive wait (header_read_timeout_ms), and the RSS is printed every
30 s; a leak shows as growth.
"""

import asyncio
import json
import ssl
import sys
import time

info = json.load(open(sys.argv[1]))
count, pid = int(sys.argv[2]), int(sys.argv[3])
soak = float(sys.argv[4]) if len(sys.argv) > 4 else 0
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
        reader, writer = await asyncio.open_connection(
            host, int(port), ssl=ctx, server_hostname=host, local_addr=(f"127.0.3.{i // 200 + 1}", 0)
        )
        conns.append((reader, writer))


async def keep_alive(i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, until: float) -> int:
    """One request every 8 s until `until`, staggered; the number answered."""
    answered = 0
    await asyncio.sleep(i % 80 / 10)
    while time.time() < until:
        writer.write(b"GET / HTTP/1.1\r\nHost: soak\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")), 0)
        await reader.readexactly(length)
        answered += 1
        await asyncio.sleep(8)
    return answered


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
    if soak > 0:
        until = time.time() + soak
        tasks = [asyncio.create_task(keep_alive(i, r, w, until)) for i, (r, w) in enumerate(conns)]
        samples = []
        while time.time() < until:
            await asyncio.sleep(30)
            samples.append(rss_kib())
            print(f"soak t={soak - (until - time.time()):.0f}s rss_kib={samples[-1]}", flush=True)
        done = await asyncio.gather(*tasks, return_exceptions=True)
        failed = [d for d in done if isinstance(d, BaseException)]
        for kind in sorted({repr(f)[:120] for f in failed})[:5]:
            print(f"soak error: {kind}")
        print(
            f"soak seconds={soak:.0f} connections={len(conns)} requests={sum(d for d in done if isinstance(d, int))} "
            f"connection_errors={len(failed)} rss_min_kib={min(samples)} rss_max_kib={max(samples)} "
            f"rss_first_kib={samples[0]} rss_last_kib={samples[-1]}"
        )


asyncio.run(main())
