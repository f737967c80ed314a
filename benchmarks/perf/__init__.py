"""perf_analyzer runs against the cascade model (``make perf``)."""
