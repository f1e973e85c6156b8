//! The gap policy (`[longitudinal]`): which missing timepoints of a patient ldae synthesises, and whether an
//! explicit request (`ldae fill --date`) may be served. Pure functions on dates.
//!
//! A patient's visit grid starts at its first acquired scan and steps `interval_months` up to its last one. A grid
//! date within `min_gap_days` of an acquired scan is a visit that happened; any other grid date is a gap, filled
//! by interpolating the two acquired scans around it — unless they are more than `max_gap_months` apart. ldae
//! only interpolates: a date before the first or after the last scan is refused with a reason. A synthetic
//! timepoint is superseded when a real scan arrives at its visit, or between its two sources (its interpolation is
//! then no longer between neighbours, and the plan fills the visit again from the new ones).

use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::dates;

/// Onto which grid a synthetic volume is written (the fill job maps it back from template space).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TargetGrid {
    /// The acquired neighbour nearer in time (the earlier one on a tie), in its Frame of Reference.
    #[default]
    Nearest,
    /// Always the earlier neighbour.
    Earlier,
    /// The model's template grid (MNI), with a new Frame of Reference.
    Template,
}

/// The `[longitudinal]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LongitudinalConfig {
    /// Fill the gaps of the visit grid by itself when a patient's scans are encoded.
    pub auto_fill: bool,
    /// The visit grid, in months, completed between a patient's first and last acquired scan (0: no grid, only
    /// explicit `ldae fill` requests).
    pub interval_months: u32,
    /// No interpolation between two acquired scans further apart than this.
    pub max_gap_months: u32,
    /// A grid date (or a requested date) this close to an acquired scan is that scan's visit.
    pub min_gap_days: u32,
    pub target_grid: TargetGrid,
}

impl Default for LongitudinalConfig {
    fn default() -> Self {
        LongitudinalConfig {
            auto_fill: true,
            interval_months: 12,
            max_gap_months: 36,
            min_gap_days: 90,
            target_grid: TargetGrid::Nearest,
        }
    }
}

impl LongitudinalConfig {
    /// The key and reason of the first invalid value.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.interval_months > 120 {
            return Err(("longitudinal.interval_months", "must be in 0..=120 (0: no visit grid)".into()));
        }
        if self.max_gap_months == 0 || self.max_gap_months > 240 {
            return Err(("longitudinal.max_gap_months", "must be in 1..=240".into()));
        }
        if self.interval_months > 0 && i64::from(self.min_gap_days) * 2 >= i64::from(self.interval_months) * 30 {
            return Err((
                "longitudinal.min_gap_days",
                format!("must be less than half the visit interval ({} months)", self.interval_months),
            ));
        }
        Ok(())
    }
}

/// One timepoint to synthesise: the date and the two acquired scans it is interpolated from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlannedFill {
    pub target: NaiveDate,
    pub earlier: NaiveDate,
    pub later: NaiveDate,
    /// days(earlier → target) / days(earlier → later), in (0, 1).
    pub alpha: f64,
}

/// Why a date is not filled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Refusal {
    /// Fewer than two dated acquired scans.
    TooFewScans {
        scans: usize,
    },
    BeforeFirst {
        target: NaiveDate,
        first: NaiveDate,
    },
    AfterLast {
        target: NaiveDate,
        last: NaiveDate,
    },
    /// The date is an acquired scan's visit.
    NearScan {
        target: NaiveDate,
        scan: NaiveDate,
        days: i64,
        min_gap_days: u32,
    },
    GapTooLong {
        earlier: NaiveDate,
        later: NaiveDate,
        months: f64,
        max_gap_months: u32,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |x: &NaiveDate| dates::iso(*x);
        match self {
            Refusal::TooFewScans { scans } => {
                write!(f, "the patient has {scans} dated acquired scan(s); interpolation needs one on each side")
            }
            Refusal::BeforeFirst { target, first } => write!(
                f,
                "{} is before the first acquired scan ({}): ldae interpolates between scans, it does not extrapolate",
                d(target),
                d(first)
            ),
            Refusal::AfterLast { target, last } => write!(
                f,
                "{} is after the last acquired scan ({}): ldae interpolates between scans, it does not extrapolate",
                d(target),
                d(last)
            ),
            Refusal::NearScan { target, scan, days, min_gap_days } => write!(
                f,
                "{} is {days} day(s) from the acquired scan of {} (longitudinal.min_gap_days = {min_gap_days})",
                d(target),
                d(scan)
            ),
            Refusal::GapTooLong { earlier, later, months, max_gap_months } => write!(
                f,
                "the acquired scans around it ({} and {}) are {months:.1} months apart \
                 (longitudinal.max_gap_months = {max_gap_months})",
                d(earlier),
                d(later)
            ),
        }
    }
}

