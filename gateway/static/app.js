"use strict";
// The gateway's page: draw/upload -> every model's answer; train with progress; compare; the network.

const $ = (selector) => document.querySelector(selector);
const SVG_NS = "http://www.w3.org/2000/svg";

// The access token arrives once in the URL's fragment (/#token=..., printed by the gateway at start: a
// fragment never reaches a server or a Referer), is kept for this tab, and goes with every request.
const TOKEN_KEY = "mnistcmp-token";
(function keepTokenFromUrl() {
  const match = location.hash.match(/token=([^&]+)/);
  if (!match) return;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
  history.replaceState(null, "", location.pathname + location.search);
})();

async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = { ...(options.headers || {}), ...(token ? { Authorization: `Bearer ${token}` } : {}) };
  const response = await fetch(path, { ...options, headers });
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (response.status === 401 || response.status === 403) {
    throw new Error("This needs the access token: open the page from the link the gateway printed when it " +
                    "started (it ends in /#token=...).");
  }
  if (!response.ok) throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

// ---- model colours: the gateway's, one per model (the row's `colour` in /compare), as on its chart ----
const NO_COLOUR = "#7f7f7f";
let modelColours = {};
const colourOf = (model) => modelColours[model] || NO_COLOUR;

function swatch(model) {
  const node = el("span", { class: "swatch", "aria-hidden": "true" });
  node.style.backgroundColor = colourOf(model);
  return node;
}

function paintCards() {
  for (const card of document.querySelectorAll("#cards .card[data-model]")) card.style.borderTopColor = colourOf(card.dataset.model);
}

function setStatus(selector, text, isError = false) {
  const node = $(selector);
  node.textContent = text;
  node.classList.toggle("error", isError);
}

// ---- drawing pad: mouse, touch and pen through pointer events; arrow keys draw too ----
const pad = $("#pad");
const ctx = pad.getContext("2d");
let drawing = false, dirty = false, uploaded = null;
const pen = { x: 140, y: 140 };

function clearPad() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, pad.width, pad.height);
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = 20;
  ctx.lineCap = ctx.lineJoin = "round";
  dirty = false;
  uploaded = null;
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return { x: (event.clientX - box.left) * pad.width / box.width, y: (event.clientY - box.top) * pad.height / box.height };
}

pad.addEventListener("pointerdown", (event) => {
  drawing = true;
  pad.setPointerCapture(event.pointerId);
  const p = padPoint(event);
  if (uploaded) clearPad();
  ctx.beginPath();
  ctx.moveTo(p.x, p.y);
  ctx.lineTo(p.x + 0.1, p.y + 0.1);
  ctx.stroke();
  dirty = true;
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const p = padPoint(event);
  ctx.lineTo(p.x, p.y);
  ctx.stroke();
});
for (const type of ["pointerup", "pointercancel"]) pad.addEventListener(type, () => { drawing = false; });

pad.addEventListener("keydown", (event) => {
  const moves = { ArrowUp: [0, -10], ArrowDown: [0, 10], ArrowLeft: [-10, 0], ArrowRight: [10, 0] };
  if (event.key === "Enter") { predict(); return; }
  if (!moves[event.key]) return;
  event.preventDefault();
  if (uploaded) clearPad();
  ctx.beginPath();
  ctx.moveTo(pen.x, pen.y);
  pen.x = Math.min(270, Math.max(10, pen.x + moves[event.key][0]));
  pen.y = Math.min(270, Math.max(10, pen.y + moves[event.key][1]));
  ctx.lineTo(pen.x, pen.y);
  ctx.stroke();
  dirty = true;
});

function showUpload(file) {
  uploaded = file;
  const image = new Image();
  image.onload = () => {
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, pad.width, pad.height);
    const scale = Math.min(pad.width / image.width, pad.height / image.height);
    ctx.drawImage(image, (pad.width - image.width * scale) / 2, (pad.height - image.height * scale) / 2,
      image.width * scale, image.height * scale);
    URL.revokeObjectURL(image.src);
  };
  image.src = URL.createObjectURL(file);
  setStatus("#predict-status", `${file.name} ready: press Predict`);
}

