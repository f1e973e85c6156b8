//! Series selection (`[select]`): which converted series are brain T1 volumes worth registering and encoding.
//! Everything is converted and stored; a series these rules exclude is kept with the rule that excluded it
//! (state `skipped` in the daemon) instead of being registered to a T1 template it does not resemble —
//! localizers, diffusion, CT, slabs.
//!
//! Rules, checked in this order, the first that fails names itself by its config key: modality, MR acquisition
//! type (optional), Image Type values, Scanning Sequence values, exclude patterns, include patterns, slice count,
//! field of view. Patterns are case-insensitive: a pattern with `*` or `?` is a glob over the whole text, any
//! other pattern matches anywhere in it (`"localizer"` = `"*localizer*"`). They are matched against
//! SeriesDescription, ProtocolName and SequenceName. No regular expressions: a glob list is enough and cannot
//! be made slow by a bad pattern.

use serde::{Deserialize, Serialize};

use crate::volume::Volume;

/// The `[select]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelectConfig {
    /// DICOM Modality values selected (case-insensitive). Empty: any.
    pub modalities: Vec<String>,
    /// Only MR series whose MRAcquisitionType is `3D`. Off by default: the shipped demo series is a 2-D
    /// acquisition of 3 mm slices.
    pub require_3d: bool,
    /// A series carrying any of these Image Type values is skipped (exact, case-insensitive).
    pub exclude_image_types: Vec<String>,
    /// A series with any of these Scanning Sequence values is skipped (`EP`: echo planar — diffusion, fMRI).
    pub exclude_scanning_sequences: Vec<String>,
    /// Patterns on SeriesDescription, ProtocolName and SequenceName: a match skips the series.
    pub exclude: Vec<String>,
    /// Patterns on the same fields: when not empty, a series is selected only if one matches.
    pub include: Vec<String>,
    /// Fewest slices (along the volume's slice axis).
    pub min_slices: usize,
    /// Smallest extent of the volume along each of its three axes, in mm (a brain is ~140 mm in every direction).
    pub min_fov_mm: f64,
}

impl Default for SelectConfig {
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        SelectConfig {
            modalities: s(&["MR"]),
            require_3d: false,
            exclude_image_types: s(&["LOCALIZER", "DIFFUSION", "ADC", "TRACE", "FA", "PROJECTION IMAGE"]),
            exclude_scanning_sequences: s(&["EP"]),
            exclude: s(&[
                "localizer",
                "localiser",
                "scout",
                "survey",
                "aahead",
                "calibration",
                "dwi",
                "dti",
                "diffusion",
                "adc",
                "trace",
                "ep_b",
                "flair",
                "t2",
                "swi",
                "bold",
                "fmri",
                "perfusion",
                "asl",
                "tof",
                "angio",
                "mip",
            ]),
            include: Vec::new(),
            min_slices: 20,
            min_fov_mm: 100.0,
        }
    }
}

impl SelectConfig {
    /// Check values that types alone cannot: `(key, message)` of the first bad one.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if !(self.min_fov_mm >= 0.0 && self.min_fov_mm.is_finite()) {
            return Err(("select.min_fov_mm", "must be a number of millimetres ≥ 0"));
        }
        if self.exclude.iter().chain(&self.include).any(|p| p.trim().is_empty()) {
            return Err(("select.exclude", "patterns must not be empty (an empty pattern matches everything)"));
        }
        Ok(())
    }
}

/// What the selection rules read from a series' header (its first instance).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SeriesAcquisition {
    pub modality: Option<String>,
    /// `2D` or `3D`, upper case.
    pub mr_acquisition_type: Option<String>,
    /// Upper case.
    pub scanning_sequence: Vec<String>,
    pub sequence_name: Option<String>,
    pub series_description: Option<String>,
    pub protocol_name: Option<String>,
    /// Upper case.
    pub image_type: Vec<String>,
}

impl SeriesAcquisition {
    /// From a header.
    pub fn of(h: &super::InstanceHeader) -> Self {
        SeriesAcquisition {
            modality: h.modality.clone(),
            mr_acquisition_type: h.mr_acquisition_type.clone(),
            scanning_sequence: h.scanning_sequence.clone(),
            sequence_name: h.sequence_name.clone(),
            series_description: h.series_description.clone(),
            protocol_name: h.protocol_name.clone(),
            image_type: h.image_type.clone(),
        }
    }
}

