"""The gRPC transport of our own (api/grpc_h2.py), frame by frame over a real socket: what a
well-behaved client does that Triton's and grpcio's clients do not (CONTINUATION, padding,
one-byte DATA frames, a tiny flow-control window), and what a hostile one does (no preface,
oversized frames, broken header compression, bodies past the limit, too many streams,
silence). Every other gRPC test (tritonclient, grpcio channels, h2load in the bench) runs on
it too, as it is the default; the last test serves the grpcio engine."""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import hpack
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.grpc import service_pb2 as pb  # the protocol's messages, Triton's copy

from prediction_service.settings import Settings
from prediction_service.training.pipeline import TrainingResult
from tests.conftest import HOUSING_RECORD, IRIS_RECORD, small_settings
from tests.live import LiveServer, free_port

pytestmark = pytest.mark.live

Small = tuple[Settings, dict[str, TrainingResult]]
INFER = "/inference.GRPCInferenceService/ModelInfer"
LIMIT = 200_000  # PREDICT_MAX_BODY_BYTES of the server under test
KEY = "predict-key-0123456789"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    0, 1, 3, 4, 6, 7, 8, 9,
)  # fmt: skip


@pytest.fixture(scope="module")
def server(small: Small, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("grpc-h2")
    keys = workdir / "keys.json"
    keys.write_text(json.dumps([{"name": "p", "key": KEY, "scopes": ["predict"]}]))
    port = free_port()
    live = LiveServer(
        small_settings(small, workdir), workdir / "server.log",
        PREDICT_GRPC_PORT=str(port), PREDICT_MAX_BODY_BYTES=str(LIMIT),
        PREDICT_HEADER_TIMEOUT_S="1", PREDICT_API_KEYS_FILE=str(keys),
    )  # fmt: skip
    live.grpc_port = port  # type: ignore[attr-defined]
    yield live.start()
    live.stop()


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes((kind, flags))
        + struct.pack(">I", sid)
        + payload
    )


def message(body: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(body)) + body


def infer_request(model: str, rows: list[list[float]]) -> bytes:
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="x", datatype="FP64", shape=[len(rows), len(rows[0])])
    tensor.contents.fp64_contents.extend(v for row in rows for v in row)
    return request.SerializeToString()


class Client:
    """A raw HTTP/2 client: frames out as given, frames in as they come."""

    def __init__(self, port: int, settings: bytes = b"", preface: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.encoder, self.decoder = hpack.Encoder(), hpack.Decoder()
        self.buffer = b""
        if preface:
            self.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(SETTINGS, 0, 0, settings))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def headers(self, path: str = INFER, extra: list[tuple[str, str]] = (),  # type: ignore[assignment]
                content_type: str = "application/grpc") -> bytes:  # fmt: skip
        return self.encoder.encode(
            [(":method", "POST"), (":scheme", "http"), (":path", path),
             (":authority", "test"), ("content-type", content_type), ("te", "trailers"),
             ("authorization", f"Bearer {KEY}"), *extra]  # fmt: skip
        )

    def read(self) -> tuple[int, int, int, bytes] | None:
        """The next frame, or None when the server closed the connection."""
        while True:
            if len(self.buffer) >= 9:
                length = int.from_bytes(self.buffer[:3], "big")
                if len(self.buffer) >= 9 + length:
                    head, self.buffer = self.buffer[: 9 + length], self.buffer[9 + length :]
                    sid = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
                    return head[3], head[4], sid, head[9:]
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buffer += data

    def answer(self, sid: int, window_updates: bool = False) -> tuple[dict[bytes, bytes], bytes]:
        """Stream ``sid``'s headers (trailers included) and message body; with
        ``window_updates``, credit every DATA frame back as it arrives."""
        headers: dict[bytes, bytes] = {}
        body = b""
        while True:
            got = self.read()
            assert got is not None, "the connection closed before the answer ended"
            kind, flags, stream, payload = got
            if kind == SETTINGS and not flags & 1:
                self.send(frame(SETTINGS, 1, 0))
            if stream != sid:
                continue
            if kind == HEADERS:
                headers.update(dict(self.decoder.decode(payload, raw=True)))
            elif kind == DATA:
                body += payload
                if window_updates and payload:
                    credit = struct.pack(">I", len(payload))
                    self.send(
                        frame(WINDOW_UPDATE, 0, 0, credit) + frame(WINDOW_UPDATE, 0, sid, credit)
                    )
            elif kind == RST_STREAM:
                headers[b"rst"] = payload
            if (kind == HEADERS and flags & 1) or kind == RST_STREAM:
                return headers, body

    def goaway(self) -> int | None:
        """The error code of the server's GOAWAY, or None when it closed without one."""
        while (got := self.read()) is not None:
            if got[0] == GOAWAY:
                return int.from_bytes(got[3][4:8], "big")
        return None

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def client(server: LiveServer) -> Iterator[Client]:
    c = Client(server.grpc_port)  # type: ignore[attr-defined]
    yield c
    c.close()


