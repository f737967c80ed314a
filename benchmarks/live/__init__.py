"""Live benchmark: replay a trace against a real Triton + orchestrator (make bench-live)."""
