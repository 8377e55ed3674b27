"use strict";
// Agent console: state with timers, live offers (sound + notification), screen pop, call controls,
// transfer with reason and note, wrap-up. All changes go through the JSON API; the page re-reads
// /api/agent/current after each action so it always shows what the server believes.
(() => {
  const { api, el, clear, fmt } = CC;
  const cfg = JSON.parse(document.getElementById("console-config").textContent);
  const $ = (id) => document.getElementById(id);
  const softphone = Softphones.create(cfg.softphone);
  const view = { state: "", since: null, callId: null, phase: null, callStart: null, wrapStart: null,
                 onHold: false, muted: false, pop: null, consulting: null, callback: null };
  window.consoleView = view;  // read by the browser tests and handy in devtools

  function setText(id, text) { $(id).textContent = text; }
  function show(id, on) { $(id).classList.toggle("hidden", !on); }

  function renderState(state, reason, since) {
    view.state = state; view.since = since ? new Date(since) : new Date();
    const label = { available: "Available", not_ready: "Not ready", ringing: "Ringing", on_call: "On call",
                    wrap_up: "Wrap-up", logged_out: "Logged out" }[state] || state;
    setText("state", label); $("state").dataset.state = state;
    setText("state-reason", state === "not_ready" && reason ? "(" + reason + ")" : "");
  }

  function phaseOf(state, leg) {
    if (state === "ringing" && !leg.started) return "ringing";
    if (state === "on_call") return "on_call";
    if (state === "wrap_up") return "wrap_up";
    return null;
  }

  async function refresh() {
    const r = await api("GET", "/api/agent/current");
    if (!r.ok) return;
    const d = r.data;
    renderState(d.state, d.reason, d.since);
    view.callId = d.call_id;
    view.phase = d.call_id ? phaseOf(d.state, d.leg) : null;
    view.consulting = d.leg.consulting_transfer_id;
    if (d.screen_pop) renderPop(d.screen_pop);
    renderCall();
  }

  function renderCall() {
    const active = !!view.callId && view.phase !== null;
    show("call-panel", active && view.phase !== "wrap_up");
    show("wrap-up", view.phase === "wrap_up");
    show("screen-pop", active && !!view.pop);
    renderCallback();  // shown in every phase, wrap-up included ("did not answer — retry at …")
    if (!active) return;
    setText("call-id", view.callId);
    const dialling = view.callback && view.callback.state === "dialling" && view.phase === "on_call";
    setText("call-phase", dialling ? "dialling the customer" : { ringing: "ringing", on_call: view.onHold ? "on hold" : "connected",
                            wrap_up: "wrap-up" }[view.phase]);
    show("answer", view.phase === "ringing");
    show("consulting", !!view.consulting);
    for (const id of ["hold", "mute", "hangup"]) $(id).disabled = view.phase !== "on_call" && id !== "hangup";
    show("hold", !view.onHold); show("resume", view.onHold);
    show("mute", !view.muted); show("unmute", view.muted);
    if (!cfg.capabilities.mute.enabled) { $("mute").disabled = true; }
    $("transfer-submit").disabled = view.phase !== "on_call";
    if (view.phase === "on_call" && !view.callStart) view.callStart = new Date();
    if (view.phase === "wrap_up" && !view.wrapStart) view.wrapStart = new Date();
  }

  // ---- callback status (a caller who chose to be called back: attempt, dialling, connected, retry) ----
  function callbackText(cb) {
    let text = "Callback · attempt " + cb.attempt + (cb.max_attempts ? " of " + cb.max_attempts : "") + " · ";
    if (cb.state === "retry" && cb.retry_at) {
      const at = new Date(cb.retry_at);
      const hhmm = String(at.getHours()).padStart(2, "0") + ":" + String(at.getMinutes()).padStart(2, "0");
      if (cb.reason === "agent-ended") return text + "you ended the attempt — retry at " + hhmm;
      return text + "customer did not answer" + (cb.reason ? " (" + cb.reason + ")" : "") + " — retry at " + hhmm;
    }
    return text + cb.label;
  }
  function renderCallback() {
    const cb = view.callback;
    show("callback-status", !!cb && !!view.callId && view.phase !== null);
    if (!cb) return;
    setText("callback-status", callbackText(cb));
    $("callback-status").dataset.state = cb.state;
  }

  // ---- screen pop ------------------------------------------------------------------------------
  function renderPop(pop) {
    view.pop = pop;
    if (pop.call && pop.call.id === view.callId) view.callback = pop.callback || null;
    const call = pop.call;
    setText("pop-reason", call.reason || "unknown");
    setText("pop-queue", call.queue || "–");
    setText("pop-waited", fmt(call.waited_seconds));
    const ivr = clear($("pop-ivr"));
    for (const item of pop.ivr) {
      ivr.append(el("tr", { "data-key": item.key },
        el("th", { text: item.label }),
        el("td", { class: item.sensitive ? "masked" : "" , text: item.value }),
        el("td", { class: item.verified ? "verified" : "unverified",
                   text: item.verified ? "✔ verified" : "not verified" })));
    }
    const notes = clear($("pop-transfer-notes"));
    for (const s of pop.transfer_notes) {
      notes.append(el("div", { class: "transfer-note" },
        el("strong", { text: (s.agent || "agent") + " → " + s.transfer_target + " (" + s.transfer_kind + ")" }),
        el("div", { text: "Reason: " + s.transfer_reason }),
        el("blockquote", { text: s.transfer_note })));
    }
    show("pop-transfer-notes-card", pop.transfer_notes.length > 0);
    const why = clear($("pop-why"));
    const rw = call.route_why || {};
    if (rw.summary) why.append(el("p", { text: rw.summary }));
    const rest = Object.entries(rw).filter(([k]) => k !== "summary");
    if (rest.length) why.append(el("pre", { class: "small", text: JSON.stringify(Object.fromEntries(rest), null, 1) }));
    if (!rw.summary && !rest.length) why.append(el("p", { class: "muted", text: "no routing explanation recorded" }));
    renderCustomer(pop.customer);
    renderSimilar(pop.similar);
  }

  function renderCustomer(c) {
    const box = clear($("pop-customer"));
    const hist = clear($("pop-history"));
    if (!c) { box.append(el("p", { class: "muted", text: "Caller not identified" })); return; }
    box.append(el("p", {}, el("strong", { id: "pop-customer-name", text: c.name }), " · ",
      el("span", { text: "account " + (c.account_number || "–") }), " · ", el("span", { class: "badge", text: c.tier })));
    box.append(el("p", { class: "small", text: "Phones: " + c.phones.map((p) => p.number + " (" + p.label + ")").join(", ") }));
    const sat = c.satisfaction;
    box.append(el("p", { class: "small", text: "Satisfaction: " + (sat.mean === null ? "no surveys" : sat.mean + "/5 over " + sat.count + " surveys") }));
    if (c.notes) box.append(el("p", { class: "notes", text: c.notes }));
    hist.append(el("tr", {}, ...["When", "Reason", "Outcome", "Disposition", "Agents", "Notes", "Transcript", "CSAT", "Recording"].map((h) => el("th", { text: h }))));
    if (!c.history.length) hist.append(el("tr", {}, el("td", { colspan: "9", class: "muted", text: "no earlier calls" })));
    for (const h of c.history) {
      const recs = el("td");
      for (const id of h.recordings) recs.append(el("a", { href: "/recordings/" + id, target: "_blank", text: "▶ " + id }), " ");
      hist.append(el("tr", { "data-call": h.call_id },
        el("td", { text: new Date(h.arrived_at).toLocaleString() }), el("td", { text: h.reason }),
        el("td", { text: h.outcome }), el("td", { text: h.disposition_label }),
        el("td", { text: h.agents.join(", ") }), el("td", { class: "note", text: h.note }),
        el("td", { class: "small", text: h.transcripts.join(" … ").slice(0, 200) }),
        el("td", { text: h.satisfaction === null || h.satisfaction === undefined ? "–" : h.satisfaction }), recs));
    }
  }

  function renderSimilar(list) {
    const ol = clear($("pop-similar"));
    if (!list.length) ol.append(el("li", { class: "muted", text: "no similar resolved calls yet" }));
    for (const s of list) {
      ol.append(el("li", {}, el("strong", { text: s.disposition || s.reason }), " — ",
        el("span", { text: s.note || s.transcript || "(no notes)" })));
    }
  }

  // ---- live events -----------------------------------------------------------------------------
  function notify(pop) {
    const ring = $("ring");
    try { ring.currentTime = 0; const p = ring.play(); if (p) p.catch(() => {}); } catch (e) { /* autoplay may be blocked */ }
    if ("Notification" in window && Notification.permission === "granted") {
      const reason = pop && pop.call ? pop.call.reason : "";
      try { new Notification("Incoming call", { body: reason ? "Reason: " + reason : "", tag: "offer" }); } catch (e) { /* ignore */ }
    }
  }

  CC.live({
    hello: () => refresh(),
    offer: (d) => {
      window.lastOffer = { call_id: d.call_id, received_at: Date.now() / 1000, pushed_at: d.pushed_at };
      view.callId = d.call_id; view.phase = "ringing"; view.callStart = null; view.wrapStart = null;
      view.onHold = false; view.muted = false; view.callback = null;
      if (d.screen_pop) renderPop(d.screen_pop);
      renderState("ringing", "", new Date().toISOString());
      renderCall(); notify(d.screen_pop); softphone.incoming(d);
    },
    state: (d) => { renderState(d.state, d.reason, d.since); refresh(); },
    answered: () => refresh(),
    hangup: (d) => { softphone.hangup(d.call_id); refresh(); },
    transferred: () => refresh(),
    missed: () => refresh(),
    callback: (d) => { if (d.call_id === view.callId) { view.callback = d; renderCall(); } refresh(); },
  }, $("live-status"));

  // ---- controls --------------------------------------------------------------------------------
  async function act(path, body, errId) {
    const r = await api("POST", "/api/calls/" + encodeURIComponent(view.callId) + "/" + path, body);
    setText(errId || "call-error", r.ok ? "" : r.data.error);
    return r;
  }
  $("answer").addEventListener("click", async () => {
    const r = await act("answer");
    if (r.ok) { view.callStart = new Date(); await softphone.answer(view.callId); refresh(); }
  });
  $("hold").addEventListener("click", async () => { if ((await act("hold", { on: true })).ok) { view.onHold = true; renderCall(); } });
  $("resume").addEventListener("click", async () => { if ((await act("hold", { on: false })).ok) { view.onHold = false; renderCall(); } });
  $("mute").addEventListener("click", async () => { if ((await act("mute", { on: true })).ok) { view.muted = true; softphone.setMuted(true); renderCall(); } });
  $("unmute").addEventListener("click", async () => { if ((await act("mute", { on: false })).ok) { view.muted = false; softphone.setMuted(false); renderCall(); } });
  $("transfer-complete").addEventListener("click", async () => { if ((await act("transfer/complete")).ok) refresh(); });
  $("transfer-return").addEventListener("click", async () => { if ((await act("transfer/return")).ok) refresh(); });
  $("hangup").addEventListener("click", async () => { if ((await act("hangup")).ok) { softphone.hangup(view.callId); refresh(); } });
  for (const key of document.querySelectorAll(".key")) {
    key.addEventListener("click", async () => { const d = key.dataset.key; if ((await act("dtmf", { digits: d })).ok) softphone.sendDigits(d); });
  }

  async function loadTargets() {
    const type = $("transfer-target-type").value;
    show("transfer-number", type === "number"); show("transfer-target", type !== "number");
    if (type === "number") return;
    const r = await api("GET", "/api/transfer-targets");
    if (!r.ok) return;
    const sel = clear($("transfer-target"));
    if (type === "agent") {
      for (const a of r.data.agents) sel.append(el("option", { value: a.login, disabled: !a.available, text: a.name + " (" + a.state + ")" }));
    } else {
      for (const q of r.data.queues) sel.append(el("option", { value: q.name, text: q.name }));
    }
  }
  $("transfer-target-type").addEventListener("change", loadTargets);
  $("transfer-target").addEventListener("focus", loadTargets, { once: true });
  $("transfer-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const type = $("transfer-target-type").value;
    const body = { kind: $("transfer-kind").value, target_type: type,
                   target: type === "number" ? $("transfer-number").value : $("transfer-target").value,
                   reason: $("transfer-reason").value, note: $("transfer-note").value };
    const r = await act("transfer", body);
    if (r.ok) { $("transfer-reason").value = ""; $("transfer-note").value = ""; refresh(); }
  });

  $("similar-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!view.callId) return;
    const q = encodeURIComponent($("similar-q").value);
    const r = await api("GET", "/api/calls/" + encodeURIComponent(view.callId) + "/similar?q=" + q);
    if (r.ok) renderSimilar(r.data.results);
  });

  $("disposition").addEventListener("change", () => {
    const opt = $("disposition").selectedOptions[0];
    if (opt && opt.dataset.resolved) $("resolved-" + opt.dataset.resolved).checked = true;
  });
  $("wrap-up-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const chosen = document.querySelector('input[name="resolved"]:checked');
    if (!chosen) { setText("wrap-error", "say whether the problem was resolved"); return; }
    const r = await act("wrap-up", { disposition: $("disposition").value, resolved: chosen.value === "yes",
                                     notes: $("wrap-notes").value }, "wrap-error");
    if (r.ok) {
      $("wrap-up-form").reset(); view.pop = null; view.callId = null; view.callStart = null; view.wrapStart = null;
      view.callback = null;
      refresh();
    }
  });

  async function setState(state, reason) {
    const r = await api("POST", "/api/agent/state", { state, reason });
    if (!r.ok) { setText("live-status", r.data.error); return; }
    renderState(r.data.state, r.data.reason, r.data.since);
  }
  $("go-available").addEventListener("click", () => setState("available", ""));
  $("go-not-ready").addEventListener("click", () => setState("not_ready", $("not-ready-reason").value));
  $("enable-notifications").addEventListener("click", () => {
    if ("Notification" in window) Notification.requestPermission();
  });

  setInterval(() => {
    if (view.since) setText("state-timer", fmt((Date.now() - view.since.getTime()) / 1000));
    if (view.callStart && view.phase === "on_call") setText("call-timer", fmt((Date.now() - view.callStart.getTime()) / 1000));
    if (view.wrapStart && view.phase === "wrap_up") {
      const left = cfg.wrap_up_seconds - (Date.now() - view.wrapStart.getTime()) / 1000;
      setText("wrap-timer", left >= 0 ? fmt(left) + " left" : fmt(-left) + " over");
      $("wrap-timer").classList.toggle("over", left < 0);
    }
  }, 1000);

  setText("softphone-status", softphone.describe());
  softphone.start();
})();
