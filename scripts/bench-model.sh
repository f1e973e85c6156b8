#!/usr/bin/env bash
# LDAE model speed against PyTorch (CPU, same machine, same threads): installs torch, numpy and safetensors from
# PyPI into a private venv (default ~/.cache/ldae-torch-venv, shared with scripts/make_train_fixtures.py; override
# with LDAE_BENCH_VENV), then runs benches/model.rs in release (LDAE_BENCH_NAME=train_step runs
# benches/train_step.rs, one training step per stage, instead). Environment knobs: see the bench's doc comment
# (LDAE_BENCH_THREADS, LDAE_BENCH_STEPS, LDAE_BENCH_SIZE, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LDAE_BENCH_VENV:-$HOME/.cache/ldae-torch-venv}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import torch, numpy, safetensors' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch numpy safetensors
fi
LDAE_BENCH_PYTHON="$VENV/bin/python" cargo bench --bench "${LDAE_BENCH_NAME:-model}" "$@"
