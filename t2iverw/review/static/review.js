// The review page: one image at a time, decisions by keyboard. Plain DOM, no framework.
// Text from the build is only ever set with textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const token = params.get("token");
let info = null;        // /api/info: build, reviewer, scopes, parts, colours
let ids = [];           // the current queue
let pos = -1;           // index of the shown image in ids (-1: shown from a search or a link)
let item = null;        // the shown image's /api/items answer
let overlayOn = true;
let partsOn = [true, true, true, true, true, true];
let draftTimer = null;

async function api(path, options = {}) {
  const headers = {"X-T2IVERW": "1", ...(options.body ? {"Content-Type": "application/json"} : {})};
  if (token) headers["X-Review-Token"] = token;
  const response = await fetch(path, {...options, headers, credentials: "same-origin"});
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : await response.text();
  if (!response.ok) throw new Error(body.detail || body || response.statusText);
  return body;
}

function withToken(url) { return token ? `${url}?token=${encodeURIComponent(token)}` : url; }

function draftKey(id) { return `t2iverw-draft:${info.build}:${info.reviewer}:${id}`; }

function banner(text, error = false) {
  const b = $("banner");
  b.textContent = text || "";
  b.hidden = !text;
  b.classList.toggle("error", error);
}

function showCounts(c) {
  $("progress").textContent = "";
  for (const [key, label] of [["reviewed", "reviewed"], ["flagged", "flagged"], ["total", "total"]]) {
    const span = document.createElement("span");
    span.id = `count-${key}`;
    span.textContent = c[key];
    $("progress").append(span, ` ${label}${key === "total" ? "" : " / "}`);
  }
  const flag = $("flag"), chosen = flag.value;
  flag.textContent = "";
  flag.append(new Option("any", ""));
  for (const [name, n] of Object.entries(c.by_flag)) flag.append(new Option(`${name} (${n})`, name));
  flag.value = chosen in c.by_flag || chosen === "" ? chosen : "";
}

function showPosition() {
  $("position").textContent = ids.length ? (pos >= 0 ? `${pos + 1} of ${ids.length}` : `(not in queue of ${ids.length})`)
    : "queue empty";
}

async function loadQueue(query = "") {
  const q = new URLSearchParams({scope: $("scope").value, flag: $("flag").value, q: query});
  const answer = await api(`/api/queue?${q}`);
  ids = answer.ids;
  showCounts(answer.counts);
  return ids;
}

function fill(dl, entries) {
  dl.textContent = "";
  for (const [key, value] of entries) {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = key;
    dd.textContent = value === null || value === undefined ? "–" : typeof value === "object" ? JSON.stringify(value) : value;
    dl.append(dt, dd);
  }
}

function showFlags(flags) {
  const box = $("flags");
  box.textContent = "";
  if (!flags.length) {
    const ok = document.createElement("span");
    ok.className = "clean";
    ok.textContent = "no QA flags";
    box.append(ok);
  }
  for (const f of flags) {
    const span = document.createElement("span");
    span.textContent = f;
    box.append(span);
  }
}

function showLayers() {
  const layers = $("layers");
  layers.classList.toggle("off", !overlayOn);
  layers.querySelectorAll("img").forEach((img, k) => img.classList.toggle("off", !partsOn[k]));
  $("legend").querySelectorAll("input").forEach((box, k) => { box.checked = partsOn[k]; box.disabled = !overlayOn; });
}

function showOverlay(id, parts) {
  const layers = $("layers"), legend = $("legend");
  layers.textContent = "";
  legend.textContent = "";
  if (!parts) {
    legend.textContent = "no part masks for this image";
    return;
  }
  parts.forEach((part, k) => {
    const img = document.createElement("img");
    img.src = withToken(`/api/images/${encodeURIComponent(id)}/parts/${k}.png`);
    img.alt = part.name;
    img.dataset.part = part.name;
    layers.append(img);
    const label = document.createElement("label"), box = document.createElement("input"), swatch = document.createElement("span");
    box.type = "checkbox";
    box.addEventListener("change", () => { partsOn[k] = box.checked; showLayers(); });
    swatch.className = "swatch";
    swatch.style.background = info.colours[k];
    label.append(box, swatch, `${k + 1} ${part.name}${part.score === null ? "" : ` (${part.score.toFixed(2)})`}`);
    legend.append(label);
  });
  showLayers();
}

function latestDraft(id, serverDraft) {
  let local = null;
  try { local = JSON.parse(localStorage.getItem(draftKey(id))); } catch (e) { local = null; }
  if (local && (!serverDraft || local.time > serverDraft.time)) return local;
  return serverDraft;
}

function cancelDraft() {
  clearTimeout(draftTimer);
  draftTimer = null;
}

async function show(id) {
  cancelDraft();
  try {
    item = await api(`/api/items/${encodeURIComponent(id)}`);
  } catch (e) {
    banner(`${id}: ${e.message}`, true);
    return;
  }
  pos = ids.indexOf(id);
  history.replaceState(null, "", `${location.pathname}${location.search}#${encodeURIComponent(id)}`);
  $("photo").src = withToken(`/api/images/${encodeURIComponent(id)}/photo`);
  showOverlay(id, item.parts);
  $("title").textContent = `${item.image_id} · vehicle ${item.meta.vehicle_id}`;
  const status = $("status");
  status.textContent = "";
  const state = document.createElement("span");
  state.className = item.status;
  state.id = "review-status";
  state.textContent = item.status;
  status.append(state, item.provenance.reviewer ? ` by ${item.provenance.reviewer}` : "");
  const draft = latestDraft(id, item.draft);
  const box = $("caption");
  if (draft && draft.text !== item.text) {
    box.value = draft.text;
    banner("Unsaved draft restored. Ctrl+Enter saves it; the stored caption is under 'Machine caption' and in the record.");
  } else {
    box.value = item.text;
    banner("");
  }
  markDirty();
  showFlags(item.flags);
  $("machine").textContent = item.machine_text;
  fill($("meta"), Object.entries(item.meta));
  fill($("provenance"), Object.entries(item.provenance));
  showPosition();
}

