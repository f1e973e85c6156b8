//! Tests of `report.rs`: order, acquired vs synthetic, escaping of hostile tag values, self-containment.

use super::*;

fn tp(kind: ScanKind, date: Option<&str>, uid: &str) -> Timepoint {
    Timepoint {
        kind,
        date: date.map(str::to_string),
        age: Some(71.25),
        series_uid: Some(uid.into()),
        description: Some("T1 MPRAGE".into()),
        note: None,
        preview_png: Some(vec![0x89, b'P', b'N', b'G', 1, 2, 3]),
        preview_error: None,
        scores: vec![Score::Value { score: 1.5, probability: Some(0.8) }],
    }
}

fn input() -> ReportInput {
    let mut syn = tp(ScanKind::Synthetic, Some("20200601"), "2.25.9");
    syn.note = Some("interpolated between 2019-03-14 and 2021-03-18".into());
    syn.scores = vec![Score::Missing { reason: "not encoded".into() }];
    let mut undated = tp(ScanKind::Acquired, None, "2.25.0");
    undated.preview_png = None;
    undated.preview_error = Some("cannot read the model input".into());
    ReportInput {
        patient: "sub-01".into(),
        model_id: "demo".into(),
        model_version: Some("0123456789abcdef".into()),
        generated_at: "2026-12-01 23:50:00 UTC".into(),
        timepoints: vec![
            tp(ScanKind::Acquired, Some("20210318"), "2.25.3"),
            undated,
            syn,
            tp(ScanKind::Acquired, Some("20190314"), "2.25.1"),
        ],
        series_not_shown: 2,
        neighbours: Neighbours::Found {
            query_series_uid: "2.25.3".into(),
            query_date: Some("20210318".into()),
            model_version: "0123456789abcdef".into(),
            candidates: 3,
            hits: vec![Neighbour {
                series_uid: "2.25.77".into(),
                patient: "sub-02".into(),
                date: Some("20180905".into()),
                age: Some(64.0),
                description: None,
                score: 0.987_654,
            }],
        },
        probes: vec![ProbeColumn {
            name: "ad.safetensors".into(),
            target: "dx".into(),
            kind: Some(ProbeKind::Logistic),
            classes: vec!["AD".into(), "CN".into()],
            error: None,
        }],
    }
}

#[test]
fn cards_in_date_order_acquired_and_synthetic_apart() {
    let h = render(&input());
    let dates: Vec<&str> = h.match_indices("data-date=\"").map(|(i, m)| &h[i + m.len()..i + m.len() + 10]).collect();
    assert_eq!(dates, ["2019-03-14", "2020-06-01", "2021-03-18", "date unkno"]);
    assert_eq!(h.matches("<article class=\"card acquired\"").count(), 3);
    assert_eq!(h.matches("<article class=\"card synthetic\"").count(), 1);
    let syn = &h[h.find("card synthetic").unwrap()..];
    let syn = &syn[..syn.find("</article>").unwrap()];
    assert!(syn.contains(">SYNTHETIC<") && syn.contains("Made by the model") && syn.contains("interpolated"), "{syn}");
    assert!(syn.contains("not encoded"), "{syn}");
    assert!(h.contains("3 acquired, 1 synthetic"));
    assert!(h.contains("71.2 y") || h.contains("71.3 y"));
    assert!(h.contains("P(AD) = 80.0 %"), "probability of the first class");
    assert!(h.contains("No preview: cannot read the model input"));
    assert!(h.contains("2 other stored series"));
    assert!(h.contains("own scans are excluded") && h.contains("0.9877") && h.contains("sub-02"));
    assert_eq!(h.matches("src=\"data:image/png;base64,iVBORwECAw==\"").count(), 3);
}

#[test]
fn nothing_is_fetched_and_no_script_runs() {
    let h = render(&input()).to_lowercase();
    for bad in ["http://", "https://", "file:", "<script", "<link", "src=\"/", "url(", "@import", "<iframe"] {
        assert!(!h.contains(bad), "the page contains {bad:?}");
    }
    assert!(h.contains("default-src 'none'"), "the CSP forbids every fetch");
}

#[test]
fn tag_values_are_escaped() {
    let mut i = input();
    let evil = "<script>alert('x')</script>\"&";
    i.patient = evil.into();
    i.timepoints[0].description = Some(format!("<img src=\"http://x/{evil}\">"));
    i.timepoints[0].series_uid = Some(evil.into());
    if let Neighbours::Found { hits, .. } = &mut i.neighbours {
        hits[0].patient = evil.into();
    }
    i.probes[0].target = evil.into();
    let h = render(&i);
    assert!(!h.contains("<script") && !h.contains("<img src=\"http"), "unescaped tag value");
    assert!(h.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&amp;"));
}

#[test]
fn no_probes_and_no_neighbours_say_so() {
    let mut i = input();
    i.probes.clear();
    i.timepoints.iter_mut().for_each(|t| t.scores.clear());
    i.neighbours = Neighbours::Unavailable { reason: "no timepoint is encoded by model demo".into() };
    let h = render(&i);
    assert!(h.contains("No probes configured") && h.contains("[lookup] probes"));
    assert!(!h.contains("class=\"scores\""));
    assert!(h.contains("None: no timepoint is encoded by model demo"));
    i.timepoints.clear();
    assert!(render(&i).contains("No registered scan of this patient is stored."));
}

#[test]
fn base64_and_dates() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64(&[0xff, 0xfe, 0xfd, 0x00]), "//79AA==");
    assert_eq!(display_date(Some("20190314")), "2019-03-14");
    assert_eq!(display_date(Some("2019")), "2019");
    assert_eq!(display_date(None), "date unknown");
    assert_eq!(escape("a\u{0}b\n"), "a b ");
}
