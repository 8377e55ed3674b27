"""Transcription speed: real-time factor, throughput with 1 and 2 workers, memory, hang-up → transcript.

Audio: a synthetic Korean telephone conversation (espeak-ng sentences, 8 kHz, stereo: the caller on
the left, the agent on the right, taking turns). Each configuration runs in a fresh child process
(so its memory is its own) against its own SQLite database, through the real job queue and worker
pool with the real Vosk Korean model.

* **1 worker** is the baseline, measured in the same run; **2 workers** is the pool on both cores.
  Real-time factor (RTF) = processing time ÷ call duration; "× real time" is its inverse, aggregated
  over all jobs of the run (call seconds transcribed ÷ wall seconds).
* **Memory per worker**: the pool's threads share one model, so the process's peak RSS is reported
  with the share per worker and the extra cost of the second worker.
* **Hang-up → transcript**: idle workers (polling every second); a 5-minute call hangs up (its
  recording row and job are written, as the recording service does), and the clock runs until the
  transcript row exists.

Targets (2 cores, Korean model): ≥ 3× real time aggregate; transcript ≤ 60 s after a 5-minute call.

Run: ``python benchmarks/transcription.py`` (``--quick``: shorter calls, fewer jobs). Prints a
table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CALLER_LINES = [
    "안녕하세요 지난달 요금이 너무 많이 나와서 전화했습니다",
    "인터넷이 자꾸 끊어지고 속도가 느립니다",
    "네 그럼 언제쯤 기사님이 방문하실 수 있나요",
    "알겠습니다 감사합니다",
]
AGENT_LINES = [
    "네 고객님 확인해 드리겠습니다 잠시만 기다려 주세요",
    "요금 내역을 보니 부가 서비스 요금이 추가되어 있습니다",
    "내일 오후에 기사님이 방문하실 수 있도록 예약해 드렸습니다",
    "더 궁금하신 점 있으시면 언제든지 연락 주세요",
]


def _speak(text: str, path: Path) -> bytes:
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", "ko", "-s", "150", "-w", str(raw), text], check=True, timeout=60)
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", "-b", "16", str(path)], check=True, timeout=60)
    with wave.open(str(path), "rb") as wav:
        return wav.readframes(wav.getnframes())


def make_call(path: Path, seconds: float, workdir: Path) -> Path:
    """A stereo conversation of ``seconds``: caller and agent take turns with short pauses."""
    from recordings.storage import audioop

    caller = [_speak(t, workdir / f"c{n}.wav") for n, t in enumerate(CALLER_LINES)]
    agent = [_speak(t, workdir / f"a{n}.wav") for n, t in enumerate(AGENT_LINES)]
    gap = bytes(int(0.6 * 8000) * 2)
    left, right = bytearray(), bytearray()
    turn = 0
    while len(left) < seconds * 8000 * 2:
        c, a = caller[turn % len(caller)], agent[turn % len(agent)]
        left += c + gap + bytes(len(a)) + gap
        right += bytes(len(c)) + gap + a + gap
        turn += 1
    n = int(seconds * 8000) * 2
    stereo = audioop.add(audioop.tostereo(bytes(left[:n]), 2, 1, 0), audioop.tostereo(bytes(right[:n]), 2, 0, 1), 2)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(stereo)
    return path


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _setup_db(db: Path) -> Any:
    from callcentre.db.migrate import upgrade
    from callcentre.db.session import make_engine, make_session_factory

    engine = make_engine(f"sqlite:///{db}")
    upgrade(engine)
    return make_session_factory(engine)


def _add_call(session: Any, call_id: str) -> None:
    from callcentre.db.models import Call

    session.add(Call(id=call_id, caller_id="", dialled_number="1000"))
    session.flush()


def child_throughput(workers: int, call: Path, jobs: int, db: Path) -> dict[str, Any]:
    from callcentre.db.models import Recording
    from callcentre.settings import TranscriptionSettings
    from recordings import jobs as job_queue
    from recordings.transcription import VoskTranscriber, read_wav_channels
    from recordings.worker import WorkerOptions, WorkerPool

    factory = _setup_db(db)
    base = _rss_mb()
    started = time.monotonic()
    transcriber = VoskTranscriber.from_settings(TranscriptionSettings())
    load_s = time.monotonic() - started
    model_mb = _rss_mb() - base
    duration = read_wav_channels(call)[2]
    with factory() as session:
        for n in range(jobs):
            _add_call(session, f"call-bench{n:04d}")
            rec = Recording(call_id=f"call-bench{n:04d}", path=str(call), duration_seconds=duration)
            session.add(rec)
            session.flush()
            job_queue.enqueue(session, rec)
        session.commit()
    pool = WorkerPool(factory, transcriber, WorkerOptions(workers=workers, exit_when_idle=True, poll_seconds=0.2))
    t0 = time.monotonic()
    cpu0 = sum(os.times()[:2])
    stats = pool.run()
    wall = time.monotonic() - t0
    cpu = sum(os.times()[:2]) - cpu0
    return {"workers": workers, "jobs": stats.done, "call_seconds": duration, "audio_seconds": stats.audio_seconds,
            "wall_seconds": wall, "cpu_seconds": cpu, "x_realtime": stats.audio_seconds / wall,
            "rtf_per_job": stats.busy_seconds / max(stats.audio_seconds, 1e-9),
            "model_load_seconds": load_s, "model_rss_mb": model_mb, "peak_rss_mb": _peak_mb()}


def child_latency(call: Path, db: Path, workdir: Path) -> dict[str, Any]:
    """Idle worker pool; a call hangs up; how long until its transcript is stored."""
    from sqlalchemy import func, select

    from callcentre.db.models import Transcript
    from callcentre.settings import TranscriptionSettings
    from recordings.service import RecordingService
    from recordings.transcription import VoskTranscriber
    from recordings.worker import WorkerOptions, WorkerPool

    factory = _setup_db(db)
    transcriber = VoskTranscriber.from_settings(TranscriptionSettings())
    pool = WorkerPool(factory, transcriber, WorkerOptions(workers=2, poll_seconds=1.0))
    pool.start()
    time.sleep(2.0)  # workers idle, polling
    service = RecordingService(workdir / "recordings", factory)
    with factory() as session:
        _add_call(session, "call-latency")
        session.commit()
    # The call: the recording is written while it lasts (fed here as fast as it can be).
    service.start_part("call-latency", "conversation")
    with wave.open(str(call), "rb") as wav:
        frames = wav.readframes(wav.getnframes())
    from recordings.storage import audioop

    left, right = audioop.tomono(frames, 2, 1, 0), audioop.tomono(frames, 2, 0, 1)
    for i in range(0, len(left), 320):
        service.feed("call-latency", "caller", left[i:i + 320])
        service.feed("call-latency", "agent", right[i:i + 320])
    hung_up = time.monotonic()
    cpu0 = sum(os.times()[:2])
    service.finish("call-latency")
    deadline = hung_up + 600
    while time.monotonic() < deadline:
        with factory() as session:
            if session.scalar(select(func.count()).select_from(Transcript)):
                break
        time.sleep(0.1)
    latency = time.monotonic() - hung_up
    cpu = sum(os.times()[:2]) - cpu0
    pool.stop()
    pool.join(30)
    return {"hangup_to_transcript_seconds": latency, "cpu_seconds": cpu}


def _run_child(args: list[str]) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                         timeout=1800, check=False)
    if out.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="60 s calls, 2 jobs per configuration")
    parser.add_argument("--latency-only", action="store_true", help="only the hang-up → transcript measurement")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        kind, *rest = args.child
        if kind == "throughput":
            result = child_throughput(int(rest[0]), Path(rest[1]), int(rest[2]), Path(rest[3]))
        else:
            result = child_latency(Path(rest[0]), Path(rest[1]), Path(rest[2]))
        print(json.dumps(result))
        return

    job_seconds, jobs, latency_seconds = (60.0, 2, 60.0) if args.quick else (120.0, 4, 300.0)
    with tempfile.TemporaryDirectory(prefix="bench-transcription-") as tmp:
        work = Path(tmp)
        job_call = make_call(work / "job.wav", job_seconds, work)
        long_call = make_call(work / "long.wav", latency_seconds, work) if latency_seconds != job_seconds else job_call
        results = {}
        for workers in () if args.latency_only else (1, 2):
            results[workers] = _run_child(["throughput", str(workers), str(job_call), str(jobs),
                                           str(work / f"t{workers}.db")])
        latency = _run_child(["latency", str(long_call), str(work / "lat.db"), str(work)])
    if args.latency_only:
        print(f"hang-up → transcript for a {latency_seconds:.0f} s call, idle workers: "
              f"{latency['hangup_to_transcript_seconds']:.1f} s wall, {latency['cpu_seconds']:.1f} s CPU")
        print(json.dumps({"benchmark": "transcription-latency", "cores": os.cpu_count(),
                          "latency_call_seconds": latency_seconds,
                          "hangup_to_transcript_seconds": round(latency["hangup_to_transcript_seconds"], 2),
                          "cpu_seconds": round(latency["cpu_seconds"], 2)}))
        return

    one, two = results[1], results[2]
    print(f"transcription benchmark: {os.cpu_count()} cores, Korean model, {jobs} jobs of {job_seconds:.0f} s "
          f"stereo calls per configuration{' (quick)' if args.quick else ''}")
    print(f"{'configuration':<22}{'x real time':>12}{'RTF/job':>10}{'wall s':>9}{'cpu s':>8}{'x RT/cpu-s':>11}"
          f"{'peak RSS MB':>13}{'MB/worker':>11}")
    for label, r in (("1 worker (baseline)", one), ("2 workers", two)):
        print(f"{label:<22}{r['x_realtime']:>12.2f}{r['rtf_per_job']:>10.3f}{r['wall_seconds']:>9.1f}"
              f"{r['cpu_seconds']:>8.1f}{r['audio_seconds'] / max(r['cpu_seconds'], 1e-9):>11.2f}"
              f"{r['peak_rss_mb']:>13.0f}{r['peak_rss_mb'] / r['workers']:>11.0f}")
    print("(x RT/cpu-s = call seconds per CPU second: the figure least disturbed by other load on the machine)")
    print(f"model load {one['model_load_seconds']:.1f} s, model RSS {one['model_rss_mb']:.0f} MB; "
          f"second worker adds {two['peak_rss_mb'] - one['peak_rss_mb']:.0f} MB")
    print(f"2 workers vs baseline: {two['x_realtime'] / one['x_realtime']:.2f}x throughput")
    print(f"hang-up → transcript for a {latency_seconds:.0f} s call, idle workers: "
          f"{latency['hangup_to_transcript_seconds']:.1f} s wall, {latency['cpu_seconds']:.1f} s CPU "
          "(target ≤ 60 s for 300 s)")
    print(json.dumps({
        "benchmark": "transcription", "quick": args.quick, "cores": os.cpu_count(),
        "job_call_seconds": job_seconds, "jobs": jobs,
        "baseline_1_worker": {k: round(v, 3) if isinstance(v, float) else v for k, v in one.items()},
        "workers_2": {k: round(v, 3) if isinstance(v, float) else v for k, v in two.items()},
        "speedup_2_vs_1": round(two["x_realtime"] / one["x_realtime"], 3),
        "latency_call_seconds": latency_seconds,
        "hangup_to_transcript_seconds": round(latency["hangup_to_transcript_seconds"], 2),
        "hangup_to_transcript_cpu_seconds": round(latency["cpu_seconds"], 2),
        "targets": {"x_realtime_aggregate": 3.0, "hangup_to_transcript_seconds_for_300s": 60.0},
    }))


if __name__ == "__main__":
    main()
