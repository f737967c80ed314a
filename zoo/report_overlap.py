"""Caption overlap between the report's prompt sets and the training streams (``zoo.report``).

The training data of the tiny cascade is drawn on the fly from seeded numpy Generators, so the
captions each model saw can be listed exactly by replaying its stream: the same calls to
:func:`zoo.domain.sample_batch` / :func:`zoo.domain.sample_scene`, in the same order, with the same
seed, batch size, hard share and number of steps (rendering included: it draws from the same
Generator, ~0.25 ms an image); the heavy model, a chain of runs, replays each run's stream. The
steps are :data:`zoo.build.STEPS`, the counts used for the
published weights; a model stopped earlier saw a prefix of its stream, so zero overlap with the
whole stream means zero with the prefix.

The judge is not replayed: it is trained on renders of every split on purpose (it must check
any prompt, :mod:`zoo.train_judge`) and never generates an image.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from zoo.domain import DIFFICULTIES, composition_key, parse_caption, sample_batch
from zoo.report_stats import caption_overlap

# zoo/train_router.py's --prompts default (the published router's training set size)
ROUTER_PROMPTS = 3000
NOT_REPLAYED = {"judge": "trained on renders of every split on purpose (it must check any prompt; zoo/train_judge.py); "
                         "it never generates an image"}


def _sample_batch_stream(name: str, seed: int, steps: int, batch_size: int, hard_share: float,
                         hard_kinds: dict | None = None) -> dict:
    rng = np.random.default_rng(seed)  # zoo.common.seed_everything(seed) returns this Generator
    captions, keys = [], []
    for _ in tqdm(range(steps), desc=f"replay {name}", mininterval=2.0):
        _, caps, scenes = sample_batch(rng, batch_size, hard_share=hard_share, hard_kinds=hard_kinds)
        captions += caps
        keys += [composition_key(s) for s in scenes]
    return {"config": {"seed": seed, "steps": steps, "batch_size": batch_size, "hard_share": hard_share,
                       "hard_kinds": hard_kinds},
            "captions": captions, "keys": keys}


def _discriminator_stream() -> dict:
    """zoo.train_discriminator.build_dataset's draws: heavy prompts + image seeds, light prompts +
    image seeds, then the real images, all from one Generator."""
    from zoo.train_discriminator import DiscriminatorTrainConfig  # noqa: PLC0415 (imports torch)

    cfg = DiscriminatorTrainConfig()
    rng = np.random.default_rng(cfg.seed)
    captions, keys = [], []
    for n, draws_seeds in ((cfg.n_heavy, True), (cfg.n_light, True), (cfg.n_real, False)):
        _, caps, scenes = sample_batch(rng, n, cfg.hard_share)
        if draws_seeds:
            rng.integers(0, 2**31 - 1, n)
        captions += caps
        keys += [composition_key(s) for s in scenes]
    return {"config": {"seed": cfg.seed, "n_heavy": cfg.n_heavy, "n_light": cfg.n_light, "n_real": cfg.n_real,
                       "hard_share": cfg.hard_share}, "captions": captions, "keys": keys}


def _router_stream() -> dict:
    from zoo.train_router import TRAIN_SEED, training_prompts  # noqa: PLC0415

    captions = training_prompts(TRAIN_SEED, ROUTER_PROMPTS)
    return {"config": {"seed": TRAIN_SEED, "prompts": ROUTER_PROMPTS, "hard_share": 0.5}, "captions": captions,
            "keys": [composition_key(parse_caption(c)) for c in captions]}


def _chain_stream(name: str, phases: Sequence[tuple[object, int]]) -> dict:
    """One model trained as a chain of runs (``(DiffusionTrainConfig, steps)`` each, every run
    restarting its seeded stream with its own prompt mix): the runs' streams, concatenated."""
    parts = [_sample_batch_stream(name, cfg.seed, n, cfg.batch_size, cfg.hard_share,
                                  dict(cfg.hard_kinds) if cfg.hard_kinds else None) for cfg, n in phases if n > 0]
    return {"config": {"phases": [p["config"] for p in parts]},
            "captions": [c for p in parts for c in p["captions"]], "keys": [k for p in parts for k in p["keys"]]}


def _capped(steps: Sequence[int], total: int) -> list[int]:
    """The phases' step counts cut so that they sum to at most ``total`` (a prefix of the chain)."""
    out = []
    for n in steps:
        out.append(max(0, min(n, total - sum(out))))
    return out


