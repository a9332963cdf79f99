"""The cost of one hop between a server's front and a worker: the control channel
(`inferline.server.workers.Channel`) between two processes, against the floor of the same
length-prefixed exchange over plain asyncio streams.

Two processes joined by a socket pair (the front and a worker are joined the same way); the
worker answers an "http" call at once with a small response, as a model answering in no time
would. Prints the wall time of a call there and back (sequential, after a warm-up) and the
caller's CPU per call, then calls per second with 32 in flight (the plain streams carry one
exchange at a time, having no call ids: that column is the channel's alone).

    python benchmarks/control_channel.py [--calls 5000] [--rounds 3]
"""

import argparse
import asyncio
import os
import socket
import statistics
import time

from inferline.server.serve import run
from inferline.server.workers import Channel

BODY = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}'
HEADERS = [(b"content-type", b"application/json")]
ANSWER = (200, HEADERS, b'{"outputs":[{"name":"predict","data":[0]}]}' * 3)


async def _answer_channel(sock: socket.socket) -> None:
    async def http(*_):
        return ANSWER

    channel = Channel(sock, {"http": http})
    await channel.open()
    await channel.run()


async def _answer_streams(sock: socket.socket) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    while True:
        try:
            size = int.from_bytes(await reader.readexactly(4), "big")
        except asyncio.IncompleteReadError:
            return
        data = await reader.readexactly(size)
        writer.write(len(data).to_bytes(4, "big") + data)


async def _time_channel(sock: socket.socket, calls: int) -> tuple[float, float, float]:
    channel = Channel(sock, {})
    await channel.open()
    reader = asyncio.create_task(channel.run())

    async def one():
        await channel.call("http", "POST", "/v2/models/iris/infer", b"", HEADERS, BODY)

    result = await _time(one, calls)
    channel.close()
    await reader
    return result


async def _time_streams(sock: socket.socket, calls: int) -> tuple[float, float, float]:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    lock = asyncio.Lock()  # one exchange at a time: the plain stream has no call ids

    async def one():
        async with lock:
            writer.write(len(BODY).to_bytes(4, "big") + BODY)
            size = int.from_bytes(await reader.readexactly(4), "big")
            await reader.readexactly(size)

    result = await _time(one, calls)
    writer.close()
    return result


async def _time(one, calls: int) -> tuple[float, float, float]:
    """(us per call wall, us of this process's CPU per call, calls/s with 32 in flight)."""
    for _ in range(calls // 10):
        await one()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        await one()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu

    async def user(n: int):
        for _ in range(n):
            await one()

    started = time.perf_counter()
    await asyncio.gather(*(user(calls // 32) for _ in range(32)))
    rate = (calls // 32 * 32) / (time.perf_counter() - started)
    return wall / calls * 1e6, cpu / calls * 1e6, rate


def measure(kind: str, calls: int) -> tuple[float, float, float]:
    caller, answerer = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the worker's end
        caller.close()
        run((_answer_channel if kind == "channel" else _answer_streams)(answerer))
        os._exit(0)
    answerer.close()
    try:
        return run((_time_channel if kind == "channel" else _time_streams)(caller, calls))
    finally:
        caller.close()
        os.waitpid(pid, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float, float]]] = {"channel": [], "plain streams": []}
    for _ in range(args.rounds):
        for kind in results:  # in turns
            results[kind].append(measure(kind.split()[0], args.calls))
    print(f"{args.rounds} rounds of {args.calls:,} calls; medians (min-max)\n")
    print(f"{'':16}{'us per call':>22}{'caller CPU us':>22}{'calls/s, 32 in flight':>26}")
    for kind, rows in results.items():
        cells = []
        for i in range(3):
            values = [row[i] for row in rows]
            cells.append(
                f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"
            )
        print(f"{kind:16}{cells[0]:>22}{cells[1]:>22}{cells[2]:>26}")


if __name__ == "__main__":
    main()
