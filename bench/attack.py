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

Only the Python standard library; loopback only.
"""

import asyncio
import sys

HOST, PORT = "127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 18090
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
            writer.close()
        except OSError:
            await asyncio.sleep(0.05)


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
    tasks = [spray(f"127.0.1.{i}") for i in range(1, 251)]
    tasks += [slowloris(f"127.0.2.{i % 250 + 1}") for i in range(200)]
    await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(main())
