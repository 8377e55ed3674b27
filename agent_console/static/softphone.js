"use strict";
// The audio side of the agent console, behind one small interface so an in-browser WebRTC
// softphone can be added later without touching agent.js:
//
//   kind            "sip" | "webrtc" | …
//   describe()      text for the "Audio:" line
//   start()         prepare (register, get the microphone …); resolves when ready
//   incoming(call)  a call is being offered to this agent
//   answer(callId)  the agent pressed Answer (the console API has already accepted it)
//   hangup(callId)  the call ended for this agent
//   setMuted(on)    the agent pressed Mute/Unmute
//   sendDigits(d)   keypad digits, if the softphone sends them itself
//
// Every method returns a Promise. Register another implementation with Softphones.register(kind, Class).
class SoftphoneBase {
  get kind() { return "base"; }
  describe() { return ""; }
  start() { return Promise.resolve(); }
  incoming(_call) { return Promise.resolve(); }
  answer(_callId) { return Promise.resolve(); }
  hangup(_callId) { return Promise.resolve(); }
  setMuted(_on) { return Promise.resolve(); }
  sendDigits(_digits) { return Promise.resolve(); }
}

// Today's setup: the agent's audio is a SIP softphone (or desk phone) the platform calls; this page
// only controls the call, so every audio method is deliberately a no-op.
class SipPhoneSoftphone extends SoftphoneBase {
  get kind() { return "sip"; }
  describe() { return "your SIP phone (this page controls the call)"; }
}

const Softphones = {
  registry: { sip: SipPhoneSoftphone },
  register(kind, cls) { this.registry[kind] = cls; },
  create(kind) { const Cls = this.registry[kind] || SipPhoneSoftphone; return new Cls(); },
};
window.Softphones = Softphones;
