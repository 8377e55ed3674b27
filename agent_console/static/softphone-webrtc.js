"use strict";
// The in-browser softphone: one WebRTC audio session to the platform, kept up across calls.
// Implements the console's softphone interface (softphone.js). The server answers our offer from
// aiortc; the caller's audio arrives on that session when the platform rings this agent and the
// agent presses Answer, so answering needs no renegotiation. A lost session is re-established
// automatically (the server sets the agent Not Ready until it is back).
class WebRtcSoftphone extends SoftphoneBase {
  constructor() {
    super();
    this.pc = null; this.mic = null; this.state = "new"; this.retries = 0; this.timer = null;
    this.audio = null; this.meter = null; this.ctx = null; this.analysers = {};
    this.stopped = false;
    // Read by the browser tests and handy in devtools.
    window.softphoneState = this;
    this.levels = { mic: 0, remote: 0, remoteMax: 0, remoteLoudFrames: 0 };
    this.trace = [];
  }
  get kind() { return "webrtc"; }
  describe() { return "this browser (WebRTC) · " + this.state; }

  _status(state) {
    this.state = state;
    const node = document.getElementById("softphone-status");
    if (node) { node.textContent = this.describe(); node.dataset.webrtc = state; }
  }

  _ui() {
    const host = document.getElementById("softphone-status");
    if (!host || this.meter) return;
    this.meter = document.createElement("meter");
    this.meter.id = "softphone-level"; this.meter.min = 0; this.meter.max = 1; this.meter.value = 0;
    this.meter.title = "audio level (you / caller)";
    this.audio = document.createElement("audio");
    // Remote audio is silent to Web Audio unless it also plays through a media element.
    this.audio.id = "softphone-audio"; this.audio.autoplay = true;
    host.parentNode.append(" ", this.meter, this.audio);
  }

