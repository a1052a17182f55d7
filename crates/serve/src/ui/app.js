// corral serve's page: plain JavaScript, no framework, nothing fetched from
// anywhere but this server's JSON API. Every value from the API is put on
// the page as text (textContent), never as HTML.
"use strict";

const REFRESH_MS = 2000;
let timer = null;
let rendering = false;

function token() {
  return sessionStorage.getItem("corral-token");
}

async function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  // From the origin: a page opened as http://user:token@host/ has a base URL
  // with credentials, which fetch refuses; the browser still sends the Basic
  // credentials it was opened with to the same origin.
  const res = await fetch(location.origin + path, { ...options, headers, credentials: "same-origin" });
  if (res.status === 401) {
    showLogin();
    throw new Error("unauthorized");
  }
  let body = null;
  try { body = await res.json(); } catch (_) { body = null; }
  if (!res.ok) {
    const err = new Error((body && body.error) || res.status + " " + res.statusText);
    err.status = res.status;
    throw err;
  }
  return body;
}

function showLogin() {
  document.getElementById("login").hidden = false;
  document.getElementById("view").hidden = true;
}

document.getElementById("login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("corral-token", document.getElementById("token").value);
  document.getElementById("login").hidden = true;
  document.getElementById("view").hidden = false;
  route();
});

// ---- small DOM helpers -------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "onclick") node.addEventListener("click", v);
    else if (k.startsWith("data-") || k === "href" || k === "title" || k === "id" || k === "disabled" || k === "colspan") node.setAttribute(k, v === true ? "" : v);
    else node[k] = v;
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function num(n) {
  return (n ?? 0).toLocaleString("en-US");
}

function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function ago(iso) {
  if (!iso) return "";
  const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  const abs = Math.abs(s);
  const txt = abs < 90 ? abs + "s" : abs < 5400 ? Math.round(abs / 60) + "m" : abs < 172800 ? Math.round(abs / 3600) + "h" : Math.round(abs / 86400) + "d";
  return s >= 0 ? txt + " ago" : "in " + txt;
}

function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return ms + " ms";
  if (ms < 120000) return (ms / 1000).toFixed(1) + " s";
  return Math.round(ms / 60000) + " min";
}

function badge(text, cls) {
  return el("span", { class: "badge " + (cls || text), "data-status": text }, text);
}

function table(headers, rows, attrs = {}) {
  return el("table", attrs,
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { class: h.num ? "num" : "" }, h.label || h)))),
    el("tbody", {}, rows));
}

// ---- views -------------------------------------------------------------

async function inventoryView() {
  const { counts } = await api("/api/assets/counts?include_stale=true");
  const byConn = new Map();
  let total = 0, stale = 0;
  for (const c of counts) {
    total += c.count; stale += c.stale;
    byConn.set(c.connection, (byConn.get(c.connection) || 0) + c.count);
  }
  const rows = counts.map((c) => el("tr", { "data-connection": c.connection, "data-kind": c.kind },
    el("td", {}, c.connection),
    el("td", {}, c.kind),
    el("td", { class: "num current" }, num(c.count - c.stale)),
    el("td", { class: "num stale" }, num(c.stale)),
    el("td", { class: "num count" }, num(c.count))));
  const t = table(["Connection", "Kind", { label: "Current", num: true }, { label: "Stale", num: true }, { label: "Total", num: true }], rows, { id: "inventory" });
  t.append(el("tfoot", {}, el("tr", {},
    el("td", { colspan: "2" }, "All connections"),
    el("td", { class: "num", id: "inventory-current" }, num(total - stale)),
    el("td", { class: "num", id: "inventory-stale" }, num(stale)),
    el("td", { class: "num", id: "inventory-total" }, num(total)))));
  return [
    el("h2", {}, "Inventory"),
    el("div", { class: "cards" },
      card(num(total), "assets stored", "card-total"),
      card(num(total - stale), "current"),
      card(num(stale), "stale (not returned by the last clean sync)"),
      card(num(byConn.size), "connections with assets")),
    counts.length ? t : el("p", { class: "muted", id: "inventory-empty" }, "No assets stored yet."),
  ];
}

