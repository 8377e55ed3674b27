"""The transcription worker pool: N threads in one process sharing one Vosk model.

Threads, not processes, because the model is the expensive part (≈0.5 GB resident): Vosk's decoding
runs in C with the GIL released, so two threads use two cores while holding one model. Run more
``transcribe-worker`` processes (on this or another machine) for more capacity: jobs are leased in
the database, so any number of pools can share one queue.

Each job's lease is renewed by a heartbeat while the job runs; a pool killed mid-job leaves its jobs
``running`` until the lease expires, then they are claimed again (see :mod:`recordings.jobs`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from recordings import jobs
from recordings.transcription import Transcriber

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerOptions:
    workers: int = 1
    lease_seconds: float = 60.0
    """A dead worker's job is claimed again this long after its last heartbeat."""
    poll_seconds: float = 1.0
    """Sleep when the queue is empty."""
    backoff_base_seconds: float = jobs.BACKOFF_BASE_SECONDS
    exit_when_idle: bool = False
    """Stop once no job is claimable (batch runs, tests, benchmarks)."""
    max_jobs: int | None = None
    """Stop each thread after this many jobs (bounded runs)."""


@dataclass
class WorkerStats:
    done: int = 0
    failed_attempts: int = 0
    lost_leases: int = 0
    audio_seconds: float = 0.0
    busy_seconds: float = 0.0


class WorkerPool:
    def __init__(self, factory: sessionmaker[Session], transcriber: Transcriber,
                 options: WorkerOptions | None = None,
                 on_done: Callable[[jobs.Lease, int], None] | None = None) -> None:
        self.factory = factory
        self.transcriber = transcriber
        self.options = options or WorkerOptions()
        self.on_done = on_done
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for n in range(max(1, self.options.workers)):
            thread = threading.Thread(target=self._loop, name=f"transcribe-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)

    def run(self) -> WorkerStats:
        """Start, then block until stopped (or idle / max_jobs when so configured)."""
        self.start()
        try:
            while any(t.is_alive() for t in self._threads):
                self.join(0.5)
        except KeyboardInterrupt:
            self.stop()
            self.join()
        return self.stats

    def _loop(self) -> None:
        handled = 0
        while not self._stop.is_set():
            if self.options.max_jobs is not None and handled >= self.options.max_jobs:
                return
            lease = jobs.claim(self.factory, lease_seconds=self.options.lease_seconds)
            if lease is None:
                if self.options.exit_when_idle:
                    return
                self._stop.wait(self.options.poll_seconds)
                continue
            handled += 1
            self.run_one(lease)

    def run_one(self, lease: jobs.Lease) -> None:
        log.info("transcribing job %s (recording %s, attempt %s)", lease.job_id, lease.recording_id,
                 lease.attempt)
        heartbeat_stop = threading.Event()
        lost = threading.Event()
        heartbeat = threading.Thread(target=self._heartbeat, args=(lease, heartbeat_stop, lost), daemon=True)
        heartbeat.start()
        started = time.monotonic()
        try:
            result = self.transcriber.transcribe(lease.path)
            elapsed = time.monotonic() - started
            transcript_id = jobs.complete(self.factory, lease, result, elapsed)
        except Exception as exc:
            elapsed = time.monotonic() - started
            state = jobs.fail(self.factory, lease, exc, base_backoff=self.options.backoff_base_seconds)
            log.warning("job %s attempt %s failed (%s); now %s", lease.job_id, lease.attempt,
                        type(exc).__name__, state)
            with self._lock:
                self.stats.failed_attempts += 1
                self.stats.busy_seconds += elapsed
            return
        finally:
            heartbeat_stop.set()
            heartbeat.join()
        with self._lock:
            self.stats.busy_seconds += elapsed
            if transcript_id is None:
                self.stats.lost_leases += 1
            else:
                self.stats.done += 1
                self.stats.audio_seconds += result.duration_seconds
        if transcript_id is None:
            log.warning("job %s: lease lost before finishing; result discarded", lease.job_id)
        else:
            log.info("job %s done: transcript %s", lease.job_id, transcript_id)
            if self.on_done is not None:
                self.on_done(lease, transcript_id)

    def _heartbeat(self, lease: jobs.Lease, stop: threading.Event, lost: threading.Event) -> None:
        interval = max(0.2, self.options.lease_seconds / 3)
        while not stop.wait(interval):
            try:
                if not jobs.renew(self.factory, lease, self.options.lease_seconds):
                    lost.set()
                    return
            except Exception:  # a busy database must not kill the heartbeat thread
                log.warning("job %s: lease renewal failed; will retry", lease.job_id)
