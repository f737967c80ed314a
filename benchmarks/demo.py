"""``make demo``: serve the exported cascade on Triton, send easy and hard prompts, show what served them.

    python -m benchmarks.demo [--cascade configs/tiny.yaml] [--threshold 0.5|median] [--per-difficulty 4]

Starts tritonserver on free local ports with ``light``, ``heavy``, ``discriminator`` and
``cascade``; sends each prompt as one gRPC request; writes every image and a contact sheet
(``runs/demo/contact_sheet.png``) plus ``runs/demo/results.json``; prints a table (prompt,
difficulty, served_by, confidence, latency). The server is stopped on every exit path (the
``TritonServer`` context manager), also on errors and Ctrl-C.

The threshold: ``--threshold`` if given, else the control file's (if one exists), else 0.5.
``--threshold median`` (what ``make demo`` passes) first sends the prompts at threshold 0 (all
served by light, confidences reported) and then uses the median confidence, so that about half
of the prompts are deferred and both branches show: a demo choice, not a calibrated threshold.
The demo writes the control file the cascade reads only when it does not exist yet or when
``--threshold`` is given (so it does not silently change a running orchestrator's setting).

``--router-share S`` (``make demo`` passes 0.5) also loads the exported prompt ``router`` and
sets the control state's router threshold so that the share S of the demo prompts with the
highest router scores goes straight to heavy (HADIS's hybrid routing); ``median`` is then the
median confidence of the other prompts, the ones that still run light. Like the median, a
demo choice: the planner's ``hybrid`` policy calibrates both thresholds.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from orchestrator.server import PROJECT_ROOT, TritonServer, TritonServerConfig

MODELS = ("light", "heavy", "discriminator", "cascade")


def cascade_control_file(repo: Path) -> Path:
    """The control file the cascade reads: its ``control_file`` parameter, else the light stage's."""
    from serving.control import resolve_control_path  # noqa: PLC0415
    from serving.triton.cascade_model import pbtxt_parameters  # noqa: PLC0415

    own = pbtxt_parameters((repo / "cascade" / "config.pbtxt").read_text()).get("control_file")
    light_cfg = repo / "light" / "config.pbtxt"
    light = pbtxt_parameters(light_cfg.read_text()).get("control_file") if light_cfg.exists() else None
    return resolve_control_path(own or light or "runs/control/cascade.json", PROJECT_ROOT)


