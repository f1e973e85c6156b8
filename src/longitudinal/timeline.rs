//! A patient's timeline: acquired timepoints (encoded scans that passed series selection) and synthetic ones in
//! date order, each with an age, and what the gap policy sees between them. Pure: the CLI and the daemon read the
//! rows from the store and hand them in.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::dates;
use super::policy::{self, LongitudinalConfig, Plan};

/// An encoded, selected scan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acquired {
    pub embedding_id: i64,
    pub series_uid: String,
    /// None when the files carried no usable date (listed, but outside the policy).
    pub date: Option<NaiveDate>,
    /// Age in years at the scan.
    pub age: Option<f64>,
    pub description: Option<String>,
}

/// Where a synthetic timepoint is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyntheticState {
    /// Enqueued, not yet decoded.
    Planned,
    /// Decoded and written (NIfTI and DICOM).
    Written,
    /// Accepted by the PACS.
    Delivered,
    /// Delivery ended in a terminal failure.
    Failed,
    /// Retired by a newer acquired scan (kept, not deleted).
    Superseded,
}

impl SyntheticState {
    pub fn as_str(self) -> &'static str {
        match self {
            SyntheticState::Planned => "planned",
            SyntheticState::Written => "written",
            SyntheticState::Delivered => "delivered",
            SyntheticState::Failed => "failed",
            SyntheticState::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<SyntheticState> {
        [Self::Planned, Self::Written, Self::Delivered, Self::Failed, Self::Superseded]
            .into_iter()
            .find(|x| x.as_str() == s)
    }

    /// Does it stand for its visit (so the policy does not plan it again)?
    pub fn is_live(self) -> bool {
        self != SyntheticState::Superseded
    }
}

/// A synthetic timepoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Synthetic {
    pub id: i64,
    pub target: NaiveDate,
    pub alpha: f64,
    /// The acquired series it was interpolated from (earlier, later).
    pub sources: (String, String),
    pub state: SyntheticState,
    pub dicom_series_uid: Option<String>,
}

/// One row of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Timepoint {
    Acquired {
        #[serde(flatten)]
        scan: Acquired,
    },
    Synthetic {
        #[serde(flatten)]
        scan: Synthetic,
        /// Age interpolated from the nearest acquired scan with an age.
        age: Option<f64>,
    },
}

impl Timepoint {
    pub fn date(&self) -> Option<NaiveDate> {
        match self {
            Timepoint::Acquired { scan } => scan.date,
            Timepoint::Synthetic { scan, .. } => Some(scan.target),
        }
    }

    pub fn age(&self) -> Option<f64> {
        match self {
            Timepoint::Acquired { scan } => scan.age,
            Timepoint::Synthetic { age, .. } => *age,
        }
    }
}

/// A patient's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub patient: String,
    /// Dated timepoints in date order (acquired before synthetic on the same day), then undated scans.
    pub points: Vec<Timepoint>,
    /// What the gap policy sees.
    pub plan: Plan,
}

/// The age at `date` from the dated acquired scan with an age nearest to it.
fn age_at(acquired: &[Acquired], date: NaiveDate) -> Option<f64> {
    acquired
        .iter()
        .filter_map(|a| Some((a.date?, a.age?)))
        .min_by_key(|(d, _)| dates::days(*d, date).abs())
        .map(|(d, age)| age + dates::days(d, date) as f64 / 365.25)
}

impl Timeline {
    /// Assemble the timeline of `patient` and run the gap policy on its dated acquired scans.
    pub fn build(
        patient: &str,
        acquired: Vec<Acquired>,
        synthetic: Vec<Synthetic>,
        cfg: &LongitudinalConfig,
    ) -> Timeline {
        let scan_dates: Vec<NaiveDate> = acquired.iter().filter_map(|a| a.date).collect();
        let live: Vec<NaiveDate> = synthetic.iter().filter(|s| s.state.is_live()).map(|s| s.target).collect();
        let plan = policy::plan(&scan_dates, &live, cfg);
        let mut points: Vec<Timepoint> =
            synthetic.into_iter().map(|s| Timepoint::Synthetic { age: age_at(&acquired, s.target), scan: s }).collect();
        points.extend(acquired.into_iter().map(|scan| Timepoint::Acquired { scan }));
        let rank = |p: &Timepoint| match p {
            Timepoint::Acquired { scan } => (scan.date.is_none(), scan.date, 0, scan.embedding_id),
            Timepoint::Synthetic { scan, .. } => (false, Some(scan.target), 1, scan.id),
        };
        points.sort_by_key(rank);
        Timeline { patient: patient.to_string(), points, plan }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        dates::parse(s).unwrap()
    }

    fn scan(id: i64, date: Option<&str>, age: Option<f64>) -> Acquired {
        Acquired { embedding_id: id, series_uid: format!("1.2.{id}"), date: date.map(d), age, description: None }
    }

    #[test]
    fn orders_by_date_interpolates_ages_and_plans_the_gap() {
        let acquired =
            vec![scan(3, Some("20220310"), Some(73.0)), scan(1, Some("20190314"), Some(70.0)), scan(9, None, None)];
        let synth = Synthetic {
            id: 1,
            target: d("20200314"),
            alpha: 0.33,
            sources: ("1.2.1".into(), "1.2.3".into()),
            state: SyntheticState::Superseded,
            dicom_series_uid: None,
        };
        let t = Timeline::build("P1", acquired, vec![synth], &LongitudinalConfig::default());
        let dates: Vec<_> = t.points.iter().map(|p| p.date().map(dates::iso)).collect();
        assert_eq!(
            dates,
            [Some("2019-03-14"), Some("2020-03-14"), Some("2022-03-10"), None].map(|x| x.map(String::from)).to_vec()
        );
        let age = t.points[1].age().unwrap();
        assert!((age - (70.0 + 366.0 / 365.25)).abs() < 1e-9, "{age}");
        // The superseded point does not stand for its visit: both grid gaps are planned.
        assert_eq!(t.plan.fills.iter().map(|f| dates::iso(f.target)).collect::<Vec<_>>(), ["2020-03-14", "2021-03-14"]);
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["points"][1]["kind"], "synthetic");
        assert_eq!(json["points"][1]["state"], "superseded");
        assert_eq!(json["points"][0]["series_uid"], "1.2.1");
    }

    #[test]
    fn states_round_trip_through_their_names() {
        for s in [
            SyntheticState::Planned,
            SyntheticState::Written,
            SyntheticState::Delivered,
            SyntheticState::Failed,
            SyntheticState::Superseded,
        ] {
            assert_eq!(SyntheticState::parse(s.as_str()), Some(s));
        }
        assert_eq!(SyntheticState::parse("bogus"), None);
    }
}
