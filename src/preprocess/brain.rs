//! Brain extraction in native space: the template's brain mask carried onto the scan through a template →
//! native mapping (affine today; any [`NativeToTemplate`], e.g. a deformable one, plugs in), then refined by
//! the scan's own intensities.
//!
//! Refinement: inside the carried mask dilated by `dilate_mm`, voxels above Otsu's threshold of the
//! intensities there are tissue (grey and white matter of a T1) and the rest CSF, skull or background; an
//! opening breaks thin bridges to the scalp, the largest connected component is kept, enclosed holes
//! (ventricles) are filled and, finally, voxels deep inside the carried mask (eroded by `dilate_mm`) are
//! always kept. QC: the extracted volume over the carried mask's volume, and their Dice overlap.

use ndarray::{Array3, Axis, Zip};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::mask::{dice, otsu_threshold};
use super::resample::Grid;
use super::{invalid, PreprocessError};
use crate::volume::{Affine, Volume};

/// A mapping from native world coordinates (mm) to template world coordinates: where to look in the template
/// for a native voxel. The affine registration gives one ([`AffineMapping`]); a deformable one implements it too.
pub trait NativeToTemplate: Sync {
    fn map(&self, native_world: [f64; 3]) -> [f64; 3];
}

/// An affine native → template world map (the inverse of a stored template → native transform).
pub struct AffineMapping(pub Affine);

impl NativeToTemplate for AffineMapping {
    fn map(&self, p: [f64; 3]) -> [f64; 3] {
        self.0.apply(p)
    }
}

/// A deformable native → template chain (`[Affine(A⁻¹), Field(inverse)]`, see [`super::pipeline`]).
impl NativeToTemplate for super::deformable::Chain {
    fn map(&self, p: [f64; 3]) -> [f64; 3] {
        self.apply(p)
    }
}

/// The parameters of brain extraction (`[preprocess.brain]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrainOptions {
    /// How far (mm) outside the carried mask tissue may be added, and how deep inside it is always kept.
    pub dilate_mm: f64,
    /// Radius (voxels) of the opening that separates the brain from the scalp.
    pub open_voxels: u32,
}

impl Default for BrainOptions {
    fn default() -> Self {
        BrainOptions { dilate_mm: 5.0, open_voxels: 1 }
    }
}

impl BrainOptions {
    /// Check values that types alone cannot.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if !(self.dilate_mm >= 0.0 && self.dilate_mm <= 50.0) {
            return Err(("preprocess.brain.dilate_mm", "must be in [0, 50]"));
        }
        if self.open_voxels > 5 {
            return Err(("preprocess.brain.open_voxels", "must be in 0..=5"));
        }
        Ok(())
    }
}

/// QC values of one extraction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BrainQc {
    /// Extracted volume / volume of the carried template mask.
    pub volume_ratio: f64,
    /// Dice overlap of the extracted and the carried mask.
    pub dice_to_template: f64,
    /// The intensity threshold used (Otsu inside the dilated mask).
    pub threshold: f32,
}

/// The extracted mask (1/0 on the native grid) and its QC.
#[derive(Debug, Clone)]
pub struct BrainMask {
    pub mask: Volume,
    pub carried: Volume,
    pub qc: BrainQc,
}

/// The template mask (`> 0.5` after trilinear sampling) on the grid of `native` through `mapping`.
pub fn carry_mask(
    template_mask: &Volume,
    native: &Grid,
    mapping: &dyn NativeToTemplate,
) -> Result<Volume, PreprocessError> {
    let to_vox =
        template_mask.affine.inverse().ok_or_else(|| invalid("brain extraction", "singular template affine"))?;
    let [nx, ny, nz] = native.shape;
    let mut data = Array3::<f32>::zeros((nx, ny, nz));
    let src = &template_mask.data;
    let sh = template_mask.shape();
    data.axis_iter_mut(Axis(0)).into_par_iter().enumerate().for_each(|(i, mut plane)| {
        for ((j, k), v) in plane.indexed_iter_mut() {
            let w = native.affine.apply([i as f64, j as f64, k as f64]);
            let p = to_vox.apply(mapping.map(w));
            *v = if trilinear(src, sh, p) > 0.5 { 1.0 } else { 0.0 };
        }
    });
    Ok(Volume::new(data, native.affine))
}

