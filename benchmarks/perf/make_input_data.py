"""Write ``benchmarks/perf/prompts.json``: perf_analyzer input data (PROMPT + SEED per request).

    python -m benchmarks.perf.make_input_data   # regenerates the committed file

Prompts come from the tiny cascade's domain (``zoo.domain.eval_prompts``): half easy,
half hard, so that a perf run exercises both the light-served and the heavy-served paths.
"""
from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).with_name("prompts.json")


def input_data(prompts: list[str]) -> dict:
    """perf_analyzer's ``--input-data`` JSON: one entry per request (shape [1] per input)."""
    return {"data": [{"PROMPT": [p], "SEED": [i]} for i, p in enumerate(prompts)]}


def main() -> None:
    from zoo.domain import eval_prompts  # noqa: PLC0415

    prompts = eval_prompts(seed=2024, n_per_difficulty=16)
    rows = ",\n  ".join(json.dumps(r) for r in input_data(prompts)["data"])
    OUT.write_text('{"data": [\n  ' + rows + "\n]}\n")
    print(f"wrote {len(prompts)} requests to {OUT}")


if __name__ == "__main__":
    main()
