"""How much the HTTP service accepts: its size limits, written once, and the body-size middleware.

A request body is refused before it is parsed: from its Content-Length when it declares one,
else while it streams in (chunked bodies), so an oversized request costs the service the bytes
it read up to the limit, never the whole body. The per-field limits are declared in the request
models (colpg.service_models) and so appear in the OpenAPI schema.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from colpg.env import byte_count
from colpg.errors import ConfigurationError

__all__ = [
    "MAX_BODY_BYTES_ENV",
    "MAX_DOCUMENTS_PER_REQUEST",
    "MAX_DOCUMENT_CHARS",
    "MAX_ID_CHARS",
    "MAX_METADATA_BYTES",
    "MAX_QUERY_CHARS",
    "MAX_QUERY_VECTORS",
    "MAX_REQUEST_TEXT_CHARS",
    "MAX_RERANK_IDS",
    "BodyLimit",
    "max_body_bytes_from_env",
]

MAX_BODY_BYTES_ENV = "COLPG_MAX_BODY_BYTES"
DEFAULT_MAX_BODY_BYTES = 16 << 20
MAX_QUERY_CHARS = 10_000
MAX_QUERY_VECTORS = 512
MAX_DOCUMENTS_PER_REQUEST = 1_000
#: Candidate ids of one rerank request: their stored tokens are read and scored, nothing is encoded.
MAX_RERANK_IDS = 10_000
MAX_DOCUMENT_CHARS = 1_000_000
#: All the texts of one request together: a few long documents or many short ones, not 1,000 long ones.
MAX_REQUEST_TEXT_CHARS = 4_000_000
#: A document id is a btree key; PostgreSQL's btree refuses keys above ~2.7 kB.
MAX_ID_CHARS = 256
#: A document's metadata as JSON (UTF-8 bytes).
MAX_METADATA_BYTES = 64 << 10


def max_body_bytes_from_env() -> int:
    """``$COLPG_MAX_BODY_BYTES``, else 16 MiB."""
    return byte_count(MAX_BODY_BYTES_ENV, DEFAULT_MAX_BODY_BYTES, least=1)


class BodyLimit:
    """Pure ASGI middleware: a JSON 413 for a body over ``max_bytes``, declared or streamed.

    When the limit is crossed mid-stream the 413 is sent at once and the application is told the
    client went away, so it stops reading; whatever it answers after that is dropped.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ConfigurationError(f"the body limit must be a positive number of bytes, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(f"a body of {int(declared)} bytes", scope, receive, send)
            return
        received = 0
        refused = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    if not started:
                        await self._refuse(f"a body of more than {self.max_bytes} bytes", scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _refuse(self, what: str, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"{what}; the service accepts at most {self.max_bytes} bytes (colpg serve --max-body-bytes, {MAX_BODY_BYTES_ENV})"
        # The body is left unread, so the connection cannot carry another request.
        response = JSONResponse({"detail": detail}, status_code=413, headers={"Connection": "close"})
        await response(scope, receive, send)
