"""The serving runtime generates images without importing torch, diffusers or transformers."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from serving.config import PROJECT_ROOT


def test_serving_path_imports_no_torch_diffusers_or_transformers(tiny_exported):
    _, repo = tiny_exported("sdxl")
    code = textwrap.dedent(f"""
        import sys
        import serving.triton.stage_model
        from serving import load_discriminator, load_stage
        images = load_stage({str(repo / "heavy" / "1" / "artifacts")!r}).generate(["a red circle"], [1])
        conf = load_discriminator({str(repo / "discriminator" / "1" / "artifacts")!r}).confidence(images)
        assert images.shape == (1, 32, 32, 3) and conf.shape == (1,)
        print(sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