fn trilinear(a: &Array3<f32>, sh: [usize; 3], p: [f64; 3]) -> f32 {
    let mut base = [0usize; 3];
    let mut t = [0f64; 3];
    for d in 0..3 {
        if !(p[d] >= 0.0 && p[d] <= (sh[d] - 1) as f64) {
            return 0.0;
        }
        base[d] = (p[d].floor() as usize).min(sh[d].saturating_sub(2));
        t[d] = p[d] - base[d] as f64;
    }
    let mut acc = 0.0;
    for c in 0..8usize {
        let mut w = 1.0;
        let mut idx = [0usize; 3];
        for d in 0..3 {
            let hi = (c >> d) & 1 == 1;
            idx[d] = (base[d] + hi as usize).min(sh[d] - 1);
            w *= if hi { t[d] } else { 1.0 - t[d] };
        }
        acc += w * a[idx] as f64;
    }
    acc as f32
}

/// Extract the brain of `native` given the mask carried from the template.
pub fn extract_brain(native: &Volume, carried: &Volume, opts: &BrainOptions) -> Result<BrainMask, PreprocessError> {
    opts.validate().map_err(|(k, m)| invalid(k, m))?;
    if carried.shape() != native.shape() {
        return Err(invalid("brain extraction", "carried mask and scan differ in shape"));
    }
    let core = carried.data.mapv(|v| v > 0.5);
    let n_core = core.iter().filter(|b| **b).count();
    if n_core == 0 {
        return Err(invalid("brain extraction", "the template mask lands outside the scan"));
    }
    let spacing = native.spacing();
    let radius: [usize; 3] = std::array::from_fn(|d| (opts.dilate_mm / spacing[d]).round().max(0.0) as usize);
    let region = dilate(&core, radius);
    let inner = erode(&core, radius);
    let vals: Vec<f32> = Zip::from(&native.data).and(&region).fold(Vec::new(), |mut v, &x, &r| {
        if r && x.is_finite() {
            v.push(x);
        }
        v
    });
    let threshold = otsu_threshold(vals.iter()).unwrap_or(f32::NEG_INFINITY);
    let mut m = Zip::from(&native.data).and(&region).map_collect(|&x, &r| r && x > threshold);
    let o = opts.open_voxels as usize;
    if o > 0 {
        m = dilate(&erode(&m, [o; 3]), [o; 3]);
    }
    m = largest_component(&m);
    m = fill_holes(&m);
    Zip::from(&mut m).and(&inner).and(&region).for_each(|v, &i, &r| *v = (*v || i) && r);
    let mask = Volume {
        data: m.mapv(|b| if b { 1.0 } else { 0.0 }),
        affine: native.affine,
        provenance: native.provenance.clone(),
    };
    let n = mask.data.iter().filter(|v| **v > 0.5).count();
    let qc = BrainQc {
        volume_ratio: n as f64 / n_core as f64,
        dice_to_template: dice(&mask, carried).unwrap_or(0.0),
        threshold,
    };
    Ok(BrainMask { mask, carried: carried.clone(), qc })
}

/// Box dilation by `r` voxels per axis (separable running maximum).
pub fn dilate(m: &Array3<bool>, r: [usize; 3]) -> Array3<bool> {
    morph(m, r, true)
}

/// Box erosion by `r` voxels per axis; outside the volume counts as inside (no erosion from the border).
pub fn erode(m: &Array3<bool>, r: [usize; 3]) -> Array3<bool> {
    morph(m, r, false)
}

