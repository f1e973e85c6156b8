//! The configurable pipeline on a real head: the published configuration's steps (N4 → brain extraction → SyN-refined
//! registration → resize) on Colin27 with skull (2 mm), the model input built on the MNI ICBM152 2009c grid
//! (193×229×193) exactly as SPEC §6 derives it (→ 129×153×129 at 1.5 mm → 128×160×128), and the brain
//! extraction compared with a reference mask.
//!
//! Reference, not exact truth: Colin27 lives in MNI space (linearly), so the nilearn MNI brain mask sampled on
//! its grid without any transform is a close but imperfect brain mask of it. The extracted mask is scored
//! against it by Dice next to the template mask carried through the affine (which the reference favours: it is
//! the same mask), and bounded near what was measured.

use std::path::PathBuf;

use ldae::config::Config;
use ldae::limits::Limits;
use ldae::model::config::ModelConfig;
use ldae::nifti::read_nifti;
use ldae::preprocess::deformable::chain::{unwarp, write_chain_folder};
use ldae::preprocess::deformable::{Chain, Step as ChainStep, SynOptions};
use ldae::preprocess::mask::{dice, mask_to_native};
use ldae::preprocess::pipeline::{preprocess_steps, PipelineOptions};
use ldae::preprocess::pyramid::downsample_to;
use ldae::preprocess::register::RegisterOptions;
use ldae::preprocess::resample::{resample, Grid, Interp};
use ldae::preprocess::steps::Step;
use ldae::preprocess::template::Template;
use ldae::volume::Affine;

mod common;

