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
  if (!response.ok) {
    const error = new Error(body.error || `the server answered ${response.status}`);
    error.status = response.status;
    throw error;
  }
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

// --- colorize: the Guide mode ----------------------------------------------------------------------
// The photo is uploaded once (POST /api/guide/photo); each change of the hints asks for a preview
// (POST /api/guide/<id>), which is cached per hints state, so undo and redo show the very image
// they showed before. Hints are kept in the ORIGINAL photo's pixels as displayed (hints format v1).

const MARK = 7; // CSS pixels: a hint marker's radius, and how near a click must be to grab one
const CACHE_STATES = 64; // previews kept on the page, the oldest dropped first
const guide = {
  photo: null, file: null, model: "", hints: [], history: [[]], at: 0, selected: -1,
  cache: new Map(), drag: null, wanted: "",
};

const hintsKey = (hints) => JSON.stringify(hints);
const hintsDoc = (hints) => ({ version: 1, hints });

function plainHint(h) {
  // the fields in the order the server writes them back, so equal states have equal keys
  const out = { x: h.x, y: h.y, color: h.color.toLowerCase() };
  if (h.radius !== undefined && h.radius !== null) out.radius = h.radius;
  return out;
}

async function postJSON(url, body) {
  return answerOf(await fetch(url, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  }));
}

// A request about the guided photo (`path`: "", "/suggest" or "/render"). The server keeps a few
// photos, least recently used first out, and for an hour: one it has let go (404) is sent again
// and the request repeated, so a page left open keeps its hints and history.
async function guidePost(path, body) {
  try {
    return await postJSON(`/api/guide/${guide.photo.id}${path}`, body);
  } catch (e) {
    if (e.status !== 404 || !guide.file) throw e;
    const photo = guide.photo;
    const answer = await postForm("/api/guide/photo", { model: guide.model, file: guide.file });
    photo.id = answer.id; // the same photo and model: its sizes and previews are unchanged
    return postJSON(`/api/guide/${photo.id}${path}`, body);
  }
}

function setMode(mode) {
  $("colorize-auto").hidden = mode !== "auto";
  $("guide").hidden = mode !== "guide";
}

async function guidePhoto(file) {
  showError("guide-error", tooBig(file));
  if (tooBig(file)) return;
  guide.file = file;
  $("guide-status").textContent = `Reading ${file.name}…`;
  try {
    const model = $("guide-model").value;
    const answer = await postForm("/api/guide/photo", { model, file });
    if (file !== guide.file) return;
    Object.assign(guide, { photo: answer, model, hints: [], history: [[]], at: 0, selected: -1, cache: new Map() });
    remember([], answer.result);
    // the stage's width keeps the whole photo within the window's height (style.css)
    document.querySelector(".stage").style.setProperty("--aspect", String(answer.width / answer.height));
    $("guide-work").hidden = $("guide-load-hints").hidden = false;
    showError("guide-error", "");
    $("guide-status").textContent = `${file.name}: ${answer.width}×${answer.height}, guided on a ` +
      `${answer.preview_width}×${answer.preview_height} preview by ${$("guide-model").value}`;
    showState();
  } catch (e) {
    if (file !== guide.file) return;
    $("guide-status").textContent = "";
    showError("guide-error", e.message);
  }
}

function remember(hints, src) {
  guide.cache.set(hintsKey(hints), src);
  while (guide.cache.size > CACHE_STATES) guide.cache.delete(guide.cache.keys().next().value);
}

// A new state of the hints: the redo branch is dropped, the image follows.
function commit(hints, selected) {
  guide.history = guide.history.slice(0, guide.at + 1);
  guide.history.push(hints.map(plainHint));
  guide.at = guide.history.length - 1;
  guide.hints = hints.map(plainHint);
  guide.selected = selected === undefined ? Math.min(guide.selected, hints.length - 1) : selected;
  showState();
}

function moveInHistory(step) {
  const at = guide.at + step;
  if (!guide.photo || at < 0 || at >= guide.history.length) return;
  guide.at = at;
  guide.hints = guide.history[at].map(plainHint);
  guide.selected = Math.min(guide.selected, guide.hints.length - 1);
  showState();
}

