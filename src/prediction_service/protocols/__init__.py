"""Protocols over the one core: each decodes its envelope, calls the prediction service with
a feature matrix, and encodes the typed result. No web framework here; the API and the gRPC
server carry these bytes and messages."""
