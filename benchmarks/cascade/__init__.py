"""``make bench-cascade``: the cascade's concurrency on a real tritonserver, old design vs new.

See :mod:`benchmarks.cascade.bench`. ``old_cascade_model.py`` / ``old_routing.py`` are the
cascade as it was before the response-sender design, kept here only as the baseline.
"""
