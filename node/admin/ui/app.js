// The status page: polls /v1/status once a second and renders it; with a
// token it sends weight and drain changes to the same admin API the CLI
// uses. Plain DOM, no libraries: the page must work from the binary alone.
"use strict";

const POLL_MS = 1000;
const TOKEN_KEY = "balancer-admin-token";

const $ = (id) => document.getElementById(id);
let lastOK = 0;            // when the last status arrived (ms)
let drafts = {};           // backend id -> weight typed but not sent yet
let writeError = "";       // the last failed change, shown until the next change succeeds

// adminURL links to a member's status page: a TLS node advertises
// https://HOST:PORT, a plain one HOST:PORT (served with this page's scheme).
// Addresses come from gossip, so anything but an http(s) URL (a
// javascript: link from a rogue member) gets no link at all.
function adminURL(addr) {
  try {
    const u = new URL(addr.includes("://") ? addr : location.protocol + "//" + addr);
    return u.protocol === "http:" || u.protocol === "https:" ? u.origin + "/" : null;
  } catch (e) {
    return null;
  }
}

// el builds an element; children may be strings (set as text, never HTML).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function td(label, cls, ...children) {
  return el("td", { "data-label": label, class: cls || "" }, ...children);
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function fmtRate(r) { return r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2); }
function fmtMS(ms) {
  if (!ms) return "–";
  return ms >= 1000 ? (ms / 1000).toFixed(2) + " s" : ms >= 10 ? ms.toFixed(0) + " ms" : ms.toFixed(1) + " ms";
}
function fmtContact(ms) {
  if (ms === undefined || ms === null) return "–";
  if (ms < 0) return "never";
  return ms === 0 ? "–" : fmtMS(ms) + " ago";
}

function showErrors(statusErr) {
  const parts = [statusErr, writeError].filter(Boolean);
  const box = $("error");
  box.textContent = parts.join("\n");
  box.hidden = parts.length === 0;
}

function nodeOrder(st) {
  const names = [st.node];
  const add = (n) => { if (!names.includes(n)) names.push(n); };
  const rest = [];
  for (const m of st.members || []) rest.push(m.name);
  for (const b of st.backends || []) for (const n of Object.keys(b.in_flight || {})) rest.push(n);
  rest.sort().forEach(add);
  return names;
}

function renderMembers(st) {
  const raft = {};
  const unreachable = {};
  for (const n of st.nodes || []) {
    if (n.raft) raft[n.name] = n.raft;
    if (n.error) unreachable[n.name] = n.error;
  }
  const rows = (st.members || []).map((m) => {
    const r = raft[m.name];
    const role = r ? r.state : (m.raft_role || "–");
    return el("tr", { dataset: { member: m.name } },
      td("name", "", m.name, m.leader ? el("span", { class: "leader-mark", title: "raft leader" }, " ★ leader") : null),
      td("state", "state-" + m.status, m.status),
      td("raft role", "role-" + role, role, m.raft_role && r ? el("span", { class: "muted" }, " (" + m.raft_role + ")") : null,
        unreachable[m.name] ? el("span", { class: "unreachable", title: unreachable[m.name] }, " unreachable") : null),
      td("term", "num", r ? r.term : "–"),
      td("raft commit", "num", r ? r.commit_index : "–"),
      td("config applied", "num config-applied", m.applied_index),
      td("leader contact", "num", r ? fmtContact(r.last_contact_ms) : "–"),
      td("admin address", "", m.admin_addr && adminURL(m.admin_addr) ? el("a", { href: adminURL(m.admin_addr) }, m.admin_addr) : (m.admin_addr || "–")),
      td("gossip address", "", m.gossip_addr || "–"));
  });
  $("members").tBodies[0].replaceChildren(...rows);
}

function weightForm(b) {
  const input = el("input", {
    type: "number", min: "0", step: "1", "aria-label": "new weight for " + b.id,
    placeholder: String(b.weight), class: "weight-input", dataset: { id: b.id },
  });
  if (drafts[b.id] !== undefined) input.value = drafts[b.id];
  input.addEventListener("input", () => { drafts[b.id] = input.value; });
  // novalidate: the page's own message says what is wrong, in the error box.
  return el("form", {
    class: "inline weight-form", dataset: { id: b.id }, novalidate: "",
    onsubmit: (ev) => { ev.preventDefault(); setWeight(b.id, input.value); },
  }, input, el("button", { type: "submit" }, "Set"));
}

