#!/usr/bin/env python3
"""Evaluate ldae's gap filling on the simulated longitudinal patients (issue 13, item 7).

For each inner session s of each subject in ../shared/testdata/longitudinal (the tests of its README):
a fresh ldae installation in a temp dir (the repository's MNI template + mask, the model given by --model,
[longitudinal] auto_fill = false), every session of the subject except s copied into incoming/, the real
`ldae serve` started, a wait until every dropped series is encoded (`ldae status --json`), then
`ldae fill PATIENTID --date <s's date> --wait --json`. The synthetic timepoint is scored against the withheld
truth with exactly the recipe of baselines.json; next to it, references that locate the losses:

  template: the fill's template-space volume (synthetic-template.nii.gz, beside the native synthetic.nii.gz)
            resampled trilinearly onto the truth grid by world coordinates (ldae's template is MNI ICBM152
            2009a, the space of the truth grid);
  native:   the native-grid synthetic.nii.gz (on the nearer neighbour's grid) mapped onto the truth grid with
            that neighbour's EXACT native_to_template transform from truth/*.json, as baselines (c)/(d) do for
            the DICOM (so it also scores what the daemon's own registration loses on the way back).

  input_linear / input_nearest: no model at all: the two neighbours' model inputs (what ldae's preprocessing
            and registration hand the encoder, template space on the model's grid) resampled to the truth grid,
            norm()-ed and combined as baselines (c)/(d) combine the DICOM: the ceiling of a model that merely
            reproduced its inputs on this grid (a coarse model grid costs detail here, before any weights);
  converted_linear / converted_nearest: ldae's own conversion of the neighbours (native grid) mapped with the
            exact transforms and combined like (c)/(d): a check of the conversion's geometry and of the mapping
            (should land on baselines (c)/(d), which read the DICOM with pydicom);
  truth_via_model_grid: an oracle for the grid alone: the withheld truth sampled onto the model's grid and
            back (trilinear both ways).

The recipe is checked first on every test: baselines (a) and (b) recomputed from the neighbours' truths must
match baselines.json (SSIM within 1e-4, MSE within 0.1 %), or the script stops.

It prints the scores next to the baselines (linear, nearest, dicom_linear, dicom_nearest, dicom_self), the
timings (encode wall time per series, fill time), and writes everything as JSON (--out).

Run (from the repository root, after `cargo build --bin ldae`):
    python3 scripts/eval_fill.py --out target/eval_fill.json
    python3 scripts/eval_fill.py --only sub-01:ses-20200312 --model weights/demo --out /tmp/e.json
Options: --bin (default target/debug/ldae, or $CARGO_TARGET_DIR/debug/ldae), --data (default
../shared/testdata/longitudinal, or /work/shared/testdata/longitudinal), --model (a model folder, default
weights/demo), --steps (DDIM steps, default the config's 10), --timeout (seconds per test), --keep (keep the
temp installations).
Needs: python3 with numpy, scipy, nibabel and scikit-image (the baselines used numpy 2.4.6, scipy 1.17.1,
nibabel 5.4.2, scikit-image 0.26.0). Without them: `python3 -m venv --system-site-packages ~/.cache/ldae-eval
&& ~/.cache/ldae-eval/bin/pip install numpy scipy nibabel scikit-image==0.26.0`, then run it with that python.
No network. With the demo model (random weights) expect scores far below the baselines: it measures the
plumbing, not the model.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

try:
    import nibabel as nib
    import numpy as np
    from scipy.ndimage import map_coordinates
    from skimage.metrics import structural_similarity
except ImportError as e:
    sys.exit(f"eval_fill.py needs numpy, scipy, nibabel and scikit-image ({e}); see the header of {__file__}")

REPO = Path(__file__).resolve().parent.parent
BASELINE_KEYS = ["linear", "nearest", "dicom_linear", "dicom_nearest", "dicom_self"]


# ---- scoring: exactly the recipe of baselines.json -------------------------------------------------------------
def norm(x, mask):
    x = x.astype(np.float64)
    lo, hi = x[mask].min(), x[mask].max()
    y = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    y[~mask] = 0.0
    return y


def score(pred, truth, mask):
    p, t = norm(pred, mask), norm(truth, mask)
    mse = float(np.mean((p[mask] - t[mask]) ** 2))
    _, smap = structural_similarity(t, p, data_range=1.0, full=True)
    return {"ssim": float(np.mean(smap[mask])), "mse": mse}


def resample(src_img, vox_to_src_world, shape, grid_affine):
    """Trilinear sampling of src_img on a grid: truth voxel -> world (grid_affine) -> vox_to_src_world ->
    src voxel. Outside the source: 0."""
    data = np.asarray(src_img.get_fdata(dtype=np.float64))
    while data.ndim > 3:
        data = data[..., 0]
    m = np.linalg.inv(src_img.affine) @ vox_to_src_world @ grid_affine
    ijk = np.indices(shape).reshape(3, -1).astype(np.float64)
    src = m[:3, :3] @ ijk + m[:3, 3:4]
    return map_coordinates(data, src, order=1, mode="constant", cval=0.0).reshape(shape)


# ---- the daemon ------------------------------------------------------------------------------------------------
def write_config(root, model_dir, steps):
    w = REPO / "weights" / "templates"
    text = f"""[paths]
