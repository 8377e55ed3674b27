"""``callcentre simulate``: run the discrete-event simulator from the command line."""

from __future__ import annotations

import json
from typing import Any

import click

from routing.simulation.designs import DESIGNS, build_scenario
from routing.simulation.engine import simulate
from routing.simulation.pooling import pooling_efficiency
from routing.simulation.strategies import STRATEGIES, make_strategy


def _patience(value: str) -> float | None:
    if value.strip().lower() == "none":
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise click.BadParameter(f"expected seconds or 'none', got {value!r}") from None
    if seconds <= 0:
        raise click.BadParameter("patience must be positive (or 'none')")
    return seconds


@click.command("simulate")
@click.option("--types", type=click.IntRange(1, 200), default=6, show_default=True, help="Call reasons.")
@click.option("--agents", type=click.IntRange(1, 100_000), default=90, show_default=True)
@click.option("--skills-per-agent", type=click.IntRange(1, 200), default=2, show_default=True)
@click.option("--design", type=click.Choice(DESIGNS), default="chain", show_default=True)
@click.option("--load", type=click.FloatRange(min=0, min_open=True), default=84.0, show_default=True,
              help="Offered Erlangs (first contacts).")
@click.option("--aht", type=click.FloatRange(min=0, min_open=True), default=300.0, show_default=True,
              help="Mean handle time, seconds.")
@click.option("--patience", default="300", show_default=True, help="Mean patience in seconds, or 'none'.")
@click.option("--calls", type=click.IntRange(1, 50_000_000), default=100_000, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--strategy", type=click.Choice([*STRATEGIES, "all"]), default="router", show_default=True)
@click.option("--handle-time", type=click.Choice(["exponential", "lognormal"]), default="exponential")
@click.option("--wrap-up", type=click.FloatRange(min=0), default=0.0, help="Seconds after each call.")
@click.option("--efficiency", is_flag=True, help="Pooling efficiency of chain and balanced designs instead.")
@click.option("--per-agent", is_flag=True, help="Include the per-agent table.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document instead of tables.")
def simulate_command(
    types: int, agents: int, skills_per_agent: int, design: str, load: float, aht: float, patience: str,
    calls: int, seed: int, strategy: str, handle_time: str, wrap_up: float, efficiency: bool, per_agent: bool,
    as_json: bool,
) -> None:
    """Simulate a contact centre in simulated time, driving the real router (or a baseline)."""
    mean_patience = _patience(patience)
    if efficiency:
        refs, rows = pooling_efficiency(types=types, agents=agents, load=load, aht=aht, patience=mean_patience,
                                        calls=calls, seed=seed, skills_per_agent=skills_per_agent)
        if as_json:
            click.echo(json.dumps({"references": {k: v.as_dict() for k, v in refs.items()},
                                   "efficiency": [r.as_dict() for r in rows]}, sort_keys=True))
            return
        for name, m in refs.items():
            click.echo(f"{name:<10} SL20 {m.sl:.4f}  abandonment {m.abandonment:.4f}  ASA {m.asa:.1f}s")
        click.echo(f"{'design':<10}{'strategy':<10}{'SL20':>8}{'aband':>8}{'eff SL':>8}{'eff ab':>8}"
                   f"{'exact-ref eff SL':>18}{'eff ab':>8}")

        def fmt(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.3f}"

        for r in rows:
            click.echo(f"{r.design:<10}{r.strategy:<10}{r.metrics.sl:>8.4f}{r.metrics.abandonment:>8.4f}"
                       f"{r.sl:>8.3f}{r.abandonment:>8.3f}{fmt(r.sl_exact_refs):>18}{fmt(r.abandonment_exact_refs):>8}")
        click.echo("eff: against the pooled/split references simulated above (same callers); exact-ref eff: against "
                   "Erlang A/C for M/M/n+M pooled and split.")
        return
    try:
        scenario = build_scenario(design, types=types, agents=agents, load=load, aht=aht, patience=mean_patience,
                                  skills_per_agent=skills_per_agent, seed=seed, wrap_up=wrap_up,
                                  handle_time=handle_time)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    names = list(STRATEGIES) if strategy == "all" else [strategy]
    results: dict[str, Any] = {}
    for name in names:
        result = simulate(scenario, make_strategy(name, seed), calls=calls, seed=seed)
        report = result.report()
        results[name] = {"report": report, "wall_seconds": result.wall_seconds,
                         "calls_per_wall_minute": result.calls_per_wall_minute}
    if as_json:
        click.echo(json.dumps({
            "design": design, "types": types, "agents": agents, "skills_per_agent": skills_per_agent,
            "load": load, "aht": aht, "patience": mean_patience, "calls": calls, "seed": seed,
            "strategies": {n: {"report": r["report"].as_dict(), "wall_seconds": r["wall_seconds"],
                               "calls_per_wall_minute": r["calls_per_wall_minute"]} for n, r in results.items()},
        }, sort_keys=True))
        return
    for name, r in results.items():
        click.echo(f"== {name}: {design}, {types} types, {agents} agents, {load:g} Erlangs, {calls} calls "
                   f"({r['wall_seconds']:.1f} s wall, {r['calls_per_wall_minute']:,.0f} calls/min)")
        click.echo(r["report"].table(agents=per_agent))
