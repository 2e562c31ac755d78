#!/usr/bin/env python3
"""Attack load for the goodput-under-attack benchmark (see README, Performance).

Runs until killed, against the gateway at 127.0.0.1:18090, beside the shared harness's
normal load (which comes from 127.0.0.1 with valid tokens):

- a token-spraying flood: bad bearer tokens over keep-alive connections from 250
  loopback addresses (127.0.1.1 ...), each reconnecting as soon as it is cut off, as a
  botnet would; the gateway bans each address after its failures and then refuses it
  at accept;
- a slowloris pool: 200 connections from 127.0.2.x that dribble header lines and never
  finish a request.

`--rate N` caps the spray at N requests (or reconnect attempts) per second in total,
so that on a small machine the attacker does not simply starve the load generator of
CPU: the figure then measures the gateway, not the machine. Without it the sprayers go
as fast as they can.

Only the Python standard library; loopback only.
"""

import argparse
import asyncio

ARGS = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ARGS.add_argument("port", nargs="?", type=int, default=18090)
ARGS.add_argument("--rate", type=float, default=0, help="spray requests per second in total (0: unbounded)")
ARGS.add_argument("--slow", type=int, default=200, help="slowloris connections")
OPTS = ARGS.parse_args()
HOST, PORT = "127.0.0.1", OPTS.port
SOURCES = 250
# Each sprayer's pause between requests, so that all together send --rate per second.
PAUSE = SOURCES / OPTS.rate if OPTS.rate > 0 else 0
BAD = (
    b"GET / HTTP/1.1\r\nHost: bench\r\n"
    b"Authorization: Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6ImZvcmdlZCJ9.eyJzdWIiOiJ4In0.c2ln\r\n\r\n"
)


async def spray(src: str) -> None:
    while True:
        try:
            reader, writer = await asyncio.open_connection(HOST, PORT, local_addr=(src, 0))
            while True:
                writer.write(BAD)
                await writer.drain()
                if not await reader.read(65536):
                    break
                await asyncio.sleep(PAUSE)
            writer.close()
        except OSError:
            await asyncio.sleep(PAUSE or 0.05)
            continue
        await asyncio.sleep(PAUSE)


async def slowloris(src: str) -> None:
    while True:
        try:
            reader, writer = await asyncio.open_connection(HOST, PORT, local_addr=(src, 0))
            writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\n")
            while True:
                await asyncio.sleep(1)
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
        except OSError:
            await asyncio.sleep(0.5)


async def main() -> None:
    tasks = [spray(f"127.0.1.{i}") for i in range(1, SOURCES + 1)]
    tasks += [slowloris(f"127.0.2.{i % 250 + 1}") for i in range(OPTS.slow)]
    await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(main())
