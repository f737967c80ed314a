"""Draw the architecture picture of the README: the request path and the control path.

Usage: ``.venv/bin/python scripts/draw_architecture.py [--out docs/architecture.png]``

The picture is drawn from the boxes and arrows listed below, so that it changes with the code
in one place (this file) rather than in an image editor. Module names in the boxes are the
files that implement each step.
"""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

ROOT = Path(__file__).resolve().parent.parent
REQUEST_COLOUR = "#dbe9f6"
CONTROL_COLOUR = "#fde9d0"
STATE_COLOUR = "#e4f2dc"
BOX_W, BOX_H = 2.1, 1.05
TRITON_BAND = (2.9, 5.2, 11.9, 2.75)  # x, y, width, height
ORCHESTRATOR_BAND = (0.1, 0.15, 11.45, 3.75)

# name -> (x centre, y centre, title, detail, colour)
BOXES = {
    "client": (1.3, 6.3, "client", "client/\nCascadeClient", REQUEST_COLOUR),
    "cascade": (4.35, 6.3, "cascade (BLS)", "router score first\ncascade_model.py", REQUEST_COLOUR),
    "light": (7.4, 6.3, "light", "few steps\nstage_model.py", REQUEST_COLOUR),
    "discriminator": (10.45, 6.3, "discriminator", "confidence\n= P(real)", REQUEST_COLOUR),
    "heavy": (13.5, 6.3, "heavy", "many steps\nstage_model.py", REQUEST_COLOUR),
    "metrics": (1.3, 2.0, "metrics", "Triton statistics,\n/metrics: observe.py", CONTROL_COLOUR),
    "demand": (4.35, 2.0, "demand", "EWMA x 1.2\ncontrol.py", CONTROL_COLOUR),
    "planner": (7.4, 2.0, "planner", "OR-Tools MILP\nplanner/", CONTROL_COLOUR),
    "placement": (10.3, 2.9, "placement", "instance_group\nplacement.py", STATE_COLOUR),
    "control": (10.3, 1.1, "control state", "runs/control/\n<cascade>.json", STATE_COLOUR),
}

# (from, to, label); boxes side by side, left to right. Request arrows solid, control dashed.
REQUEST_ARROWS = [
    ("client", "cascade", "PROMPT, SEED"),
    ("cascade", "light", "the other queries"),
    ("light", "discriminator", "light image"),
    ("discriminator", "heavy", "confidence < t"),
]
CONTROL_ARROWS = [
    ("metrics", "demand", "arrivals,\nqueues"),
    ("demand", "planner", "demand\nqps"),
    ("planner", "placement", ""),
    ("planner", "control", ""),
]


def box_edge(name: str, side: str) -> tuple[float, float]:
    x, y = BOXES[name][:2]
    return {"left": (x - BOX_W / 2, y), "right": (x + BOX_W / 2, y),
            "top": (x, y + BOX_H / 2), "bottom": (x, y - BOX_H / 2)}[side]


def draw_box(ax, name: str) -> None:
    x, y, title, detail, colour = BOXES[name]
    ax.add_patch(FancyBboxPatch((x - BOX_W / 2, y - BOX_H / 2), BOX_W, BOX_H,
                                boxstyle="round,pad=0.04,rounding_size=0.12",
                                facecolor=colour, edgecolor="#333333", linewidth=1.2))
    ax.text(x, y + 0.22, title, ha="center", va="center", fontsize=11, fontweight="bold")
    ax.text(x, y - 0.2, detail, ha="center", va="center", fontsize=7.5, family="monospace")


def arrow(ax, points, dashed: bool = False) -> None:
    """A straight arrow through ``points`` (a polyline), head at the last point."""
    style = (0, (4, 3)) if dashed else "-"
    for a, b in itertools.pairwise(points[:-1]):
        ax.plot([a[0], b[0]], [a[1], b[1]], color="#333333", linewidth=1.4, linestyle=style)
    ax.add_patch(FancyArrowPatch(points[-2], points[-1], arrowstyle="-|>", mutation_scale=14,
                                 linewidth=1.4, linestyle=style, color="#333333",
                                 shrinkA=0 if len(points) > 2 else 2, shrinkB=2))


