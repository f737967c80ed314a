"""Triton Python-backend adapters: the stage models, the cascade BLS model and its metrics."""
