// initserve · diagnosis page. Talks to the JSON API only (POST /v1/diagnose, POST /v1/init?format=stats,
// GET /v1/schemes); charts by Plotly, served by the service from the installed plotly package.
"use strict";

const COLORS = ["#2358c4", "#d1495b", "#1b9e77", "#e6a700", "#7b4fb3", "#00a3c4", "#8c564b", "#555555"];
const DEFAULT_SCHEMES = [
  { scheme: "xavier_normal", params: {} },
  { scheme: "kaiming_normal", params: { nonlinearity: "tanh" } },
  { scheme: "orthogonal", params: { gain: 1 } },
  { scheme: "normal", params: { std: 0.01 } },
];
// No mode bar: it covers the titles; drag to zoom and double-click to reset still work.
const PLOT_CONFIG = { displaylogo: false, responsive: true, displayModeBar: false };
const JACOBIAN_FLOOR = 1e-17;  // singular values below s_max·1e-17 are rounding noise: kept, but off the axis
const UNIFORM = new Set(["uniform", "xavier_uniform", "kaiming_uniform", "lecun_uniform", "he_uniform",
  "glorot_uniform", "torch_default", "uniform_unit_scaling"]);
const NORMAL = new Set(["normal", "xavier_normal", "kaiming_normal"]);
const TRUNCATED = new Set(["truncated_normal", "lecun_normal", "he_normal", "glorot_normal"]);

// What the page last sent and received: the browser test compares the plots with these and with the API.
window.initserve = { lastRequest: null, lastDiagnosis: null, lastStats: null };
let catalog = [];

const $ = (selector, root = document) => root.querySelector(selector);

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body) headers["Content-Type"] = "application/json";
  const key = $("#api-key").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = data && data.detail ? data.detail : `${response.status} ${response.statusText}`;
    throw new Error(`${response.status}: ${detail}`);
  }
  return data;
}

function fmt(value, digits = 4) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  return magnitude >= 1e4 || magnitude < 1e-3 ? value.toExponential(digits - 1) : value.toPrecision(digits);
}

function status(element, text, error = false) {
  element.textContent = text;
  element.classList.toggle("error", error);
}

// ---- scheme rows ------------------------------------------------------------------------------------
function schemeOptions(selected) {
  const names = catalog.length ? catalog.map((entry) => entry.name) : [selected];
  return names.map((name) => `<option${name === selected ? " selected" : ""}>${name}</option>`).join("");
}

function addSchemeRow(choice) {
  const rows = $("#scheme-rows");
  const row = document.createElement("div");
  row.className = "scheme-row";
  row.innerHTML = `<span class="swatch"></span><select class="scheme">${schemeOptions(choice.scheme)}</select>
    <input class="params" value='${JSON.stringify(choice.params || {})}' title="params (JSON)">
    <button type="button" class="remove" title="remove">×</button>`;
  $(".remove", row).addEventListener("click", () => { row.remove(); paintSwatches(); });
  rows.appendChild(row);
  paintSwatches();
}

function paintSwatches() {
  document.querySelectorAll("#scheme-rows .scheme-row").forEach((row, index) => {
    $(".swatch", row).style.background = COLORS[index % COLORS.length];
  });
}

function readDiagnoseForm() {
  const form = $("#diagnose-form");
  const value = (name) => form.elements[name].value.trim();
  const body = { batch: Number(value("batch")), seed: Number(value("seed")) };
  if (value("layers")) {
    body.layers = JSON.parse(value("layers"));
    if (value("input_width")) body.input_width = Number(value("input_width"));
  } else {
    body.input_width = Number(value("input_width"));
    body.depth = Number(value("depth"));
    body.width = Number(value("width"));
    body.activation = value("activation");
    if (value("residual")) body.residual = Number(value("residual"));
  }
  if (value("jacobian_q")) body.jacobian_q = Number(value("jacobian_q"));
  body.schemes = [...document.querySelectorAll("#scheme-rows .scheme-row")].map((row) => {
    const params = $(".params", row).value.trim();
    return { scheme: $(".scheme", row).value, params: params ? JSON.parse(params) : {} };
  });
  return body;
}