incoming = ["{root}/incoming"]
state = "{root}/state"
quarantine = "{root}/quarantine"
archive = "{root}/archive"
outputs = "{root}/outputs"
[intake]
settle_secs = 0.5
rescan_secs = 2
min_free_mib = 1
[stability]
quiet_secs = 2.0
[preprocess]
template = "{w / 'mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz'}"
template_mask = "{w / 'mni152_brain_mask_nilearn_res1.nii.gz'}"
[model]
dir = "{model_dir}"
{f'steps = {steps}' if steps else ''}
[jobs]
backoff_secs = 0.5
backoff_max_secs = 2.0
max_attempts = 3
cpu_workers = 2
max_crashes = 10
[longitudinal]
auto_fill = false
"""
    cfg = Path(root) / "ldae.toml"
    cfg.write_text(text)
    return cfg


def ldae(bin_, cfg, *args, timeout=None):
    r = subprocess.run([str(bin_), "--config", str(cfg), *args], capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr


def run_test(args, data, subject, withheld, patient_id, sessions):
    """One withheld session; returns (record, scores) with paths of the synthetic volumes."""
    root = Path(tempfile.mkdtemp(prefix=f"ldae-eval-{subject}-{withheld}-"))
    cfg = write_config(root, args.model, args.steps)
    dropped = [s for s in sessions if s["session"] != withheld]
    for s in dropped:
        shutil.copytree(data / s["dicom_dir"], root / "incoming" / s["session"])
    log = open(root / "serve.log", "w")
    t0 = time.monotonic()
    daemon = subprocess.Popen([str(args.bin), "--config", str(cfg), "--log", "info", "serve"],
                              stdout=subprocess.DEVNULL, stderr=log)
    rec = {"subject": subject, "withheld": withheld, "install": str(root), "dropped": [s["session"] for s in dropped]}
    try:
        want = {s["series_instance_uid"]: s["session"] for s in dropped}
        encoded = {}
        while len(encoded) < len(want):
            if daemon.poll() is not None:
                raise RuntimeError(f"ldae serve exited {daemon.returncode}; see {root}/serve.log")
            if time.monotonic() - t0 > args.timeout:
                raise RuntimeError(f"not all series encoded after {args.timeout:.0f} s: {sorted(encoded.values())}")
            code, out, _ = ldae(args.bin, cfg, "status", "--json", "--series", "1000")
            if code == 0:
                st = json.loads(out)
                for s in st["series"]:
                    uid = s["series_uid"]
                    if uid in want and uid not in encoded and s["embeddings"] >= 1:
                        encoded[uid] = time.monotonic() - t0
                        print(f"  {want[uid]} encoded at {encoded[uid]:.0f} s", flush=True)
                dead = [j for j in st["last_errors"] if j["state"] == "dead"]
                if dead:
                    raise RuntimeError(f"dead job: {dead[0]}")
            time.sleep(2.0)
        rec["encoded_at_s"] = {want[u]: round(t, 1) for u, t in encoded.items()}
        rec["all_encoded_s"] = round(max(encoded.values()), 1)
        day = next(s["date"] for s in sessions if s["session"] == withheld)
        iso = f"{day[:4]}-{day[4:6]}-{day[6:]}"
        t1 = time.monotonic()
        code, out, err = ldae(args.bin, cfg, "fill", patient_id, "--date", iso, "--wait", "--json",
                              "--timeout", str(args.timeout))
        rec["fill_s"] = round(time.monotonic() - t1, 1)
        if code != 0:
            raise RuntimeError(f"ldae fill failed ({code}): {err.strip()}")
        fill = json.loads(out)
        rec["fill"] = fill
        return rec
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()


def default_bin():
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "debug" / "ldae"


def default_data():
    for d in [REPO.parent / "shared" / "testdata" / "longitudinal", Path("/work/shared/testdata/longitudinal")]:
        if (d / "baselines.json").is_file():
            return d
    return REPO.parent / "shared" / "testdata" / "longitudinal"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", type=Path, default=default_bin())
    ap.add_argument("--data", type=Path, default=default_data())
    ap.add_argument("--model", type=Path, default=REPO / "weights" / "demo")
    ap.add_argument("--steps", type=int, default=0, help="DDIM steps (0: the config default)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per test")
    ap.add_argument("--only", action="append", default=[], help="SUBJECT:SESSION (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep the temp installations")
    ap.add_argument("--out", type=Path, required=True, help="JSON result file")
    args = ap.parse_args()
    args.bin, args.model = args.bin.resolve(), args.model.resolve()
    if not args.bin.is_file():
        sys.exit(f"{args.bin}: no ldae binary (cargo build --bin ldae, or --bin)")
    data = args.data
    manifest = json.loads((data / "manifest.json").read_text())
    baselines = json.loads((data / "baselines.json").read_text())
    grid = manifest["template_grid"]
    shape, grid_affine = tuple(grid["shape"]), np.array(grid["affine_ras"], dtype=np.float64)
    mask = np.asarray(nib.load(data / "template" / "mni152_brainmask_2mm.nii.gz").get_fdata()) > 0
    assert mask.shape == shape, mask.shape
    results = []
    for b in baselines["results"]:
        subject, withheld = b["subject"], b["withheld"]
        if args.only and f"{subject}:{withheld}" not in args.only:
            continue
        sub = manifest["subjects"][subject]
        sessions = sub["sessions"]
        print(f"{subject} {withheld}: dropping {len(sessions) - 1} sessions", flush=True)
        t = time.monotonic()
        try:
            rec = run_test(args, data, subject, withheld, sub["patient_id"], sessions)
        except Exception as e:  # one failed test is reported, the others still run
            print(f"  FAILED: {e}", flush=True)
            results.append({"subject": subject, "withheld": withheld, "error": str(e),
                            "baselines": {k: [b[k + "_ssim"], b[k + "_mse"]] for k in BASELINE_KEYS}})
            continue
        rec["wall_s"] = round(time.monotonic() - t, 1)
        syn = rec["fill"]["synthetic"]
        rec["alpha"] = syn["alpha"]
        native_path = Path(syn["path"])
        template_path = native_path.parent / "synthetic-template.nii.gz"
        truth_s = next(s for s in sessions if s["session"] == withheld)
        truth_img = nib.load(data / truth_s["truth"])
        assert truth_img.shape == shape and np.allclose(truth_img.affine, grid_affine)
        truth = np.asarray(truth_img.get_fdata(dtype=np.float64))
        scores = {}
        syn_img = nib.load(template_path)
        p = resample(syn_img, np.eye(4), shape, grid_affine)
        scores["template"] = score(p, truth, mask)
        # An oracle for the model's grid alone: the withheld truth sampled onto it and back (trilinear both ways).
        low = resample(truth_img, np.eye(4), syn_img.shape[:3], syn_img.affine)
        back = resample(nib.Nifti1Image(low.astype(np.float32), syn_img.affine), np.eye(4), shape, grid_affine)
        scores["truth_via_model_grid"] = score(back, truth, mask)
        rec["model_grid"] = {"shape": list(syn_img.shape[:3]), "affine": syn_img.affine.tolist()}
        # The nearer neighbour (the native grid written with target_grid = "nearest"): ldae picks the later one
        # only when strictly nearer.
        d = lambda s: date.fromisoformat(f"{s['date'][:4]}-{s['date'][4:6]}-{s['date'][6:]}")
        i = [s["session"] for s in sessions].index(withheld)
        a, c = sessions[i - 1], sessions[i + 1]
        near = c if abs((d(c) - d(truth_s)).days) < abs((d(truth_s) - d(a)).days) else a
        if native_path.name == "synthetic.nii.gz" and native_path.is_file():
            xf = json.loads((data / near["native_to_template"]).read_text())
            t2n = np.array(xf["template_to_native_ras"], dtype=np.float64)
            p = resample(nib.load(native_path), t2n, shape, grid_affine)
            scores["native"] = score(p, truth, mask)
            rec["native_grid_of"] = near["session"]
        # What the model saw: each neighbour's model input (template space, the model's grid), combined as the
        # DICOM baselines (c)/(d) combine the DICOM. The best any model on this grid could do from ldae's own
        # preprocessing and registration, without learning anything.
        # ldae's own conversion of each neighbour (native grid) mapped with the exact transform and combined like
        # (c)/(d): must land on baselines (c)/(d), which do the same from pydicom; a check of the conversion's
        # geometry and of the native mapping above.
        conv = {}
        for s in (a, c):
            found = sorted(Path(rec["install"]).glob(f"outputs/{s['series_instance_uid']}/*/*.nii.gz"),
                           key=lambda f: f.stat().st_mtime)
            if found:
                xf = json.loads((data / s["native_to_template"]).read_text())
                t2n = np.array(xf["template_to_native_ras"], dtype=np.float64)
                conv[s["session"]] = norm(resample(nib.load(found[-1]), t2n, shape, grid_affine), mask)
        if len(conv) == 2:
            lin = (1 - rec["alpha"]) * conv[a["session"]] + rec["alpha"] * conv[c["session"]]
            scores["converted_linear"] = score(lin, truth, mask)
            scores["converted_nearest"] = score(conv[near["session"]], truth, mask)
        inputs = {}
        for s in (a, c):
            found = sorted(Path(rec["install"]).glob(f"outputs/{s['series_instance_uid']}/*/reg-*/*_model_input.nii.gz"),
                           key=lambda f: f.stat().st_mtime)
            if found:
                inputs[s["session"]] = norm(resample(nib.load(found[-1]), np.eye(4), shape, grid_affine), mask)
        if len(inputs) == 2:
            alpha = rec["alpha"]
            lin = (1 - alpha) * inputs[a["session"]] + alpha * inputs[c["session"]]
            scores["input_linear"] = score(lin, truth, mask)
            scores["input_nearest"] = score(inputs[near["session"]], truth, mask)
        # The recipe checked against baselines.json: (a) and (b) recomputed from the neighbours' truths.
        ta, tc = (np.asarray(nib.load(data / s["truth"]).get_fdata(dtype=np.float64)) for s in (a, c))
        ba = b["alpha"]
        check = {"linear": score((1 - ba) * ta + ba * tc, truth, mask),
                 "nearest": score(ta if ba <= 0.5 else tc, truth, mask)}
        for k, v in check.items():
            if abs(v["ssim"] - b[k + "_ssim"]) > 1e-4 or abs(v["mse"] - b[k + "_mse"]) > 1e-3 * b[k + "_mse"] + 1e-9:
                raise SystemExit(f"{subject} {withheld}: recipe check failed for baseline {k}: {v} vs baselines.json")
        rec["recipe_check"] = check
        rec["scores"] = scores
        rec["baselines"] = {k: [b[k + "_ssim"], b[k + "_mse"]] for k in BASELINE_KEYS}
        rec["baseline_alpha"] = b["alpha"]
        results.append(rec)
        print(f"  fill {rec['fill_s']} s, template SSIM {scores['template']['ssim']:.5f} "
              f"MSE {scores['template']['mse']:.3e}", flush=True)
        if not args.keep:
            shutil.rmtree(rec["install"], ignore_errors=True)

    print()
    ours = ["template", "native", "input_linear", "input_nearest", "truth_via_model_grid", "converted_linear",
            "converted_nearest"]
    head = f"{'subject':7} {'withheld':13} {'alpha':>6}  " + "  ".join(
        f"{k[:18]:>18}" for k in [f"ldae {o}" for o in ours[:4]] + ["truth via grid", "conv linear", "conv nearest"] + BASELINE_KEYS)
    print(head)
    print(" " * 29 + "  ".join(["SSIM / MSE".rjust(18)] * (len(ours) + len(BASELINE_KEYS))))
    cell = lambda s: f"{s[0]:.5f} / {s[1]:.2e}" if s else "-".rjust(18)
    for r in results:
        sc = r.get("scores", {})
        row = f"{r['subject']:7} {r['withheld']:13} {r.get('alpha', float('nan')):6.4f}  "
        row += "  ".join(cell(sc.get(o) and (sc[o]["ssim"], sc[o]["mse"])).rjust(18) for o in ours)
        row += "  " + "  ".join(cell(r["baselines"][k]).rjust(18) for k in BASELINE_KEYS)
        print(row)
    print()
    print("timings (s since `ldae serve` started: each series encoded; fill = `ldae fill --wait`):")
    for r in results:
        if "error" in r:
            print(f"  {r['subject']} {r['withheld']}: FAILED: {r['error']}")
            continue
        enc = ", ".join(f"{k} {v}" for k, v in sorted(r["encoded_at_s"].items()))
        print(f"  {r['subject']} {r['withheld']}: encoded {enc}; fill {r['fill_s']}; whole test {r['wall_s']}")
    out = {"model": str(args.model), "bin": str(args.bin), "steps": args.steps or "config default",
           "recipe": baselines["recipe"], "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"\nwritten: {args.out}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
