#!/usr/bin/env bash
# The demo model's recipe (issue 15): build the synthetic training set, train the three LDAE stages with
# `ldae train`, and install the result in weights/demo (or OUT_MODEL).
#
#   scripts/train-demo.sh [WORK (default var/demo-train)] [OUT_MODEL (default weights/demo)]
#
# Sizes: config/demo-model.json (model input 48×64×56 at 3 mm; AEKL 16/32/32, latent 3×12×16×14; ShiftUNet base
# 32 ×[1, 2]; ConvNeXt 16/32/64, y_sem 64). Runs: config/train-{aekl,ddpm,repr}.toml. Data: scripts/make-train-set
# (40 synthetic subjects × 5 sessions from the MNI 2009a/2009c templates; docs/training-data.md); Colin27 and the
# ITK native head are never used (scripts/demo-quality.sh evaluates on them).
# Each stage resumes from its checkpoint if WORK already holds one, so an interrupted run continues.
# Environment: LDAE_PROFILE (release | dev, default release), DEVICE (cpu | cuda: overrides the tomls' device).
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-var/demo-train}"
dest="${2:-weights/demo}"
profile="${LDAE_PROFILE:-release}"
cargo build --quiet --profile "$profile" --bin ldae --bin make-train-set
bin="target/$([ "$profile" = dev ] && echo debug || echo "$profile")"
grid=(--pixdim 3 --shape 48,64,56)
[ -f "$work/set/labels.csv" ] || LDAE_PROFILE="$profile" scripts/make-train-set "$work/set" --subjects 80 "${grid[@]}"

stage() { # name init-dir
  local name="$1" init="${2:-}" args=()
  [ -n "$init" ] && args+=(--init "$init")
  [ -f "$work/$name/checkpoint/state.json" ] && args+=(--resume)
  if [ -n "${DEVICE:-}" ]; then
    sed "s/^device = .*/device = \"$DEVICE\"/" "config/train-$name.toml" >"config/.train-$name.$DEVICE.toml"
    cfg="config/.train-$name.$DEVICE.toml"
  else
    cfg="config/train-$name.toml"
  fi
  local t0; t0=$(date +%s)
  "$bin/ldae" --log warn train "$name" --config "$cfg" --data "$work/set" -o "$work/$name" "${args[@]}" --json \
    | tee "$work/$name.summary.json"
  echo "stage $name: $(( $(date +%s) - t0 )) s" | tee -a "$work/times.txt"
}
stage aekl
stage ddpm "$work/aekl"
stage repr "$work/ddpm"

mkdir -p "$dest"
for f in config.json autoencoderkl.safetensors encoder.safetensors decoder.safetensors; do
  cp "$work/repr/$f" "$dest/$f"
done
rm -f "$dest/manifest.json"
"$bin/ldae" --log warn weights check "$dest"
echo "installed the trained model in $dest"
