"""Export a diffusers text-to-image pipeline's text encoder(s), UNet and VAE decoder to ONNX.

Supported: ``StableDiffusionPipeline`` (SD 1.x/2.x, SD-Turbo, SDXS) and
``StableDiffusionXLPipeline`` (SDXL, SDXL-Lightning). Every graph has a dynamic batch axis;
the UNet sees twice the query batch under classifier-free guidance. Uses
``torch.onnx.export(dynamo=False, opset_version=17)`` (the TorchScript exporter; the dynamo one
needs onnxscript). Export-time only: this module imports torch and diffusers.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from serving.config import SCHEDULER_CLASSES, ConfigError, StageConfig

OPSET = 17
SUPPORTED_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")


class UnsupportedPipeline(ValueError):
    """The model folder holds a pipeline class this exporter does not handle."""


class IncompatibleShapes(ValueError):
    """The configured image size does not fit the VAE/UNet (latent size not divisible, ...)."""


def pipeline_class_of(location: tuple[str, str]) -> str:
    """The ``_class_name`` in a local folder's ``model_index.json`` (hub ids: resolved at load)."""
    kind, where = location
    if kind != "local":
        return ""
    index = Path(where) / "model_index.json"
    if not index.exists():
        raise ConfigError(f"{where} is not a diffusers pipeline folder (no model_index.json)")
    return json.loads(index.read_text()).get("_class_name", "")


def load_pipeline(stage: StageConfig):
    """Load the stage's diffusers pipeline in float32 on CPU with the configured scheduler.

    Raises :class:`ConfigError` for a missing folder or an unreachable hub id and
    :class:`UnsupportedPipeline` for a class other than :data:`SUPPORTED_PIPELINES`.
    """
    import diffusers  # noqa: PLC0415

    location = stage.model_location()
    cls_name = pipeline_class_of(location)
    if cls_name and cls_name not in SUPPORTED_PIPELINES:
        raise UnsupportedPipeline(f"{stage.model}: pipeline class {cls_name!r}; supported: {SUPPORTED_PIPELINES}")
    kwargs: dict[str, Any] = {"dtype": torch.float32, "low_cpu_mem_usage": False}
    if cls_name in ("", "StableDiffusionPipeline"):
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    try:
        pipe = diffusers.DiffusionPipeline.from_pretrained(location[1], **kwargs)
    except (OSError, ValueError) as exc:
        where = "hub id" if location[0] == "hub" else "folder"
        raise ConfigError(f"could not load {where} {stage.model!r}: {exc}") from exc
    if type(pipe).__name__ not in SUPPORTED_PIPELINES:
        raise UnsupportedPipeline(f"{stage.model}: pipeline class {type(pipe).__name__!r}; supported: {SUPPORTED_PIPELINES}")
    apply_scheduler(pipe, stage)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def apply_scheduler(pipe, stage: StageConfig) -> None:
    """Replace ``pipe.scheduler`` by the configured class/options (``from_model`` keeps the class)."""
    import diffusers  # noqa: PLC0415

    choice = stage.scheduler
    if choice.name == "from_model" and not choice.options:
        return
    cls = type(pipe.scheduler) if choice.name == "from_model" else getattr(diffusers, SCHEDULER_CLASSES[choice.name])
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **dict(choice.options))


