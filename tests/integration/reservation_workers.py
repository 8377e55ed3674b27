"""Real OS processes racing for reservations: used by the concurrency tests and the benchmark.

Each worker builds its own engine from a URL (nothing crosses the process boundary but plain
data) and waits on a barrier so every process starts racing at the same moment.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from callcentre.db.models import Agent, Call, QueueEntry, Reservation
from callcentre.db.session import make_engine, make_session_factory
from callcentre.domain.agent_state import AgentState
from routing import reservations

POLICY = reservations.ReservationPolicy(ring_seconds=60, max_consecutive_misses=3)


def seed(url: str, *, agents: int, calls: int, queue: str = "general") -> tuple[list[int], list[str]]:
    """``agents`` available agents and ``calls`` waiting calls; returns their ids."""
    engine = make_engine(url)
    factory = make_session_factory(engine)
    now = datetime.now(UTC)
    with factory() as session:
        agent_rows = [
            Agent(login=f"race{i:05d}", name=f"Race {i}", password_hash="-", state=AgentState.AVAILABLE.value)
            for i in range(agents)
        ]
        session.add_all(agent_rows)
        call_ids = [f"call-race{i:06d}" for i in range(calls)]
        session.add_all(Call(id=c, state="queued") for c in call_ids)
        session.flush()
        for c in call_ids:
            reservations.enqueue(session, c, queue, now=now)
        session.commit()
        agent_ids = [a.id for a in agent_rows]
    engine.dispose()
    return agent_ids, call_ids


@dataclass
class WorkerResult:
    offers: list[tuple[str, int]]
    """(call_id, agent_id) for every reservation this process believes it won."""
    attempts: int
    conflicts: int
    errors: int
    seconds: float


def _ids(session: Session) -> tuple[list[str], list[int]]:
    calls = list(session.scalars(select(QueueEntry.call_id).where(QueueEntry.status == "waiting")))
    agents = list(session.scalars(select(Agent.id).where(Agent.state == AgentState.AVAILABLE.value)))
    return calls, agents


def naive_reserve(session: Session, call_id: str, agent_id: int, now: datetime) -> bool:
    """The BASELINE: read the states, then write. Between the read and the write another process can
    do the same, so one agent can get two calls. Kept only to show the real check matters."""
    agent_state = session.execute(text("SELECT state FROM agents WHERE id = :a"), {"a": agent_id}).scalar()
    entry_status = session.execute(text("SELECT status FROM queue_entries WHERE call_id = :c"), {"c": call_id}).scalar()
    if agent_state != AgentState.AVAILABLE.value or entry_status != "waiting":
        return False
    session.execute(update(Agent).where(Agent.id == agent_id).values(state=AgentState.RINGING.value))
    session.execute(update(QueueEntry).where(QueueEntry.call_id == call_id).values(status="offered"))
    # No live-slot columns: the UNIQUE safety net is deliberately bypassed.
    session.add(Reservation(call_id=call_id, agent_id=agent_id, status="active", expires_at=now))
    return True


def race(
    url: str,
    barrier: Any,
    mode: str,
    seed_value: int,
    max_seconds: float,
    cycle: bool,
    max_reservations: int,
    batch: int = 20,
    contend: bool = False,
) -> WorkerResult:
    """Behave like a router process: read a snapshot of waiting calls and available agents, pair up to
    ``batch`` of them at random, reserve each pair in its own transaction; with ``cycle`` the agent
    then answers and becomes free again. Stops when nothing is left, time is up, or it has won
    ``max_reservations``.

    With ``contend`` every process reads its first snapshot *before* the start barrier and pairs it
    the same way, so all of them go for the same pairs whatever the scheduler does: each pair is
    tried by every process and only the atomic check decides who wins."""
    rng = random.Random(0 if contend else seed_value)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    offers: list[tuple[str, int]] = []
    attempts = conflicts = errors = 0
    first: tuple[list[str], list[int]] | None = None
    if contend:
        with factory() as session:
            first = _ids(session)
            session.rollback()
        first[0].sort()
        first[1].sort()
    barrier.wait(timeout=60)
    start = time.perf_counter()
    try:
        while time.perf_counter() - start < max_seconds and len(offers) < max_reservations:
            if first is not None:
                (calls, agents), first = first, None
            else:
                with factory() as session:
                    calls, agents = _ids(session)
                    session.rollback()
            if not calls or not agents:
                if cycle and calls:
                    time.sleep(0.001)
                    continue
                break
            rng.shuffle(calls)
            rng.shuffle(agents)
            pairs = list(zip(calls, agents))[:batch]
            if mode == "batched":  # the whole round in one transaction (reserve_many)
                attempts += len(pairs)
                try:
                    with factory() as session:
                        results = reservations.reserve_many(
                            session, [(c, a, None) for c, a in pairs], now=datetime.now(UTC), policy=POLICY
                        )
                        session.commit()
                except Exception:  # counted, not hidden (e.g. a deadlock if misused on PostgreSQL)
                    errors += 1
                    continue
                for (call_id, agent_id), offer in zip(pairs, results):
                    if offer is None:
                        conflicts += 1
                    else:
                        offers.append((call_id, agent_id))
                continue
            for call_id, agent_id in pairs:
                attempts += 1
                now = datetime.now(UTC)
                try:
                    with factory() as session:
                        if mode == "naive":
                            won = naive_reserve(session, call_id, agent_id, now)
                        else:
                            won = (
                                reservations.reserve(session, call_id, agent_id, now=now, policy=POLICY, owner="race")
                                is not None
                            )
                        session.commit()
                except Exception:  # a lost race on the naive path may hit a lock; counted, not hidden
                    errors += 1
                    continue
                if not won:
                    conflicts += 1
                    continue
                offers.append((call_id, agent_id))
                if cycle:
                    with factory() as session:
                        now = datetime.now(UTC)
                        segment = reservations.answered(session, call_id, agent_id, now=now)
                        assert segment is not None
                        reservations.finish(session, call_id, now=now)
                        session.execute(
                            update(Agent).where(Agent.id == agent_id).values(state=AgentState.AVAILABLE.value)
                        )
                        session.commit()
    finally:
        engine.dispose()
    return WorkerResult(offers, attempts, conflicts, errors, time.perf_counter() - start)


def _entry(
    url: str,
    barrier: Any,
    results: Any,
    index: int,
    mode: str,
    max_seconds: float,
    cycle: bool,
    max_reservations: int,
    batch: int,
    contend: bool,
) -> None:
    try:
        result = race(url, barrier, mode, 1000 + index, max_seconds, cycle, max_reservations, batch, contend)
        results.put((index, result))
    except BaseException as exc:
        results.put((index, repr(exc)))
        raise


def run_race(
    url: str,
    *,
    processes: int,
    mode: str = "atomic",
    max_seconds: float = 30.0,
    cycle: bool = False,
    max_reservations: int = 10**9,
    batch: int = 20,
    contend: bool = False,
) -> list[WorkerResult]:
    """Start ``processes`` real processes racing on ``url``; return what each one won."""
    import multiprocessing

    # forkserver: workers fork from one clean server process that imported this module once, so each
    # race starts in milliseconds instead of re-importing SQLAlchemy per process (spawn), and nothing
    # of the test process (threads, open connections) is inherited (fork).
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    workers = [
        ctx.Process(
            target=_entry,
            args=(url, barrier, results, i, mode, max_seconds, cycle, max_reservations, batch, contend),
            daemon=True,
        )
        for i in range(processes)
    ]
    for w in workers:
        w.start()
    out: dict[int, WorkerResult] = {}
    try:
        for _ in workers:
            index, result = results.get(timeout=max_seconds + 120)
            if not isinstance(result, WorkerResult):
                raise RuntimeError(f"worker {index} failed: {result}")
            out[index] = result
    finally:
        for w in workers:
            w.join(timeout=10)
            if w.is_alive():
                w.kill()
                w.join()
    return [out[i] for i in sorted(out)]
