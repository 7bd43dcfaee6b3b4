"""Client commands of the ``initserve`` CLI: ``fetch``, ``stats``, ``schemes``, ``diagnose``, ``plan``,
``cache ls|verify|prune``.

:func:`register` adds them to the dispatcher in :mod:`initserve.cli`; each parser sets ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from initserve.engine.strict_json import DuplicateKeyError, loads_unique

from ._cache import Cache
from ._client import Client
from ._config import default_cache_dir
from ._errors import CorruptedDownloadError, InitserveError
from ._specs import diagnose_body, init_body

__all__ = ["register"]

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _echo(text: str, *, err: bool = False) -> None:
    """Command output (stdout) or diagnostics (stderr)."""
    (sys.stderr if err else sys.stdout).write(text + "\n")


FETCH_EXAMPLES = """examples:
  initserve fetch --shape 256,128 --scheme kaiming_uniform --seed 42 -o fc.safetensors
  initserve fetch --shape 64,3,3,3 --scheme kaiming_normal --param mode=fan_out \\
                  --param nonlinearity=relu --dtype bfloat16 -o conv.npy
  initserve fetch --spec layer.json -o layer.safetensors       # a spec, or a bundle {"seed", "tensors": {...}}
  INITSERVE_URL=http://10.0.0.5:8000 initserve fetch --shape 10 --scheme zeros -o b.npy
"""
STATS_EXAMPLES = """examples:
  initserve stats --shape 256,128 --scheme kaiming_uniform --seed 42 --name fc1.weight
  initserve stats --shape 4096,4096 --scheme orthogonal --name w --json
  initserve stats --spec layer.json
"""
SCHEMES_EXAMPLES = """examples:
  initserve schemes                  # one line per scheme, with its torch/keras/jax/TF1 equivalents
  initserve schemes kaiming_normal   # one scheme in full (framework spellings such as HeNormal work too)
  initserve schemes --json           # the catalog as JSON (with NAME: that scheme)
"""
PLAN_EXAMPLES = """examples:
  initserve plan torch.nn:Transformer --kwargs '{"d_model": 64, "nhead": 4}'
  initserve plan mypkg.models:build_model --policy kaiming_normal --json
  initserve plan torch.nn:Linear --args '[784, 256]' --no-server
The module is built on the meta device (no memory, no values); with a server, one /v1/resolve call adds
the fans each scheme will use.
"""
DIAGNOSE_EXAMPLES = """examples:
  initserve diagnose --depth 100 --width 512 --activation tanh \\
                     --scheme xavier_normal --scheme kaiming_normal:nonlinearity=tanh --scheme orthogonal:gain=1
  initserve diagnose --depth 50 --width 256 --activation relu --scheme kaiming_normal:nonlinearity=relu --layers
  initserve diagnose --spec diagnose.json --json      # a full /v1/diagnose body
"""
CACHE_EXAMPLES = """examples:
  initserve cache ls
  initserve cache verify             # re-hash every blob; corrupted ones are deleted (exit 1 if any)
  initserve cache verify --server    # also compare each entry with the server's authoritative digest
  initserve cache prune --older-than 30
  initserve cache prune --all