function card(n, label, id) {
  return el("div", { class: "card" }, el("div", { class: "n", id }, n), el("div", { class: "l" }, label));
}

async function connectionsView() {
  const { connections } = await api("/api/connections");
  const rows = connections.map((c) => {
    const last = c.last_run;
    const run = c.running;
    const live = run
      ? el("div", { class: "small live" },
          badge(run.state, run.state), " ",
          run.state === "running" ? `fetched ${num(run.records_fetched)} · loaded ${num(run.assets_loaded)} · in flight ${num(run.records_in_flight)}` : "waiting for a free slot")
      : null;
    const lease = c.lease && !run ? el("div", { class: "small muted" }, "lease held by " + c.lease.owner) : null;
    return el("tr", { "data-connection": c.name },
      el("td", {}, el("strong", {}, c.name), el("div", { class: "small muted" }, c.adapter)),
      el("td", { class: "health" }, badge(c.health)),
      el("td", { class: "last-run" }, last
        ? [badge(last.status), " ", el("a", { href: "#/runs/" + encodeURIComponent(last.sync_id) }, ago(last.started_at)),
           el("div", { class: "small muted" }, `${duration(last.duration_ms)} · ${num(last.assets_loaded)} loaded · ${num(last.records_rejected)} rejected`),
           last.error ? el("div", { class: "small errors" }, last.error) : null]
        : el("span", { class: "muted" }, "never")),
      el("td", { class: "next-run" }, c.schedule ? [el("div", {}, c.schedule), el("div", { class: "small muted" }, c.next_run_at ? ago(c.next_run_at) : "—")] : el("span", { class: "muted" }, "on demand")),
      el("td", { class: "state" }, live, lease),
      el("td", {}, el("button", {
        class: "sync", "data-connection": c.name, disabled: !!run || !!c.lease,
        onclick: (e) => syncNow(c.name, e.target),
      }, "Sync now")));
  });
  return [
    el("h2", {}, "Connections"),
    table(["Connection", "Health", "Last run", "Schedule / next run", "Now", ""], rows, { id: "connections" }),
  ];
}

async function syncNow(name, button) {
  button.disabled = true;
  try {
    await api("/api/connections/" + encodeURIComponent(name) + "/sync", { method: "POST" });
    showBanner(null);
  } catch (e) {
    showBanner("Sync of " + name + " not started: " + e.message);
  }
  refresh();
}

async function runsView() {
  const { runs } = await api("/api/runs?limit=100");
  const rows = runs.map((r) => el("tr", {
    class: "clickable", "data-sync-id": r.sync_id, "data-connection": r.connection, "data-status": r.status,
    onclick: () => { location.hash = "#/runs/" + encodeURIComponent(r.sync_id); },
  },
    el("td", { class: "when" }, when(r.started_at)),
    el("td", {}, r.connection),
    el("td", { class: "status" }, badge(r.status)),
    el("td", { class: "num" }, duration(r.duration_ms)),
    el("td", { class: "num fetched" }, num(r.records_fetched)),
    el("td", { class: "num loaded" }, num(r.assets_loaded)),
    el("td", { class: "num rejected" }, num(r.records_rejected)),
    el("td", { class: "small errors" }, r.error || "")));
  return [
    el("h2", {}, "Runs"),
    runs.length
      ? table(["Started", "Connection", "Status", { label: "Duration", num: true }, { label: "Fetched", num: true }, { label: "Loaded", num: true }, { label: "Rejected", num: true }, "First error"], rows, { id: "runs" })
      : el("p", { class: "muted", id: "runs-empty" }, "No runs yet."),
  ];
}

