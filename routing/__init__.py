"""Skills-based routing: the pure router, Erlang formulas, reports, the simulator (and, from part B, database
reservations, queue experience and transfers).

Stable entry points for other packages: ``routing.router`` (Task, AgentView, Router, Decision, Why),
``routing.skills`` (QueuePolicy, RelaxationStep), ``routing.resolution`` (ResolutionModel),
``routing.erlang`` and ``routing.reports``. This module imports nothing so importing a submodule stays cheap.
"""
