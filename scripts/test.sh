#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine with Rust: installs the system packages the tests use
# (real dcm2niix, dciodvfy, dcmtk, Orthanc, elastix, systemd-analyze, Chromium, PostgreSQL), then runs format, lint and every test.
# Usage: scripts/test.sh            (from anywhere; CI calls it through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(dcm2niix dicom3tools dcmtk orthanc elastix systemd python3 strace chromium postgresql)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# nibabel + numpy for tests/nifti_nibabel.rs: pip for the python3 on PATH, else Debian's packages.
if ! python3 -c "import nibabel, numpy, sklearn" 2>/dev/null; then
  python3 -m pip install --quiet nibabel numpy scikit-learn 2>/dev/null || {
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-nibabel python3-numpy python3-sklearn >/dev/null
  }
fi
# antspyx (ANTs from Python, PyPI) for tests/ants_transforms.rs and benches/deformable.rs, in its own venv.
ANTS_VENV="${HOME}/.cache/ldae-ants-venv"
if ! "${ANTS_VENV}/bin/python" -c "import ants, nibabel, numpy" 2>/dev/null; then
  python3 -m venv "${ANTS_VENV}" 2>/dev/null || {
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "${ANTS_VENV}"
  }
  "${ANTS_VENV}/bin/python" -m pip install --quiet antspyx==0.6.3 nibabel numpy
fi
export LDAE_ANTS_PYTHON="${LDAE_ANTS_PYTHON:-${ANTS_VENV}/bin/python}"

# This script installs every tool the tests use, so by default every test must run for real: a missing tool or
# data file fails its test instead of skipping (tests/common/require.rs). LDAE_REQUIRE_ALL=0 allows skips.
export LDAE_REQUIRE_ALL="${LDAE_REQUIRE_ALL:-1}"

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
# Benchmarks (benches/, harness = false) run the peers and take minutes: `cargo bench` runs them, not this script.
cargo test --lib --bins --tests