/// Sorted, distinct dates.
fn sorted(acquired: &[NaiveDate]) -> Vec<NaiveDate> {
    let mut v = acquired.to_vec();
    v.sort();
    v.dedup();
    v
}

/// May `target` be synthesised from `acquired` (any order, duplicates allowed)? The fill, or why not.
pub fn check_target(
    acquired: &[NaiveDate],
    target: NaiveDate,
    cfg: &LongitudinalConfig,
) -> Result<PlannedFill, Refusal> {
    check_sorted(&sorted(acquired), target, cfg)
}

fn check_sorted(scans: &[NaiveDate], target: NaiveDate, cfg: &LongitudinalConfig) -> Result<PlannedFill, Refusal> {
    let (Some(&first), Some(&last)) = (scans.first(), scans.last()) else {
        return Err(Refusal::TooFewScans { scans: 0 });
    };
    if let Some(&scan) = scans.iter().min_by_key(|s| dates::days(**s, target).abs()) {
        let days = dates::days(scan, target).abs();
        if days <= i64::from(cfg.min_gap_days) {
            return Err(Refusal::NearScan { target, scan, days, min_gap_days: cfg.min_gap_days });
        }
    }
    if scans.len() < 2 {
        return Err(Refusal::TooFewScans { scans: scans.len() });
    }
    if target < first {
        return Err(Refusal::BeforeFirst { target, first });
    }
    if target > last {
        return Err(Refusal::AfterLast { target, last });
    }
    // first < target < last and target is no scan date (min_gap_days ≥ 0 caught equality).
    let after = scans.partition_point(|s| *s <= target);
    let (earlier, later) = (scans[after - 1], scans[after]);
    let months = dates::months_between(earlier, later);
    let limit = dates::add_months(earlier, cfg.max_gap_months);
    if limit.is_none_or(|l| later > l) {
        return Err(Refusal::GapTooLong { earlier, later, months, max_gap_months: cfg.max_gap_months });
    }
    let alpha = dates::days(earlier, target) as f64 / dates::days(earlier, later) as f64;
    Ok(PlannedFill { target, earlier, later, alpha })
}

/// What the policy does with a patient's visit grid.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Grid dates to synthesise (none already live among `existing`).
    pub fills: Vec<PlannedFill>,
    /// Grid dates that are gaps but are not filled, with the reason.
    pub refused: Vec<(NaiveDate, Refusal)>,
    /// Grid dates already synthesised.
    pub filled: Vec<NaiveDate>,
}

/// The visit-grid dates strictly between the first and last scan.
pub fn grid(acquired: &[NaiveDate], cfg: &LongitudinalConfig) -> Vec<NaiveDate> {
    let scans = sorted(acquired);
    let (Some(&first), Some(&last)) = (scans.first(), scans.last()) else { return Vec::new() };
    if cfg.interval_months == 0 {
        return Vec::new();
    }
    (1u32..)
        .map_while(|k| k.checked_mul(cfg.interval_months).and_then(|m| dates::add_months(first, m)))
        .take_while(|d| *d < last)
        .collect()
}

/// The gaps of the visit grid and what to do with each. `existing`: target dates of live (not superseded)
/// synthetic timepoints. Grid dates that are visits of acquired scans appear nowhere. With `auto_fill` off, every
/// fillable gap is listed in `fills` all the same (the daemon decides whether to act on them).
pub fn plan(acquired: &[NaiveDate], existing: &[NaiveDate], cfg: &LongitudinalConfig) -> Plan {
    let scans = sorted(acquired);
    let mut out = Plan::default();
    for t in grid(&scans, cfg) {
        match check_sorted(&scans, t, cfg) {
            Ok(_) if existing.contains(&t) => out.filled.push(t),
            Ok(fill) => out.fills.push(fill),
            Err(Refusal::NearScan { .. }) => {}
            Err(r) => out.refused.push((t, r)),
        }
    }
    out
}

/// Why a synthetic timepoint is retired.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Supersession {
    /// A real scan was acquired at its visit.
    ScanAtVisit { scan: NaiveDate },
    /// A real scan was acquired between its two sources: they are no longer neighbours.
    NewNeighbour { scan: NaiveDate },
}

/// Is the synthetic timepoint at `target`, made from the scans of `earlier` and `later`, superseded by `acquired`?
pub fn superseded(
    acquired: &[NaiveDate],
    target: NaiveDate,
    earlier: NaiveDate,
    later: NaiveDate,
    cfg: &LongitudinalConfig,
) -> Option<Supersession> {
    let scans = sorted(acquired);
    if let Some(&scan) = scans.iter().find(|s| dates::days(**s, target).abs() <= i64::from(cfg.min_gap_days)) {
        return Some(Supersession::ScanAtVisit { scan });
    }
    scans.iter().find(|s| **s > earlier && **s < later).map(|&scan| Supersession::NewNeighbour { scan })
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