"""


def register(subparsers: Subparsers) -> None:
    """Add the client commands to the ``initserve`` dispatcher."""
    _register_fetch(subparsers)
    _register_stats(subparsers)
    _register_schemes(subparsers)
    _register_diagnose(subparsers)
    _register_plan(subparsers)
    _register_cache(subparsers)
    from . import cli_checkpoint  # imports this module's helpers

    cli_checkpoint.register(subparsers)


# -- argument helpers ---------------------------------------------------------------------------------
def _parser(
    subparsers: Subparsers, name: str, help_: str, description: str | None, epilog: str
) -> argparse.ArgumentParser:
    """A command or an action: its examples (``epilog``) are printed as written."""
    return subparsers.add_parser(
        name, help=help_, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def _connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--url", help="server URL (default: INITSERVE_URL or http://127.0.0.1:8000)")
    group.add_argument("--api-key", help="API key (default: INITSERVE_API_KEY)")
    group.add_argument("--timeout", type=float, help="seconds per network operation (default 60)")
    group.add_argument("--retries", type=int, default=5, help="attempts per request (default 5)")


def _cache_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cache")
    group.add_argument("--cache-dir", help="cache root (default: INITSERVE_CACHE_DIR or the user cache dir)")
    group.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    group.add_argument("--offline", action="store_true", default=None, help="serve from the cache only")


def _spec_options(parser: argparse.ArgumentParser, *, allow_file: bool) -> None:
    group = parser.add_argument_group("spec (see 'initserve schemes' for schemes and their params)")
    if allow_file:
        group.add_argument("--spec", type=Path, help="JSON file with a spec, or a bundle {'seed', 'tensors': {...}}")
    group.add_argument("--shape", help="comma-separated dims, e.g. 256,128 ('' for a scalar)")
    group.add_argument("--scheme", help="scheme name, e.g. kaiming_uniform")
    group.add_argument("--seed", type=int, help="0 ≤ seed < 2^64 (server default 0)")
    group.add_argument("--dtype", choices=["float32", "float64", "float16", "bfloat16"])
    group.add_argument("--layout", choices=["torch", "keras"])
    group.add_argument(
        "--name",
        help="tensor name (required): part of the random key, so two tensors with one seed need two names",
    )
    group.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="scheme parameter (JSON value)"
    )
    group.add_argument("--slice", help="start:stop pairs for leading dims, e.g. 0:64,0:32")


def _parse_shape(text: str) -> list[int]:
    """``"256,128"`` or ``"256x128"`` → ``[256, 128]``; ``""`` → ``[]`` (a scalar). Every part must be an
    integer: an empty or stray part ("256,x", "4,,2") is refused, never dropped."""
    if not text.strip():
        return []
    try:
        return [int(part) for part in text.replace("x", ",").split(",")]
    except ValueError:
        raise ValueError(f"--shape must be comma-separated integers, got {text!r}") from None


def _parse_params(items: Sequence[str], option: str = "--param") -> dict[str, Any] | None:
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} must be KEY=VALUE, got {item!r}")
        if key in params:  # like a JSON object's repeated key: which value is meant?
            raise ValueError(f"{option} {key} is given twice ({params[key]!r} and {raw!r}); give each key once")
        try:
            params[key] = loads_unique(raw)
        except DuplicateKeyError as exc:
            raise ValueError(f"{option} {key}: {exc}") from None
        except ValueError:
            params[key] = raw  # a bare word such as fan_out
    return params or None


def json_file(path: Path) -> dict[str, Any]:
    """The JSON object in the file at ``path``; ValueError naming the file if it is not one, or if any
    of its objects repeats a key (the server refuses such bodies too: which value is meant?)."""
    try:
        value = loads_unique(path.read_text())
    except DuplicateKeyError as exc:
        raise ValueError(f"{path}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return value


def _parse_slice(text: str | None) -> list[list[int]] | None:
    if text is None:
        return None
    pairs = []
    for part in text.split(","):
        start, sep, stop = part.partition(":")
        try:
            pairs.append([int(start), int(stop)])
        except ValueError:
            raise ValueError(f"--slice must be start:stop pairs, got {part!r}") from None
        if not sep:
            raise ValueError(f"--slice must be start:stop pairs, got {part!r}")
    return pairs


def _spec_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    if args.shape is None or args.scheme is None:
        raise ValueError("give --shape and --scheme" + (" (or --spec FILE)" if hasattr(args, "spec") else ""))
    if args.name is None:
        raise ValueError(
            "--name is required: it is part of the random key, so two tensors with the same seed and no name "
            "are the same random stream (a smaller shape is a rescaled prefix of a larger one); "
            "--name weight asks for the server's default"
        )
    return init_body(
        _parse_shape(args.shape),
        args.scheme,
        seed=args.seed,
        params=_parse_params(args.param),
        dtype=args.dtype,
        layout=args.layout,
        name=args.name,
        slice=_parse_slice(args.slice),
    )


def _client(args: argparse.Namespace) -> Client:
    client = Client(
        base_url=args.url,
        api_key=args.api_key,
        timeout=args.timeout,
        retries=args.retries,
        cache_dir=getattr(args, "cache_dir", None),
        cache=not getattr(args, "no_cache", False),
        offline=getattr(args, "offline", None),
    )
    # Messages name the setting the user actually typed: the flags, not the Python keywords.
    config = client._config
    client._config = dataclasses.replace(
        config,
        base_url_source="--url" if args.url else config.base_url_source,
        offline_source="--offline" if getattr(args, "offline", None) else config.offline_source,
    )
    return client


def _run(command: str, body: Callable[[], int]) -> int:
    try:
        return body()
    except (InitserveError, ValueError, OSError) as exc:
        _echo(f"initserve {command}: error: {exc}", err=True)
        return 1


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


# -- fetch --------------------------------------------------------------------------------------------
def _register_fetch(subparsers: Subparsers) -> None:
    parser = _parser(
        subparsers,
        "fetch",
        "fetch a tensor (or bundle) into a .safetensors or .npy file",
        "Fetch an initialized tensor from the server (through the local cache) and write it to a file. "
        "The format follows the output suffix: .safetensors keeps the server's file byte for byte "
        "(canonical spec in its metadata); .npy holds one array of float16/32/64 (bfloat16 has no .npy "
        "encoding numpy reads back: use .safetensors for it).",
        FETCH_EXAMPLES,
    )
    _spec_options(parser, allow_file=True)
    parser.add_argument("-o", "--output", type=Path, required=True, help="output path (.safetensors or .npy)")
    _connection_options(parser)
    _cache_options(parser)
    parser.set_defaults(func=lambda args: _run("fetch", lambda: _fetch(args)))


def _fetch(args: argparse.Namespace) -> int:
    suffix = args.output.suffix.lower()
    if suffix not in (".safetensors", ".npy"):
        raise ValueError(f"--output must end in .safetensors or .npy, got {args.output.name!r}")
    spec = json_file(args.spec) if args.spec is not None else _spec_from_flags(args)
    is_bundle = "tensors" in spec
    if suffix == ".npy" and not is_bundle and spec.get("dtype") == "bfloat16":
        raise ValueError(_NPY_BF16)
    with _client(args) as client:
        file = client.safetensors(spec)
    if suffix == ".safetensors":
        args.output.write_bytes(file.buffer)
    else:
        if len(file.tensors) != 1:
            raise ValueError(f"a bundle of {len(file.tensors)} tensors needs a .safetensors output, not .npy")
        name = next(iter(file.tensors))
        if file.tensors[name].dtype == "BF16":
            raise ValueError(_NPY_BF16)
        np.save(args.output, file.array(name), allow_pickle=False)
    what = f"bundle of {len(file.tensors)} tensors" if is_bundle else ", ".join(_describe(file.tensors))
    _echo(f"wrote {args.output} ({_size(file.buffer.nbytes)}): {what}")
    return 0


_NPY_BF16 = (
    "bfloat16 cannot be written as .npy: numpy has no bfloat16 type of its own, so np.load reads the file "
    "back as raw |V2 bytes even with ml_dtypes imported. Write .safetensors instead (safetensors' numpy and "
    "torch loaders return bfloat16), or fetch --dtype float32"
)


def _describe(tensors: Mapping[str, Any]) -> list[str]:
    return [f"{name} {info.dtype}{list(info.shape)}" for name, info in tensors.items()]


# -- stats --------------------------------------------------------------------------------------------
def _register_stats(subparsers: Subparsers) -> None:
    parser = _parser(
        subparsers,
        "stats",
        "print statistics of a tensor (computed by the server)",
        "Ask the server for the statistics of a tensor without downloading it: moments, bounds, fraction of "
        "zeros, fans and gain, the scheme's expected moments, and the sha256 of the tensor bytes.",
        STATS_EXAMPLES,
    )
    _spec_options(parser, allow_file=True)
    parser.add_argument("--json", action="store_true", help="print the raw JSON")
    _connection_options(parser)
    parser.set_defaults(func=lambda args: _run("stats", lambda: _stats(args)))


def _clip(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if value is None:
        return "-"
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def _stats(args: argparse.Namespace) -> int:
    body = json_file(args.spec) if args.spec is not None else _spec_from_flags(args)
    if "tensors" in body:
        raise ValueError(f"{args.spec} holds a bundle; stats takes one tensor's spec (fetch it with 'initserve fetch')")
    with Client(base_url=args.url, api_key=args.api_key, timeout=args.timeout, retries=args.retries, cache=False) as c:
        stats = c.stats_of(body)
    if args.json:
        _echo(json.dumps(stats, indent=2, sort_keys=True))
        return 0
    keys = ["numel", "shape", "dtype", "mean", "std", "min", "max", "zeros_fraction", "fan_in", "fan_out", "layout"]
    keys += ["gain"]
    rows = [(key, _fmt(stats.get(key))) for key in keys if key in stats]
    expected = stats.get("expected") or {}
    rows += [(f"expected {key}", _fmt(expected.get(key))) for key in ("mean", "std", "low", "high") if key in expected]
    if "sha256" in stats:
        rows.append(("sha256", str(stats["sha256"])))
    _echo(_table(rows, ("statistic", "value")))
    return 0


# -- schemes ------------------------------------------------------------------------------------------
def _register_schemes(subparsers: Subparsers) -> None:
    parser = _parser(
        subparsers,
        "schemes",
        "list the initialization schemes the server offers",
        "List the server's scheme catalog: parameters with defaults, equivalents in torch/keras/jax/TF1 and "
        "the reproducibility class. With a NAME, print that scheme in full.",
        SCHEMES_EXAMPLES,
    )
    parser.add_argument("name", nargs="?", help="show one scheme in full")
    parser.add_argument("--json", action="store_true", help="print the raw JSON")
    _connection_options(parser)
    parser.set_defaults(func=lambda args: _run("schemes", lambda: _schemes(args)))


def _param_text(params: Any) -> str:
    if isinstance(params, list):
        out = []
        for p in params:
            if isinstance(p, dict):
                default = p.get("default")
                name = str(p.get("name", "?"))
                out.append(f"{name}={_fmt(default)}" if "default" in p and default is not None else name)
        return ", ".join(out)
    if isinstance(params, dict):
        return ", ".join(params)
    return ""


def _schemes(args: argparse.Namespace) -> int:
    with Client(base_url=args.url, api_key=args.api_key, timeout=args.timeout, retries=args.retries, cache=False) as c:
        data: Any = c.scheme(args.name) if args.name else c.schemes()
    if args.json:
        _echo(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False))
        return 0
    if args.name:
        _echo(_scheme_text(data))
        return 0
    frameworks = ("torch", "keras", "jax", "tf1")
    rows = [
        (
            str(s.get("name", "")),
            _clip(_param_text(s.get("params")), 36),
            *(_clip(_call(s, fw), 30) for fw in frameworks),
            str(s.get("reproducibility", "")),
        )
        for s in data
    ]
    _echo(_table(rows, ("scheme", "params", "torch", "keras", "jax", "TF1", "reproducibility")))
    _echo("(equivalents shortened; 'initserve schemes NAME' gives the exact arguments for each framework)")
    return 0


def _call(scheme: Mapping[str, Any], framework: str) -> str:
    """A framework's equivalent, the call only (the arguments mapping is in the full view)."""
    text = str((scheme.get("equivalents") or {}).get(framework) or "-")
    return text.split(" ≡ ", 1)[0]


