"""The ``initserve`` command line: one dispatcher, commands registered by the packages that own them.

``serve`` belongs to the HTTP service (:mod:`initserve.api.cli`); ``fetch``, ``stats``, ``schemes``
and ``cache`` belong to the client (:mod:`initserve_client.cli`). Each module exposes
``register(subparsers)``, which adds its commands and sets ``func`` on each parser.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import Any

SERVER_MODULES = ("fastapi", "uvicorn", "pydantic_settings", "prometheus_client")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="initserve",
        description="Deterministic neural-network weight initialization as a service.",
        epilog="Run 'initserve COMMAND --help' for the options and examples of each command.",
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        nargs=0,
        help="print the version, the algorithm and the generation kernel (INITSERVE_KERNEL), then exit",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _register_service(subparsers)
    _register_client(subparsers)
    return parser


class _VersionAction(argparse.Action):
    """``--version``: computed when asked (importing the engine costs time every other command saves)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        sys.stdout.write(version_text(os.environ.get("INITSERVE_KERNEL", "auto").lower()) + "\n")
        parser.exit()


def version_text(kernel_choice: str) -> str:
    """``initserve 0.1.0 (algorithm 1, kernel native)``; the kernel the service would run."""
    from initserve import __version__
    from initserve.engine import ALGORITHM_VERSION, KernelUnavailable, resolve_kernel

    kernel: str
    try:
        kernel = resolve_kernel(kernel_choice).name
    except (KernelUnavailable, ValueError) as exc:
        kernel = f"unavailable: {exc}"
    return f"initserve {__version__} (algorithm {ALGORITHM_VERSION}, kernel {kernel})"


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