def decode_predictions(body: bytes) -> list[bytes]:
    assert body[0] == 0 and int.from_bytes(body[1:5], "big") == len(body) - 5
    response = pb.ModelInferResponse.FromString(body[5:])
    predict = next(o for o in response.outputs if o.name == "predict")
    return list(predict.contents.bytes_contents) or [str(v).encode() for v in predict.contents.fp64_contents]  # type: ignore[misc]


def test_continuation_padding_and_one_byte_data_frames(client: Client) -> None:
    block = client.headers()
    middle = len(block) // 2
    padded = bytes((3,)) + block[:middle] + b"\x00" * 3
    client.send(frame(HEADERS, 0x8, 1, padded) + frame(CONTINUATION, 0x4, 1, block[middle:]))
    payload = message(infer_request("iris", [list(IRIS_RECORD.values())]))
    for i, byte in enumerate(payload):
        client.send(frame(DATA, 1 if i == len(payload) - 1 else 0, 1, bytes((byte,))))
    headers, body = client.answer(1)
    assert headers[b":status"] == b"200" and headers[b"grpc-status"] == b"0", headers
    assert decode_predictions(body) == [b"setosa"]
    # the same call again, its header block now all indexed (the decoder's cache)
    client.send(frame(HEADERS, 0x4, 3, client.headers()) + frame(DATA, 1, 3, payload))
    assert decode_predictions(client.answer(3)[1]) == [b"setosa"]


def test_ping_is_answered_and_a_large_answer_waits_for_the_clients_window(
    server: LiveServer,
) -> None:
    # INITIAL_WINDOW_SIZE 100: the server may send 100 bytes of DATA on a stream until credited
    client = Client(server.grpc_port, struct.pack(">HI", 0x4, 100))  # type: ignore[attr-defined]
    try:
        client.send(frame(PING, 0, 0, b"12345678"))
        while (got := client.read()) is not None and got[0] != PING:
            pass
        assert got is not None and got[1] == 1 and got[3] == b"12345678"
        rows = [list(HOUSING_RECORD.values())] * 1000
        payload = message(infer_request("housing", rows))
        chunks = [payload[i : i + 16384] for i in range(0, len(payload), 16384)]
        client.send(frame(HEADERS, 0x4, 1, client.headers()))
        for i, chunk in enumerate(chunks):
            client.send(frame(DATA, 1 if i == len(chunks) - 1 else 0, 1, chunk))
        first = client.read()
        while first is not None and first[0] != DATA:
            first = client.read()
        assert first is not None and len(first[3]) <= 100  # the window, not more
        client.buffer = frame(*first[:3], first[3]) + client.buffer  # read it again below
        headers, body = client.answer(1, window_updates=True)
        assert headers[b"grpc-status"] == b"0" and len(decode_predictions(body)) == 1000
    finally:
        client.close()


