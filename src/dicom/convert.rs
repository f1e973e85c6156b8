//! The converter facade: files/folders in, volumes (with sidecars) and rejections out.
//!
//! [`convert_paths`] walks the inputs, reads every header in parallel (header only), drops exact duplicates
//! (same SOPInstanceUID), groups and splits the series ([`super::series`]), checks each stack's geometry
//! ([`super::geometry`]) and only then decodes the chosen files' pixels, in parallel ([`super::pixels`]).
//! Nothing is dropped silently: every unreadable file and every refused stack is a [`Rejection`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::path::PathBuf;

use ndarray::{Array3, ShapeBuilder};
use rayon::prelude::*;
use serde_json::json;

use crate::config::ConvertConfig;
use crate::limits::Limits;
use crate::volume::{Provenance, Volume};

use super::geometry::{stack_geometry, SliceGeometry};
use super::pixels::{decode_slices, decode_slices_into, SliceRequest};
use super::read::{read_header_with, InstanceHeader};
use super::series::{group_stacks, StackGroup};
use super::{RejectReason, Rejection};

/// One file's decoding job: its slice requests and the volume planes they go to.
type FileJob<'a> = (Vec<SliceRequest>, Vec<&'a mut [f32]>);

/// One converted series (or split of a series).
#[derive(Debug, Clone)]
pub struct ConvertedSeries {
    /// The volume: `(i, j, k)` = (column, row, slice along the normal), RAS affine. Stored column-major
    /// (Fortran order, `i` fastest), the NIfTI on-disk order.
    pub volume: Volume,
    /// The JSON sidecar (UIDs, description, dates, voxel size, warnings, converter version).
    pub sidecar: serde_json::Value,
    pub series_uid: String,
    /// Sanitised file stem (no patient name, no path separators, no `..`), unique within one report.
    pub file_stem: String,
    /// The files the volume was built from, in slice order (each file once).
    pub sources: Vec<PathBuf>,
    /// What series selection (`[select]`) reads: modality, acquisition type, sequence, descriptions, image type.
    pub acquisition: super::select::SeriesAcquisition,
}

/// Everything `convert_paths` produced.
#[derive(Debug, Clone, Default)]
pub struct ConvertReport {
    pub converted: Vec<ConvertedSeries>,
    pub rejected: Vec<Rejection>,
}

/// Expand files and folders (recursively, sorted) into a file list; unreadable inputs become rejections.
pub fn collect_files(inputs: &[PathBuf]) -> (Vec<PathBuf>, Vec<Rejection>) {
    let mut files = Vec::new();
    let mut rejected = Vec::new();
    for input in inputs {
        let unreadable = |detail: String| Rejection {
            subject: input.display().to_string(),
            reason: RejectReason::Unreadable { detail },
            files: vec![input.clone()],
        };
        match std::fs::metadata(input) {
            Err(e) => rejected.push(unreadable(e.to_string())),
            Ok(m) if m.is_dir() => {
                for entry in walkdir::WalkDir::new(input).sort_by_file_name() {
                    match entry {
                        Ok(e) if e.file_type().is_file() => files.push(e.into_path()),
                        Ok(_) => {}
                        Err(e) => rejected.push(Rejection {
                            subject: e.path().unwrap_or(input).display().to_string(),
                            reason: RejectReason::Unreadable { detail: e.to_string() },
                            files: vec![e.path().unwrap_or(input).to_path_buf()],
                        }),
                    }
                }
            }
            Ok(_) => files.push(input.clone()),
        }
    }
    (files, rejected)
}

/// Scan + group + convert under the default [`Limits`].
pub fn convert_paths(inputs: &[PathBuf], cfg: &ConvertConfig) -> ConvertReport {
    convert_paths_with(inputs, cfg, &Limits::default())
}

/// Scan + group + convert; every count, length and dimension a file claims is bounded by `limits`.
pub fn convert_paths_with(inputs: &[PathBuf], cfg: &ConvertConfig, limits: &Limits) -> ConvertReport {
    collected(|sink| convert_paths_each(inputs, cfg, limits, sink))
}

/// Scan + group + convert, handing each series to `sink` as soon as it is built (memory holds one volume at a
/// time, and the caller can write series n while n + 1 is decoded). Returns every rejection, or the first error
/// `sink` returned (conversion stops there).
pub fn convert_paths_each<E>(
    inputs: &[PathBuf],
    cfg: &ConvertConfig,
    limits: &Limits,
    sink: impl FnMut(ConvertedSeries) -> Result<(), E>,
) -> Result<Vec<Rejection>, E> {
    let (files, mut rejected) = collect_files(inputs);
    let results: Vec<_> = files.par_iter().map(|p| read_header_with(p, limits)).collect();
    let mut headers = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Ok(h) => headers.push(h),
            Err(e) => rejected.push(Rejection::from_error(&e)),
        }
    }
    rejected.append(&mut convert_headers_each(headers, cfg, limits, sink)?);
    Ok(rejected)
}

