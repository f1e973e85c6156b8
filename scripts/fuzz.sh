#!/usr/bin/env bash
# Fuzz every parser that reads files from outside, each for a bounded time (cargo-fuzz + libFuzzer, fork mode so a
# crash does not end the run), seeded with the corpora in tests/data. Inputs that crash, run out of memory or time
# out are copied to fuzz/findings/<target>/; triage them into tests/data/fuzz/<target>/ (see its README).
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 300 s; default targets: all, one at a time)
#   targets: dicom_header dicom_pixels jpeg12 nifti pth pickle
#   FUZZ_SANITIZER=address|none   (default address; "none" when AddressSanitizer cannot build here)
#   FUZZ_JOBS=N                   parallel fuzzing processes per target (default 1)
# Works on a stable toolchain: cargo-fuzz's -Z flags are allowed through RUSTC_BOOTSTRAP=1.
# Group what was found by cause: scripts/fuzz_triage.py TARGET fuzz/findings/TARGET/*
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SECS=${1:-300}
shift || true
ALL=(dicom_header dicom_pixels jpeg12 nifti pth pickle)
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=("${ALL[@]}")
SAN=${FUZZ_SANITIZER:-address}
JOBS=${FUZZ_JOBS:-1}
# The per-input bounds of issue 12: a hostile file may cost at most 256 MiB and 5 s.
LIMITS=(-rss_limit_mb=512 -malloc_limit_mb=256 -timeout=5)

export RUSTC_BOOTSTRAP=1
# One decode thread: the fuzzer measures one input at a time, and the machine is shared.
export RAYON_NUM_THREADS=1
# A small ASan quarantine, so freed memory held back for use-after-free checks does not count as an OOM.
export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=16:detect_leaks=0}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

FUZZ=(cargo fuzz)
FLAGS=(-s "$SAN" --debug-assertions) # debug assertions turn on overflow checks, as the release profile should
"${FUZZ[@]}" build "${FLAGS[@]}"
BIN=${CARGO_TARGET_DIR:-$ROOT/fuzz/target}/x86_64-unknown-linux-gnu/release

# Seed corpora, built fresh from tests/data (fuzz/corpus/ is git-ignored and grows as the fuzzer finds inputs).
SEEDS=$ROOT/fuzz/corpus/_seeds
rm -rf "$SEEDS"
mkdir -p "$SEEDS"/{dicom,jpeg12,nifti,pth,pickle}
find tests/data/dicom -type f \( -name '*.dcm' -o -name DICOMDIR \) -size +0 -exec cp --backup=numbered -t "$SEEDS/dicom" {} +
for f in tests/data/preprocess/*.nii.gz tests/data/dicom/truth/*.nii.gz; do
  cp "$f" "$SEEDS/nifti/"
  # The plain .nii too (mutations of the header bytes then reach the parser), when it is small enough to fuzz.
  if [ "$(gzip -dc "$f" | wc -c)" -le 262144 ]; then gzip -dc "$f" >"$SEEDS/nifti/$(basename "$f" .gz)"; fi
done
if command -v python3 >/dev/null; then
  python3 tests/data/model/make_pth.py "$SEEDS/pth/small.pth" >/dev/null
  python3 - "$SEEDS" <<'PY'
import pathlib, sys, zipfile
seeds = pathlib.Path(sys.argv[1])
# The pickle on its own, for the unpickler target.
with zipfile.ZipFile(seeds / "pth/small.pth") as z:
    name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
    (seeds / "pickle/data.pkl").write_bytes(z.read(name))
# Bare JPEG streams (SOI .. EOI) out of the 12-bit JPEG Extended series, for the decoder target.
for p in sorted(pathlib.Path("tests/data/dicom/series/jpeg_extended_12bit").glob("*.dcm")):
    b = p.read_bytes()
    s, e = b.find(b"\xff\xd8\xff"), b.rfind(b"\xff\xd9")
    if 0 <= s < e:
        (seeds / "jpeg12" / (p.stem + ".jpg")).write_bytes(b[s : e + 2])
PY
else
  echo "warning: no python3: the pth, pickle and jpeg12 targets start from an empty corpus" >&2
fi

seed_dir() {
  case $1 in
    dicom_header | dicom_pixels) echo "$SEEDS/dicom" ;;
    *) echo "$SEEDS/$1" ;;
  esac
}

mkdir -p fuzz/logs fuzz/findings
summary=()
for t in "${TARGETS[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t" "fuzz/findings/$t"
  log=fuzz/logs/$t.log
  echo "== $t: ${SECS}s (log: $log)"
  start=$(date +%s)
  # Fork mode: each crash/OOM/timeout is saved and the run goes on until max_total_time. The binary is run
  # directly: `cargo fuzz run` would afterwards re-run every saved input one by one to print it.
  "$BIN/$t" "fuzz/corpus/$t" "$(seed_dir "$t")" \
    -fork="$JOBS" -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1 \
    -max_total_time="$SECS" "${LIMITS[@]}" -print_final_stats=1 \
    -artifact_prefix="$ROOT/fuzz/artifacts/$t/" >"$log" 2>&1 || true
  took=$(($(date +%s) - start))
  found=0
  for a in fuzz/artifacts/"$t"/*; do
    [ -f "$a" ] || continue
    cp -n "$a" "fuzz/findings/$t/"
    found=$((found + 1))
  done
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  summary+=("$t: ${took}s, ${found} finding(s) in fuzz/findings/$t; last: ${last:-no stats (see $log)}")
done

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
