// unisrec demo page: search the catalogue, build a history, see the top-k, add an item by text.
// Plain browser JavaScript, no dependencies. Every server string is shown with textContent
// (item texts come from clients of POST /items, so they are never parsed as HTML).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { history: [], texts: new Map(), lastAdded: null, recsRequest: 0, searchRequest: 0 };

async function api(method, path, body, headers) {
  const init = { method, headers: Object.assign({ Accept: "application/json" }, headers || {}) };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    return { ok: false, status: 0, data: { detail: "cannot reach the server" } };
  }
  let data = null;
  try {
    data = await response.json();
  } catch (err) {
    data = { detail: `HTTP ${response.status}` };
  }
  return { ok: response.ok, status: response.status, data };
}

function setStatus(el, text, kind) {
  el.textContent = text;
  el.className = kind || "muted";
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function itemCell(id, text) {
  const cell = el("div", "item");
  cell.append(el("span", "item-id", id), el("span", "item-text", text || ""));
  return cell;
}

// ------------------------------------------------------------------ server info
async function loadHealth() {
  const r = await api("GET", "/health");
  if (!r.ok) {
    setStatus($("server-status"), "server not reachable", "error");
    return;
  }
  const h = r.data;
  const writes = { api_key: "adding items needs the API key", open: "adding items open (loopback)",
    disabled: "adding items is disabled on this server" }[h.writes] || h.writes;
  setStatus($("server-status"), `${h.num_items.toLocaleString()} items · ${h.index} scoring · ${writes} · v${h.version}`);
  $("k").max = String(Math.min(h.limits.max_k, 100));
  if (h.writes === "disabled") {
    $("add-btn").disabled = true;
    setStatus($("add-status"), "Start the server with --api-key (or UNISREC_API_KEY) to add items.");
  }
  if (h.writes === "open") $("token").placeholder = "not needed on this server";
}

// ------------------------------------------------------------------ search
let searchTimer = null;

function scheduleSearch() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(runSearch, 200);
}

async function runSearch() {
  const q = $("search-q").value.trim();
  const list = $("search-results");
  if (!q) {
    list.replaceChildren();
    setStatus($("search-status"), "Type to search; click an item to add it to the history.");
    return;
  }
  const ticket = ++state.searchRequest;
  const r = await api("GET", `/items/search?q=${encodeURIComponent(q)}&k=20`);
  if (ticket !== state.searchRequest) return; // a newer search is under way
  if (!r.ok) {
    setStatus($("search-status"), r.data.detail || `search failed (HTTP ${r.status})`, "error");
    return;
  }
  const shown = r.data.items.length;
  setStatus($("search-status"), r.data.matches === 0 ? "No item matches." :
    `${r.data.matches} match${r.data.matches === 1 ? "" : "es"}${r.data.matches > shown ? `, first ${shown} shown` : ""}. Click to add to the history.`);
  list.replaceChildren(...r.data.items.map((it) => {
    state.texts.set(it.id, it.text);
    const li = el("li", "result");
    li.dataset.id = it.id;
    const button = el("button", "pick");
    button.type = "button";
    button.title = "add to the history";
    button.append(itemCell(it.id, it.text));
    button.addEventListener("click", () => addToHistory(it.id));
    li.append(button);
    return li;
  }));
}

// ------------------------------------------------------------------ history
function addToHistory(id) {
  state.history.push(id);
  renderHistory();
  refreshRecommendations();
}

function renderHistory() {
  $("history-empty").hidden = state.history.length > 0;
  $("history").replaceChildren(...state.history.map((id, pos) => {
    const li = el("li", "chip");
    li.dataset.id = id;
    li.append(itemCell(id, state.texts.get(id)));
    const remove = el("button", "remove", "×");
    remove.type = "button";
    remove.title = "remove from the history";
    remove.setAttribute("aria-label", `remove ${id}`);
    remove.addEventListener("click", () => {
      state.history.splice(pos, 1);
      renderHistory();
      refreshRecommendations();
    });
    li.append(remove);
    return li;
  }));
}

// ------------------------------------------------------------------ recommendations
async function refreshRecommendations() {
  const body = $("recs").tBodies[0];
  if (state.history.length === 0) {
    body.replaceChildren();
    setStatus($("recs-status"), "Recommendations appear once the history has an item.");
    return;
  }
  const k = Math.max(1, Math.min(Number($("k").value) || 10, Number($("k").max) || 100));
  const ticket = ++state.recsRequest;
  const started = performance.now();
  const r = await api("POST", "/recommend", { history: state.history, k, exclude_seen: $("exclude-seen").checked });
  if (ticket !== state.recsRequest) return;
  if (!r.ok) {
    setStatus($("recs-status"), r.data.detail || `HTTP ${r.status}`, "error");
    return;
  }
  const ms = Math.round(performance.now() - started);
  setStatus($("recs-status"), `Top ${r.data.items.length} for a history of ${state.history.length} item${state.history.length === 1 ? "" : "s"} (${ms} ms). Click one to add it to the history.`);
  body.replaceChildren(...r.data.items.map((it, i) => {
    state.texts.set(it.id, it.text);
    const tr = el("tr", it.id === state.lastAdded ? "rec new" : "rec");
    tr.dataset.id = it.id;
    tr.title = "add to the history";
    const item = el("td");
    item.append(itemCell(it.id, it.text));
    tr.append(el("td", "rank", String(i + 1)), item, el("td", "score", it.score.toFixed(4)));
    tr.addEventListener("click", () => addToHistory(it.id));
    return tr;
  }));
}

// ------------------------------------------------------------------ add an item
async function addItem() {
  const id = $("new-id").value.trim();
  const text = $("new-text").value.trim();
  const status = $("add-status");
  if (!id || !text) {
    setStatus(status, "Give the new item an id and a text.", "error");
    return;
  }
  const token = $("token").value.trim();
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  $("add-btn").disabled = true;
  setStatus(status, "Encoding the text…");
  const r = await api("POST", "/items", { items: { [id]: text } }, headers);
  $("add-btn").disabled = false;
  if (!r.ok) {
    setStatus(status, `Not added: ${r.data.detail || `HTTP ${r.status}`}`, "error");
    return;
  }
  state.texts.set(id, text);
  state.lastAdded = id;
  setStatus(status, `${r.data.added ? "Added" : "Updated"} ${id}; the catalogue has ${r.data.num_items.toLocaleString()} items.`, "ok");
  $("add-to-history").hidden = false;
  $("add-to-history").textContent = `Add ${id} to the history`;
  loadHealth();
  runSearch();
  refreshRecommendations();
}

document.addEventListener("DOMContentLoaded", () => {
  $("search-q").addEventListener("input", scheduleSearch);
  $("k").addEventListener("change", refreshRecommendations);
  $("exclude-seen").addEventListener("change", refreshRecommendations);
  $("clear-history").addEventListener("click", () => {
    state.history = [];
    renderHistory();
    refreshRecommendations();
  });
  $("add-btn").addEventListener("click", addItem);
  $("add-to-history").addEventListener("click", () => state.lastAdded && addToHistory(state.lastAdded));
  renderHistory();
  loadHealth();
});
