"""Optional bearer-token auth for the REST and gRPC APIs.

With ``serving.auth_tokens_file`` set, every ``/v1/...`` request needs the header
``Authorization: Bearer <token>`` (gRPC: the metadata key ``authorization``) with one of the
file's tokens (one per line; blank lines and ``#`` comments are ignored); otherwise 401 /
``UNAUTHENTICATED``. Health checks stay open (probes carry no token); metrics belong on the
admin port (``serving.admin_port``). Tokens are compared in constant time and never logged or
echoed; a configured file without a token stops the server at start-up (fail closed).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dlpipe.core.errors import ConfigError

PROTECTED = "/v1/"


def read_tokens(path: Path) -> tuple[bytes, ...]:
    try:
        lines = Path(path).expanduser().read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"serving.auth_tokens_file {path}: {exc.strerror}",
                          fix="point it at a readable file with one token per line") from None
    tokens = tuple(t.encode() for t in (line.strip() for line in lines) if t and not t.startswith("#"))
    if not tokens:
        raise ConfigError(f"serving.auth_tokens_file {path} has no token",
                          fix="add one token per line, or unset serving.auth_tokens_file")
    return tokens


def authorized(header: bytes | str | None, tokens: Iterable[bytes]) -> bool:
    """Whether an ``Authorization`` value is ``Bearer <one of tokens>``; constant time per token."""
    if header is None:
        return False
    value = header.encode() if isinstance(header, str) else header
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not token:
        return False
    return any([hmac.compare_digest(token.strip(), t) for t in tokens])  # every token, no short cut


class BearerAuth:
    """ASGI middleware: ``/v1/...`` requests without a valid token get a JSON 401."""

    def __init__(self, app: Any, *, tokens: tuple[bytes, ...]) -> None:
        self.app, self.tokens = app, tokens

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED) or authorized(
                dict(scope["headers"]).get(b"authorization"), self.tokens):
            await self.app(scope, receive, send)
            return
        body = b'{"error":"missing or invalid bearer token (Authorization: Bearer <token>)"}'
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})


def grpc_interceptor(tokens: tuple[bytes, ...]) -> Any:
    """A ``grpc.aio.ServerInterceptor`` refusing calls without a valid token (UNAUTHENTICATED)."""
    import grpc

    async def deny(request: Any, context: Any) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                            "missing or invalid bearer token (metadata authorization: Bearer <token>)")

    refused = grpc.unary_unary_rpc_method_handler(deny)

    class Interceptor(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            metadata = dict(details.invocation_metadata or ())
            if authorized(metadata.get("authorization"), tokens):
                return await continuation(details)
            return refused

    return Interceptor()