def test_refusals_are_grpc_statuses(client: Client) -> None:
    payload = message(infer_request("iris", [list(IRIS_RECORD.values())]))
    client.send(frame(HEADERS, 0x4, 1, client.headers(path="/inference.GRPCInferenceService/Nope"))
                + frame(DATA, 1, 1, payload))  # fmt: skip
    assert client.answer(1)[0][b"grpc-status"] == b"12"  # UNIMPLEMENTED
    client.send(frame(HEADERS, 0x4, 3, client.headers(content_type="application/json"))
                + frame(DATA, 1, 3, payload))  # fmt: skip
    assert client.answer(3)[0][b":status"] == b"415"
    client.send(
        frame(HEADERS, 0x4, 5, client.headers()) + frame(DATA, 1, 5, b"\x00\x00\x00\x00\x09abc")
    )
    headers = client.answer(5)[0]
    assert headers[b"grpc-status"] == b"13"  # a message whose length is wrong: INTERNAL
    bad = message(b"\xff\xff\xff")
    client.send(frame(HEADERS, 0x4, 7, client.headers()) + frame(DATA, 1, 7, bad))
    headers = client.answer(7)[0]
    assert headers[b"grpc-status"] == b"3", headers  # INVALID_ARGUMENT, the protocol's own
    assert b"not a valid ModelInferRequest" in headers[b"grpc-message"]
    # a batch large enough to be decoded in a worker thread, with one bad value in it
    rows = [list(IRIS_RECORD.values())] * 1000
    rows[500] = [float("nan"), *rows[500][1:]]
    payload = message(infer_request("iris", rows))
    chunks = [payload[i : i + 16384] for i in range(0, len(payload), 16384)]
    client.send(frame(HEADERS, 0x4, 9, client.headers()))
    for i, chunk in enumerate(chunks):
        client.send(frame(DATA, 1 if i == len(chunks) - 1 else 0, 9, chunk))
    headers = client.answer(9)[0]
    assert headers[b"grpc-status"] == b"3" and b"finite" in headers[b"grpc-message"], headers


def test_the_key_is_checked_before_the_body_is_sent(client: Client) -> None:
    # HEADERS without END_STREAM and without a key: refused before any DATA
    block = client.encoder.encode([(":method", "POST"), (":scheme", "http"), (":path", INFER),
                                   (":authority", "t"), ("content-type", "application/grpc")])  # fmt: skip
    client.send(frame(HEADERS, 0x4, 1, block))
    headers, _ = client.answer(1)
    assert headers[b"grpc-status"] == b"16" and b"missing bearer token" in headers[b"grpc-message"]
    # the body sent after the refusal is dropped; the connection keeps serving
    client.send(frame(DATA, 1, 1, message(b"\x0a\x04iris")))
    payload = message(infer_request("iris", [list(IRIS_RECORD.values())]))
    client.send(frame(HEADERS, 0x4, 3, client.headers()) + frame(DATA, 1, 3, payload))
    assert decode_predictions(client.answer(3)[1]) == [b"setosa"]


def test_a_body_past_the_limit_is_refused_while_it_arrives(client: Client) -> None:
    client.send(frame(HEADERS, 0x4, 1, client.headers()))
    sent = 0
    chunk = b"\x00" * 16384
    while sent <= LIMIT + 16384:
        client.send(frame(DATA, 0, 1, chunk))
        sent += len(chunk)
    headers, _ = client.answer(1)
    assert headers[b"grpc-status"] == b"8", headers  # RESOURCE_EXHAUSTED
    assert f"larger than {LIMIT} bytes".encode() in headers[b"grpc-message"]


@pytest.mark.parametrize(
    "attack, code",
    [
        (frame(DATA, 0, 0, b"x"), 0x1),  # DATA on stream 0: PROTOCOL_ERROR
        (struct.pack(">I", 20000)[1:] + bytes((DATA, 0)) + struct.pack(">I", 1), 0x6),  # FRAME_SIZE
        (frame(HEADERS, 0x4, 1, b"\xff\xff\xff\xff\x0f"), 0x9),  # broken HPACK: COMPRESSION_ERROR
        (frame(HEADERS, 0x4, 2, b"\x82"), 0x1),  # a stream id a client may not use
        (frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, 2**31)), 0x3),  # FLOW_CONTROL_ERROR
        (frame(CONTINUATION, 0x4, 1, b"\x82"), 0x1),  # CONTINUATION out of nowhere
    ],
    ids=[
        "data-on-zero",
        "oversized-frame",
        "broken-hpack",
        "even-stream",
        "window",
        "continuation",
    ],
)
def test_protocol_attacks_end_the_connection_with_goaway(
    server: LiveServer, attack: bytes, code: int
) -> None:
    client = Client(server.grpc_port)  # type: ignore[attr-defined]
    try:
        client.send(attack)
        assert client.goaway() == code
    finally:
        client.close()


