"""Micro-benchmark of the embedded bus (not collected by pytest).

    python benchmarks/embedded_bus.py [--messages 20000] [--size 1024] [--fsync]
        [--retention 100000]

Prints messages/s for sequential awaits (one produce at a time), 100 concurrent producers,
a consumer draining the topic, and the worst produce latency seen (loop stalls).
"""

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from inferline.bus.embedded import EmbeddedBus


async def sequential(bus: EmbeddedBus, topic: str, count: int, value: bytes) -> float:
    worst = 0.0
    for _ in range(count):
        started = time.perf_counter()
        await bus.produce(topic, value)
        worst = max(worst, time.perf_counter() - started)
    return worst


async def concurrent(
    bus: EmbeddedBus, topic: str, count: int, value: bytes, producers: int
) -> float:
    worst = 0.0

    async def producer(n: int) -> None:
        nonlocal worst
        for _ in range(n):
            started = time.perf_counter()
            await bus.produce(topic, value)
            worst = max(worst, time.perf_counter() - started)

    await asyncio.gather(*(producer(count // producers) for _ in range(producers)))
    return worst


async def drain(bus: EmbeddedBus, topic: str, count: int) -> None:
    consumer = await bus.consumer("bench", [topic], from_beginning=True)
    seen = 0
    while seen < count:
        seen += len(await consumer.poll(1.0))
    await consumer.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--producers", type=int, default=100)
    parser.add_argument("--fsync", action="store_true")
    parser.add_argument("--retention", type=int, default=100_000, help="messages per partition")
    args = parser.parse_args()
    value = os.urandom(args.size)
    with tempfile.TemporaryDirectory() as folder:
        bus = EmbeddedBus(Path(folder), fsync=args.fsync, retention_messages=args.retention)
        runs = [
            ("sequential awaits", lambda: sequential(bus, "seq", args.messages // 4, value)),
            (
                f"{args.producers} concurrent producers",
                lambda: concurrent(bus, "con", args.messages, value, args.producers),
            ),
        ]
        for label, run in runs:
            before = bus.stats()
            started = time.perf_counter()
            worst = await run()
            elapsed = time.perf_counter() - started
            after = bus.stats()
            written = after["messages"] - before["messages"]
            transactions = after["transactions"] - before["transactions"]
            print(
                f"produce, {label}: {written / elapsed:,.0f} msg/s "
                f"({elapsed / written * 1e6:.1f} us/msg, {written / transactions:.1f} msg/txn, "
                f"worst latency {worst * 1e3:.1f} ms)"
            )
        started = time.perf_counter()
        await drain(bus, "con", min(args.messages, args.retention))
        elapsed = time.perf_counter() - started
        print(f"consume (poll 500): {min(args.messages, args.retention) / elapsed:,.0f} msg/s")
        print(f"stats: {bus.stats()}")
        await bus.close()


if __name__ == "__main__":
    asyncio.run(main())
