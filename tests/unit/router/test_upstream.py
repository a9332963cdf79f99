"""The router's HTTP/1.1 upstream client against a scripted asyncio server."""

import asyncio
import contextlib

import pytest

from inferline.demo import free_port
from inferline.router.upstream import (
    HttpUpstream,
    UpstreamBroken,
    UpstreamClosed,
    UpstreamConnectError,
)

OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s"


class ScriptedServer:
    """Reads requests; `answer(server, head, body)` returns the bytes to send back, or None to
    close the connection without answering."""

    def __init__(self, answer):
        self.answer = answer
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.nth_on_connection = 0
        self.tasks: set[asyncio.Task] = set()

    async def handle(self, reader, writer):
        self.connections += 1
        self.tasks.add(asyncio.current_task())
        nth = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                nth += 1
                self.nth_on_connection = nth
                answer = self.answer(self, head, body)
                if asyncio.iscoroutine(answer):
                    answer = await answer
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # not re-raised: asyncio's stream callback logs handlers that end cancelled
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def serving(answer):
    scripted = ScriptedServer(answer)
    server = await asyncio.start_server(scripted.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield scripted, f"127.0.0.1:{port}"
    finally:
        server.close()
        for task in scripted.tasks:
            task.cancel()
        await asyncio.gather(*scripted.tasks)


def echo(server, head, body):
    payload = head.split(b"\r\n")[0] + b"|" + body
    return OK % (len(payload), payload)


async def test_request_and_answer_over_one_kept_alive_connection():
    upstream = HttpUpstream()
    async with serving(echo) as (server, address):
        first = await upstream.request(
            address, "POST", "/v2/models/m_1/infer", [(b"x-request-id", b"r1")], b"body"
        )
        second = await upstream.request(address, "GET", "/v2/models/m_1", [])
        assert first.status == 200
        assert first.body == b"POST /v2/models/m_1/infer HTTP/1.1|body"
        assert (b"content-type", b"text/plain") in first.headers
        assert second.body == b"GET /v2/models/m_1 HTTP/1.1|"
        assert server.connections == 1
        head = server.requests[0][0].decode()
        assert f"host: {address}\r\n" in head
        assert "x-request-id: r1\r\n" in head
        assert "content-length: 4\r\n" in head
        assert "content-length" not in server.requests[1][0].decode()
        assert upstream.idle_connections(address) == 1
    await upstream.aclose()


async def test_concurrent_requests_use_separate_connections():
    async def slow(server, head, body):
        await asyncio.sleep(0.02)
        return OK % (2, b"ok")

    upstream = HttpUpstream()
    async with serving(slow) as (server, address):
        answers = await asyncio.gather(
            *(upstream.request(address, "GET", "/", []) for _ in range(5))
        )
        assert [a.body for a in answers] == [b"ok"] * 5
        assert server.connections == 5
        assert upstream.idle_connections(address) == 5
        await upstream.request(address, "GET", "/", [])
        assert server.connections == 5
    await upstream.aclose()


async def test_chunked_answer_and_interim_100_continue():
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        b'5\r\n{"err\r\n8\r\nor":"x"}\r\n0\r\n\r\n'
    )
    upstream = HttpUpstream()
    async with serving(lambda *_: answer) as (_, address):
        response = await upstream.request(address, "POST", "/", [], b"{}")
        assert response.status == 400
        assert response.body == b'{"error":"x"}'
        assert (b"content-type", b"application/json") in response.headers
        assert (b"transfer-encoding", b"chunked") in response.headers
    await upstream.aclose()


async def test_connection_close_answer_is_not_reused():
    answer = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
    upstream = HttpUpstream()
    async with serving(lambda *_: answer) as (_, address):
        await upstream.request(address, "GET", "/", [])
        assert upstream.idle_connections(address) == 0
    await upstream.aclose()


async def test_nothing_listening_is_a_connect_error():
    upstream = HttpUpstream()
    with pytest.raises(UpstreamConnectError, match="cannot connect"):
        await upstream.request(f"127.0.0.1:{free_port()}", "GET", "/", [])


async def test_closed_before_answering():
    upstream = HttpUpstream()
    async with serving(lambda *_: None) as (_, address):
        with pytest.raises(UpstreamClosed):
            await upstream.request(address, "GET", "/", [])


