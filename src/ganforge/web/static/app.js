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

function conditioning(truncation = true) {
  const body = {};
  if (run.styled && truncation) body.psi = Number($("psi").value);
  if (run.label_kind === "class" && $("class").value !== "") body["class"] = $("class").value;
  if (run.label_kind === "attributes") {
    body.attrs = [...$("attrs").querySelectorAll("input:checked")].map((el) => el.value);
  }
  return body;
}

async function render(section, endpoint, body, filename, truncation = true) {
  const mine = (ticket[section] = (ticket[section] || 0) + 1);
  const img = $(`${section === "samples" ? "grid" : section}-img`);
  const link = $(`${section === "samples" ? "grid" : section}-download`);
  let res;
  try {
    res = await fetch(`/api/runs/${encodeURIComponent(run.id)}/${endpoint}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...body, ...conditioning(truncation) }),
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
  drawEdit();
}

// --- directions, edits and projections -------------------------------------------------------------------------
// The sliders are the run's directions of the chosen method (computed by the server on first use, then cached);
// they edit a seed or the latest projected upload. Edits are untruncated: strength 0 is the seed's plain sample.
let directions = null;
let projection = null;
let polling = null;
let limits = {};

function status(id, text) { $(id).textContent = text || ""; }

function uploadError(message) {
  $("upload-error").textContent = message || "";
  $("upload-error").hidden = !message;
}

async function errorOf(res) {
  try { return (await res.json()).error || `${res.status} ${res.statusText}`; } catch (e) { return `${res.status} ${res.statusText}`; }
}

function drawEdit() {
  if (!run || !directions) return;
  const strengths = [...$("sliders").querySelectorAll("input")].map((el) => Number(el.value));
  const body = { method: directions.method, strengths };
  let name;
  if ($("edit-source").value === "projection" && projection) {
    body.projection = projection;
    name = `upload-${projection}`;
  } else {
    body.seed = Number($("edit-seed").value);
    name = `seed${body.seed}`;
  }
  const moved = strengths.map((v, k) => (v ? `_${directions.names[k]}${v > 0 ? "+" : ""}${v}` : "")).join("");
  render("latent", "edit", body, `${run.id}-${directions.method}-${name}${moved}.png`.replace(/[^\w.+-]/g, "-"), false);
}

async function loadDirections() {
  const method = $("dir-method").value;
  const mine = run;
  directions = null;
  $("sliders").replaceChildren();
  status("dir-status", `computing ${method} directions (first use: then cached in the run folder)...`);
  let res;
  try {
    res = await fetch(`/api/runs/${encodeURIComponent(run.id)}/directions/${method}`);
  } catch (e) {
    status("dir-status", "");
    sectionError("latent", `no answer from the server (${e.message})`);
    return;
  }
  if (mine !== run || method !== $("dir-method").value) return;
  if (!res.ok) {
    status("dir-status", "");
    sectionError("latent", await errorOf(res));
    return;
  }
  directions = await res.json();
  sectionError("latent", "");
  status("dir-status", `${directions.names.length} of ${directions.count} directions in ${directions.space}, strongest `
    + "first; strengths in standard deviations (σ) of the latent along each");
  const editSoon = debounce(drawEdit, 60);
  const top = limits.max_strength || 5;
  $("sliders").replaceChildren(...directions.names.map((name, k) => {
    const label = document.createElement("label");
    const title = document.createElement("span");
    title.className = "name";
    title.textContent = name;
    title.title = name;
    const slider = document.createElement("input");
    Object.assign(slider, { type: "range", min: -top, max: top, step: 0.1, value: 0 });
    slider.dataset.k = k;
    slider.setAttribute("aria-label", `${name} strength`);
    const out = document.createElement("output");
    out.textContent = "0.0";
    slider.addEventListener("input", () => { out.textContent = Number(slider.value).toFixed(1); editSoon(); });
    label.append(title, slider, out);
    return label;
  }));
  drawEdit();
}

function showJob(job) {
  $("project-row").hidden = false;
  $("project-progress").max = Math.max(job.total, 1);
  $("project-progress").value = job.step;
  const seconds = `${job.seconds.toFixed(1)} s`;
  const words = {
    running: job.cancelling ? "cancelling..." : `projecting: step ${job.step} of ${job.total} (${seconds})`,
    done: `projected in ${seconds}: the sliders now edit it${job.notes.length ? ` (${job.notes.join("; ")})` : ""}`,
    cancelled: `cancelled at step ${job.step}`,
    failed: "failed",
  };
  status("project-status", words[job.state]);
  $("project-cancel").hidden = job.state !== "running";
  $("upload").disabled = job.state === "running";
  if (job.state === "failed") uploadError(job.error);
}

async function projected(job) {
  projection = job.projection;
  const source = $("edit-source");
  source.querySelector('option[value="projection"]').disabled = false;
  source.value = "projection";
  $("edit-seed-label").hidden = true;
  const base = `/api/runs/${encodeURIComponent(run.id)}`;
  const plain = { method: directions ? directions.method : "sefa", strengths: [], projection };
  const [target, recon] = await Promise.all([
    fetch(`${base}/projections/${projection}/target`),
    fetch(`${base}/edit`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(plain) }),
  ]);
  for (const [key, res] of [["target", target], ["recon", recon]]) {
    if (!res.ok) continue;
    if (blobUrl[key]) URL.revokeObjectURL(blobUrl[key]);
    blobUrl[key] = URL.createObjectURL(await res.blob());
    $(`${key}-img`).src = blobUrl[key];
  }
  $("target-figure").hidden = false;
  drawEdit();
}

async function poll(runId) {
  clearTimeout(polling);
  let job;
  try {
    const res = await fetch(`/api/runs/${encodeURIComponent(runId)}/project`);
    job = (await res.json()).job;
  } catch (e) {
    uploadError(`no answer from the server (${e.message})`);
    return;
  }
  if (!run || runId !== run.id || !job) return;
  showJob(job);
  if (job.state === "running") polling = setTimeout(() => poll(runId), 200);
  else if (job.state === "done" && job.projection !== projection) projected(job);
}

async function upload() {
  const file = $("upload").files[0];
  if (!file) return;
  uploadError("");
  const steps = Number($("project-steps").value);
  let res;
  try {
    res = await fetch(`/api/runs/${encodeURIComponent(run.id)}/project?steps=${steps}`, {
      method: "POST", headers: { "Content-Type": file.type || "application/octet-stream" }, body: file,
    });
  } catch (e) {
    uploadError(`no answer from the server (${e.message})`);
    return;
  }
  $("upload").value = "";
  if (!res.ok) {
    uploadError(await errorOf(res));
    return;
  }
  showJob((await res.json()).job);
  poll(run.id);
}

async function cancelProjection() {
  const res = await fetch(`/api/runs/${encodeURIComponent(run.id)}/project`, { method: "DELETE" });
  if (!res.ok) uploadError(await errorOf(res));
  else showJob((await res.json()).job);
}

function pickSource() {
  $("edit-seed-label").hidden = $("edit-source").value !== "seed";
  drawEdit();
}

function resetLatent() {
  projection = null;
  clearTimeout(polling);
  const source = $("edit-source");
  source.querySelector('option[value="projection"]').disabled = true;
  source.value = "seed";
  $("edit-seed-label").hidden = false;
  $("target-figure").hidden = true;
  $("project-row").hidden = true;
  $("upload").disabled = false;
  uploadError("");
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
  resetLatent();
  drawAll();
  loadDirections();
  poll(run.id);  // a projection this run is still running (another tab, a reload) shows its progress
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
  limits = data.limits;
  $("project-steps").max = limits.max_projection_steps;
  $("project-steps").value = limits.projection_steps;
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
  $("dir-method").addEventListener("change", loadDirections);
  $("edit-source").addEventListener("change", pickSource);
  $("edit-seed").addEventListener("input", debounce(drawEdit, 150));
  $("reset-sliders").addEventListener("click", () => {
    $("sliders").querySelectorAll("label").forEach((label) => {
      label.querySelector("input").value = 0;
      label.querySelector("output").textContent = "0.0";
    });
    drawEdit();
  });
  $("upload").addEventListener("change", upload);
  $("project-cancel").addEventListener("click", cancelProjection);
  if (runs.length) pickRun(runs[0].id);
}

start();