function dirty() { return item !== null && $("caption").value !== item.text; }
function markDirty() { $("caption").classList.toggle("dirty", dirty()); }

function keepDraft() {
  if (!item) return;
  const id = item.image_id, text = $("caption").value;
  markDirty();
  if (dirty()) localStorage.setItem(draftKey(id), JSON.stringify({text, time: new Date().toISOString()}));
  else localStorage.removeItem(draftKey(id));
  clearTimeout(draftTimer);
  draftTimer = setTimeout(() => { draftTimer = null; sendDraft(id, text); }, 400);
}

async function sendDraft(id, text, keepalive = false) {
  const path = `/api/drafts/${encodeURIComponent(id)}`;
  try {
    if (item && id === item.image_id && text === item.text) {
      await api(path, {method: "DELETE", keepalive});
      showFlags(item.flags);
    } else {
      const answer = await api(path, {method: "PUT", body: JSON.stringify({text}), keepalive});
      if (item && id === item.image_id) showFlags(answer.flags);
    }
  } catch (e) {
    banner("The app did not answer; the draft is kept in this browser. Start `t2iverw review` again to save it.", true);
  }
}

function flushDraft() {
  if (draftTimer && item) {
    cancelDraft();
    sendDraft(item.image_id, $("caption").value, true);
  }
}

async function decide(action) {
  if (!item) return;
  const id = item.image_id, text = $("caption").value;
  cancelDraft();
  $("caption").blur();  // the next image starts in shortcut mode, not in the box
  document.querySelectorAll("#actions button").forEach((b) => { b.disabled = true; });
  try {
    const answer = await api("/api/decisions", {method: "POST", body: JSON.stringify({image_id: id, action, text})});
    localStorage.removeItem(draftKey(id));
    showCounts(answer.counts);
    item = answer.item;
    await next();
  } catch (e) {
    const offline = e instanceof TypeError;
    banner(offline ? "Not saved: the app did not answer. Your text is kept as a draft in this browser; start " +
      "`t2iverw review` again and save." : `Not saved: ${e.message}`, true);
  } finally {
    document.querySelectorAll("#actions button").forEach((b) => { b.disabled = false; });
  }
}

async function next() {
  if (pos + 1 < ids.length) return show(ids[pos + 1]);
  const before = item ? item.image_id : null;
  await loadQueue();
  const rest = ids.filter((id) => id !== before);
  if (rest.length) return show(rest[0]);
  if (before) await show(before);
  banner("Nothing left in this queue.");
}

async function prev() {
  if (pos > 0) await show(ids[pos - 1]);
}

function edit() {
  const box = $("caption");
  box.focus();
  box.setSelectionRange(box.value.length, box.value.length);
}

function onKey(event) {
  const target = event.target;
  if (target === $("caption")) {
    if ((event.ctrlKey || event.metaKey) && (event.key === "Enter" || event.key === "s")) {
      event.preventDefault();
      decide("save");
    } else if (event.key === "Escape") {
      target.blur();
      flushDraft();
    }
    return;
  }
  if (target.matches("input, select, textarea")) {
    if (event.key === "Escape") target.blur();
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const actions = {
    a: () => decide(dirty() ? "save" : "accept"), r: () => decide("reject"), s: next, n: next, j: next,
    ArrowRight: next, p: prev, k: prev, ArrowLeft: prev, e: edit, Enter: edit,
    o: () => { overlayOn = !overlayOn; showLayers(); },
    "/": () => $("search").focus(),
  };
  if (/^[1-6]$/.test(event.key)) {
    const k = Number(event.key) - 1;
    partsOn[k] = !partsOn[k];
    showLayers();
    event.preventDefault();
  } else if (actions[event.key]) {
    event.preventDefault();
    actions[event.key]();
  }
}

async function start() {
  try {
    info = await api("/api/info");
  } catch (e) {
    banner(`Cannot reach the review app: ${e.message}`, true);
    return;
  }
  $("reviewer").textContent = `reviewer: ${info.reviewer} · ${info.build}`;
  for (const s of info.scopes) $("scope").append(new Option(s, s));
  $("scope").value = info.scope;
  showCounts(info.counts);
  await loadQueue();
  const wanted = decodeURIComponent(location.hash.slice(1));
  if (wanted) await show(wanted);
  else if (ids.length) await show(ids[0]);
  else banner("Nothing to review in this queue.");

  $("caption").addEventListener("input", keepDraft);
  $("caption").addEventListener("blur", flushDraft);
  $("accept").addEventListener("click", () => decide(dirty() ? "save" : "accept"));
  $("save").addEventListener("click", () => decide("save"));
  $("reject").addEventListener("click", () => decide("reject"));
  $("skip").addEventListener("click", next);
  $("prev").addEventListener("click", prev);
  for (const select of [$("scope"), $("flag")]) {
    select.addEventListener("change", async () => {
      $("search").value = "";
      await loadQueue();
      if (ids.length) await show(ids[0]); else banner("Nothing in this queue.");
      select.blur();
    });
  }
  $("search-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const query = $("search").value.trim();
    await loadQueue(query);
    if (ids.length) await show(ids[0]); else banner(`No image or vehicle id matches ${query}.`, true);
    $("search").blur();
  });
  document.addEventListener("keydown", onKey);
  window.addEventListener("pagehide", flushDraft);
}

start();
