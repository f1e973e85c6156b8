#!/usr/bin/env bash
# LDAE model speed against PyTorch (CPU, same machine, same threads): installs torch, numpy and safetensors from
# PyPI into a private venv (default target/bench-venv, override with LDAE_BENCH_VENV), then runs benches/model.rs in
# release. Environment knobs: see benches/model.rs (LDAE_BENCH_THREADS, LDAE_BENCH_STEPS, LDAE_BENCH_SIZE, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LDAE_BENCH_VENV:-${CARGO_TARGET_DIR:-target}/bench-venv}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import torch, numpy, safetensors' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch numpy safetensors
fi
LDAE_BENCH_PYTHON="$VENV/bin/python" cargo bench --bench model "$@"
