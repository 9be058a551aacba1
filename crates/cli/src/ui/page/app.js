// weft ui: polls /api/flows with the filters, draws the table and the
// service map from the same flows, and asks /api/matrix on demand. Every
// name from the cluster goes in through textContent, never as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const POLL_MS = 1000;
// which verdict colours an edge that saw several
const RANK = { DROPPED: 4, AUDIT: 3, TRANSLATED: 2, FORWARDED: 1 };

const $ = (sel) => document.querySelector(sel);
let podsByIp = new Map();
let pods = [];

function el(tag, attrs, text) {
  const e = tag.startsWith("svg:")
    ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// `ns/pod` of a flow's side, by weftd's name or by the address of a pod of
// any node; the address otherwise.
function peerName(p) {
  if (p.pod) return p.namespace ? `${p.namespace}/${p.pod}` : p.pod;
  const known = p.ip && podsByIp.get(p.ip);
  return known ? known.name : (p.ip || "?");
}

function peerText(p) {
  const n = peerName(p);
  return p.port ? `${n}:${p.port}` : n;
}

function decided(f) {
  const parts = [];
  if (f.drop_reason) parts.push(f.drop_reason);
  if (f.policy) {
    const name = f.policy.namespace ? `${f.policy.namespace}/${f.policy.name}` : f.policy.name;
    parts.push(f.policy.rule ? `${name} ${f.policy.rule}` : name);
  } else if (f.rule_id) {
    parts.push(`rule ${f.rule_id}`);
  }
  if (f.service) parts.push(`service ${f.service.namespace}/${f.service.name}:${f.service.port}`);
  if (f.translated_to) parts.push(`-> ${peerText(f.translated_to)}`);
  if (f.tcp_flags && f.tcp_flags.length) parts.push(`TCP ${f.tcp_flags.join(",")}`);
  return parts.join(" ");
}

function filterQuery() {
  const q = new URLSearchParams();
  for (const [k, v] of new FormData($("#filters"))) {
    if (String(v).trim() !== "") q.append(k, String(v).trim());
  }
  return q.toString();
}

function drawTable(flows) {
  const body = $("#flows tbody");
  const rows = flows.slice().reverse().map((f) => {
    const tr = el("tr", {
      "data-verdict": f.verdict,
      "data-from": peerName(f.source),
      "data-to": peerName(f.destination),
    });
    tr.append(
      el("td", {}, f.time.slice(11, 23)),
      el("td", {}, f.node),
      el("td", {}, peerText(f.source)),
      el("td", {}, peerText(f.destination)),
      el("td", {}, f.protocol),
      el("td", { class: `verdict v-${f.verdict}` }, f.verdict),
      el("td", { class: "why" }, decided(f)),
    );
    return tr;
  });
  body.replaceChildren(...rows);
  $("#flow-count").textContent = String(flows.length);
}

function drawMap(flows) {
  const svg = $("#map");
  const edges = new Map();
  const nodes = new Map(); // name -> namespace ("" for outside pods)
  for (const f of flows) {
    const a = peerName(f.source), b = peerName(f.destination);
    nodes.set(a, namespaceOf(f.source, a));
    nodes.set(b, namespaceOf(f.destination, b));
    const key = `${a}\u0000${b}`;
    const e = edges.get(key) || { from: a, to: b, counts: {} };
    e.counts[f.verdict] = (e.counts[f.verdict] || 0) + 1;
    edges.set(key, e);
  }
  const groups = new Map();
  for (const [name, ns] of nodes) {
    if (!groups.has(ns)) groups.set(ns, []);
    groups.get(ns).push(name);
  }
  const order = [...groups.keys()].sort((x, y) => (x === "" ? 1 : y === "" ? -1 : x.localeCompare(y)));
  const COL = 170, ROW = 46, TOP = 34, PAD = 14;
  const pos = new Map();
  const layer = { ns: el("svg:g"), edges: el("svg:g"), pods: el("svg:g") };
  let height = 120;
  order.forEach((ns, i) => {
    const members = groups.get(ns).sort();
    const x = PAD + i * COL;
    const h = TOP + members.length * ROW;
    height = Math.max(height, h + 2 * PAD);
    const g = el("svg:g", { class: "ns", "data-namespace": ns || "outside" });
    g.append(
      el("svg:rect", { x, y: PAD, width: COL - 30, height: h, rx: 6 }),
      el("svg:text", { class: "ns-name", x: x + 8, y: PAD + 18 }, ns || "outside pods"),
    );
    layer.ns.append(g);
    members.forEach((name, j) => {
      const cx = x + 22, cy = PAD + TOP + j * ROW + 10;
      pos.set(name, { x: cx, y: cy });
      const p = el("svg:g", { class: "pod", "data-pod": name });
      const short = ns && name.startsWith(ns + "/") ? name.slice(ns.length + 1) : name;
      p.append(
        el("svg:circle", { cx, cy, r: 9 }),
        el("svg:text", { x: cx + 14, y: cy + 4 }, short),
        el("svg:title", {}, name),
      );
      layer.pods.append(p);
    });
  });
  for (const e of edges.values()) {
    const a = pos.get(e.from), b = pos.get(e.to);
    const verdict = Object.keys(e.counts).sort((x, y) => (RANK[y] || 0) - (RANK[x] || 0))[0];
    // bend each edge to its right, so a->b and b->a do not overlap
    const mx = (a.x + b.x) / 2, my = (a.y + b.y) / 2;
    const dx = b.x - a.x, dy = b.y - a.y;
    const len = Math.hypot(dx, dy) || 1;
    const bend = a === b ? 30 : Math.min(60, 18 + len / 6);
    const cx = mx - (dy / len) * bend, cy = my + (dx / len) * bend;
    const d = a === b
      ? `M ${a.x} ${a.y - 9} C ${a.x + 40} ${a.y - 40}, ${a.x + 40} ${a.y + 40}, ${a.x} ${a.y + 9}`
      : `M ${a.x} ${a.y} Q ${cx} ${cy} ${b.x} ${b.y}`;
    const g = el("svg:g", { class: "edge", "data-from": e.from, "data-to": e.to, "data-verdict": verdict });
    const counts = Object.entries(e.counts).map(([v, n]) => `${n} ${v}`).join(", ");
    g.append(
      el("svg:path", { d, "marker-end": `url(#arrow-${verdict})` }),
      el("svg:title", {}, `${e.from} -> ${e.to}: ${counts}`),
    );
    layer.edges.append(g);
  }
  const width = Math.max(400, PAD * 2 + order.length * COL);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.style.height = `${height}px`;
  svg.replaceChildren(markers(), layer.ns, layer.edges, layer.pods);
}

function namespaceOf(peer, name) {
  if (peer.pod) return peer.namespace || "";
  const known = peer.ip && podsByIp.get(peer.ip);
  return known ? known.name.split("/")[0] : "";
}

function markers() {
  const defs = el("svg:defs");
  const colour = { FORWARDED: "#2e8540", DROPPED: "#c62828", AUDIT: "#e08a00", TRANSLATED: "#1565c0" };
  for (const [v, c] of Object.entries(colour)) {
    const m = el("svg:marker", {
      id: `arrow-${v}`, viewBox: "0 0 10 10", refX: 18, refY: 5,
      markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse",
    });
    m.append(el("svg:path", { d: "M 0 0 L 10 5 L 0 10 z", fill: c }));
    defs.append(m);
  }
  return defs;
}

async function getJSON(url, opts) {
  const r = await fetch(url, opts);
  const body = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

async function loadPods() {
  try {
    const r = await getJSON("/api/pods");
    pods = r.pods;
    podsByIp = new Map(pods.filter((p) => p.ip).map((p) => [p.ip, p]));
    drawPicker();
  } catch (e) {
    $("#matrix-error").hidden = false;
    $("#matrix-error").textContent = `pods: ${e.message}`;
  }
}

function drawPicker() {
  const picker = $("#pod-picker");
  const checked = new Set([...picker.querySelectorAll("input:checked")].map((i) => i.value));
  const first = picker.children.length === 0;
  picker.replaceChildren(...pods.map((p, i) => {
    const box = el("input", { type: "checkbox", name: "pod", value: p.name, "data-pod": p.name });
    box.checked = first ? i < 8 : checked.has(p.name);
    const label = el("label", { title: `${p.ip} on ${p.node}` });
    label.append(box, document.createTextNode(` ${p.name}`));
    return label;
  }));
}

let lastOk = null;
async function poll() {
  if (!$("#paused").checked) {
    try {
      const r = await getJSON(`/api/flows?${filterQuery()}`);
      drawTable(r.flows);
      drawMap(r.flows);
      $("#flow-error").hidden = r.errors.length === 0;
      $("#flow-error").textContent = r.errors.map((e) => `${e.node}: ${e.error}`).join("; ");
      lastOk = new Date();
      document.body.dataset.polled = String((Number(document.body.dataset.polled) || 0) + 1);
    } catch (e) {
      $("#flow-error").hidden = false;
      $("#flow-error").textContent = e.message;
    }
  }
  $("#status").textContent = lastOk
    ? `${pods.length} pods · updated ${lastOk.toTimeString().slice(0, 8)}`
    : "no answer yet";
  setTimeout(poll, POLL_MS);
}

async function computeMatrix(ev) {
  ev.preventDefault();
  const form = new FormData($("#matrix-form"));
  const chosen = form.getAll("pod").map(String);
  const err = $("#matrix-error");
  err.hidden = true;
  try {
    const m = await getJSON("/api/matrix", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ pods: chosen, port: Number(form.get("port")), protocol: String(form.get("protocol")) }),
    });
    drawMatrix(m);
  } catch (e) {
    err.hidden = false;
    err.textContent = e.message;
  }
}

function drawMatrix(m) {
  const t = $("#matrix");
  const head = el("tr");
  head.append(el("th", {}, "from \\ to"), ...m.pods.map((p) => el("th", { class: "to" }, p)));
  const rows = m.rows.map((row, i) => {
    const tr = el("tr");
    tr.append(el("th", { class: "from" }, m.pods[i]));
    row.forEach((c, j) => {
      const mark = { allowed: "✓", denied: "✗", self: "·" }[c.state] || "?";
      const title = c.decided_by ? `${c.decided_by}\n${c.summary}` : c.summary;
      tr.append(el("td", {
        "data-from": m.pods[i], "data-to": m.pods[j], "data-state": c.state,
        "data-decided-by": c.decided_by, title,
      }, mark));
    });
    return tr;
  });
  t.replaceChildren(el("caption", {}, `${m.port}/${m.protocol}: ✓ allowed, ✗ denied; hover for the deciding policy and rule`), head, ...rows);
  t.dataset.ready = "true";
}

$("#filters").addEventListener("submit", (e) => e.preventDefault());
$("#matrix-form").addEventListener("submit", computeMatrix);
loadPods().then(poll);
setInterval(loadPods, 10000);
