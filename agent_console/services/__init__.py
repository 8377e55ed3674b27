"""Query helpers for the console: screen pop, similar resolved calls, wallboard snapshot, alerts."""