def _scheme_text(scheme: Mapping[str, Any]) -> str:
    lines = [f"{scheme.get('name')}: {scheme.get('formula')}", ""]
    params = scheme.get("params") or []
    if params:
        lines.append("params:")
        for p in params:
            default = "required" if p.get("required") else f"default {_fmt(p.get('default'))}"
            lines.append(f"  {p.get('name')} ({p.get('type')}, {default}){' — ' + p['doc'] if p.get('doc') else ''}")
    lines.append("equivalents:")
    names = {"torch": "torch", "keras": "keras", "jax": "jax", "tf1": "TF1"}
    for key, label in names.items():
        lines.append(f"  {label:<6} {(scheme.get('equivalents') or {}).get(key) or '-'}")
    rank = scheme.get("rank") or {}
    lines.append(f"rank: {rank.get('min')}–{rank.get('max')}; reproducibility: {scheme.get('reproducibility')}")
    if scheme.get("aliases"):
        lines.append(f"aliases: {', '.join(scheme['aliases'])}")
    if scheme.get("notes"):
        lines.append(f"notes: {scheme['notes']}")
    return "\n".join(lines)


# -- plan ---------------------------------------------------------------------------------------------
def _register_plan(subparsers: Subparsers) -> None:
    parser = _parser(
        subparsers,
        "plan",
        "show what init_module would do to a torch module (dry run)",
        "Build a torch module on the meta device and print, for every parameter, the scheme and params "
        "init_module would request, the torch code that rule reproduces, tied names, and (with a server) the "
        "fans the server will use. Nothing is generated or downloaded.",
        PLAN_EXAMPLES,
    )
    parser.add_argument("module", help="a factory as 'package.module:callable' (or a dotted path)")
    parser.add_argument("--args", default="[]", help="JSON list of positional arguments for the factory")
    parser.add_argument("--kwargs", default="{}", help="JSON object of keyword arguments for the factory")
    parser.add_argument("--policy", help="a scheme name for every ≥ 2-D weight (default: torch's own rules)")
    parser.add_argument("--no-server", action="store_true", help="do not ask the server for the fans")
    parser.add_argument("--json", action="store_true", help="print JSON")
    _connection_options(parser)
    parser.set_defaults(func=lambda args: _run("plan", lambda: _plan(args)))