$("#clear").addEventListener("click", () => { clearPad(); setStatus("#predict-status", ""); });
$("#file").addEventListener("change", (event) => { if (event.target.files[0]) showUpload(event.target.files[0]); });
const drop = $("#drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files[0]) showUpload(event.dataTransfer.files[0]);
});
drop.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") $("#file").click(); });

// ---- prediction ----
async function predict() {
  if (!uploaded && !dirty) { setStatus("#predict-status", "Draw a digit or choose an image first.", true); return; }
  const image = uploaded || await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
  const form = new FormData();
  form.append("image", image, uploaded ? uploaded.name : "drawing.png");
  $("#predict").disabled = true;
  setStatus("#predict-status", "Asking every framework…");
  try {
    const body = await api("/predict", { method: "POST", body: form });
    renderPrediction(body);
    setStatus("#predict-status", `All answers in ${body.total_ms.toFixed(1)} ms.`);
  } catch (error) {
    setStatus("#predict-status", error.message, true);
  } finally {
    $("#predict").disabled = false;
  }
}
$("#predict").addEventListener("click", predict);

function renderPrediction(body) {
  drawSeen(body.input);
  const consensus = body.consensus;
  $("#consensus").replaceChildren(el("span", { text: "Consensus: " }), el("strong", { text: String(consensus.label) }),
    el("span", { text: ` (${consensus.votes} of ${consensus.of} models)` }));
  $("#cards").replaceChildren(...body.predictions.map(predictionCard));
  paintCards();
}

function predictionCard(p) {
  if (p.error) {
    return el("article", { class: "card failed", "data-model": p.model },
      el("h3", { text: p.model }), el("div", { class: "framework", text: p.service || "" }),
      el("p", { class: "error", text: `Failed: ${p.error}` }));
  }
  const best = Math.max(...p.probabilities);
  const bars = el("div", { class: "bars", "aria-hidden": "true" },
    ...p.probabilities.map((v) => {
      const bar = el("div", { class: v === best ? "top" : "", title: v.toFixed(4) });
      bar.style.height = `${Math.max(1, v * 100)}%`;
      return bar;
    }));
  const labels = el("div", { class: "bar-labels", "aria-hidden": "true" }, ...[...Array(10).keys()].map((d) => el("span", { text: String(d) })));
  return el("article", { class: "card", "data-model": p.model },
    el("h3", { text: p.model }),
    el("div", { class: "framework", text: `${p.framework} ${p.framework_version || ""}` }),
    el("div", { class: "digit", "aria-label": `predicts ${p.label}`, text: String(p.label) }),
    el("div", { class: "confidence", text: `${(best * 100).toFixed(1)}% sure` }),
    bars, labels,
    el("div", { class: "times", text: `model ${p.inference_ms.toFixed(2)} ms · round trip ${p.roundtrip_ms.toFixed(1)} ms` }),
    el("div", { class: "served", text: `version ${p.model_version ?? "?"} · ${p.served_by || ""}` }));
}

function drawSeen(pixels) {
  const seen = $("#seen");
  const small = document.createElement("canvas");
  small.width = small.height = 28;
  const data = small.getContext("2d").createImageData(28, 28);
  pixels.flat().forEach((v, i) => {
    const g = Math.round(v * 255);
    data.data.set([g, g, g, 255], i * 4);
  });
  small.getContext("2d").putImageData(data, 0, 0);
  const target = seen.getContext("2d");
  target.imageSmoothingEnabled = false;
  target.drawImage(small, 0, 0, seen.width, seen.height);
}

// ---- training ----
$("#train-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const body = { parallel: form.get("parallel") === "on" };
  for (const key of ["epochs", "batch_size", "train_limit"]) if (form.get(key)) body[key] = parseInt(form.get(key), 10);
  if (form.get("learning_rate")) body.learning_rate = parseFloat(form.get("learning_rate"));
  const seeds = (form.get("seeds") || "").split(",").map((s) => s.trim()).filter(Boolean).map((s) => parseInt(s, 10));
  if (seeds.length) body.seeds = seeds;
  $("#train").disabled = true;
  try {
    const run = await api("/train", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    setStatus("#train-status", `Run ${run.run_id} started.`);
    followRun(run.run_id);
  } catch (error) {
    setStatus("#train-status", error.message, true);
    $("#train").disabled = false;
  }
});