function renderBackends(st) {
  const nodes = nodeOrder(st);
  const rows = (st.backends || []).map((b) => {
    const breakers = nodes.filter((n) => b.breaker && b.breaker[n]).map((n) =>
      el("span", { class: "chip " + b.breaker[n] }, n + ": " + b.breaker[n]));
    const inflight = nodes.filter((n) => b.in_flight && n in b.in_flight).map((n) =>
      el("span", { class: "chip" }, n + ": " + b.in_flight[n]));
    return el("tr", { dataset: { id: b.id } },
      td("backend", "", b.id, b.source ? el("span", { class: "muted small" }, " " + b.source) : null),
      td("address", "", b.address),
      td("weight", "num", el("span", { class: "weight" }, String(b.weight)),
        b.pinned ? el("span", { class: "pinned", title: "set by an operator; Consul syncs keep it" }, " pinned") : null,
        weightForm(b)),
      td("drain", "", el("span", { class: b.drain ? "drained drain-state" : "drain-state" }, b.drain ? "draining" : "no"), " ",
        el("button", { type: "button", class: "drain-toggle", onclick: () => setDrain(b.id, !b.drain) }, b.drain ? "Undrain" : "Drain")),
      td("breaker per node", "", ...breakers),
      td("in flight per node", "", ...inflight),
      td("in flight (cluster)", "num inflight-total", b.in_flight_total),
      td("req/s", "num rate", fmtRate(b.rate || 0)),
      td("errors/s", "num", fmtRate(b.error_rate || 0)),
      td("p99", "num p99", fmtMS(b.p99_ms)));
  });
  // Re-rendering replaces the inputs; keep the operator's cursor where it was.
  const active = document.activeElement;
  const refocus = active && active.classList.contains("weight-input") ? active.dataset.id : null;
  $("backends").tBodies[0].replaceChildren(...rows);
  if (refocus !== null) {
    const again = document.querySelector('.weight-input[data-id="' + CSS.escape(refocus) + '"]');
    if (again) again.focus();
  }
}

function render(st) {
  $("node").textContent = st.node;
  $("leader").textContent = st.leader || "none";
  $("index").textContent = st.config_index;
  const ready = $("ready");
  ready.textContent = st.ready ? "ready" : "not ready: " + (st.not_ready || "");
  ready.className = "badge " + (st.ready ? "ok" : "bad");
  renderMembers(st);
  renderBackends(st);
}

async function poll() {
  let statusErr = "";
  try {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 3000);
    const resp = await fetch("/v1/status", { cache: "no-store", signal: ctl.signal });
    clearTimeout(timer);
    if (!resp.ok) throw new Error(await errorText(resp));
    const st = await resp.json();
    render(st);
    lastOK = Date.now();
  } catch (e) {
    statusErr = "status: " + (e.name === "AbortError" ? "no answer within 3 s" : e.message);
  }
  const age = lastOK ? Math.round((Date.now() - lastOK) / 1000) : null;
  $("updated").textContent = age === null ? "no data yet" : age < 2 ? "live" : "stale: last update " + age + " s ago";
  $("updated").className = age !== null && age < 2 ? "muted" : "unreachable";
  showErrors(statusErr);
  setTimeout(poll, POLL_MS);
}

async function errorText(resp) {
  let msg = resp.statusText;
  try {
    const body = await resp.json();
    if (body && body.error) msg = body.error;
  } catch (_) { /* not JSON: keep the status text */ }
  return resp.status + " " + msg;
}

async function change(method, path, body, what) {
  const headers = { "Content-Type": "application/json" };
  if (token()) headers["Authorization"] = "Bearer " + token();
  try {
    const resp = await fetch(path, { method, headers, body: JSON.stringify(body) });
    if (!resp.ok) {
      let msg = await errorText(resp);
      if (resp.status === 401) msg += token() ? " (the token was refused)" : " (enter the admin token below)";
      writeError = what + " failed: " + method + " " + path + ": " + msg;
      $("notice").hidden = true;
      showErrors("");
      return false;
    }
    const ans = await resp.json();
    writeError = "";
    $("notice").textContent = what + ": committed at config index " + ans.index + " by " + ans.leader;
    $("notice").hidden = false;
    showErrors("");
    return true;
  } catch (e) {
    writeError = what + " failed: " + e.message;
    $("notice").hidden = true;
    showErrors("");
    return false;
  }
}

async function setWeight(id, raw) {
  const s = String(raw).trim();
  if (!/^\d+$/.test(s)) {
    writeError = "weight of " + id + ": want a whole number 0 or more, got " + JSON.stringify(s);
    showErrors("");
    return;
  }
  if (await change("PUT", "/v1/backends/" + encodeURIComponent(id) + "/weight", { weight: Number(s) }, id + " weight " + s)) {
    delete drafts[id];
  }
}

function setDrain(id, drain) {
  return change("PUT", "/v1/backends/" + encodeURIComponent(id) + "/drain", { drain }, (drain ? "drain " : "undrain ") + id);
}

function showTokenState() {
  $("token-state").textContent = token() ? "token set for this tab" : "no token";
}

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const v = $("token").value.trim();
  if (v) sessionStorage.setItem(TOKEN_KEY, v);
  $("token").value = "";
  showTokenState();
});
$("token-clear").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showTokenState();
});
showTokenState();
poll();
