//! Bounds on what a file from outside may make ldae allocate (`[limits]` in the configuration).
//!
//! Every count, length and dimension read from a file (DICOM element lengths, NumberOfFrames, Rows × Columns,
//! encapsulated fragments, inflated sizes, NIfTI dims and vox_offset, pickle and safetensors headers) is checked
//! against the file's own size *and* against these limits before anything is allocated. The defaults admit every
//! real scan the project has seen (the largest: a 1 mm whole-head volume, enhanced MR with a few hundred frames)
//! with a wide margin, and keep the cost of rejecting a hostile file far below 256 MiB of memory.
//!
//! Parsers take a `&Limits`; code that has no configuration at hand uses [`Limits::default`].

use serde::{Deserialize, Serialize};

/// The bounds, one per kind of thing a file can claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most voxels in one volume (i × j × k, all frames/slices together).
    pub max_voxels: u64,
    /// Most bytes one DICOM element (or one NIfTI image, or one tensor) may claim.
    pub max_element_bytes: u64,
    /// Most frames in one DICOM object (NumberOfFrames) and most fragments of encapsulated Pixel Data.
    pub max_frames: u64,
    /// Most bytes a compressed stream (deflate transfer syntax, .nii.gz, zip member) may inflate to.
    pub max_inflated_bytes: u64,
    /// Deepest nesting of DICOM sequences (and of pickle containers).
    pub max_nesting_depth: u32,
    /// Largest image plane (Rows or Columns, NIfTI dim) along one axis.
    pub max_dim: u32,
    /// Most bytes of one DICOM data set before Pixel Data (every other element together, after inflation): what
    /// reading a header may hold in memory.
    pub max_header_bytes: u64,
    /// Most instances (files) of one series that a snapshot lists and a synthetic series references.
    pub max_series_instances: u64,
    /// Largest PDU ldae accepts from a DICOM peer (announced as its Maximum Length when associating; a PDU or a
    /// response command claiming more is refused before it is buffered) and the largest it sends.
    pub max_pdu_bytes: u32,
    /// Most coefficients of one B-spline control-point lattice (the N4 bias field at its finest level).
    pub max_spline_coefficients: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_voxels: 1 << 29,              // 536 M voxels: 2 GiB as f32; a 1 mm head is 7 M
            max_element_bytes: 1 << 30,       // 1 GiB
            max_frames: 1 << 14,              // 16384 frames / fragments
            max_inflated_bytes: 1 << 31,      // 2 GiB
            max_nesting_depth: 16,            // real data sets nest 3–6 deep
            max_dim: 1 << 14,                 // 16384 pixels along one axis
            max_header_bytes: 1 << 26,        // 64 MiB; real headers (enhanced MR included) are under a few MiB
            max_series_instances: 1 << 14,    // 16384 files; a 1 mm head is ~200 slices, a long fMRI run ~4000
            max_pdu_bytes: 1 << 16,           // 64 KiB; Orthanc's default is 16 KiB, dcmtk's 16 KiB
            max_spline_coefficients: 1 << 24, // 16 M; N4's default finest lattice is 11³
        }
    }
}

/// A bound that a file's claim broke: what was claimed, and the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is {claimed}, over the limit of {limit}")]
pub struct LimitExceeded {
    pub what: String,
    pub claimed: u64,
    pub limit: u64,
}

impl Limits {
    /// `Ok(claimed)` when `claimed ≤ limit`, else the error naming `what`.
    pub fn check(what: &str, claimed: u64, limit: u64) -> Result<u64, LimitExceeded> {
        if claimed <= limit {
            Ok(claimed)
        } else {
            Err(LimitExceeded { what: what.to_string(), claimed, limit })
        }
    }

    /// Checked product of dimensions, bounded by `max_voxels`.
    pub fn voxels(&self, dims: &[u64]) -> Result<u64, LimitExceeded> {
        let mut n: u64 = 1;
        for &d in dims {
            Self::check("a dimension", d, self.max_dim as u64)?;
            n = n.checked_mul(d).ok_or_else(|| LimitExceeded {
                what: "the voxel count".into(),
                claimed: u64::MAX,
                limit: self.max_voxels,
            })?;
        }
        Self::check("the voxel count", n, self.max_voxels)
    }

    /// Check the values that types alone cannot; `Err` gives the key and the message.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if self.max_voxels == 0 {
            return Err(("limits.max_voxels", "must be > 0"));
        }
        if self.max_element_bytes == 0 {
            return Err(("limits.max_element_bytes", "must be > 0"));
        }
        if self.max_frames == 0 {
            return Err(("limits.max_frames", "must be > 0"));
        }
        if self.max_inflated_bytes == 0 {
            return Err(("limits.max_inflated_bytes", "must be > 0"));
        }
        if self.max_nesting_depth == 0 || self.max_nesting_depth > 256 {
            return Err(("limits.max_nesting_depth", "must be in 1..=256"));
        }
        if self.max_dim == 0 {
            return Err(("limits.max_dim", "must be > 0"));
        }
        if self.max_header_bytes == 0 {
            return Err(("limits.max_header_bytes", "must be > 0"));
        }
        if self.max_series_instances == 0 {
            return Err(("limits.max_series_instances", "must be > 0"));
        }
        if self.max_spline_coefficients == 0 {
            return Err(("limits.max_spline_coefficients", "must be > 0"));
        }
        if !(4096..=1 << 26).contains(&self.max_pdu_bytes) {
            return Err(("limits.max_pdu_bytes", "must be in 4096..=67108864"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voxels_are_checked_and_overflow_safe() {
        let l = Limits::default();
        assert_eq!(l.voxels(&[193, 229, 193]).unwrap(), 193 * 229 * 193);
        assert!(l.voxels(&[16384, 16384, 16384]).is_err());
        assert!(l.voxels(&[30000, 2, 2]).is_err(), "one axis over max_dim");
        let big = Limits { max_dim: u32::MAX, max_voxels: u64::MAX, ..Limits::default() };
        assert!(big.voxels(&[u32::MAX as u64, u32::MAX as u64, u32::MAX as u64]).is_err(), "overflow is an error");
    }
}