// ---- diagnosis --------------------------------------------------------------------------------------
async function runDiagnosis(event) {
  event.preventDefault();
  const line = $("#status");
  document.body.dataset.state = "running";
  let body;
  try {
    body = readDiagnoseForm();
  } catch (error) {
    status(line, `invalid input: ${error.message}`, true);
    document.body.dataset.state = "error";
    return;
  }
  status(line, "running…");
  $("#run").disabled = true;
  const started = performance.now();
  try {
    const result = await api("POST", "/v1/diagnose", body);
    window.initserve.lastRequest = body;
    window.initserve.lastDiagnosis = result;
    renderDiagnosis(result);
    status(line, `done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    document.body.dataset.state = "done";
  } catch (error) {
    status(line, error.message, true);
    document.body.dataset.state = "error";
  } finally {
    $("#run").disabled = false;
  }
}

function layerAxis(scheme) {
  return scheme.layers.map((layer) => layer.layer);
}

function column(scheme, key) {
  return scheme.layers.map((layer) => layer[key]);
}

function linePlot(id, title, yTitle, schemes, series, logY = true) {
  const traces = [];
  schemes.forEach((scheme, index) => {
    const color = COLORS[index % COLORS.length];
    series.forEach(([key, suffix, dash]) => {
      const y = column(scheme, key);
      if (y.every((v) => v === null)) return;
      traces.push({
        x: layerAxis(scheme), y, name: `${scheme.label} ${suffix}`.trim(), mode: dash ? "lines" : "lines+markers",
        line: { color, dash: dash || "solid", width: dash ? 2 : 1.5 }, marker: { size: 4 },
        meta: { scheme: index, key },
      });
    });
  });
  Plotly.react(id, traces, {
    title: { text: title, font: { size: 14 } }, margin: { l: 60, r: 10, t: 40, b: 40 },
    xaxis: { title: { text: "layer" } }, yaxis: { title: { text: yTitle }, type: logY ? "log" : "linear", exponentformat: "power" },
    legend: { font: { size: 10 } },
  }, PLOT_CONFIG);
}

function jacobianPlot(schemes) {
  const traces = [];
  schemes.forEach((scheme, index) => {
    if (!scheme.jacobian) return;
    const s = scheme.jacobian.singular_values;
    traces.push({
      x: s.map((_, i) => i + 1), y: s,
      name: `${scheme.label} (cond ${scheme.jacobian.condition === null ? "∞" : fmt(scheme.jacobian.condition, 3)})`,
      mode: "lines", line: { color: COLORS[index % COLORS.length] }, meta: { scheme: index, key: "singular_values" },
    });
  });
  // The axis spans the meaningful part of every spectrum (down to s_max·1e-17); the data are all there.
  let low = Infinity;
  let high = 0;
  schemes.forEach((scheme) => {
    if (!scheme.jacobian) return;
    const s = scheme.jacobian.singular_values.filter((v) => v > 0);
    if (!s.length) return;
    high = Math.max(high, s[0]);
    low = Math.min(low, Math.max(s[s.length - 1], s[0] * JACOBIAN_FLOOR));
  });
  const range = high > 0 ? [Math.log10(low) - 0.3, Math.log10(high) + 0.3] : undefined;
  Plotly.react("plot-jacobian", traces, {
    title: { text: "Input–output Jacobian: singular values", font: { size: 14 } }, margin: { l: 60, r: 10, t: 40, b: 40 },
    xaxis: { title: { text: "index (descending)" } },
    yaxis: { title: { text: "s" }, type: "log", exponentformat: "power", range, autorange: range ? false : true },
    legend: { font: { size: 10 } },
  }, PLOT_CONFIG);
}

function binTicks(edges) {
  const values = [];
  const labels = [];
  const innermost = Math.min(...edges.filter((edge) => edge > 0));  // ±innermost sit next to 0: no label
  edges.forEach((edge, index) => {
    if (Math.abs(edge) === innermost) return;
    if (edge === 0) { values.push(index - 0.5); labels.push("0"); return; }
    const exponent = Math.log10(Math.abs(edge));
    if (Math.abs(exponent - Math.round(exponent)) < 1e-9 && Math.round(exponent) % 4 === 0) {
      values.push(index - 0.5);
      labels.push(`${edge < 0 ? "−" : ""}${Math.round(exponent) === 0 ? "1" : `1e${Math.round(exponent)}`}`);
    }
  });
  return { values, labels };
}

function heatmaps(result) {
  const container = $("#heatmaps");
  container.innerHTML = "";
  $("#heatmap-title").hidden = false;
  const edges = result.histogram_edges;
  const ticks = binTicks(edges);
  result.schemes.forEach((scheme, index) => {
    const div = document.createElement("div");
    div.className = "plot";
    div.id = `heatmap-${index}`;
    container.appendChild(div);
    const z = scheme.layers.map((layer) => layer.histogram.map((count) => Math.log10(1 + count)));
    const last = index === result.schemes.length - 1;
    Plotly.react(div, [{
      type: "heatmap", z, x: edges.slice(0, -1).map((_, i) => i), y: layerAxis(scheme), colorscale: "Viridis",
      showscale: last, colorbar: { title: { text: "log₁₀(1+n)" }, thickness: 10 },
      hovertemplate: "layer %{y}<br>bin %{x}<br>log₁₀(1+count) %{z:.2f}<extra></extra>",
    }], {
      title: { text: scheme.label, font: { size: 13, color: COLORS[index % COLORS.length] } },
      autosize: true, height: 330, width: div.clientWidth || undefined, margin: { l: 45, r: 10, t: 34, b: 44 },
      xaxis: { tickmode: "array", tickvals: ticks.values, ticktext: ticks.labels, title: { text: "pre-activation h (symlog)" } },
      yaxis: { title: { text: "layer" }, autorange: "reversed" },
    }, PLOT_CONFIG);
  });
}

function verdictCards(schemes) {
  $("#verdicts").innerHTML = schemes.map((scheme, index) => {
    const j = scheme.jacobian;
    const rate = scheme.gradient_rate;
    const rows = [
      ["χ₁", fmt(scheme.chi1)],
      ["phase", scheme.verdict.phase || "–"],
      ["depth scale ξ_c", scheme.predicted && scheme.chi1 !== null && scheme.depth_scale === null ? "∞" : fmt(scheme.depth_scale, 3)],
      ["gradient ×/layer measured", fmt(rate.measured)],
      ["gradient ×/layer √χ₁", fmt(rate.predicted)],
      ["max |measured/predicted − 1|", fmt(scheme.max_abs_std_error, 3)],
      ["Jacobian condition", j ? (j.condition === null ? "∞" : fmt(j.condition, 3)) : "–"],
      ["Jacobian mean s² (pred.)", j ? `${fmt(j.mean_s2, 3)} (${fmt(j.predicted_mean_s2, 3)})` : "–"],
      ["final effective rank", fmt(scheme.layers[scheme.layers.length - 1].effective_rank, 3)],
      ["time", `${fmt(scheme.seconds, 3)} s`],
    ];
    if (scheme.hanin_band) rows.push(["log(q_L/q₁) vs band", `${fmt(scheme.hanin_band.measured, 3)} (z ${fmt(scheme.hanin_band.z, 2)})`]);
    return `<div class="card" style="--c:${COLORS[index % COLORS.length]}" data-scheme="${index}">
      <h3>${scheme.label}</h3><div class="verdict kind-${scheme.verdict.kind}">${scheme.verdict.text}</div>
      <table>${rows.map(([k, v]) => `<tr><td>${k}</td><td>${v}</td></tr>`).join("")}</table></div>`;
  }).join("");
}

function renderDiagnosis(result) {
  const schemes = result.schemes;
  verdictCards(schemes);
  linePlot("plot-std", "Pre-activation std: measured (solid) vs mean-field (dashed)", "std of h", schemes,
    [["measured_std", "measured", null], ["predicted_std", "predicted", "dash"]]);
  linePlot("plot-grad", "Gradient std ∂ℓ/∂h: measured (solid) vs predicted (dashed)", "std of ∂ℓ/∂h", schemes,
    [["gradient_std", "measured", null], ["predicted_gradient_std", "predicted", "dash"]]);
  jacobianPlot(schemes);
  linePlot("plot-rank", "Effective rank of the activations", "effective rank", schemes,
    [["effective_rank", "", null]], false);
  heatmaps(result);
}

// ---- scheme explorer --------------------------------------------------------------------------------
function erf(x) {  // Abramowitz & Stegun 7.1.26, |error| < 1.5e-7: enough for a drawn curve
  const sign = Math.sign(x);
  const t = 1 / (1 + 0.3275911 * Math.abs(x));
  const y = 1 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-x * x);
  return sign * y;
}
const phi = (z) => Math.exp(-0.5 * z * z) / Math.sqrt(2 * Math.PI);
const Phi = (z) => 0.5 * (1 + erf(z / Math.SQRT2));

// The scheme's density from its canonical params and expected moments: {density(x), note} or null.
function expectedLaw(stats) {
  const scheme = stats.spec.scheme;
  const params = stats.spec.params;
  const e = stats.expected;
  if (!e || !(e.std > 0)) return null;
  const distribution = scheme === "variance_scaling" ? params.distribution : null;
  if (UNIFORM.has(scheme) || distribution === "uniform") {
    const width = e.high - e.low;
    return { density: (x) => (x >= e.low && x <= e.high ? 1 / width : 0), note: `U[${fmt(e.low)}, ${fmt(e.high)}]` };
  }
  if (NORMAL.has(scheme) || distribution === "normal") {
    return { density: (x) => phi((x - e.mean) / e.std) / e.std, note: `N(${fmt(e.mean)}, ${fmt(e.std)}²)` };
  }
  if (TRUNCATED.has(scheme) || distribution === "truncated_normal") {
    const mu = scheme === "truncated_normal" ? params.mean : 0;
    const sigma = scheme === "truncated_normal" ? params.std : (e.high - e.low) / 4;
    const mass = Phi((e.high - mu) / sigma) - Phi((e.low - mu) / sigma);
    return {
      density: (x) => (x >= e.low && x <= e.high ? phi((x - mu) / sigma) / sigma / mass : 0),
      note: `N(${fmt(mu)}, ${fmt(sigma)}²) truncated to [${fmt(e.low)}, ${fmt(e.high)}]`,
    };
  }
  if (scheme === "orthogonal") {
    return { density: (x) => phi(x / e.std) / e.std, note: `entries of a Haar matrix ≈ N(0, ${fmt(e.std)}²) for large n` };
  }
  if (scheme === "sparse") {
    const kept = 1 - (stats.zeros_fraction || 0);
    const s = params.std;
    return { density: (x) => kept * phi(x / s) / s, note: `(1 − zeros) · N(0, ${fmt(s)}²) plus a spike at 0` };
  }
  return null;
}

function renderExplorer(stats) {
  const edges = stats.histogram.edges;
  const counts = stats.histogram.counts;
  const centers = counts.map((_, i) => (edges[i] + edges[i + 1]) / 2);
  const widths = counts.map((_, i) => edges[i + 1] - edges[i]);
  const density = counts.map((count, i) => count / (stats.numel * widths[i]));
  const traces = [{ type: "bar", x: centers, y: density, width: widths, name: "measured density", marker: { color: "#9bb4e6" } }];
  const law = expectedLaw(stats);
  if (law) {
    const xs = Array.from({ length: 401 }, (_, i) => edges[0] + (edges[edges.length - 1] - edges[0]) * i / 400);
    traces.push({ x: xs, y: xs.map(law.density), mode: "lines", name: `expected: ${law.note}`, line: { color: "#d1495b", width: 2 } });
  }
  Plotly.react("plot-explorer", traces, {
    title: { text: `${stats.spec.scheme} ${JSON.stringify(stats.shape)}: histogram vs the scheme's density`, font: { size: 14 } },
    margin: { l: 60, r: 10, t: 40, b: 90 }, bargap: 0, legend: { orientation: "h", y: -0.3 },
    xaxis: { title: { text: "value" } }, yaxis: { title: { text: "density" } },
  }, PLOT_CONFIG);
  const e = stats.expected || {};
  const rows = [
    ["numel", stats.numel], ["mean (expected)", `${fmt(stats.mean)} (${fmt(e.mean)})`],
    ["std (expected)", `${fmt(stats.std)} (${fmt(e.std)})`], ["min / max", `${fmt(stats.min)} / ${fmt(stats.max)}`],
    ["bounds (expected)", `${fmt(e.low)} / ${fmt(e.high)}`], ["zeros fraction", fmt(stats.zeros_fraction)],
    ["fan_in / fan_out", `${fmt(stats.fan_in)} / ${fmt(stats.fan_out)}`], ["gain", fmt(stats.gain)],
    ["reproducibility", stats.reproducibility], ["sha256", `<code>${stats.sha256.slice(0, 16)}…</code>`],
  ];
  $("#explorer-stats").innerHTML = `<table>${rows.map(([k, v]) => `<tr><td>${k}</td><td>${v}</td></tr>`).join("")}</table>`;
}

