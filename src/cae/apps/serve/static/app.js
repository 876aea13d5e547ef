// The cae serve page: three tabs talking to the JSON API of cae/apps/serve/app.py.
"use strict";

const $ = (id) => document.getElementById(id);
let limits = { bytes: 50 * 1024 * 1024, pixels: 64000000 }; // replaced by the server's at start
let lastColorizeFile = null;
let lastReconstruct = null; // the FormData fields of the last reconstruction, re-run on a model change
let samplesLoaded = false;

// --- talking to the server ---------------------------------------------------------------------

async function getJSON(url) {
  const response = await fetch(url);
  return answerOf(response);
}

async function postForm(url, fields) {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) form.append(name, value);
  return answerOf(await fetch(url, { method: "POST", body: form }));
}

async function answerOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = { error: `the server answered ${response.status} without details` };
  }
  if (!response.ok) throw new Error(body.error || `the server answered ${response.status}`);
  return body;
}

function showError(id, message) {
  const el = $(id);
  el.textContent = message || "";
  el.hidden = !message;
}

function tooBig(file) {
  if (file.size <= limits.bytes) return "";
  return `${file.name} is ${(file.size / 2 ** 20).toFixed(1)} MB, more than the limit of ` +
    `${Math.floor(limits.bytes / 2 ** 20)} MB`;
}

// --- tabs ----------------------------------------------------------------------------------------

function selectTab(name) {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    const on = tab.getAttribute("aria-controls") === name;
    tab.setAttribute("aria-selected", String(on));
    $(tab.getAttribute("aria-controls")).hidden = !on;
  }
  if (name === "reconstruct" && !samplesLoaded) loadSamples();
}

// --- colorize ------------------------------------------------------------------------------------

async function colorize(file) {
  lastColorizeFile = file;
  showError("colorize-error", tooBig(file));
  if (tooBig(file)) return;
  const model = $("colorize-model").value;
  $("colorize-status").textContent = `Colorizing ${file.name} with ${model}…`;
  try {
    const answer = await postForm("/api/colorize", { model, file });
    if (file !== lastColorizeFile) return; // a newer photo was chosen meanwhile
    showColorized(answer);
    $("colorize-status").textContent =
      `${file.name}: ${answer.width}×${answer.height}, colorized by ${answer.model} in ${answer.seconds.toFixed(2)} s`;
  } catch (e) {
    if (file !== lastColorizeFile) return;
    $("colorize-status").textContent = "";
    $("colorize-results").hidden = $("colorize-download").hidden = true; // not someone else's result
    showError("colorize-error", e.message);
  }
}

function showColorized(answer) {
  // the images are display-sized previews (data: URLs); the full-resolution PNG is fetched from
  // its own route (answer.download) only when the link is clicked
  $("colorize-gray").src = answer.gray;
  $("colorize-original").src = answer.original;
  $("colorize-result").src = answer.result;
  const link = $("colorize-download");
  link.href = answer.download;
  link.download = answer.filename;
  link.textContent = `Download the result (PNG, ${answer.width}×${answer.height})`;
  link.hidden = false;
  $("colorize-results").hidden = false;
}

function setUpDrop() {
  const drop = $("colorize-drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) colorize(e.dataTransfer.files[0]);
  });
  $("colorize-file").addEventListener("change", (e) => {
    if (e.target.files.length) colorize(e.target.files[0]);
    e.target.value = ""; // choosing the same file again still fires 'change'
  });
  $("colorize-model").addEventListener("change", () => { if (lastColorizeFile) colorize(lastColorizeFile); });
}

// --- reconstruct ---------------------------------------------------------------------------------

async function loadSamples() {
  samplesLoaded = true;
  $("samples-message").textContent = "Loading CIFAR-10…";
  try {
    const answer = await getJSON("/api/samples");
    $("samples-message").textContent = answer.available ? "Click an image to reconstruct it." : answer.message;
    const grid = $("sample-grid");
    grid.replaceChildren(...answer.images.map(sampleButton));
  } catch (e) {
    samplesLoaded = false;
    $("samples-message").textContent = e.message;
  }
}

function sampleButton(sample) {
  const button = document.createElement("button");
  button.className = "sample";
  button.title = `#${sample.index} ${sample.label}`;
  button.dataset.index = sample.index;
  const img = document.createElement("img");
  img.src = sample.src;
  img.alt = sample.label;
  img.className = "pixel";
  button.append(img);
  button.addEventListener("click", () => reconstruct({ sample: String(sample.index) }));
  return button;
}

