"""IVR: YAML flows, a pure flow engine, prompts and the post-call survey."""
