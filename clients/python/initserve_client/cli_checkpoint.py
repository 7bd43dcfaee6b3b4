"""``initserve checkpoint upload|show|derive``: pre-trained initialisation from the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cli import _client, _connection_options, _echo, _parser, _run, _size, _table, json_file

if TYPE_CHECKING:
    from .cli import Subparsers

__all__ = ["register"]

EXAMPLES = """examples:
  initserve checkpoint upload bert.safetensors              # prints the checkpoint digest
  initserve checkpoint show 3f2a…e1 --json                  # the manifest
  initserve checkpoint derive request.json -o derived.safetensors
request.json: {"source": "<digest>", "target": {"seed": 7, "tensors": {name: {"shape", "dtype"}}},
               "rules": [{"match": "classifier.*", "action": "reinit", "scheme": "normal",
                          "params": {"std": 0.02}}, ...]}     (docs/pretrained.md)
"""


def register(subparsers: Subparsers) -> None:
    parser = _parser(
        subparsers,
        "checkpoint",
        "upload checkpoints and derive models from them",
        "Store safetensors checkpoints on the server (content-addressed, deduplicated by tensor) and derive "
        "models from them by ordered rules: copy, slice, pad, reinit, mean_rows, channel_adapt, shrink_perturb, soup.",
        EXAMPLES,
    )
    actions = parser.add_subparsers(dest="checkpoint_command", metavar="ACTION", required=True)
    upload = _parser(actions, "upload", "upload a .safetensors file", None, EXAMPLES)
    upload.add_argument("file", type=Path, help="a .safetensors file (streamed)")
    upload.add_argument("--json", action="store_true", help="print the whole manifest as JSON")
    _connection_options(upload)
    upload.set_defaults(func=lambda args: _run("checkpoint upload", lambda: _upload(args)))
    show = _parser(actions, "show", "print a checkpoint's manifest", None, EXAMPLES)
    show.add_argument("digest", help="checkpoint digest (64 hex)")
    show.add_argument("--json", action="store_true", help="print JSON")
    _connection_options(show)
    show.set_defaults(func=lambda args: _run("checkpoint show", lambda: _show(args)))
    derive = _parser(actions, "derive", "derive a model into a .safetensors file", None, EXAMPLES)
    derive.add_argument("request", type=Path, help="JSON file: {source, target: {seed, tensors}, rules}")
    derive.add_argument("-o", "--output", type=Path, required=True, help="where to write the .safetensors file")
    _connection_options(derive)
    derive.set_defaults(func=lambda args: _run("checkpoint derive", lambda: _derive(args)))


def _print_manifest(manifest: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _echo(json.dumps(manifest, indent=2, sort_keys=True))
        return
    rows = [
        [
            name,
            entry["dtype"],
            "x".join(map(str, entry["shape"])) or "scalar",
            _size(entry["nbytes"]),
            entry["digest"][:16],
        ]
        for name, entry in sorted(manifest["tensors"].items())
    ]
    _echo(_table(rows, ["tensor", "dtype", "shape", "size", "digest"]))
    _echo(f"checkpoint {manifest['digest']}")


def _upload(args: argparse.Namespace) -> int:
    with _client(args) as client:
        manifest = client.upload_checkpoint(args.file)
    if args.json:
        _print_manifest(manifest, True)
        return 0
    stored = manifest["stored"]
    _echo(manifest["digest"])
    _echo(
        f"{len(manifest['tensors'])} tensors; stored {stored['new_tensors']} new ({_size(stored['new_bytes'])})",
        err=True,
    )
    return 0


def _show(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print_manifest(client.checkpoint(args.digest), args.json)
    return 0


def _derive(args: argparse.Namespace) -> int:
    body = json_file(args.request)
    if not {"source", "target"} <= set(body):
        raise ValueError(f"{args.request}: expected a JSON object with 'source', 'target' and 'rules'")
    target = body["target"]
    with _client(args) as client:
        file = client.derive_file(
            body["source"],
            target["tensors"],
            body.get("rules", []),
            seed=target.get("seed", 0),
            layout=target.get("layout", "torch"),
        )
    args.output.write_bytes(bytes(file.buffer))
    _echo(f"wrote {args.output} ({_size(len(file.buffer))}, {len(file.tensors)} tensors)", err=True)
    return 0