$("#cancel-run").addEventListener("click", async () => {
  const runId = $("#cancel-run").dataset.runId;
  if (!runId) return;
  $("#cancel-run").disabled = true;
  try {
    await api(`/runs/${runId}`, { method: "DELETE" });
    setStatus("#train-status", `Cancelling run ${runId}…`);
  } catch (error) {
    setStatus("#train-status", error.message, true);
    $("#cancel-run").disabled = false;
  }
});

async function followRun(runId) {
  let run;
  try { run = await api(`/runs/${runId}`); } catch (error) { setStatus("#train-status", error.message, true); return; }
  renderRun(run);
  renderCurves(run);
  const cancel = $("#cancel-run");
  cancel.hidden = false;
  cancel.dataset.runId = runId;
  if (run.status === "succeeded" || run.status === "failed" || run.status === "cancelled") {
    cancel.hidden = true;
    cancel.disabled = false;
    $("#train").disabled = false;
    setStatus("#train-status", `Run ${run.run_id} ${run.status}${run.error ? `: ${run.error}` : ""}.`, run.status === "failed");
    refreshServices();
    refreshCompare();
    return;
  }
  setTimeout(() => followRun(runId), 700);
}

function renderRun(run) {
  const rows = Object.values(run.models).map((m) => {
    const total = (m.epochs || 1) * (m.steps_per_epoch || 1);
    const done = m.status === "succeeded" ? total : Math.max(0, ((m.epoch || 1) - 1) * (m.steps_per_epoch || 0) + (m.step || 0));
    const seeds = run.config && run.config.seeds ? run.config.seeds.length : 1;
    const seedNote = seeds > 1 ? ` · seed ${Math.min((m.seeds_done || 0) + 1, seeds)}/${seeds}` : "";
    const detail = m.status === "succeeded" && (m.seeds_done || seeds) >= seeds
      ? `done · test accuracy ${(m.test_accuracy * 100).toFixed(2)}%${seeds > 1 ? ` (last of ${seeds} seeds)` : ""}`
      : m.status === "failed" ? `failed: ${m.error}`
      : m.status === "cancelled" ? "cancelled"
      : m.status === "running" || m.status === "succeeded" ? `epoch ${m.epoch}/${m.epochs || "?"} · step ${m.step}/${m.steps_per_epoch || "?"} · loss ${(m.loss || 0).toFixed(4)}${seedNote}`
      : m.status;
    const bar = el("progress", { max: String(total), value: String(done), "aria-label": `${m.model} training progress` });
    return el("div", { class: "progress-row", "data-model": m.model, "data-status": m.status },
      el("strong", { text: m.model }), bar, el("span", { text: detail }));
  });
  $("#progress").replaceChildren(...rows);
}

// ---- training curves: loss and validation accuracy per epoch of every model, drawn as inline SVG ----
const PLOT = { width: 440, height: 240, left: 52, right: 14, top: 26, bottom: 36 };
let shownRun = null, shownCurves = "";

function renderCurves(run, force = false) {
  shownRun = run;
  const models = Object.values(run.models || {});
  const signature = JSON.stringify([run.run_id, run.status, models.map((m) => [m.model, m.history])]);
  if (signature === shownCurves && !force) return; // redraw only when an epoch ended (the run is polled often)
  shownCurves = signature;
  const epochs = Math.max(1, run.config && run.config.epochs || 1, ...models.map((m) => (m.history || []).length));
  const finished = models.reduce((n, m) => n + (m.history || []).length, 0);
  const seeds = run.config && run.config.seeds ? run.config.seeds.length : 1;
  $("#curves-caption").textContent = `Run ${run.run_id} (${run.status}): ${finished ? "" : "no epoch finished yet; "}` +
    `${epochs} epoch${epochs > 1 ? "s" : ""} per model${seeds > 1 ? `, the seed trained last (or now) of ${seeds}` : ""}.`;
  const series = (key) => models.map((m) => ({ model: m.model,
    points: (m.history || []).filter((e) => e[key] !== null && e[key] !== undefined).map((e) => [e.epoch, e[key]]) }));
  $("#curve-loss").replaceChildren(plot("Training loss", series("loss"), epochs));
  $("#curve-val-accuracy").replaceChildren(plot("Validation accuracy", series("val_accuracy"), epochs, 1));
  $("#curve-legend").replaceChildren(...models.map((m) => el("li", { "data-model": m.model }, swatch(m.model), m.model)));
  $("#curves").hidden = false;
}

