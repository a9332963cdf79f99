"""Kafka bus against Tansu: produce->poll latency on one partition, produce throughput of 1 KB
messages (sequential and 100 in flight), consume throughput from a backlog, and a relay (read,
write on, commit: what a pipeline stage does) awaiting each write against handing a poll's
writes over together, with client and broker CPU.

    python benchmarks/kafka_bus.py BOOTSTRAP [--tansu-pid PID] [--set key=value ...]
"""

import argparse
import asyncio
import contextlib
import os
import resource
import statistics
import time
import uuid

from inferline.bus.kafka import KafkaBus


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_of(pid: int | None) -> float:
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Meter:
    def __init__(self, pid):
        self.pid = pid

    def __enter__(self):
        self.t, self.c, self.b = time.perf_counter(), cpu_self(), cpu_of(self.pid)
        return self

    def __exit__(self, *_):
        self.wall = time.perf_counter() - self.t
        self.client_cpu = cpu_self() - self.c
        self.broker_cpu = cpu_of(self.pid) - self.b


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def latency(bus: KafkaBus, pid, count: int) -> None:
    topic = f"bench.lat.{uuid.uuid4().hex[:8]}"
    await bus.create_topic(topic, 1)
    consumer = await bus.consumer(f"{topic}.g", [topic])
    ack, e2e, commits = [], [], []
    with Meter(pid) as meter:
        for _ in range(count):
            started = time.perf_counter()
            await bus.produce(topic, b"x" * 1024, key=b"k")
            acked = time.perf_counter()
            got = []
            while not got:
                got = await consumer.poll(5.0)
            done = time.perf_counter()
            ack.append(acked - started)
            e2e.append(done - started)
            before = time.perf_counter()
            await consumer.commit({got[-1].topic_partition: got[-1].offset + 1})
            commits.append(time.perf_counter() - before)
    ms = lambda v: f"{1000 * v:.2f} ms"  # noqa: E731
    print(
        f"latency ({count} sequential round trips, 1 KB, one partition): "
        f"produce ack p50 {ms(statistics.median(ack))}, p99 {ms(pct(ack, 0.99))}; "
        f"produce->poll p50 {ms(statistics.median(e2e))}, p99 {ms(pct(e2e, 0.99))}; "
        f"commit after poll p50 {ms(statistics.median(commits))}, p99 {ms(pct(commits, 0.99))}; "
        f"CPU per round trip (incl. commit) client {ms(meter.client_cpu / count)}, "
        f"broker {ms(meter.broker_cpu / count)}"
    )

    # Idle cost of a joined consumer nobody writes to.
    await asyncio.sleep(0.5)
    with Meter(pid) as idle:
        await asyncio.sleep(3)
    print(
        f"idle for 3 s with one consumer: client CPU {100 * idle.client_cpu / idle.wall:.1f}%, "
        f"broker CPU {100 * idle.broker_cpu / idle.wall:.1f}% of a core"
    )
    await consumer.close()


async def throughput(bus: KafkaBus, pid, count: int, in_flight: int) -> None:
    topic = f"bench.tput.{uuid.uuid4().hex[:8]}"
    await bus.create_topic(topic, 1)
    value = os.urandom(1024)
    await bus.produce(topic, value)  # warm: metadata, connection
    with Meter(pid) as meter:
        if in_flight == 1:
            for _ in range(count):
                await bus.produce(topic, value)
        else:
            semaphore = asyncio.Semaphore(in_flight)

            async def one():
                async with semaphore:
                    await bus.produce(topic, value)

            await asyncio.gather(*(one() for _ in range(count)))
    print(
        f"produce {count} x 1 KB, {in_flight} in flight: {count / meter.wall:,.0f} msg/s "
        f"({count / meter.wall / 1024:.1f} MB/s), client CPU {1e6 * meter.client_cpu / count:.0f}"
        f" us/msg, broker CPU {1e6 * meter.broker_cpu / count:.0f} us/msg"
    )


async def consume(bus: KafkaBus, pid, count: int) -> None:
    topic = f"bench.cons.{uuid.uuid4().hex[:8]}"
    await bus.create_topic(topic, 1)
    value = os.urandom(1024)
    semaphore = asyncio.Semaphore(100)

    async def one():
        async with semaphore:
            await bus.produce(topic, value)

    await asyncio.gather(*(one() for _ in range(count)))
    consumer = await bus.consumer(f"{topic}.g", [topic], from_beginning=True)
    got = 0
    with Meter(pid) as meter:
        while got < count:
            got += len(await consumer.poll(5.0, max_messages=10_000))
    print(
        f"consume {count} x 1 KB from a backlog: {count / meter.wall:,.0f} msg/s, "
        f"client CPU {1e6 * meter.client_cpu / count:.0f} us/msg, "
        f"broker CPU {1e6 * meter.broker_cpu / count:.0f} us/msg"
    )
    await consumer.close()


async def relay(bus: KafkaBus, pid, count: int, together: bool) -> None:
    """`count` messages written at once to topic A; a relay reads A, writes each message to B
    and commits every poll; timed until a reader of B has them all."""
    tag = uuid.uuid4().hex[:8]
    source, sink = f"bench.relay.{tag}.a", f"bench.relay.{tag}.b"
    for topic in (source, sink):
        await bus.create_topic(topic, 1)
    reader = await bus.consumer(f"{sink}.g", [sink])
    relay_consumer = await bus.consumer(f"{source}.g", [source])

    async def run_relay():
        while True:
            batch = await relay_consumer.poll(0.1)
            if not batch:
                continue
            writes = [bus.produce(sink, m.value, key=m.key, partition=0) for m in batch]
            if together:
                await asyncio.gather(*writes)
            else:
                for write in writes:
                    await write
            await relay_consumer.commit({batch[-1].topic_partition: batch[-1].offset + 1})

    task = asyncio.create_task(run_relay())
    value = os.urandom(300)
    got = 0
    with Meter(pid) as meter:
        await asyncio.gather(
            *(bus.produce(source, value, key=b"%d" % i, partition=0) for i in range(count))
        )
        while got < count:
            got += len(await reader.poll(5.0, max_messages=10_000))
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    how = "a poll's writes awaited together" if together else "each write awaited in turn"
    print(
        f"relay {count} x 300 B, {how}: {count / meter.wall:,.0f} msg/s, "
        f"client CPU {1e6 * meter.client_cpu / count:.0f} us/msg, "
        f"broker CPU {1e6 * meter.broker_cpu / count:.0f} us/msg"
    )
    await relay_consumer.close()
    await reader.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("--tansu-pid", type=int)
    parser.add_argument("--set", action="append", default=[], help="client property key=value")
    parser.add_argument("--round-trips", type=int, default=300)
    parser.add_argument("--messages", type=int, default=20000)
    args = parser.parse_args()
    config = {"bootstrap.servers": args.bootstrap}
    for item in args.set:
        key, value = item.split("=", 1)
        config[key] = value
    print("config:", config)
    bus = KafkaBus(config)
    try:
        await latency(bus, args.tansu_pid, args.round_trips)
        await throughput(bus, args.tansu_pid, args.messages // 10, 1)
        await throughput(bus, args.tansu_pid, args.messages, 100)
        await consume(bus, args.tansu_pid, args.messages)
        await relay(bus, args.tansu_pid, args.messages // 10, together=False)
        await relay(bus, args.tansu_pid, args.messages // 10, together=True)
    finally:
        await bus.close()


if __name__ == "__main__":
    asyncio.run(main())