/// Why a series was not selected: the rule (its config key) and what the series had.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Exclusion {
    #[error("select.modalities: modality {} is not one of {allowed:?}", found.as_deref().unwrap_or("(none)"))]
    Modality { found: Option<String>, allowed: Vec<String> },
    #[error("select.require_3d: MRAcquisitionType is {}", found.as_deref().unwrap_or("absent"))]
    NotThreeD { found: Option<String> },
    #[error("select.exclude_image_types: ImageType contains {value}")]
    ImageType { value: String },
    #[error("select.exclude_scanning_sequences: ScanningSequence contains {value}")]
    ScanningSequence { value: String },
    #[error("select.exclude: {field} {value:?} matches {pattern:?}")]
    Pattern { field: &'static str, value: String, pattern: String },
    #[error("select.include: no pattern of {patterns:?} matches SeriesDescription, ProtocolName or SequenceName")]
    NotIncluded { patterns: Vec<String> },
    #[error("select.min_slices: {found} slices, fewer than {min}")]
    TooFewSlices { found: usize, min: usize },
    #[error("select.min_fov_mm: field of view {mm:.0} mm along axis {axis}, less than {min} mm")]
    SmallFieldOfView { axis: usize, mm: f64, min: f64 },
}

/// Case-insensitive match: a glob (`*`, `?`) over the whole text when the pattern has one, else a substring.
pub fn pattern_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    if !p.iter().any(|&c| c == '*' || c == '?') {
        let p: String = p.into_iter().collect();
        let t: String = t.into_iter().collect();
        return t.contains(&p);
    }
    // Iterative glob with one backtrack point: linear in practice, never exponential.
    let (mut pi, mut ti, mut star, mut mark) = (0usize, 0usize, None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Is this converted series a brain volume to register? `Err` names the first rule that excludes it.
pub fn select_series(rules: &SelectConfig, acq: &SeriesAcquisition, volume: &Volume) -> Result<(), Exclusion> {
    let upper = |s: &str| s.trim().to_ascii_uppercase();
    let modality = acq.modality.as_deref().map(upper);
    if !rules.modalities.is_empty() && !rules.modalities.iter().any(|m| Some(upper(m)) == modality) {
        return Err(Exclusion::Modality { found: acq.modality.clone(), allowed: rules.modalities.clone() });
    }
    if rules.require_3d && modality.as_deref() == Some("MR") && acq.mr_acquisition_type.as_deref() != Some("3D") {
        return Err(Exclusion::NotThreeD { found: acq.mr_acquisition_type.clone() });
    }
    if let Some(v) = acq.image_type.iter().find(|v| rules.exclude_image_types.iter().any(|x| upper(x) == upper(v))) {
        return Err(Exclusion::ImageType { value: v.clone() });
    }
    if let Some(v) =
        acq.scanning_sequence.iter().find(|v| rules.exclude_scanning_sequences.iter().any(|x| upper(x) == upper(v)))
    {
        return Err(Exclusion::ScanningSequence { value: v.clone() });
    }
    let fields: Vec<(&'static str, &str)> = [
        ("SeriesDescription", acq.series_description.as_deref()),
        ("ProtocolName", acq.protocol_name.as_deref()),
        ("SequenceName", acq.sequence_name.as_deref()),
    ]
    .into_iter()
    .filter_map(|(f, v)| Some((f, v?)))
    .collect();
    for pattern in &rules.exclude {
        if let Some((field, value)) = fields.iter().find(|(_, v)| pattern_matches(pattern, v)) {
            return Err(Exclusion::Pattern { field, value: value.to_string(), pattern: pattern.clone() });
        }
    }
    if !rules.include.is_empty() && !rules.include.iter().any(|p| fields.iter().any(|(_, v)| pattern_matches(p, v))) {
        return Err(Exclusion::NotIncluded { patterns: rules.include.clone() });
    }
    let shape = volume.shape();
    if shape[2] < rules.min_slices {
        return Err(Exclusion::TooFewSlices { found: shape[2], min: rules.min_slices });
    }
    let spacing = volume.spacing();
    for axis in 0..3 {
        let mm = shape[axis] as f64 * spacing[axis];
        if mm < rules.min_fov_mm {
            return Err(Exclusion::SmallFieldOfView { axis, mm, min: rules.min_fov_mm });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::Affine;

    fn vol(shape: (usize, usize, usize), mm: f64) -> Volume {
        Volume::new(ndarray::Array3::zeros(shape), Affine::from_spacing_origin([mm; 3], [0.0; 3]))
    }

    fn t1() -> SeriesAcquisition {
        SeriesAcquisition {
            modality: Some("MR".into()),
            mr_acquisition_type: Some("3D".into()),
            scanning_sequence: vec!["GR".into(), "IR".into()],
            sequence_name: Some("*tfl3d1_16ns".into()),
            series_description: Some("T1 MPRAGE sag".into()),
            protocol_name: Some("t1_mprage_sag_p2_iso".into()),
            image_type: vec!["ORIGINAL".into(), "PRIMARY".into(), "M".into(), "ND".into()],
        }
    }

    #[test]
    fn patterns_are_case_insensitive_globs_or_substrings() {
        assert!(pattern_matches("localizer", "AAHead_Scout LOCALIZER_3"));
        assert!(pattern_matches("*ep_b*", "*ep_b1000t"));
        assert!(pattern_matches("t1*sag", "T1_MPRAGE_SAG"));
        assert!(!pattern_matches("t1*sag", "T1_MPRAGE_SAG_ND"));
        assert!(pattern_matches("t?_mprage", "T1_MPRAGE"));
        assert!(!pattern_matches("dwi", "T1 MPRAGE"));
        // Many stars on a long text stays fast (no exponential backtracking).
        let long = "a".repeat(5000);
        assert!(!pattern_matches("*a*a*a*a*a*a*a*a*b", &long));
    }

    #[test]
    fn defaults_select_a_t1_and_name_the_rule_that_skips_the_others() {
        let r = SelectConfig::default();
        let brain = vol((176, 240, 256), 1.0);
        assert_eq!(select_series(&r, &t1(), &brain), Ok(()));
        let ct = SeriesAcquisition { modality: Some("CT".into()), ..t1() };
        let e = select_series(&r, &ct, &brain).unwrap_err();
        assert!(e.to_string().starts_with("select.modalities: modality CT"), "{e}");
        let loc = SeriesAcquisition {
            series_description: Some("AAHead_Scout".into()),
            mr_acquisition_type: Some("2D".into()),
            ..t1()
        };
        assert!(matches!(select_series(&r, &loc, &vol((256, 256, 3), 1.0)), Err(Exclusion::Pattern { .. })));
        let loc_type = SeriesAcquisition { image_type: vec!["ORIGINAL".into(), "LOCALIZER".into()], ..t1() };
        assert_eq!(select_series(&r, &loc_type, &brain), Err(Exclusion::ImageType { value: "LOCALIZER".into() }));
        let dwi = SeriesAcquisition { scanning_sequence: vec!["EP".into()], ..t1() };
        assert!(matches!(select_series(&r, &dwi, &brain), Err(Exclusion::ScanningSequence { .. })));
        let dwi_name = SeriesAcquisition { sequence_name: Some("*ep_b1000".into()), ..t1() };
        let e = select_series(&r, &dwi_name, &brain).unwrap_err();
        assert!(e.to_string().contains("SequenceName"), "{e}");
        let slab = vol((256, 256, 8), 1.0);
        assert_eq!(select_series(&r, &t1(), &slab), Err(Exclusion::TooFewSlices { found: 8, min: 20 }));
        let thin = vol((256, 256, 40), 2.0);
        let e = select_series(&r, &t1(), &thin).unwrap_err();
        assert!(e.to_string().starts_with("select.min_fov_mm: field of view 80 mm along axis 2"), "{e}");
    }

    #[test]
    fn optional_rules_3d_and_include() {
        let r = SelectConfig { require_3d: true, include: vec!["mprage".into(), "spgr".into()], ..Default::default() };
        let brain = vol((176, 240, 256), 1.0);
        assert_eq!(select_series(&r, &t1(), &brain), Ok(()));
        let two_d = SeriesAcquisition { mr_acquisition_type: Some("2D".into()), ..t1() };
        assert_eq!(select_series(&r, &two_d, &brain), Err(Exclusion::NotThreeD { found: Some("2D".into()) }));
        let other = SeriesAcquisition {
            series_description: Some("T1 axial".into()),
            protocol_name: None,
            sequence_name: None,
            ..t1()
        };
        assert!(matches!(select_series(&r, &other, &brain), Err(Exclusion::NotIncluded { .. })));
        let any = SelectConfig { modalities: vec![], ..Default::default() };
        let ct = SeriesAcquisition { modality: Some("CT".into()), ..t1() };
        assert_eq!(select_series(&any, &ct, &brain), Ok(()));
    }
}