// Draw the markers now, and show the state's image: cached, or asked for (the latest state wins).
async function showState() {
  drawHints();
  const key = hintsKey(guide.hints);
  guide.wanted = key;
  const img = $("guide-result");
  img.dataset.current = "0";
  $("guide-count").textContent = `${guide.hints.length} hint${guide.hints.length === 1 ? "" : "s"}; ` +
    `step ${guide.at} of ${guide.history.length - 1}`;
  $("guide-undo").disabled = guide.at === 0;
  $("guide-redo").disabled = guide.at === guide.history.length - 1;
  $("guide-delete").disabled = guide.selected < 0;
  let src = guide.cache.get(key);
  if (src === undefined) {
    try {
      const answer = await guidePost("", hintsDoc(guide.hints));
      src = answer.result;
      remember(guide.hints, src);
    } catch (e) {
      if (guide.wanted === key) showError("guide-error", e.message);
      return;
    }
  }
  if (guide.wanted !== key) return; // a newer state is on its way
  showImage(img, src);
}

function showImage(img, src) {
  if (img.src === src && img.complete) {
    img.dataset.current = "1";
    return;
  }
  img.onload = () => {
    if (img.src === src) img.dataset.current = "1"; // the browser tests and the benchmark wait for this
    drawHints();
  };
  img.src = src;
}

function sizeCanvas() {
  const canvas = $("guide-canvas");
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(canvas.clientWidth * ratio);
  canvas.height = Math.round(canvas.clientHeight * ratio);
  return ratio;
}

// Original pixels <-> CSS pixels of the canvas (a pixel x spans [x, x + 1) of the image)
function toPhoto(cssX, cssY) {
  const canvas = $("guide-canvas"), p = guide.photo;
  const clamp = (v, n) => Math.min(n - 1, Math.max(0, Math.round(v)));
  return { x: clamp(cssX / canvas.clientWidth * p.width - 0.5, p.width),
           y: clamp(cssY / canvas.clientHeight * p.height - 0.5, p.height) };
}

function toCanvas(h) {
  const canvas = $("guide-canvas"), p = guide.photo;
  return { x: (h.x + 0.5) / p.width * canvas.clientWidth, y: (h.y + 0.5) / p.height * canvas.clientHeight };
}

function drawHints() {
  if (!guide.photo) return;
  const canvas = $("guide-canvas");
  const ratio = sizeCanvas();
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, canvas.clientWidth, canvas.clientHeight);
  guide.hints.forEach((h, i) => {
    const c = toCanvas(h);
    ctx.beginPath();
    ctx.arc(c.x, c.y, MARK, 0, 2 * Math.PI);
    ctx.fillStyle = h.color;
    ctx.fill();
    ctx.lineWidth = i === guide.selected ? 3 : 1.5;
    ctx.strokeStyle = "#fff";
    ctx.stroke();
    ctx.beginPath();
    ctx.arc(c.x, c.y, MARK + (i === guide.selected ? 3 : 1.5), 0, 2 * Math.PI);
    ctx.lineWidth = 1;
    ctx.strokeStyle = "#000";
    ctx.stroke();
  });
}

function hintAt(cssX, cssY) {
  let best = -1, bestDist = MARK + 3;
  guide.hints.forEach((h, i) => {
    const c = toCanvas(h), d = Math.hypot(c.x - cssX, c.y - cssY);
    if (d <= bestDist) [best, bestDist] = [i, d];
  });
  return best;
}

function select(i) {
  guide.selected = i;
  $("guide-delete").disabled = i < 0;
  if (i >= 0) $("guide-color").value = guide.hints[i].color;
  drawHints();
  suggest();
}

function addHint(point) {
  const hints = [...guide.hints, { ...point, color: $("guide-color").value }];
  commit(hints, hints.length - 1);
  suggest();
}

// The pointer in CSS pixels of the canvas (not offsetX: Chrome computes it when read, after any scroll)
function pointerAt(e) {
  const rect = $("guide-canvas").getBoundingClientRect();
  return [e.clientX - rect.left, e.clientY - rect.top];
}

