//! Deliveries of synthetic series to the PACS (`deliveries`): one row per instance the peer confirmed, written
//! as soon as its status arrives, so a retried or restarted delivery sends only what is still unconfirmed.

use std::collections::HashSet;

use super::sql::{params, Exec};
use serde::Serialize;

use super::{audit, now, Store, StoreError};

/// One confirmed instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryRow {
    pub synthetic_ref: i64,
    pub delivery_key: String,
    pub sop_instance_uid: String,
    pub peer: String,
    /// The peer's DIMSE status.
    pub status: u16,
    pub at: f64,
}

impl Store {
    /// Record that `peer` confirmed an instance (idempotent per delivery key, peer and instance).
    pub fn record_delivery(
        &self,
        synthetic_ref: i64,
        delivery_key: &str,
        peer: &str,
        sop_instance_uid: &str,
        status: u16,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.begin()?;
        tx.execute(
            "INSERT INTO deliveries (synthetic_ref, delivery_key, sop_instance_uid, peer, status, at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (delivery_key, peer, sop_instance_uid) DO NOTHING",
            &params![synthetic_ref, delivery_key, sop_instance_uid, peer, status, now()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The instances `peer` already confirmed under `delivery_key`.
    pub fn delivered_instances(&self, delivery_key: &str, peer: &str) -> Result<HashSet<String>, StoreError> {
        let conn = self.lock();
        let rows = conn.query_map(
            "SELECT sop_instance_uid FROM deliveries WHERE delivery_key = ?1 AND peer = ?2",
            &params![delivery_key, peer],
            |r| r.get::<String>(0),
        )?;
        Ok(rows.into_iter().collect())
    }

    /// Every confirmation recorded for a synthetic timepoint, oldest first.
    pub fn deliveries_of(&self, synthetic_ref: i64) -> Result<Vec<DeliveryRow>, StoreError> {
        let conn = self.lock();
        conn.query_map(
            "SELECT synthetic_ref, delivery_key, sop_instance_uid, peer, status, at FROM deliveries \
             WHERE synthetic_ref = ?1 ORDER BY id",
            &params![synthetic_ref],
            |r| {
                Ok(DeliveryRow {
                    synthetic_ref: r.get(0)?,
                    delivery_key: r.get(1)?,
                    sop_instance_uid: r.get(2)?,
                    peer: r.get(3)?,
                    status: r.get(4)?,
                    at: r.get(5)?,
                })
            },
        )
    }

    /// How many jobs of `kind` have the key `key` or a key `key:…` (a timepoint's delivery and its resends, for
    /// the resend counter).
    pub fn jobs_with_key_prefix(&self, kind: &str, key: &str) -> Result<usize, StoreError> {
        let conn = self.lock();
        // The prefix is `key:`, compared by its length in characters (as `substr` counts on both backends).
        let prefix = format!("{key}:");
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM jobs WHERE kind = ?1 AND (key = ?2 OR substr(key, 1, ?3) = ?4)",
                &params![kind, key, prefix.chars().count() as i64, prefix],
            )?
            .get(0)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Mark a synthetic timepoint failed with its reason (a delivery's terminal failure; the job itself is
    /// dead-lettered by the runner).
    pub fn synthetic_failed(&self, id: i64, reason: &str) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.begin()?;
        super::synthetic::set_state(&tx, id, crate::longitudinal::timeline::SyntheticState::Failed, Some(reason))?;
        audit(&tx, "delivery_failed", &id.to_string(), &serde_json::json!({ "reason": reason }))?;
        tx.commit()?;
        Ok(())
    }
}