def scheduler_config(pipe) -> dict[str, Any]:
    """The pipeline scheduler's config dict with ``_class_name`` (what the numpy runtime reads)."""
    cfg = {k: v for k, v in dict(pipe.scheduler.config).items() if not k.startswith("_")}
    for k, v in cfg.items():
        if isinstance(v, tuple):
            cfg[k] = list(v)
    return {"_class_name": type(pipe.scheduler).__name__, **cfg}


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Shapes of one stage: pixels, latents (channels, h, w), token lengths and embedding widths."""

    kind: str
    height_px: int
    width_px: int
    latent_shape: tuple[int, int, int]
    max_length_tokens: tuple[int, ...]
    embed_dim: int
    pooled_dim: int | None


def geometry(pipe, stage: StageConfig) -> Geometry:
    """Check the configured image size against the VAE and UNet; raise :class:`IncompatibleShapes`."""
    kind = "sdxl" if type(pipe).__name__ == "StableDiffusionXLPipeline" else "sd"
    vae_factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    h, w = stage.height_px, stage.width_px
    if h % vae_factor or w % vae_factor:
        raise IncompatibleShapes(f"{stage.model}: image {h}x{w} px is not divisible by the VAE factor {vae_factor}")
    lh, lw = h // vae_factor, w // vae_factor
    unet_factor = 2 ** (len(pipe.unet.config.block_out_channels) - 1)
    if lh % unet_factor or lw % unet_factor:
        raise IncompatibleShapes(f"{stage.model}: latents {lh}x{lw} (image {h}x{w} px) are not divisible by the "
                                 f"UNet's downsampling {unet_factor}; pick a size divisible by {vae_factor * unet_factor}")
    c = pipe.unet.config.in_channels
    if c != pipe.vae.config.latent_channels:
        raise IncompatibleShapes(f"{stage.model}: UNet in_channels {c} != VAE latent_channels {pipe.vae.config.latent_channels}")
    toks = [pipe.tokenizer] + ([pipe.tokenizer_2] if kind == "sdxl" else [])
    encs = [pipe.text_encoder] + ([pipe.text_encoder_2] if kind == "sdxl" else [])
    if any(t is None for t in toks) or any(e is None for e in encs):
        raise UnsupportedPipeline(f"{stage.model}: a tokenizer or text encoder is missing (refiner-only pipelines are not supported)")
    lengths = []
    for t, e in zip(toks, encs):
        n = int(t.model_max_length)
        if n > e.config.max_position_embeddings:
            raise IncompatibleShapes(f"{stage.model}: tokenizer model_max_length {n} exceeds the text encoder's "
                                     f"max_position_embeddings {e.config.max_position_embeddings}")
        lengths.append(n)
    if kind == "sdxl" and lengths[0] != lengths[1]:
        raise IncompatibleShapes(f"{stage.model}: SDXL tokenizers have different max lengths {lengths}")
    embed = sum(e.config.hidden_size for e in encs)
    if embed != pipe.unet.config.cross_attention_dim:
        raise IncompatibleShapes(f"{stage.model}: text embedding width {embed} != UNet cross_attention_dim "
                                 f"{pipe.unet.config.cross_attention_dim}")
    pooled = pipe.text_encoder_2.config.projection_dim if kind == "sdxl" else None
    return Geometry(kind, h, w, (c, lh, lw), tuple(lengths), embed, pooled)


# -- export wrappers: plain tensors in, plain tensors out -------------------------------------
class _SDText(torch.nn.Module):
    def __init__(self, te):
        super().__init__()
        self.te = te

    def forward(self, input_ids):
        return self.te(input_ids, return_dict=False)[0]


class _SDXLText(torch.nn.Module):
    def __init__(self, te, te2):
        super().__init__()
        self.te, self.te2 = te, te2

    def forward(self, input_ids, input_ids_2):
        # SDXL conditions on the penultimate hidden states of both encoders; pooled from the second
        h1 = self.te(input_ids, output_hidden_states=True).hidden_states[-2]
        o2 = self.te2(input_ids_2, output_hidden_states=True)
        return torch.cat([h1, o2.hidden_states[-2]], dim=-1), o2.text_embeds


class _UNet(torch.nn.Module):
    def __init__(self, unet, sdxl: bool):
        super().__init__()
        self.unet, self.sdxl = unet, sdxl

    def forward(self, sample, timestep, encoder_hidden_states, text_embeds=None, time_ids=None):
        added = {"text_embeds": text_embeds, "time_ids": time_ids} if self.sdxl else None
        return self.unet(sample, timestep, encoder_hidden_states, added_cond_kwargs=added, return_dict=False)[0]


class _VAEDecoder(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latents):
        return self.vae.decode(latents, return_dict=False)[0]


@dataclasses.dataclass(frozen=True)
class Component:
    """One exported graph: file name, input/output names, and example inputs (batch 2) for checks."""

    name: str
    module: torch.nn.Module
    inputs: dict[str, torch.Tensor]
    outputs: tuple[str, ...]

    @property
    def onnx_file(self) -> str:
        return f"{self.name}.onnx"


def components(pipe, geo: Geometry, seed: int = 0) -> list[Component]:
    """The text encoder, UNet and VAE decoder of ``pipe`` wrapped for export, with example inputs."""
    g = torch.Generator().manual_seed(seed)
    b = 2
    for enc in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
        if enc is not None and hasattr(enc, "set_attn_implementation"):
            enc.set_attn_implementation("eager")  # SDPA's mask handling does not trace to ONNX cleanly
    vocab = min(pipe.tokenizer.vocab_size, pipe.text_encoder.config.vocab_size)
    ids = torch.randint(0, vocab, (b, geo.max_length_tokens[0]), generator=g)
    c, lh, lw = geo.latent_shape
    unet_in = {"sample": torch.randn(b, c, lh, lw, generator=g), "timestep": torch.tensor([999.0, 500.0]),
               "encoder_hidden_states": torch.randn(b, geo.max_length_tokens[0], geo.embed_dim, generator=g)}
    if geo.kind == "sdxl":
        text = Component("text_encoder", _SDXLText(pipe.text_encoder, pipe.text_encoder_2),
                         {"input_ids": ids, "input_ids_2": ids.clone()}, ("prompt_embeds", "pooled_prompt_embeds"))
        unet_in["text_embeds"] = torch.randn(b, geo.pooled_dim, generator=g)
        unet_in["time_ids"] = torch.tensor([[geo.height_px, geo.width_px, 0, 0, geo.height_px, geo.width_px]] * b,
                                           dtype=torch.float32)
    else:
        text = Component("text_encoder", _SDText(pipe.text_encoder), {"input_ids": ids}, ("prompt_embeds",))
    unet = Component("unet", _UNet(pipe.unet, geo.kind == "sdxl"), unet_in, ("noise_pred",))
    vae = Component("vae_decoder", _VAEDecoder(pipe.vae), {"latents": torch.randn(b, c, lh, lw, generator=g)}, ("image",))
    return [text, unet, vae]


@contextlib.contextmanager
def _quiet_tracer():
    """Hide the tracer's warnings about diffusers' shape checks (``if batch >= 64: contiguous()`` and the
    like): they only pick a memory layout, never a value, so the traced graph is right for every batch."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*aten::index.*")  # SDXL pooled-token gather: indices >= 0
        yield


