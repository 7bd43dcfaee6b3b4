"""JSON bodies sent without a JSON Content-Type.

``curl -d '{"shape": [4], "scheme": "zeros"}' URL`` sends ``application/x-www-form-urlencoded``, and
some clients send no Content-Type at all. Many JSON APIs read such bodies as JSON; so does this one:
a POST whose Content-Type is missing or form-urlencoded is handed on as ``application/json``, and
the original type is kept in ``scope["state"]["sent_content_type"]`` so that a body that is not JSON
after all gets a message naming both (see problems.py). Other types (text/plain, multipart) are left
alone and answered by the validation handler with what to send instead.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

_READ_AS_JSON = (b"", b"application/x-www-form-urlencoded")
# The routes whose body is a JSON spec (checkpoint uploads are files and keep their own handling).
JSON_BODY_ROUTES = ("/v1/init", "/v1/bundle", "/v1/resolve", "/v1/derive", "/v1/diagnose")


class JsonBodyMiddleware:
    """Treat POST bodies without a Content-Type, or sent as form data, as JSON on ``paths``."""

    def __init__(self, app: ASGIApp, paths: tuple[str, ...] = JSON_BODY_ROUTES) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.paths:
            headers = list(scope["headers"])
            sent = next((value for name, value in headers if name == b"content-type"), b"")
            if sent.split(b";", 1)[0].strip().lower() in _READ_AS_JSON:
                headers = [(name, value) for name, value in headers if name != b"content-type"]
                headers.append((b"content-type", b"application/json"))
                state = scope.setdefault("state", {})
                state["sent_content_type"] = sent.decode("latin-1") or "none"
                scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)
