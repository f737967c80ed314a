"""Stand-in stage model (test double); the code is ../../standin.py."""
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("standin", Path(__file__).resolve().parents[2] / "standin.py")
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)


class TritonPythonModel(_mod.StandIn):
    pass
