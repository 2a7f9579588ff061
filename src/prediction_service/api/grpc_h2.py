"""Unary gRPC over our own HTTP/2, on the API's event loop: the default gRPC transport.

``grpc.aio``'s machinery costs about 200 us a call on the event-loop thread here (a poller
thread hands every event to the loop), more than our whole handler; with it the gRPC lane
was slower than REST. The Open Inference Protocol's methods are all unary, which needs a
small part of HTTP/2: a connection's settings, pings, flow control and header compression
(HPACK, by the ``hpack`` library), and per call one HEADERS and DATA in, HEADERS, DATA and
trailers out. Calls are answered by the same endpoints, key check, errors and metrics as
the ``grpcio`` transport (``PREDICT_GRPC_ENGINE=grpcio``, kept as the alternative).

Limits: at most ``MAX_STREAMS`` calls in flight a connection (more are refused with
REFUSED_STREAM, which clients retry), request header lists of ``MAX_HEADER_LIST`` bytes,
request messages of ``PREDICT_MAX_BODY_BYTES`` (RESOURCE_EXHAUSTED, answered as soon as the
body passes it), a connection silent for ``PREDICT_HEADER_TIMEOUT_S`` before its preface is
closed, reading paused while the client does not read its answers. Messages may be gzip or
deflate compressed (``grpc-encoding``); answers are not compressed. No TLS: as before, put
a proxy in front for it.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote

import grpc
import hpack

from prediction_service import tracing
from prediction_service.api.grpc_calls import admit, begin_trace, end_trace, failure
from prediction_service.core import Core
from prediction_service.errors import BatchTooLargeError
from prediction_service.protocols.base import Call, Endpoint, Protocol, Reply, start

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR = 0x0, 0x1, 0x3, 0x6
REFUSED_STREAM, COMPRESSION_ERROR = 0x7, 0x9
MAX_FRAME = 16384  # the largest frame we accept (HTTP/2's default; we do not raise it)
MAX_STREAMS = 128
MAX_HEADER_LIST = 16384
MAX_WINDOW = 2**31 - 1
# Our receive windows: a connection's and each call's. Credit is given back as bodies arrive.
WINDOW = 1 << 20
# The answer's fixed header blocks (HPACK, no dynamic table): ":status: 200" is static entry
# 8; content-type (static name 31) and grpc-status are literals without indexing.
_OK_HEADERS = b"\x88" + b"\x0f\x10\x10application/grpc"
_STATUS_0 = b"\x00\x0bgrpc-status\x010"
_415 = b"\x08\x03415"  # ":status: 415", static name 8


def _literal(name: bytes, value: bytes) -> bytes:
    """An HPACK literal header field without indexing, new name, no Huffman coding."""
    return b"\x00" + _length(name) + name + _length(value) + value


def _length(data: bytes) -> bytes:
    """HPACK's string length (7-bit prefix integer, Huffman bit clear)."""
    n = len(data)
    if n < 127:
        return bytes((n,))
    out, n = bytearray((127,)), n - 127
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _keeps_table(block: bytes) -> bool:
    """Whether a (decoded, so well-formed) header block leaves HPACK's dynamic table as it
    was: indexed fields and literals without indexing only, no size update (RFC 7541 6)."""
    i, n = 0, len(block)
    while i < n:
        first = block[i]
        if first & 0x80:  # indexed field
            i = _integer(block, i, 0x7F)[1]
        elif first & 0xC0 == 0x40 or first & 0xE0 == 0x20:  # incremental indexing, size update
            return False
        else:  # literal without indexing or never indexed: a name (index or string), a value
            index, i = _integer(block, i, 0x0F)
            if index == 0:
                i = _skip_string(block, i)
            i = _skip_string(block, i)
    return True