#[test]
fn the_published_steps_run_in_order_and_build_the_model_input_on_the_2009c_grid() {
    let Some(ch2) = common::shared_data("testdata/volumes/mricron/ch2.nii.gz") else { return };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cfg = Config::load(&root.join("config/published.toml")).unwrap();
    let template = Template::load(&cfg.preprocess.template, &cfg.preprocess.template_mask).unwrap();
    let head = downsample_to(&read_nifti(&ch2).unwrap(), 2.0);
    let mut opts = PipelineOptions::from_config(&cfg.preprocess, template.spacing());
    // Coarser registration than the daemon's (debug build, 2-core CI); N4 on a 2 mm head shrinks by 2.
    opts.register = RegisterOptions { levels_mm: vec![8.0, 4.0], iterations: 60, ..Default::default() };
    opts.n4.shrink = 2;
    // Two SyN levels (brain extraction registers the head deformably too, then `syn` the stripped brain).
    opts.syn = SynOptions { levels_mm: vec![4.0, 3.0], iterations: vec![20, 10], ..SynOptions::default() };
    let start = std::time::Instant::now();
    let out = preprocess_steps(&head, &template, &ModelConfig::paper(), &opts).unwrap();
    let secs = start.elapsed().as_secs_f64();

    let ran: Vec<Step> = out.ran.iter().map(|r| r.step).collect();
    assert_eq!(ran, vec![Step::N4, Step::BrainExtract, Step::Register, Step::Syn, Step::Resize]);
    assert_eq!(ran, Step::published_steps(), "the published config runs the paper's order");
    assert_eq!(out.ran[3].syn_iterations.as_ref().map(|v| v.len()), Some(2), "SyN ran both levels");
    assert_eq!(out.registered.shape(), [193, 229, 193]);
    assert!(out.registered.affine.max_abs_diff(&Affine::from_spacing_origin([1.0; 3], [-96.0, -132.0, -78.0])) < 1e-9);
    assert_eq!(out.model_input.shape(), [128, 160, 128]);
    let (lo, hi) = out.model_input.data.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert!(lo == 0.0 && (hi - 1.0).abs() < 1e-6, "model input range {lo}..{hi}");

    let qc = out.ran[1].brain.expect("brain extraction QC is recorded");
    let mut reference = resample(&template.mask, &Grid::of(&head), &Affine::identity(), Interp::Linear, 0.0).unwrap();
    reference.data.mapv_inplace(|v| if v > 0.5 { 1.0 } else { 0.0 });
    let extracted = dice(&out.native_mask, &reference).unwrap();
    let carried_mask = mask_to_native(&template.mask, &head, &out.transform, false).unwrap();
    let carried = dice(&carried_mask, &reference).unwrap();
    eprintln!(
        "published steps in {secs:.1} s ({:?}); brain: volume ratio {:.3}, Dice to the carried template mask \
         {:.3}; Dice to the reference: extracted {extracted:.3}, template mask through the affine {carried:.3}; mutual information {:.3}",
        out.ran.iter().map(|r| (r.step.name(), (r.secs * 10.0).round() / 10.0)).collect::<Vec<_>>(),
        qc.volume_ratio,
        qc.dice_to_template,
        out.mi
    );
    // Measured (2-core dev box, debug, 15 s): Dice to the reference 0.927 (the carried template mask: 0.979, but the
    // reference *is* the template mask, so that number flatters it), volume ratio 0.916 (the intensity
    // refinement drops dark sulcal CSF at the edge).
    // The deformable chain: the registered scan fits the template better inside its brain than the affine alone
    // (correlation over the template mask on the template grid, the raw head resampled both ways).
    let warp = out.deformable.as_ref().expect("syn's fields are returned");
    let chain = Chain {
        steps: vec![ChainStep::Field(Box::new(warp.forward.clone())), ChainStep::Affine(out.transform.matrix)],
    };
    let tgrid = Grid::of(&template.t1);
    let affine_only = resample(&head, &tgrid, &out.transform.matrix, Interp::Linear, 0.0).unwrap();
    let deformed = chain.resample(&head, &tgrid, Interp::Linear, 0.0).unwrap();
    let (r_affine, r_syn) = (masked_corr(&template, &affine_only), masked_corr(&template, &deformed));
    eprintln!("correlation to the template inside its brain mask: affine {r_affine:.4}, affine + SyN {r_syn:.4}");
    // Measured (2-core dev box, loaded, debug, 38 s for all steps): 0.697 → 0.831; unwarped Dice 0.946.
    assert!(r_syn > r_affine + 0.07, "SyN did not improve the fit enough: {r_affine} → {r_syn}");
    // Written as the daemon writes it, the chain folder reads back as the same map, and gap filling's unwarp
    // follows its inverse: the template mask lands on the native brain.
    let dir = tempfile::tempdir().unwrap();
    let record = write_chain_folder(&dir.path().join("t"), &out.transform, &warp.forward, &warp.inverse).unwrap();
    for f in ["affine.txt", "affine.json", "warp.nii.gz", "inverse_warp.nii.gz", "transform.json"] {
        assert!(dir.path().join("t").join(f).is_file(), "{f} is written");
    }
    let l = Limits::default();
    let read = Chain::read(&record, false, &l).unwrap();
    let worst = [[0.0, -20.0, 10.0], [30.0, 10.0, -5.0], [-40.0, -60.0, 20.0]]
        .iter()
        .map(|p| {
            let (a, b) = (chain.apply(*p), read.apply(*p));
            (0..3).map(|i| (a[i] - b[i]).abs()).fold(0.0, f64::max)
        })
        .fold(0.0, f64::max);
    assert!(worst < 1e-3, "the stored chain maps points {worst} mm away from the computed one");
    let mut back = unwarp(&template.mask, &Grid::of(&head), &record, &l).unwrap();
    back.data.mapv_inplace(|v| if v > 0.5 { 1.0 } else { 0.0 });
    let unwarped = dice(&back, &reference).unwrap();
    eprintln!("template mask unwarped through the stored chain: Dice {unwarped:.3} to the reference");
    assert!(unwarped > 0.9, "unwarped template mask Dice {unwarped}");
    assert!(extracted > 0.90, "extracted brain Dice {extracted} to the reference");
    assert!((0.8..1.2).contains(&qc.volume_ratio), "volume ratio {}", qc.volume_ratio);
    // The registered scan is skull-stripped: background outside the brain is 0.
    let outside = out.registered.data.iter().filter(|v| **v != 0.0).count() as f64 / out.registered.data.len() as f64;
    assert!(outside < 0.35, "{outside} of the registered grid is non-zero");
}

/// Pearson correlation of `vol` (on the template grid) with the template inside the template's brain mask.
fn masked_corr(template: &Template, vol: &ldae::volume::Volume) -> f64 {
    let pairs: Vec<(f64, f64)> = template
        .t1
        .data
        .iter()
        .zip(vol.data.iter())
        .zip(template.mask.data.iter())
        .filter(|(_, m)| **m > 0.5)
        .map(|((a, b), _)| (*a as f64, *b as f64))
        .collect();
    let n = pairs.len() as f64;
    let (ma, mb) = pairs.iter().fold((0.0, 0.0), |(x, y), (a, b)| (x + a / n, y + b / n));
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (a, b) in &pairs {
        sab += (a - ma) * (b - mb);
        saa += (a - ma) * (a - ma);
        sbb += (b - mb) * (b - mb);
    }
    sab / (saa * sbb).sqrt()
}
