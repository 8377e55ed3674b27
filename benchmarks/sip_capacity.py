"""SIP endpoint capacity: concurrent IVR calls from sipp, ours vs stock pyVoIP 1.6.8, same run.

Each call (``tests/fixtures/sipp/ivr_capacity.xml``): INVITE (timed to the 200 OK), listen to the
prompt, press 2 with the RFC 2833 pcap sip-tester ships, hold (30 s; ``--quick``: 8 s), BYE.
sipp ramps the calls at ``--rate`` calls/s up to ``--calls`` concurrent.

Stacks, each in its own process, registered to the same Debian kamailio (registrar + proxy):

* **ours**: the platform ``callcentre serve`` builds (``telephony.sip.SipBackend`` + IvrService with
  the default flow on a SQLite file): a known caller is identified, presses 2, is queued and hears
  hold music.
* **stock** (baseline): pyVoIP 1.6.8's ``VoIPPhone`` as its docs show it: answer, ``write_audio``
  the same prompt, poll ``get_dtmf``, then write hold music until the caller hangs up. Stock only
  works behind a registrar (it answers to the registrar's address; DESIGN.md §5), hence kamailio
  for both.

A third row, **floor**, is our media engine alone in its own process (no SIP, no IVR, no database)
sending the same number of streams: the RTP jitter this machine allows at that moment, so a high
p99 can be told apart from a slow endpoint. RTP arrival times are kernel timestamps
(``SO_TIMESTAMPNS``), so the measuring process's own scheduling does not count. The 1-minute load
average is printed next to every row.

Measured per stack: completed / failed calls (sipp), INVITE→200 OK p50/p99 (sipp RTD), RTP
send-interval p50/p99/max at the receiver (a sink process; 1 call in 5 sends its RTP there, the
rest to a discard port), CPU of the endpoint process per concurrent call (/proc), and its RSS
growth per call-minute over the plateau. Targets (2 cores): ≥ 200 concurrent calls with zero
failures, RTP send-interval p99 ≤ 5 ms, memory ≤ 1 MB per call-hour, INVITE→200 p99 ≤ 100 ms.

Run: ``python benchmarks/sip_capacity.py`` (``--quick``: 40 calls, 8 s hold). Prints a table and
one JSON line. The machine may be shared: numbers are noisy, the baseline runs in the same window.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CALLER = "5551234"
NUMBER = "1000"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


# ---- the stacks under test (run as child processes) -------------------------------------------
def serve_ours(registrar: str, sip_port: int, db_url: str, rtp_low: int, rtp_high: int) -> None:
    from callcentre.bootstrap import build_platform, prompts_dir
    from callcentre.db.models import Customer, CustomerPhone
    from callcentre.settings import load_settings
    from telephony.sip import SipBackend

    settings = load_settings(env={}).replace("database", url=db_url).replace(
        "sip", host="127.0.0.1", port=sip_port, mode="registered", registrar=registrar, username=NUMBER,
        numbers=NUMBER, rtp_port_low=rtp_low, rtp_port_high=rtp_high)
    backend = SipBackend(settings.sip, prompts_dir(settings))
    platform = build_platform(settings, backend)
    with platform.session_factory() as session:
        customer = Customer(name="Bench Caller", account_number="999999")
        customer.phones.append(CustomerPhone(number=CALLER))
        session.add(customer)
        session.commit()
    platform.start()
    if not backend.registered.wait(10):
        print("NOT REGISTERED", flush=True)
        return
    print("READY", flush=True)
    try:
        sys.stdin.read()  # parent closes stdin to stop us
    finally:
        platform.stop()


def serve_stock(registrar: str, sip_port: int, prompt: str, rtp_low: int, rtp_high: int) -> None:
    import pyVoIP.VoIP as voip  # import before pyVoIP.SIP (1.6.8 circular import)

    from telephony.audio import linear16_to_pyvoip8, read_wav_linear16, tone_linear16

    prompt8 = linear16_to_pyvoip8(read_wav_linear16(prompt))
    music8 = linear16_to_pyvoip8(tone_linear16((440.0, 660.0), 1.0, 0.12))
    host, port = registrar.split(":")

    def on_call(call: Any) -> None:
        try:
            call.answer()
            call.write_audio(prompt8)
            deadline = time.monotonic() + 10
            while call.state == voip.CallState.ANSWERED and time.monotonic() < deadline:
                if call.get_dtmf():
                    break
                time.sleep(0.05)
            while call.state == voip.CallState.ANSWERED:
                call.write_audio(music8)
                time.sleep(1.0)
        except Exception as exc:  # a stock failure is a result, not a benchmark crash
            print(f"stock call failed: {type(exc).__name__}", file=sys.stderr, flush=True)

    phone = voip.VoIPPhone(host, int(port), NUMBER, "", myIP="127.0.0.1", callCallback=on_call,
                           sipPort=sip_port, rtpPortLow=rtp_low, rtpPortHigh=rtp_high)
    phone.start()
    time.sleep(1.5)
    print("READY", flush=True)
    try:
        sys.stdin.read()
    finally:
        phone.stop()


def serve_floor(sessions: int, seconds: float) -> None:
    """The machine's scheduling floor: our media engine alone (no SIP, no IVR), kernel-timestamped."""
    from telephony.audio import PCMU, EncodedClip
    from telephony.rtp_relay import MediaEngine

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sink.settimeout(0.5)
    engine = MediaEngine("127.0.0.1")
    engine.start()
    clip = EncodedClip("tone", PCMU, (b"\x01" * 160,) * 50)
    for _ in range(sessions):
        session = engine.open_session(PCMU, 101)
        session.set_remote("127.0.0.1", sink.getsockname()[1])
        session.set_background(clip)
    last: dict[bytes, float] = {}
    intervals: list[float] = []
    start = time.time()
    while time.time() - start < seconds:
        try:
            data, ancillary, _flags, _addr = sink.recvmsg(2048, 64)
        except TimeoutError:
            continue
        sec, nsec = struct.unpack("qq", ancillary[0][2][:16])
        now = sec + nsec / 1e9
        key = data[8:12]
        if key in last and now - start > 1.0:
            intervals.append((now - last[key]) * 1000)
        last[key] = now
    engine.stop()
    print(json.dumps({"p50_ms": pct(intervals, 0.5), "p99_ms": pct(intervals, 0.99),
                      "max_ms": round(max(intervals), 2) if intervals else float("nan"),
                      "intervals": len(intervals)}), flush=True)


