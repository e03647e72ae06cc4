// The page of `instance-search serve`: pick or upload an image, drag a box on the canvas, show the results.
// Boxes travel in the query image's own pixels; the canvas only scales them for display.
"use strict";

const $ = (id) => document.getElementById(id);
const PAGE = 48;  // database thumbnails fetched per "More images"

const state = {
  config: null,
  query: null,    // {image: {...} request part, name, width, height, url}
  box: null,      // [x1, y1, x2, y2] in query pixels, or null
  picture: null,  // the loaded <img> drawn on the canvas
  scale: 1,       // canvas pixels per query pixel
  drag: null,     // drag start in query pixels
  offset: 0,      // database thumbnails shown so far
  seq: 0,         // the latest query request: older answers are dropped
};

function status(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.className = isError ? "error" : "";
}

async function api(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON: reported below */ }
  if (!response.ok) throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  return body;
}

// ---------------------------------------------------------------------------- the query canvas

function draw() {
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!state.picture) return;
  ctx.drawImage(state.picture, 0, 0, canvas.width, canvas.height);
  if (!state.box) { $("box-label").textContent = "no box: the whole image"; return; }
  const [x1, y1, x2, y2] = state.box.map((v) => v * state.scale);
  ctx.fillStyle = "rgba(0, 0, 0, 0.35)";  // dim what is outside the box
  ctx.fillRect(0, 0, canvas.width, y1);
  ctx.fillRect(0, y2, canvas.width, canvas.height - y2);
  ctx.fillRect(0, y1, x1, y2 - y1);
  ctx.fillRect(x2, y1, canvas.width - x2, y2 - y1);
  ctx.strokeStyle = "#ff8c00";
  ctx.lineWidth = 2;
  ctx.strokeRect(x1 + 1, y1 + 1, x2 - x1 - 2, y2 - y1 - 2);
  $("box-label").textContent = `box ${state.box.map(Math.round).join(",")}`;
}

function setQuery(query) {
  state.query = query;
  state.box = null;
  $("query-name").textContent = `${query.name} (${query.width}x${query.height})`;
  const img = new Image();
  img.onload = () => {
    if (state.query !== query) return;
    const canvas = $("canvas");
    const maxW = canvas.parentElement.clientWidth || 560;
    state.scale = Math.min(maxW / query.width, 480 / query.height);
    canvas.width = Math.max(1, Math.round(query.width * state.scale));
    canvas.height = Math.max(1, Math.round(query.height * state.scale));
    state.picture = img;
    canvas.dataset.ready = "1";
    draw();
    status("Draw a box around the object.");
  };
  img.onerror = () => status(`${query.name}: the image did not load`, true);
  $("canvas").dataset.ready = "";
  img.src = query.url;
}

function toImage(event) {
  const canvas = $("canvas");
  const rect = canvas.getBoundingClientRect();
  const x = (event.clientX - rect.left) * (canvas.width / rect.width) / state.scale;
  const y = (event.clientY - rect.top) * (canvas.height / rect.height) / state.scale;
  const clamp = (v, hi) => Math.min(Math.max(v, 0), hi);
  return [clamp(x, state.query.width), clamp(y, state.query.height)];
}

