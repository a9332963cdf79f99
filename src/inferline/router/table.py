"""Where the router's routes come from, and the loop that keeps the latest table.

A `RouteSource` answers "anything newer than generation N?" with long-poll semantics. The
scheduler's HTTP API is one (`HttpRouteSource`); `MutableRouteSource` is the in-process one used
when scheduler and router share a process, and by tests. `RouteFollower` loops on a source and
keeps the last table it got, so a scheduler that goes away leaves the data plane routing on the
last known table (as Envoy keeps its configuration when the control plane is gone).
"""

import asyncio
import contextlib
import logging
import time
from dataclasses import replace

import httpx

from inferline.router.routes import ExperimentRoute, ModelRoute, RouteSource, RouteTable

log = logging.getLogger(__name__)


class StaticRouteSource:
    """A table that never changes."""

    def __init__(self, table: RouteTable):
        self.table = table

    async def wait_for_change(self, generation: int, timeout: float) -> RouteTable:
        if generation != self.table.generation:
            return self.table
        await asyncio.sleep(timeout)
        return self.table


class MutableRouteSource:
    """An in-memory table that can be replaced; `set` wakes every waiting follower."""

    def __init__(self, table: RouteTable | None = None):
        self._table = table or RouteTable()
        self._changed = asyncio.Event()

    @property
    def table(self) -> RouteTable:
        return self._table

    def set(self, table: RouteTable) -> RouteTable:
        """Publish `table`. Its generation is raised above the current one when it is not
        already, so followers always see the change. Returns the table as published."""
        if table.generation <= self._table.generation:
            table = replace(table, generation=self._table.generation + 1)
        self._table = table
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return table

    def put(self, route: ModelRoute) -> RouteTable:
        """Publish the current table with `route` added or replaced."""
        models = {**self._table.models, route.name: route}
        return self.set(RouteTable(0, models, dict(self._table.experiments)))

    def remove(self, name: str) -> RouteTable:
        models = {n: r for n, r in self._table.models.items() if n != name}
        return self.set(RouteTable(0, models, dict(self._table.experiments)))

    def put_experiment(self, experiment: ExperimentRoute) -> RouteTable:
        experiments = {**self._table.experiments, experiment.name: experiment}
        return self.set(RouteTable(0, dict(self._table.models), experiments))

    async def wait_for_change(self, generation: int, timeout: float) -> RouteTable:
        if generation == self._table.generation:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
        return self._table


class HttpRouteSource:
    """Long-polls the scheduler: `GET http://{scheduler}/v1/routes?generation=N&wait=S`."""

    def __init__(self, scheduler_address: str, client: httpx.AsyncClient | None = None):
        address = scheduler_address.rstrip("/")
        if "://" not in address:
            address = f"http://{address}"
        self.url = f"{address}/v1/routes"
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(10.0))

    async def wait_for_change(self, generation: int, timeout: float) -> RouteTable:
        # The scheduler holds the call up to `wait` seconds; allow it that long plus some slack.
        answer = await self._client.get(
            self.url,
            params={"generation": generation, "wait": f"{timeout:g}"},
            timeout=httpx.Timeout(timeout + 10.0, connect=5.0),
        )
        if answer.status_code != 200:
            raise RuntimeError(
                f"scheduler answered {answer.status_code} on {self.url}: {answer.text[:200]}"
            )
        return RouteTable.from_dict(answer.json())

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()


class RouteFollower:
    """Keeps the newest `RouteTable` of a source, in a background task.

    Errors from the source are logged and retried with exponential back-off; the last table stays
    in use meanwhile.
    """

    def __init__(
        self,
        source: RouteSource,
        poll_wait: float = 30.0,
        min_backoff: float = 0.1,
        max_backoff: float = 5.0,
    ):
        self.source = source
        self.poll_wait = poll_wait
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self._table = RouteTable()
        self._synced = False
        self._changed = asyncio.Condition()
        self._task: asyncio.Task | None = None

    @property
    def table(self) -> RouteTable:
        return self._table

    @property
    def synced(self) -> bool:
        """Whether a table has been received from the source at least once."""
        return self._synced

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="route-follower")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_synced(self, timeout: float | None = None) -> RouteTable:
        """Wait for the first table from the source."""
        return await self._wait(lambda: self._synced, timeout)

    async def wait_for_generation(
        self, generation: int, timeout: float | None = None
    ) -> RouteTable:
        """Wait until the followed table's generation is at least `generation`."""
        return await self._wait(
            lambda: self._synced and self._table.generation >= generation, timeout
        )

    async def _wait(self, predicate, timeout: float | None) -> RouteTable:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)
            return self._table

    async def _run(self) -> None:
        backoff = self.min_backoff
        while True:
            # The first call waits 0 s: by the RouteSource contract it answers at once with the
            # current table, whatever its generation.
            wait = self.poll_wait if self._synced else 0.0
            started = time.monotonic()
            try:
                table = await self.source.wait_for_change(self._table.generation, wait)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cannot read routes (retrying in %.1f s): %s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = self.min_backoff
            if not self._synced or table.generation != self._table.generation:
                await self._publish(table)
            elif time.monotonic() - started < self.min_backoff:
                # A source that answers "no change" without holding the call: do not spin on it.
                await asyncio.sleep(self.min_backoff)

    async def _publish(self, table: RouteTable) -> None:
        async with self._changed:
            self._table = table
            self._synced = True
            self._changed.notify_all()
        log.info("routes at generation %d: %d model(s)", table.generation, len(table.models))