def _integer(block: bytes, i: int, mask: int) -> tuple[int, int]:
    """An HPACK prefix integer at ``i``: its value and the position after it."""
    value, i = block[i] & mask, i + 1
    if value == mask:
        shift = 0
        while True:
            byte, i = block[i], i + 1
            value += (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
    return value, i


def _skip_string(block: bytes, i: int) -> int:
    length, i = _integer(block, i, 0x7F)
    return i + length


# A frame's 9-byte header: length (24 bits) and type in one big-endian word, flags, stream.
_HEAD = struct.Struct(">IBI")


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return _HEAD.pack(len(payload) << 8 | kind, flags, stream) + payload


class H2Error(Exception):
    """A connection error (RFC 9113 section 5.4.1): GOAWAY with this code, then close."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Stream:
    """One call: its endpoint, metadata and body as they arrive, and its answer's progress."""

    __slots__ = ("id", "endpoint", "protocol", "call", "body", "unacked", "send_window",
                 "pending", "answered", "encoding")  # fmt: skip

    def __init__(self, sid: int, send_window: int) -> None:
        self.id = sid
        self.endpoint: Endpoint | None = None
        self.protocol: Protocol | None = None
        self.call = Call({}, b"")  # its metadata now, its message once the body is in
        self.body: bytes | bytearray = b""  # a bytearray once a second frame arrives
        self.unacked = 0  # bytes received since the last WINDOW_UPDATE for this stream
        self.send_window = send_window
        self.pending = b""  # DATA waiting for the client's window, then the trailers
        self.answered = False  # the answer (or a refusal) is written or queued
        self.encoding = b"identity"


class Head:
    """What a request's header block says: the method's path, the content type, the message
    encoding and the metadata a handler may read (binary ``-bin`` entries are not ours)."""

    __slots__ = ("path", "content_type", "encoding", "metadata")

    def __init__(self, headers: Any) -> None:
        self.path = self.content_type = b""
        self.encoding = b"identity"
        metadata = []
        for name, value in headers:
            if name[:1] == b":":
                if name == b":path":
                    self.path = value
            elif name == b"content-type":
                self.content_type = value
            elif name == b"grpc-encoding":
                self.encoding = value
            elif not name.endswith(b"-bin"):
                metadata.append((name, value))
        self.metadata = tuple(metadata)


class Methods:
    """The gRPC endpoints by their full method name, and what serving them needs."""

    def __init__(self, core: Core, served: Sequence[Protocol]) -> None:
        self.core = core
        self.by_path = {
            e.path.encode(): (e, p) for p in served if p.transport == "grpc" for e in p.endpoints
        }
        self.limit = core.settings.max_body_bytes
        self.header_timeout_s = core.settings.header_timeout_s
        self.connections: set[Connection] = set()


class Connection(asyncio.Protocol):
    """One client connection: HTTP/2 frames in, calls dispatched, answers written."""

    def __init__(self, methods: Methods) -> None:
        self.methods = methods
        self.core = methods.core
        self.transport: Any = None
        self.buffer = bytearray()
        self.started = False  # the client's preface is in
        self.decoder = hpack.Decoder(max_header_list_size=MAX_HEADER_LIST)
        # Blocks of indexed fields and literals without indexing do not change the decoder's
        # table: the same bytes decode to the same headers until a block that may arrives.
        self.decoded: dict[bytes, Head] = {}
        self.streams: dict[int, Stream] = {}
        self.last_stream = 0
        self.headers_of: tuple[int, int, bytearray] | None = None  # a block awaiting CONTINUATION
        self.send_window = 65535  # the client's connection window for our DATA
        self.initial_window = 65535  # ... and each new stream's (its SETTINGS may change it)
        self.max_frame = 16384  # the largest frame the client accepts
        self.unacked = 0  # body bytes received since our last connection WINDOW_UPDATE
        self.goaway_sent = False
        self.peer = ""
        self.timer: asyncio.TimerHandle | None = None
        self.tasks: set[asyncio.Future[None]] = set()  # calls awaiting their answer

    # -- the connection ---------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.methods.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else str(peer or "")
        settings = b"".join(
            key.to_bytes(2, "big") + value.to_bytes(4, "big")
            for key, value in ((0x3, MAX_STREAMS), (0x4, WINDOW), (0x6, MAX_HEADER_LIST))
        )
        transport.write(
            _frame(SETTINGS, 0, 0, settings)
            + _frame(WINDOW_UPDATE, 0, 0, (WINDOW - 65535).to_bytes(4, "big"))
        )
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.methods.header_timeout_s, self._silent)

    def _silent(self) -> None:
        if not self.started:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.methods.connections.discard(self)
        self.streams.clear()
        if self.timer is not None:
            self.timer.cancel()

    def pause_writing(self) -> None:
        self.transport.pause_reading()  # a client that does not read is not read either

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def goaway(self, code: int = NO_ERROR, message: str = "") -> None:
        if not self.goaway_sent and not self.transport.is_closing():
            self.goaway_sent = True
            payload = self.last_stream.to_bytes(4, "big") + code.to_bytes(4, "big")
            self.transport.write(_frame(GOAWAY, 0, 0, payload + message.encode()[:200]))
        if code != NO_ERROR or not self.streams:
            self.transport.close()

    # -- frames in --------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.buffer:
            self.buffer += data
            data, self.buffer = bytes(self.buffer), bytearray()
        try:
            if not self.started:
                if len(data) < len(PREFACE):
                    if not PREFACE.startswith(data):
                        raise H2Error(PROTOCOL_ERROR, "not an HTTP/2 connection")
                    self.buffer += data
                    return
                if not data.startswith(PREFACE):
                    raise H2Error(PROTOCOL_ERROR, "not an HTTP/2 connection")
                self.started = True
                data = data[len(PREFACE) :]
            at, end = 0, len(data)
            while end - at >= 9:
                head, flags, sid = _HEAD.unpack_from(data, at)
                length = head >> 8
                if length > MAX_FRAME:
                    raise H2Error(FRAME_SIZE_ERROR, f"a frame of {length} bytes")
                if end - at < 9 + length:
                    break
                at += 9 + length
                self._frame(head & 0xFF, flags, sid & 0x7FFFFFFF, data[at - length : at])
                if self.transport.is_closing():
                    return
            if at < end:
                self.buffer += data[at:]
        except H2Error as exc:
            self.goaway(exc.code, str(exc))
        except hpack.HPACKError as exc:
            self.goaway(COMPRESSION_ERROR, f"header block: {type(exc).__name__}")

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if self.headers_of is not None and kind != CONTINUATION:
            raise H2Error(PROTOCOL_ERROR, "expected CONTINUATION")
        if kind == DATA:
            self._data(flags, sid, payload)
        elif kind == HEADERS:
            self._headers(flags, sid, payload)
        elif kind == CONTINUATION:
            self._continuation(flags, sid, payload)
        elif kind == SETTINGS:
            self._settings(flags, sid, payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(sid, payload)
        elif kind == PING:
            if sid != 0 or len(payload) != 8:
                raise H2Error(PROTOCOL_ERROR, "bad PING")
            if not flags & ACK:
                self.transport.write(_frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            if sid == 0 or len(payload) != 4:
                raise H2Error(PROTOCOL_ERROR, "bad RST_STREAM")
            self.streams.pop(sid, None)
        elif kind == GOAWAY:
            self.goaway()
        elif kind == PRIORITY:
            if sid == 0 or len(payload) != 5:
                raise H2Error(PROTOCOL_ERROR, "bad PRIORITY")
        elif kind == PUSH_PROMISE:
            raise H2Error(PROTOCOL_ERROR, "a client may not push")
        # other frame types are ignored (RFC 9113 section 4.1)

    def _settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid != 0:
            raise H2Error(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            return
        if len(payload) % 6:
            raise H2Error(FRAME_SIZE_ERROR, "SETTINGS length")
        for i in range(0, len(payload), 6):
            key, value = int.from_bytes(payload[i : i + 2], "big"), int.from_bytes(
                payload[i + 2 : i + 6], "big"
            )
            if key == 0x4:  # INITIAL_WINDOW_SIZE: applies to open streams too
                if value > MAX_WINDOW:
                    raise H2Error(FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE")
                for stream in self.streams.values():
                    stream.send_window += value - self.initial_window
                self.initial_window = value
            elif key == 0x5:  # MAX_FRAME_SIZE
                if not 16384 <= value <= 16777215:
                    raise H2Error(PROTOCOL_ERROR, "MAX_FRAME_SIZE")
                self.max_frame = value
            elif key == 0x2 and value > 1:  # ENABLE_PUSH
                raise H2Error(PROTOCOL_ERROR, "ENABLE_PUSH")
        self.transport.write(_frame(SETTINGS, ACK, 0))
        self._flush()

    def _window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2Error(FRAME_SIZE_ERROR, "WINDOW_UPDATE length")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if sid == 0:
            if increment == 0 or self.send_window + increment > MAX_WINDOW:
                raise H2Error(FLOW_CONTROL_ERROR, "connection window")
            self.send_window += increment
        else:
            stream = self.streams.get(sid)
            if stream is not None:
                if increment == 0 or stream.send_window + increment > MAX_WINDOW:
                    self._reset(sid, FLOW_CONTROL_ERROR)
                    return
                stream.send_window += increment
        self._flush()

    @staticmethod
    def _unpad(flags: int, payload: bytes) -> bytes:
        if flags & PADDED:
            if not payload or payload[0] >= len(payload):
                raise H2Error(PROTOCOL_ERROR, "padding")
            return payload[1 : len(payload) - payload[0]]
        return payload

    def _headers(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0 or sid % 2 == 0:
            raise H2Error(PROTOCOL_ERROR, "HEADERS on a server or zero stream")
        block = self._unpad(flags, payload)
        if flags & PRIORITY_FLAG:
            block = block[5:]
        if flags & END_HEADERS:
            self._header_block(flags, sid, block)
        else:
            self.headers_of = (sid, flags, bytearray(block))

    def _continuation(self, flags: int, sid: int, payload: bytes) -> None:
        if self.headers_of is None or self.headers_of[0] != sid:
            raise H2Error(PROTOCOL_ERROR, "unexpected CONTINUATION")
        block = self.headers_of[2]
        block += payload
        if len(block) > MAX_HEADER_LIST:
            raise H2Error(PROTOCOL_ERROR, "header block too large")
        if flags & END_HEADERS:
            first = self.headers_of[1]
            self.headers_of = None
            self._header_block(first, sid, bytes(block))

    def _decode(self, block: bytes) -> Head:
        cached = self.decoded.get(block)
        if cached is not None:
            return cached
        head = Head(self.decoder.decode(block, raw=True))
        if _keeps_table(block):
            if len(self.decoded) >= 64:
                self.decoded.clear()
            self.decoded[block] = head
        else:
            self.decoded.clear()  # the table changed: what was decoded before may not hold
        return head

    def _header_block(self, flags: int, sid: int, block: bytes) -> None:
        head = self._decode(block)  # always: the table must follow the client's
        stream = self.streams.get(sid)
        if stream is not None:  # the client's trailers end its request
            if flags & END_STREAM:
                self._dispatch(stream)
            return
        if sid <= self.last_stream:
            raise H2Error(PROTOCOL_ERROR, "HEADERS on a closed stream")
        self.last_stream = sid
        if self.goaway_sent or len(self.streams) >= MAX_STREAMS:
            self._reset(sid, REFUSED_STREAM)
            return
        stream = self.streams[sid] = Stream(sid, self.initial_window)
        stream.call.headers, stream.encoding = head.metadata, head.encoding
        content_type = head.content_type
        if not content_type.startswith(b"application/grpc"):
            self._write(stream, _frame(HEADERS, END_HEADERS | END_STREAM, sid, _415))
            return
        found = self.methods.by_path.get(head.path)
        if found is None:
            self._fail(stream, grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
            return
        stream.endpoint, stream.protocol = found
        try:  # the key is checked before the body is read
            admit(self.core, stream.endpoint, stream.call, self._peer)
        except Exception as exc:  # noqa: BLE001 - answered as a gRPC status
            self._refuse(stream, exc)
            return
        if flags & END_STREAM:
            self._dispatch(stream)

    def _peer(self) -> str:
        return self.peer

    def _data(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise H2Error(PROTOCOL_ERROR, "DATA on stream 0")
        # Flow control counts the whole frame, padding included.
        self.unacked += len(payload)
        if self.unacked > WINDOW:
            raise H2Error(FLOW_CONTROL_ERROR, "the connection window is exceeded")
        if self.unacked >= WINDOW // 2:
            self.transport.write(_frame(WINDOW_UPDATE, 0, 0, self.unacked.to_bytes(4, "big")))
            self.unacked = 0
        stream = self.streams.get(sid)
        if stream is None:
            if sid > self.last_stream:
                raise H2Error(PROTOCOL_ERROR, "DATA on an idle stream")
            return  # a stream already answered or reset: its data is dropped
        if stream.answered:
            return
        data = self._unpad(flags, payload)
        if not stream.body:  # the commonest: the whole message in one frame, kept as it is
            stream.body = data
        elif type(stream.body) is bytes:
            stream.body = bytearray(stream.body) + data
        else:
            stream.body += data
        stream.unacked += len(payload)
        if len(stream.body) > self.methods.limit + 5:
            self._refuse(stream, self._too_large())
            self._reset(sid, NO_ERROR)  # stop sending
            return
        if flags & END_STREAM:
            self._dispatch(stream)
        elif stream.unacked >= WINDOW // 2:
            self.transport.write(_frame(WINDOW_UPDATE, 0, sid, stream.unacked.to_bytes(4, "big")))
            stream.unacked = 0

    # -- calls --------------------------------------------------------------------------
    def _dispatch(self, stream: Stream) -> None:
        if stream.answered or stream.endpoint is None or stream.protocol is None:
            return
        message = self._message(stream)
        if message is None:
            return
        call, endpoint, protocol = stream.call, stream.endpoint, stream.protocol
        call.body = message
        trace = begin_trace(endpoint, call.headers) if tracing.enabled else None
        try:
            result = start(endpoint, self.core.predictions, call)
        except Exception as exc:  # noqa: BLE001 - answered as a gRPC status
            self._finish(stream, trace, call, exc, protocol)
            return
        if type(result) is Reply:
            self._finish(stream, trace, call, result, protocol)
        else:
            later = self._later(stream, trace, call, result, protocol)  # type: ignore[arg-type]
            task = asyncio.ensure_future(later)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def _message(self, stream: Stream) -> bytes | None:
        """The call's one message, inflated when it came compressed; None when it is refused
        (and answered so)."""
        body, limit = stream.body, self.methods.limit
        stream.body = b""
        if len(body) < 5 or int.from_bytes(body[1:5], "big") != len(body) - 5:
            self._fail(stream, grpc.StatusCode.INTERNAL, "a unary call carries one message")
            return None
        message = bytes(body[5:])
        if not body[0]:
            return message
        wbits = {b"gzip": 31, b"deflate": 15}.get(stream.encoding)
        if wbits is None:
            encoding = stream.encoding.decode("latin-1")
            self._fail(stream, grpc.StatusCode.UNIMPLEMENTED,
                       f"message encoding {encoding!r} is not supported (gzip, deflate)")  # fmt: skip
            return None
        try:  # inflated no further than the limit
            inflated = zlib.decompressobj(wbits).decompress(message, limit + 1)
        except zlib.error:
            self._fail(stream, grpc.StatusCode.INTERNAL, "the compressed message is corrupt")
            return None
        if len(inflated) > limit:
            self._refuse(stream, self._too_large())
            return None
        return inflated

    def _too_large(self) -> BatchTooLargeError:
        return BatchTooLargeError(f"the request is larger than {self.methods.limit} bytes")

    def _refuse(self, stream: Stream, exc: Exception) -> None:
        """A call refused before its handler ran, answered with the status ``exc`` maps to."""
        if stream.endpoint is not None and stream.protocol is not None:
            self._fail(
                stream, *failure(self.core, stream.endpoint, stream.protocol, stream.call, exc)
            )

    async def _later(
        self, stream: Stream, trace: Any, call: Call, result: Awaitable[Reply], protocol: Protocol
    ) -> None:
        try:
            outcome: Reply | Exception = await result
        except Exception as exc:  # noqa: BLE001 - answered as a gRPC status
            outcome = exc
        self._finish(stream, trace, call, outcome, protocol)

    def _finish(
        self, stream: Stream, trace: Any, call: Call, outcome: Reply | Exception, protocol: Protocol
    ) -> None:
        """The call's answer written: its reply, or the status its error maps to."""
        code, message = grpc.StatusCode.OK, ""
        exc = outcome if isinstance(outcome, Exception) else None
        if exc is not None and stream.endpoint is not None:
            code, message = failure(self.core, stream.endpoint, protocol, call, exc)
        if trace is not None:
            end_trace(trace, code, None if exc is None else f"{type(exc).__name__}: {message}")
        extra = b"" if trace is None else _literal(b"traceparent", trace.traceparent().encode())
        if isinstance(outcome, Reply):
            self._answer(stream, outcome.body, extra)
        else:
            self._fail(stream, code, message, extra)

    def _answer(self, stream: Stream, body: bytes, extra: bytes = b"") -> None:
        stream.pending = b"\x00" + len(body).to_bytes(4, "big") + body
        stream.answered = True
        if self.transport.is_closing() or self.streams.get(stream.id) is not stream:
            return  # reset by the client, or the connection is gone
        self._send(stream, _frame(HEADERS, END_HEADERS, stream.id, _OK_HEADERS + extra))

    def _send(self, stream: Stream, head: bytes = b"") -> None:
        """As much of the stream's answer as the client's windows allow, the trailers after
        it, in one write."""
        out = [head]
        data = stream.pending
        while data:
            size = min(len(data), self.max_frame, self.send_window, stream.send_window)
            if size <= 0:
                break
            out.append(_frame(DATA, 0, stream.id, data[:size]))
            data = data[size:]
            self.send_window -= size
            stream.send_window -= size
        stream.pending = data
        if not data:
            out.append(_frame(HEADERS, END_HEADERS | END_STREAM, stream.id, _STATUS_0))
            del self.streams[stream.id]
        self.transport.write(b"".join(out))
        self._closed_if_drained()

    def _flush(self) -> None:
        for stream in [s for s in self.streams.values() if s.answered and s.pending]:
            if self.send_window <= 0:
                break
            self._send(stream)

    def _fail(
        self, stream: Stream, code: grpc.StatusCode, message: str, extra: bytes = b""
    ) -> None:
        """A trailers-only answer: the status and message, no message body."""
        stream.answered = True
        if self.transport.is_closing() or self.streams.get(stream.id) is not stream:
            return
        block = (_OK_HEADERS + _literal(b"grpc-status", str(code.value[0]).encode())
                 + _literal(b"grpc-message", quote(message, safe=" !#$&'()*+,/:;=?@[]~").encode())
                 + extra)  # fmt: skip
        self._write(stream, _frame(HEADERS, END_HEADERS | END_STREAM, stream.id, block))

    def _write(self, stream: Stream, data: bytes) -> None:
        stream.answered = True
        self.streams.pop(stream.id, None)
        self.transport.write(data)
        self._closed_if_drained()

    def _closed_if_drained(self) -> None:
        if self.goaway_sent and not self.streams:
            self.transport.close()

    def _reset(self, sid: int, code: int) -> None:
        self.streams.pop(sid, None)
        self.transport.write(_frame(RST_STREAM, 0, sid, code.to_bytes(4, "big")))


class Server:
    """The listening socket and its connections; ``stop`` drains them like grpc.aio's."""

    def __init__(self, methods: Methods, server: asyncio.AbstractServer) -> None:
        self.methods = methods
        self.server = server

    async def stop(self, grace: float) -> None:
        """Stop listening, tell every client (GOAWAY), let calls in flight finish for up to
        ``grace`` seconds, then close what is left."""
        self.server.close()
        for connection in list(self.methods.connections):
            connection.goaway()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(c.streams for c in self.methods.connections) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.methods.connections):
            connection.transport.close()


async def start_h2(core: Core, served: Sequence[Protocol], address: tuple[str, int]) -> Server:
    """Serve ``served``'s gRPC endpoints on ``address`` (workers share the port)."""
    methods = Methods(core, served)
    factory: Callable[[], Connection] = lambda: Connection(methods)  # noqa: E731
    server = await asyncio.get_running_loop().create_server(
        factory, address[0], address[1], reuse_port=True, backlog=2048
    )
    return Server(methods, server)