def _factory(path: str) -> Callable[..., Any]:
    import importlib

    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"module must be 'package.module:callable', got {path!r}")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load {path!r}: {exc}") from None
    if not callable(target):
        raise ValueError(f"{path} is not callable")
    return target  # type: ignore[no-any-return]


def _plan(args: argparse.Namespace) -> int:
    from ._torch import _torch, plan_init

    th = _torch()
    try:
        positional, keywords = loads_unique(args.args), loads_unique(args.kwargs)
    except ValueError as exc:  # DuplicateKeyError included: a keyword given twice
        raise ValueError(f"--args must be a JSON list and --kwargs a JSON object: {exc}") from None
    if not isinstance(positional, list) or not isinstance(keywords, dict):
        raise ValueError("--args must be a JSON list and --kwargs a JSON object")
    factory = _factory(args.module)
    try:
        with th.device("meta"):
            module = factory(*positional, **keywords)
    except Exception as exc:  # the user's constructor refused its arguments: say so, without a traceback
        raise ValueError(f"{args.module}(...) failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(module, th.nn.Module):
        raise ValueError(f"{args.module}(...) returned {type(module).__name__}, not a torch.nn.Module")
    if args.no_server:
        entries = plan_init(module, policy=args.policy)
    else:
        with Client(
            base_url=args.url, api_key=args.api_key, timeout=args.timeout, retries=args.retries, cache=False
        ) as client:
            entries = plan_init(module, policy=args.policy, client=client)
    if args.json:
        _echo(json.dumps([entry.to_json() for entry in entries], indent=2, ensure_ascii=False))
        return 0
    rows = [
        (
            _quote_name(e.name),
            f"{e.dtype}{list(e.shape)}",
            e.scheme,
            _clip(", ".join(f"{k}={_fmt(v)}" for k, v in e.params.items() if k not in ("fan_in", "fan_out")), 30),
            "-" if e.fan_in is None else str(e.fan_in),
            "-" if e.fan_out is None else str(e.fan_out),
            _clip(e.source or e.owner, 44) + (f" (tied: {', '.join(e.tied)})" if e.tied else ""),
        )
        for e in entries
    ]
    _echo(_table(rows, ("parameter", "shape", "scheme", "params", "fan_in", "fan_out", "rule from")))
    return 0


# -- diagnose -----------------------------------------------------------------------------------------
def _register_diagnose(subparsers: Subparsers) -> None:
    parser = _parser(
        subparsers,
        "diagnose",
        "predicted vs measured signal propagation of schemes through an MLP (computed by the server)",
        "Ask the server to propagate a Gaussian probe through an MLP initialised by each scheme and print, per "
        "scheme, the verdict, χ₁, the depth scale, the gradient growth per layer (measured and √χ₁), the largest "
        "|measured/predicted − 1| of the pre-activation std and the Jacobian's condition. See docs/diagnose.md.",
        DIAGNOSE_EXAMPLES,
    )
    group = parser.add_argument_group("architecture and probe")
    group.add_argument("--spec", type=Path, help="JSON file with a whole /v1/diagnose body (other flags ignored)")
    group.add_argument("--depth", type=int, help="number of layers")
    group.add_argument("--width", type=int, help="units per layer")
    group.add_argument("--input-width", type=int, help="units of the input (default: --width)")
    group.add_argument("--activation", help="linear, tanh, relu, leaky_relu, selu, sigmoid or gelu")
    group.add_argument("--residual", type=float, help="α of x + α·φ(Wx) in every layer")
    group.add_argument(
        "--scheme",
        action="append",
        default=[],
        metavar="NAME[:KEY=VALUE,...]",
        help="a scheme to compare (repeat), e.g. orthogonal:gain=1.6667",
    )
    group.add_argument("--seed", type=int, help="seed of the weights and the probe (server default 0)")
    group.add_argument("--batch", type=int, help="probe batch (server default 256)")
    group.add_argument("--jacobian-q", type=float, help="mean square per unit of the Jacobian's input")
    parser.add_argument("--layers", action="store_true", help="also print every layer's figures")
    parser.add_argument("--json", action="store_true", help="print the raw JSON")
    _connection_options(parser)
    parser.set_defaults(func=lambda args: _run("diagnose", lambda: _diagnose(args)))


def _scheme_arg(text: str) -> dict[str, Any]:
    name, _, rest = text.partition(":")
    if not name:
        raise ValueError(f"--scheme must be NAME[:KEY=VALUE,...], got {text!r}")
    params = _parse_params([item for item in rest.split(",") if item], f"--scheme {name}:") if rest else None
    return {"scheme": name, "params": params} if params else {"scheme": name}


def _diagnose(args: argparse.Namespace) -> int:
    if args.spec is not None:
        body = json_file(args.spec)
    else:
        if not args.scheme:
            raise ValueError("give at least one --scheme (or --spec FILE)")
        body = diagnose_body(
            [_scheme_arg(text) for text in args.scheme],
            depth=args.depth,
            width=args.width,
            input_width=args.input_width,
            activation=args.activation,
            residual=args.residual,
            seed=args.seed,
            batch=args.batch,
            jacobian_q=args.jacobian_q,
        )
    with Client(base_url=args.url, api_key=args.api_key, timeout=args.timeout, retries=args.retries, cache=False) as c:
        result = c.diagnose_of(body)
    if args.json:
        _echo(json.dumps(result, indent=2, sort_keys=True, ensure_ascii=False))
        return 0
    rows = []
    for scheme in result["schemes"]:
        rate = scheme.get("gradient_rate") or {}
        jacobian = scheme.get("jacobian") or {}
        rows.append(
            (
                _clip(str(scheme["label"]), 36),
                _fmt(scheme.get("chi1")),
                _fmt(scheme.get("depth_scale"))
                if scheme.get("depth_scale") is not None or not scheme["predicted"]
                else "inf",
                f"{_fmt(rate.get('measured'))} / {_fmt(rate.get('predicted'))}",
                _fmt(scheme.get("max_abs_std_error")),
                ("inf" if jacobian.get("condition") is None else _fmt(jacobian["condition"])) if jacobian else "-",
                str(scheme["verdict"]["text"]),
            )
        )
    _echo(_table(rows, ("scheme", "chi1", "depth scale", "grad x/layer meas / pred", "max err", "J cond", "verdict")))
    if args.layers:
        for scheme in result["schemes"]:
            _echo(f"\n{scheme['label']}")
            layer_rows = [
                (
                    str(layer["layer"]),
                    _fmt(layer["measured_std"]),
                    _fmt(layer["predicted_std"]),
                    _fmt(layer["measured_mean"]),
                    _fmt(layer["gradient_std"]),
                    _fmt(layer["predicted_gradient_std"]),
                    _fmt(layer["effective_rank"]),
                    _fmt(layer["dead_fraction"]),
                    _fmt(layer["saturated_fraction"]),
                )
                for layer in scheme["layers"]
            ]
            header = ("layer", "std", "pred std", "mean", "grad std", "pred grad", "eff rank", "dead", "saturated")
            _echo(_table(layer_rows, header))
    return 0


# -- cache --------------------------------------------------------------------------------------------
def _register_cache(subparsers: Subparsers) -> None:
    parser = _parser(
        subparsers,
        "cache",
        "inspect, verify or prune the local cache",
        "Manage the client's content-addressed cache (blobs named by their SHA-256 tree hash; see docs/client.md).",
        CACHE_EXAMPLES,
    )
    parser.add_argument("--cache-dir", help="cache root (default: INITSERVE_CACHE_DIR or the user cache dir)")
    actions = parser.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    ls = _parser(actions, "ls", "list cached files", "List cached files, most recently used first.", CACHE_EXAMPLES)
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=lambda args: _run("cache ls", lambda: _cache_ls(args)))
    verify = _parser(
        actions,
        "verify",
        "re-hash every blob (and check it against the server with --server)",
        "Re-hash every blob; delete the corrupted ones (exit 1). With --server, also compare each entry's tree "
        "hash with the server's authoritative digest (?format=digest of its tensor URL).",
        CACHE_EXAMPLES,
    )
    verify.add_argument(
        "--server",
        action="store_true",
        help="also ask the server (--url) for each entry's authoritative digest; entries that differ are deleted",
    )
    _connection_options(verify)
    verify.set_defaults(func=lambda args: _run("cache verify", lambda: _cache_verify(args)))
    prune = _parser(
        actions,
        "prune",
        "delete old or orphaned entries",
        "Delete entries unused for --older-than days (or --all), orphaned blobs and stale temp files.",
        CACHE_EXAMPLES,
    )
    prune.add_argument("--older-than", type=float, metavar="DAYS", help="remove entries unused for DAYS days")
    prune.add_argument("--all", action="store_true", help="empty the cache")
    prune.set_defaults(func=lambda args: _run("cache prune", lambda: _cache_prune(args)))