async function runExplorer(event) {
  event.preventDefault();
  const form = $("#explorer-form");
  const line = $("#explorer-status");
  document.body.dataset.explorer = "running";
  try {
    const shape = form.elements.shape.value.split(/[ ,x×]+/).filter(Boolean).map(Number);
    const params = JSON.parse(form.elements.params.value || "{}");
    const body = { shape, scheme: form.elements.scheme.value, params, seed: Number(form.elements.seed.value),
      name: form.elements.name.value, dtype: form.elements.dtype.value, layout: form.elements.layout.value };
    const stats = await api("POST", "/v1/init?format=stats", body);
    window.initserve.lastStats = stats;
    renderExplorer(stats);
    status(line, "");
    document.body.dataset.explorer = "done";
  } catch (error) {
    status(line, error.message, true);
    document.body.dataset.explorer = "error";
  }
}

// ---- wiring -----------------------------------------------------------------------------------------
function showTab(name) {
  document.querySelectorAll(".tab").forEach((tab) => tab.classList.toggle("active", tab.dataset.tab === name));
  document.querySelectorAll(".tab-body").forEach((body) => { body.hidden = body.id !== `tab-${name}`; });
  window.dispatchEvent(new Event("resize"));  // Plotly sizes hidden plots at 0: resize on show
}