// A round step (1, 2 or 5 times a power of ten) giving about four ticks over `span`, and the decimals it needs.
function tickStep(span) {
  const raw = span / 4, power = 10 ** Math.floor(Math.log10(raw)), scaled = raw / power;
  const step = (scaled < 1.5 ? 1 : scaled < 3 ? 2 : scaled < 7 ? 5 : 10) * power;
  return { step, digits: Math.max(0, Math.ceil(-Math.log10(step) - 1e-9)) };
}

// One plot: epochs 1..`epochs` across, the values' range (at most `ceiling`) up; per model a line with a dot per epoch.
function plot(title, series, epochs, ceiling = Infinity) {
  const values = series.flatMap((s) => s.points.map((p) => p[1]));
  let low = values.length ? Math.min(...values) : 0, high = values.length ? Math.max(...values) : 1;
  const pad = Math.max((high - low) * 0.08, 1e-3);
  low -= pad; high = Math.min(ceiling, high + pad);
  const { width, height, left, right, top, bottom } = PLOT;
  const x = (epoch) => epochs === 1 ? (left + width - right) / 2 : left + (epoch - 1) / (epochs - 1) * (width - left - right);
  const y = (value) => top + (high - value) / (high - low) * (height - top - bottom);
  const grid = [];
  const { step, digits } = tickStep(high - low);
  for (let value = Math.ceil(low / step) * step; value <= high + step * 1e-6; value += step) {
    grid.push(svg("line", { class: "grid", x1: left, x2: width - right, y1: y(value), y2: y(value) }),
      svg("text", { class: "tick", x: left - 6, y: y(value) + 4, "text-anchor": "end" }, value.toFixed(digits)));
  }
  const every = Math.ceil(epochs / 10); // at most about ten epoch labels
  for (let epoch = 1; epoch <= epochs; epoch += every) {
    grid.push(svg("text", { class: "tick", x: x(epoch), y: height - bottom + 16, "text-anchor": "middle" }, String(epoch)));
  }
  const lines = series.filter((s) => s.points.length).map((s) => svg("g", {
    class: "series", "data-model": s.model, "data-points": String(s.points.length) },
    svg("path", { d: s.points.map(([e, v], i) => `${i ? "L" : "M"}${x(e).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
      fill: "none", stroke: colourOf(s.model), "stroke-width": "2" }),
    ...s.points.map(([e, v]) => svg("circle", { cx: x(e).toFixed(1), cy: y(v).toFixed(1), r: "3", fill: colourOf(s.model) },
      svg("title", {}, `${s.model}, epoch ${e}: ${v.toFixed(4)}`)))));
  return svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "plot", role: "img",
    "aria-label": `${title} per epoch, one line per model` },
    svg("text", { class: "plot-title", x: left, y: 14 }, title),
    ...grid,
    svg("line", { class: "axis", x1: left, x2: left, y1: top, y2: height - bottom }),
    svg("line", { class: "axis", x1: left, x2: width - right, y1: height - bottom, y2: height - bottom }),
    svg("text", { class: "tick", x: (left + width - right) / 2, y: height - 4, "text-anchor": "middle" }, "epoch"),
    ...lines);
}

// ---- services and comparison ----
async function refreshServices() {
  let services = [];
  try { services = (await api("/services")).services; } catch (error) { return; }
  $("#services").replaceChildren(...services.map((s) => {
    const ready = s.models.filter((m) => m.ready).length;
    const last = s.models.map((m) => m.trained_at).filter(Boolean).sort().pop();
    const replicas = s.replicas || [];
    const versions = [...new Set(replicas.flatMap((r) => Object.values(r.model_versions || {})).filter((v) => v != null))];
    const fleet = replicas.length
      ? `, ${replicas.filter((r) => r.up).length}/${replicas.length} replicas up${versions.length ? ` serving v${versions.join(", v")}` : ""}`
      : "";
    const training = s.training || (s.trainer && s.trainer.training);
    const text = s.up
      ? `${s.name} (${s.framework} ${s.framework_version}): ${ready}/${s.models.length} models ready${last ? `, trained ${last.replace("T", " ").slice(0, 16)}` : ""}${fleet}${training ? ", training…" : ""}`
      : `${s.name}: down`;
    return el("li", { class: s.up ? "up" : "down", "data-service": s.name, title: text, text });
  }));
  renderNetwork(services);
}

function fmt(value, digits) { return value === null || value === undefined ? "–" : Number(value).toFixed(digits); }

const VERDICT_POLL_MS = 2000;
let verdictPoll = null, shownChart = "";

async function refreshCompare() {
  let comparison;
  try { comparison = await api("/compare"); } catch (error) { setStatus("#compare-status", error.message, true); return; }
  const colours = Object.fromEntries(comparison.models.filter((r) => r.colour).map((r) => [r.model, r.colour]));
  if (JSON.stringify(colours) !== JSON.stringify(modelColours)) {
    modelColours = colours;
    paintCards();
    if (shownRun) renderCurves(shownRun, true);
  }
  const head = el("tr", {}, ...["model", "framework", "params", "s/epoch", "ms/step", "val acc", "test acc",
    "95% interval", "acc over seeds", "model ms", "p50 ms", "p99 ms", "req/s"].map((h) => el("th", { scope: "col", text: h })));
  const rows = comparison.models.map((r) => {
    const t = r.training || {}, s = r.serving || {}, lat = s.latency_ms || {}, inf = s.inference_ms || {};
    return el("tr", { "data-model": r.model }, el("td", {}, swatch(r.model), r.model),
      el("td", { class: "text", text: `${r.framework || "?"} ${r.framework_version || ""}` }),
      el("td", { text: r.params ? r.params.toLocaleString("en") : "–" }),
      el("td", { text: fmt(t.epoch_seconds, 1) }), el("td", { text: fmt(t.ms_per_step, 1) }),
      el("td", { text: fmt(r.validation_accuracy, 4) }), el("td", { text: fmt(r.test_accuracy, 4) }),
      el("td", { text: r.ci95 ? `${fmt(r.ci95[0], 4)}–${fmt(r.ci95[1], 4)}` : "–" }),
      el("td", { text: r.seeds && r.seeds.length > 1 ? `${fmt(r.accuracy_mean, 4)} ± ${fmt(r.accuracy_sd, 4)} (${r.seeds.length} seeds)` : "–" }),
      el("td", { text: fmt(inf.p50, 2) }), el("td", { text: fmt(lat.p50, 2) }), el("td", { text: fmt(lat.p99, 2) }),
      el("td", { text: fmt(s.throughput_rps, 0) }));
  });
  $("#compare-table").replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
  const chartState = JSON.stringify(comparison.models);
  if (chartState !== shownChart) { // the gateway renders a state once; ask again only when it changed
    shownChart = chartState;
    $("#chart").src = `/compare/chart.svg?t=${Date.now()}`;
  }
  renderVerdict(comparison.verdict);
  if (comparison.verdict && comparison.verdict.status !== "computing") refreshGallery();
}

function renderVerdict(verdict) {
  clearTimeout(verdictPoll);
  if (verdict && verdict.status === "computing") {
    // The gateway computes it in the background (every model answers the 10,000 test digits): ask until it is there.
    $("#verdict-summary").textContent = "Computing the verdict: the served models are answering the 10,000 test digits…";
    verdictPoll = setTimeout(refreshCompare, VERDICT_POLL_MS);
    return;
  }
  if (!verdict) return;
  $("#verdict-summary").textContent = verdict.summary;
  const head = el("tr", {}, ...["model A", "model B", "only A right", "only B right", "p", "p (Holm)", "significant"]
    .map((h) => el("th", { scope: "col", text: h })));
  const rows = verdict.pairs.map((p) => el("tr", { "data-pair": `${p.a}|${p.b}` },
    el("td", { text: p.a }), el("td", { text: p.b }), el("td", { text: String(p.a_only) }),
    el("td", { text: String(p.b_only) }), el("td", { text: p.p_value.toPrecision(3) }),
    el("td", { text: p.p_adjusted.toPrecision(3) }), el("td", { text: p.significant ? "yes" : "no" })));
  $("#verdict-pairs").replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
}

async function refreshGallery() {
  let found;
  try { found = await api("/compare/disagreements?limit=24"); } catch (error) { return; }
  $("#gallery").replaceChildren(...found.disagreements.map((d) => el("figure", { class: "digit", "data-index": String(d.index) },
    d.image ? el("img", { src: d.image, alt: `test digit ${d.index}, a ${d.label}` }) : el("span", { text: "?" }),
    el("figcaption", { text: `#${d.index} · true ${d.label}` }),
    el("ul", {}, ...Object.entries(d.predictions).map(([model, p]) =>
      el("li", { class: p.label === d.label ? "right" : "wrong", text: `${model}: ${p.label} (${(p.confidence * 100).toFixed(0)}%)` }))))));
}

async function runAction(button, path, body, label) {
  button.disabled = true;
  setStatus("#compare-status", `${label}…`);
  try {
    await api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    setStatus("#compare-status", `${label} done.`);
    refreshCompare();
  } catch (error) {
    setStatus("#compare-status", error.message, true);
  } finally {
    button.disabled = false;
  }
}
$("#benchmark").addEventListener("click", (event) => runAction(event.target, "/benchmark", {
  requests: parseInt($("#bench-requests").value, 10), concurrency: parseInt($("#bench-concurrency").value, 10),
}, "Benchmarking"));
$("#evaluate").addEventListener("click", (event) => runAction(event.target, "/evaluate", {}, "Evaluating"));
$("#refresh-compare").addEventListener("click", refreshCompare);

// ---- the network: a diagram from the reported layer tables, and the tables side by side ----
let shownNetwork = "";
function renderNetwork(services) {
  const models = services.flatMap((s) => s.models.map((m) => ({ ...m, framework: s.framework })));
  if (!models.length || !models[0].layers) return;
  const signature = JSON.stringify(models.map((m) => [m.name, m.layers]));
  if (signature === shownNetwork) return; // redraw (and re-animate) only when the networks change
  shownNetwork = signature;
  const reference = models[0].layers;
  const blocks = [el("div", { class: "block" }, el("span", { text: "input" }), el("small", { text: "28×28×1" }))];
  reference.forEach((layer) => {
    blocks.push(el("span", { class: "arrow", text: "→" }));
    blocks.push(el("div", { class: "block" }, el("span", { text: layer.type }),
      el("small", { text: layer.output_shape.filter((d) => d !== null).join("×") }),
      el("small", { text: layer.params ? `${layer.params.toLocaleString("en")} params` : "" })));
  });
  blocks.forEach((block, i) => { block.style.animationDelay = `${i * 0.15}s`; });
  $("#diagram").replaceChildren(...blocks);
  $("#layer-tables").replaceChildren(...models.map((m) => el("div", {},
    el("h3", { text: `${m.name} (${m.framework}) · ${m.params.toLocaleString("en")} params` }),
    el("table", {}, el("thead", {}, el("tr", {}, ...["layer", "output shape", "params"].map((h) => el("th", { text: h })))),
      el("tbody", {}, ...m.layers.map((l) => el("tr", {}, el("td", { text: l.type }),
        el("td", { text: `(${l.output_shape.map((d) => d === null ? "None" : d).join(", ")})` }),
        el("td", { text: l.params.toLocaleString("en") }))))))));
}

clearPad();
refreshServices();
refreshCompare();
setInterval(refreshServices, 10000);
api("/runs?limit=1").then((body) => {
  const run = body.runs[0];
  if (run && (run.status === "running" || run.status === "queued")) { $("#train").disabled = true; followRun(run.run_id); }
  else if (run) renderCurves(run); // the latest run's curves
}).catch(() => {});

// ---- the data each pipeline feeds ----
$("#show-batches").addEventListener("click", async () => {
  let found;
  try { found = await api("/data/first-batch"); } catch (error) { $("#pipelines").textContent = error.message; return; }
  $("#pipelines").replaceChildren(...found.batches.map((b) => el("figure", { class: "pipeline", "data-model": b.model },
    b.image ? el("img", { src: b.image, alt: `first training batch of ${b.model}` }) : el("span", { text: b.error || "?" }),
    el("figcaption", { text: `${b.model}: ${b.pipeline || ""} · sha256 ${(b.sha256 || "").slice(0, 12)}` }))));
});
