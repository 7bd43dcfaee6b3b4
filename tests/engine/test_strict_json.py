"""loads_unique: JSON objects with a repeated key are refused, naming each key and the object holding it."""

from __future__ import annotations

import json

import pytest
from initserve.engine.strict_json import MAX_REPORTED, DuplicateKeyError, RepeatedKey, loads_unique


@pytest.mark.parametrize(
    "document",
    [
        '{"shape": [2, 2], "scheme": "normal", "params": {"std": 0.5}, "slice": [[0, 1]]}',
        '{"tensors": {"a.weight": {"shape": [1]}, "a.bias": {"shape": [1]}}, "seed": 3}',
        '[{"k": 1}, {"k": 2}, [], {}, "k", 1e3, null]',
        '"text"',
    ],
)
def test_documents_without_repeats_parse_as_json_loads_does(document: str) -> None:
    assert loads_unique(document) == json.loads(document)
    assert loads_unique(document.encode()) == json.loads(document.encode())


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ('{"shape": [2, 2], "shape": [3, 3]}', [RepeatedKey((), "shape", 2)]),
        ('{"seed": 1, "seed": 1}', [RepeatedKey((), "seed", 2)]),  # equal values: refused all the same
        ('{"params": {"std": 1, "mean": 0, "std": 2, "std": 3}}', [RepeatedKey(("params",), "std", 3)]),
        ('{"tensors": {"fc.w": {"shape": [1]}, "fc.w": {"shape": [2]}}}', [RepeatedKey(("tensors",), "fc.w", 2)]),
        ('{"rules": [{}, {"action": "copy", "action": "reinit"}]}', [RepeatedKey(("rules", 1), "action", 2)]),
        ('[[{"a": 1, "b": 2, "a": 3}]]', [RepeatedKey((0, 0), "a", 2)]),
        (
            '{"b": {"x": 1, "x": 2}, "a": 1, "a": 2, "c": [{"y": 0, "y": 0}]}',
            [RepeatedKey(("b",), "x", 2), RepeatedKey((), "a", 2), RepeatedKey(("c", 0), "y", 2)],
        ),
    ],
)
def test_repeats_are_reported_with_their_object(document: str, expected: list[RepeatedKey]) -> None:
    with pytest.raises(DuplicateKeyError) as caught:
        loads_unique(document)
    assert sorted(caught.value.repeats, key=repr) == sorted(expected, key=repr)
    assert caught.value.total == len(expected)
    for repeat in expected:
        assert f"key {repeat.key!r} appears" in str(caught.value)


def test_messages_name_the_key_the_object_and_the_count() -> None:
    with pytest.raises(DuplicateKeyError) as caught:
        loads_unique('{"params": {"std": 1, "std": 2}, "l": [{"q": 1, "q": 2, "q": 3}], "z": 0, "z": 1}')
    rule = "a key may appear only once per object"
    assert caught.value.describe("body") == (  # an object's own repeats first, then those of its members
        f"key 'z' appears twice in body; {rule}; key 'std' appears twice in body.params; {rule}; "
        f"key 'q' appears 3 times in body.l[0]; {rule}"
    )
    assert str(caught.value).startswith(f"key 'z' appears twice in the top-level object; {rule}; key 'std'")
    assert "key 'std' appears twice in params;" in str(caught.value)


def test_many_repeats_report_the_first_and_count_the_rest() -> None:
    document = "{" + ", ".join(f'"k{i}": 0, "k{i}": 1' for i in range(MAX_REPORTED + 7)) + "}"
    with pytest.raises(DuplicateKeyError) as caught:
        loads_unique(document)
    assert [r.key for r in caught.value.repeats] == [f"k{i}" for i in range(MAX_REPORTED)]
    assert caught.value.total == MAX_REPORTED + 7
    assert str(caught.value).endswith("; and 7 more")


def test_deep_nesting_is_walked_without_recursion() -> None:
    depth = 900  # below the parser's own recursion limit; the walk that finds the repeat is iterative
    document = '{"a": ' * depth + '{"x": 1, "x": 2}' + "}" * depth
    with pytest.raises(DuplicateKeyError) as caught:
        loads_unique(document)
    assert caught.value.repeats == [RepeatedKey(("a",) * depth, "x", 2)]


def test_malformed_json_still_raises_json_errors() -> None:
    with pytest.raises(json.JSONDecodeError):
        loads_unique('{"a": 1, "a": ')
    with pytest.raises(ValueError, match="NaN"):
        loads_unique("[NaN]", parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))