def _cache(args: argparse.Namespace) -> Cache:
    root = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    return Cache(root)


def _cache_ls(args: argparse.Namespace) -> int:
    cache = _cache(args)
    entries = cache.entries() if cache.root.exists() else []
    if args.json:
        _echo(json.dumps([dict(e.to_json(), last_used=t) for e, t in entries], indent=2, sort_keys=True))
        return 0
    rows = []
    for entry, last_used in entries:
        tensors = entry.tensors or {}
        first: dict[str, Any] = next(iter(tensors.values()), {})
        seed = first.get("seed")
        names = ", ".join(
            f"{_quote_name(n)} {t.get('scheme') or '?'} {t.get('dtype')}{t.get('shape')}"
            for n, t in list(tensors.items())[:3]
        )
        if len(tensors) > 3:
            names += f", … ({len(tensors)} tensors)"
        rows.append(
            (
                entry.digest[:12],
                _size(entry.size),
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last_used)),
                "-" if seed is None else str(seed),
                names,
            )
        )
    _echo(_table(rows, ("tree sha256", "size", "last used", "seed", "name scheme dtype[shape]")))
    total = sum(e.size for e, _ in entries)
    _echo(f"{len(entries)} entries, {_size(total)} in {cache.root}")
    legacy = cache.legacy_size() if cache.root.exists() else 0
    if legacy:
        _echo(f"plus {_size(legacy)} in an older cache layout that is no longer read (`initserve cache prune --all`)")
    return 0