async function runView(id) {
  const r = await api("/api/runs/" + encodeURIComponent(id));
  const { rejects } = await api("/api/runs/" + encodeURIComponent(id) + "/rejects?limit=200");
  const loaded = r.inserted + r.updated + r.unchanged;
  const ms = new Date(r.ended_at) - new Date(r.started_at);
  const facts = [
    ["Connection", r.connection + " (" + r.adapter + ")"],
    ["Status", badge(r.status)],
    ["Started", when(r.started_at)],
    ["Duration", duration(ms)],
    ["Fetched", num(r.records_fetched)],
    ["Loaded", `${num(loaded)} (${num(r.inserted)} new, ${num(r.updated)} changed, ${num(r.unchanged)} unchanged)`],
    ["Rejected", num(r.records_rejected) + " record(s)" + (r.pages_rejected ? `, ${num(r.pages_rejected)} page(s) that could not be decoded` : "")],
    ["Stale", `${num(r.stale_marked)} marked, ${num(r.stale_deleted)} deleted`],
    ["Requests", `${num(r.requests.total)} (${num(r.requests.rate_limited)} rate limited, ${num(r.requests.retries)} retried)`],
    ["Runtime lag", `p50 ${(r.lag.p50_us / 1000).toFixed(1)} ms · p99 ${(r.lag.p99_us / 1000).toFixed(1)} ms · max ${(r.lag.max_us / 1000).toFixed(1)} ms`],
    ["Sync id", r.sync_id],
  ];
  const rejectRows = rejects.map((x) => el("tr", {},
    el("td", {}, x.stream), el("td", {}, x.record), el("td", {}, x.reason), el("td", {}, x.detail),
    el("td", {}, x.raw ? el("pre", {}, x.raw) : "")));
  return [
    el("h2", {}, el("a", { href: "#/runs" }, "Runs"), " › ", r.connection),
    el("div", { id: "run-detail", "data-sync-id": r.sync_id, "data-status": r.status },
      el("dl", { class: "grid" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", { class: "fact" }, v)])),
      r.errors.length ? [el("h3", {}, "Errors"), el("ul", { class: "errors", id: "run-errors" }, r.errors.map((e) => el("li", {}, e)))] : null,
      el("h3", {}, "Throughput and runtime lag"),
      chart(r.timeline || []),
      el("h3", {}, `Rejected records (${num(rejects.length)} kept)`),
      rejects.length
        ? table(["Stream", "Record", "Reason", "Detail", "Raw"], rejectRows, { id: "rejects" })
        : el("p", { class: "muted", id: "rejects-empty" }, "None.")),
  ];
}

// ---- the chart: SVG drawn here ----------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function chart(points) {
  const box = el("div", { class: "chart" });
  if (points.length < 1) {
    box.append(el("p", { class: "muted" }, "No timeline recorded for this run."));
    return box;
  }
  // Rates between consecutive points; the first from the start of the run.
  const rates = points.map((p, i) => {
    const prev = i ? points[i - 1] : { t_ms: 0, records_fetched: 0, assets_loaded: 0 };
    const dt = Math.max(1, p.t_ms - prev.t_ms) / 1000;
    return { t: p.t_ms / 1000, fetched: (p.records_fetched - prev.records_fetched) / dt, loaded: (p.assets_loaded - prev.assets_loaded) / dt, lag: p.lag_p99_us / 1000 };
  });
  const W = 760, H = 150, L = 60, R = 14, T = 10, B = 22;
  const tMax = Math.max(...rates.map((r) => r.t), 0.001);
  const x = (t) => L + (t / tMax) * (W - L - R);
  const panel = (title, series, unit, id) => {
    const yMax = Math.max(1e-9, ...series.flatMap((s) => rates.map(s.get)));
    const y = (v) => T + (1 - v / yMax) * (H - T - B);
    const g = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, id, role: "img", "aria-label": title });
    g.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#c5cbd6" }));
    g.append(svg("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#c5cbd6" }));
    g.append(svg("text", { x: L - 6, y: T + 10, "text-anchor": "end" }, fmtAxis(yMax)));
    g.append(svg("text", { x: L - 6, y: H - B, "text-anchor": "end" }, "0"));
    g.append(svg("text", { x: 4, y: (H - B) / 2 + T }, unit));
    g.append(svg("text", { x: W - R, y: H - 6, "text-anchor": "end" }, tMax.toFixed(1) + " s"));
    g.append(svg("text", { x: L, y: H - 6 }, "0 s"));
    for (const s of series) {
      // A rate holds over the interval that ends at its point: drawn as steps.
      const pts = rates.map((r, i) => {
        const from = i ? rates[i - 1].t : 0;
        return `${x(from).toFixed(1)},${y(s.get(r)).toFixed(1)} ${x(r.t).toFixed(1)},${y(s.get(r)).toFixed(1)}`;
      }).join(" ");
      g.append(svg("polyline", { points: pts, fill: "none", stroke: s.color, "stroke-width": 2, "data-series": s.name }));
    }
    return g;
  };
  box.append(
    el("div", { class: "legend" },
      el("span", {}, el("i", { style: "background:#2456c7" }), "records fetched / s"),
      el("span", {}, el("i", { style: "background:#1a7f37" }), "assets loaded / s"),
      el("span", {}, el("i", { style: "background:#c62828" }), "runtime lag p99 (ms)")),
    panel("throughput", [
      { name: "fetched", get: (r) => r.fetched, color: "#2456c7" },
      { name: "loaded", get: (r) => r.loaded, color: "#1a7f37" },
    ], "rec/s", "chart-throughput"),
    panel("runtime lag", [{ name: "lag", get: (r) => r.lag, color: "#c62828" }], "ms", "chart-lag"));
  return box;
}

