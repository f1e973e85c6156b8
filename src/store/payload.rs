//! Typed job payloads: one struct per job kind, and [`Payload`], the enum the daemon and the store pass each
//! other. The store keeps a payload as JSON text beside its `kind`; reading one back parses it by that kind, so
//! a row whose text does not fit its kind is one error naming the job ([`super::StoreError::BadPayload`]), and a
//! claimed job with such a payload is dead-lettered with that reason instead of being run.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::JobKind;

/// `convert` and `archive`: the series, by its content key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesJob {
    pub content_key: String,
}

/// `preprocess`: one converted volume of a series.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreprocessJob {
    pub content_key: String,
    pub volume: String,
    pub volume_sha256: String,
}

/// `encode`: one model input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodeJob {
    pub content_key: String,
    pub volume: String,
    pub preprocess_hash: String,
    pub model_input: String,
}

/// `plan`: the synthetic-timepoint policy for one patient and model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRequest {
    pub patient_key: String,
    pub model_id: String,
}

/// `fill`: one synthetic timepoint to make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FillRequest {
    pub patient_key: String,
    pub target: NaiveDate,
    pub from_embedding: i64,
    pub to_embedding: i64,
    pub alpha: f64,
    pub seed: u64,
    /// Asked for by `ldae fill` (made even with `auto_fill` off).
    pub explicit: bool,
}

/// `deliver`: one synthetic timepoint to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverRequest {
    /// The synthetic timepoint's content key (its fill job's key).
    pub content_key: String,
    /// 0 for the delivery the fill enqueues; n for the n-th `ldae synthetic resend`.
    #[serde(default)]
    pub resend: u32,
}

/// `hook`: one hook command and its event (the event is the hook's JSON contract, free-form by design).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookJob {
    pub command: String,
    pub event: serde_json::Value,
}

/// A job's payload; its variant is its kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Convert(SeriesJob),
    Archive(SeriesJob),
    Preprocess(PreprocessJob),
    Encode(EncodeJob),
    Plan(PlanRequest),
    Fill(FillRequest),
    Deliver(DeliverRequest),
    Hook(HookJob),
}

impl Payload {
    /// The kind of job this payload is for.
    pub fn kind(&self) -> JobKind {
        match self {
            Payload::Convert(_) => JobKind::Convert,
            Payload::Archive(_) => JobKind::Archive,
            Payload::Preprocess(_) => JobKind::Preprocess,
            Payload::Encode(_) => JobKind::Encode,
            Payload::Plan(_) => JobKind::Plan,
            Payload::Fill(_) => JobKind::Fill,
            Payload::Deliver(_) => JobKind::Deliver,
            Payload::Hook(_) => JobKind::Hook,
        }
    }

    /// The series content key the job works for (its dead letter fails that series), if it has one.
    pub fn content_key(&self) -> Option<&str> {
        match self {
            Payload::Convert(p) | Payload::Archive(p) => Some(&p.content_key),
            Payload::Preprocess(p) => Some(&p.content_key),
            Payload::Encode(p) => Some(&p.content_key),
            Payload::Plan(_) | Payload::Fill(_) | Payload::Deliver(_) | Payload::Hook(_) => None,
        }
    }

    /// The stored text.
    pub fn to_json(&self) -> String {
        let v = match self {
            Payload::Convert(p) | Payload::Archive(p) => serde_json::to_value(p),
            Payload::Preprocess(p) => serde_json::to_value(p),
            Payload::Encode(p) => serde_json::to_value(p),
            Payload::Plan(p) => serde_json::to_value(p),
            Payload::Fill(p) => serde_json::to_value(p),
            Payload::Deliver(p) => serde_json::to_value(p),
            Payload::Hook(p) => serde_json::to_value(p),
        };
        // Plain structs of strings and numbers always serialise; a non-finite alpha becomes null, refused on read.
        v.map(|v| v.to_string()).unwrap_or_else(|_| "{}".into())
    }

    /// Parse the stored text of a `kind` job.
    pub fn from_json(kind: JobKind, text: &str) -> Result<Payload, serde_json::Error> {
        Ok(match kind {
            JobKind::Convert => Payload::Convert(serde_json::from_str(text)?),
            JobKind::Archive => Payload::Archive(serde_json::from_str(text)?),
            JobKind::Preprocess => Payload::Preprocess(serde_json::from_str(text)?),
            JobKind::Encode => Payload::Encode(serde_json::from_str(text)?),
            JobKind::Plan => Payload::Plan(serde_json::from_str(text)?),
            JobKind::Fill => Payload::Fill(serde_json::from_str(text)?),
            JobKind::Deliver => Payload::Deliver(serde_json::from_str(text)?),
            JobKind::Hook => Payload::Hook(serde_json::from_str(text)?),
        })
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Payload::Convert(p) | Payload::Archive(p) => p.serialize(s),
            Payload::Preprocess(p) => p.serialize(s),
            Payload::Encode(p) => p.serialize(s),
            Payload::Plan(p) => p.serialize(s),
            Payload::Fill(p) => p.serialize(s),
            Payload::Deliver(p) => p.serialize(s),
            Payload::Hook(p) => p.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_by_kind_and_a_mismatch_is_an_error() {
        let all = [
            Payload::Convert(SeriesJob { content_key: "k".into() }),
            Payload::Archive(SeriesJob { content_key: "k".into() }),
            Payload::Preprocess(PreprocessJob {
                content_key: "k".into(),
                volume: "v".into(),
                volume_sha256: "s".into(),
            }),
            Payload::Encode(EncodeJob {
                content_key: "k".into(),
                volume: "v".into(),
                preprocess_hash: "p".into(),
                model_input: "m".into(),
            }),
            Payload::Plan(PlanRequest { patient_key: "p".into(), model_id: "m".into() }),
            Payload::Fill(FillRequest {
                patient_key: "p".into(),
                target: NaiveDate::from_ymd_opt(2020, 1, 2).unwrap(),
                from_embedding: 1,
                to_embedding: 2,
                alpha: 0.5,
                seed: 0,
                explicit: false,
            }),
            Payload::Deliver(DeliverRequest { content_key: "f".into(), resend: 1 }),
            Payload::Hook(HookJob { command: "/bin/true".into(), event: serde_json::json!({ "event": "x" }) }),
        ];
        for p in &all {
            assert_eq!(&Payload::from_json(p.kind(), &p.to_json()).unwrap(), p);
        }
        assert!(Payload::from_json(JobKind::Encode, r#"{"content_key":"k"}"#).is_err(), "fields missing");
        assert!(Payload::from_json(JobKind::Convert, "not json").is_err());
        assert_eq!(all[3].content_key(), Some("k"));
        assert_eq!(all[4].content_key(), None);
    }
}
