"""docs/determinism.md and docs/schemes.md say what the code does."""

from __future__ import annotations

import re

from initserve.engine import special

from . import reference
from .docs_tool import DOCS, golden_table, render, scheme_table


def test_generated_tables_are_up_to_date() -> None:
    for name, table, path in (
        ("golden", golden_table(), DOCS / "determinism.md"),
        ("golden-v2", golden_table(2), DOCS / "determinism.md"),
        ("schemes", scheme_table(), DOCS / "schemes.md"),
    ):
        text = path.read_text()
        assert render(text, name, table) == text, f"run: python -m tests.engine.docs_tool --write ({path.name})"


def _coefficients(text: str, letter: str) -> tuple[float, ...]:
    match = re.search(rf"^{letter} = (.+?)\n(?=[A-F] = |```)", text, re.MULTILINE | re.DOTALL)
    assert match, letter
    return tuple(float(value) for value in re.split(r",\s*", match.group(1).strip()))


def test_quantile_coefficients_in_the_document_are_the_code_s() -> None:
    text = (DOCS / "determinism.md").read_text()
    for letter in "ABCDEF":
        assert _coefficients(text, letter) == getattr(special, letter)


def test_log_and_philox_constants_in_the_document_are_the_code_s() -> None:
    text = (DOCS / "determinism.md").read_text()
    assert float(re.search(r"LN2_HI = (\S+)", text).group(1)) == special.LN2_HI  # type: ignore[union-attr]
    assert float(re.search(r"LN2_LO = (\S+)", text).group(1)) == special.LN2_LO  # type: ignore[union-attr]
    assert float(re.search(r"SQRT_HALF = (\S+)", text).group(1)) == special.SQRT_HALF  # type: ignore[union-attr]
    for name in ("M0", "M1", "W0", "W1"):
        value = int(re.search(rf"{name} = (0x[0-9A-F]+)", text).group(1), 16)  # type: ignore[union-attr]
        assert value == getattr(reference, f"PHILOX_{name}")