fn morph(m: &Array3<bool>, r: [usize; 3], grow: bool) -> Array3<bool> {
    let mut cur = m.clone();
    for (d, &rd) in r.iter().enumerate() {
        if rd == 0 {
            continue;
        }
        let mut next = cur.clone();
        Zip::from(next.lanes_mut(Axis(d))).and(cur.lanes(Axis(d))).for_each(|mut out, line| {
            let n = line.len();
            // Prefix counts of `grow`-valued voxels give each window's answer in O(1).
            let mut pre = vec![0usize; n + 1];
            for i in 0..n {
                pre[i + 1] = pre[i] + (line[i] == grow) as usize;
            }
            for i in 0..n {
                let (a, b) = (i.saturating_sub(rd), (i + rd + 1).min(n));
                let hit = pre[b] - pre[a] > 0;
                out[i] = if grow { hit } else { !hit };
            }
        });
        cur = next;
    }
    cur
}

/// The largest 6-connected component of `m`.
pub fn largest_component(m: &Array3<bool>) -> Array3<bool> {
    let sh = m.shape().to_vec();
    let mut label = Array3::<u32>::zeros(m.raw_dim());
    let (mut best, mut best_size, mut next) = (0u32, 0usize, 0u32);
    let mut stack = Vec::new();
    for (idx, &v) in m.indexed_iter() {
        if !v || label[idx] != 0 {
            continue;
        }
        next += 1;
        let mut size = 0usize;
        label[idx] = next;
        stack.push([idx.0, idx.1, idx.2]);
        while let Some(p) = stack.pop() {
            size += 1;
            for_neighbours(p, &sh, |q| {
                if m[q] && label[q] == 0 {
                    label[q] = next;
                    stack.push(q);
                }
            });
        }
        if size > best_size {
            (best, best_size) = (next, size);
        }
    }
    label.mapv(|l| l != 0 && l == best)
}

/// `m` with every background region not 6-connected to the volume's border filled.
pub fn fill_holes(m: &Array3<bool>) -> Array3<bool> {
    let sh = m.shape().to_vec();
    let mut outside = Array3::<bool>::from_elem(m.raw_dim(), false);
    let mut stack = Vec::new();
    for (idx, &v) in m.indexed_iter() {
        let p = [idx.0, idx.1, idx.2];
        let border = (0..3).any(|d| p[d] == 0 || p[d] + 1 == sh[d]);
        if border && !v && !outside[p] {
            outside[p] = true;
            stack.push(p);
        }
    }
    while let Some(p) = stack.pop() {
        for_neighbours(p, &sh, |q| {
            if !m[q] && !outside[q] {
                outside[q] = true;
                stack.push(q);
            }
        });
    }
    outside.mapv(|o| !o)
}

fn for_neighbours(p: [usize; 3], sh: &[usize], mut f: impl FnMut([usize; 3])) {
    for d in 0..3 {
        if p[d] > 0 {
            let mut q = p;
            q[d] -= 1;
            f(q);
        }
        if p[d] + 1 < sh[d] {
            let mut q = p;
            q[d] += 1;
            f(q);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn morphology_components_and_holes() {
        let mut m = Array3::from_elem((9, 9, 9), false);
        for i in 2..7 {
            for j in 2..7 {
                for k in 2..7 {
                    m[[i, j, k]] = true;
                }
            }
        }
        m[[4, 4, 4]] = false; // a hole
        m[[0, 0, 0]] = true; // a speck
        let filled = fill_holes(&largest_component(&m));
        assert!(filled[[4, 4, 4]] && !filled[[0, 0, 0]]);
        assert_eq!(filled.iter().filter(|b| **b).count(), 125);
        let e = erode(&filled, [1; 3]);
        assert_eq!(e.iter().filter(|b| **b).count(), 27);
        assert_eq!(dilate(&e, [1; 3]).iter().filter(|b| **b).count(), 125);
    }
}
