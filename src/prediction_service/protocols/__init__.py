"""The protocols the service speaks, registered here, once each.

A protocol is one module that declares a ``Protocol`` (``protocols/base.py``): its endpoints
with their handlers and documentation, and its error shape. The HTTP front end, the OpenAPI
document, the error replies and the metrics are generated from the declarations; to add a
protocol, write its module and add it below (``create_app`` also takes a list of its own).
"""

from __future__ import annotations

from prediction_service.protocols import explain, mlflow, native, v2
from prediction_service.protocols.base import Protocol

# Over HTTP, in front of FastAPI. The first is the shape of errors of every other route.
HTTP: tuple[Protocol, ...] = (native.PROTOCOL, explain.PROTOCOL, v2.PROTOCOL, mlflow.PROTOCOL)


def grpc() -> tuple[Protocol, ...]:
    """Over gRPC (imported only by a server that serves gRPC: see v2_grpc/methods.py)."""
    from prediction_service.protocols.v2_grpc import methods

    return (methods.PROTOCOL,)
