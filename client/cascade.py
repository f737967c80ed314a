"""gRPC client of the ``cascade`` model: a small Python API and a CLI.

CLI::

    python -m client "a red circle above a blue square" -o out.png
    python -m client "..." --routing heavy --seed 3 --slo-ms 5000 --url 127.0.0.1:8001

prints ``served_by``, ``confidence``, ``threshold`` and the latency, and writes the image.
Exit status: 0 ok, 2 invalid request, 3 dropped (load shedding), 1 any other error.
The server address defaults to the one ``make serve`` recorded in ``runs/server/server.json``.

API::

    with CascadeClient("127.0.0.1:8001") as client:
        result = client.generate("a red circle", seed=1)
        result.served_by, result.confidence, result.latency_ms, result.image  # uint8 HxWx3

Errors are the project's (``client.errors``): ``InvalidRequest``, ``RequestDropped``,
``ServerUnavailable``, ...
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from client.errors import DiffServeError, InvalidRequest, RequestDropped, triton_errors

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "127.0.0.1:8001"
# The paper's drop factor: a request may wait in the cascade's queue at most this x its slo_ms.
QUEUE_TIMEOUT_FACTOR = 1.5


@dataclasses.dataclass(frozen=True)
class CascadeResult:
    """One generated image and how it was served.

    ``confidence`` is the discriminator's P(real) of the light image (NaN when the request
    forced a route and the discriminator did not run); ``latency_ms`` is the client-side
    round trip of the whole request.
    """

    prompt: str
    image: np.ndarray
    served_by: str
    confidence: float
    threshold: float
    latency_ms: float


def default_url(state_file: Path = PROJECT_ROOT / "runs" / "server" / "server.json") -> str:
    """The gRPC address ``make serve`` recorded, else 127.0.0.1:8001."""
    try:
        return json.loads(state_file.read_text())["grpc"]
    except (OSError, ValueError, KeyError):
        return DEFAULT_URL


class CascadeClient:
    """Synchronous gRPC client of the cascade model (one request per call)."""

    def __init__(self, url: str | None = None, model: str = "cascade", timeout_s: float | None = None):
        import tritonclient.grpc as grpcclient  # noqa: PLC0415

        self._grpc = grpcclient
        self.url, self.model, self.timeout_s = url or default_url(), model, timeout_s
        self._client = grpcclient.InferenceServerClient(self.url)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "CascadeClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def generate_batch(self, prompts: Sequence[str | bytes], seeds: Sequence[int] | None = None,
                       routing: str | None = None, slo_ms: float | None = None) -> list[CascadeResult]:
        """Send ``prompts`` as ONE request (a batch of len(prompts)); one result per prompt."""
        g = self._grpc
        raw = [p.encode("utf-8") if isinstance(p, str) else bytes(p) for p in prompts]
        inputs = [g.InferInput("PROMPT", [len(raw), 1], "BYTES")]
        inputs[0].set_data_from_numpy(np.array([[p] for p in raw], dtype=np.object_))
        if seeds is not None:
            inputs.append(g.InferInput("SEED", [len(seeds), 1], "INT64"))
            inputs[1].set_data_from_numpy(np.asarray(seeds, dtype=np.int64).reshape(-1, 1))
        params = {k: v for k, v in (("routing", routing), ("slo_ms", slo_ms)) if v is not None}
        outputs = [g.InferRequestedOutput(n) for n in ("IMAGE", "SERVED_BY", "CONFIDENCE", "THRESHOLD")]
        t0 = time.perf_counter()
        with triton_errors("infer", model=self.model):
            # With an SLO, the request may wait in the cascade's queue at most QUEUE_TIMEOUT_FACTOR x
            # SLO (Triton refuses it then: RequestDropped) - the cascade's own shedding cannot see
            # that wait.
            queue_timeout_us = None if slo_ms is None else int(QUEUE_TIMEOUT_FACTOR * slo_ms * 1000)
            r = self._client.infer(self.model, inputs, outputs=outputs, parameters=params or None,
                                   client_timeout=self.timeout_s, timeout=queue_timeout_us)
        latency_ms = 1000.0 * (time.perf_counter() - t0)
        images, served = r.as_numpy("IMAGE"), r.as_numpy("SERVED_BY").reshape(-1)
        conf, thr = r.as_numpy("CONFIDENCE").reshape(-1), r.as_numpy("THRESHOLD").reshape(-1)
        return [CascadeResult(prompt=p.decode("utf-8", "replace"), image=images[k], served_by=served[k].decode(),
                              confidence=float(conf[k]), threshold=float(thr[k]), latency_ms=latency_ms)
                for k, p in enumerate(raw)]

    def generate(self, prompt: str | bytes, seed: int | None = None, routing: str | None = None,
                 slo_ms: float | None = None) -> CascadeResult:
        """One prompt, one image (see :meth:`generate_batch`)."""
        return self.generate_batch([prompt], None if seed is None else [seed], routing, slo_ms)[0]


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 HxWx3 image as PNG (creating the folder)."""
    from PIL import Image  # noqa: PLC0415

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path)
    return path


def format_confidence(value: float) -> str:
    """``0.812`` or ``n/a`` (discriminator not run)."""
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m client", description="Generate one image with the cascade.")
    ap.add_argument("prompt")
    ap.add_argument("-o", "--output", default="out.png", help="PNG to write (default out.png)")
    ap.add_argument("--url", default=None, help="gRPC host:port (default: from `make serve`, else 127.0.0.1:8001)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--routing", choices=("cascade", "light", "heavy"), default=None)
    ap.add_argument("--slo-ms", type=float, default=None)
    ap.add_argument("--timeout-s", type=float, default=300.0)
    args = ap.parse_args(argv)
    try:
        with CascadeClient(args.url, timeout_s=args.timeout_s) as client:
            res = client.generate(args.prompt, seed=args.seed, routing=args.routing, slo_ms=args.slo_ms)
    except InvalidRequest as exc:
        print(f"invalid request: {exc}", file=sys.stderr)
        return 2
    except RequestDropped as exc:
        print(f"dropped: {exc}", file=sys.stderr)
        return 3
    except DiffServeError as exc:
        print(f"error ({type(exc).__name__}): {exc}", file=sys.stderr)
        return 1
    out = save_png(res.image, args.output)
    print(f"served_by={res.served_by} confidence={format_confidence(res.confidence)} "
          f"threshold={res.threshold:.3f} latency_ms={res.latency_ms:.1f} image={out} ({res.image.shape[1]}x{res.image.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
