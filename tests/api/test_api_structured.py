"""The structured schemes (issue 16) through a real server: listed in GET /v1/schemes, served as
files, and their stats carry the frame figures (coherence against the Welch bound)."""

from __future__ import annotations

import json
import math

import httpx
import numpy as np
from initserve.engine import generate, parse_spec
from safetensors.numpy import load

STRUCTURED = ("hadamard_orthogonal", "zero", "delta_orthogonal", "simplex_etf", "near_etf", "haar_wavelet", "dct")


def test_every_structured_scheme_is_listed_with_its_class(http: httpx.Client) -> None:
    catalog = {entry["name"]: entry for entry in http.get("/v1/schemes").json()}
    for name in STRUCTURED:
        assert name in catalog, name
        page = http.get(f"/v1/schemes/{name}").json()
        assert page["formula"] and page["reproducibility"] in ("bitwise", "numerical")


def test_a_structured_tensor_and_its_frame_stats(http: httpx.Client) -> None:
    spec = {"shape": [48, 12], "scheme": "near_etf", "seed": 3, "name": "fc.weight", "dtype": "float64"}
    weight = load(http.post("/v1/init", json=spec).content)["fc.weight"]
    assert np.allclose(np.linalg.norm(weight, axis=1), 1.0, rtol=1e-14, atol=0)
    frame = http.post("/v1/init?format=stats", json=spec).json()["frame"]
    assert frame["vectors"] == 48 and frame["dim"] == 12 and frame["exact"]
    assert frame["welch_bound"] == math.sqrt((48 - 12) / (12 * 47))
    assert frame["ratio"] <= 1.25
    bad = http.post("/v1/init", json={"shape": [4, 8, 3, 3], "scheme": "delta_orthogonal"})
    assert bad.status_code == 422 and "in channels ≤ out channels" in bad.text


def test_stft_through_the_server_takes_json_booleans_and_names_bad_params(http: httpx.Client) -> None:
    """keras' STFT(side='imag', window='hamming', periodic=True) as JSON: the boolean reaches the scheme, and
    what keras would also accept but we do not (an array window, more input channels) is a 422 naming the field."""
    spec = {
        "shape": [64, 1, 33],
        "scheme": "STFT",
        "layout": "keras",
        "name": "stft.imag",
        "params": {"side": "imag", "window": "hamming", "periodic": True},
    }
    served = load(http.post("/v1/init", json=spec).content)["stft.imag"]
    assert served.tobytes() == generate(parse_spec(spec)).tobytes()
    page = http.get("/v1/schemes/stft").json()
    periodic = {key: page["params"][3][key] for key in ("name", "type", "default")}
    assert periodic == {"name": "periodic", "type": "bool", "default": False}
    for params, field, words in (
        ({"window": [0.5] * 64}, "params.window", "hann, hamming, blackman, boxcar, none"),
        ({"window": "kaiser"}, "params.window", "hann, hamming, blackman, boxcar, none"),
        ({"periodic": "true"}, "params.periodic", "must be true or false"),
        ({"scaling": "l2"}, "params.scaling", "density, spectrum, none"),
        ({"periodic": None}, "params.periodic", "must be true or false, got null"),
    ):
        problem = http.post("/v1/init", json={**spec, "params": params})
        assert problem.status_code == 422, params
        errors = [(error["loc"], error["msg"]) for error in problem.json()["errors"]]
        assert any(loc == ["body", *field.split(".")] and words in msg for loc, msg in errors), errors
    # keras' None: JSON null is the choice 'none' (canonical), for window and scaling
    unscaled = {**spec, "params": {"side": "imag", "window": None, "scaling": None}}
    resolved = http.post("/v1/resolve", json=unscaled).json()
    assert '"scaling":"none"' in json.dumps(resolved, separators=(",", ":")), resolved
    wide = http.post("/v1/init", json={**spec, "shape": [64, 2, 33]})
    assert wide.status_code == 422 and [e["loc"] for e in wide.json()["errors"]] == [["body", "shape", 1]]
