#!/usr/bin/env bash
# The demo model's quality, as printed numbers (issue 15, "Quality"): run after training.
#
#   1. reconstruction of two real heads the model never saw (Colin27 with skull, the ITK native head):
#      ldae preprocess -> encode -> decode at STEPS DDIM steps, SSIM against the model input inside the template
#      brain mask; and the AutoencoderKL alone (decode of the posterior mean), the ceiling of that chain;
#   2. a linear probe on y_sem predicting the age variable of held-out synthetic subjects: a fresh set from
#      make-train-set (seed 1000, not the training set's), ridge fitted on its train+val subjects with
#      `ldae probe fit`, scored on its test subjects (R², MAE, and the MAE of always predicting the train mean);
#   3. an interpolation between the first and last session of one held-out subject: previews (input A,
#      alpha 0.25 / 0.5 / 0.75, input B) side by side in OUT/interpolation.png.
#
# Usage: scripts/demo-quality.sh [MODEL_DIR (default weights/demo)] [OUT (default var/demo-quality)]
# Environment: STEPS (default 10, [model] steps of config/ldae.toml), LDAE_PROFILE (release | dev, default
# release), COLIN27 and ITK_HEAD (paths to the heads; defaults below), PROBE_SUBJECTS (16), PROBE_SESSIONS (3),
# DEVICE (cpu | cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-weights/demo}"
out="${2:-var/demo-quality}"
steps="${STEPS:-10}"
profile="${LDAE_PROFILE:-release}"
device="${DEVICE:-cpu}"
colin="${COLIN27:-}"
if [ -z "$colin" ]; then
  for c in tests/data/shared/testdata/volumes/mricron/ch2.nii.gz "${LDAE_SHARED:-../shared}/testdata/volumes/mricron/ch2.nii.gz"; do
    [ -f "$c" ] && { colin="$c"; break; }
  done
fi
itk="${ITK_HEAD:-tests/data/preprocess/KmeansTest_T1UCharRaw.nii.gz}"

cargo build --quiet --profile "$profile" --bin ldae --bin make-train-set --bin quality-metrics
bin="target/$([ "$profile" = dev ] && echo debug || echo "$profile")"
ldae=("$bin/ldae" --log warn)
qm="$bin/quality-metrics"
run=(--model "$model" --steps "$steps" --device "$device")
mkdir -p "$out"
start=$(date +%s)
echo "model $model, $steps DDIM steps, $device; outputs in $out"

echo "== reconstruction of real heads (SSIM vs the model input, inside the template brain mask)"
recon() { # name path
  local name="$1" path="$2"
  if [ -z "$path" ] || [ ! -f "$path" ]; then echo "$name: MISSING (set ${3:-its path})"; return; fi
  "${ldae[@]}" preprocess "$path" --model "$model" -o "$out/$name.input.nii.gz"
  "${ldae[@]}" encode "$out/$name.input.nii.gz" "${run[@]}" -o "$out/$name.codes.safetensors"
  "${ldae[@]}" decode "$out/$name.codes.safetensors" "${run[@]}" -o "$out/$name.recon.nii.gz"
  "${ldae[@]}" preview "$out/$name.input.nii.gz" -o "$out/$name.input.png"
  "${ldae[@]}" preview "$out/$name.recon.nii.gz" --synthetic -o "$out/$name.recon.png"
  "$qm" montage "$out/$name.input.png" "$out/$name.recon.png" -o "$out/$name.reconstruction.png"
  echo "$name: $("$qm" ssim "$out/$name.input.nii.gz" "$out/$name.recon.nii.gz")"
  "$qm" autoencode "$out/$name.input.nii.gz" --model "$model" -o "$out/$name.autoencoded.nii.gz"
  echo "  the autoencoder alone, decode(mu): $("$qm" ssim "$out/$name.input.nii.gz" "$out/$name.autoencoded.nii.gz")"
}
recon colin27_with_skull "$colin" COLIN27
recon itk_native_head "$itk" ITK_HEAD

echo "== linear probe on y_sem: age of held-out synthetic subjects"
probe="$out/probe"
"$bin/make-train-set" --model "$model" --subjects "${PROBE_SUBJECTS:-16}" --sessions "${PROBE_SESSIONS:-3}" \
  --seed 1000 --split 0.6,0.15 -o "$probe/set" 2>"$probe.log" || { cat "$probe.log" >&2; exit 1; }
mkdir -p "$probe/codes"
tail -n +2 "$probe/set/labels.csv" | while IFS=, read -r id _ _ _ _ _ file; do
  "${ldae[@]}" encode "$probe/set/$file" "${run[@]}" -o "$probe/codes/$id.codes.safetensors"
done
"$qm" embeddings --labels "$probe/set/labels.csv" --codes "$probe/codes" --split train,val -o "$probe/fit"
"$qm" embeddings --labels "$probe/set/labels.csv" --codes "$probe/codes" --split test -o "$probe/test"
"${ldae[@]}" probe fit --labels "$probe/fit.csv" --target age --embeddings "$probe/fit.npy" \
  --index "$probe/fit.csv" -o "$probe/age_probe.safetensors" | sed 's/^/  cross-validated on train+val: /'
"${ldae[@]}" probe apply "$probe/age_probe.safetensors" --embeddings "$probe/test.npy" --index "$probe/test.csv" \
  >"$probe/pred.tsv"
"$qm" score --pred "$probe/pred.tsv" --truth "$probe/test.csv" --train "$probe/fit.csv" --target age

echo "== interpolation between two sessions of one held-out subject"
first=$(awk -F, 'NR > 1 && $6 == "test" { print $1; exit }' "$probe/set/labels.csv")
subject=${first%_ses-*}
last=$(awk -F, -v s="$subject" 'NR > 1 && $2 == s { id = $1 } END { print id }' "$probe/set/labels.csv")
pics=("$out/interp_a.png")
"${ldae[@]}" preview "$probe/set/$first.nii.gz" -o "$out/interp_a.png"
for alpha in 0.25 0.5 0.75; do
  "${ldae[@]}" interpolate "$probe/codes/$first.codes.safetensors" "$probe/codes/$last.codes.safetensors" \
    --alpha "$alpha" "${run[@]}" -o "$out/interp_$alpha.nii.gz"
  "${ldae[@]}" preview "$out/interp_$alpha.nii.gz" --synthetic -o "$out/interp_$alpha.png"
  pics+=("$out/interp_$alpha.png")
done
"${ldae[@]}" preview "$probe/set/$last.nii.gz" -o "$out/interp_b.png"
pics+=("$out/interp_b.png")
"$qm" montage "${pics[@]}" -o "$out/interpolation.png"
echo "$first -> $last (ages $(awk -F, -v a="$first" -v b="$last" '$1 == a || $1 == b { printf "%s ", $4 }' "$probe/set/labels.csv")): $out/interpolation.png"
echo "done in $(( $(date +%s) - start )) s"
