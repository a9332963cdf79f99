"""What the user sees: a live progress bar while the load runs, then one table."""

import math

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from inferline.bench.loadgen import Progress as LoadProgress
from inferline.bench.stats import SATURATED_CPU, BenchResult


class LiveProgress:
    """A bar over the measured phase: by time for a duration, by count for iterations."""

    def __init__(
        self, console: Console, seconds: float | None, iterations: int | None, warmup: float
    ):
        self.seconds, self.iterations, self.warmup = seconds, iterations, warmup
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        total = iterations if iterations is not None else seconds
        self.task = self.bar.add_task("starting", total=total, status="")

    def __enter__(self) -> "LiveProgress":
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def update(self, state: LoadProgress) -> None:
        if state.warming_up:
            self.bar.update(
                self.task, description="warming up", completed=0, status=f"{self.warmup:g} s"
            )
            return
        measured = max(state.elapsed - self.warmup, 0.0)
        done = state.requests if self.iterations is not None else measured
        rate = state.requests / measured if measured > 0 else 0.0
        status = f"{state.requests} requests, {state.errors} errors, {rate:,.0f} req/s"
        self.bar.update(self.task, description="measuring", completed=done, status=status)


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def print_result(
    console: Console, title: str, result: BenchResult, with_platform: bool = False
) -> None:
    """`with_platform`: the load ran inside the platform's process (--embedded), so its CPU
    share is the platform's too and says nothing about the client alone."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("requests", f"{result.requests}")
    table.add_row("duration", f"{result.elapsed:.2f} s")
    table.add_row("throughput", f"{result.throughput:,.1f} req/s")
    lat = result.latency_ms
    for key in ("p50", "p90", "p99", "max"):
        table.add_row(f"latency {key}", f"{_ms(lat[key])} ms")
    table.add_row("latency mean", f"{_ms(lat['mean'])} ms")
    table.add_row("errors", f"{result.errors}")
    for status, count in result.errors_by_status.items():
        table.add_row(f"  {status}", f"{count}")
    if result.dropped:
        table.add_row("dropped arrivals", f"{result.dropped}")
    cpu = ", ".join(f"{share * 100:.0f}%" for share in result.process_cpu)
    table.add_row("CPU of the platform + load" if with_platform else "client CPU per process", cpu)
    console.print(table)
    if result.interrupted:
        console.print("[yellow]stopped early (Ctrl-C):[/yellow] the numbers cover the time run")
    for status, message in result.error_examples.items():
        console.print(f"[red]{status}[/red]: {message}", highlight=False)
    if result.dropped:
        console.print(
            f"[yellow]warning:[/yellow] {result.dropped} arrivals were dropped: too many "
            "requests were unanswered (raise --max-in-flight, or the server is behind)"
        )
    if result.client_cpu_saturated and not with_platform:
        busy = [i for i, share in enumerate(result.process_cpu) if share >= SATURATED_CPU]
        console.print(
            f"[yellow]warning:[/yellow] load process(es) {', '.join(map(str, busy))} used "
            f"{SATURATED_CPU * 100:.0f}% or more of a core: the client was the bottleneck, so "
            "these numbers are a lower bound on the server's throughput; use more --processes"
        )
