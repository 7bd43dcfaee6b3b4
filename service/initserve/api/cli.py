"""``initserve serve``: run the service under uvicorn (httptools parser, uvloop event loop)."""

from __future__ import annotations

import argparse
import os
import sys

from pydantic import ValidationError

from initserve.api.access_log import log_config
from initserve.api.protocol import GuardedHttpToolsProtocol
from initserve.api.settings import Settings
from initserve.engine import KernelUnavailable, resolve_kernel

EXAMPLES = """examples:
  initserve serve                                  # 127.0.0.1:8000
  initserve serve --host 0.0.0.0 --port 9000 --workers 2
  INITSERVE_API_KEYS=k1,k2 INITSERVE_MAX_BYTES=1073741824 initserve serve

Every setting is also an INITSERVE_* environment variable; see docs/api.md.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the HTTP service",
        description="Run the initserve HTTP service (uvicorn + httptools + uvloop).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="bind address (default: INITSERVE_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default: INITSERVE_PORT or 8000)")
    parser.add_argument("--workers", type=int, help="worker processes (default: INITSERVE_WORKERS or 1)")
    parser.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level (default: INITSERVE_LOG_LEVEL or info)",
    )
    parser.set_defaults(func=serve)


def _readable_logs(log_format: str) -> bool:
    """Readable text lines for a person at a terminal; JSON for collectors (and anything piped)."""
    if log_format != "auto":
        return log_format == "text"
    return sys.stderr.isatty()


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    # Flags become environment variables so that every worker process builds the same Settings.
    for name in ("host", "port", "workers", "log_level"):
        value = getattr(args, name, None)
        if value is not None:
            os.environ[f"INITSERVE_{name.upper()}"] = str(value)
    try:
        settings = Settings()
    except ValidationError as exc:
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            sys.stderr.write(f"initserve serve: INITSERVE_{field.upper()}: {error['msg']}\n")
        return 2
    try:  # fail here, with one clear line, rather than in every worker's app factory
        resolve_kernel(settings.kernel)
    except KernelUnavailable as exc:
        sys.stderr.write(f"initserve serve: INITSERVE_KERNEL={settings.kernel}: {exc}\n")
        return 2
    uvicorn.run(
        "initserve.api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http=GuardedHttpToolsProtocol,  # httptools with head limits and a head timeout (api/protocol.py)
        timeout_keep_alive=settings.timeout_keep_alive,
        timeout_graceful_shutdown=settings.graceful_shutdown_timeout,
        log_config=log_config(settings.log_level, readable=_readable_logs(settings.log_format)),
        access_log=False,
        server_header=False,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m initserve.api.cli serve``: the same command without the package-wide dispatcher."""
    parser = argparse.ArgumentParser(prog="initserve")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