def replay_streams(max_steps: int | None = None, steps: dict[str, int] | None = None) -> dict[str, dict]:
    """Every training caption stream: ``{name: {"config", "captions", "keys"}}``.

    ``steps``: the VAE, heavy and light streams' step counts where they differ from
    :data:`zoo.build.STEPS` (weights trained with ``--steps``; for heavy, a chain of runs
    (:data:`zoo.build.HEAVY_PHASES`), the total: its phases are replayed up to it); ``max_steps``
    caps them (a quick look; for heavy the chain's total, so a small cap replays only the first
    phase).
    """
    from zoo.build import HEAVY_PHASES, STEPS  # noqa: PLC0415 (imports torch)
    from zoo.train_diffusion import ROLES, phase_config  # noqa: PLC0415 (imports diffusers)
    from zoo.train_vae import VAETrainConfig  # noqa: PLC0415

    unknown = set(steps or {}) - {"vae", "heavy", "light"}
    if unknown:
        raise ValueError(f"replay steps given for {sorted(unknown)}; expected vae, heavy or light")

    def count(name: str) -> int:
        n = (steps or {}).get(name, STEPS[name])
        return n if max_steps is None else min(n, max_steps)

    vae = VAETrainConfig()
    streams = {"vae": _sample_batch_stream("vae", vae.seed, count("vae"), vae.batch_size, 0.5)}
    heavy_steps = _capped([p.steps for p in HEAVY_PHASES], count("heavy"))
    streams["heavy"] = _chain_stream("heavy", [(phase_config("heavy", p.options), n)
                                               for p, n in zip(HEAVY_PHASES, heavy_steps)])
    light = ROLES["light"]
    streams["light"] = _sample_batch_stream("light", light.seed, count("light"), light.batch_size, light.hard_share,
                                            dict(light.hard_kinds) if light.hard_kinds else None)
    streams["discriminator"] = _discriminator_stream()
    streams["router"] = _router_stream()
    return streams


def _difficulties(captions: Sequence[str]) -> np.ndarray:
    return np.array([parse_caption(c).difficulty for c in captions])


def overlap_section(streams: dict[str, dict], prompt_sets: dict[str, Sequence[str]]) -> dict:
    """Per stream and per prompt set: distinct captions of the set found in the stream (overall and
    per difficulty) and distinct composition keys found (a key covers the mirrored form, "B right
    of A" for "A left of B"); then the prompt sets against each other. ``all_zero``: no overlap."""
    keys = {name: [composition_key(parse_caption(c)) for c in caps] for name, caps in prompt_sets.items()}
    diffs = {name: _difficulties(caps) for name, caps in prompt_sets.items()}
    out: dict = {"prompt_sets": {name: {"captions": len(caps), "distinct": len(set(caps)),
                                        "distinct_composition_keys": len(set(keys[name]))}
                                 for name, caps in prompt_sets.items()}, "streams": {}}
    total = 0
    for sname, stream in streams.items():
        row = {**stream["config"], "captions": len(stream["captions"]), "distinct": len(set(stream["captions"])),
               "distinct_composition_keys": len(set(stream["keys"]))}
        for pname, caps in prompt_sets.items():
            arr = np.asarray(caps, dtype=object)
            by_diff = {d: caption_overlap(arr[diffs[pname] == d], stream["captions"])["reference_in_stream"]
                       for d in DIFFICULTIES}
            row[f"{pname}_distinct_in_stream"] = caption_overlap(caps, stream["captions"])["reference_in_stream"]
            row[f"{pname}_distinct_in_stream_by_difficulty"] = by_diff
            row[f"{pname}_composition_keys_in_stream"] = caption_overlap(keys[pname], stream["keys"])["reference_in_stream"]
            total += row[f"{pname}_distinct_in_stream"] + row[f"{pname}_composition_keys_in_stream"]
        out["streams"][sname] = row
    names = list(prompt_sets)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            pair = {"captions_in_common": caption_overlap(prompt_sets[a], prompt_sets[b])["reference_in_stream"],
                    "composition_keys_in_common": caption_overlap(keys[a], keys[b])["reference_in_stream"]}
            out[f"{a}_vs_{b}"] = pair
            total += sum(pair.values())
    out["all_zero"] = total == 0
    out["not_replayed"] = NOT_REPLAYED
    return out
