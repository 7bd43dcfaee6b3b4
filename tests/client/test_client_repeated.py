"""The client and CLI refuse JSON whose objects repeat a key, as the server does: spec, diagnose and derive
files, ``--param``/``--scheme`` values and repeated keys, ``plan --kwargs``, and safetensors headers."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from initserve.cli import main
from initserve_client import SafetensorsFormatError
from initserve_client._safetensors import parse

from tests.live_server import LiveServer

RULE = "a key may appear only once per object"


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], *expected: str) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    for text in expected:
        assert text in err, err


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"shape": [2], "shape": [3], "scheme": "zeros", "name": "w"}', "key 'shape' appears twice in the top-level"),
        (
            '{"shape": [2], "scheme": "normal", "name": "w", "params": {"std": 1, "std": 2}}',
            "key 'std' appears twice in params",
        ),
        ('{"seed": 1, "tensors": {"a": {"shape": [2]}, "a": {"shape": [3]}}}', "key 'a' appears twice in tensors"),
    ],
)
def test_fetch_refuses_a_spec_file_repeating_a_key(
    server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, where: str
) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(text)
    out = tmp_path / "w.safetensors"
    _fails(capsys, ["fetch", "--spec", str(spec), "-o", str(out), "--url", server.url], str(spec), where, RULE)
    assert not out.exists()


def test_diagnose_and_derive_refuse_files_repeating_a_key(
    server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = tmp_path / "diagnose.json"
    body.write_text('{"depth": 2, "width": 4, "schemes": [{"scheme": "orthogonal", "scheme": "xavier_normal"}]}')
    _fails(capsys, ["diagnose", "--spec", str(body), "--url", server.url], "key 'scheme' appears twice in schemes[0]")
    request = tmp_path / "derive.json"
    request.write_text('{"source": "' + "0" * 64 + '", "target": {"tensors": {}}, "rules": [], "rules": []}')
    out = tmp_path / "d.safetensors"
    _fails(
        capsys,
        ["checkpoint", "derive", str(request), "-o", str(out), "--url", server.url],
        "key 'rules' appears twice in the top-level object",
    )
    assert not out.exists()


def test_repeated_param_keys_on_the_command_line_are_refused(
    server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fetch = ["fetch", "--shape", "4", "--scheme", "normal", "--name", "w", "-o", str(tmp_path / "w.npy")]
    _fails(capsys, [*fetch, "--param", "std=1", "--param", "std=2", "--url", server.url], "--param std is given twice")
    _fails(
        capsys,
        [*fetch, "--param", 'std={"a": 1, "a": 2}', "--url", server.url],
        "--param std: key 'a' appears twice in the top-level object",
    )
    _fails(
        capsys,
        ["diagnose", "--scheme", "normal:std=1,std=2", "--depth", "2", "--width", "4", "--url", server.url],
        "--scheme normal: std is given twice",
    )
    assert not (tmp_path / "w.npy").exists()
    assert main([*fetch, "--param", "std=2", "--url", server.url]) == 0  # the same without the repeat


def test_plan_refuses_repeated_keyword_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    _fails(
        capsys,
        [
            "plan",
            "torch.nn:Linear",
            "--kwargs",
            '{"in_features": 4, "out_features": 2, "in_features": 8}',
            "--no-server",
        ],
        "key 'in_features' appears twice",
    )


@pytest.mark.parametrize(
    ("header", "where"),
    [
        (
            '{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
            '"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}',
            "key 'w' appears twice in header",
        ),
        (
            '{"w": {"dtype": "F32", "dtype": "F16", "shape": [1], "data_offsets": [0, 4]}}',
            "key 'dtype' appears twice in header.w",
        ),
        ('{"__metadata__": {"a": "1", "a": "2"}}', "key 'a' appears twice in header.__metadata__"),
    ],
)
def test_safetensors_headers_repeating_a_key_are_malformed(header: str, where: str) -> None:
    raw = header.encode()
    with pytest.raises(SafetensorsFormatError, match=where):
        parse(struct.pack("<Q", len(raw)) + raw + b"\0" * 4)