def run_floor(sessions: int, seconds: float) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--serve", "floor", str(sessions), str(seconds)],
                         capture_output=True, text=True, timeout=seconds + 60, check=True)
    rtp = json.loads(out.stdout.strip().splitlines()[-1])
    return {"stack": "floor", "calls": sessions, "concurrent": sessions, "rate": 0, "hold_s": seconds,
            "sipp_rc": 0, "completed": "-", "failed": "-", "invite_200_p50_ms": "-", "invite_200_p99_ms": "-",
            "rtp": rtp, "plateau_cpu_pct": "-", "cpu_pct_per_call": "-", "mb_per_call_hour": "-",
            "loadavg_1m_after": round(os.getloadavg()[0], 2)}


# ---- measuring -----------------------------------------------------------------------------------
def rtp_sink(port_q: Any, stop: Any, result_q: Any) -> None:
    """Receives sampled calls' RTP; reports inter-arrival times per stream (after the first 2 s)."""
    measure = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    measure.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    measure.bind(("127.0.0.1", 0))
    discard = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    discard.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    discard.bind(("127.0.0.1", 0))
    port_q.put((measure.getsockname()[1], discard.getsockname()[1]))
    measure.settimeout(0.2)
    # Kernel receive timestamps: the sink's own scheduling delays do not count as sender jitter.
    measure.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    intervals: list[float] = []
    packets = 0
    while not stop.is_set():
        try:
            data, ancillary, _flags, _addr = measure.recvmsg(2048, 64)
        except TimeoutError:
            continue
        now = time.time()
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                sec, nsec = struct.unpack("qq", value[:16])
                now = sec + nsec / 1e9
        if len(data) < 12 or (data[1] & 0x7F) not in (0, 8):
            continue
        packets += 1
        ssrc = int.from_bytes(data[8:12], "big")
        start = first.setdefault(ssrc, now)
        prev = last.get(ssrc)
        last[ssrc] = now
        if prev is not None and now - start > 2.0 and len(intervals) < 2_000_000:
            intervals.append((now - prev) * 1000)
    intervals.sort()

    def pct(p: float) -> float:
        return round(intervals[min(len(intervals) - 1, int(p * len(intervals)))], 2) if intervals else float("nan")

    result_q.put({"streams": len(first), "packets": packets, "intervals": len(intervals),
                  "p50_ms": pct(0.50), "p99_ms": pct(0.99), "p999_ms": pct(0.999),
                  "max_ms": round(intervals[-1], 2) if intervals else float("nan")})


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_stack(stack: str, calls: int, rate: float, hold_s: float, sample_every: int, work: Path,
              kamailio: Any) -> dict[str, Any]:
    from tests.sipp import SippRun, render_scenario

    work.mkdir(parents=True, exist_ok=True)
    registrar = f"{kamailio.host}:{kamailio.port}"
    sip_port = free_udp_port()
    rtp_low = 20000 if stack == "ours" else 30000
    if stack == "ours":
        args = ["ours", registrar, str(sip_port), f"sqlite:///{work / 'bench.db'}", str(rtp_low), str(rtp_low + 4000)]
    else:
        prompt = str(ROOT / "ivr" / "prompts" / "main_menu.wav")
        args = ["stock", registrar, str(sip_port), prompt, str(rtp_low), str(rtp_low + 4000)]
    with open(work / f"{stack}.err", "wb") as errors:
        child = subprocess.Popen([sys.executable, __file__, "--serve", *args], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=errors, text=True, cwd=work)
    assert child.stdout is not None
    ready = child.stdout.readline().strip()
    if ready != "READY":
        child.kill()
        raise RuntimeError(f"{stack} endpoint did not start: {ready} {(work / f'{stack}.err').read_text()[-800:]}")

    port_q: Any = mp.Queue()
    result_q: Any = mp.Queue()
    stop = mp.Event()
    sink = mp.Process(target=rtp_sink, args=(port_q, stop, result_q), daemon=True)
    sink.start()
    measure_port, discard_port = port_q.get(timeout=10)
    inject = work / "media.csv"
    with inject.open("w") as handle:
        handle.write("SEQUENTIAL\n")
        for i in range(calls):
            handle.write(f"{measure_port if i % sample_every == 0 else discard_port};\n")

    scenario = render_scenario("ivr_capacity.xml", work, hold_ms=int(hold_s * 1000))
    sipp = SippRun(scenario, registrar, work, variables={"caller": CALLER}, service=NUMBER, calls=calls,
                   rate=rate, limit=calls, timeout_s=hold_s + 60,
                   extra=["-inf", str(inject), "-trace_rtt", "-rtt_freq", "1", "-fd", "1"])
    ramp_s = calls / rate
    call_s = hold_s + 1.7
    samples: list[tuple[float, float, float]] = []
    cpu0, t0 = proc_cpu_seconds(child.pid), time.monotonic()
    sipp.start()
    plateau = (t0 + ramp_s + 1.0, t0 + call_s - 0.5) if call_s > ramp_s + 2 else (t0 + ramp_s, t0 + ramp_s + 1)
    while sipp.proc is not None and sipp.proc.poll() is None:
        now = time.monotonic()
        samples.append((now - t0, proc_cpu_seconds(child.pid), proc_rss_mb(child.pid)))
        if now - t0 > ramp_s + call_s + 60:
            sipp.stop()
            break
        time.sleep(0.5)
    rc = sipp.proc.wait() if sipp.proc is not None else -1
    stop.set()
    rtp = result_q.get(timeout=30)
    sink.join(5)
    cpu_total = proc_cpu_seconds(child.pid) - cpu0
    if child.stdin is not None:
        child.stdin.close()
    try:
        child.wait(20)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(5)

    # plateau: every call is up (after the ramp, before the first hang-ups)
    window = [s for s in samples if plateau[0] - t0 <= s[0] <= plateau[1] - t0]
    concurrent_peak = min(calls, int(rate * call_s))
    if len(window) >= 2:
        span = window[-1][0] - window[0][0]
        cpu_pct = 100 * (window[-1][1] - window[0][1]) / span if span else float("nan")
        rss_growth = window[-1][2] - window[0][2]
        call_minutes = concurrent_peak * span / 60
        mb_per_call_minute = rss_growth / call_minutes if call_minutes else float("nan")
    else:
        cpu_pct = rss_growth = mb_per_call_minute = float("nan")
        span = 0.0
    load = os.getloadavg()
    stats = read_sipp_stats(work)
    rtd = read_rtt(work)
    return {
        "stack": stack, "calls": calls, "concurrent": concurrent_peak, "rate": rate, "hold_s": hold_s,
        "sipp_rc": rc, "completed": stats.get("SuccessfulCall(C)", -1), "failed": stats.get("FailedCall(C)", -1),
        "invite_200_p50_ms": pct(rtd, 0.5), "invite_200_p99_ms": pct(rtd, 0.99), "invite_200_n": len(rtd),
        "rtp": rtp, "cpu_total_s": round(cpu_total, 2),
        "plateau_s": round(span, 1), "plateau_cpu_pct": round(cpu_pct, 1),
        "cpu_pct_per_call": round(cpu_pct / concurrent_peak, 3) if concurrent_peak else float("nan"),
        "rss_start_mb": round(window[0][2], 1) if window else float("nan"),
        "rss_growth_mb": round(rss_growth, 2), "mb_per_call_minute": round(mb_per_call_minute, 4),
        "mb_per_call_hour": round(mb_per_call_minute * 60, 2),
        "loadavg_1m_after": round(load[0], 2),
    }


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 2)


