"""Renders the generated parts of docs/: the golden table of determinism.md and the scheme table of
schemes.md. ``python -m tests.engine.docs_tool --write`` updates them; the tests check they agree."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from initserve.engine import CATALOG

from .golden_tool import GOLDEN_FILES

DOCS = Path(__file__).resolve().parents[2] / "docs"
MARK = "<!-- generated: {} -->"


def golden_table(version: int = 1) -> str:
    lines = ["| spec | numel | sha256 | head |", "|---|---|---|---|"]
    for vector in json.loads(GOLDEN_FILES[version].read_text()):
        spec = json.dumps(vector["spec"], separators=(", ", ": "))
        lines.append(f"| `{spec}` | {vector['numel']} | `{vector['sha256']}` | `{' '.join(vector['head'])}` |")
    return "\n".join(lines)


def scheme_table() -> str:
    lines = [
        "| scheme | formula | params (defaults) | torch | keras | jax | TF1 | rank | reproducibility |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for scheme in CATALOG.values():
        info = scheme.describe()
        params = ", ".join(_param(p) for p in info["params"]) or "–"
        eq = info["equivalents"]
        rank = info["rank"]
        ranks = f"{rank['min']}–{rank['max']}" if rank["min"] != rank["max"] else str(rank["min"])
        cells = [
            f"`{scheme.name}`",
            info["formula"],
            params,
            *(f"`{eq[k]}`" if eq[k] else "–" for k in ("torch", "keras", "jax", "tf1")),
            ranks,
            _reproducibility(info),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _param(param: dict[str, Any]) -> str:
    return param["name"] + (f"={_default(param['default'])}" if "default" in param else " (required)")


def _default(value: object) -> str:
    """A default as a request writes it: JSON's true/false for booleans, else as Python prints it."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _reproducibility(info: dict[str, Any]) -> str:
    """The newest algorithm's class, then any older algorithm whose class differs."""
    older = [
        f"algorithm {version}: {cls}"
        for version, cls in info["reproducibility_by_algorithm"].items()
        if cls != info["reproducibility"]
    ]
    return info["reproducibility"] + (f" ({'; '.join(older)})" if older else "")


def render(template: str, name: str, table: str) -> str:
    start, end = MARK.format(f"{name} start"), MARK.format(f"{name} end")
    before, rest = template.split(start)
    _, after = rest.split(end)
    return f"{before}{start}\n{table}\n{end}{after}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true")
    parser.parse_args()
    for path, name, table in (
        (DOCS / "determinism.md", "golden", golden_table()),
        (DOCS / "determinism.md", "golden-v2", golden_table(2)),
        (DOCS / "schemes.md", "schemes", scheme_table()),
    ):
        path.write_text(render(path.read_text(), name, table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
