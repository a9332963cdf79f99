"""Micro-benchmark of the embedded bus (not collected by pytest).

    python benchmarks/embedded_bus.py [--messages 20000] [--size 1024] [--fsync]
        [--retention 100000]

Prints messages/s for sequential awaits (one produce at a time), 100 concurrent producers,
a consumer draining the topic, and the worst produce latency seen (loop stalls); then the latency
of one message through a chain of relays, each reading a topic, writing the next and committing
its offset after each message (`--hops`): what one pipeline hop costs on this bus.
"""

import argparse
import asyncio
import itertools
import os
import statistics
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


async def relay(bus: EmbeddedBus, source: str, sink: str) -> None:
    """Read `source`, write each message on to `sink`, then commit: a pipeline stage's loop."""
    consumer = await bus.consumer(f"relay.{source}", [source])
    try:
        while True:
            messages = await consumer.poll(1.0)
            for message in messages:
                await bus.produce(sink, message.value, key=message.key, headers=message.headers)
            if messages:
                last = messages[-1]
                await consumer.commit({last.topic_partition: last.offset + 1})
    finally:
        await consumer.close()


async def hops(bus: EmbeddedBus, count: int, hop_count: int, value: bytes) -> list[float]:
    """Milliseconds for each of `count` sequential messages through `hop_count` relays."""
    topics = [f"hop{i}" for i in range(hop_count + 1)]
    for topic in topics:
        await bus.create_topic(topic)
    sink = await bus.consumer("hops.end", [topics[-1]])
    relays = [asyncio.create_task(relay(bus, a, b)) for a, b in itertools.pairwise(topics)]
    await asyncio.sleep(0.01)
    took = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            await bus.produce(topics[0], value, key=b"k", headers=[("pipeline", b"p")])
            while not await sink.poll(5.0):
                pass
            took.append((time.perf_counter() - started) * 1000)
    finally:
        for task in relays:
            task.cancel()
        await asyncio.gather(*relays, return_exceptions=True)
        await sink.close()
    return took


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--producers", type=int, default=100)
    parser.add_argument("--fsync", action="store_true")
    parser.add_argument("--retention", type=int, default=100_000, help="messages per partition")
    parser.add_argument("--hops", type=int, default=4, help="relays in the latency chain")
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
        took = await hops(bus, 2000, args.hops, value)
        p50, p99 = statistics.median(took), statistics.quantiles(took, n=100)[98]
        print(
            f"through {args.hops} relays, one message at a time: p50 {p50:.3f} ms "
            f"({p50 / args.hops * 1000:.0f} us per hop), p99 {p99:.3f} ms"
        )
        print(f"stats: {bus.stats()}")
        await bus.close()


if __name__ == "__main__":
    asyncio.run(main())
