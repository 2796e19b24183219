// magiclens web page: builds a query (image and/or instruction, or an indexed
// image by id), posts it to /api/search, and shows the results grid.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { file: null, imageId: null, offset: 0, lastCount: 0 };

function showError(msg) {
  $("error").textContent = msg;
  $("error").hidden = !msg;
}

function setPreview(src) {
  $("preview").hidden = !src;
  $("drop-hint").hidden = !!src;
  if (src) $("preview").src = src; else $("preview").removeAttribute("src");
}

function useFile(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) return showError("That file is not an image. Pick a JPEG, PNG, WebP or GIF file.");
  state.file = file; state.imageId = null;
  setPreview(URL.createObjectURL(file));
  showError("");
}

function useIndexed(id) {
  state.file = null; state.imageId = id;
  setPreview("/api/thumbs/" + id);
}

function clearImage() {
  state.file = null; state.imageId = null; $("file").value = "";
  setPreview(null);
}

// Turns a failed response into a sentence a person can act on.
async function describeFailure(resp) {
  let msg = "";
  try { msg = (await resp.json()).error || ""; } catch (e) { /* not JSON */ }
  if (resp.status === 503) return "The server is busy right now. Please try again in a moment.";
  if (resp.status === 413) return "Too large: " + (msg || "the upload is over the server's limit.");
  return msg ? msg.charAt(0).toUpperCase() + msg.slice(1) + "." : "The search failed (HTTP " + resp.status + ").";
}

function buildBody(k) {
  const text = $("text").value.trim();
  if (state.file) {
    const fd = new FormData();
    fd.append("image", state.file);
    fd.append("text", text);
    fd.append("k", String(k));
    fd.append("offset", String(state.offset));
    return fd;
  }
  const q = { k: k, offset: state.offset };
  if (text) q.text = text;
  if (state.imageId !== null) q.image_id = state.imageId;
  return JSON.stringify(q);
}

function card(r) {
  const div = document.createElement("div");
  div.className = "card";
  div.title = "Search again with this image";
  div.dataset.id = r.id;
  const img = document.createElement("img");
  img.loading = "lazy"; img.alt = r.path; img.src = "/api/thumbs/" + r.id;
  const meta = document.createElement("div");
  meta.className = "meta";
  const score = document.createElement("div");
  score.className = "score";
  score.textContent = "#" + r.rank + " · score " + r.score.toFixed(4);
  const path = document.createElement("div");
  path.className = "path";
  path.textContent = r.path.split("/").pop();
  meta.append(score, path);
  div.append(img, meta);
  div.addEventListener("click", () => { useIndexed(r.id); state.offset = 0; search(); });
  return div;
}

function render(data, k) {
  const grid = $("results");
  grid.replaceChildren(...data.results.map(card));
  state.lastCount = data.results.length;
  const first = state.offset + 1, last = state.offset + data.results.length;
  $("summary").textContent = data.results.length
    ? "Results " + first + "–" + last + " (" + data.took_ms.toFixed(1) + " ms)"
    : (state.offset ? "No more results." : "No results.");
  $("pager").hidden = state.offset === 0 && data.results.length < k;
  $("prev").disabled = state.offset === 0;
  $("next").disabled = data.results.length < k;
  $("page").textContent = "page " + (Math.floor(state.offset / k) + 1);
}

async function search() {
  const k = parseInt($("k").value, 10);
  if (!state.file && state.imageId === null && !$("text").value.trim())
    return showError("Pick or drop an image, type an instruction, or both.");
  showError("");
  $("go").disabled = true;
  try {
    const body = buildBody(k);
    const headers = typeof body === "string" ? { "Content-Type": "application/json" } : {};
    const resp = await fetch("/api/search", { method: "POST", body: body, headers: headers });
    if (!resp.ok) return showError(await describeFailure(resp));
    render(await resp.json(), k);
  } catch (e) {
    showError("Could not reach the server. Is it still running?");
  } finally {
    $("go").disabled = false;
  }
}

function wire() {
  const drop = $("drop");
  drop.addEventListener("click", () => $("file").click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    useFile(e.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", () => useFile($("file").files[0]));
  $("clear").addEventListener("click", clearImage);
  $("query").addEventListener("submit", (e) => { e.preventDefault(); state.offset = 0; search(); });
  $("prev").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - parseInt($("k").value, 10)); search();
  });
  $("next").addEventListener("click", () => { state.offset += parseInt($("k").value, 10); search(); });
  fetch("/healthz").then((r) => r.json())
    .then((h) => { $("status").textContent = h.items + " images indexed"; })
    .catch(() => { $("status").textContent = "server not reachable"; });
}

wire();