/// Convert already-read headers under the default [`Limits`].
pub fn convert_headers(headers: Vec<InstanceHeader>, cfg: &ConvertConfig) -> ConvertReport {
    convert_headers_with(headers, cfg, &Limits::default())
}

/// Convert already-read headers (the daemon's entry point once a series is complete).
pub fn convert_headers_with(headers: Vec<InstanceHeader>, cfg: &ConvertConfig, limits: &Limits) -> ConvertReport {
    collected(|sink| convert_headers_each(headers, cfg, limits, sink))
}

/// Convert already-read headers, handing each series to `sink` as it is built; see [`convert_paths_each`].
pub fn convert_headers_each<E>(
    headers: Vec<InstanceHeader>,
    cfg: &ConvertConfig,
    limits: &Limits,
    mut sink: impl FnMut(ConvertedSeries) -> Result<(), E>,
) -> Result<Vec<Rejection>, E> {
    let (headers, duplicates) = drop_duplicates(headers);
    let (groups, bad_series) = group_stacks(&headers);
    let mut rejected = Vec::new();
    for (uid, reason) in bad_series {
        let files = headers.iter().filter(|h| h.series_instance_uid == uid).map(|h| h.path.clone()).collect();
        rejected.push(Rejection { subject: format!("series {uid}"), reason, files });
    }
    let mut stems: HashSet<String> = HashSet::new();
    for g in &groups {
        match convert_group(&headers, g, cfg, limits, &duplicates) {
            Ok(mut c) => {
                let mut stem = c.file_stem.clone();
                let mut n = 2;
                while !stems.insert(stem.clone()) {
                    stem = format!("{}_{n}", c.file_stem);
                    n += 1;
                }
                c.file_stem = stem;
                sink(c)?;
            }
            Err(mut r) => rejected.append(&mut r),
        }
    }
    Ok(rejected)
}

/// A streaming conversion's series gathered into a [`ConvertReport`].
fn collected(
    run: impl FnOnce(&mut dyn FnMut(ConvertedSeries) -> Result<(), Infallible>) -> Result<Vec<Rejection>, Infallible>,
) -> ConvertReport {
    let mut converted = Vec::new();
    let Ok(rejected) = run(&mut |c| {
        converted.push(c);
        Ok(())
    });
    ConvertReport { converted, rejected }
}

/// Keep the first instance of every SOPInstanceUID; return the dropped paths per series UID.
fn drop_duplicates(headers: Vec<InstanceHeader>) -> (Vec<InstanceHeader>, HashMap<String, Vec<PathBuf>>) {
    let mut seen: HashSet<String> = HashSet::new();
    let mut kept = Vec::with_capacity(headers.len());
    let mut dropped: HashMap<String, Vec<PathBuf>> = HashMap::new();
    for h in headers {
        if seen.insert(h.sop_instance_uid.clone()) {
            kept.push(h);
        } else {
            tracing::info!(sop = %h.sop_instance_uid, file = %h.path.display(), "duplicate instance dropped");
            dropped.entry(h.series_instance_uid.clone()).or_default().push(h.path);
        }
    }
    (kept, dropped)
}

fn group_subject(g: &StackGroup) -> String {
    if g.label.is_empty() {
        format!("series {}", g.series_uid)
    } else {
        format!("series {} [{}]", g.series_uid, g.label)
    }
}

