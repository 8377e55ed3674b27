"""Routing outcomes: does routing on learned resolution cut transfers without hurting service level?

Scenario (routing.simulation.designs, design "scenario"): agents trained in several reasons at uneven
proficiency, each strong in one; their real first-contact resolution differs from the recorded level by a
personal deviation. An unresolved first contact is transferred to a second agent (which adds load). Every
strategy sees the very same callers (common random numbers from one seed). The router starts with no history
and learns agent x reason resolution online from the outcomes, as it would in production.

Baselines in the same run: Asterisk app_queue strategies over skills-blind queues (ringall, leastrecent,
fewestcalls, random, rrmemory, linear), the greedy policy and skills-match-only (the router without resolution
scoring). Pass: router transfer rate ≤ 50 % of the best Asterisk baseline's, FCR higher, SL20 not lower.

    python benchmarks/routing_outcomes.py [--quick] [--calls N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from routing.simulation.designs import build_scenario  # noqa: E402
from routing.simulation.engine import simulate  # noqa: E402
from routing.simulation.strategies import ASTERISK_STRATEGIES, STRATEGIES, make_strategy  # noqa: E402

SCENARIO = {"types": 4, "agents": 48, "skills_per_agent": 3, "load": 30.0, "aht": 300.0, "patience": 300.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20,000 calls instead of 100,000")
    parser.add_argument("--calls", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--load", type=float, default=SCENARIO["load"],
                        help="offered Erlangs of first contacts (default 30: baseline occupancy ~79%%)")
    args = parser.parse_args(argv)
    calls = args.calls or (20_000 if args.quick else 100_000)
    params = {**SCENARIO, "load": args.load}
    scenario = build_scenario("scenario", seed=args.seed, **params)  # type: ignore[arg-type]

    rows = {}
    for name in STRATEGIES:
        result = simulate(scenario, make_strategy(name, seed=args.seed), calls=calls, seed=args.seed)
        m = result.report().overall
        rows[name] = {
            "sl20": m.sl, "asa": m.asa, "abandonment": m.abandonment, "transfer_rate": m.transfer_rate,
            "fcr": m.fcr, "occupancy": m.occupancy, "wall_s": result.wall_seconds,
        }

    print(f"routing outcomes: {calls} calls, seed {args.seed}, scenario {params}")
    print(f"{'strategy':<14}{'SL20':>8}{'ASA s':>8}{'aband':>8}{'transfer':>10}{'FCR':>8}{'occup':>8}")
    for name, r in rows.items():
        print(
            f"{name:<14}{100 * r['sl20']:>7.1f}%{r['asa']:>8.1f}{100 * r['abandonment']:>7.1f}%"
            f"{100 * r['transfer_rate']:>9.1f}%{100 * r['fcr']:>7.1f}%{100 * r['occupancy']:>7.1f}%"
        )
    best = min(ASTERISK_STRATEGIES, key=lambda n: rows[n]["transfer_rate"])
    router = rows["router"]
    reduction = 1.0 - router["transfer_rate"] / rows[best]["transfer_rate"]
    checks = {
        "transfer_rate_reduction_vs_best_asterisk": reduction,
        "transfer_halved": reduction >= 0.5,
        "fcr_higher": router["fcr"] > rows[best]["fcr"],
        "sl20_not_lower": router["sl20"] >= rows[best]["sl20"],
    }
    print(
        f"best Asterisk baseline by transfer rate: {best}; router transfer rate {reduction:.0%} lower; "
        f"FCR {'higher' if checks['fcr_higher'] else 'NOT higher'}; "
        f"SL20 {'equal or better' if checks['sl20_not_lower'] else 'LOWER'}"
    )
    passed = bool(checks["transfer_halved"] and checks["fcr_higher"] and checks["sl20_not_lower"])
    print(json.dumps({
        "benchmark": "routing_outcomes", "calls": calls, "seed": args.seed, "scenario": params,
        "cores": os.cpu_count(), "python": platform.python_version(), "baseline": best,
        "strategies": rows, "checks": checks, "pass": passed,
    }, sort_keys=True))
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