async function reconstruct(fields) {
  lastReconstruct = fields;
  showError("reconstruct-error", fields.file ? tooBig(fields.file) : "");
  if (fields.file && tooBig(fields.file)) return;
  try {
    const answer = await postForm("/api/reconstruct", { model: $("reconstruct-model").value, ...fields });
    if (fields === lastReconstruct) showReconstruction(answer);
  } catch (e) {
    if (fields === lastReconstruct) showError("reconstruct-error", e.message);
  }
}

function showReconstruction(answer) {
  $("reconstruct-source").textContent = `${answer.source}, through ${answer.model}`;
  $("reconstruct-input").src = answer.input;
  $("reconstruct-output").src = answer.output;
  $("reconstruct-psnr").textContent = answer.psnr === null ? "∞ (exact)" : `${answer.psnr.toFixed(2)} dB`;
  const latent = answer.latent;
  $("latent-shape").textContent = latent.shape.join(" × ");
  $("latent-size").textContent = `${latent.size.toLocaleString("en-US")} values (${latent.product})`;
  showFormula(latent);
  const channels = answer.channels.map((src, i) => {
    const img = document.createElement("img");
    img.src = src;
    img.className = "pixel";
    img.alt = img.title = `channel ${i}`;
    return img;
  });
  $("latent-channels").replaceChildren(...channels);
  if (!channels.length) $("latent-channels").textContent = "This model has no single latent code (skip connections).";
  $("reconstruct-result").hidden = false;
}

function showFormula(latent) {
  // C*((W-K+2P)/S+1)^2 of the layer that makes the code, as `cae info` prints it
  const code = document.createElement("code");
  code.textContent = latent.formula || latent.product;
  const layer = document.createElement("span");
  layer.className = "hint";
  layer.textContent = latent.formula ? ` C*((W-K+2P)/S+1)^2 at ${latent.layer}` : "";
  $("latent-formula").replaceChildren(code, layer);
}

function setUpReconstruct() {
  $("reconstruct-file").addEventListener("change", (e) => {
    if (e.target.files.length) reconstruct({ file: e.target.files[0] });
    e.target.value = "";
  });
  $("reconstruct-model").addEventListener("change", () => { if (lastReconstruct) reconstruct(lastReconstruct); });
}

// --- model cards ---------------------------------------------------------------------------------

// The card of the model a select names, in the panel beside it (GET /api/card?model=ID).
async function showCard(selectId, panelId) {
  const model = $(selectId).value;
  const body = $(panelId).querySelector(".card-body");
  if (!model) return;
  try {
    const answer = await getJSON(`/api/card?model=${encodeURIComponent(model)}`);
    if ($(selectId).value !== model) return; // another model was picked meanwhile
    if (answer.html) body.innerHTML = answer.html; // generated from the package's own MODEL_CARD.md
    else body.textContent = answer.message;
  } catch (e) {
    body.textContent = e.message;
  }
}

function setUpCards() {
  for (const [select, panel] of [["colorize-model", "colorize-card"], ["reconstruct-model", "reconstruct-card"]]) {
    $(select).addEventListener("change", () => showCard(select, panel));
    showCard(select, panel);
  }
}

// --- start ---------------------------------------------------------------------------------------

function fillSelect(id, models) {
  $(id).replaceChildren(...models.map((m) => new Option(m.label, m.id)));
}

function showReports(reports) {
  const items = reports.map((r) => {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = r.url;
    a.target = "_blank";
    a.rel = "noopener";
    a.textContent = `${r.name || "report"} — report.html`;
    li.append(a);
    return li;
  });
  $("report-list").replaceChildren(...items);
  $("report-message").textContent = items.length ? "" :
    "No finished `cae reproduce` under --runs (start with `cae serve --runs runs` after `make reproduce`).";
}

async function start() {
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.addEventListener("click", () => selectTab(tab.getAttribute("aria-controls")));
  }
  setUpDrop();
  setUpReconstruct();
  try {
    const answer = await getJSON("/api/models");
    limits = answer.limits;
    fillSelect("colorize-model", answer.colorize);
    fillSelect("reconstruct-model", answer.reconstruct);
    showReports(answer.reports);
    setUpCards();
    $("limits").textContent = `Uploads up to ${Math.floor(limits.bytes / 2 ** 20)} MB and ` +
      `${limits.pixels.toLocaleString("en-US")} pixels. Everything runs on this machine.`;
    document.body.dataset.ready = "1"; // the browser tests wait for this
  } catch (e) {
    showError("colorize-error", `Cannot list the models: ${e.message}`);
  }
}

document.addEventListener("DOMContentLoaded", start);