def export_onnx(comp: Component, out_dir: Path) -> Path:
    """Write ``<out_dir>/<name>.onnx`` with every input/output batch axis dynamic; returns the path."""
    path = out_dir / comp.onnx_file
    dyn = {n: {0: "batch"} for n in (*comp.inputs, *comp.outputs)}
    comp.module.eval()
    with torch.no_grad(), _quiet_tracer():
        torch.onnx.export(comp.module, tuple(comp.inputs.values()), str(path), input_names=list(comp.inputs),
                          output_names=list(comp.outputs), dynamic_axes=dyn, opset_version=OPSET, dynamo=False)
    return path


def torch_outputs(comp: Component, inputs: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """The PyTorch reference outputs (numpy) of ``comp`` for ``inputs`` (default: its example inputs)."""
    with torch.no_grad():
        out = comp.module(*(inputs or comp.inputs).values())
    out = out if isinstance(out, tuple) else (out,)
    return {n: o.detach().numpy() for n, o in zip(comp.outputs, out)}


def export_discriminator_onnx(module: torch.nn.Module, image_size_px: int, out_dir: Path) -> tuple[Path, dict, Any]:
    """Export a discriminator (float32 NCHW [0, 1] -> logits [B]) as ``discriminator.onnx``.

    Returns (path, example inputs, PyTorch logits for them) for verification.
    """
    x = torch.rand(2, 3, image_size_px, image_size_px, generator=torch.Generator().manual_seed(0))
    module.eval()
    with torch.no_grad():
        ref = module(x)
    if tuple(ref.shape) != (2,):
        raise IncompatibleShapes(f"discriminator output shape {tuple(ref.shape)} for a batch of 2; expected (2,) logits")
    path = out_dir / "discriminator.onnx"
    with torch.no_grad(), _quiet_tracer():
        torch.onnx.export(module, (x,), str(path), input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=OPSET,
                          dynamo=False)
    return path, {"images": x.numpy()}, ref.numpy()
