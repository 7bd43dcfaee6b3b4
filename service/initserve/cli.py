"""The ``initserve`` command line: one dispatcher, commands registered by the packages that own them.

``serve`` belongs to the HTTP service (:mod:`initserve.api.cli`); ``fetch``, ``stats``, ``schemes``
and ``cache`` belong to the client (:mod:`initserve_client.cli`). Each module exposes
``register(subparsers)``, which adds its commands and sets ``func`` on each parser.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence

SERVER_MODULES = ("fastapi", "uvicorn", "pydantic_settings", "prometheus_client")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="initserve",
        description="Deterministic neural-network weight initialization as a service.",
        epilog="Run 'initserve COMMAND --help' for the options and examples of each command.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _register_service(subparsers)
    _register_client(subparsers)
    return parser


def _register_service(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    missing = [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:  # the `server` extra is not installed: say so instead of failing on import

        def explain(_: argparse.Namespace) -> int:
            sys.stderr.write(
                f"initserve serve needs the server extra (missing: {', '.join(missing)}): "
                "pip install 'initserve[server]'\n"
            )
            return 2

        serve = subparsers.add_parser("serve", help="run the HTTP service (needs initserve[server])")
        serve.set_defaults(func=explain)
        return
    from initserve.api import cli as service_cli

    service_cli.register(subparsers)


def _register_client(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    try:
        from initserve_client import cli as client_cli
    except ImportError:
        return
    client_cli.register(subparsers)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
