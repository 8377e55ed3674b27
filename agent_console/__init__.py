"""Agent softphone console and supervisor wallboard (Flask).

Entry point: :func:`agent_console.app.create_app`.
"""
