"""The shortcuts through library internals (``prediction_service/shortcuts.py``): each gives
what the public API gives, and the upstream behaviour each relies on is pinned here, so an
upgrade that changes it fails in this file. With the shortcuts off, the public API answers.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import uvicorn
import uvloop
from prometheus_client import Histogram
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from prediction_service import shortcuts
from prediction_service.metrics import Metrics
from prediction_service.shortcuts import HttpProtocol, OneWriteTransport, observe_many, observe_one

pytestmark = pytest.mark.unit

rng = np.random.default_rng(1)


@pytest.fixture(params=[True, False], ids=["shortcuts", "public"])
def switched(request: pytest.FixtureRequest) -> Iterator[bool]:
    shortcuts.configure(request.param)
    yield request.param
    shortcuts.configure(True)


# -- 1. prometheus_client histograms -------------------------------------------------------
def _samples(m: Metrics) -> dict[str, float]:
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for metric in m.prediction_value.collect()
        for s in metric.samples
    }


def test_observe_many_and_observe_one_equal_observe(switched: bool) -> None:
    # Bounds themselves (0.1, 0.25, 1000.0) fall in their own bucket; beyond the last, +Inf.
    values = np.concatenate([rng.uniform(0, 6, 5000), [0.1, 0.25, 1000.0, 5e6, -3.0]])
    one, many, bisected = Metrics(), Metrics(), Metrics()
    for v in values.tolist():
        one.prediction_value.labels("housing", "1").observe(v)
        observe_one(bisected.prediction_value.labels("housing", "1"), v)
    observe_many(many.prediction_value.labels("housing", "1"), values)
    a, b, c = _samples(one), _samples(many), _samples(bisected)
    assert a.keys() == b.keys() == c.keys()
    for key in a:
        assert b[key] == pytest.approx(a[key], rel=1e-12), key
        assert c[key] == a[key], key


def test_prometheus_histograms_keep_what_the_shortcut_writes() -> None:
    """Pinned: a histogram child keeps its sum in ``_sum``, one counter per bucket in
    ``_buckets`` and the bounds, +Inf last, in ``_upper_bounds``; ``observe`` adds to the
    first bucket whose bound is at least the value."""
    child = Histogram("pin_seconds", "pin", buckets=(0.1, 1.0), registry=None)
    assert child._upper_bounds == [0.1, 1.0, float("inf")]
    child.observe(0.1)
    child.observe(0.5)
    child.observe(7.0)
    assert child._sum.get() == pytest.approx(7.6)
    assert [b.get() for b in child._buckets] == [1.0, 1.0, 1.0]


# -- 2. uvicorn's httptools protocol, one write per response ------------------------------
async def _scenario() -> list[bytes | None]:
    loop = asyncio.get_running_loop()
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    t = OneWriteTransport(transport, loop)  # type: ignore[arg-type]

    async def received() -> bytes | None:
        await asyncio.sleep(0.05)  # the kernel delivers what was sent by now
        return await _now(peer)

    seen: list[bytes | None] = []
    t.write(b"head;")
    seen.append(await _now(peer))  # held: nothing sent yet
    t.write(b"body;")
    seen.append(await received())  # sent together
    t.write(b"alone;")
    seen.append(await received())  # the loop's pass sent it
    t.write(b"last;")
    t.close()  # sends what is held before closing
    seen.append(await received())
    seen.append(await received())  # end of stream
    peer.close()
    return seen


async def _now(peer: socket.socket) -> bytes | None:
    """What the peer has right now, without letting the event loop run."""
    try:
        return peer.recv(1024)
    except BlockingIOError:
        return None


def test_one_write_transport_sends_two_writes_as_one_and_keeps_order() -> None:
    for run in (asyncio.run, uvloop.run):
        assert run(_scenario()) == [None, b"head;body;", b"alone;", b"last;", b""]


def test_uvicorn_s_protocol_takes_its_transport_in_connection_made() -> None:
    """Pinned: the protocol we subclass gets its transport in ``connection_made`` and
    writes responses through it (``self.transport``)."""
    assert issubclass(HttpProtocol, HttpToolsProtocol)
    assert list(inspect.signature(HttpToolsProtocol.connection_made).parameters) == [
        "self",
        "transport",
    ]
    assert "self.transport.write(" in inspect.getsource(httptools_impl)


async def _constant(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    if scope["type"] != "http":
        return
    body = b'{"ok": true}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": body})  # type: ignore[operator]


@contextmanager
def uvicorn_server() -> Iterator[int]:
    """A real uvicorn server in a thread, with the protocol the switch gives; its port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        _constant, host="127.0.0.1", port=port, http=shortcuts.http_protocol(),
        log_level="warning", lifespan="off", loop="uvloop",
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def _first_read(port: int) -> tuple[bytes, bytes]:
    """What the first recv of a keep-alive request's answer holds (all of it, when it was
    one write), and all of it."""
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        first = whole = client.recv(65536)  # as soon as anything arrives
        while not whole.endswith(b"}"):
            whole += client.recv(65536)
    return first, whole


def test_a_real_uvicorn_answers_with_the_protocol_either_way(switched: bool) -> None:
    with uvicorn_server() as port:
        first, whole = _first_read(port)
    assert whole.startswith(b"HTTP/1.1 200 OK\r\n") and whole.endswith(b'{"ok": true}')
    if switched:  # the status line, headers and body left in one write
        assert first == whole
    assert shortcuts.http_protocol() == (HttpProtocol if switched else "httptools")


def _answer(client: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    client.settimeout(10)
    out = b""
    while chunk := client.recv(65536):
        out += chunk
    return out


def test_headers_are_bounded_in_size_and_in_time() -> None:
    """Pinned with the protocol's own callbacks: a silent connection, a slowloris and an
    oversized header are each closed, and a client that behaves is served meanwhile."""
    shortcuts.configure(True, max_header_bytes=4096, header_timeout_s=0.5)
    try:
        with uvicorn_server() as port:
            silent = socket.create_connection(("127.0.0.1", port))
            slow = socket.create_connection(("127.0.0.1", port))
            started = time.monotonic()
            for byte in b"GET / HTTP/1.1\r\n":  # a byte at a time, never the end of headers
                slow.sendall(bytes([byte]))
                time.sleep(0.02)
            assert _answer(slow).startswith(b"HTTP/1.1 408 ")
            assert time.monotonic() - started < 3  # swept every second
            assert _answer(silent).startswith(b"HTTP/1.1 408 ")
            with socket.create_connection(("127.0.0.1", port)) as big:
                # Counted read by read: at most the limit and one read (256 KB) are held.
                pad = b"p" * 4 * 1024 * 1024
                try:
                    big.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + pad + b"\r\n\r\n")
                except OSError:
                    pass  # closed on us before the end: the answer is waiting
                assert _answer(big).startswith(b"HTTP/1.1 431 ")
            assert _first_read(port)[1].endswith(b'{"ok": true}')
            silent.close()
            slow.close()
    finally:
        shortcuts.configure(True)
