"""/v1/checkpoints and /v1/derive on a real server with a local-directory store."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from initserve.api.derive_tokens import encode_token
from initserve.engine.derive_rules import parse_derive
from safetensors.numpy import load, save

from tests.live_server import LiveServer

RNG = np.random.default_rng(7)
STATE = {
    "embeddings.weight": RNG.standard_normal((40, 16)).astype(np.float32),
    "encoder.weight": RNG.standard_normal((16, 16)).astype(np.float32),
    "encoder.bias": np.zeros(16, dtype=np.float32),
    "head.weight": RNG.standard_normal((3, 16)).astype(np.float16),
}
FILE = save(STATE)


def _raw_header(text: bytes, data: bytes = b"") -> bytes:
    """A file whose header is exactly ``text`` (valid JSON or not)."""
    return struct.pack("<Q", len(text)) + text + data


def _header_file(header: dict[str, Any]) -> bytes:
    return _raw_header(json.dumps(header).encode(), b"\0" * 4)


def _record_digest(dtype: str, shape: list[int], data: bytes) -> str:
    prefix = f"initserve-tensor/1 {dtype} {','.join(map(str, shape))}\n".encode()
    return hashlib.sha256(prefix + data).hexdigest()


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., LiveServer], store_dir: Path) -> LiveServer:
    return server_factory(store=str(store_dir), max_checkpoint_bytes=str(1 << 20), max_bytes=str(1 << 24))


@pytest.fixture(scope="module")
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def uploaded(http: httpx.Client) -> dict[str, Any]:
    response = http.post("/v1/checkpoints", content=FILE)
    assert response.status_code in (200, 201), response.text
    manifest: dict[str, Any] = response.json()
    return manifest


def _blobs(store_dir: Path) -> list[Path]:
    return sorted(p for p in (store_dir / "blobs").rglob("*") if p.is_file())


def test_upload_answers_the_manifest_with_documented_digests(uploaded: dict[str, Any]) -> None:
    tensors = uploaded["tensors"]
    assert set(tensors) == set(STATE)
    for name, value in STATE.items():
        dtype = {"float32": "F32", "float16": "F16"}[value.dtype.name]
        assert tensors[name]["digest"] == _record_digest(dtype, list(value.shape), value.tobytes())
        assert tensors[name]["shape"] == list(value.shape) and tensors[name]["nbytes"] == value.nbytes
    names = json.dumps({n: t["digest"] for n, t in sorted(tensors.items())}, separators=(",", ":"), sort_keys=True)
    assert uploaded["digest"] == hashlib.sha256(b"initserve-checkpoint/1\n" + names.encode()).hexdigest()


def test_the_same_file_or_the_same_tensor_twice_stores_nothing_new(
    http: httpx.Client, uploaded: dict[str, Any], store_dir: Path
) -> None:
    before = _blobs(store_dir)
    again = http.post("/v1/checkpoints", content=FILE)
    assert again.status_code == 200
    assert again.json()["stored"] == {"new_tensors": 0, "new_bytes": 0}
    assert again.json()["digest"] == uploaded["digest"]
    # Another file that shares two tensors (one renamed): only the new tensor is stored.
    other = save(
        {"renamed": STATE["encoder.weight"], "encoder.bias": STATE["encoder.bias"], "extra": np.ones(3, np.float32)}
    )
    response = http.post("/v1/checkpoints", content=other)
    assert response.status_code == 201
    assert response.json()["stored"]["new_tensors"] == 1
    assert len(_blobs(store_dir)) == len(before) + 1


def test_manifest_and_tensors_are_immutable_resources(http: httpx.Client, uploaded: dict[str, Any]) -> None:
    digest = uploaded["digest"]
    manifest = http.get(f"/v1/checkpoints/{digest}")
    assert manifest.status_code == 200 and manifest.json()["tensors"] == uploaded["tensors"]
    assert manifest.headers["etag"] == f'"{digest}"'
    assert http.get(f"/v1/checkpoints/{digest}", headers={"If-None-Match": f'"{digest}"'}).status_code == 304
    url = f"/v1/checkpoints/{digest}/tensors/embeddings.weight"
    whole = http.get(url)
    assert whole.status_code == 200
    assert "immutable" in whole.headers["cache-control"]
    assert load(whole.content)["embeddings.weight"].tobytes() == STATE["embeddings.weight"].tobytes()
    assert whole.headers["x-initserve-tensor-digest"] == uploaded["tensors"]["embeddings.weight"]["digest"]
    etag = whole.headers["etag"]
    assert http.get(url, headers={"If-None-Match": etag}).status_code == 304
    head = http.head(url)
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(len(whole.content))
    part = http.get(url, headers={"Range": "bytes=100-299"})
    assert part.status_code == 206 and part.content == whole.content[100:300]
    assert part.headers["content-range"] == f"bytes 100-299/{len(whole.content)}"
    multi = http.get(url, headers={"Range": "bytes=0-7,-16"})
    assert multi.status_code == 206 and multi.headers["content-type"].startswith("multipart/byteranges")
    assert http.get(url, headers={"Range": f"bytes={len(whole.content)}-"}).status_code == 416


def test_unknown_checkpoints_and_tensors_are_404_and_bad_digests_422(
    http: httpx.Client, uploaded: dict[str, Any]
) -> None:
    assert http.get("/v1/checkpoints/" + "0" * 64).status_code == 404
    missing = http.get(f"/v1/checkpoints/{uploaded['digest']}/tensors/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    bad = http.get("/v1/checkpoints/xyz")
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["path", "digest"]


def test_oversized_uploads_are_refused_before_anything_is_stored(http: httpx.Client, store_dir: Path) -> None:
    before = _blobs(store_dir)
    big = save({"w": np.zeros((600, 512), dtype=np.float32)})  # 1.2 MB > the 1 MiB limit
    declared = http.post("/v1/checkpoints", content=big)
    assert declared.status_code == 413 and declared.json()["type"].endswith("too-large")

    def chunked() -> Iterator[bytes]:  # no Content-Length: the file's own header gives its size away
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    streamed = http.post("/v1/checkpoints", content=chunked())
    assert streamed.status_code == 413
    assert _blobs(store_dir) == before


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"", "empty"),
        (b"\x10\x00\x00\x00\x00\x00\x00\x00{}", "ended inside"),
        (FILE[:-5], "Content-Length"),
        (FILE + b"extra", "Content-Length"),
        (struct.pack("<Q", 40) + b'{"w":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}}'[:40], "JSON"),
        # A header nested deeper than the JSON parser's recursion limit is a malformed header, not a 500.
        (_raw_header(b"[" * 10000 + b"]" * 10000), "nested too deeply"),
        (_raw_header(b'{"w":' * 5000 + b"{}" + b"}" * 5000), "nested too deeply"),
        # The rule names what was sent (a boolean is not an integer), not a placeholder.
        (_header_file({"w": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}), "got [true]"),
    ],
)
def test_invalid_files_are_422_naming_the_problem(http: httpx.Client, body: bytes, needle: str) -> None:
    response = http.post("/v1/checkpoints", content=body)
    assert response.status_code == 422, response.text
    assert needle in response.json()["detail"]


def test_a_truncated_chunked_body_is_refused(http: httpx.Client) -> None:
    response = http.post("/v1/checkpoints", content=iter([FILE[:-5]]))
    assert response.status_code == 422 and "ended after" in response.json()["detail"]


def test_a_corrupted_blob_is_detected_and_set_aside(http: httpx.Client, store_dir: Path) -> None:
    victim = np.arange(64, dtype=np.float32)
    manifest = http.post("/v1/checkpoints", content=save({"victim": victim})).json()
    digest = manifest["tensors"]["victim"]["digest"]
    path = store_dir / "blobs" / digest[:2] / digest
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    response = http.get(f"/v1/checkpoints/{manifest['digest']}/tensors/victim")
    assert response.status_code == 500 and response.json()["type"].endswith("storage-corrupt")
    assert not path.exists() and any((store_dir / "corrupt").iterdir())
    # Uploading the file again restores it.
    assert http.post("/v1/checkpoints", content=save({"victim": victim})).json()["stored"]["new_tensors"] == 1
    restored = http.get(f"/v1/checkpoints/{manifest['digest']}/tensors/victim")
    assert load(restored.content)["victim"].tobytes() == victim.tobytes()


# --- derive --------------------------------------------------------------------------------------------
def _derive_body(digest: str) -> dict[str, Any]:
    return {
        "source": digest,
        "target": {
            "seed": 3,
            "tensors": {
                "embeddings.weight": {"shape": [45, 16], "dtype": "float32"},
                "encoder.weight": {"shape": [16, 16], "dtype": "float32"},
                "encoder.bias": {"shape": [16], "dtype": "float32"},
                "head.weight": {"shape": [5, 16], "dtype": "float32"},
                "head.bias": {"shape": [5], "dtype": "float32"},
            },
        },
        "rules": [
            {"match": "embeddings.*", "action": "mean_rows", "noise": 0.01},
            {"match": "head.weight", "action": "reinit", "scheme": "normal", "params": {"std": 0.02}},
            {"match": "head.bias", "action": "reinit", "scheme": "zeros"},
        ],
    }


def test_derive_streams_a_bundle_with_a_stateless_url(http: httpx.Client, uploaded: dict[str, Any]) -> None:
    response = http.post("/v1/derive", json=_derive_body(uploaded["digest"]))
    assert response.status_code == 200, response.text
    out = load(response.content)
    assert out["encoder.weight"].tobytes() == STATE["encoder.weight"].tobytes()
    assert out["embeddings.weight"][:40].tobytes() == STATE["embeddings.weight"].tobytes()
    fresh = http.post(
        "/v1/init",
        json={"shape": [5, 16], "scheme": "normal", "params": {"std": 0.02}, "seed": 3, "name": "head.weight"},
    )
    assert out["head.weight"].tobytes() == load(fresh.content)["head.weight"].tobytes()
    metadata = json.loads(response.content[8 : 8 + struct.unpack("<Q", response.content[:8])[0]])["__metadata__"]
    record = json.loads(metadata["initserve.tensor.head.weight"])
    assert record["action"] == "reinit" and record["spec"]["scheme"] == "normal" and record["rule"] == 1
    copied = json.loads(metadata["initserve.tensor.encoder.weight"])
    assert copied["sources"] == [
        {
            "checkpoint": uploaded["digest"],
            "name": "encoder.weight",
            "digest": uploaded["tensors"]["encoder.weight"]["digest"],
        }
    ]
    location = response.headers["content-location"]
    assert location.startswith("/v1/derived/d.")
    again = http.get(location)
    assert again.status_code == 200 and again.content == response.content
    assert again.headers["etag"] == response.headers["etag"]
    assert http.get(location, headers={"If-None-Match": response.headers["etag"]}).status_code == 304
    part = http.get(location, headers={"Range": "bytes=10-4000"})
    assert part.status_code == 206 and part.content == response.content[10:4001]


def test_derive_errors_name_the_field(http: httpx.Client, uploaded: dict[str, Any]) -> None:
    body = _derive_body(uploaded["digest"])
    body["rules"].append({"match": "x", "action": "melt"})
    response = http.post("/v1/derive", json=body)
    assert response.status_code == 422 and ["body", "rules", 3, "action"] in [
        e["loc"] for e in response.json()["errors"]
    ]
    body = _derive_body("0" * 64)
    response = http.post("/v1/derive", json=body)
    assert response.status_code == 422 and response.json()["errors"][0]["loc"] == ["body", "source"]
    body = _derive_body(uploaded["digest"])
    body["target"]["tensors"]["encoder.weight"]["shape"] = [17, 16]
    response = http.post("/v1/derive", json=body)
    assert response.status_code == 422
    assert ["body", "target", "tensors", "encoder.weight", "shape"] in [e["loc"] for e in response.json()["errors"]]
    for token in ("d.!!", "d.AAAA", "x.eJzLSM3JyVcozy_KSQEAGgQEXQ", "d." + "A" * 9000):
        response = http.get("/v1/derived/" + token)
        assert response.status_code == 400 and response.json()["errors"][0]["loc"] == ["path", "token"], token


# --- overflow --------------------------------------------------------------------------------------------
LARGE = {
    "big.weight": np.array([[1.0, -70000.0], [3.0, 4.0]], dtype=np.float32),
    "odd.weight": np.array([1.0, np.inf, np.nan], dtype=np.float32),
}


def _overflow_body(digest: str, dtype: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"source": digest, "target": {"tensors": {"big.weight": {"shape": [2, 2], "dtype": dtype}}}, "rules": rules}


def test_manifests_record_each_float_tensors_largest_finite_magnitude(http: httpx.Client) -> None:
    response = http.post("/v1/checkpoints", content=save(LARGE))
    assert response.status_code in (200, 201), response.text
    tensors = response.json()["tensors"]
    assert tensors["big.weight"]["max_abs"] == 70000.0 and tensors["big.weight"]["nonfinite"] == 0
    assert tensors["odd.weight"]["max_abs"] == 1.0 and tensors["odd.weight"]["nonfinite"] == 2
    assert http.get(f"/v1/checkpoints/{response.json()['digest']}").json()["tensors"] == tensors


def test_a_derive_that_overflows_the_target_dtype_is_422_naming_the_field(http: httpx.Client, store_dir: Path) -> None:
    digest = http.post("/v1/checkpoints", content=save(LARGE)).json()["digest"]
    cases = [
        ([], ["body", "target", "tensors", "big.weight", "dtype"], "float16"),
        (
            [{"match": "*", "action": "shrink_perturb", "shrink": 1.0, "noise": 1e4}],
            ["body", "rules", 0, "noise"],
            "shrink_perturb output",
        ),
        (
            [{"match": "*", "action": "shrink_perturb", "shrink": 1e35, "noise": 0.0}],
            ["body", "rules", 0, "shrink"],
            "float32",
        ),
    ]
    for rules, loc, words in cases:
        dtype = "float32" if words == "float32" else "float16"
        response = http.post("/v1/derive", json=_overflow_body(digest, dtype, rules))
        assert response.status_code == 422, response.text
        errors = response.json()["errors"]
        assert errors[0]["loc"] == loc and words in errors[0]["msg"], errors
    fits = http.post("/v1/derive", json=_overflow_body(digest, "float32", []))
    assert fits.status_code == 200 and load(fits.content)["big.weight"].tobytes() == LARGE["big.weight"].tobytes()
    # The stateless URL of a request that overflows is refused the same way (it is planned again).
    assert http.get(fits.headers["content-location"]).status_code == 200
    canonical = parse_derive(_overflow_body(digest, "float16", [])).canonical_json()
    response = http.get("/v1/derived/" + encode_token(canonical))
    assert response.status_code == 422 and response.json()["errors"][0]["loc"][:2] == ["path", "token"]
    # A manifest stored before manifests recorded magnitudes: measured from the tensor, the same answer.
    path = store_dir / "checkpoints" / f"{digest}.json"
    manifest = json.loads(path.read_bytes())
    for entry in manifest["tensors"].values():
        entry.pop("max_abs"), entry.pop("nonfinite")
    path.chmod(0o644)
    path.write_text(json.dumps(manifest, sort_keys=True, separators=(",", ":")))
    response = http.post("/v1/derive", json=_overflow_body(digest, "float16", []))
    assert response.status_code == 422 and response.json()["errors"][0]["loc"] == cases[0][1]


# --- keys ----------------------------------------------------------------------------------------------
def test_writes_need_a_write_key_and_reads_follow_the_read_rule(
    server_factory: Callable[..., LiveServer], tmp_path: Path
) -> None:
    server = server_factory(store=str(tmp_path), api_keys="reader", write_api_keys="writer")
    with server.client() as client:
        keyless = client.post("/v1/checkpoints", content=FILE)
        assert keyless.status_code == 401 and "write permission" in keyless.json()["detail"]
        assert keyless.headers["www-authenticate"] == 'Bearer realm="initserve"'
        unknown = client.post("/v1/checkpoints", content=FILE, headers={"X-API-Key": "nobody"})
        assert unknown.status_code == 401 and unknown.json()["detail"] == "the API key is not valid"
        assert unknown.headers["www-authenticate"] == 'Bearer realm="initserve", error="invalid_token"'
        forbidden = client.post("/v1/checkpoints", content=FILE, headers={"Authorization": "Bearer reader"})
        assert forbidden.status_code == 403 and forbidden.json()["type"].endswith("forbidden")
        created = client.post("/v1/checkpoints", content=FILE, headers={"Authorization": "Bearer writer"})
        assert created.status_code == 201
        digest = created.json()["digest"]
        assert client.get(f"/v1/checkpoints/{digest}").status_code == 401
        assert client.get(f"/v1/checkpoints/{digest}", headers={"X-API-Key": "reader"}).status_code == 200
        assert client.get(f"/v1/checkpoints/{digest}", headers={"X-API-Key": "writer"}).status_code == 200
    open_reads = server_factory(store=str(tmp_path), write_api_keys="writer")
    with open_reads.client() as client:
        assert client.get(f"/v1/checkpoints/{digest}").status_code == 200
        assert client.post("/v1/checkpoints", content=FILE).status_code == 401
