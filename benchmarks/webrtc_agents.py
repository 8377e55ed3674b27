"""Concurrent SIP↔browser calls bridged by the WebRTC gateway: CPU per call, delay added, packet loss.

Setup (all loopback, one machine):

* this process runs the WebRTC gateway (the thing measured) and stands in for the telephony
  backend: it sends the gateway a SIP INVITE per call, as the SIP endpoint does, and runs the
  callers' G.711 RTP (one thread, a 20 ms clock for every call);
* a child process runs one aiortc peer per call standing in for the agents' browsers (Chromium
  pages cost ~5-7 % of a core each, which would starve the bridge on 2 cores), each offering
  PCMU, exactly the SDP flow the console uses.

Every second each caller sends a 60 ms tone burst after silence and each "browser" sends one too
(offset half a second); the far side timestamps the rising edge. Both processes read the same
CLOCK_MONOTONIC. **Baseline (same run):** the same bursts over a direct RTP path (caller socket →
socket), which is what a SIP-phone agent gets; the delay *added* is bridged − direct. The stand-in
browser decodes through aiortc's receiver with the same 1-packet prefetch as the gateway.

CPU per call = (process CPU − the caller simulator's own thread CPU) / calls, over the measured
window. Packet loss = frames sent vs. frames received, both directions, plus the gateway's WebRTC
statistics. The machine's 2 cores are shared with other work: numbers are noisy.

    python benchmarks/webrtc_agents.py            # 20 calls, 20 s
    python benchmarks/webrtc_agents.py --quick    # 4 calls, 6 s
"""

from __future__ import annotations

import argparse
import asyncio
import audioop
import json
import math
import multiprocessing as mp
import os
import random
import selectors
import socket
import statistics
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callcentre.settings import WebRtcSettings  # noqa: E402
from telephony.sdp import build_sdp, parse_offer  # noqa: E402
from telephony.webrtc.gateway import WebRtcGateway  # noqa: E402

FRAME = 160
PERIOD = 1.0
FRAMES_PER_PERIOD = 50
BURST_FRAMES = 3
LOUD = 2000


def tone_frames(n: int, freq: float = 1000.0) -> list[bytes]:
    out = []
    for k in range(n):
        pcm = b"".join(struct.pack("<h", int(12000 * math.sin(2 * math.pi * freq * (k * FRAME + i) / 8000)))
                       for i in range(FRAME))
        out.append(audioop.lin2ulaw(pcm, 2))
    return out


# ---- the stand-in browsers (child process) -------------------------------------------------------
def browsers(n: int, conn: Any, seconds: float) -> None:
    import av
    from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from telephony.webrtc.ice import restrict_host_addresses
    from telephony.webrtc.session import tune_receiver
    from telephony.webrtc.tracks import TIME_BASE

    restrict_host_addresses(["127.0.0.1"])  # the stand-in browsers live on loopback too

    class BurstTrack(MediaStreamTrack):
        kind = "audio"

        def __init__(self, offset: int) -> None:
            super().__init__()
            self.start = time.monotonic()
            self.count = 0
            self.offset = offset
            self.burst = tone_frames(BURST_FRAMES, 700.0)
            self.emitted: list[float] = []
            self.frames = 0

        async def recv(self) -> Any:
            due = self.start + self.count * 0.02
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            idx = (self.count + self.offset) % FRAMES_PER_PERIOD
            ulaw = self.burst[idx] if idx < BURST_FRAMES else b"\xff" * FRAME
            if idx == 0:
                self.emitted.append(time.monotonic())
            packet = av.Packet(ulaw)
            packet.pts = self.count * FRAME
            packet.time_base = TIME_BASE
            self.count += 1
            self.frames += 1
            return packet

    async def main() -> None:
        pcs, tracks, detections, received = [], [], [[] for _ in range(n)], [0] * n
        readers: list[Any] = []
        for i in range(n):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            track = BurstTrack(25 + i % 10)
            t = pc.addTransceiver(track, direction="sendrecv")
            caps = [c for c in __import__("aiortc").RTCRtpSender.getCapabilities("audio").codecs
                    if c.mimeType.lower() == "audio/pcmu"]
            t.setCodecPreferences(caps)
            tune_receiver(t.receiver)

            def on_track(remote: Any, i: int = i) -> None:
                async def read() -> None:
                    quiet = True
                    while True:
                        try:
                            frame = await remote.recv()
                        except Exception:
                            return
                        received[i] += 1
                        level = audioop.rms(bytes(frame.planes[0])[: frame.samples * 2], 2)
                        if level > LOUD and quiet:
                            detections[i].append(time.monotonic())
                        quiet = level < LOUD
                readers.append(asyncio.ensure_future(read()))

            pc.on("track", on_track)
            await pc.setLocalDescription(await pc.createOffer())
            conn.send(("offer", i, pc.localDescription.sdp))
            answer = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            pcs.append(pc)
            tracks.append(track)
        conn.send(("ready", 0, ""))
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
        conn.send(("result", 0, json.dumps({
            "cpu_pct": 100 * (time.process_time() - cpu0) / (time.monotonic() - wall0),
            "detections": detections, "received": received,
            "emitted": [t.emitted for t in tracks], "sent": [t.frames for t in tracks],
        })))
        for pc in pcs:
            await pc.close()

    asyncio.run(main())


