"""PNG plots of the tiny-cascade report (``zoo.report``), drawn from the ``report.json`` sections."""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_GROUPS = ("easy", "hard", "pair", "triple", "twin")


def _interval_bars(ax, x: np.ndarray, rows: list[dict], value: str, interval: str, width: float, label: str,
                   scale: float = 1.0) -> None:
    """Bars at each row's ``value`` with its ``interval`` drawn as a vertical line (a bootstrap FID
    interval can lie wholly above the point estimate, which error bars cannot show); rows without a
    value are left out."""
    keep = [i for i, r in enumerate(rows) if r.get(value) is not None]
    vals = np.array([rows[i][value] * scale for i in keep])
    ax.bar(x[keep], vals, width, label=label)
    spans = [(x[i], rows[i][interval]) for i in keep if rows[i].get(interval)]
    if spans:
        xs = np.array([s[0] for s in spans])
        lo, hi = (np.array([s[1][k] * scale for s in spans]) for k in (0, 1))
        ax.vlines(xs, lo, hi, color="k", lw=1)
        ax.hlines(np.r_[lo, hi], np.r_[xs, xs] - width / 4, np.r_[xs, xs] + width / 4, color="k", lw=1)


def plot_cascade(out: Path, curves: dict, fcurves: dict) -> None:
    """cascade_curve.png: fidelity and FID of the served set vs deferred share."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for key, style in (("discriminator", "o-"), ("random", "s--")):
        ax1.plot(curves["share"], np.array(curves[key]) * 100, style, ms=3, label=f"{key} routing")
        ax2.plot(fcurves["share"], fcurves[key], style, ms=3, label=f"{key} routing")
    ax1.set(xlabel="share of queries deferred to heavy", ylabel="prompt fidelity (%)",
            title="fidelity, held-out compositions (higher is better)")
    ax2.set(xlabel="share of queries deferred to heavy", ylabel="in-domain FID", title="FID (lower is better)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "cascade_curve.png", dpi=120)
    plt.close(fig)


def plot_fidelity_and_fid(out: Path, fidelity: dict, fids: dict) -> None:
    """fidelity_by_difficulty.png: judge fidelity per group (Wilson 95 % bars) and bias-corrected FID
    per difficulty (basic bootstrap 95 % bars; :func:`zoo.report_stats.fid_with_interval`)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(_GROUPS))
    for j, source in enumerate(("light", "heavy", "real")):
        _interval_bars(ax1, x + (j - 1) * 0.27, [fidelity[source][g]["faithful"] for g in _GROUPS], "rate", "ci95",
                       0.27, source, 100)
    ax1.set_xticks(x, ["easy", "hard (all)", "hard: pair", "hard: triple", "hard: twin"])
    ax1.set(ylabel="prompt fidelity (%)", ylim=(0, 105), title="judge fidelity, 95 % Wilson intervals")
    ax1.legend()
    groups = ("easy", "hard", "all")
    x = np.arange(len(groups))
    for j, source in enumerate(("light", "heavy", "real_ref")):
        _interval_bars(ax2, x + (j - 1) * 0.27, [fids[source][g] for g in groups], "fid_bias_corrected",
                       "ci95_bias_corrected", 0.27, "real vs real (floor)" if source == "real_ref" else source)
    ax2.set_xticks(x, groups)
    ax2.set_yscale("symlog", linthresh=1.0)
    ax2.set(ylabel="in-domain FID, bias-corrected (symlog)", title="FID vs real renders, basic bootstrap 95 %")
    ax2.set_ylim(top=ax2.get_ylim()[1] * 30)  # room for the legend above the bars
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "fidelity_by_difficulty.png", dpi=120)
    plt.close(fig)


def plot_auc(out: Path, scores: dict) -> None:
    """auc_by_difficulty.png: AUC for "light image correct" of each score per group (bootstrap bars)."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    groups = ("all", "easy", "hard", "pair", "triple", "twin")
    x = np.arange(len(groups))
    width = 0.8 / max(1, len(scores))
    for j, (name, by_group) in enumerate(scores.items()):
        _interval_bars(ax, x + (j - (len(scores) - 1) / 2) * width, [by_group[g] for g in groups], "auc", "ci95",
                       width, name)
    ax.axhline(0.5, color="k", lw=0.8, ls="--")
    ax.set_xticks(x, groups)
    ax.set(ylabel="ROC AUC, light image correct", ylim=(0.0, 1.05), title="image score vs text-only scores")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "auc_by_difficulty.png", dpi=120)
    plt.close(fig)


def sample_grid(real, light, heavy, prompts, path: Path, title: str) -> None:
    """PNG: one row per prompt, columns real render | light | heavy."""
    n = len(prompts)
    if n == 0:
        return
    fig, axes = plt.subplots(n, 3, figsize=(6.2, 1.6 * n), squeeze=False)
    for i in range(n):
        for j, (img, name) in enumerate(((real, "real"), (light, "light"), (heavy, "heavy"))):
            ax = axes[i, j]
            ax.imshow(img[i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name)
        axes[i, 0].set_ylabel(textwrap.fill(prompts[i], 30), fontsize=5, rotation=0, ha="right", va="center")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
