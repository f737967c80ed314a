#!/usr/bin/env bash
# Idempotent environment setup: a venv in .venv with pinned packages, the Triton Python
# backend stub for this Python, and the Debian library perf_analyzer needs.
# Re-runs are cheap: pip runs only when pyproject.toml changed since the last setup.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.setup-stamp"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing pinned packages (first run: about 1-3 minutes)"
  "$VENV/bin/pip" install -q -e ".[dev]"
  touch "$stamp"
fi

# Triton's Python backend needs the stub built for this Python next to libtriton_python.so.
"$VENV/bin/python" - <<'PYEOF'
import shutil, sys
from pathlib import Path
import pytriton
root = Path(pytriton.__file__).parent / "tritonserver"
ver = f"{sys.version_info.major}.{sys.version_info.minor}"
src = root / "python_backend_stubs" / ver / "triton_python_backend_stub"
dst = root / "backends" / "python" / "triton_python_backend_stub"
if not src.exists():
    sys.exit(f"[setup] no Triton Python backend stub for Python {ver} in {src.parent}")
if not dst.exists() or dst.stat().st_size != src.stat().st_size:
    shutil.copy2(src, dst)
    print(f"[setup] installed Python {ver} backend stub")
PYEOF

# perf_analyzer links libb64.so.0d (Debian libb64-0d); install it when we can.
if ! ldconfig -p | grep -q 'libb64.so.0d'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing libb64-0d for perf_analyzer"
    (apt-get install -y -q libb64-0d >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libb64-0d >/dev/null; }) \
      || echo "[setup] WARNING: could not install libb64-0d; perf_analyzer will not run"
  else
    echo "[setup] WARNING: libb64-0d missing (sudo apt-get install libb64-0d); perf_analyzer will not run"
  fi
fi
# The cluster (make cluster, tests/test_cluster*.py) runs the distribution's HAProxy and Prometheus;
# tests/test_k8s_manifests.py renders deploy/k8s with kubectl (kustomize built in).
need=()
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v prometheus >/dev/null || need+=(prometheus)
command -v kubectl >/dev/null || need+=(kubectl)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing ${need[*]} (Debian packages)"
    apt-get update -q >/dev/null 2>&1 || true
    for pkg in "${need[@]}"; do
      # kubectl: Debian's package is kubernetes-client where no kubectl package is configured
      if [ "$pkg" = kubectl ]; then
        apt-get install -y -q kubectl >/dev/null 2>&1 || apt-get install -y -q kubernetes-client >/dev/null \
          || echo "[setup] WARNING: could not install kubectl; the Kubernetes manifest test will fail"
      else
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$pkg" >/dev/null \
          || echo "[setup] WARNING: could not install $pkg; the cluster tests will fail"
      fi
    done
  else
    echo "[setup] WARNING: missing ${need[*]} (sudo apt-get install haproxy prometheus kubectl); the cluster tests will fail"
  fi
fi
# AOTInductor CPU packages (`python -m export export --cpu-aot`, tests/test_export_aot.py) compile C++ with g++.
if ! command -v g++ >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing g++ for AOTInductor CPU packages"
    (apt-get install -y -q g++ >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q g++ >/dev/null; }) \
      || echo "[setup] WARNING: could not install g++; --cpu-aot exports and their tests will fail"
  else
    echo "[setup] WARNING: g++ missing (sudo apt-get install g++); --cpu-aot exports and their tests will fail"
  fi
fi
echo "[setup] ok"