def test_no_preface_or_silence_closes_the_connection(server: LiveServer) -> None:
    port = server.grpc_port  # type: ignore[attr-defined]
    client = Client(port, preface=False)
    try:
        client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.goaway() == 0x1  # PROTOCOL_ERROR, then closed
    finally:
        client.close()
    silent = Client(port, preface=False)
    try:
        started = time.monotonic()
        assert silent.read() is not None  # our SETTINGS
        while silent.read() is not None:
            pass
        assert time.monotonic() - started < 5  # PREDICT_HEADER_TIMEOUT_S=1
    finally:
        silent.close()


def test_streams_past_the_limit_are_refused_and_served_ones_answered(client: Client) -> None:
    block = client.headers()
    client.send(b"".join(frame(HEADERS, 0x4, 2 * i + 1, block) for i in range(130)))
    refused = []
    while len(refused) < 2:
        got = client.read()
        assert got is not None
        if got[0] == RST_STREAM:
            refused.append((got[2], int.from_bytes(got[3], "big")))
    assert refused == [(257, 0x7), (259, 0x7)]  # streams 129 and 130: REFUSED_STREAM
    payload = message(infer_request("iris", [list(IRIS_RECORD.values())]))
    client.send(frame(DATA, 1, 1, payload))
    assert decode_predictions(client.answer(1)[1]) == [b"setosa"]


def test_compressed_messages_and_a_decompression_bomb(server: LiveServer) -> None:
    import gzip

    c = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")  # type: ignore[attr-defined]
    tensor = triton_grpc.InferInput("x", [1, 4], "FP64")
    tensor.set_data_from_numpy(np.array([list(IRIS_RECORD.values())]))
    for algorithm in ("gzip", "deflate"):
        result = c.infer("iris", [tensor], headers={"authorization": f"Bearer {KEY}"},
                         compression_algorithm=algorithm)  # fmt: skip
        assert result.as_numpy("predict")[0] == b"setosa"
    client = Client(server.grpc_port)  # type: ignore[attr-defined]
    try:
        bomb = gzip.compress(b"\x0a\x04iris" + b"\x00" * (50 * LIMIT))  # 10 MB from a few KB
        assert len(bomb) < LIMIT
        block = client.headers(extra=[("grpc-encoding", "gzip")])
        client.send(frame(HEADERS, 0x4, 1, block))
        payload = b"\x01" + struct.pack(">I", len(bomb)) + bomb  # flag 1: compressed
        chunks = [payload[i : i + 16384] for i in range(0, len(payload), 16384)]
        for i, chunk in enumerate(chunks):
            client.send(frame(DATA, 1 if i == len(chunks) - 1 else 0, 1, chunk))
        headers, _ = client.answer(1)
        assert headers[b"grpc-status"] == b"8", headers
    finally:
        client.close()


def test_the_grpcio_engine_serves_the_same(small: Small, tmp_path: Path) -> None:
    import grpc

    port = free_port()
    live = LiveServer(small_settings(small, tmp_path), tmp_path / "server.log",
                      PREDICT_GRPC_PORT=str(port), PREDICT_GRPC_ENGINE="grpcio",
                      PREDICT_MAX_BODY_BYTES=str(LIMIT)).start()  # fmt: skip
    try:
        c = triton_grpc.InferenceServerClient(f"127.0.0.1:{port}")
        tensor = triton_grpc.InferInput("x", [1, 4], "FP64")
        tensor.set_data_from_numpy(np.array([list(IRIS_RECORD.values())]))
        assert c.infer("iris", [tensor]).as_numpy("predict")[0] == b"setosa"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.RpcError) as refused:
                channel.unary_unary(INFER)(b"\x0a\x04iris" + b"\x00" * (2 * LIMIT), timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "Received message larger than max" in str(refused.value.details())  # grpcio's
    finally:
        live.stop()