/// Check and convert one stack.
fn convert_group(
    headers: &[InstanceHeader],
    g: &StackGroup,
    cfg: &ConvertConfig,
    limits: &Limits,
    duplicates: &HashMap<String, Vec<PathBuf>>,
) -> Result<ConvertedSeries, Vec<Rejection>> {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut seen = HashSet::new();
    for s in &g.slices {
        if seen.insert(s.header) {
            files.push(headers[s.header].path.clone());
        }
    }
    let reject = |reason: RejectReason| vec![Rejection { subject: group_subject(g), reason, files: files.clone() }];
    if g.slices.len() < cfg.min_slices {
        // A lone file is more likely broken than short: report its own problem when it has one.
        let broken = probe_files(headers, g, &files, limits);
        if !broken.is_empty() {
            return Err(broken);
        }
        return Err(reject(RejectReason::TooFewSlices { found: g.slices.len(), min: cfg.min_slices }));
    }
    let mut geoms = Vec::with_capacity(g.slices.len());
    for s in &g.slices {
        let h = &headers[s.header];
        match (s.info.position, s.info.orientation, s.info.pixel_spacing) {
            (Some(position), Some(orientation), Some(pixel_spacing)) => {
                geoms.push(SliceGeometry { position, orientation, pixel_spacing })
            }
            _ => {
                return Err(reject(RejectReason::MissingGeometry {
                    detail: format!(
                        "{} lacks ImagePositionPatient, ImageOrientationPatient or PixelSpacing",
                        h.path.display()
                    ),
                }))
            }
        }
    }
    let first = &headers[g.slices[0].header];
    let fallback = first.spacing_between_slices.or(g.slices[0].info.slice_thickness).unwrap_or(1.0);
    let stack = stack_geometry(&geoms, cfg.spacing_tolerance, fallback, cfg.resample_gaps).map_err(reject)?;
    // The volume's size (gap filling can add slices) is bounded before anything is decoded or allocated.
    let (ni, nj, nk) = (g.columns as usize, g.rows as usize, stack.nk);
    if let Err(e) = limits.voxels(&[ni as u64, nj as u64, nk as u64]) {
        return Err(reject(RejectReason::Unreadable { detail: format!("over a limit: {e}") }));
    }

    // Decode: every file once, in parallel, each file's slices straight into their planes of the volume (its
    // size was bounded above; stack slots are unique, so the planes are handed out once each).
    let plane = ni * nj;
    let mut data = vec![0f32; plane * nk];
    let mut planes: Vec<Option<&mut [f32]>> = data.chunks_mut(plane.max(1)).map(Some).collect();
    let mut per_file: BTreeMap<usize, FileJob<'_>> = BTreeMap::new();
    for (k, &idx) in stack.order.iter().enumerate() {
        let s = &g.slices[idx];
        let req = SliceRequest {
            frame: s.frame,
            tile: s.tile,
            slope: s.info.rescale_slope,
            intercept: s.info.rescale_intercept,
        };
        let Some(dst) = planes.get_mut(stack.slots[k]).and_then(Option::take) else {
            return Err(reject(RejectReason::Unreadable {
                detail: format!("slice slot {} is outside the stack or used twice", stack.slots[k]),
            }));
        };
        let job = per_file.entry(s.header).or_default();
        job.0.push(req);
        job.1.push(dst);
    }
    let jobs: Vec<(usize, FileJob<'_>)> = per_file.into_iter().collect();
    let decoded: Vec<Result<(), Vec<Rejection>>> = jobs
        .into_par_iter()
        .map(|(hi, (reqs, mut dsts))| {
            let h = &headers[hi];
            decode_slices_into(h, &reqs, &mut dsts, limits).map_err(|e| {
                // One bad file spoils the stack: name the file, keep the series' files with the rejection.
                let mut rej = Rejection::from_error(&e);
                rej.subject = format!("{} (file {})", group_subject(g), h.path.display());
                rej.files = files.clone();
                vec![rej]
            })
        })
        .collect();
    drop(planes);
    for d in decoded {
        d?;
    }
    let filled = fill_gaps(&mut data, plane, &stack.slots, nk);
    let array = Array3::from_shape_vec((ni, nj, nk).f(), data)
        .map_err(|e| reject(RejectReason::Unreadable { detail: e.to_string() }))?;

    let mut warnings: Vec<String> = g.splits.clone();
    if let Some(d) = duplicates.get(&g.series_uid) {
        for p in d {
            warnings.push(format!("duplicate instance dropped (same SOPInstanceUID): {}", p.display()));
        }
    }
    if filled > 0 {
        warnings.push(format!(
            "RESAMPLED: {filled} missing slice(s) filled by linear interpolation along the normal (convert.resample_gaps)"
        ));
    }
    if first.gantry_tilt.is_some_and(|t| t.abs() > 1e-3) {
        warnings
            .push(format!("GantryDetectorTilt {} deg but the stack is orthogonal", first.gantry_tilt.unwrap_or(0.0)));
    }
    let sop_uids: Vec<&str> =
        stack.order.iter().map(|&i| headers[g.slices[i].header].sop_instance_uid.as_str()).collect();
    let mut sop_unique: Vec<&str> = Vec::new();
    for u in sop_uids {
        if sop_unique.last() != Some(&u) {
            sop_unique.push(u);
        }
    }
    let mut sources: Vec<PathBuf> = Vec::new();
    for &i in &stack.order {
        let p = &headers[g.slices[i].header].path;
        if sources.last() != Some(p) {
            sources.push(p.clone());
        }
    }
    let affine = stack.affine;
    let volume = Volume {
        data: array,
        affine,
        provenance: Provenance { source: g.series_uid.clone(), notes: warnings.clone() },
    };
    let vs = volume.spacing();
    let sidecar = json!({
        "SeriesInstanceUID": g.series_uid,
        "StudyInstanceUID": first.study_instance_uid,
        "FrameOfReferenceUID": first.frame_of_reference_uid,
        "SOPInstanceUIDs": sop_unique,
        "PatientID": first.patient_id,
        "Modality": first.modality,
        "Manufacturer": first.manufacturer,
        "SeriesNumber": first.series_number,
        "SeriesDescription": first.series_description,
        "ProtocolName": first.protocol_name,
        "StudyDate": first.study_date,
        "StudyTime": first.study_time,
        "AcquisitionDate": first.acquisition_date.as_ref().or(first.series_date.as_ref()),
        "AcquisitionTime": first.acquisition_time.as_ref().or(first.series_time.as_ref()),
        "EchoNumber": first.echo_number,
        "EchoTime": g.slices[0].info.echo_time.or(first.echo_time),
        "ImageType": first.image_type,
        "MRAcquisitionType": first.mr_acquisition_type,
        "ScanningSequence": first.scanning_sequence,
        "SequenceName": first.sequence_name,
        "TransferSyntaxUID": first.transfer_syntax,
        "Split": g.label,
        "Shape": [ni, nj, nk],
        "VoxelSize": vs,
        "SliceStep": stack.slice_step,
        "Affine": affine.0,
        "Warnings": warnings,
        "ConversionSoftware": "ldae",
        "ConversionSoftwareVersion": crate::VERSION,
    });
    Ok(ConvertedSeries {
        volume,
        sidecar,
        series_uid: g.series_uid.clone(),
        file_stem: file_stem(first, &g.label),
        sources,
        acquisition: super::select::SeriesAcquisition::of(first),
    })
}

/// Fill the slices no input landed in by linear interpolation between the nearest filled neighbours; returns how
/// many were filled. `slots` is sorted and starts at 0.
fn fill_gaps(data: &mut [f32], plane: usize, slots: &[usize], nk: usize) -> usize {
    let mut filled = 0;
    for w in slots.windows(2) {
        let (a, b) = (w[0], w[1]);
        for k in a + 1..b {
            let t = (k - a) as f32 / (b - a) as f32;
            for p in 0..plane {
                data[k * plane + p] = data[a * plane + p] * (1.0 - t) + data[b * plane + p] * t;
            }
            filled += 1;
        }
    }
    debug_assert!(slots.last().is_none_or(|&l| l + 1 == nk));
    filled
}

/// Decode the first requested frame of each file of a (small) stack; each failure as a file rejection.
fn probe_files(headers: &[InstanceHeader], g: &StackGroup, files: &[PathBuf], limits: &Limits) -> Vec<Rejection> {
    let mut done = HashSet::new();
    let mut out = Vec::new();
    for s in &g.slices {
        if !done.insert(s.header) {
            continue;
        }
        let req = SliceRequest { frame: s.frame, tile: s.tile, slope: 1.0, intercept: 0.0 };
        if let Err(e) = decode_slices(&headers[s.header], &[req], limits) {
            let mut r = Rejection::from_error(&e);
            r.files = files.to_vec();
            out.push(r);
        }
    }
    out
}

/// `<SeriesNumber>_<SeriesDescription>[_<split>]`, sanitised; never a patient name.
pub fn file_stem(h: &InstanceHeader, label: &str) -> String {
    let mut parts = Vec::new();
    match h.series_number {
        Some(n) => parts.push(format!("{n:03}")),
        None => parts.push(format!("series_{}", h.series_instance_uid.rsplit('.').next().unwrap_or("x"))),
    }
    if let Some(d) = h.series_description.as_deref().or(h.protocol_name.as_deref()) {
        parts.push(d.to_string());
    }
    if !label.is_empty() {
        parts.push(label.to_string());
    }
    sanitize(&parts.join("_"))
}

/// Keep `[A-Za-z0-9_-]`, turn everything else (path separators, dots, spaces) into `_`, collapse runs, cap at
/// 80 characters. Never empty, never `.`/`..`, never a path.
pub fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    let t: String = out.trim_matches('_').chars().take(80).collect();
    if t.is_empty() {
        "series".to_string()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_removes_paths_and_dots() {
        assert_eq!(sanitize("../../etc/passwd"), "etc_passwd");
        assert_eq!(sanitize(".."), "series");
        assert_eq!(sanitize("T1 MPRAGE/sag\\x"), "T1_MPRAGE_sag_x");
        assert!(!sanitize("a..b").contains(".."));
    }
}
