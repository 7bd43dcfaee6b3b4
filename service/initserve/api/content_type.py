"""Request bodies: JSON sent without a JSON Content-Type, and bodies sent with a content coding.

``curl -d '{"shape": [4], "scheme": "zeros"}' URL`` sends ``application/x-www-form-urlencoded``, and
some clients send no Content-Type at all. Many JSON APIs read such bodies as JSON; so does this one:
a POST whose Content-Type is missing or form-urlencoded is handed on as ``application/json``, and
the original type is kept in ``scope["state"]["sent_content_type"]`` so that a body that is not JSON
after all gets a message naming both (see problems.py). Other types (text/plain, multipart) are left
alone and answered by the validation handler with what to send instead.

No request body may carry a content coding (``Content-Encoding: gzip``, ``br``, …): the service decodes
none, and reading a coded body as if it were plain would answer a request nobody sent (a plain JSON
body labelled gzip was served as JSON). :class:`ContentEncodingMiddleware` refuses them all with 415
and ``Accept-Encoding: identity`` (RFC 9110 §15.5.16), before the body is read or any memo consulted.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from initserve.api.problems import problem_response

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


_BODYLESS_METHODS = ("GET", "HEAD", "OPTIONS", "DELETE")


def content_codings(value: bytes) -> list[str]:
    """The codings of a ``Content-Encoding`` value, lower-cased, ``identity`` and empty items dropped."""
    codings = (item.strip().lower() for item in value.decode("latin-1").split(","))
    return [coding for coding in codings if coding and coding != "identity"]


class ContentEncodingMiddleware:
    """Refuse every request body sent with a content coding other than ``identity`` (415)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in _BODYLESS_METHODS:
            codings = [
                coding
                for name, value in scope["headers"]
                if name == b"content-encoding"
                for coding in content_codings(value)
            ]
            if codings:
                msg = (
                    f"Content-Encoding {', '.join(codings)} is not supported: send the body uncompressed "
                    "(without a Content-Encoding header, or with Content-Encoding: identity)"
                )
                response = problem_response(
                    415,
                    "unsupported-media-type",
                    msg,
                    instance=scope.get("path", ""),
                    errors=[(("header", "content-encoding"), msg)],
                    # The unread body would otherwise be taken for the next request on this connection.
                    headers={"Accept-Encoding": "identity", "Connection": "close"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