# ---- the callers (this process) -------------------------------------------------------------------
class Callers:
    """One thread sending every caller's RTP on a 20 ms clock, one receiving; bursts are timestamped."""

    def __init__(self, n: int) -> None:
        self.socks = []
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            self.socks.append(s)
        self.remotes: list[tuple[str, int] | None] = [None] * n
        self.sent_bursts: list[list[float]] = [[] for _ in range(n)]
        self.detections: list[list[float]] = [[] for _ in range(n)]
        self.sent = [0] * n
        self.received = [0] * n
        self.first_seq: list[int | None] = [None] * n
        self.last_seq: list[int | None] = [None] * n
        self.cpu = 0.0
        self.running = False
        self.burst = tone_frames(BURST_FRAMES)

    def port(self, i: int) -> int:
        return int(self.socks[i].getsockname()[1])

    def start(self) -> None:
        self.running = True
        self.threads = [threading.Thread(target=self._send, name="caller-send", daemon=True),
                        threading.Thread(target=self._recv, name="caller-recv", daemon=True)]
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.running = False
        for t in self.threads:
            t.join(timeout=3)

    def _send(self) -> None:
        n = len(self.socks)
        seq = [random.getrandbits(16) for _ in range(n)]
        start = time.monotonic()
        tick = 0
        while self.running:
            due = start + tick * 0.02
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            phase = tick % FRAMES_PER_PERIOD
            for i, s in enumerate(self.socks):
                remote = self.remotes[i]
                if remote is None:
                    continue
                k = (phase - i % 10) % FRAMES_PER_PERIOD  # stagger bursts across calls
                payload = self.burst[k] if k < BURST_FRAMES else b"\xff" * FRAME
                header = struct.pack("!BBHII", 0x80, 0, seq[i] & 0xFFFF, (tick * FRAME) & 0xFFFFFFFF, 1000 + i)
                seq[i] += 1
                if k == 0:
                    self.sent_bursts[i].append(time.monotonic())
                s.sendto(header + payload, remote)
                self.sent[i] += 1
            tick += 1
        self.cpu += time.thread_time()

    def _recv(self) -> None:
        sel = selectors.DefaultSelector()
        for i, s in enumerate(self.socks):
            sel.register(s, selectors.EVENT_READ, i)
        quiet = [True] * len(self.socks)
        while self.running:
            for key, _ in sel.select(0.2):
                i = key.data
                while True:
                    try:
                        data = self.socks[i].recv(2048)
                    except BlockingIOError:
                        break
                    if len(data) <= 12 or data[1] & 0x7F != 0:
                        continue
                    self.received[i] += 1
                    seq = struct.unpack("!H", data[2:4])[0]
                    if self.first_seq[i] is None:
                        self.first_seq[i] = seq
                    self.last_seq[i] = seq
                    level = audioop.rms(audioop.ulaw2lin(data[12:], 2), 2)
                    if level > LOUD and quiet[i]:
                        self.detections[i].append(time.monotonic())
                    quiet[i] = level < LOUD
        self.cpu += time.thread_time()


def delays(sent: list[float], detected: list[float]) -> list[float]:
    """Each detection matched to the latest send before it (within one period)."""
    out = []
    for d in detected:
        before = [s for s in sent if s <= d and d - s < PERIOD / 2]
        if before:
            out.append((d - before[-1]) * 1000)
    return out