  async start() {
    this._ui();
    this.stopped = false;
    try {
      if (!this.mic) this.mic = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true } });
      await this._connect();
      this.retries = 0;
      // The server may lose the session without the browser noticing for ~30 s (ICE consent):
      // ask every 5 s, and reconnect at once when it no longer has ours.
      if (!this.healthTimer) this.healthTimer = setInterval(() => this._health(), 5000);
    } catch (e) {
      this._status("failed: " + (e && e.message ? e.message : e));
      this._retry();
    }
  }

  async _connect() {
    this._status("connecting");
    const cfg = await CC.api("GET", "/api/webrtc/config");
    if (!cfg.ok || !cfg.data.enabled) throw new Error(cfg.data.error || "no WebRTC gateway");
    if (this.pc) { try { this.pc.close(); } catch (e) { /* already closed */ } }
    const pc = new RTCPeerConnection({ iceServers: cfg.data.ice_servers || [] });
    this.pc = pc;
    for (const track of this.mic.getAudioTracks()) pc.addTrack(track, this.mic);
    pc.ontrack = (ev) => {
      const stream = ev.streams && ev.streams[0] ? ev.streams[0] : new MediaStream([ev.track]);
      this.audio.srcObject = stream;
      const p = this.audio.play(); if (p) p.catch(() => {});
      this._analyse("remote", stream);
    };
    this._analyse("mic", this.mic);
    pc.onconnectionstatechange = () => {
      if (pc !== this.pc) return;
      const s = pc.connectionState;
      this._status(s);
      if (s === "failed" || s === "closed") this._retry();
      if (s === "disconnected") setTimeout(() => { if (pc === this.pc && pc.connectionState === "disconnected") this._retry(); }, 3000);
      if (s === "connected") this.retries = 0;
    };
    await pc.setLocalDescription(await pc.createOffer());
    await this._gathered(pc, 3000);
    const r = await CC.api("POST", "/api/webrtc/offer", { type: "offer", sdp: pc.localDescription.sdp });
    if (!r.ok) throw new Error(r.data.error || "the server refused the offer");
    this.sessionId = r.data.session;
    await pc.setRemoteDescription({ type: "answer", sdp: r.data.sdp });
  }

  // Another console tab of the same agent took the audio session over: step aside instead of
  // taking it back (two tabs would otherwise steal it from each other for ever).
  _movedElsewhere(cfg) {
    return cfg.ok && cfg.data.session && cfg.data.session !== this.sessionId && cfg.data.state === "connected";
  }

  _stepAside() {
    this.stopped = true;
    if (this.pc) { try { this.pc.close(); } catch (e) { /* already closed */ } }
    this._status("in use in another tab (reload this page to bring the audio here)");
  }

  async _health() {
    if (this.stopped || this.timer || !this.pc || this.pc.connectionState !== "connected") return;
    const r = await CC.api("GET", "/api/webrtc/config");
    if (this._movedElsewhere(r)) { this._stepAside(); return; }
    if (r.ok && r.data.enabled && r.data.state !== "connected" && r.data.state !== "connecting" && r.data.state !== "new") {
      this._status("lost by the server");
      this._retry();
    }
  }

  _gathered(pc, ms) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { if (pc.iceGatheringState === "complete") { clearTimeout(t); resolve(); } };
      const t = setTimeout(resolve, ms);
      pc.addEventListener("icegatheringstatechange", done);
    });
  }

  _retry() {
    if (this.stopped || this.timer) return;
    const delay = Math.min(10000, 500 * Math.pow(2, this.retries++));
    this._status("reconnecting in " + Math.round(delay / 1000) + " s");
    this.timer = setTimeout(async () => {
      this.timer = null;
      if (this.sessionId && this._movedElsewhere(await CC.api("GET", "/api/webrtc/config"))) { this._stepAside(); return; }
      try { await this._connect(); } catch (e) { this._status("failed: " + e.message); this._retry(); }
    }, delay);
  }

  _analyse(which, stream) {
    try {
      if (!this.ctx) this.ctx = new AudioContext();
      if (this.ctx.state === "suspended") this.ctx.resume();
      const source = this.ctx.createMediaStreamSource(stream);
      const analyser = this.ctx.createAnalyser();
      analyser.fftSize = 2048;
      source.connect(analyser);
      this.analysers[which] = analyser;
      if (!this.meterTimer) this.meterTimer = setInterval(() => this._measure(), 25);
    } catch (e) { /* no Web Audio: no meter */ }
  }

  _measure() {
    const buf = new Float32Array(2048);
    for (const [which, analyser] of Object.entries(this.analysers)) {
      analyser.getFloatTimeDomainData(buf);
      let sum = 0; for (const v of buf) sum += v * v;
      const rms = Math.sqrt(sum / buf.length);
      this.levels[which] = rms;
      if (which === "remote") {
        this.levels.remoteMax = Math.max(this.levels.remoteMax, rms);
        // A bounded trace of the caller's loudness (25 ms steps, 2 minutes) for diagnostics and tests.
        if (this.trace.length < 4800) this.trace.push([Date.now(), rms]);
        if (rms > 0.01) this.levels.remoteLoudFrames += 1;
      }
    }
    if (this.meter) this.meter.value = Math.min(1, 4 * Math.max(this.levels.mic || 0, this.levels.remote || 0));
  }

  // The platform routes audio by call; the page only keeps the session healthy.
  incoming(_call) { if (this.ctx && this.ctx.state === "suspended") this.ctx.resume(); return Promise.resolve(); }
  answer(_callId) { const p = this.audio && this.audio.play(); if (p) p.catch(() => {}); return Promise.resolve(); }
  setMuted(on) {
    if (this.mic) for (const t of this.mic.getAudioTracks()) t.enabled = !on;
    return Promise.resolve();
  }
}
Softphones.register("webrtc", WebRtcSoftphone);
Softphones.register("browser", WebRtcSoftphone);
