//! Unit tests of the gap policy on hand-made visit histories.

use super::*;

fn d(s: &str) -> NaiveDate {
    dates::parse(s).unwrap()
}

fn cfg() -> LongitudinalConfig {
    LongitudinalConfig::default()
}

/// sub-01 of the simulated test set: yearly visits that slip by a few days.
fn yearly() -> Vec<NaiveDate> {
    ["20190314", "20200312", "20210318", "20220310"].map(d).to_vec()
}

#[test]
fn a_complete_yearly_history_has_no_gaps() {
    let p = plan(&yearly(), &[], &cfg());
    assert_eq!(p, Plan::default(), "every grid date is within min_gap_days of a visit");
    assert_eq!(grid(&yearly(), &cfg()), ["20200314", "20210314"].map(d).to_vec());
}

#[test]
fn a_withheld_inner_visit_is_planned_with_alpha_from_the_dates() {
    let scans = ["20190314", "20210318", "20220310"].map(d);
    let p = plan(&scans, &[], &cfg());
    assert_eq!(p.fills.len(), 1, "{p:?}");
    let f = p.fills[0];
    assert_eq!((f.target, f.earlier, f.later), (d("20200314"), d("20190314"), d("20210318")));
    let want = 366.0 / (366.0 + 369.0);
    assert!((f.alpha - want).abs() < 1e-12, "{}", f.alpha);
    assert!(p.refused.is_empty());
    // Once it exists, the plan lists it as filled instead.
    let again = plan(&scans, &[d("20200314")], &cfg());
    assert!(again.fills.is_empty());
    assert_eq!(again.filled, vec![d("20200314")]);
}

#[test]
fn the_input_order_and_same_day_duplicates_do_not_matter() {
    let scans = ["20210318", "20190314", "20220310", "20190314"].map(d);
    let sorted_scans = ["20190314", "20210318", "20220310"].map(d);
    assert_eq!(plan(&scans, &[], &cfg()), plan(&sorted_scans, &[], &cfg()));
}

#[test]
fn gaps_longer_than_max_gap_months_are_refused_not_filled() {
    let scans = ["20150101", "20200101"].map(d);
    let p = plan(&scans, &[], &cfg());
    assert!(p.fills.is_empty());
    assert_eq!(p.refused.len(), 4, "2016..2019: {p:?}");
    for (_, r) in &p.refused {
        assert!(matches!(r, Refusal::GapTooLong { max_gap_months: 36, .. }), "{r:?}");
        assert!(r.to_string().contains("months apart"), "{r}");
    }
    // Exactly max_gap_months apart is still allowed.
    let edge = ["20150101", "20180101"].map(d);
    assert!(check_target(&edge, d("20160601"), &cfg()).is_ok());
}

#[test]
fn explicit_requests_are_interpolation_only() {
    let scans = yearly();
    let c = cfg();
    assert!(matches!(check_target(&scans, d("20181001"), &c), Err(Refusal::BeforeFirst { .. })));
    let after = check_target(&scans, d("20230101"), &c).unwrap_err();
    assert!(matches!(after, Refusal::AfterLast { .. }));
    assert!(after.to_string().contains("does not extrapolate"), "{after}");
    let near = check_target(&scans, d("20200401"), &c).unwrap_err();
    assert_eq!(near, Refusal::NearScan { target: d("20200401"), scan: d("20200312"), days: 20, min_gap_days: 90 });
    let ok = check_target(&scans, d("20200912"), &c).unwrap();
    assert_eq!((ok.earlier, ok.later), (d("20200312"), d("20210318")));
    assert!(ok.alpha > 0.0 && ok.alpha < 1.0);
    assert_eq!(check_target(&[], d("20200101"), &c), Err(Refusal::TooFewScans { scans: 0 }));
    assert_eq!(check_target(&[d("20190101")], d("20200101"), &c), Err(Refusal::TooFewScans { scans: 1 }));
}

#[test]
fn alpha_is_exact_at_the_midpoint() {
    let scans = ["20200101", "20200111"].map(d);
    let c = LongitudinalConfig { min_gap_days: 0, ..cfg() };
    assert_eq!(check_target(&scans, d("20200106"), &c).unwrap().alpha, 0.5);
}

#[test]
fn a_new_scan_supersedes_the_synthetic_timepoints_it_replaces() {
    let c = cfg();
    let (t, a, b) = (d("20200314"), d("20190314"), d("20210318"));
    let before = ["20190314", "20210318"].map(d);
    assert_eq!(superseded(&before, t, a, b, &c), None);
    let at_visit = ["20190314", "20200401", "20210318"].map(d);
    assert_eq!(superseded(&at_visit, t, a, b, &c), Some(Supersession::ScanAtVisit { scan: d("20200401") }));
    let between = ["20190314", "20200901", "20210318"].map(d);
    assert_eq!(superseded(&between, t, a, b, &c), Some(Supersession::NewNeighbour { scan: d("20200901") }));
    // The plan then fills the visit again from the new neighbours.
    let p = plan(&between, &[], &c);
    assert_eq!(p.fills.len(), 1);
    assert_eq!((p.fills[0].earlier, p.fills[0].later), (d("20190314"), d("20200901")));
    // A scan outside the span changes nothing.
    let outside = ["20190314", "20210318", "20220310"].map(d);
    assert_eq!(superseded(&outside, t, a, b, &c), None);
}

#[test]
fn no_grid_means_explicit_requests_only() {
    let c = LongitudinalConfig { interval_months: 0, ..cfg() };
    let scans = ["20190314", "20210318"].map(d);
    assert!(grid(&scans, &c).is_empty());
    assert_eq!(plan(&scans, &[], &c), Plan::default());
    assert!(check_target(&scans, d("20200314"), &c).is_ok());
}

#[test]
fn validation_names_the_key() {
    assert!(cfg().validate().is_ok());
    let bad = LongitudinalConfig { max_gap_months: 0, ..cfg() };
    assert_eq!(bad.validate().unwrap_err().0, "longitudinal.max_gap_months");
    let bad = LongitudinalConfig { interval_months: 6, min_gap_days: 100, ..cfg() };
    assert_eq!(bad.validate().unwrap_err().0, "longitudinal.min_gap_days");
    let bad = LongitudinalConfig { interval_months: 500, ..cfg() };
    assert_eq!(bad.validate().unwrap_err().0, "longitudinal.interval_months");
}
