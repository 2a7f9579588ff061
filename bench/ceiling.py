"""The HTTP ceilings: a constant reply on the same stack as the API.

`python bench/ceiling.py --port 8100` serves a FastAPI route that reads the body and answers a
constant (FastAPI, uvicorn, uvloop, httptools, orjson); `--bare` serves the same reply from a
bare ASGI callable on the same uvicorn settings: what the server stack itself can do, the
ceiling no code of ours can pass. Both run on the API's own HTTP protocol
(`prediction_service.shortcuts.HttpProtocol`, one write per response), so a ratio to them
measures our application code, not a server setting.
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
import uvicorn
from fastapi import FastAPI, Request

from prediction_service.api.responses import JSONResponse
from prediction_service.shortcuts import HttpProtocol

REPLY = {"model": "iris", "version": "1", "prediction": "setosa", "latency_ms": 0.0}


def create_app() -> FastAPI:
    app = FastAPI(default_response_class=JSONResponse)

    @app.post("/predict/iris")
    async def constant(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse(REPLY)

    @app.get("/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    return app


async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Read the whole body, answer the constant; anything else gets 200 too (readiness)."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    body = orjson.dumps(REPLY)
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--bare", action="store_true", help="a bare ASGI app, not FastAPI")
    args = parser.parse_args()
    uvicorn.run(
        bare if args.bare else create_app(), host="127.0.0.1", port=args.port,
        log_level="warning", access_log=False, loop="uvloop", http=HttpProtocol,
        lifespan="off" if args.bare else "auto",
    )  # fmt: skip


if __name__ == "__main__":
    main()
