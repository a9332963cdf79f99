"""A lean keep-alive HTTP/1.1 client for the router's calls to replicas (asyncio + httptools).

It does only what the proxy needs: one request, the whole answer in memory, connections kept per
replica. A well-kept library would be preferred, but both candidates were measured slower here.
httpx.AsyncClient put the router at 535 requests/s in front of a replica serving 16,000, falling
from about 1,200 requests/s with one caller to 240 with 32 (encode/httpx#3215). aiohttp's
`ClientSession` (`AiohttpUpstream` in the benchmark, same interface and failure classes) halves
the router's throughput under load: alone (one-off, one process calling the replica) it takes
95-250 us of CPU per call, this client 25-65 us. Measured with

    python benchmarks/router_overhead.py

(echo model; 3 rounds x 2 s per cell, order rotating; 4 runs on a shared 2-core machine; the
range of the runs' medians; the last column paired per round):

                   direct        router+handwritten  router+aiohttp  aiohttp/handwritten
    c=1   req/s    2060-5040     1410-2020           730-1410        0.64-0.67
          p50 us   179-236       446-569             692-895         +237 to +326 us
    c=8   req/s    5290-10550    2120-4510           1320-2470       0.56-0.60
          p50 us   626-1328      1576-3214           2830-5676       +1.1 to +2.9 ms
    c=32  req/s    6660-13660    2810-6800           1560-3270       0.52-0.58
          p50 us   2114-4723     4221-9906           9293-18306      +4.7 to +8.6 ms

Failures are told apart so the balancer can act on them: `UpstreamConnectError` (nothing is
listening: try another replica, set this one aside), `UpstreamClosed` (the connection closed
before any byte of an answer: try another replica) and `UpstreamBroken` (the answer was cut off).
"""

import asyncio
import collections

import httptools

DEFAULT_CONNECT_TIMEOUT = 5.0
# Below uvicorn's 5 s keep-alive, so an idle connection is dropped here before the replica drops
# it, and a request is not written to a connection the replica is closing.
DEFAULT_KEEPALIVE_EXPIRY = 4.0
DEFAULT_MAX_IDLE_PER_HOST = 256


class UpstreamError(Exception):
    pass


class UpstreamConnectError(UpstreamError):
    pass


class UpstreamClosed(UpstreamError):
    pass


class UpstreamBroken(UpstreamError):
    pass


class UpstreamResponse:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes):
        self.status = status
        self.headers = headers  # names lower-cased, in the replica's order
        self.body = body


class _Connection(asyncio.Protocol):
    """One connection to a replica, carrying one request at a time."""

    def __init__(self):
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future | None = None
        self._received = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []

    # --- one exchange -------------------------------------------------------------------------

    def send(self, data: list[bytes]) -> asyncio.Future:
        self._waiter = asyncio.get_running_loop().create_future()
        self._received = False
        self._headers, self._body = [], []
        self.transport.writelines(data)
        return self._waiter

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamBroken(f"unreadable answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._received:
            self._fail(UpstreamBroken("connection closed in the middle of the answer"))
        else:
            self._fail(UpstreamClosed("connection closed before any answer"))

    # --- httptools callbacks ------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # an interim answer (100 Continue): the real one follows
            self._headers, self._body = [], []
            return
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        if not self.parser.should_keep_alive():
            self.close()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(UpstreamResponse(status, self._headers, body))

    def _fail(self, error: UpstreamError) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)


class HttpUpstream:
    """Connections to replicas, kept alive per `host:port` and reused most-recent first."""

    def __init__(
        self,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY,
        max_idle_per_host: int = DEFAULT_MAX_IDLE_PER_HOST,
    ):
        self.connect_timeout = connect_timeout
        self.keepalive_expiry = keepalive_expiry
        self.max_idle_per_host = max_idle_per_host
        self._idle: dict[str, collections.deque[_Connection]] = {}
        self._closed = False

    async def request(
        self,
        address: str,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
    ) -> UpstreamResponse:
        """Send one request to `address` ("host:port") and read the whole answer. `target` is
        the path and query; `headers` must not hold host, content-length or hop-by-hop ones."""
        lines = [f"{method} {target} HTTP/1.1\r\nhost: {address}\r\n".encode("latin-1")]
        for name, value in headers:
            lines.append(b"%s: %s\r\n" % (name, value))
        if body or method not in ("GET", "HEAD"):
            lines.append(b"content-length: %d\r\n" % len(body))
        lines.append(b"\r\n")
        data = [b"".join(lines), body] if body else [b"".join(lines)]

        connection, reused = await self._acquire(address)
        try:
            try:
                response = await connection.send(data)
            except UpstreamClosed:
                if not reused:
                    raise
                # The replica closed an idle connection just as it was reused: nothing was
                # processed, so one fresh connection is tried before giving up on this replica.
                connection = await self._connect(address)
                response = await connection.send(data)
        except BaseException:
            # Failed or cancelled (timeout) mid-exchange: the connection's state is unknown.
            connection.close()
            raise
        self._release(address, connection)
        return response

    async def _acquire(self, address: str) -> tuple[_Connection, bool]:
        idle = self._idle.get(address)
        if idle:
            now = asyncio.get_running_loop().time()
            while idle:
                connection = idle.pop()
                if not connection.closed and now - connection.idle_since < self.keepalive_expiry:
                    return connection, True
                connection.close()
        return await self._connect(address), False

    async def _connect(self, address: str) -> _Connection:
        host, _, port = address.rpartition(":")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(_Connection, host.strip("[]"), port)
        except TimeoutError:
            raise UpstreamConnectError(
                f"no connection to {address} within {self.connect_timeout:g} s"
            ) from None
        except OSError as exc:
            raise UpstreamConnectError(f"cannot connect to {address}: {exc}") from None
        return connection

    def _release(self, address: str, connection: _Connection) -> None:
        if connection.closed:
            return
        if self._closed:
            connection.close()
            return
        now = asyncio.get_running_loop().time()
        connection.idle_since = now
        idle = self._idle.setdefault(address, collections.deque())
        # The oldest idle connections sit at the left; drop those past their expiry.
        while idle and (idle[0].closed or now - idle[0].idle_since >= self.keepalive_expiry):
            idle.popleft().close()
        if len(idle) >= self.max_idle_per_host:
            connection.close()
            return
        idle.append(connection)

    def idle_connections(self, address: str) -> int:
        return len(self._idle.get(address, ()))

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()