def direct_baseline(seconds: float) -> list[float]:
    """The same bursts over a plain RTP socket pair: what a SIP-phone agent's path adds (≈ nothing)."""
    callers = Callers(1)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(0.2)
    callers.remotes[0] = sink.getsockname()
    detections: list[float] = []
    callers.start()
    end = time.monotonic() + seconds
    quiet = True
    while time.monotonic() < end:
        try:
            data = sink.recv(2048)
        except TimeoutError:
            continue
        level = audioop.rms(audioop.ulaw2lin(data[12:], 2), 2)
        if level > LOUD and quiet:
            detections.append(time.monotonic())
        quiet = level < LOUD
    callers.stop()
    sink.close()
    return delays(callers.sent_bursts[0], detections)


def invite(gateway: WebRtcGateway, agent_id: int, rtp_port: int, sip: socket.socket) -> tuple[str, int]:
    uri = gateway.agent_uri(agent_id)
    port = sip.getsockname()[1]
    sdp = build_sdp(1, "127.0.0.1", rtp_port, 0, 101)
    call_id = f"bench-{agent_id}"
    gateway.expect(call_id, agent_id)
    time.sleep(0.01)
    msg = (f"INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{agent_id}x\r\n"
           f"From: <sip:bench@127.0.0.1:{port}>;tag=b{agent_id}\r\nTo: <{uri}>\r\n"
           f"Call-ID: {call_id}@bench\r\nCSeq: 1 INVITE\r\nContact: <sip:bench@127.0.0.1:{port}>\r\n"
           f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}")
    sip.sendto(msg.encode(), gateway.address)
    while True:
        data = sip.recv(4096)
        if data.startswith(b"SIP/2.0 180"):
            break
    gateway.answer(call_id, agent_id)
    while True:
        data = sip.recv(4096)
        if data.startswith(b"SIP/2.0 200"):
            answer = parse_offer(data.split(b"\r\n\r\n", 1)[1].decode())
            return answer.address, answer.port


def bye(gateway: WebRtcGateway, agent_id: int, sip: socket.socket) -> None:
    port = sip.getsockname()[1]
    msg = (f"BYE sip:webrtc@{gateway.address[0]}:{gateway.address[1]} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{agent_id}y\r\n"
           f"From: <sip:bench@127.0.0.1:{port}>;tag=b{agent_id}\r\nTo: <sip:x@x>;tag=y\r\n"
           f"Call-ID: bench-{agent_id}@bench\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n")
    sip.sendto(msg.encode(), gateway.address)


