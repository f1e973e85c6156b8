//! NIfTI interchange with nibabel, the reference Python implementation: ldae reads what nibabel writes (every
//! datatype ldae accepts, .nii and .nii.gz, both byte orders, scl_slope/inter, sform vs qform, a padded
//! vox_offset) and nibabel reads what ldae writes with the same affine as sform and as qform (both code 1).
//! Needs python3 with nibabel and numpy (scripts/test.sh installs them); fails without them when
//! `LDAE_REQUIRE_ALL=1`.

use std::path::Path;
use std::process::Command;

use ldae::nifti::{read_nifti, write_nifti};
use ldae::volume::{Affine, Volume};
use ndarray::Array3;

/// Run a python3 program with arguments; `None` (after saying why) when python3 or nibabel is missing.
fn python(program: &str, args: &[&Path]) -> Option<String> {
    let probe = Command::new("python3").args(["-c", "import nibabel, numpy"]).output();
    let ok = matches!(&probe, Ok(o) if o.status.success());
    if !ok {
        let why = match probe {
            Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
            Err(e) => e.to_string(),
        };
        assert!(
            std::env::var("LDAE_REQUIRE_ALL").map_or(true, |v| v != "1"),
            "python3 with nibabel and numpy is required: {why}"
        );
        eprintln!("SKIPPED: python3 with nibabel + numpy not available ({why})");
        return None;
    }
    let out = Command::new("python3").arg("-c").arg(program).args(args).output().expect("python3");
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

const WRITE_ALL: &str = r#"
import json, sys, numpy as np, nibabel as nib
out = sys.argv[1]
shape = (5, 4, 3)
i, j, k = np.meshgrid(np.arange(5), np.arange(4), np.arange(3), indexing="ij")
base = (i + 5 * j + 20 * k).astype(np.float64)
c, s = np.cos(0.3), np.sin(0.3)
sform = np.array([[-0.9 * c, 0.8 * s, 0, 90], [0.9 * s, 0.8 * c, 0, -126], [0, 0, 2.5, -72], [0, 0, 0, 1]])
qform = np.array([[1.5, 0, 0, -10], [0, 1.25, 0, 20], [0, 0, -2.0, 30], [0, 0, 0, 1]])
cases = {}
def save(name, data, endian="<", slope=None, inter=None, qform_only=False, offset=None):
    hdr = nib.Nifti1Header(endianness=endian)
    img = nib.Nifti1Image(data, None, hdr)
    img.set_data_dtype(data.dtype)
    if qform_only:
        img.set_qform(qform, code=1)
        img.set_sform(None, code=0)
        aff = qform
    else:
        img.set_sform(sform, code=1)
        img.set_qform(qform, code=2)
        aff = sform
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    img.to_filename(f"{out}/{name}")
    if offset is not None:
        # Pad the data out to `offset` (no extensions: the extender stays 0) and let nibabel vouch for it.
        raw = bytearray(open(f"{out}/{name}", "rb").read())
        raw[108:112] = np.array([offset], dtype="<f4").tobytes()
        raw = raw[:352] + bytes(offset - 352) + raw[352:]
        open(f"{out}/{name}", "wb").write(raw)
    back = nib.load(f"{out}/{name}")
    vals = np.asarray(back.dataobj, dtype=np.float64)
    cases[name] = {"affine": back.affine.tolist(), "values": vals.ravel(order="C").tolist(),
                   "datatype": int(back.header["datatype"]), "vox_offset": float(back.dataobj.offset)}
for dt in ["uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]:
    signed = np.dtype(dt).kind in "if"
    data = (base - 17 if signed else base).astype(dt)
    for ext in ["nii", "nii.gz"]:
        save(f"{dt}.{ext}", data)
save("int16_big_endian.nii", (base - 30).astype("int16"), endian=">")
save("float32_big_endian.nii.gz", (base / 7).astype("float32"), endian=">")
save("int16_scaled.nii.gz", (base - 5).astype("int16"), slope=0.5, inter=-3.0)
save("uint8_qform_only.nii", base.astype("uint8"), qform_only=True)
save("float32_offset_400.nii", (base * 1.5).astype("float32"), offset=400)
json.dump(cases, sys.stdout)
"#;

#[test]
fn ldae_reads_what_nibabel_writes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let Some(out) = python(WRITE_ALL, &[tmp.path()]) else { return };
    let cases: serde_json::Value = serde_json::from_str(&out).expect("json");
    let cases = cases.as_object().expect("object");
    assert!(cases.len() >= 25, "{} cases", cases.len());
    let mut codes = std::collections::BTreeSet::new();
    for (name, want) in cases {
        let vol = read_nifti(&tmp.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(vol.shape(), [5, 4, 3], "{name}");
        let values: Vec<f64> = want["values"].as_array().expect("values").iter().map(|v| v.as_f64().unwrap()).collect();
        let got: Vec<f64> = vol.data.iter().map(|&v| v as f64).collect();
        for (n, (g, w)) in got.iter().zip(&values).enumerate() {
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{name}: voxel {n} is {g}, nibabel says {w}");
        }
        let aff: Vec<Vec<f64>> = serde_json::from_value(want["affine"].clone()).expect("affine");
        let d = max_diff(&vol.affine, &aff);
        assert!(d < 1e-5, "{name}: affine {:?} vs nibabel {aff:?}", vol.affine.0);
        codes.insert(want["datatype"].as_i64().expect("datatype"));
        if name == "float32_offset_400.nii" {
            assert_eq!(want["vox_offset"].as_f64(), Some(400.0), "nibabel kept the padded offset");
        }
    }
    assert_eq!(codes.len(), 10, "every datatype: {codes:?}");
}

const READ_BACK: &str = r#"
import json, sys, numpy as np, nibabel as nib
img = nib.load(sys.argv[1])
h = img.header
sform, scode = img.get_sform(coded=True)
qform, qcode = img.get_qform(coded=True)
data = np.asarray(img.dataobj, dtype=np.float64)
json.dump({"sform": sform.tolist(), "sform_code": int(scode), "qform": qform.tolist(), "qform_code": int(qcode),
           "shape": list(data.shape), "values": data.ravel(order="C").tolist(), "datatype": int(h["datatype"])},
          sys.stdout)
"#;

#[test]
fn nibabel_reads_what_ldae_writes_with_the_same_sform_and_qform() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = Array3::from_shape_fn((6, 5, 4), |(i, j, k)| (i * 100 + j * 10 + k) as f32 * 0.25 - 3.0);
    // Oblique (rotation about x, then z), anisotropic, flipped along i (det < 0): rigid + scale, so a qform
    // represents it exactly.
    let (c1, s1) = (0.4f64.cos(), 0.4f64.sin());
    let (c2, s2) = (0.25f64.cos(), 0.25f64.sin());
    let rz = [[c2, -s2, 0.0], [s2, c2, 0.0], [0.0, 0.0, 1.0]];
    let rx = [[1.0, 0.0, 0.0], [0.0, c1, -s1], [0.0, s1, c1]];
    let r: Vec<Vec<f64>> =
        rz.iter().map(|row| (0..3).map(|b| (0..3).map(|m| row[m] * rx[m][b]).sum()).collect()).collect();
    let scale = [-0.9, 1.1, 2.5];
    let col = |c: usize| [r[0][c] * scale[c], r[1][c] * scale[c], r[2][c] * scale[c]];
    let affine = Affine::from_columns(col(0), col(1), col(2), [91.0, -126.5, -72.25]);
    let vol = Volume::new(data.clone(), affine);
    let Some(_) = python("import nibabel", &[]) else { return };
    for name in ["ldae.nii", "ldae.nii.gz"] {
        let p = tmp.path().join(name);
        write_nifti(&p, &vol).expect("write");
        let out = python(READ_BACK, &[&p]).expect("python");
        let got: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(got["sform_code"], 1, "{name}");
        assert_eq!(got["qform_code"], 1, "{name}");
        assert_eq!(got["datatype"], 16, "{name}: float32");
        assert_eq!(got["shape"], serde_json::json!([6, 5, 4]), "{name}");
        for which in ["sform", "qform"] {
            let m: Vec<Vec<f64>> = serde_json::from_value(got[which].clone()).expect("matrix");
            let d = max_diff(&affine, &m);
            assert!(d < 1e-4, "{name} {which}: nibabel {m:?} vs ldae {:?}", affine.0);
        }
        let values: Vec<f64> = got["values"].as_array().expect("values").iter().map(|v| v.as_f64().unwrap()).collect();
        let want: Vec<f64> = data.iter().map(|&v| v as f64).collect();
        assert_eq!(values, want, "{name}: voxel values in (i, j, k) order");
    }
}

/// Largest element-wise difference between an affine and a 4×4 matrix from Python.
fn max_diff(a: &Affine, m: &[Vec<f64>]) -> f64 {
    assert_eq!(m.len(), 4, "a 4x4 matrix");
    a.0.iter().zip(m).flat_map(|(ra, rm)| ra.iter().zip(rm).map(|(x, y)| (x - y).abs())).fold(0.0, f64::max)
}

const READ_BIG_INT: &str = r#"
import gzip, sys, numpy as np, nibabel as nib
img = nib.load(sys.argv[1])
i, j, k = np.indices(img.shape)
want = ((i * 7 + j * 3 - k * 11) % 2000 - 1000).astype(np.float64)
got = np.asarray(img.dataobj, dtype=np.float64)
assert np.array_equal(got, want), "voxel values differ"
if sys.argv[1].endswith(".gz"):
    raw = gzip.open(sys.argv[1]).read()  # Python's gzip reads every member, like zlib's gzread
    assert len(raw) == 352 + got.size * 2, len(raw)
print(int(img.header["datatype"]), list(img.shape))
"#;

/// Whole values are written as int16 (as dcm2niix stores a series), and a `.nii.gz` larger than one gzip
/// member (written as several members compressed in parallel) reads back the same in nibabel, Python's gzip
/// and ldae's reader.
#[test]
fn nibabel_reads_int16_and_multi_member_gzip() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = Array3::from_shape_fn((120, 100, 60), |(i, j, k)| {
        ((i * 7 + j * 3) as i64 - (k * 11) as i64).rem_euclid(2000) as f32 - 1000.0
    });
    let vol = Volume::new(
        data.clone(),
        Affine::from_columns([-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 2.0, 3.0]),
    );
    let Some(_) = python("import nibabel", &[]) else { return };
    for name in ["int.nii", "int.nii.gz"] {
        let p = tmp.path().join(name);
        write_nifti(&p, &vol).expect("write");
        let out = python(READ_BIG_INT, &[&p]).expect("python");
        assert_eq!(out.trim(), "4 [120, 100, 60]", "{name}: int16 (datatype 4) of the written shape");
        let back = read_nifti(&p).expect("read");
        assert_eq!(back.data, data, "{name}: ldae reads back the values");
    }
    let gz = std::fs::read(tmp.path().join("int.nii.gz")).expect("gz");
    let members = gz.windows(3).filter(|w| w == &[0x1f, 0x8b, 0x08]).count();
    assert!(members >= 2, "a 1.44 MB volume is written as several gzip members ({members})");
}
