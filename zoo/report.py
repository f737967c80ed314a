"""Quality and cost report of the embedded tiny cascade (``make tiny-report``).

Generates a fixed, seeded prompt set (half easy, half hard) with the heavy and the light
pipelines through diffusers, then measures with the independent quality judge:

- prompt fidelity and in-domain FID of heavy-only and light-only, by difficulty;
- the discriminator's ROC AUC for "the light image is correct";
- the cascade curve: quality vs share of queries deferred to heavy, for discriminator routing
  (defer the least confident light images) and for random routing (exact expectation);
- CPU cost per image at batch 1 through the diffusers pipelines (serving uses ONNX Runtime,
  see docs/interfaces.md; these torch numbers are the reference path);
- a grid of sample images per difficulty (real render | light | heavy);
- routing policies (``hybrid.json``, ``hybrid.png``; :mod:`zoo.hybrid`): fidelity at heavy
  shares 10-90 % of random, discriminator-only, router-only and hybrid routing on their own,
  larger evaluation set (``--hybrid-per-difficulty``, same prompt seed; images cached under
  ``runs/tiny``), hybrid's router share chosen on the calibration prompts (configs/tiny.yaml's
  seed).

Writes ``report.json`` and PNG plots under ``--out`` (default ``benchmarks/results/tiny``).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from export.discriminators import load_discriminator  # noqa: E402
from zoo import hybrid  # noqa: E402
from zoo.domain import eval_prompts, parse_caption, render  # noqa: E402
from zoo.judge import load_judge  # noqa: E402
from zoo.metrics import SHARES, cascade_curves, fid  # noqa: E402
from zoo.sampling import PROMPT_SEED, SAMPLING, WEIGHTS, cached_images, disc_confidence, generate, load_pipeline  # noqa: E402
from zoo.train_discriminator import roc_auc  # noqa: E402



def fid_curves(light_f: np.ndarray, heavy_f: np.ndarray, real_f: np.ndarray, confidence: np.ndarray,
               seed: int) -> dict:
    """FID of the served image set vs deferred share (discriminator routing; one seeded random draw)."""
    n = len(light_f)
    order = np.argsort(confidence, kind="mergesort")
    perm = np.random.default_rng(seed).permutation(n)
    disc, rand = [], []
    for s in SHARES:
        k = int(round(s * n))
        for sel, out in ((order, disc), (perm, rand)):
            mixed = light_f.copy()
            mixed[sel[:k]] = heavy_f[sel[:k]]
            out.append(fid(mixed, real_f))
    return {"share": SHARES.tolist(), "discriminator": disc, "random": rand}


def time_batch1(pipe, role: str, prompt: str, repeats: int) -> float:
    """Median wall ms of one image at batch 1 (after one warm-up call)."""
    generate(pipe, [prompt], [0], SAMPLING[role])
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        generate(pipe, [prompt], [r], SAMPLING[role])
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def sample_grid(real, light, heavy, prompts, path: Path, title: str) -> None:
    """PNG: one row per prompt, columns real render | light | heavy."""
    n = len(prompts)
    fig, axes = plt.subplots(n, 3, figsize=(6.2, 1.6 * n))
    for i in range(n):
        for j, (img, name) in enumerate(((real, "real"), (light, "light"), (heavy, "heavy"))):
            ax = axes[i, j]
            ax.imshow(img[i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name)
        axes[i, 0].set_ylabel(prompts[i].replace(" on a", "\non a"), fontsize=5, rotation=0, ha="right", va="center")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--weights", type=Path, default=WEIGHTS)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/tiny"))
    p.add_argument("--n-per-difficulty", type=int, default=300)
    p.add_argument("--timing-repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--hybrid-per-difficulty", type=int, default=hybrid.EVALUATION_PER_DIFFICULTY,
                   help="evaluation prompts per difficulty of the routing-policy curves (hybrid.json)")
    p.add_argument("--calibration-per-difficulty", type=int, default=hybrid.CALIBRATION_PER_DIFFICULTY,
                   help="calibration prompts per difficulty on which hybrid routing picks its router share")
    p.add_argument("--hybrid-image-cache-dir", type=Path, default=Path(hybrid.IMAGE_CACHE_DIR),
                   help="image cache of the routing-policy curves (keyed by the weight files, like --image-cache)")
    p.add_argument("--image-cache", type=Path, default=None,
                   help="npz of generated images, reused when present AND made from the same weights files")
    return p.parse_args()


def _by_difficulty(diff: np.ndarray, ok: dict, feats: dict, conf: np.ndarray) -> dict:
    per_diff = {}
    for d in ("easy", "hard", "all"):
        m = np.ones(len(diff), bool) if d == "all" else diff == d
        per_diff[d] = {
            "n": int(m.sum()),
            **{f"fidelity_{k}": float(v[m].mean()) for k, v in ok.items()},
            **{f"fid_{k}": fid(feats[k][m], feats["real"][m]) for k in ("heavy", "light", "real_ref")},
            "mean_confidence_light": float(conf[m].mean()),
        }
    return per_diff


def _plot(out: Path, curves: dict, fcurves: dict, per_diff: dict) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, style in (("discriminator", "o-"), ("random", "s--")):
        ax1.plot(curves["share"], np.array(curves[key]) * 100, style, ms=3, label=f"{key} routing")
        ax2.plot(fcurves["share"], fcurves[key], style, ms=3, label=f"{key} routing")
    ax1.set(xlabel="share of queries deferred to heavy", ylabel="prompt fidelity (%)", title="fidelity (higher is better)")
    ax2.set(xlabel="share of queries deferred to heavy", ylabel="in-domain FID", title="FID (lower is better)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "cascade_curve.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    x = np.arange(2)
    for j, k in enumerate(("light", "heavy", "real")):
        ax.bar(x + (j - 1) * 0.27, [per_diff[d][f"fidelity_{k}"] * 100 for d in ("easy", "hard")], 0.27, label=k)
    ax.set_xticks(x, ["easy (1 object)", "hard (2-3 objects)"])
    ax.set(ylabel="prompt fidelity (%)", ylim=(0, 105))
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "fidelity_by_difficulty.png", dpi=120)
    plt.close(fig)


def _print_summary(report: dict, threads: int) -> None:
    per_diff, curves, timing = report["by_difficulty"], report["cascade_curve_fidelity"], report["cost_batch1_cpu_diffusers"]
    for d in ("easy", "hard"):
        r = per_diff[d]
        print(f"{d:5s} fidelity heavy {r['fidelity_heavy']:.1%} light {r['fidelity_light']:.1%} "
              f"real {r['fidelity_real']:.1%} | FID heavy {r['fid_heavy']:.2f} light {r['fid_light']:.2f} "
              f"real-vs-real {r['fid_real_ref']:.2f}")
    print(f"discriminator AUC (light image correct): {report['discriminator']['auc_light_correct']:.3f}")
    print("share  disc   random")
    for s, dv, rv in zip(curves["share"], curves["discriminator"], curves["random"]):
        print(f"{s:4.2f}  {dv:.3f}  {rv:.3f}")
    print(f"discriminator routing beats random at every share 10-90%: {report['discriminator_beats_random_10_to_90']}")
    print(f"batch-1 CPU ms (diffusers, {threads} threads): heavy {timing['heavy_ms']:.1f}, light "
          f"{timing['light_ms']:.1f}, ratio {timing['heavy_over_light']:.1f}")


def main() -> None:
    """CLI entry point; prints a summary and writes report.json + PNGs."""
    a = _parse_args()
    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    n = a.n_per_difficulty
    prompts = eval_prompts(PROMPT_SEED, n)
    seeds = list(range(10_000, 10_000 + len(prompts)))
    diff = np.array(["easy"] * n + ["hard"] * n)
    pipes = {"heavy": load_pipeline(a.weights / "heavy"), "light": load_pipeline(a.weights / "light")}
    judge, disc = load_judge(a.weights / "judge"), load_discriminator(a.weights / "discriminator")
    heavy, light = cached_images(pipes, prompts, seeds, a.weights, a.image_cache)
    rng = np.random.default_rng(PROMPT_SEED)
    real = np.stack([render(parse_caption(q), rng) for q in prompts])
    real_ref = np.stack([render(parse_caption(q), rng) for q in prompts])  # second draw: the FID floor

    ok = {"heavy": judge.fidelity(heavy, prompts), "light": judge.fidelity(light, prompts),
          "real": judge.fidelity(real, prompts)}
    feats = {k: judge.features(v) for k, v in (("heavy", heavy), ("light", light), ("real", real),
                                               ("real_ref", real_ref))}
    conf, conf_heavy, conf_real = (disc_confidence(disc, x) for x in (light, heavy, real))

    per_diff = _by_difficulty(diff, ok, feats, conf)
    curves = cascade_curves(ok["light"], ok["heavy"], conf)
    fcurves = fid_curves(feats["light"], feats["heavy"], feats["real"], conf, seed=PROMPT_SEED)
    mid = [i for i, s in enumerate(curves["share"]) if 0.1 - 1e-9 <= s <= 0.9 + 1e-9]
    timing = {"heavy_ms": time_batch1(pipes["heavy"], "heavy", prompts[-1], a.timing_repeats),
              "light_ms": time_batch1(pipes["light"], "light", prompts[-1], a.timing_repeats)}
    timing["heavy_over_light"] = timing["heavy_ms"] / timing["light_ms"]
    report = {
        "prompts": {"seed": PROMPT_SEED, "n_per_difficulty": n},
        "sampling": {k: vars(v) for k, v in SAMPLING.items()},
        "by_difficulty": per_diff,
        "discriminator": {
            "auc_light_correct": roc_auc(conf, ok["light"]),
            "auc_real_vs_light": roc_auc(np.concatenate([conf_real, conf]),
                                         np.r_[np.ones(len(conf_real)), np.zeros(len(conf))]),
            "mean_confidence": {"real": float(conf_real.mean()), "light": float(conf.mean()),
                                "heavy": float(conf_heavy.mean())},
        },
        "cascade_curve_fidelity": curves,
        "cascade_curve_fid": fcurves,
        "discriminator_beats_random_10_to_90": all(curves["discriminator"][i] > curves["random"][i] for i in mid),
        "cost_batch1_cpu_diffusers": {**timing, "threads": a.threads},
    }
    (a.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(a.out, curves, fcurves, per_diff)
    for d in ("easy", "hard"):
        idx = np.where(diff == d)[0][:8]
        sample_grid(real[idx], light[idx], heavy[idx], [prompts[i] for i in idx], a.out / f"samples_{d}.png",
                    f"{d} prompts")
    _print_summary(report, a.threads)
    hybrid.run(a.out, a.weights, pipes, judge, disc, a.hybrid_per_difficulty, a.calibration_per_difficulty,
               a.hybrid_image_cache_dir)
    print(f"wrote {a.out / 'report.json'} and PNGs")


if __name__ == "__main__":
    main()
