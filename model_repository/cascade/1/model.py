"""Triton entry point of the cascade BLS model (thin: the code is serving.triton.cascade_model)."""
import os
import sys
from pathlib import Path

# The Python stub ignores PYTHONPATH; orchestrator.server exports PROJECT_ROOT (fallback: this repo).
sys.path.insert(0, os.environ.get("PROJECT_ROOT") or str(Path(__file__).resolve().parents[3]))

from serving.triton.cascade_model import TritonPythonModel  # noqa: E402,F401
