"""The cascade's own Prometheus metrics, registered through ``pb_utils.MetricFamily``.

They appear on Triton's metrics endpoint (``/metrics``) next to Triton's per-model metrics
(``nv_inference_request_success``, ``nv_inference_queue_duration_us``, ...):

| metric | kind | labels |
| --- | --- | --- |
| ``diffserve_cascade_requests_total`` | counter | ``served_by`` (light / heavy): queries answered |
| ``diffserve_cascade_deferrals_total`` | counter | queries the discriminator sent to heavy |
| ``diffserve_cascade_drops_total`` | counter | queries shed (predicted past 1.5 x SLO) |
| ``diffserve_cascade_errors_total`` | counter | ``kind`` (invalid / stage): failed queries |
| ``diffserve_cascade_confidence`` | histogram | discriminator confidence of cascade queries |
| ``diffserve_cascade_stage_latency_ms`` | histogram | ``stage``: round trip of one stage call, ms |
| ``diffserve_cascade_threshold`` | gauge | confidence threshold in force |
| ``diffserve_control_version`` | gauge | version of the control state the cascade last served with |

``pb_utils`` is passed in (the module exists only inside the Python stub), so the class can
be exercised with a fake in unit tests.
"""
from __future__ import annotations

from typing import Any

CONFIDENCE_BUCKETS = [0.1 * i for i in range(1, 10)]
LATENCY_BUCKETS_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]


class CascadeMetrics:
    """Metric families and the per-label metrics the cascade model updates."""

    def __init__(self, pb_utils: Any, model: str, stages: tuple[str, ...] = ("light", "discriminator", "heavy")):
        mf = pb_utils.MetricFamily
        base = {"model": model}

        def family(name: str, doc: str, kind: Any) -> Any:
            return mf(name=name, description=doc, kind=kind)

        self._families = [
            family("diffserve_cascade_requests_total", "Cascade queries answered, by the model that served them", mf.COUNTER),
            family("diffserve_cascade_deferrals_total", "Cascade queries deferred from light to heavy", mf.COUNTER),
            family("diffserve_cascade_drops_total", "Cascade queries shed because predicted latency exceeded the drop limit", mf.COUNTER),
            family("diffserve_cascade_errors_total", "Cascade queries that failed, by kind (invalid request, stage error)", mf.COUNTER),
            family("diffserve_cascade_confidence", "Discriminator confidence (P(real)) of light images", mf.HISTOGRAM),
            family("diffserve_cascade_stage_latency_ms", "Round-trip latency of one stage call from the cascade, ms", mf.HISTOGRAM),
            family("diffserve_cascade_threshold", "Confidence threshold in force", mf.GAUGE),
        ]
        req, deferrals, drops, errors, conf, lat, thr = self._families
        self.served = {s: req.Metric(labels={**base, "served_by": s}) for s in ("light", "heavy")}
        self.deferrals = deferrals.Metric(labels=base)
        self.drops = drops.Metric(labels=base)
        self.errors = {k: errors.Metric(labels={**base, "kind": k}) for k in ("invalid", "stage")}
        self.confidence = conf.Metric(labels=base, buckets=CONFIDENCE_BUCKETS)
        self.stage_latency = {s: lat.Metric(labels={**base, "stage": s}, buckets=LATENCY_BUCKETS_MS) for s in stages}
        self.threshold = thr.Metric(labels=base)
        # The control state's version, so Prometheus and operators see which whole state a node
        # serves (a node that misses updates keeps an old version: docs/deploy.md, many nodes).
        self._version_family = family("diffserve_control_version",
                                      "Version of the control state the cascade last served with", mf.GAUGE)
        self._control_version = self._version_family.Metric(labels=base)
        self._version_shown: int | None = None

    def show_control_version(self, version: int) -> None:
        """Set the control-version gauge (only when it changed: each set is an IPC to Triton)."""
        if version != self._version_shown:
            self._control_version.set(float(version))
            self._version_shown = version

    def observe_confidences(self, values) -> None:
        """Add each confidence in ``values`` to the histogram."""
        for v in values:
            self.confidence.observe(float(v))
