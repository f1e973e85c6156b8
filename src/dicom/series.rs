//! Grouping headers into stacks: by SeriesInstanceUID, then split by image size, orientation, echo, Image Type,
//! stack/temporal position (multi-frame), mosaic volume and acquisition. Every split is logged with its reason
//! and recorded in the group, so the sidecar says why a series became several volumes.
//!
//! A stack is a list of [`SliceRef`]: one frame of one file (single-frame files have one, Enhanced multi-frame
//! files one per frame, a Siemens mosaic one per tile). Its geometry is in [`FrameInfo`], already corrected for
//! mosaic tiling here.

use std::collections::BTreeMap;

use super::geometry::{cross, directions, same_orientation};
use super::read::{FrameInfo, InstanceHeader};
use super::RejectReason;

/// One 2-D image of a stack.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceRef {
    /// Index into the header list.
    pub header: usize,
    /// Frame of that file (0 for single-frame files).
    pub frame: u32,
    /// Mosaic tile (index, tiles per side), when the slice is cut from a mosaic.
    pub tile: Option<(u32, u32)>,
    /// Geometry and scaling of this slice.
    pub info: FrameInfo,
}

/// A candidate volume: slices of one series that share size, orientation, echo and type.
#[derive(Debug, Clone, PartialEq)]
pub struct StackGroup {
    pub series_uid: String,
    /// Joined split labels (`""` when the series was not split), e.g. `e2` or `60x46`.
    pub label: String,
    /// Why the series was split (one entry per split that happened).
    pub splits: Vec<String>,
    /// Slice size (a mosaic tile's size for mosaics).
    pub rows: u32,
    pub columns: u32,
    pub slices: Vec<SliceRef>,
}

/// Turn headers into stacks. Series that cannot be laid out (a mosaic without a tile count) are returned as
/// rejections with the series UID.
pub fn group_stacks(headers: &[InstanceHeader]) -> (Vec<StackGroup>, Vec<(String, RejectReason)>) {
    let mut by_series: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, h) in headers.iter().enumerate() {
        by_series.entry(h.series_instance_uid.as_str()).or_default().push(i);
    }
    let mut out = Vec::new();
    let mut rejected = Vec::new();
    for (uid, idx) in by_series {
        let mut slices = Vec::new();
        let mut dims = Vec::new();
        let mut failed = None;
        for &i in &idx {
            match slices_of(headers, i) {
                Ok((s, d)) => {
                    dims.extend(std::iter::repeat_n(d, s.len()));
                    slices.extend(s);
                }
                Err(r) => {
                    failed = Some(r);
                    break;
                }
            }
        }
        if let Some(r) = failed {
            rejected.push((uid.to_string(), r));
            continue;
        }
        let mut groups =
            vec![Partial { label: Vec::new(), splits: Vec::new(), items: slices.into_iter().zip(dims).collect() }];
        groups = split(groups, uid, "image size (Rows x Columns)", |(_, (r, c))| format!("{c}x{r}"));
        groups = split_orientation(groups, uid);
        groups = split(groups, uid, "echo", |(s, _)| echo_key(&headers[s.header], &s.info));
        groups = split(groups, uid, "Image Type", |(s, _)| headers[s.header].image_type.join("_"));
        groups = split(groups, uid, "multi-frame stack / temporal position", |(s, _)| {
            match (&s.info.stack_id, s.info.temporal_index) {
                (None, None) => String::new(),
                (st, t) => format!("st{}_t{}", st.as_deref().unwrap_or("0"), t.unwrap_or(0)),
            }
        });
        groups = split(groups, uid, "mosaic volume (one mosaic file per volume)", |(s, _)| {
            if s.tile.is_some() {
                format!("vol{}", headers[s.header].instance_number.unwrap_or(s.header as i64))
            } else {
                String::new()
            }
        });
        groups = split_acquisition(groups, uid, headers);
        for g in groups {
            let (rows, columns) = g.items.first().map(|(_, d)| *d).unwrap_or((0, 0));
            out.push(StackGroup {
                series_uid: uid.to_string(),
                label: g.label.join("_"),
                splits: g.splits,
                rows,
                columns,
                slices: g.items.into_iter().map(|(s, _)| s).collect(),
            });
        }
    }
    (out, rejected)
}