function onPointerDown(e) {
  if (!guide.photo || e.button !== 0) return;
  const [cx, cy] = pointerAt(e);
  $("guide-canvas").focus({ preventScroll: true }); // the keys act on the photo now
  const i = hintAt(cx, cy);
  if (i < 0) {
    addHint(toPhoto(cx, cy));
    return;
  }
  select(i);
  guide.drag = { index: i, moved: false };
  $("guide-canvas").setPointerCapture(e.pointerId);
}

function onPointerMove(e) {
  if (!guide.drag) return;
  const p = toPhoto(...pointerAt(e));
  Object.assign(guide.hints[guide.drag.index], p); // the markers follow; the image when released
  guide.drag.moved = true;
  drawHints();
}

function onPointerUp() {
  const drag = guide.drag;
  guide.drag = null;
  if (drag && drag.moved) {
    commit(guide.hints, drag.index);
    suggest();
  }
}

function recolor(color) {
  $("guide-color").value = color;
  if (guide.selected < 0) return; // the colour of the next hint
  const hints = guide.hints.map(plainHint);
  hints[guide.selected].color = color.toLowerCase();
  commit(hints);
}

function deleteSelected() {
  if (guide.selected < 0) return;
  const hints = guide.hints.filter((_, i) => i !== guide.selected);
  commit(hints, -1);
  $("guide-suggestions").replaceChildren();
}

function nudge(dx, dy) {
  // one step = one CSS pixel of the canvas, in the original's pixels
  const canvas = $("guide-canvas"), p = guide.photo, h = guide.hints[guide.selected];
  const sx = Math.max(1, Math.round(p.width / canvas.clientWidth));
  const sy = Math.max(1, Math.round(p.height / canvas.clientHeight));
  const hints = guide.hints.map(plainHint);
  hints[guide.selected] = { ...h, x: Math.min(p.width - 1, Math.max(0, h.x + dx * sx)),
                            y: Math.min(p.height - 1, Math.max(0, h.y + dy * sy)) };
  commit(hints.map(plainHint));
}

const ARROWS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

function onCanvasKey(e) {
  if (!guide.photo) return;
  if (ARROWS[e.key] && guide.selected >= 0) {
    const f = e.shiftKey ? 10 : 1;
    nudge(ARROWS[e.key][0] * f, ARROWS[e.key][1] * f);
  } else if (e.key === "Delete" || e.key === "Backspace") {
    deleteSelected();
  } else if (e.key === "Enter" || e.key === " ") {
    addHint({ x: Math.floor(guide.photo.width / 2), y: Math.floor(guide.photo.height / 2) });
  } else if ((e.key === "]" || e.key === "[") && guide.hints.length) {
    const n = guide.hints.length;
    select(((guide.selected < 0 ? 0 : guide.selected) + (e.key === "]" ? 1 : n - 1)) % n);
  } else if (e.key === "Escape") {
    select(-1);
  } else {
    return;
  }
  e.preventDefault();
}

function onUndoKeys(e) {
  // anywhere in the Guide mode but in a text field: Ctrl+Z, Ctrl+Shift+Z, Ctrl+Y (Cmd on a Mac)
  if ($("guide").hidden || !(e.ctrlKey || e.metaKey) || e.target.matches("input, select, textarea")) return;
  const key = e.key.toLowerCase();
  if (key === "z") moveInHistory(e.shiftKey ? 1 : -1);
  else if (key === "y") moveInHistory(1);
  else return;
  e.preventDefault();
}

async function suggest() {
  const i = guide.selected;
  const box = $("guide-suggestions");
  if (i < 0) {
    box.replaceChildren();
    box.dataset.point = "";
    return;
  }
  const h = guide.hints[i];
  const others = guide.hints.filter((_, j) => j !== i);
  try {
    const answer = await guidePost("/suggest", { x: h.x, y: h.y, hints: others });
    if (guide.hints[guide.selected] !== h) return; // another hint, or a newer state, meanwhile
    box.replaceChildren(...answer.suggestions.map((s) => swatch(s)));
    box.dataset.point = `${h.x},${h.y}`; // which hint they are for (the browser tests wait for it)
  } catch (e) {
    showError("guide-error", e.message);
  }
}