def label(ax, x: float, y: float, text: str, ha: str = "center") -> None:
    ax.text(x, y, text, ha=ha, va="center", fontsize=8, style="italic")


def draw_bands(ax) -> None:
    """The two dashed frames: per request inside Triton, per window in the orchestrator."""
    x, y, w, h = TRITON_BAND
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.2",
                                facecolor="none", edgecolor="#6b8fb3", linestyle=(0, (2, 2))))
    ax.text(x + 0.15, y + h - 0.2, "Triton (serving/): per dynamic batch, the cascade calls each stage (BLS)",
            fontsize=9, color="#3d6286", va="center")
    ax.text(0.1, 8.05, "request path", fontsize=13, fontweight="bold", color="#3d6286")
    x, y, w, h = ORCHESTRATOR_BAND
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.2",
                                facecolor="none", edgecolor="#c08a3e", linestyle=(0, (2, 2))))
    # at the bottom: the arrow from Triton's counters comes in at the top
    ax.text(x + 0.15, y + 0.25, "orchestrator (orchestrator/): every window (window_s, default 5 s)",
            fontsize=9, color="#8a5a1a", va="center")
    ax.text(0.1, 4.45, "control path", fontsize=13, fontweight="bold", color="#8a5a1a")


def draw(out: Path) -> None:
    fig, ax = plt.subplots(figsize=(16, 8.3))
    ax.set_xlim(0, 16.1)
    ax.set_ylim(-0.1, 8.5)
    ax.axis("off")
    draw_bands(ax)
    for name in BOXES:
        draw_box(ax, name)
    for src, dst, text in REQUEST_ARROWS:
        (x0, y0), (x1, y1) = box_edge(src, "right"), box_edge(dst, "left")
        arrow(ax, [(x0, y0 + 0.15), (x1, y1 + 0.15)])
        label(ax, (x0 + x1) / 2, y0 + 0.75, text)
    # the prompt router: a prompt scored at or above the router threshold skips light and the discriminator
    top = BOXES["cascade"][1] + BOX_H / 2
    arrow(ax, [(BOXES["cascade"][0], top), (BOXES["cascade"][0], top + 0.45), (BOXES["heavy"][0], top + 0.45),
               (BOXES["heavy"][0], top)])
    label(ax, 8.9, top + 0.55, "router score >= router threshold: straight to heavy (router model, serving/router.py)")
    # the answer goes back from the cascade to the client
    (x0, y0), (x1, y1) = box_edge("cascade", "left"), box_edge("client", "right")
    arrow(ax, [(x0, y0 - 0.2), (x1, y1 - 0.2)])
    label(ax, (x0 + x1) / 2, y0 - 0.75, "IMAGE,\nSERVED_BY")
    for src, dst, text in CONTROL_ARROWS:
        arrow(ax, [box_edge(src, "right"), box_edge(dst, "left")], dashed=True)
        if text:
            x0, x1 = box_edge(src, "right")[0], box_edge(dst, "left")[0]
            label(ax, (x0 + x1) / 2, BOXES[src][1] + 0.75, text)
    # Triton's counters feed the control loop
    arrow(ax, [(3.5, TRITON_BAND[1]), box_edge("metrics", "top")], dashed=True)
    label(ax, 3.0, 4.45, "success / fail counts,\nqueue times, drops", ha="left")
    # the plan reaches the models: instances through the model-control API (in place, no
    # reload), the rest through the control file that every model re-reads
    band_bottom = TRITON_BAND[1]
    px, py = box_edge("placement", "right")
    arrow(ax, [(px, py), (12.4, py), (12.4, band_bottom)], dashed=True)
    label(ax, 12.5, 3.6, "instances of light, heavy,\ndiscriminator:\nload_model(config),\nno reload", ha="left")
    cx, cy = box_edge("control", "right")
    arrow(ax, [(cx, cy), (14.6, cy), (14.6, band_bottom)], dashed=True)
    label(ax, 14.7, 2.1, "threshold, router\nthreshold, routing,\nbatch sizes, instances:\nevery model re-reads\nit (100 ms)", ha="left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    # no timestamp in the file, so an unchanged picture gives an unchanged PNG
    fig.savefig(out, dpi=100, metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "architecture.png",
                        help="PNG to write (default: docs/architecture.png)")
    args = parser.parse_args()
    draw(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