async def loop_lag(samples: list[float], until: float) -> None:
    """How late 20 ms sleeps wake on the gateway's loop: CPU starvation shows here first."""
    while time.monotonic() < until:
        start = time.monotonic()
        await asyncio.sleep(0.02)
        samples.append((time.monotonic() - start - 0.02) * 1000)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run(calls: int, seconds: float) -> dict[str, Any]:
    baseline = direct_baseline(min(seconds, 5.0))
    gateway = WebRtcGateway(WebRtcSettings())
    gateway.start()
    parent, child = mp.get_context("spawn").Pipe()
    proc = mp.get_context("spawn").Process(target=browsers, args=(calls, child, seconds), daemon=True)
    proc.start()
    sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sip.bind(("127.0.0.1", 0))
    sip.settimeout(10)
    callers = Callers(calls)
    try:
        for _ in range(calls):
            kind, i, sdp = parent.recv()
            assert kind == "offer"
            parent.send(gateway.offer(i + 1, sdp))
        kind, _, _ = parent.recv()
        assert kind == "ready"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not all(gateway.has_session(i + 1) and
                                                      gateway.session_state(i + 1) == "connected"
                                                      for i in range(calls)):
            time.sleep(0.1)
        for i in range(calls):
            callers.remotes[i] = invite(gateway, i + 1, callers.port(i), sip)
        callers.start()
        time.sleep(1.0)  # settle
        cpu0, wall0, caller_cpu0 = time.process_time(), time.monotonic(), callers.cpu
        lag: list[float] = []
        assert gateway._loop is not None
        asyncio.run_coroutine_threadsafe(loop_lag(lag, time.monotonic() + seconds), gateway._loop)
        time.sleep(seconds)
        cpu1, wall1 = time.process_time(), time.monotonic()
        callers.stop()
        caller_cpu = callers.cpu - caller_cpu0  # thread_time of both caller threads, whole run
        time.sleep(0.3)
        legs = {c.agent_id: c.leg.stats for c in gateway.calls.values() if c.leg is not None}
        received_in = {agent: stats.received for agent, stats in legs.items()}
        overflow = sum(gateway.sessions[i + 1].track.overflow for i in range(calls))
        trimmed = sum(gateway.sessions[i + 1].track.trimmed for i in range(calls))
        for i in range(calls):
            bye(gateway, i + 1, sip)
        time.sleep(1.0)
        parent.send("stop")
        kind, _, payload = parent.recv()
        result = json.loads(payload)
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
        gateway.stop()
        sip.close()
    to_browser = [d for i in range(calls) for d in delays(callers.sent_bursts[i], result["detections"][i])]
    to_caller = [d for i in range(calls) for d in delays(result["emitted"][i], callers.detections[i])]
    base = statistics.median(baseline) if baseline else 0.0
    server_cpu = max(0.0, (cpu1 - cpu0) - caller_cpu * (wall1 - wall0) / max(wall1 - wall0 + 1.3, 1e-9))
    qualities = list(gateway.quality.values())
    # RTP between the callers and the gateway, counted at both ends (the run is stopped before BYE).
    rtp_lost_in = sum(max(0, callers.sent[i] - received_in[i + 1]) for i in range(calls))
    rtp_lost_out = 0
    for i in range(calls):
        first, last = callers.first_seq[i], callers.last_seq[i]
        if first is not None and last is not None:
            rtp_lost_out += max(0, ((last - first) & 0xFFFF) + 1 - callers.received[i])
    return {
        "calls": calls, "seconds": seconds, "cores": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "gateway_loop_lag_ms_p50": round(pct(lag, 0.5), 1),
        "gateway_loop_lag_ms_p99": round(pct(lag, 0.99), 1),
        "cpu_per_call_pct": round(100 * server_cpu / (wall1 - wall0) / calls, 2),
        "baseline_direct_ms": round(base, 2),
        "caller_to_browser_ms_p50": round(pct(to_browser, 0.5) - base, 1),
        "caller_to_browser_ms_p95": round(pct(to_browser, 0.95) - base, 1),
        "browser_to_caller_ms_p50": round(pct(to_caller, 0.5) - base, 1),
        "browser_to_caller_ms_p95": round(pct(to_caller, 0.95) - base, 1),
        "bursts_measured": [len(to_browser), len(to_caller)],
        "rtp_lost_caller_to_gateway": rtp_lost_in,
        "rtp_lost_gateway_to_caller": rtp_lost_out,
        "bridge_overflow_frames": overflow,
        "bridge_trimmed_frames": trimmed,
        "browsers_process_cpu_pct": round(result["cpu_pct"], 1),
        "webrtc_packets_lost": sum(q.packets_lost for q in qualities),
        "webrtc_remote_packets_lost": sum(q.remote_packets_lost for q in qualities),
        "codec": sorted({q.codec for q in qualities}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="4 calls for 6 s")
    args = parser.parse_args()
    calls, seconds = (4, 6.0) if args.quick else (args.calls, args.seconds)
    r = run(calls, seconds)
    rows = [
        ("concurrent bridged calls", r["calls"]), ("cores", r["cores"]), ("codec", ",".join(r["codec"])),
        ("load average at the end (other work on the machine)", r["load_average_1min"]),
        ("CPU per call (% of a core)", r["cpu_per_call_pct"]),
        ("gateway loop lag p50 / p99 (ms)", f'{r["gateway_loop_lag_ms_p50"]} / {r["gateway_loop_lag_ms_p99"]}'),
        ("baseline: direct RTP one-way (ms)", r["baseline_direct_ms"]),
        ("added caller→browser p50 / p95 (ms)", f'{r["caller_to_browser_ms_p50"]} / {r["caller_to_browser_ms_p95"]}'),
        ("added browser→caller p50 / p95 (ms)", f'{r["browser_to_caller_ms_p50"]} / {r["browser_to_caller_ms_p95"]}'),
        ("bursts measured (→browser, →caller)", r["bursts_measured"]),
        ("RTP lost caller→gateway / gateway→caller",
         f'{r["rtp_lost_caller_to_gateway"]} / {r["rtp_lost_gateway_to_caller"]}'),
        ("frames dropped by the bridge: overflow / trimmed",
         f'{r["bridge_overflow_frames"]} / {r["bridge_trimmed_frames"]}'),
        ("stand-in browsers' process CPU (% of a core)", r["browsers_process_cpu_pct"]),
        ("WebRTC packets lost (server / browser)", f'{r["webrtc_packets_lost"]} / {r["webrtc_remote_packets_lost"]}'),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(json.dumps({"benchmark": "webrtc_agents", **r}))


if __name__ == "__main__":
    main()