type Item = (SliceRef, (u32, u32));

struct Partial {
    label: Vec<String>,
    splits: Vec<String>,
    items: Vec<Item>,
}

/// Split every group by a key; log and record the split when a group falls apart.
fn split(groups: Vec<Partial>, uid: &str, what: &str, key: impl Fn(&Item) -> String) -> Vec<Partial> {
    let mut out = Vec::new();
    for g in groups {
        let mut parts: BTreeMap<String, Vec<Item>> = BTreeMap::new();
        for it in g.items {
            parts.entry(key(&it)).or_default().push(it);
        }
        if parts.len() > 1 {
            let desc: Vec<String> = parts.iter().map(|(k, v)| format!("{k}: {} slices", v.len())).collect();
            let msg = format!("split by {what} into {} stacks ({})", parts.len(), desc.join(", "));
            tracing::info!(series = uid, "{msg}");
            for (k, items) in parts {
                let mut label = g.label.clone();
                label.push(k);
                let mut splits = g.splits.clone();
                splits.push(msg.clone());
                out.push(Partial { label, splits, items });
            }
        } else {
            out.push(Partial {
                label: g.label,
                splits: g.splits,
                items: parts.into_values().next().unwrap_or_default(),
            });
        }
    }
    out
}

/// Split by orientation, clustering IOPs within the geometry tolerance; labels name the plane.
fn split_orientation(groups: Vec<Partial>, uid: &str) -> Vec<Partial> {
    let mut out = Vec::new();
    for g in groups {
        let mut reps: Vec<[f64; 6]> = Vec::new();
        for (s, _) in &g.items {
            if let Some(o) = s.info.orientation {
                if !reps.iter().any(|r| same_orientation(r, &o)) {
                    reps.push(o);
                }
            }
        }
        out.extend(split(vec![g], uid, "orientation", |(s, _)| match s.info.orientation {
            None => "noorient".to_string(),
            Some(o) => match reps.iter().position(|r| same_orientation(r, &o)) {
                Some(k) => format!("{}{}", plane_name(&reps[k]), k + 1),
                None => "noorient".to_string(),
            },
        }));
    }
    out
}

/// Split by AcquisitionNumber only when each acquisition is a full stack of its own (repeated positions);
/// scanners that number every slice differently are left alone.
fn split_acquisition(groups: Vec<Partial>, uid: &str, headers: &[InstanceHeader]) -> Vec<Partial> {
    let mut out = Vec::new();
    for g in groups {
        let mut acqs: BTreeMap<Option<i64>, usize> = BTreeMap::new();
        for (s, _) in &g.items {
            *acqs.entry(headers[s.header].acquisition_number).or_default() += 1;
        }
        let repeated = has_repeated_positions(&g.items);
        if acqs.len() > 1 && repeated && acqs.values().all(|&n| n > 1) {
            out.extend(split(vec![g], uid, "acquisition (repeated slice positions)", |(s, _)| {
                format!("a{}", headers[s.header].acquisition_number.unwrap_or(0))
            }));
        } else {
            out.push(g);
        }
    }
    out
}

fn has_repeated_positions(items: &[Item]) -> bool {
    let mut seen: Vec<[f64; 3]> = Vec::new();
    for (s, _) in items {
        if let Some(p) = s.info.position {
            if seen.iter().any(|q| (0..3).all(|d| (q[d] - p[d]).abs() < 1e-3)) {
                return true;
            }
            seen.push(p);
        }
    }
    false
}

