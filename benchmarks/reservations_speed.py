"""Reservations per second with several real router processes, and double assignments (must be 0).

Scenarios, all in the same run:

* ``one-round``: A available agents, 2A waiting calls; P processes each read a snapshot, pair calls
  with agents at random and reserve pair by pair (one transaction each) until no agent is left.
  Every process races every other for the same agents, so this is the worst case for conflicts.
* ``cycle``: like a live centre: each won offer is answered and the agent becomes free again
  (3 transactions per call), until N calls are served.
* ``round per transaction``: the one-round race, but each process reserves its whole round (up to
  100 pairs) in ONE transaction with ``reserve_many`` — SQLite only, where every transaction queues
  for the single write lock.
* ``naive`` BASELINE: the same one-round race with read-then-write reservations (no conditional
  UPDATE, no UNIQUE live slot). It is faster and it DOES double-assign: that is what the check buys.

SQLite runs on a WAL file in a temporary directory; PostgreSQL is a real temporary Debian server
(``tests/pg.py``, durable settings: fsync on) unless ``--no-postgres`` or it is not installed.

    python benchmarks/reservations_speed.py [--quick] [--processes 4] [--no-postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ helpers live beside benchmarks/

from callcentre.db.migrate import upgrade  # noqa: E402
from callcentre.db.session import make_engine  # noqa: E402
from tests.integration.reservation_workers import run_race, seed  # noqa: E402
from tests.pg import PostgresServer, create_database, drop_database, find_pg_bin  # noqa: E402


def _fresh(url: str) -> None:
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()


BATCH = 100
"""Reservations a process attempts per snapshot: one ``Router.assign`` round returns a batch like this."""


def _scenario(
    url: str, name: str, *, processes: int, agents: int, calls: int, mode: str, cycle: bool, target: int
) -> dict[str, Any]:
    _fresh(url)
    seed(url, agents=agents, calls=calls)
    started = time.perf_counter()
    results = run_race(
        url,
        processes=processes,
        mode=mode,
        cycle=cycle,
        max_seconds=120,
        max_reservations=(target // processes + 1) if cycle else 10**9,
        batch=BATCH,
    )
    wall = time.perf_counter() - started
    offers = [o for r in results for o in r.offers]
    per_agent = Counter(a for _c, a in offers)
    per_call = Counter(c for c, _a in offers)
    # One round: an agent winning twice is a double assignment. Cycles: agents legitimately serve
    # many calls, so only a call won twice counts (a call offered to two agents at once).
    agent_doubles = 0 if cycle else sum(n - 1 for n in per_agent.values() if n > 1)
    call_doubles = sum(n - 1 for n in per_call.values() if n > 1)
    busy = max(r.seconds for r in results)
    return {
        "scenario": name,
        "mode": mode,
        "processes": processes,
        "agents": agents,
        "calls": calls,
        "reservations": len(offers),
        "attempts": sum(r.attempts for r in results),
        "conflicts": sum(r.conflicts for r in results),
        "errors": sum(r.errors for r in results),
        "seconds": round(busy, 3),
        "wall_seconds_incl_process_start": round(wall, 3),
        "reservations_per_s": round(len(offers) / busy, 1) if busy else 0.0,
        "double_assignments": agent_doubles + call_doubles,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    p = args.processes
    agents, served = (200, 300) if args.quick else (1000, 2000)

    def suite(url_for: Any, db: str) -> list[dict[str, Any]]:
        out = []
        for name, mode, cycle, n_agents, n_calls, procs in [
            ("naive baseline (one round)", "naive", False, agents, 2 * agents, p),
            ("atomic, 1 process (reference)", "atomic", False, agents, 2 * agents, 1),
            ("atomic (one round)", "atomic", False, agents, 2 * agents, p),
            ("atomic, round per transaction", "batched", False, agents, 2 * agents, p),
            ("atomic (offer+answer+free cycle)", "atomic", True, max(8, agents // 20), served, p),
        ]:
            if mode == "batched" and db != "sqlite":
                continue  # documented as SQLite-only: overlapping batches can deadlock on PostgreSQL
            url = url_for()
            row = _scenario(
                url,
                name,
                processes=procs,
                agents=n_agents,
                calls=n_calls,
                mode=mode,
                cycle=cycle,
                target=served,
            )
            row["database"] = db
            out.append(row)
        return out

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cc-bench-") as tmp:
        counter = iter(range(1000))
        rows += suite(lambda: f"sqlite:///{tmp}/bench{next(counter)}.db", "sqlite")
    pg_note = "skipped (--no-postgres)"
    if not args.no_postgres:
        if find_pg_bin("initdb") is None:
            pg_note = "skipped: PostgreSQL is not installed"
        else:
            with PostgresServer(durable=True) as server:
                created: list[str] = []

                def pg_url() -> str:
                    if created:
                        drop_database(created.pop())
                    created.append(create_database(server.admin_url, "cc_bench"))
                    return created[-1]

                rows += suite(pg_url, "postgresql")
                pg_note = "real PostgreSQL 15 server, fsync on"

    header = (
        f"{'database':<11}{'scenario':<36}{'procs':>6}{'won':>7}{'conflicts':>10}{'errors':>7}"
        f"{'res/s':>9}{'doubles':>9}"
    )
    print(
        f"reservations_speed: {p} processes, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} (other work on the machine slows every row alike); PostgreSQL: {pg_note}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['database']:<11}{r['scenario']:<36}{r['processes']:>6}{r['reservations']:>7}{r['conflicts']:>10}"
            f"{r['errors']:>7}{r['reservations_per_s']:>9.1f}{r['double_assignments']:>9}"
        )
    atomic = [r for r in rows if r["mode"] in ("atomic", "batched")]

    def rate(scenario: str) -> float:
        return float(
            next(r for r in rows if r["database"] == "sqlite" and r["scenario"] == scenario)["reservations_per_s"]
        )

    per_tx, batched = rate("atomic (one round)"), rate("atomic, round per transaction")
    clean = all(r["double_assignments"] == 0 for r in atomic)
    summary = {
        "benchmark": "reservations_speed",
        "cores": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "processes": p,
        "quick": args.quick,
        "sqlite_reservations_per_s": per_tx,
        "sqlite_batched_reservations_per_s": batched,
        "sqlite_1_process_reference_per_s": rate("atomic, 1 process (reference)"),
        "atomic_double_assignments": sum(r["double_assignments"] for r in atomic),
        "baseline_double_assignments": sum(r["double_assignments"] for r in rows if r["mode"] == "naive"),
        "target_met_one_per_transaction": per_tx >= 500 and clean,
        "target_met_batched": batched >= 500 and clean,
        "rows": rows,
    }
    print(json.dumps(summary))
    return 0 if summary["atomic_double_assignments"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