function boxFrom(a, b) {
  return [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
}

function setupCanvas() {
  const canvas = $("canvas");
  canvas.addEventListener("pointerdown", (e) => {
    if (!state.picture) return;
    canvas.setPointerCapture(e.pointerId);
    state.drag = toImage(e);
    state.box = null;
    e.preventDefault();
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!state.drag) return;
    state.box = boxFrom(state.drag, toImage(e));
    draw();
  });
  const finish = (e) => {
    if (!state.drag) return;
    const box = boxFrom(state.drag, toImage(e));
    state.drag = null;
    // a click, or a box a few pixels wide, is not a box
    state.box = (box[2] - box[0]) * state.scale >= 4 && (box[3] - box[1]) * state.scale >= 4 ? box : null;
    draw();
    if (state.box) search();
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", () => { state.drag = null; draw(); });
}

// ---------------------------------------------------------------------------- searching

function currentIndex() { return Number($("index").value); }

async function search() {
  if (!state.query) return;
  const seq = ++state.seq;
  status("Searching…");
  const body = {
    index: currentIndex(),
    image: state.query.image,
    box: state.box ? state.box.map((v) => Math.round(v * 100) / 100) : null,
    similarity: $("similarity").value,
    results: Number($("result-count").value) || 20,
    rerank: $("rerank").checked,
  };
  try {
    const answer = await api("/api/query", {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
    });
    if (seq !== state.seq) return;
    showResults(answer);
    status(`${answer.hits.length} results: ${answer.dataset}/${answer.method}, ${answer.similarity}` +
           (answer.reranked ? `, top ${answer.reranked} re-ranked locally${answer.expanded ? ", query expanded" : ""} (dashed: first-stage order)` : ", not re-ranked"));
  } catch (err) {
    if (seq === state.seq) status(err.message, true);
  }
}

function showResults(answer) {
  const t = answer.timings;
  const s = (v) => `${v.toFixed(3)} s`;
  const parts = [["extract", t.extract], ["rank", t.rank], ["re-rank", t.rerank], ["expand", t.expand]];
  $("timing").textContent = parts.filter(([, v]) => v !== undefined).map(([k, v]) => `${k} ${s(v)}`)
    .concat([`total ${s(t.server)}`]).join(" · ");
  const results = $("results");
  results.replaceChildren();
  for (const hit of answer.hits) {
    const card = document.createElement("figure");
    card.className = hit.reranked || !answer.reranked ? "card" : "card first-stage";
    card.title = `${hit.name}: use as the query`;
    const frame = document.createElement("div");
    frame.className = "frame";
    const img = document.createElement("img");
    img.src = hit.thumb;
    img.alt = hit.name;
    frame.appendChild(img);
    if (hit.window) {
      // percentages of the image: right whatever size the thumbnail is drawn at
      const [x1, y1, x2, y2] = hit.window;
      const w = document.createElement("div");
      w.className = "window";
      Object.assign(w.style, {
        left: `${100 * x1 / hit.width}%`, top: `${100 * y1 / hit.height}%`,
        width: `${100 * (x2 - x1) / hit.width}%`, height: `${100 * (y2 - y1) / hit.height}%`,
      });
      frame.appendChild(w);
    }
    const caption = document.createElement("figcaption");
    caption.textContent = `#${hit.rank} · ${hit.score.toFixed(3)} · ${hit.name}`;
    card.append(frame, caption);
    card.addEventListener("click", () => pickDatabase(currentIndex(), hit));
    results.appendChild(card);
  }
}

// ---------------------------------------------------------------------------- picking an image

function pickDatabase(index, image) {
  setQuery({
    image: {index, id: image.id ?? image.image}, name: image.name, width: image.width, height: image.height,
    url: `/api/indexes/${index}/images/${image.id ?? image.image}/view`,
  });
}

async function loadDatabase(reset) {
  const index = currentIndex();
  if (reset) { state.offset = 0; $("database").replaceChildren(); }
  const filter = encodeURIComponent($("filter").value.trim());
  try {
    const page = await api(`/api/indexes/${index}/images?offset=${state.offset}&limit=${PAGE}&filter=${filter}`);
    for (const im of page.images) {
      const img = document.createElement("img");
      img.src = `/api/indexes/${index}/images/${im.id}/thumb`;
      img.alt = img.title = im.name;
      img.loading = "lazy";
      img.className = "thumb";
      img.addEventListener("click", () => pickDatabase(index, im));
      $("database").appendChild(img);
    }
    state.offset += page.images.length;
    $("more").hidden = state.offset >= page.total;
  } catch (err) {
    status(err.message, true);
  }
}

async function upload(file) {
  if (file.size > state.config.max_upload_bytes) {  // the server says the same (413); this saves the transfer
    status(`upload too large: the limit is ${(state.config.max_upload_bytes / 1048576).toFixed(1)} MB`, true);
    return;
  }
  const form = new FormData();
  form.append("image", file);
  status(`Uploading ${file.name}…`);
  try {
    const item = await api("/api/uploads", {method: "POST", body: form});
    setQuery({image: {upload: item.upload}, name: item.name, width: item.width, height: item.height,
              url: `/api/uploads/${item.upload}/view`});
  } catch (err) {
    status(err.message, true);
  }
}

// ---------------------------------------------------------------------------- start

async function start() {
  setupCanvas();
  try {
    state.config = await api("/api/indexes");
  } catch (err) {
    status(err.message, true);
    return;
  }
  for (const ix of state.config.indexes) $("index").add(new Option(`${ix.name} (${ix.n_database} images)`, ix.id));
  for (const s of state.config.similarities) $("similarity").add(new Option(s, s));
  $("result-count").max = state.config.max_results;
  // What the checkbox turns on differs by method: the server asks each index's method (second_stage).
  const secondStage = () => { $("rerank-label").title = state.config.indexes[currentIndex()].second_stage; };
  secondStage();
  $("index").addEventListener("change", () => { secondStage(); loadDatabase(true); if (state.query) search(); });
  for (const id of ["similarity", "rerank"]) $(id).addEventListener("change", () => { if (state.query) search(); });
  $("result-count").addEventListener("change", () => { if (state.query) search(); });
  $("whole").addEventListener("click", () => { state.box = null; draw(); search(); });
  $("more").addEventListener("click", () => loadDatabase(false));
  let timer = null;
  $("filter").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => loadDatabase(true), 250); });
  $("upload").addEventListener("change", (e) => { if (e.target.files.length) upload(e.target.files[0]); e.target.value = ""; });
  // Start from the index's first benchmark query image, so there is something to draw on.
  const first = state.config.indexes[0];
  const page = await api(`/api/indexes/0/images?offset=${first.first_query_image}&limit=1`);
  if (page.images.length && !state.query) pickDatabase(0, page.images[0]);
  await loadDatabase(true);
}

start();
