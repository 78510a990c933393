// The search page. Every text from the server goes into the DOM as text (textContent), never as HTML.
"use strict";
const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token");
const withToken = (url) => token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url;
let info = null;

async function api(path) {
  const r = await fetch(withToken(path));
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.detail || r.statusText);
  return body;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function photo(id) { return withToken(`/api/images/${encodeURIComponent(id)}/photo`); }

function thumb(hit, rank) {
  const box = el("figure", "hit" + (hit.correct ? " correct" : ""));
  box.dataset.imageId = hit.image_id;
  const stage = el("div", "stage" + ($("overlay").checked ? "" : " plain"));
  const img = el("img", "photo");
  img.src = photo(hit.image_id);
  img.alt = hit.image_id;
  stage.append(img);
  api(`/api/images/${encodeURIComponent(hit.image_id)}/parts`).then((p) => {
    p.parts.forEach((on, k) => {
      if (!on) return;
      const layer = el("img", "layer");
      layer.src = withToken(`/api/images/${encodeURIComponent(hit.image_id)}/parts/${k}.png`);
      layer.alt = "";
      layer.title = info.parts[k];
      stage.append(layer);
    });
  }).catch(() => {});
  box.append(stage);
  const label = el("figcaption", "label");
  label.append(el("span", "rank", rank !== undefined ? `#${rank} ` : ""),
               el("span", "id", hit.image_id), el("br"),
               el("span", "vehicle", `vehicle ${hit.vehicle_id}`), el("br"));
  if (hit.score !== undefined) label.append(el("span", "score", `score ${hit.score.toFixed(4)}`));
  box.append(label);
  return box;
}

function show(heading, results, truth) {
  $("heading").textContent = heading;
  $("message").textContent = "";
  $("results").replaceChildren(...results.map((h, k) => thumb(h, k + 1)));
  $("truth-box").hidden = !truth;
  if (truth) $("truth").replaceChildren(...truth.map((id) => thumb({image_id: id, vehicle_id: "", correct: true})));
}

function fail(err) { $("message").textContent = "Error: " + err.message; }

async function search(text) {
  const body = await api(`/api/search?q=${encodeURIComponent(text)}&top=${$("top").value}`);
  show(`Top ${body.results.length} for: ${body.query}`, body.results, null);
}

async function pick(index) {
  const c = await api(`/api/captions/${index}?top=${$("top").value}`);
  $("query").value = c.text;
  show(`Top ${c.results.length} for test caption ${c.query_id} (vehicle ${c.vehicle_id})`, c.results, c.truth);
}

function captionList(captions) {
  const items = captions.map((c) => {
    const li = el("li", "caption", c.text);
    li.dataset.index = c.index;
    li.title = `${c.query_id} · vehicle ${c.vehicle_id}`;
    li.addEventListener("click", () => pick(c.index).catch(fail));
    return li;
  });
  $("captions").replaceChildren(...items);
  $("filter").addEventListener("input", () => {
    const f = $("filter").value.toLowerCase();
    items.forEach((li) => { li.hidden = f && !li.textContent.toLowerCase().includes(f); });
  });
}

function failureList(failures) {
  $("failures").replaceChildren(...failures.map((f) => {
    const li = el("li", "failure");
    li.dataset.index = f.index;
    li.append(el("div", "text", f.text),
              el("div", "first", `first correct: ${f.first_correct.image_id} at rank ${f.first_correct.rank}`));
    const thumbs = el("div", "thumbs");
    for (const h of f.results) {
      const img = el("img", h.correct ? "correct" : "");
      img.src = photo(h.image_id);
      img.alt = h.image_id;
      img.title = `${h.image_id} · vehicle ${h.vehicle_id} · ${h.score.toFixed(4)}`;
      thumbs.append(img);
    }
    const first = el("img", "correct first-correct");
    first.src = photo(f.first_correct.image_id);
    first.alt = f.first_correct.image_id;
    thumbs.append(el("span", "", " … "), first);
    li.append(thumbs);
    li.addEventListener("click", () => pick(f.index).catch(fail));
    return li;
  }));
}

async function start() {
  info = await api("/api/info");
  $("top").value = info.top;
  $("source").textContent = `${info.model} ${info.run || info.checkpoint} · ${info.gallery} test images`;
  if (info.warning) { $("warning").hidden = false; $("warning").textContent = "Warning: " + info.warning; }
  $("heading").textContent = "Describe a vehicle, or pick a test caption";
  $("query-form").addEventListener("submit", (e) => { e.preventDefault(); search($("query").value).catch(fail); });
  $("overlay").addEventListener("change", () => {
    document.querySelectorAll(".stage").forEach((s) => s.classList.toggle("plain", !$("overlay").checked));
  });
  captionList((await api("/api/captions")).captions);
  failureList((await api("/api/failures?n=20")).failures);
}

start().catch(fail);
