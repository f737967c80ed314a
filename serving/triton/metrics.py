"""The cascade's own Prometheus metrics, registered through ``pb_utils.MetricFamily``.

They appear on Triton's metrics endpoint (``/metrics``) next to Triton's per-model metrics
(``nv_inference_request_success``, ``nv_inference_queue_duration_us``, ...):

| metric | kind | labels |
| --- | --- | --- |
| ``diffserve_cascade_requests_total`` | counter | ``served_by`` (light / heavy): queries answered |
| ``diffserve_cascade_deferrals_total`` | counter | queries the discriminator sent to heavy |
| ``diffserve_cascade_routed_total`` | counter | queries the prompt router sent straight to heavy |
| ``diffserve_cascade_drops_total`` | counter | queries shed (predicted past, or reaching, drop_factor x SLO) |
| ``diffserve_cascade_errors_total`` | counter | ``kind`` (invalid / stage): failed queries |
| ``diffserve_cascade_confidence`` | histogram | discriminator confidence of cascade queries |
| ``diffserve_cascade_stage_latency_ms`` | histogram | ``stage``: round trip of one stage call, ms |
| ``diffserve_cascade_threshold`` | gauge | confidence threshold in force |
| ``diffserve_cascade_in_flight`` | gauge | ``instance``: requests the cascade accepted and has not answered yet |
| ``diffserve_cascade_answer_slo_ratio`` | histogram | served requests: time from receipt to answer / SLO |

``diffserve_cascade_in_flight`` is the cascade's own queue: Triton's
``nv_inference_pending_request_count`` counts only the requests waiting for ``execute``, and
the cascade's ``execute`` hands each batch to its event loop and returns at once. Each instance
sets its own series (refreshed every 0.1 s); the orchestrator sums them.
| ``diffserve_control_version`` | gauge | version of the control state the cascade last served with |

``pb_utils`` is passed in (the module exists only inside the Python stub), so the class can
be exercised with a fake in unit tests.
"""
from __future__ import annotations

from typing import Any

CONFIDENCE_BUCKETS = [0.1 * i for i in range(1, 10)]
LATENCY_BUCKETS_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]
# The drop factor (1.5) is a bucket bound: count(le=1.5) == count means no request was served past it.
SLO_RATIO_BUCKETS = [0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0]


class CascadeMetrics:
    """Metric families and the per-label metrics the cascade model updates."""

    def __init__(self, pb_utils: Any, model: str, stages: tuple[str, ...] = ("light", "discriminator", "heavy"),
                 instance: str | None = None):
        mf = pb_utils.MetricFamily
        base = {"model": model}

        def family(name: str, doc: str, kind: Any) -> Any:
            return mf(name=name, description=doc, kind=kind)

        self._families = [
            family("diffserve_cascade_requests_total", "Cascade queries answered, by the model that served them", mf.COUNTER),
            family("diffserve_cascade_deferrals_total", "Cascade queries deferred from light to heavy", mf.COUNTER),
            family("diffserve_cascade_routed_total", "Cascade queries the prompt router sent straight to heavy", mf.COUNTER),
            family("diffserve_cascade_drops_total", "Cascade queries shed: predicted or actual latency past the drop limit (drop_factor x SLO)", mf.COUNTER),
            family("diffserve_cascade_errors_total", "Cascade queries that failed, by kind (invalid request, stage error)", mf.COUNTER),
            family("diffserve_cascade_confidence", "Discriminator confidence (P(real)) of light images", mf.HISTOGRAM),
            family("diffserve_cascade_stage_latency_ms", "Round-trip latency of one stage call from the cascade, ms", mf.HISTOGRAM),
            family("diffserve_cascade_threshold", "Confidence threshold in force", mf.GAUGE),
            family("diffserve_cascade_in_flight", "Requests the cascade accepted and has not answered yet, per instance", mf.GAUGE),
            family("diffserve_cascade_answer_slo_ratio", "Served requests: time from receipt by the cascade to the answer, / SLO", mf.HISTOGRAM),
        ]
        req, deferrals, routed, drops, errors, conf, lat, thr, inflight, ratio = self._families
        self.served = {s: req.Metric(labels={**base, "served_by": s}) for s in ("light", "heavy")}
        self.deferrals = deferrals.Metric(labels=base)
        self.routed = routed.Metric(labels=base)
        self.drops = drops.Metric(labels=base)
        self.errors = {k: errors.Metric(labels={**base, "kind": k}) for k in ("invalid", "stage")}
        self.confidence = conf.Metric(labels=base, buckets=CONFIDENCE_BUCKETS)
        self.stage_latency = {s: lat.Metric(labels={**base, "stage": s}, buckets=LATENCY_BUCKETS_MS) for s in stages}
        self.threshold = thr.Metric(labels=base)
        self.in_flight = inflight.Metric(labels={**base, "instance": instance or model})
        self.answer_slo_ratio = ratio.Metric(labels=base, buckets=SLO_RATIO_BUCKETS)
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
