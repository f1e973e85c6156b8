//! `ldae report` end to end: the real daemon encodes the simulated patient sub-01's four sessions (real DICOM,
//! tests/data/shared) and another patient's series with the shipped template and demo model, and `ldae fill`
//! makes a synthetic timepoint between two sessions; two probes are configured (one fitted on another model),
//! then the page is opened in a real headless Chromium. Checked: the screenshot is not blank, every timepoint has its card with
//! its date and a decoded, visibly non-uniform preview (the synthetic one with its red banner), the page fetches
//! nothing and never names the patient, and the neighbours and probe scores equal an independent computation on
//! the stored codes. Needs `chromium` (Debian) and the shared data: early returns go through `common::require`,
//! which fails under LDAE_REQUIRE_ALL=1. `LDAE_KEEP_REPORT=DIR` keeps the page and the screenshot in DIR.

mod common;
mod daemon_util;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use daemon_util::*;
use ldae::lookup::probe::{Linear, ZScore};
use ldae::lookup::probe_file::{load_probe, save_probe, Probe, ProbeKind, ProbeMeta};

const SESSIONS: [&str; 4] = ["ses-20190314", "ses-20200312", "ses-20210318", "ses-20220310"];
const WIDTH: u32 = 1200;
const HEIGHT: u32 = 3200;

/// Run chromium headless on `page` with `extra` arguments (a fresh profile, a 60 s limit); its stdout.
fn chromium(name: &str, page: &Path, extra: &[&str], work: &Path) -> String {
    let profile = tempfile::tempdir_in(work).expect("profile dir");
    let out = work.join(format!("{name}.out"));
    let mut child = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--window-size={WIDTH},{HEIGHT}"))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = child.try_wait().expect("wait chromium") {
            assert!(s.success(), "chromium {extra:?} failed: {s}");
            break;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("chromium {extra:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::read_to_string(&out).expect("chromium output")
}

/// The page without its data: URIs (so that searching it for text cannot hit base64 by chance).
fn without_data_uris(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    while let Some(i) = rest.find("data:image/png;base64,") {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        rest = &rest[rest.find('"').unwrap_or(rest.len())..];
    }
    out.push_str(rest);
    out
}

/// Values of `attr="…"` in order of appearance.
fn attrs<'a>(dom: &'a str, attr: &str) -> Vec<&'a str> {
    let key = format!("{attr}=\"");
    dom.match_indices(&key)
        .map(|(i, _)| {
            let s = &dom[i + key.len()..];
            &s[..s.find('"').unwrap_or(0)]
        })
        .collect()
}

/// (stored embedding's patient id, date, y_sem) of every embedding, read straight from the database.
fn stored_codes(db: &Path) -> Vec<(String, String, String, Vec<f32>)> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).expect("db");
    let mut st = c
        .prepare(
            "SELECT p.patient_id, COALESCE(se.acquisition_date, st.study_date), se.series_uid, e.y_sem \
             FROM embeddings e JOIN registrations r ON r.id = e.registration_ref JOIN volumes v ON v.id = r.volume_ref \
             JOIN series se ON se.id = v.series_ref JOIN studies st ON st.id = se.study_ref \
             JOIN patients p ON p.id = st.patient_ref ORDER BY e.id",
        )
        .expect("query");
    st.query_map([], |r| {
        let blob: Vec<u8> = r.get(3)?;
        let y = blob.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, y))
    })
    .expect("rows")
    .collect::<Result<_, _>>()
    .expect("rows")
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let d = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| f64::from(*p) * f64::from(*q)).sum::<f64>();
    d(a, b) / (d(a, a).sqrt() * d(b, b).sqrt())
}

