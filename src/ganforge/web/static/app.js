// ganforge playground: plain JS, no dependencies. Every image is a POST to /api/runs/<id>/..., shown as a blob: URL
// (the same blob is the download). A newer request of a section supersedes an older one still in flight.
const $ = (id) => document.getElementById(id);
let runs = [];
let run = null;
const ticket = {};
const blobUrl = {};

function debounce(fn, ms) {
  let timer = null;
  return () => { clearTimeout(timer); timer = setTimeout(fn, ms); };
}

function sectionError(section, message) {
  const p = $(section).querySelector(".error");
  p.textContent = message || "";
  p.hidden = !message;
}

function parseSeeds(text) {
  return text.split(",").map((s) => s.trim()).filter((s) => s !== "").map(Number);
}

function conditioning() {
  const body = {};
  if (run.styled) body.psi = Number($("psi").value);
  if (run.label_kind === "class" && $("class").value !== "") body["class"] = $("class").value;
  if (run.label_kind === "attributes") {
    body.attrs = [...$("attrs").querySelectorAll("input:checked")].map((el) => el.value);
  }
  return body;
}

async function render(section, endpoint, body, filename) {
  const mine = (ticket[section] = (ticket[section] || 0) + 1);
  const img = $(`${section === "samples" ? "grid" : section}-img`);
  const link = $(`${section === "samples" ? "grid" : section}-download`);
  let res;
  try {
    res = await fetch(`/api/runs/${encodeURIComponent(run.id)}/${endpoint}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...body, ...conditioning() }),
    });
  } catch (e) {
    sectionError(section, `no answer from the server (${e.message})`);
    return;
  }
  if (mine !== ticket[section]) return;
  if (!res.ok) {
    let message = `${res.status} ${res.statusText}`;
    try { message = (await res.json()).error || message; } catch (e) { /* not JSON: keep the status line */ }
    sectionError(section, message);
    return;
  }
  const blob = await res.blob();
  if (mine !== ticket[section]) return;
  sectionError(section, "");
  if (blobUrl[section]) URL.revokeObjectURL(blobUrl[section]);
  blobUrl[section] = URL.createObjectURL(blob);
  img.src = blobUrl[section];
  link.href = blobUrl[section];
  link.download = filename;
  link.hidden = false;
}

function drawGrid() {
  const seed = Number($("seed").value);
  const n = Number($("count").value);
  render("samples", "grid", { seed, n }, `${run.id}-seed${seed}-n${n}.png`);
}

function drawInterp() {
  const seeds = [Number($("seed-a").value), Number($("seed-b").value)];
  const t = Number($("t").value);
  $("t-value").textContent = t.toFixed(2);
  const space = run.styled ? $("space").value : "z";
  render("interp", "interpolate", { seeds, t, space }, `${run.id}-interp-${seeds.join("-")}-t${t.toFixed(2)}.png`);
}

function drawMix() {
  if (!run.styled) return;
  const rows = parseSeeds($("mix-rows").value);
  const cols = parseSeeds($("mix-cols").value);
  const layers = $("mix-layers").value;
  render("mix", "style-mix", { rows, cols, layers }, `${run.id}-style-mix-${layers}.png`);
}

function drawAll() {
  drawGrid();
  drawInterp();
  drawMix();
}

function describe(r) {
  const parts = [`${r.model}`, `${r.resolution}px`, r.step === null ? "no step" : `step ${r.step}`];
  if (r.fid === null) parts.push("FID: not evaluated yet");
  else parts.push(`FID ${r.fid.toFixed(2)}${r.fid_step === null ? "" : ` (step ${r.fid_step})`}`);
  return parts.join(" · ");
}

function option(value, text) {
  const el = document.createElement("option");
  el.value = value;
  el.textContent = text;
  return el;
}

function pickRun(id) {
  run = runs.find((r) => r.id === id);
  $("run-info").textContent = describe(run);
  document.querySelectorAll(".style-only").forEach((el) => { el.hidden = !run.styled; });
  document.querySelectorAll(".class-only").forEach((el) => { el.hidden = run.label_kind !== "class"; });
  document.querySelectorAll(".attr-only").forEach((el) => { el.hidden = run.label_kind !== "attributes"; });
  $("class").replaceChildren(option("", "every class"), ...run.label_names.map((name, i) => option(String(i), name)));
  $("attrs").replaceChildren(...run.label_names.map((name) => {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = name;
    box.addEventListener("change", drawAll);
    label.append(box, ` ${name}`);
    return label;
  }));
  $("mix-layers").replaceChildren(...run.style_layers.map((g) => option(g, g)));
  drawAll();
}

async function start() {
  let data;
  try {
    const res = await fetch("/api/runs");
    data = await res.json();
  } catch (e) {
    $("load-error").textContent = `cannot list the runs (${e.message})`;
    $("load-error").hidden = false;
    return;
  }
  runs = data.runs;
  $("count").max = data.limits.max_images;
  $("run").replaceChildren(...runs.map((r) => option(r.id, r.name)));
  $("run").addEventListener("change", () => pickRun($("run").value));

  const gridSoon = debounce(drawGrid, 150);
  $("seed").addEventListener("input", gridSoon);
  $("count").addEventListener("input", gridSoon);
  $("random-seed").addEventListener("click", () => {
    $("seed").value = crypto.getRandomValues(new Uint32Array(1))[0] % 2147483648;
    drawGrid();
  });
  const allSoon = debounce(drawAll, 120);
  $("psi").addEventListener("input", () => { $("psi-value").textContent = Number($("psi").value).toFixed(2); allSoon(); });
  $("class").addEventListener("change", drawAll);
  const interpSoon = debounce(drawInterp, 40);
  for (const id of ["seed-a", "seed-b", "t", "space"]) $(id).addEventListener("input", interpSoon);
  const mixSoon = debounce(drawMix, 250);
  for (const id of ["mix-rows", "mix-cols", "mix-layers"]) $(id).addEventListener("input", mixSoon);
  if (runs.length) pickRun(runs[0].id);
}

start();
