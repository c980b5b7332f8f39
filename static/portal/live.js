// Live views: the connected-stations table and a station's status/frames, read from small JSON
// views (the database is the truth across gateway processes). The portal's WebSocket
// (/portal/live/, stations/live.py) says when to read again; while it is closed the views poll.
// No framework, no build step.
(function () {
  "use strict";

  const TYPES = { 2: "CALL", 3: "RESULT", 4: "ERROR", 5: "RESULTERROR", 6: "SEND" };
  const DIRS = { in: "from station", out: "to station", gw: "gateway" };

  function pad(n, w) { return String(n).padStart(w || 2, "0"); }
  function utc(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
      `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  }
  function utcMs(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.` +
      pad(d.getUTCMilliseconds(), 3);
  }
  function ago(iso) {
    if (!iso) return "—";
    const s = Math.max(0, Math.round((Date.now() - new Date(iso).getTime()) / 1000));
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    return utc(iso);
  }
  // build an element; text is always set as text, never as HTML
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = v; else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  }
  async function getJSON(url) {
    const r = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (r.status === 403 || r.redirected) { window.location.reload(); throw new Error("logged out"); }
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    return r.json();
  }
  // pushed updates: {cids: [...] or null (many), presence: bool} after each log flush
  const SLOW_POLL_MS = 30000;  // while the socket is open, polling only covers a lost event
  const live = { open: false, listeners: [] };
  function connectLive(delay) {
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(`${scheme}${window.location.host}/portal/live/`);
    ws.onopen = () => { live.open = true; delay = 1000; };
    ws.onmessage = (m) => { const d = JSON.parse(m.data); for (const fn of live.listeners) fn(d); };
    ws.onclose = () => {
      live.open = false;
      setTimeout(() => connectLive(Math.min(delay * 2, 30000)), delay);
    };
  }
  function poll(every, fn) {
    let timer = null, soon = null;
    const dot = document.getElementById("live-dot");
    async function tick() {
      clearTimeout(timer);
      try { await fn(); if (dot) dot.className = "dot live"; }
      catch (e) { if (dot) dot.className = "dot stale"; }
      timer = setTimeout(tick, live.open ? SLOW_POLL_MS : every);
    }
    tick();
    // at most one read per 300 ms however many events arrive
    const now = () => { if (!soon) soon = setTimeout(() => { soon = null; tick(); }, 300); };
    return now;
  }
  function refreshAgo() {
    for (const n of document.querySelectorAll("[data-ago]")) {
      if (n.dataset.ago) n.textContent = ago(n.dataset.ago);
    }
  }

  // --- the inventory ------------------------------------------------------------------------
  function stationsPage(table) {
    const body = table.tBodies[0];
    const search = document.getElementById("search");
    const total = document.getElementById("total");
    const pageOf = document.getElementById("page-of");
    const status = document.getElementById("live-status");
    let known = new Set([...body.querySelectorAll("tr[data-cid]")].map((r) => r.dataset.cid));

    function row(s, fresh) {
      const cid = el("td", {}, el("a", { href: s.url, class: "cid", text: s.cid }));
      if (!s.enabled) cid.append(" ", el("span", { class: "pill warn", text: "disabled" }));
      return el("tr", { "data-cid": s.cid, class: fresh ? "fresh" : null },
        cid,
        el("td", {}, el("span", { class: `pill ${s.online ? "online" : "offline"}`, text: s.online ? "online" : "offline" })),
        el("td", {}, el("span", { class: "tag", text: s.ocpp_version || "?" })),
        el("td", { class: "mono small", text: s.node || "—" }),
        el("td", { class: "small", text: `${s.vendor} ${s.model}` }),
        el("td", { "data-ago": s.last_frame_at || "", text: ago(s.last_frame_at) }),
        el("td", { class: "num", text: s.frames_in }),
        el("td", { class: "num", text: s.frames_out }));
    }
    async function update() {
      // the page's own query string (state, q, sort, page) asks for the same rows
      const data = await getJSON(`${table.dataset.liveUrl}${window.location.search}`);
      const rows = data.stations.map((s) => row(s, !known.has(s.cid)));
      if (!rows.length) {
        const q = search.value.trim();
        const text = q ? `No station matches “${q}”.` : "No station here right now.";
        rows.push(el("tr", { class: "empty" }, el("td", { colspan: 8, text })));
      }
      body.replaceChildren(...rows);
      known = new Set(data.stations.map((s) => s.cid));
      total.textContent = data.matching;
      for (const [state, count] of Object.entries(data.counts)) {
        const node = document.querySelector(`[data-count="${state}"]`);
        if (node) node.textContent = count;
      }
      pageOf.textContent = `page ${data.page} of ${data.pages}`;
      status.textContent = `Last update ${utc(new Date().toISOString()).slice(11)} UTC.`;
    }
    const now = poll(1000, update);
    live.listeners.push((d) => {
      if (d.presence || d.cids === null || d.cids.some((c) => known.has(c))) now();
    });
    let typing = null;
    search.addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => {
        const url = new URL(window.location);
        if (search.value.trim()) url.searchParams.set("q", search.value.trim());
        else url.searchParams.delete("q");
        url.searchParams.delete("page");
        history.replaceState(null, "", url);
        now();
      }, 250);
    });
  }

  // --- one station --------------------------------------------------------------------------
  function frameRow(f) {
    const outcome = el("td", {}, el("span", { class: `outcome ${f.outcome}`, text: f.outcome }));
    if (f.reason) outcome.append(" ", el("span", { class: "muted small", text: f.reason }));
    return el("tr", { class: `dir-${f.direction} outcome-${f.outcome}` },
      el("td", { class: "mono small" }, el("a", { href: f.url, text: utcMs(f.created) })),
      el("td", {}, el("span", { class: `dir ${f.direction}`, text: DIRS[f.direction] || f.direction })),
      el("td", { class: "mono small", text: TYPES[f.message_type] || "" }),
      el("td", { text: f.action }),
      el("td", { class: "mono small uid", text: f.unique_id }),
      outcome,
      el("td", { class: "mono small payload", text: f.payload.length > 140 ? f.payload.slice(0, 139) + "…" : f.payload }));
  }
  function presenceRow(p) {
    return el("tr", {},
      el("td", { class: "mono small", text: utc(p.created) }),
      el("td", {}, el("span", { class: `outcome ${p.outcome}`, text: p.outcome })),
      el("td", { text: p.reason }));
  }
  function empty(cols, text) { return el("tr", { class: "empty" }, el("td", { colspan: cols, text })); }

  function stationPage(head) {
    const pill = document.getElementById("status-pill");
    const kick = document.getElementById("kick-button");
    const frames = document.getElementById("recent-frames");
    const presence = document.getElementById("presence");
    const connectors = document.getElementById("connectors");
    const field = (name) => document.querySelector(`[data-field="${name}"]`);
    let lastTop = null;
    async function update() {
      const data = await getJSON(head.dataset.liveUrl);
      const s = data.station;
      pill.textContent = s.connected ? "connected" : "offline";
      pill.className = `pill ${s.connected ? "online" : "offline"}`;
      kick.disabled = !s.connected;
      field("node").textContent = s.node || "—";
      field("connected_at").textContent = s.connected ? utc(s.connected_at) : "—";
      field("disconnected_at").textContent = utc(s.disconnected_at);
      field("last_frame_at").dataset.ago = s.last_frame_at || "";
      field("last_frame_at").textContent = ago(s.last_frame_at);
      field("frames_in").textContent = s.frames_in;
      field("frames_out").textContent = s.frames_out;
      field("frames_lenient").textContent = s.frames_lenient;
      field("vendor_model").textContent = (s.vendor || s.model) ? `${s.vendor} ${s.model}` : "—";
      field("serial_number").textContent = s.serial_number || "—";
      field("firmware_version").textContent = s.firmware_version || "—";
      field("last_boot_at").textContent = utc(s.last_boot_at);
      field("last_heartbeat_at").textContent = utc(s.last_heartbeat_at);
      const states = Object.entries(s.connectors || {});
      connectors.replaceChildren(...(states.length ? states.map(([key, c]) => el("tr", {},
        el("td", { class: "mono", text: key }),
        el("td", {}, el("span", { class: `status ${(c.status || "").toLowerCase()}`, text: c.status })),
        el("td", { text: c.error_code || "—" }),
        el("td", { class: "mono small", text: c.at }))) : [empty(4, "No StatusNotification yet.")]));
      const refused = field("last_refused");
      refused.replaceChildren(s.last_refused_at
        ? el("span", {}, `${utc(s.last_refused_at)} — `, el("strong", { text: s.last_refused_reason }))
        : "never");
      const top = data.frames.length ? data.frames[0].id : null;
      if (top !== lastTop) {  // redraw only when something new arrived (keeps text selectable)
        lastTop = top;
        frames.replaceChildren(...(data.frames.length ? data.frames.map(frameRow) : [empty(7, "No frames logged yet.")]));
        presence.replaceChildren(...(data.presence.length ? data.presence.map(presenceRow) : [empty(3, "No connections logged yet.")]));
      }
    }
    const now = poll(2000, update);
    const cid = head.dataset.cid.toLowerCase();
    live.listeners.push((d) => {
      if (d.cids === null || d.cids.some((c) => c.toLowerCase() === cid)) now();
    });
  }

  // --- everywhere ---------------------------------------------------------------------------
  document.addEventListener("submit", (event) => {
    const message = event.target.dataset && event.target.dataset.confirm;
    if (message && !window.confirm(message)) event.preventDefault();
  });
  const clock = document.getElementById("clock");
  function tickClock() {
    if (clock) clock.textContent = ` · now ${utc(new Date().toISOString())}`;
    refreshAgo();
  }
  setInterval(tickClock, 1000);
  tickClock();

  const table = document.getElementById("stations");
  const head = document.getElementById("station");
  if ((table && table.dataset.liveUrl) || (head && head.dataset.liveUrl)) connectLive(1000);
  if (table && table.dataset.liveUrl) stationsPage(table);
  if (head && head.dataset.liveUrl) stationPage(head);
})();