fn echo_key(h: &InstanceHeader, f: &FrameInfo) -> String {
    match (h.echo_number, f.echo_time) {
        (_, Some(te)) if h.number_of_frames > 1 => format!("te{}", te),
        (Some(e), _) => format!("e{e}"),
        _ => String::new(),
    }
}

/// `ax`, `cor`, `sag` or `obl` from the slice normal's largest component.
fn plane_name(o: &[f64; 6]) -> &'static str {
    let (r, c) = directions(o);
    let n = cross(r, c);
    let a = n.map(f64::abs);
    let max = a[0].max(a[1]).max(a[2]);
    if max < 0.99 {
        "obl"
    } else if a[2] == max {
        "ax"
    } else if a[1] == max {
        "cor"
    } else {
        "sag"
    }
}

/// The slices of one file and their (rows, columns).
fn slices_of(headers: &[InstanceHeader], i: usize) -> Result<(Vec<SliceRef>, (u32, u32)), RejectReason> {
    let h = &headers[i];
    let (rows, cols) = (h.rows.unwrap_or(0), h.columns.unwrap_or(0));
    if h.is_mosaic() && h.number_of_frames == 1 {
        return mosaic_slices(h, i);
    }
    let slices = h
        .frames
        .iter()
        .enumerate()
        .map(|(f, info)| SliceRef { header: i, frame: f as u32, tile: None, info: info.clone() })
        .collect();
    Ok((slices, (rows, cols)))
}

/// Cut a Siemens mosaic into its tiles: `m = ceil(sqrt(N))` tiles per side; the stored IPP is the corner of the
/// whole mosaic, so each tile's position is moved to the tile's own corner and then along the normal by
/// SpacingBetweenSlices (or SliceThickness) per tile.
fn mosaic_slices(h: &InstanceHeader, i: usize) -> Result<(Vec<SliceRef>, (u32, u32)), RejectReason> {
    let n = h
        .mosaic_images
        .ok_or_else(|| RejectReason::UnsupportedLayout { detail: "mosaic without NumberOfImagesInMosaic".into() })?;
    let (rows, cols) = (h.rows.unwrap_or(0), h.columns.unwrap_or(0));
    let m = (n as f64).sqrt().ceil() as u32;
    if m == 0 || rows / m == 0 || cols / m == 0 || (m as u64) * (m as u64) < n as u64 {
        return Err(RejectReason::UnsupportedLayout {
            detail: format!("mosaic of {n} images does not tile {cols}x{rows}"),
        });
    }
    let (r, c) = (rows / m, cols / m);
    let base = h.frames.first().cloned().unwrap_or_default();
    let (Some(ipp), Some(iop), Some(ps)) = (base.position, base.orientation, base.pixel_spacing) else {
        return Err(RejectReason::MissingGeometry { detail: "mosaic without IPP/IOP/PixelSpacing".into() });
    };
    let (rd, cd) = directions(&iop);
    let normal = crate::dicom::geometry::slice_normal(&iop);
    let step = h
        .spacing_between_slices
        .or(base.slice_thickness)
        .filter(|s| *s > 0.0)
        .ok_or_else(|| RejectReason::MissingGeometry { detail: "mosaic without slice spacing".into() })?;
    // The offset uses the fractional tile size (Columns/m), as the scanner's centre-of-mosaic convention does when
    // Columns is not a multiple of m (e.g. 256 = 7 × 36.57); the tiles themselves are floor(Columns/m) wide.
    let dx = (cols as f64 - cols as f64 / m as f64) / 2.0 * ps[1];
    let dy = (rows as f64 - rows as f64 / m as f64) / 2.0 * ps[0];
    let corner = [0, 1, 2].map(|d| ipp[d] + rd[d] * dx + cd[d] * dy);
    let slices = (0..n)
        .map(|t| {
            let mut info = base.clone();
            info.position = Some([0, 1, 2].map(|d| corner[d] + normal[d] * step * t as f64));
            SliceRef { header: i, frame: 0, tile: Some((t, m)), info }
        })
        .collect();
    Ok((slices, (r, c)))
}