def read_sipp_stats(work: Path) -> dict[str, int]:
    path = work / "sipp_stats.csv"
    if not path.exists():
        return {}
    rows = list(csv.reader(path.open(), delimiter=";"))
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    out: dict[str, int] = {}
    for key in ("SuccessfulCall(C)", "FailedCall(C)", "OutgoingCall(C)"):
        if key in header:
            try:
                out[key] = int(last[header.index(key)])
            except (ValueError, IndexError):
                pass
    return out


def read_rtt(work: Path) -> list[float]:
    values: list[float] = []
    for path in work.glob("*_rtt.csv"):
        for row in csv.reader(path.open(), delimiter=";"):
            if len(row) >= 2:
                try:
                    values.append(float(row[1]))
                except ValueError:
                    continue
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="40 calls, 8 s hold")
    parser.add_argument("--calls", type=int, nargs="*", help="concurrency levels to ramp through (default 100 200)")
    parser.add_argument("--rate", type=float, default=10.0, help="new calls per second (sipp -r)")
    parser.add_argument("--hold", type=float, default=30.0, help="hold seconds per call")
    parser.add_argument("--stacks", nargs="*", default=["ours", "stock"])
    parser.add_argument("--no-floor", action="store_true", help="skip the media-only scheduling floor row")
    parser.add_argument("--sample-every", type=int, default=5, help="1 call in N sends RTP to the measuring sink")
    parser.add_argument("--keep", help="keep the work directories (sipp logs) under this path")
    parser.add_argument("--serve", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        kind, *rest = args.serve
        if kind == "floor":
            serve_floor(int(rest[0]), float(rest[1]))
        elif kind == "ours":
            serve_ours(rest[0], int(rest[1]), rest[2], int(rest[3]), int(rest[4]))
        else:
            serve_stock(rest[0], int(rest[1]), rest[2], int(rest[3]), int(rest[4]))
        return

    from tests.kamailio import start_kamailio

    levels = args.calls or ([40] if args.quick else [100, 200])
    hold = 8.0 if args.quick else args.hold
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sip_capacity_", dir=args.keep) as tmp_name:
        tmp = tempfile.mkdtemp(prefix="run_", dir=args.keep) if args.keep else tmp_name
        kamailio = start_kamailio(Path(tmp) / "kamailio", default_expires=3600)
        try:
            for level in levels:
                for stack in args.stacks:
                    rate = min(args.rate, level / 2)
                    print(f"… {stack}: {level} calls at {rate}/s, {hold:.0f} s hold", file=sys.stderr, flush=True)
                    result = run_stack(stack, level, rate, hold, args.sample_every,
                                       Path(tmp) / f"{stack}-{level}", kamailio)
                    results.append(result)
                    time.sleep(2)
                if args.no_floor:
                    continue
                print(f"… floor: media engine alone, {level} streams", file=sys.stderr, flush=True)
                results.append(run_floor(level, 8.0 if args.quick else 15.0))
        finally:
            kamailio.stop()
    print_table(results)
    print(json.dumps({"benchmark": "sip_capacity", "cores": os.cpu_count(), "quick": args.quick,
                      "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": results}))


def print_table(results: list[dict[str, Any]]) -> None:
    cols = [("stack", "stack"), ("loadavg_1m_after", "load"), ("concurrent", "conc"), ("completed", "ok"),
            ("failed", "fail"),
            ("invite_200_p50_ms", "inv→200 p50"), ("invite_200_p99_ms", "p99 ms"),
            ("rtp_p50", "rtp p50"), ("rtp_p99", "rtp p99"), ("rtp_max", "rtp max"),
            ("plateau_cpu_pct", "cpu %"), ("cpu_pct_per_call", "cpu %/call"), ("mb_per_call_hour", "MB/call-h")]
    rows = []
    for r in results:
        row = dict(r, rtp_p50=r["rtp"]["p50_ms"], rtp_p99=r["rtp"]["p99_ms"], rtp_max=r["rtp"]["max_ms"])
        rows.append([str(row[k]) for k, _ in cols])
    widths = [max(len(h), *(len(x[i]) for x in rows)) for i, (_, h) in enumerate(cols)]
    print("  ".join(h.rjust(w) for (_, h), w in zip(cols, widths)))
    for x in rows:
        print("  ".join(v.rjust(w) for v, w in zip(x, widths)))


if __name__ == "__main__":
    main()
