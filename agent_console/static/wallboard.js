"use strict";
// Supervisor wallboard: polls the snapshot every few seconds and at once (debounced) when the live
// stream says something changed; charts are plain SVG built here (no chart library, no CDN).
(() => {
  const { api, el, clear, fmt, pct } = CC;
  const cfg = JSON.parse(document.getElementById("wallboard-config").textContent);
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  window.wallboardView = { snapshots: 0 };

  function svg(tag, attrs) {
    const n = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    return n;
  }

  function renderQueues(queues) {
    const body = clear($("queues").querySelector("tbody"));
    for (const q of queues) {
      const m = q.metrics, st = q.staffing;
      body.append(el("tr", { "data-queue": q.name },
        el("th", { text: q.name }), el("td", { class: "waiting", text: q.waiting }),
        el("td", { class: q.longest_wait_seconds > 60 ? "bad" : "", text: fmt(q.longest_wait_seconds) }),
        el("td", { class: "sl-today", text: pct(m.sl_today) }), el("td", { text: pct(m.sl_30min) }),
        el("td", { text: m.asa_seconds === null ? "–" : fmt(m.asa_seconds) }), el("td", { text: pct(m.abandonment) }),
        el("td", { text: pct(m.transfer_rate) }), el("td", { text: pct(m.fcr) }),
        el("td", { text: m.csat_mean === null ? "–" : m.csat_mean.toFixed(1) }),
        el("td", { class: "offered", text: m.offered }), el("td", { class: "answered", text: m.answered }),
        callbackCell(q.callbacks),
        el("td", { title: st.arrivals_per_hour + " calls/h, AHT " + fmt(st.aht_seconds) + ", target " + st.target,
                   text: st.agents_needed })));
    }
  }

  // Callbacks holding a place: due now / waiting for a retry / not dialled (backend cannot) / given up today.
  function callbackCell(cb) {
    const c = cb || {};
    const text = (c.waiting || 0) + " due · " + (c.retry_pending || 0) + " retry · " + (c.given_up || 0) + " given up"
      + (c.not_dialled ? " · " + c.not_dialled + " not dialled" : "");
    return el("td", { class: "callbacks" + (c.not_dialled || c.given_up ? " bad" : ""), "data-waiting": c.waiting || 0,
                      "data-retry": c.retry_pending || 0, "data-given-up": c.given_up || 0,
                      "data-not-dialled": c.not_dialled || 0, text });
  }

  function superviseButtons(a) {
    const td = el("td");
    if (!a.call_id) return td;
    for (const mode of ["listen", "whisper", "barge", "stop"]) {
      // "stop" ends the supervisor's leg; it is there whenever listening is.
      const cap = cfg.capabilities[mode === "stop" ? "listen" : mode];
      const b = el("button", { type: "button", class: "small", disabled: !cap.enabled, title: cap.reason || mode, text: mode });
      b.addEventListener("click", async () => {
        const r = await api("POST", "/api/supervisor/calls/" + encodeURIComponent(a.call_id) + "/" + mode);
        $("supervise-note").textContent = r.ok ? (mode === "stop" ? "supervision ended" : mode + " started: your phone rings") : r.data.error;
      });
      td.append(b, " ");
    }
    return td;
  }

  function renderAgents(agents, counts) {
    const body = clear($("agents").querySelector("tbody"));
    for (const a of agents) {
      body.append(el("tr", { "data-agent": a.login, "data-state": a.state },
        el("th", { text: a.name + " (" + a.login + ")" }),
        el("td", { class: "state state-" + a.state, text: a.state.replace("_", " ") + (a.reason ? " – " + a.reason : "") }),
        // Time in state means something for agents at work; "logged out for 7,800 hours" is noise.
        a.state === "logged_out" ? el("td", { class: "small", text: "–" })
          : el("td", { class: "in-state", "data-since": a.since, text: fmt(a.seconds_in_state) }),
        el("td", { class: "mono small", text: a.call_id }), superviseButtons(a)));
    }
    $("agent-counts").textContent = Object.entries(counts).map(([k, v]) => k.replace("_", " ") + " " + v).join(" · ");
    const disabled = ["listen", "whisper", "barge"].filter((m) => !cfg.capabilities[m].enabled);
    $("supervise-note").textContent = disabled.length ? cfg.capabilities[disabled[0]].reason : "";
  }

  function renderAlerts(alerts) {
    const list = clear($("alert-list"));
    if (!alerts.length) list.append(el("li", { class: "muted", text: "none" }));
    for (const a of alerts) list.append(el("li", { class: "alert-" + a.severity, "data-kind": a.kind, text: a.message }));
  }

  function chart(svgEl, intervals, series, maxValue) {
    clear(svgEl);
    const W = 600, H = 180, pad = 24, n = Math.max(intervals.length, 1);
    const max = maxValue || Math.max(1, ...intervals.flatMap((i) => series.map((s) => i[s.key] || 0)));
    svgEl.append(svg("line", { x1: pad, y1: H - pad, x2: W, y2: H - pad, stroke: "#999" }));
    svgEl.append(Object.assign(svg("text", { x: 2, y: 12, "font-size": 10 }), { textContent: maxValue ? "100%" : String(max) }));
    series.forEach((s, si) => {
      if (s.kind === "bar") {
        const bw = (W - pad) / n / series.length;
        intervals.forEach((iv, i) => {
          const v = iv[s.key] || 0, h = (H - 2 * pad) * v / max;
          svgEl.append(svg("rect", { x: pad + i * (W - pad) / n + si * bw, y: H - pad - h, width: Math.max(bw - 1, 1), height: h, class: "bar-" + s.key }));
        });
      } else {
        const pts = intervals.map((iv, i) => iv[s.key] === null ? null :
          (pad + (i + 0.5) * (W - pad) / n) + "," + (H - pad - (H - 2 * pad) * iv[s.key] / max)).filter(Boolean);
        if (pts.length) svgEl.append(svg("polyline", { points: pts.join(" "), fill: "none", class: "line-" + s.key }));
        for (const pt of pts) {  // a dot per interval, so a single interval still shows
          const [cx, cy] = pt.split(",");
          svgEl.append(svg("circle", { cx, cy, r: 3, class: "dot-" + s.key }));
        }
      }
    });
    const firstLabel = intervals.length ? new Date(intervals[0].start).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "";
    svgEl.append(Object.assign(svg("text", { x: pad, y: H - 6, "font-size": 10 }), { textContent: firstLabel }));
  }

  async function loadSnapshot() {
    const r = await api("GET", "/api/wallboard");
    if (!r.ok) return;
    cfg.capabilities = r.data.capabilities || cfg.capabilities;
    renderQueues(r.data.queues); renderAgents(r.data.agents, r.data.agent_states); renderAlerts(r.data.alerts);
    window.wallboardView.snapshots += 1; window.wallboardView.last = r.data;
  }

  async function loadIntraday() {
    const r = await api("GET", "/api/wallboard/intraday");
    if (!r.ok) return;
    const shown = r.data.intervals.slice(-32);  // the last 8 hours
    chart($("chart-volume"), shown, [{ key: "offered", kind: "bar" }, { key: "answered", kind: "bar" }]);
    chart($("chart-sl"), shown, [{ key: "service_level", kind: "line" }], 1);
  }

  let pending = null, pendingCharts = null;
  function soon() {
    if (!pending) pending = setTimeout(() => { pending = null; loadSnapshot(); }, 250);
    if (!pendingCharts) pendingCharts = setTimeout(() => { pendingCharts = null; loadIntraday(); }, 2000);
  }
  CC.live({ hello: soon, agent: soon, calls: soon }, $("live-status"));
  loadSnapshot(); loadIntraday();
  setInterval(loadSnapshot, 5000);
  setInterval(loadIntraday, 60000);
  setInterval(() => {
    for (const td of document.querySelectorAll("td.in-state")) {
      td.textContent = fmt((Date.now() - new Date(td.dataset.since).getTime()) / 1000);
    }
  }, 1000);
})();