function swatch(s) {
  const b = document.createElement("button");
  const percent = `${Math.round(s.probability * 100)}%`;
  b.type = "button";
  b.className = "swatch";
  b.style.background = s.color;
  b.textContent = percent;
  b.dataset.color = s.color;
  b.setAttribute("aria-label", `colour ${s.color}, probability ${percent}`);
  b.addEventListener("click", () => recolor(s.color));
  return b;
}

function saveBlob(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

async function downloadGuided() {
  $("guide-status").textContent = `Colorizing the full ${guide.photo.width}×${guide.photo.height} photo…`;
  try {
    const answer = await guidePost("/render", hintsDoc(guide.hints));
    const a = document.createElement("a");
    a.href = answer.download;
    a.download = answer.filename;
    a.click();
    $("guide-status").textContent = `${answer.filename}: colorized at full size in ${answer.seconds.toFixed(2)} s`;
  } catch (e) {
    showError("guide-error", e.message);
  }
}

function saveHints() {
  const text = JSON.stringify(hintsDoc(guide.hints), null, 1);
  saveBlob(new Blob([text + "\n"], { type: "application/json" }), `${guide.photo.filename}-hints.json`);
}

async function loadHints(file) {
  // checked by the server (the same one-line messages as `cae colorize --hints`); a bad file
  // changes nothing
  let doc;
  try {
    doc = JSON.parse(await file.text());
  } catch (e) {
    showError("guide-error", `${file.name}: not JSON (${e.message})`);
    return;
  }
  try {
    const answer = await guidePost("", doc);
    const hints = answer.hints.hints.map(plainHint);
    remember(hints, answer.result);
    showError("guide-error", "");
    commit(hints, -1);
  } catch (e) {
    showError("guide-error", `${file.name}: ${e.message}`);
  }
}

function setUpGuide() {
  for (const radio of document.querySelectorAll("[name=colorize-mode]")) {
    radio.addEventListener("change", () => setMode(radio.value));
  }
  $("guide-file").addEventListener("change", (e) => {
    if (e.target.files.length) guidePhoto(e.target.files[0]);
    e.target.value = "";
  });
  $("guide-hints-file").addEventListener("change", (e) => {
    if (e.target.files.length) loadHints(e.target.files[0]);
    e.target.value = "";
  });
  $("guide-model").addEventListener("change", () => { if (guide.file) guidePhoto(guide.file); });
  const canvas = $("guide-canvas");
  canvas.addEventListener("pointerdown", onPointerDown);
  canvas.addEventListener("pointermove", onPointerMove);
  canvas.addEventListener("pointerup", onPointerUp);
  canvas.addEventListener("pointercancel", onPointerUp);
  canvas.addEventListener("keydown", onCanvasKey);
  document.addEventListener("keydown", onUndoKeys);
  $("guide-undo").addEventListener("click", () => moveInHistory(-1));
  $("guide-redo").addEventListener("click", () => moveInHistory(1));
  $("guide-delete").addEventListener("click", deleteSelected);
  $("guide-reset").addEventListener("click", () => { if (guide.hints.length) commit([], -1); });
  $("guide-color").addEventListener("change", (e) => recolor(e.target.value));
  $("guide-download").addEventListener("click", downloadGuided);
  $("guide-save-hints").addEventListener("click", saveHints);
  new ResizeObserver(drawHints).observe(canvas);
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
  setUpGuide();
  setUpReconstruct();
  try {
    const answer = await getJSON("/api/models");
    limits = answer.limits;
    fillSelect("colorize-model", answer.colorize);
    fillSelect("guide-model", answer.guide);
    if (!answer.guide.length) {
      $("guide-status").textContent = "No guided colorizer: the shipped weights lack one, and --runs holds no " +
        "run trained with color.hints.";
      $("guide-file").disabled = true;
    }
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
