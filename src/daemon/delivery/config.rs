//! The `[delivery]` section: how synthetic series are written as DICOM and where they are sent.

use serde::{Deserialize, Serialize};

use crate::dicom::net_peer::{AeTitle, PeerAddr};
use crate::dicom::net_retry::RetryPolicy;
use crate::dicom::writer::SyntheticSopClass;

/// `[delivery]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// `sc`: one Multi-frame Grayscale Word Secondary Capture with geometry (default); `mr`: MR Image Storage, one
    /// file per slice, for PACS and viewers that only stack single-frame MR.
    pub sop_class: SyntheticSopClass,
    /// The PACS to send synthetic series to, `AET@host:port`; empty: written to the outbox only.
    pub pacs: String,
    /// Our AE title.
    pub calling_aet: String,
    /// Transient failures (connection refused, timeouts, A-ABORT, out of resources) are retried with capped
    /// backoff; a rejected association or a failure status is terminal.
    pub retry: RetryPolicy,
    /// SeriesNumber of synthetic series (a reserved range, so they sort apart from acquired ones).
    pub series_number: i32,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            sop_class: SyntheticSopClass::Sc,
            pacs: String::new(),
            calling_aet: "LDAE".into(),
            retry: RetryPolicy::default(),
            series_number: 9901,
        }
    }
}

impl DeliveryConfig {
    /// The configured PACS, if any.
    pub fn peer(&self) -> Result<Option<PeerAddr>, String> {
        if self.pacs.trim().is_empty() {
            return Ok(None);
        }
        self.pacs.parse::<PeerAddr>().map(Some).map_err(|e| e.to_string())
    }

    /// The key and reason of the first invalid value.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        self.peer().map_err(|e| ("delivery.pacs", e))?;
        self.calling_aet.parse::<AeTitle>().map_err(|e| ("delivery.calling_aet", e.to_string()))?;
        if self.retry.max_attempts == 0 {
            return Err(("delivery.retry.max_attempts", "must be ≥ 1".into()));
        }
        if !(1..=99999).contains(&self.series_number) {
            return Err(("delivery.series_number", "must be in 1..=99999".into()));
        }
        Ok(())
    }
}