async def test_answer_cut_off_is_broken():
    async def part_then_close(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(part_then_close, "127.0.0.1", 0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        with pytest.raises(UpstreamBroken):
            await HttpUpstream().request(address, "GET", "/", [])
    finally:
        server.close()


async def test_stale_kept_alive_connection_is_replaced_once():
    def first_answer_only(server, head, body):
        # Each connection answers once, then hangs up on the next request.
        return OK % (2, b"ok") if server.nth_on_connection == 1 else None

    upstream = HttpUpstream()
    async with serving(first_answer_only) as (server, address):
        await upstream.request(address, "GET", "/", [])
        response = await upstream.request(address, "GET", "/", [])
        assert response.body == b"ok"
        assert server.connections == 2
    await upstream.aclose()


async def test_cancelled_request_discards_its_connection():
    async def slow(server, head, body):
        await asyncio.sleep(1)
        return OK % (2, b"ok")

    upstream = HttpUpstream()
    async with serving(slow) as (_, address):
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await upstream.request(address, "GET", "/", [])
        assert upstream.idle_connections(address) == 0
    await upstream.aclose()


async def test_expired_idle_connections_are_not_reused():
    upstream = HttpUpstream(keepalive_expiry=0.0)
    async with serving(echo) as (server, address):
        await upstream.request(address, "GET", "/", [])
        await upstream.request(address, "GET", "/", [])
        assert server.connections == 2
    await upstream.aclose()


async def test_headers_go_out_and_come_back_as_they_are():
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Tag: one\r\nx-tag: two\r\n"
        b"Inference-Header-Content-Length: 7\r\ncontent-length: 2\r\n\r\n{}"
    )
    sent = [(b"content-type", b"application/octet-stream"), (b"x-Mixed-Case", b"A b;c=d")]
    upstream = HttpUpstream()
    async with serving(lambda *_: answer) as (server, address):
        response = await upstream.request(address, "POST", "/p?q=%2F1", sent, b"xy")
        # As given, in order; nothing added besides host and content-length.
        assert server.requests[0][0].split(b"\r\n")[:-2] == [
            b"POST /p?q=%2F1 HTTP/1.1",
            f"host: {address}".encode(),
            b"content-type: application/octet-stream",
            b"x-Mixed-Case: A b;c=d",
            b"content-length: 2",
        ]
    assert response.headers == [
        (b"content-type", b"application/json"),
        (b"x-tag", b"one"),
        (b"x-tag", b"two"),
        (b"inference-header-content-length", b"7"),
        (b"content-length", b"2"),
    ]
    await upstream.aclose()


async def test_large_bodies_both_ways():
    request_body = bytes(range(256)) * 16_384  # 4 MiB
    answer_body = b"z" * (12 * 1024 * 1024 + 3)

    def big(server, head, body):
        assert body == request_body
        return OK % (len(answer_body), answer_body)

    upstream = HttpUpstream()
    async with serving(big) as (server, address):
        for _ in range(2):
            response = await upstream.request(address, "POST", "/", [], request_body)
            assert response.body == answer_body
        assert f"content-length: {len(request_body)}\r\n".encode() in server.requests[0][0]
        assert server.connections == 1
    await upstream.aclose()


async def test_answer_cut_off_in_its_head_is_broken():
    async def part_of_head(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-le")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(part_of_head, "127.0.0.1", 0)
    address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        with pytest.raises(UpstreamBroken):
            await HttpUpstream().request(address, "POST", "/", [], b"{}")
    finally:
        server.close()


async def test_unreadable_answer_is_broken():
    upstream = HttpUpstream()
    async with serving(lambda *_: b"HTTP/1.1 abc\r\n\r\n") as (_, address):
        with pytest.raises(UpstreamBroken, match="unreadable"):
            await upstream.request(address, "GET", "/", [])
    await upstream.aclose()


async def test_stale_connection_is_replaced_once_for_a_post_too():
    def first_answer_only(server, head, body):
        return OK % (len(body), body) if server.nth_on_connection == 1 else None

    upstream = HttpUpstream()
    async with serving(first_answer_only) as (server, address):
        await upstream.request(address, "POST", "/infer", [], b"one")
        response = await upstream.request(address, "POST", "/infer", [], b"two")
        assert response.body == b"two"
        assert server.connections == 2
    await upstream.aclose()


async def test_new_connection_closed_before_answering_is_not_retried():
    upstream = HttpUpstream()
    async with serving(lambda *_: None) as (server, address):
        with pytest.raises(UpstreamClosed):
            await upstream.request(address, "POST", "/infer", [], b"{}")
        assert server.connections == 1
        assert len(server.requests) == 1
    await upstream.aclose()