def _quote_name(name: str) -> str:
    """A tensor name as one table cell: quoted when it has spaces or non-printable characters."""
    return name if name.isprintable() and " " not in name else repr(name)


def _cache_verify(args: argparse.Namespace) -> int:
    cache = _cache(args)
    if not cache.root.exists():
        _echo(f"no cache at {cache.root}")
        return 0
    report = cache.verify_all()
    for sha in report.corrupted:
        _echo(f"corrupted (deleted): {sha}")
    _echo(f"{len(report.ok)} ok, {len(report.corrupted)} corrupted in {cache.root}")
    differ = 0
    if args.server:
        matched = unaddressed = 0
        with Client(base_url=args.url, api_key=args.api_key, timeout=args.timeout, retries=args.retries) as client:
            for entry, _ in cache.entries():
                if entry.url is None:
                    unaddressed += 1  # no tensor URL (a token too long for one): only the local hash holds
                    continue
                try:
                    same = client.tree_sha256(entry.url, entry.size) == entry.digest
                except CorruptedDownloadError:  # the server's file has another size
                    same = False
                if same:
                    matched += 1
                else:
                    differ += 1
                    cache.forget(entry)
                    _echo(f"differs from the server (deleted): {entry.digest} {entry.url[:80]}")
        _echo(f"server digests: {matched} match, {differ} differ, {unaddressed} without a URL (not checked)")
    return 1 if report.corrupted or differ else 0


def _cache_prune(args: argparse.Namespace) -> int:
    if args.older_than is None and not args.all:
        _echo(
            "initserve cache prune: without --older-than DAYS or --all only orphans and stale temp files go",
            err=True,
        )
    cache = _cache(args)
    if not cache.root.exists():
        _echo(f"no cache at {cache.root}")
        return 0
    older = args.older_than * 86400 if args.older_than is not None else None
    freed = cache.prune(older_than=older, everything=args.all)
    _echo(f"freed {_size(freed)} in {cache.root}")
    return 0