#[test]
fn report_renders_every_timepoint_in_chromium() {
    let t0 = Instant::now();
    if !common::tool("chromium", &["--version"]) {
        return;
    }
    let mut sessions: Vec<PathBuf> = Vec::new();
    for s in SESSIONS {
        let Some(dir) = common::shared_data(&format!("testdata/longitudinal/dicom/sub-01/{s}")) else { return };
        sessions.push(dir);
    }
    let env = Env::with_model(1.0, 0.3);
    // No automatic gap filling: the one synthetic timepoint is asked for below, so the timeline is known.
    let mut cfg = std::fs::read_to_string(&env.config).expect("config");
    cfg.push_str("\n[longitudinal]\nauto_fill = false\n");
    std::fs::write(&env.config, cfg).expect("config");
    for (s, dir) in SESSIONS.iter().zip(&sessions) {
        let to = env.path(&format!("incoming/sub-01/{s}"));
        std::fs::create_dir_all(&to).expect("mkdir");
        for f in std::fs::read_dir(dir).expect("session").flatten() {
            std::fs::copy(f.path(), to.join(f.file_name())).expect("copy");
        }
    }
    // Another patient (PatientID CRASH1): the neighbours of sub-01's latest scan must come from here.
    std::fs::create_dir_all(env.path("incoming/other")).expect("mkdir");
    for (i, f) in axial_files().iter().enumerate() {
        std::fs::write(env.path(&format!("incoming/other/{i}.dcm")), rewrite_uids(f, 11, i)).expect("write");
    }
    let mut daemon = env.start(0);
    let encoded = wait_for(240.0, || {
        let st = env.status()?;
        let s = st["series"].as_array()?;
        (s.len() == 5 && s.iter().all(|s| s["state"] == "encoded")).then_some(())
    });
    assert!(encoded.is_some(), "not all 5 series encoded: {:?}\n{}", env.status(), env.logs());
    // A synthetic timepoint between the 2nd and 3rd sessions, made by the daemon (interpolated and decoded).
    let (code, out, err) =
        env.ldae(&["fill", "SIMLDAE01", "--date", "2020-09-15", "--wait", "--timeout", "120", "--json"]);
    assert_eq!(code, 0, "{err}\n{}", env.logs());
    let fill: serde_json::Value = serde_json::from_str(&out).expect("fill json");
    assert_eq!(fill["synthetic"]["state"], "written", "{fill}");
    let alpha = fill["fill"]["alpha"].as_f64().expect("alpha");
    assert_eq!(terminate(&mut daemon, 30.0), Some(0), "{}", env.logs());
    let daemon_s = t0.elapsed().as_secs_f64();

    let db = env.path("state/ldae.sqlite");
    let codes = stored_codes(&db);
    assert_eq!(codes.len(), 5);
    let dim = codes[0].3.len();
    // Two probes: one on the demo model's codes, one claiming another model (shown, not applied).
    let probe = |model: &str| Probe {
        meta: ProbeMeta {
            kind: ProbeKind::Logistic,
            target: "dx".into(),
            classes: vec!["AD".into(), "CN".into()],
            model: model.into(),
            lambda: 1.0,
            n_rows: 10,
            cv: serde_json::Value::Null,
        },
        zscore: ZScore {
            mean: (0..dim).map(|i| (i as f64 * 0.37).sin() * 0.1).collect(),
            std: (0..dim).map(|i| 0.5 + (i % 7) as f64 * 0.1).collect(),
        },
        linear: Linear { weight: (0..dim).map(|i| ((i * 13 % 11) as f64 - 5.0) * 0.02).collect(), bias: -0.25 },
    };
    let (good, foreign) = (probe("demo"), probe("another-model"));
    save_probe(&env.path("ad.safetensors"), &good).expect("probe");
    save_probe(&env.path("foreign.safetensors"), &foreign).expect("probe");
    // The file holds f32: score with what it holds.
    let good = load_probe(&env.path("ad.safetensors")).expect("probe read back");
    let mut cfg = std::fs::read_to_string(&env.config).expect("config");
    cfg.push_str(&format!(
        "\n[lookup]\nprobes = [\"{}\", \"{}\"]\n",
        env.path("ad.safetensors").display(),
        env.path("foreign.safetensors").display()
    ));
    std::fs::write(&env.config, cfg).expect("config");

    // Errors name what is missing: an unknown patient; a configured probe file that is not there is named on the
    // page (tested below through the foreign probe's row), not a failure.
    let (code, _, err) = env.ldae(&["report", "NO-SUCH-PATIENT", "-o", env.path("x.html").to_str().expect("utf-8")]);
    assert_ne!(code, 0);
    assert!(err.contains("NO-SUCH-PATIENT") && err.contains("not in the store"), "{err}");
    assert!(!env.path("x.html").exists());

    let report = env.path("report.html");
    let t1 = Instant::now();
    let (code, out, err) = env.ldae(&["report", "SIMLDAE01", "-o", report.to_str().expect("utf-8"), "--json"]);
    assert_eq!(code, 0, "{err}");
    let report_s = t1.elapsed().as_secs_f64();
    let j: serde_json::Value = serde_json::from_str(&out).expect("json");
    let tps = j["timepoints"].as_array().expect("timepoints");
    let dates: Vec<&str> = tps.iter().filter_map(|t| t["date"].as_str()).collect();
    assert_eq!(dates, ["20190314", "20200312", "20200915", "20210318", "20220310"], "{j}");
    let kinds: Vec<&str> = tps.iter().filter_map(|t| t["kind"].as_str()).collect();
    assert_eq!(kinds, ["acquired", "acquired", "synthetic", "acquired", "acquired"]);
    assert!(tps.iter().all(|t| t["preview_error"].is_null()), "{j}");
    // Ages: the sessions' from the DICOM (birth 1950-06-02); the synthetic one interpolated like its codes.
    let age = |i: usize| tps[i]["age"].as_f64().expect("age");
    assert!((age(2) - (age(1) + alpha * (age(3) - age(1)))).abs() < 1e-9, "{j}");

    // Neighbours: the other patient only, with the cosine numpy-style arithmetic gives on the stored codes.
    let latest = codes.iter().find(|c| c.1 == "20220310").expect("latest");
    let hits = j["neighbours"]["hits"].as_array().expect("hits");
    assert_eq!(j["neighbours"]["query_series_uid"], latest.2.as_str());
    assert_eq!(hits.len(), 1, "one scan of another patient is stored: {j}");
    let other = codes.iter().find(|c| c.0 != "SIMLDAE01").expect("other patient");
    assert_eq!(hits[0]["series_uid"], other.2.as_str());
    let want = cosine(&latest.3, &other.3);
    let got = hits[0]["score"].as_f64().expect("score");
    assert!((got - want).abs() < 1e-5, "cosine {got} vs {want}");

    // Probe scores: z-score + linear on each session's stored code; the foreign probe is not applied.
    assert!(
        j["probes"][0]["error"].is_null()
            && j["probes"][1]["error"].as_str().is_some_and(|e| e.contains("another-model"))
    );
    for t in tps {
        let score = &t["scores"][0];
        if t["kind"] == "synthetic" {
            assert_eq!(score["status"], "missing", "{t}");
            continue;
        }
        let y = &codes.iter().find(|c| c.2 == t["series_uid"].as_str().unwrap_or("")).expect("code").3;
        let z: f64 = (0..dim)
            .map(|i| good.linear.weight[i] * (f64::from(y[i]) - good.zscore.mean[i]) / good.zscore.std[i])
            .sum::<f64>()
            + good.linear.bias;
        let s = score["score"].as_f64().expect("score");
        assert!((s - z).abs() < 1e-9 * z.abs().max(1.0), "probe score {s} vs {z}");
        assert!((score["probability"].as_f64().unwrap() - 1.0 / (1.0 + (-z).exp())).abs() < 1e-12);
        assert_eq!(t["scores"][1]["status"], "missing");
    }

    // The file itself: self-contained, no patient name or birth date, every card there.
    let html = std::fs::read_to_string(&report).expect("report");
    let lower = html.to_lowercase();
    for bad in ["http://", "https://", "file:", "ftp://", "<script", "<link", "<iframe", "url(", "@import"] {
        assert!(!lower.contains(bad), "the report contains {bad:?}");
    }
    let text = without_data_uris(&html);
    for secret in ["SIM^SUBJECT01", "SUBJECT01", "19500602"] {
        assert!(!text.contains(secret), "the report names {secret:?}");
    }
    assert!(text.contains("SIMLDAE01") && text.contains("own scans are excluded"));
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), 5);

    // Chromium: a screenshot of the page as it is, and the DOM of a copy (the same layout) whose one inline
    // script records, once everything loaded, each preview's decoded size and each card's and image's box.
    let work = env.path("chromium");
    std::fs::create_dir_all(&work).expect("mkdir");
    let shot = work.join("shot.png");
    let t2 = Instant::now();
    chromium("shot", &report, &[&format!("--screenshot={}", shot.display())], &work);
    let probe_page = work.join("probe.html");
    let csp_end = html.find("\"><title>").expect("the CSP meta ends before the title");
    let csp_start = html[..csp_end].rfind("<meta").expect("CSP meta");
    let script = "<script>addEventListener('load',()=>{for(const a of document.querySelectorAll('article')){\
        const i=a.querySelector('img.preview');const r=a.getBoundingClientRect();const q=i.getBoundingClientRect();\
        a.setAttribute('data-card-box',[r.left,r.top,r.width,r.height].map(Math.round).join(','));\
        a.setAttribute('data-img-box',[q.left,q.top,q.width,q.height].map(Math.round).join(','));\
        a.setAttribute('data-natural',i.naturalWidth+'x'+i.naturalHeight+(i.complete?'':'-incomplete'));}\
        document.body.setAttribute('data-probed','yes');});</script></body>";
    let probed = format!("{}{}", &html[..csp_start], &html[csp_end + 2..]).replace("</body>", script);
    std::fs::write(&probe_page, probed).expect("probe page");
    let dom = chromium("dom", &probe_page, &["--dump-dom", "--virtual-time-budget=5000"], &work);
    let chromium_s = t2.elapsed().as_secs_f64();
    assert!(dom.contains("data-probed=\"yes\""), "the load handler did not run:\n{}", &dom[..dom.len().min(2000)]);
    assert_eq!(attrs(&dom, "data-kind"), ["acquired", "acquired", "synthetic", "acquired", "acquired"]);
    assert_eq!(attrs(&dom, "data-date"), ["2019-03-14", "2020-03-12", "2020-09-15", "2021-03-18", "2022-03-10"]);
    let naturals = attrs(&dom, "data-natural");
    assert_eq!(naturals.len(), 5);
    for n in &naturals {
        let (w, h) = n.split_once('x').expect("WxH");
        assert!(w.parse::<u32>().unwrap_or(0) >= 200 && h.parse::<u32>().unwrap_or(0) >= 100, "image not decoded: {n}");
    }

    if let Some(keep) = std::env::var_os("LDAE_KEEP_REPORT") {
        std::fs::copy(&shot, Path::new(&keep).join("shot.png")).expect("keep screenshot");
        std::fs::copy(&report, Path::new(&keep).join("report.html")).expect("keep report");
    }
    let img = image::open(&shot).expect("screenshot").to_rgb8();
    assert_eq!((img.width(), img.height()), (WIDTH, HEIGHT));
    let colours: std::collections::HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    let lum: Vec<f64> = img.pixels().map(|p| p.0.iter().map(|&c| f64::from(c)).sum::<f64>() / 3.0).collect();
    let mean = lum.iter().sum::<f64>() / lum.len() as f64;
    let sd = (lum.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / lum.len() as f64).sqrt();
    assert!(colours.len() > 300 && sd > 20.0, "blank screenshot? {} colours, sd {sd:.1}", colours.len());
    // Each card's preview is on screen and shows a picture (many grey levels), the synthetic one its banner.
    let boxes = |name: &str| -> Vec<[u32; 4]> {
        attrs(&dom, name)
            .iter()
            .map(|b| {
                let v: Vec<u32> = b.split(',').map(|x| x.parse().unwrap_or(0)).collect();
                [v[0], v[1], v[2], v[3]]
            })
            .collect()
    };
    for (k, ((b, c), kind)) in
        boxes("data-img-box").iter().zip(boxes("data-card-box")).zip(attrs(&dom, "data-kind")).enumerate()
    {
        assert!(b[1] + b[3] <= HEIGHT && b[0] + b[2] <= WIDTH && b[2] > 100, "card {k}: preview off screen {b:?}");
        let px = |x: u32, y: u32| img.get_pixel(x, y).0;
        let greys: std::collections::HashSet<u8> = (b[1]..b[1] + b[3])
            .flat_map(|y| (b[0]..b[0] + b[2]).map(move |x| (x, y)))
            .map(|(x, y)| px(x, y))
            .filter(|p| p[0] == p[1] && p[1] == p[2])
            .map(|p| p[0])
            .collect();
        assert!(greys.len() > 50, "card {k}: the preview region has {} grey levels", greys.len());
        let red = (b[1]..b[1] + b[3].min(40))
            .flat_map(|y| (b[0]..b[0] + b[2]).map(move |x| (x, y)))
            .filter(|&(x, y)| {
                let [r, g, b] = px(x, y);
                let [br, bg, bb] = ldae::lookup::preview::BANNER_RGB;
                r.abs_diff(br) < 25 && g.abs_diff(bg) < 25 && b.abs_diff(bb) < 25
            })
            .count();
        assert_eq!(red > 500, kind == "synthetic", "card {k} ({kind}): {red} banner pixels");
        assert!(c[1] <= b[1] && b[1] + b[3] <= c[1] + c[3], "card {k}: image outside its card");
    }
    println!(
        "daemon (5 series) {daemon_s:.1} s, report {report_s:.2} s, chromium {chromium_s:.1} s, total {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
