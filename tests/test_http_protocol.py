"""The server's one-write transport, over a real socket pair and a real event loop."""

from __future__ import annotations

import asyncio
import socket

import uvloop

from prediction_service.shortcuts import OneWriteTransport


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
