"""The HTTP ceiling: a constant reply on the same stack as the API (FastAPI, uvicorn, uvloop,
httptools, orjson). `python bench/ceiling.py --port 8100`."""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI, Request

from prediction_service.api.responses import JSONResponse

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    uvicorn.run(
        create_app(), host="127.0.0.1", port=args.port, log_level="warning",
        access_log=False, loop="uvloop", http="httptools",
    )  # fmt: skip


if __name__ == "__main__":
    main()