function fmtAxis(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (v >= 1e3) return (v / 1e3).toFixed(1) + "k";
  return v >= 10 ? Math.round(v).toString() : v.toFixed(1);
}

// ---- routing and refresh ----------------------------------------------

function showBanner(text) {
  const b = document.getElementById("banner");
  b.hidden = !text;
  b.textContent = text || "";
}

async function status() {
  try {
    const s = await api("/api/status");
    document.getElementById("service").textContent =
      `${s.store} · ${s.connections} connections · ${s.runs_running} running` + (s.runs_queued ? `, ${s.runs_queued} queued` : "") +
      ` · runtime lag p99 ${(s.runtime_lag.p99_us / 1000).toFixed(1)} ms` + (s.shutting_down ? " · shutting down" : "");
    if (s.config.error) showBanner("The last configuration reload was refused (the configuration loaded before is in force): " + s.config.error);
  } catch (_) { /* shown by the view */ }
}

async function route() {
  if (rendering) return;
  rendering = true;
  const hash = location.hash.replace(/^#\/?/, "");
  const [name, arg] = hash.split("/");
  const view = name || "inventory";
  document.body.dataset.view = arg ? "run" : view;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === view);
  const main = document.getElementById("view");
  try {
    let nodes;
    if (view === "connections") nodes = await connectionsView();
    else if (view === "runs" && arg) nodes = await runView(decodeURIComponent(arg));
    else if (view === "runs") nodes = await runsView();
    else nodes = await inventoryView();
    main.replaceChildren(...nodes.flat().filter(Boolean));
    document.body.dataset.loaded = String(Date.now());
  } catch (e) {
    if (e.message !== "unauthorized") main.replaceChildren(el("p", { class: "errors", id: "view-error" }, e.message));
  } finally {
    rendering = false;
  }
  status();
}

function refresh() {
  clearTimeout(timer);
  route().finally(() => { timer = setTimeout(refresh, REFRESH_MS); });
}

window.addEventListener("hashchange", refresh);
refresh();
