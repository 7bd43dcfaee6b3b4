"""The ``initserve`` command line: one dispatcher, commands registered by the packages that own them.

``serve`` belongs to the HTTP service (:mod:`initserve.api.cli`); ``fetch``, ``stats``, ``schemes``
and ``cache`` belong to the client (:mod:`initserve_client.cli`). Each module exposes
``register(subparsers)``, which adds its commands and sets ``func`` on each parser.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


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
    try:
        from initserve.api import cli as service_cli
    except ImportError as exc:  # the `server` extra is not installed
        reason = str(exc)

        def missing(_: argparse.Namespace) -> int:
            print(f"initserve serve needs the server extra: pip install 'initserve[server]' ({reason})",
                  file=sys.stderr)
            return 2

        serve = subparsers.add_parser("serve", help="run the HTTP service (needs initserve[server])")
        serve.set_defaults(func=missing)
        return
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
