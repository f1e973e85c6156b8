//! The job kinds: one enum for every stage the queue runs, stored as its name (`kind` column). A name this ldae
//! does not know (a row written by a newer version) is never claimed and reads back as
//! [`super::StoreError::UnknownKind`] naming the job, never as a panic.

use serde::{Deserialize, Serialize};

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// DICOM series → NIfTI volume(s).
    Convert,
    /// Move or delete a converted series' instance files (`intake.after_commit`).
    Archive,
    /// Register a volume to the template and write the model input.
    Preprocess,
    /// Run the model's encoder on a model input.
    Encode,
    /// The synthetic-timepoint policy for one patient.
    Plan,
    /// Make one synthetic timepoint (the model's decoder).
    Fill,
    /// Send a synthetic series to the PACS.
    Deliver,
    /// Call one event hook.
    Hook,
}

impl JobKind {
    /// Every kind, in pipeline order.
    pub const ALL: [JobKind; 8] = [
        JobKind::Convert,
        JobKind::Archive,
        JobKind::Preprocess,
        JobKind::Encode,
        JobKind::Plan,
        JobKind::Fill,
        JobKind::Deliver,
        JobKind::Hook,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Convert => "convert",
            JobKind::Archive => "archive",
            JobKind::Preprocess => "preprocess",
            JobKind::Encode => "encode",
            JobKind::Plan => "plan",
            JobKind::Fill => "fill",
            JobKind::Deliver => "deliver",
            JobKind::Hook => "hook",
        }
    }

    /// The kind with this stored name, if this ldae knows it.
    pub fn parse(s: &str) -> Option<JobKind> {
        JobKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a kind name this ldae does not know (`--kinds`, config).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job kind `{0}` (known: convert, archive, preprocess, encode, plan, fill, deliver, hook)")]
pub struct UnknownKind(pub String);

impl std::str::FromStr for JobKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobKind::parse(s.trim()).ok_or_else(|| UnknownKind(s.trim().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for k in JobKind::ALL {
            assert_eq!(JobKind::parse(k.as_str()), Some(k));
            assert_eq!(k.as_str().parse::<JobKind>(), Ok(k));
            assert_eq!(serde_json::to_value(k).unwrap(), serde_json::Value::from(k.as_str()));
        }
        assert_eq!(JobKind::parse("transcode"), None);
        let e = "transcode".parse::<JobKind>().unwrap_err();
        assert!(e.to_string().contains("unknown job kind `transcode`"), "{e}");
    }
}
