"""Structured JSON logs, and one access-log line per request carrying its request id.

The request id is the client's ``X-Request-ID`` when it looks sane (≤ 128 visible ASCII
characters), else 128 fresh random bits as 32 hex digits; it is echoed in the response's ``X-Request-ID`` header,
stored in ``request.state.request_id`` and written on the access line.
"""

from __future__ import annotations

import logging
import random
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from initserve.api.problems import PROBLEM_MEDIA_TYPE, problem_response

ACCESS_LOGGER = "initserve.access"
_SANE_ID = re.compile(r"[\x21-\x7e]{1,128}")


# Attributes every LogRecord has; anything else on a record came in through ``extra=``.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# uvicorn attaches an ANSI-coloured copy of its messages; it belongs to no log line of ours.
_DROPPED = frozenset({"color_message"})


class ReadableFormatter(logging.Formatter):
    """``12:00:01 INFO  initserve.access request method=POST path=/v1/init status=200 …``: one
    line per record for a person at a terminal, extras as ``key=value`` (values with spaces or
    non-printable characters quoted with ``repr``, so a tensor name cannot break a line)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-5s %(name)s %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [
            f"{key}={_readable(value)}"
            for key, value in vars(record).items()
            if key not in _RECORD_FIELDS and key not in _DROPPED and value is not None
        ]
        return " ".join([line, *extras])


def _readable(value: object) -> str:
    text = str(value)
    return text if text and text.isprintable() and " " not in text else repr(text)


def log_config(level: str, *, readable: bool = False) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` mapping: one JSON object per record, or with ``readable``
    one text line per record (:class:`ReadableFormatter`)."""
    json_formatter = {
        "()": "pythonjsonlogger.json.JsonFormatter",
        "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
        "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        "reserved_attrs": [*_RECORD_FIELDS, *_DROPPED],
    }
    text_formatter = {"()": "initserve.api.access_log.ReadableFormatter"}
    chosen = "text" if readable else "json"
    handler = {"class": "logging.StreamHandler", "formatter": chosen, "stream": "ext://sys.stderr"}
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": json_formatter, "text": text_formatter},
        "handlers": {"stderr": handler},
        "loggers": {
            "initserve": {"handlers": ["stderr"], "level": upper, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": upper, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def request_id_from(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if _SANE_ID.fullmatch(text):
                return text
    # 128 random bits as 32 hex digits, as unique as a UUID4 but without a UUID object or a getrandom()
    # syscall per request (an id needs no cryptographic strength; forked workers reseed `random`).
    return f"{random.getrandbits(128):032x}"


def _internal_error(request_id: str, path: str) -> bytes:
    detail = f"internal error; request id {request_id}"
    return bytes(problem_response(500, "internal-error", detail, instance=path).body)


def internal_error_start(request_id: str, path: str) -> Message:
    body = _internal_error(request_id, path)
    headers = [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode())]
    return {"type": "http.response.start", "status": 500, "headers": headers}


def internal_error_body(request_id: str, path: str) -> Message:
    return {"type": "http.response.body", "body": _internal_error(request_id, path)}


class AccessLogMiddleware:
    """Assigns the request id, echoes it, and logs method, path, status, bytes and duration."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.logger = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 0
        sent = 0

        async def tagged_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, tagged_send)
        except Exception:
            # A bug. Answered here rather than by Starlette's outermost error middleware, so that the 500
            # carries the request id and the access line counts the bytes really sent.
            logging.getLogger("initserve.api").exception(
                "unhandled error", extra={"request_id": request_id, "path": scope.get("path")}
            )
            if status:
                raise  # the head is out: only closing the connection can tell the client
            await tagged_send(internal_error_start(request_id, scope.get("path", "")))
            await tagged_send(internal_error_body(request_id, scope.get("path", "")))
        finally:
            if self.logger.isEnabledFor(logging.INFO):
                self._log(scope, request_id, status, sent, started)

    def _log(self, scope: Scope, request_id: str, status: int, sent: int, started: float) -> None:
        """One JSON access line (only built when INFO is enabled: it costs a few µs per request)."""
        client = scope.get("client")
        self.logger.info(
            "request",
            extra={
                "request_id": request_id,
                "method": scope["method"],
                "path": scope["path"],
                "status": status or 500,
                "bytes_sent": sent,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                "client": f"{client[0]}:{client[1]}" if client else None,
                "etag": scope.get("state", {}).get("etag"),
            },
        )
