"""``GET /ui`` in a real headless Chromium (Debian's ``chromium`` + ``chromedriver``, driven by Selenium):
load the page, run a diagnosis, check that every plotted number is the API's, take a screenshot, and use
the scheme explorer. Skipped only where chromium is not installed, never in CI (``CI=true``)."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live_server import LiveServer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--window-size=1500,2400",
)

if CHROMIUM is None or CHROMEDRIVER is None:
    if os.environ.get("CI") == "true":
        pytest.fail("CI must run the browser test: .ci/run installs chromium and chromium-driver", pytrace=False)
    pytest.skip(
        "chromium / chromedriver not installed (apt-get install chromium chromium-driver)", allow_module_level=True
    )

from selenium import webdriver  # noqa: E402 - only where a browser exists
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., LiveServer]) -> LiveServer:
    return server_factory()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never try to download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def fill(driver: webdriver.Chrome, name: str, value: str, form: str = "diagnose-form") -> None:
    element = driver.find_element(By.CSS_SELECTOR, f"#{form} [name='{name}']")
    if element.tag_name == "select":
        Select(element).select_by_visible_text(value)
    else:
        element.clear()
        element.send_keys(value)


def close(a: Any, b: Any, rel: float) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=0.0)


def test_page_plots_exactly_the_apis_numbers(server: LiveServer, browser: webdriver.Chrome, tmp_path: Path) -> None:
    browser.get(server.url + "/ui")
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.body.dataset.ready === 'true'"))
    assert browser.execute_script("return typeof Plotly") == "object"  # the bundle from the plotly package loaded
    for name, value in (("input_width", "128"), ("depth", "30"), ("width", "128"), ("batch", "64")):
        fill(browser, name, value)
    fill(browser, "activation", "tanh")
    fill(browser, "jacobian_q", "0.00025")
    browser.find_element(By.ID, "add-scheme").click()  # a fifth scheme: the constant init
    row = browser.find_elements(By.CSS_SELECTOR, "#scheme-rows .scheme-row")[-1]
    Select(row.find_element(By.CSS_SELECTOR, "select.scheme")).select_by_visible_text("constant")
    params = row.find_element(By.CSS_SELECTOR, "input.params")
    params.clear()
    params.send_keys('{"value": 0.0042}')
    browser.find_element(By.ID, "run").click()
    WebDriverWait(browser, 180).until(
        lambda d: d.execute_script("return document.body.dataset.state") in ("done", "error")
    )
    assert browser.execute_script("return document.body.dataset.state") == "done", browser.find_element(
        By.ID, "status"
    ).text

    sent = browser.execute_script("return window.initserve.lastRequest")
    shown = browser.execute_script("return window.initserve.lastDiagnosis")
    assert [s["scheme"] for s in sent["schemes"]] == [
        "xavier_normal",
        "kaiming_normal",
        "orthogonal",
        "normal",
        "constant",
    ]
    api = httpx.post(server.url + "/v1/diagnose", json=sent, timeout=120).json()  # the API, asked independently

    traces = browser.execute_script(
        "return ['plot-std', 'plot-grad', 'plot-rank', 'plot-jacobian'].flatMap(id =>"
        " document.getElementById(id).data.map(t => ({plot: id, x: t.x, y: t.y, meta: t.meta})))"
    )
    checked = 0
    for trace in traces:
        scheme, key = trace["meta"]["scheme"], trace["meta"]["key"]
        if key == "singular_values":
            expected_page = shown["schemes"][scheme]["jacobian"]["singular_values"]
            expected_api = api["schemes"][scheme]["jacobian"]["singular_values"]
        else:
            expected_page = [layer[key] for layer in shown["schemes"][scheme]["layers"]]
            expected_api = [layer[key] for layer in api["schemes"][scheme]["layers"]]
        assert trace["y"] == expected_page, (trace["plot"], key)  # plotted = what the page received
        assert all(close(a, b, 1e-9) for a, b in zip(trace["y"], expected_api, strict=True)), (trace["plot"], key)
        checked += 1
    # measured and predicted std, measured and predicted gradients, rank and spectrum for 4 schemes; the
    # constant init has no prediction (4 traces)
    assert checked == 4 * 6 + 4

    heat = browser.execute_script("return [...document.querySelectorAll('#heatmaps .plot')].map(div => div.data[0].z)")
    assert len(heat) == 5
    for z, scheme in zip(heat, api["schemes"], strict=True):
        for row_z, layer in zip(z, scheme["layers"], strict=True):
            assert row_z == pytest.approx([math.log10(1 + c) for c in layer["histogram"]], rel=1e-12, abs=1e-12)

    cards = browser.find_elements(By.CSS_SELECTOR, "#verdicts .card .verdict")
    assert [card.text for card in cards] == [s["verdict"]["text"] for s in api["schemes"]]
    assert api["schemes"][4]["verdict"]["kind"] == "collapsed"
    assert api["schemes"][2]["verdict"]["kind"] == "isometric"  # orthogonal at σ_w = 1, q = 2.5e-4

    shot = Path(os.environ.get("INITSERVE_UI_SCREENSHOT", tmp_path / "ui-diagnose.png"))
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 50_000  # a rendered page of plots, not a blank one


def test_scheme_explorer_draws_the_tensor_against_its_density(
    server: LiveServer, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    browser.get(server.url + "/ui")
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.body.dataset.ready === 'true'"))
    browser.find_element(By.CSS_SELECTOR, ".tab[data-tab='explorer']").click()
    fill(browser, "scheme", "he_normal", form="explorer-form")
    fill(browser, "shape", "256,128", form="explorer-form")
    fill(browser, "seed", "3", form="explorer-form")
    browser.find_element(By.ID, "explore").click()
    WebDriverWait(browser, 60).until(lambda d: d.execute_script("return document.body.dataset.explorer") == "done")
    spec = {"shape": [256, 128], "scheme": "he_normal", "params": {}, "seed": 3, "name": "weight", "dtype": "float32"}
    spec["layout"] = "torch"  # the explorer's layout select (keras-family schemes need one when it matters)
    stats = httpx.post(server.url + "/v1/init?format=stats", json=spec, timeout=60).json()
    traces = browser.execute_script(
        "return document.getElementById('plot-explorer').data.map(t => ({y: t.y, name: t.name}))"
    )
    bars, law = traces
    edges, counts = stats["histogram"]["edges"], stats["histogram"]["counts"]
    density = [c / (stats["numel"] * (edges[i + 1] - edges[i])) for i, c in enumerate(counts)]
    assert bars["y"] == pytest.approx(density, rel=1e-12)
    assert law["name"].startswith("expected: N(") and "truncated" in law["name"]
    # the drawn truncated-normal density integrates to ≈ 1 over the histogram range
    width = (edges[-1] - edges[0]) / 400
    assert sum(law["y"]) * width == pytest.approx(1.0, abs=0.02)
    shot = Path(os.environ.get("INITSERVE_UI_EXPLORER_SCREENSHOT", tmp_path / "ui-explorer.png"))
    assert browser.save_screenshot(str(shot))
