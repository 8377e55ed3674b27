"use strict";
// Shared helpers for the console pages: JSON API calls with the CSRF header, DOM building without
// innerHTML (customer data is never parsed as HTML), duration formatting and the live event stream.
const CC = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  async function api(method, url, body) {
    const opts = { method, headers: { "Accept": "application/json" }, credentials: "same-origin" };
    if (method !== "GET") {
      opts.headers["X-CSRFToken"] = csrf();
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body || {});
    }
    const res = await fetch(url, opts);
    let data = {};
    try { data = await res.json(); } catch (e) { data = { error: "unexpected answer " + res.status }; }
    if (res.status === 401) { window.location = "/login?next=" + encodeURIComponent(location.pathname); }
    return { ok: res.ok, status: res.status, data };
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

  function fmt(seconds) {
    if (seconds === null || seconds === undefined || isNaN(seconds)) return "–";
    const neg = seconds < 0; let s = Math.floor(Math.abs(seconds));
    const h = Math.floor(s / 3600); s -= h * 3600; const m = Math.floor(s / 60); s -= m * 60;
    const mm = h ? String(m).padStart(2, "0") : String(m);
    return (neg ? "-" : "") + (h ? h + ":" : "") + mm + ":" + String(s).padStart(2, "0");
  }

  function pct(x) { return x === null || x === undefined ? "–" : Math.round(x * 100) + "%"; }

  // One EventSource per page; the browser reconnects by itself, we only show the status.
  function live(handlers, statusEl) {
    const source = new EventSource("/events/stream");
    source.onopen = () => { if (statusEl) { statusEl.textContent = "live"; statusEl.dataset.live = "yes"; } };
    source.onerror = () => { if (statusEl) { statusEl.textContent = "reconnecting…"; statusEl.dataset.live = "no"; } };
    for (const [kind, fn] of Object.entries(handlers)) {
      source.addEventListener(kind, (ev) => fn(JSON.parse(ev.data)));
    }
    return source;
  }

  return { api, el, clear, fmt, pct, live, csrf };
})();
