//! One synthetic volume, made the way `ldae preprocess` makes a model input from a registered scan.
//!
//! `ldae preprocess` resamples the scan onto the template grid, multiplies it by the template brain mask, then
//! (SPEC §6) resamples that to `pixdim` keeping voxel 0 (output voxel `j` reads template index `j·pixdim/s`),
//! centre-crops/pads to the model shape and scales to [0, 1]. Here the "registered scan" is a function we can
//! evaluate anywhere, so step 1 evaluates it directly at the sample positions (for a `pixdim` that is a whole
//! multiple of the template spacing those are template voxels, and the result is exactly what resampling a
//! full-resolution volume would give); steps 2 and 3 are the library's own [`pad_or_crop_minimum`] and
//! [`scale_min_max`].
//!
//! The value at a template-grid point `p` of one session: `q = atrophy(subject(p))` in the subject's source
//! volume's voxels, `v = noise(bias(p) · contrast(T1_source(q)))` where the (fixed, undeformed) template mask at `p` is above 0.5, else 0.

use ndarray::{Array3, Axis};
use rand::SeedableRng;
use rayon::prelude::*;

use super::anatomy::Anatomy;
use super::field::trilinear;
use super::scanner::Scanner;
use super::subject::SubjectMap;
use ldae::preprocess::model_input::{pad_or_crop_minimum, scale_min_max};
use ldae::preprocess::template::Template;
use ldae::preprocess::PreprocessError;
use ldae::volume::{Affine, Volume};

/// Where the model input's first-step samples fall on the template grid.
#[derive(Debug, Clone)]
pub struct SampleGrid {
    /// Template voxel index of each output index, per axis.
    pub taps: [Vec<f64>; 3],
    /// The resampled grid's affine (as [`ldae::preprocess::model_input::resample_to_spacing`] writes it).
    pub affine: Affine,
}

impl SampleGrid {
    /// The first step's grid for a template at `pixdim` mm (sizes rounded half to even, as SPEC §6 says).
    pub fn new(template: &Volume, pixdim: f64) -> SampleGrid {
        let n = template.shape();
        let s = template.spacing();
        let taps = [0, 1, 2].map(|d| {
            let m = ((n[d] - 1) as f64 * s[d] / pixdim + 1.0).round_ties_even().max(1.0) as usize;
            (0..m).map(|j| (j as f64 * pixdim / s[d]).clamp(0.0, (n[d] - 1) as f64)).collect::<Vec<_>>()
        });
        let mut affine = template.affine;
        for (c, sc) in s.iter().enumerate() {
            for r in 0..3 {
                affine.0[r][c] = template.affine.0[r][c] / sc * pixdim;
            }
        }
        SampleGrid { taps, affine }
    }
}

/// A brain volume in MNI space that subjects are made from: its T1 (brain-extracted, zero outside the brain) and
/// what [`Anatomy`] found in it.
pub struct Source {
    pub template: Template,
    pub anatomy: Anatomy,
    /// World (mm) → its voxels.
    pub voxel_of_world: Affine,
    /// File name (for the labels), never a path.
    pub name: String,
}

/// Everything one session's volume depends on.
pub struct Session<'a> {
    /// The registration template: its grid and brain mask are the model input's.
    pub target: &'a Template,
    /// The subject's anatomy source.
    pub source: &'a Source,
    pub grid: &'a SampleGrid,
    pub subject: &'a SubjectMap,
    pub scanner: &'a Scanner,
    /// Largest ventricle push and CSF widening (mm) at this session's age.
    pub vent_mm: f64,
    pub cortex_mm: f64,
    /// Seed of this session's noise.
    pub noise_seed: u64,
}

/// The model input of one session: `shape` voxels at the grid's spacing, values in [0, 1].
pub fn render(s: &Session, shape: [usize; 3]) -> Result<Volume, PreprocessError> {
    let world = s.target.t1.affine;
    let src = &s.source.template.t1.data;
    let [tx, ty, tz] = &s.grid.taps;
    let mut data = Array3::<f32>::zeros((tx.len(), ty.len(), tz.len()));
    data.axis_iter_mut(Axis(0)).into_par_iter().enumerate().for_each(|(a, mut plane)| {
        // One noise stream per plane: the result does not depend on how rayon splits the work.
        let mut rng = rand::rngs::StdRng::seed_from_u64(s.noise_seed ^ (a as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for (b, &y) in ty.iter().enumerate() {
            for (c, &z) in tz.iter().enumerate() {
                let p_vox = [tx[a], y, z];
                // `apply_mask` keeps template voxels whose mask value is above 0.5.
                if trilinear(&s.target.mask.data, p_vox) <= 0.5 {
                    continue;
                }
                let p = world.apply(p_vox);
                let q_world = s.subject.apply(p);
                let q = s.source.anatomy.atrophied(s.source.voxel_of_world.apply(q_world), s.vent_mm, s.cortex_mm);
                let v = s.scanner.contrast(trilinear(src, q)) * s.scanner.bias(p);
                plane[[b, c]] = s.scanner.noisy(v, &mut rng) as f32;
            }
        }
    });
    let spaced = Volume::new(data, s.grid.affine);
    let mut out = pad_or_crop_minimum(&spaced, shape)?;
    scale_min_max(&mut out);
    out.provenance.source = "ldae make-train-set (synthetic)".into();
    Ok(out)
}