def contact_sheet(rows: list[dict], images: list[np.ndarray], path: Path, columns: int = 4) -> Path:
    """A grid of the images titled with difficulty, served_by, confidence and latency."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    n_rows = math.ceil(len(images) / columns)
    fig, axes = plt.subplots(n_rows, columns, figsize=(3.2 * columns, 3.9 * n_rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, row, img in zip(axes.ravel(), rows, images):
        ax.imshow(img, interpolation="nearest")
        color = "tab:green" if row["served_by"] == "light" else "tab:red"
        wrapped = "\n".join(textwrap.wrap(row["prompt"], 36)[:3])
        ax.set_title(f"{wrapped}\n{row['difficulty']} -> {row['served_by']}, conf {row['confidence']:.2f}, "
                     f"{row['latency_ms']:.0f} ms", fontsize=8, color=color)
    fig.suptitle("DiffServe cascade on Triton: light (green) or deferred to heavy (red)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def router_split(repo: Path, prompts: list[str], share: float) -> tuple[np.ndarray, float]:
    """(which prompts the exported router sends straight to heavy, the router threshold): the
    ``share`` of ``prompts`` with the highest scores (ties at the threshold go too)."""
    from serving.router import load_router_stage  # noqa: PLC0415

    scores = load_router_stage(repo / "router" / "1" / "artifacts").score(prompts)
    threshold = float(np.quantile(scores, 1.0 - share))
    return scores >= threshold, threshold


def print_table(rows: list[dict], format_confidence) -> None:
    """The demo's table: prompt, difficulty, served_by, confidence, latency."""
    width = max(len(r["prompt"]) for r in rows)
    print(f"\n{'prompt':<{width}}  {'difficulty':<10} {'served_by':<9} {'confidence':>10} {'latency ms':>10}")
    for r in rows:
        print(f"{r['prompt']:<{width}}  {r['difficulty']:<10} {r['served_by']:<9} "
              f"{format_confidence(r['confidence']):>10} {r['latency_ms']:>10.1f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--cascade", default="configs/tiny.yaml")
    ap.add_argument("--model-repository", default=str(PROJECT_ROOT / "model_repository"))
    ap.add_argument("--out", default=str(PROJECT_ROOT / "runs" / "demo"))
    ap.add_argument("--threshold", default=None, help="a number in [0, 1], or 'median' (see above)")
    ap.add_argument("--per-difficulty", type=int, default=4, help="easy prompts and hard prompts to send")
    ap.add_argument("--prompt-seed", type=int, default=11)
    ap.add_argument("--router-share", type=float, default=None,
                    help="share in (0, 1] of the prompts the router sends straight to heavy (default: no router)")
    args = ap.parse_args(argv)
    if args.router_share is not None and not 0.0 < args.router_share <= 1.0:
        print(f"--router-share={args.router_share!r}; expected a share in (0, 1]", file=sys.stderr)
        return 2

    from client import CascadeClient, format_confidence, save_png  # noqa: PLC0415
    from serving.config import load_cascade  # noqa: PLC0415
    from serving.control import ControlState, read_control, write_control  # noqa: PLC0415
    from zoo.domain import difficulty_of, eval_prompts  # noqa: PLC0415

    repo, out = Path(args.model_repository), Path(args.out)
    models = MODELS + (("router",) if args.router_share is not None else ())
    missing = [m for m in models if m != "cascade" and not (repo / m / "1" / "artifacts" / "stage.json").exists()]
    if missing:
        print(f"{repo}: {missing} not exported; run `make export CASCADE={args.cascade}` first", file=sys.stderr)
        return 1
    cascade = load_cascade(args.cascade)
    control = cascade_control_file(repo)
    median = args.threshold == "median"
    try:
        fixed = None if args.threshold is None or median else float(args.threshold)
    except ValueError:
        print(f"--threshold={args.threshold!r}; expected a number in [0, 1] or 'median'", file=sys.stderr)
        return 2
    base = read_control(control) if control.exists() else ControlState(slo_ms=cascade.slo_ms)

    def set_threshold(t: float, router_threshold: float | None = base.router_threshold) -> None:
        write_control(control, ControlState(**{**base.to_json(), "threshold": t, "routing": "cascade",
                                               "router_threshold": router_threshold}))
        time.sleep(0.25)  # past the models' 100 ms control-file check interval

    if fixed is not None or not control.exists():
        set_threshold(base.threshold if fixed is None else fixed)

    out.mkdir(parents=True, exist_ok=True)
    prompts = eval_prompts(seed=args.prompt_seed, n_per_difficulty=args.per_difficulty)
    routed, router_threshold = np.zeros(len(prompts), bool), base.router_threshold
    if args.router_share is not None:
        routed, router_threshold = router_split(repo, prompts, args.router_share)
    rows, images = [], []
    with TritonServer(TritonServerConfig(model_repository=repo, load_models=models,
                                         log_path=out / "tritonserver.log")) as server:
        print(f"tritonserver ready: grpc {server.grpc_url}, metrics {server.metrics_url}")
        with CascadeClient(server.grpc_url, timeout_s=300) as client:
            client.generate(prompts[0], seed=0)  # warm-up: first calls pay lazy initialisation
            if median:
                set_threshold(0.0, None)
                conf = [client.generate(p, seed=k).confidence for k, p in enumerate(prompts) if not routed[k]]
                t = float(np.median(conf)) if conf else 0.0
                set_threshold(round(t, 4), router_threshold)
                print(f"threshold = median confidence of the light-path demo prompts at threshold 0: {t:.4f}")
            elif args.router_share is not None:
                set_threshold(read_control(control).threshold, router_threshold)
            if args.router_share is not None:
                print(f"router threshold {router_threshold:.4f}: {int(routed.sum())} of {len(prompts)} prompts "
                      "go straight to heavy")
            state = read_control(control)
            print(f"cascade {cascade.name}: threshold {state.threshold} (control file {control}), SLO {state.slo_ms} ms")
            for k, prompt in enumerate(tqdm(prompts, desc="demo prompts", unit="prompt")):
                res = client.generate(prompt, seed=k)
                diff = difficulty_of(prompt)
                png = save_png(res.image, out / f"{k:02d}_{diff}_{res.served_by}.png")
                rows.append({"prompt": prompt, "difficulty": diff, "served_by": res.served_by,
                             "confidence": res.confidence, "threshold": res.threshold,
                             "latency_ms": round(res.latency_ms, 1), "image": str(png)})
                images.append(res.image)
    sheet = contact_sheet(rows, images, out / "contact_sheet.png")
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print_table(rows, format_confidence)
    by = {d: [r["served_by"] for r in rows if r["difficulty"] == d] for d in ("easy", "hard")}
    print(f"\nheavy-served: easy {by['easy'].count('heavy')}/{len(by['easy'])}, hard {by['hard'].count('heavy')}/{len(by['hard'])}"
          f"; images and contact sheet in {out} ({sheet.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