async function start() {
  const keyInput = $("#api-key");
  keyInput.value = sessionStorage.getItem("initserve-api-key") || "";
  keyInput.addEventListener("change", async () => {
    sessionStorage.setItem("initserve-api-key", keyInput.value.trim());
    await loadCatalog();
  });
  document.querySelectorAll(".tab").forEach((tab) => tab.addEventListener("click", () => showTab(tab.dataset.tab)));
  $("#diagnose-form").addEventListener("submit", runDiagnosis);
  $("#explorer-form").addEventListener("submit", runExplorer);
  $("#add-scheme").addEventListener("click", () => addSchemeRow({ scheme: "kaiming_normal", params: {} }));
  await loadCatalog();
  DEFAULT_SCHEMES.forEach(addSchemeRow);
  document.body.dataset.ready = "true";
}

async function loadCatalog() {
  try {
    catalog = await api("GET", "/v1/schemes");
    status($("#status"), "");
  } catch (error) {
    status($("#status"), `could not load the scheme catalog: ${error.message}`, true);
  }
  document.querySelectorAll("#scheme-rows select.scheme").forEach((select) => {
    select.innerHTML = schemeOptions(select.value);
  });
  $("#explorer-scheme").innerHTML = schemeOptions($("#explorer-scheme").value || "kaiming_uniform");
}

start();
