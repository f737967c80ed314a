"""Serving-time runtime (no diffusers/transformers): exported stages, discriminator, schedulers, control file.

``load_stage(artifact_dir) -> StagePipeline`` and ``load_discriminator(artifact_dir) ->
Discriminator`` are the entry points (docs/interfaces.md section 2).
"""
from serving.discriminator import Discriminator, load_discriminator
from serving.pipeline import StagePipeline, load_stage
from serving.stage import StageSpecError, StaleArtifacts

__all__ = ["Discriminator", "StagePipeline", "StageSpecError", "StaleArtifacts", "load_discriminator", "load_stage"]
