//! The patient report (`ldae report`): one self-contained HTML page built from plain values — a header (patient,
//! model, generation time), the timeline of acquired and synthetic scans in date order (one card each, with its
//! three-view preview as a `data:` PNG), the nearest neighbours of the latest scan, and the configured probes'
//! scores. Pure: values in, a `String` out. The page needs no network to view: inline CSS, inline images, no
//! script, no external reference. Every text that came from outside (tags, UIDs, file names) is HTML-escaped.

use std::fmt::Write;

use serde::Serialize;

use super::probe_file::ProbeKind;

/// Acquired by a scanner, or made by the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanKind {
    Acquired,
    Synthetic,
}

impl ScanKind {
    fn class(self) -> &'static str {
        match self {
            ScanKind::Acquired => "acquired",
            ScanKind::Synthetic => "synthetic",
        }
    }
}

/// One probe's output on one timepoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Score {
    /// The linear score; for a logistic probe also P(first class).
    Value { score: f64, probability: Option<f64> },
    /// No score, and why (not encoded, probe unusable, ...).
    Missing { reason: String },
}

/// One timepoint's card.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timepoint {
    pub kind: ScanKind,
    /// `YYYYMMDD` as DICOM writes it.
    pub date: Option<String>,
    /// Years.
    pub age: Option<f64>,
    pub series_uid: Option<String>,
    pub description: Option<String>,
    /// A line under the card's title (how a synthetic scan was made, why a scan has no codes).
    pub note: Option<String>,
    /// The three-view PNG (drawn with the SYNTHETIC banner for a synthetic scan).
    #[serde(skip)]
    pub preview_png: Option<Vec<u8>>,
    /// Why there is no preview.
    pub preview_error: Option<String>,
    /// One per [`ReportInput::probes`], same order.
    pub scores: Vec<Score>,
}

/// A configured probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeColumn {
    /// The probe file's name (without folders).
    pub name: String,
    pub target: String,
    pub kind: Option<ProbeKind>,
    /// For a logistic probe: [positive, negative].
    pub classes: Vec<String>,
    /// Why the probe could not be applied (unreadable, another model, ...).
    pub error: Option<String>,
}

/// A stored scan of another patient near the latest scan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Neighbour {
    pub series_uid: String,
    /// PatientID, else the patient key.
    pub patient: String,
    pub date: Option<String>,
    pub age: Option<f64>,
    pub description: Option<String>,
    /// Cosine similarity of the y_sem codes.
    pub score: f32,
}

/// The nearest-neighbour section.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Neighbours {
    Found {
        /// The latest encoded scan of the patient (the query).
        query_series_uid: String,
        query_date: Option<String>,
        /// The model version (weights digest prefix) both query and neighbours were encoded with.
        model_version: String,
        /// How many stored scans were ranked.
        candidates: usize,
        hits: Vec<Neighbour>,
    },
    Unavailable {
        reason: String,
    },
}

/// Everything the page shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportInput {
    /// PatientID, else the patient key.
    pub patient: String,
    pub model_id: String,
    pub model_version: Option<String>,
    /// When the page was made, as displayed (e.g. `2026-12-01 23:50:00 UTC`).
    pub generated_at: String,
    /// Any order: the page sorts them by date.
    pub timepoints: Vec<Timepoint>,
    /// Stored series of the patient that are not timepoints (not selected, not registered), as a count.
    pub series_not_shown: usize,
    pub neighbours: Neighbours,
    /// Empty: no probes configured.
    pub probes: Vec<ProbeColumn>,
}

/// Text made safe for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Standard base64 (with padding), for `data:` URIs.
pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `YYYYMMDD` → `YYYY-MM-DD`; anything else as given (escaped by the caller); None → "date unknown".
pub fn display_date(d: Option<&str>) -> String {
    match d {
        Some(d) if d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..])
        }
        Some(d) => d.trim().to_string(),
        None => "date unknown".into(),
    }
}

fn age_text(age: Option<f64>) -> String {
    match age {
        Some(a) if a.is_finite() => format!("{a:.1} y"),
        _ => "unknown".into(),
    }
}

const STYLE: &str = "\
body{font-family:'DejaVu Sans',Arial,sans-serif;margin:0;background:#f4f5f7;color:#1d2430}\
header{background:#1d2a3a;color:#fff;padding:16px 24px}\
header h1{margin:0 0 6px;font-size:22px}\
header p{margin:2px 0;font-size:14px;color:#d0d8e4}\
main{padding:16px 24px;max-width:1120px}\
h2{font-size:18px;margin:22px 0 10px}\
.timeline{border-left:4px solid #8797ad;padding-left:18px}\
.card{background:#fff;border:2px solid #3b6ea5;border-radius:6px;margin:0 0 16px;padding:10px 14px;\
box-shadow:0 1px 3px rgba(0,0,0,.15)}\
.card.synthetic{border:3px dashed #c80000;\
background:repeating-linear-gradient(135deg,#fff5f5,#fff5f5 12px,#ffe8e8 12px,#ffe8e8 24px)}\
.card h3{margin:0 0 4px;font-size:17px}\
.badge{display:inline-block;font-size:12px;font-weight:bold;padding:2px 8px;border-radius:3px;margin-right:8px;\
vertical-align:middle;color:#fff}\
.acquired .badge{background:#3b6ea5}\
.synthetic .badge{background:#c80000}\
.note{font-size:13px;color:#7a1c1c;margin:2px 0 6px}\
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;margin:4px 0 8px;font-size:13px}\
dt{color:#5a6678}dd{margin:0;word-break:break-all}\
img.preview{display:block;max-width:100%;height:auto;background:#181818}\
.missing{padding:30px;background:#eee;color:#800;font-size:13px}\
table{border-collapse:collapse;font-size:13px;background:#fff}\
th,td{border:1px solid #c5ccd6;padding:3px 8px;text-align:left}\
th{background:#e4e8ee}\
.scores{margin:6px 0}\
footer{padding:10px 24px 24px;font-size:12px;color:#5a6678}";

/// The timeline's order: by date (undated last), acquired before synthetic on one date, then by series UID.
pub fn timeline_order(a: &Timepoint, b: &Timepoint) -> std::cmp::Ordering {
    (a.date.is_none(), &a.date, a.kind, &a.series_uid).cmp(&(b.date.is_none(), &b.date, b.kind, &b.series_uid))
}

/// The page.
pub fn render(input: &ReportInput) -> String {
    let mut tps: Vec<&Timepoint> = input.timepoints.iter().collect();
    tps.sort_by(|a, b| timeline_order(a, b));
    let acquired = tps.iter().filter(|t| t.kind == ScanKind::Acquired).count();
    let synthetic = tps.len() - acquired;
    let mut h = String::with_capacity(64 * 1024);
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    // No script, no fetch of any kind: only inline styles and data: images.
    h.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; \
         style-src 'unsafe-inline'\">",
    );
    let _ =
        write!(h, "<title>ldae report: patient {}</title><style>{STYLE}</style></head><body>", escape(&input.patient));
    let version = input.model_version.as_deref().map(|v| format!(" version {}", escape(v))).unwrap_or_default();
    let _ = write!(
        h,
        "<header><h1>Patient <span id=\"patient\">{}</span></h1><p>Model <b>{}</b>{version}</p>\
         <p>Generated {}</p><p>{} timepoint(s): {acquired} acquired, {synthetic} synthetic</p></header><main>",
        escape(&input.patient),
        escape(&input.model_id),
        escape(&input.generated_at),
        tps.len()
    );
    h.push_str("<h2>Timeline</h2>");
    if tps.is_empty() {
        h.push_str("<p>No registered scan of this patient is stored.</p>");
    }
    h.push_str("<div class=\"timeline\">");
    for t in &tps {
        card(&mut h, t, &input.probes);
    }
    h.push_str("</div>");
    if input.series_not_shown > 0 {
        let _ = write!(
            h,
            "<p>{} other stored series of this patient (not selected as a brain scan, held by the QC gate before \
             registration, or not registered yet) are not shown.</p>",
            input.series_not_shown
        );
    }
    neighbours(&mut h, &input.neighbours, &input.model_id);
    probes(&mut h, &input.probes);
    h.push_str(
        "</main><footer>Previews: the model input in template (MNI) space, three mid-slices, radiological \
         convention (the patient's right on the image's left). Synthetic scans were made by the model and were \
         never acquired. This page is self-contained: it loads nothing from any network.</footer></body></html>\n",
    );
    h
}

fn card(h: &mut String, t: &Timepoint, probes: &[ProbeColumn]) {
    let date = display_date(t.date.as_deref());
    let kind = t.kind.class();
    let badge = match t.kind {
        ScanKind::Acquired => "ACQUIRED",
        ScanKind::Synthetic => "SYNTHETIC",
    };
    let _ = write!(
        h,
        "<article class=\"card {kind}\" data-kind=\"{kind}\" data-date=\"{d}\"><h3><span class=\"badge\">{badge}\
         </span><span class=\"date\">{d}</span></h3>",
        d = escape(&date)
    );
    if t.kind == ScanKind::Synthetic {
        h.push_str("<p class=\"note\">Made by the model, not acquired.</p>");
    }
    if let Some(n) = &t.note {
        let _ = write!(h, "<p class=\"note\">{}</p>", escape(n));
    }
    let _ = write!(h, "<dl><dt>Age</dt><dd>{}</dd>", escape(&age_text(t.age)));
    let uid = t.series_uid.as_deref().unwrap_or("none");
    let _ = write!(h, "<dt>Series UID</dt><dd class=\"uid\">{}</dd>", escape(uid));
    let desc = t.description.as_deref().unwrap_or("");
    let _ = write!(h, "<dt>Description</dt><dd>{}</dd></dl>", escape(desc));
    if !probes.is_empty() {
        h.push_str("<table class=\"scores\"><tr><th>Probe</th><th>Score</th></tr>");
        for (p, s) in probes.iter().zip(&t.scores) {
            let label = format!("{} ({})", probe_title(p), p.name);
            let _ = write!(h, "<tr><td>{}</td><td>{}</td></tr>", escape(&label), score_text(p, s));
        }
        h.push_str("</table>");
    }
    match &t.preview_png {
        Some(png) => {
            let _ = write!(
                h,
                "<img class=\"preview\" alt=\"{} preview, {}\" src=\"data:image/png;base64,{}\">",
                badge.to_lowercase(),
                escape(&date),
                base64(png)
            );
        }
        None => {
            let why = t.preview_error.as_deref().unwrap_or("no volume");
            let _ = write!(h, "<div class=\"missing\">No preview: {}</div>", escape(why));
        }
    }
    h.push_str("</article>");
}

fn probe_title(p: &ProbeColumn) -> String {
    match (p.kind, p.classes.as_slice()) {
        (Some(ProbeKind::Logistic), [a, b]) => format!("{} ({a} vs {b})", p.target),
        _ => p.target.clone(),
    }
}

fn score_text(p: &ProbeColumn, s: &Score) -> String {
    match s {
        Score::Value { score, probability: Some(pr) } => {
            let class = p.classes.first().map(String::as_str).unwrap_or("positive");
            format!("{score:.3} (P({}) = {:.1} %)", escape(class), pr * 100.0)
        }
        Score::Value { score, probability: None } => format!("{score:.3}"),
        Score::Missing { reason } => format!("— <small>{}</small>", escape(reason)),
    }
}

fn neighbours(h: &mut String, n: &Neighbours, model_id: &str) {
    h.push_str("<h2>Nearest neighbours of the latest scan</h2>");
    match n {
        Neighbours::Unavailable { reason } => {
            let _ = write!(h, "<p id=\"neighbours\">None: {}</p>", escape(reason));
        }
        Neighbours::Found { query_series_uid, query_date, model_version, candidates, hits } => {
            let _ = write!(
                h,
                "<p>The stored scans most similar to the latest scan ({}, series {}) by cosine similarity of their \
                 semantic codes (y_sem), among {candidates} scan(s) encoded by the same model ({} version {}). \
                 <b>This patient's own scans are excluded.</b></p>",
                escape(&display_date(query_date.as_deref())),
                escape(query_series_uid),
                escape(model_id),
                escape(model_version)
            );
            if hits.is_empty() {
                h.push_str("<p id=\"neighbours\">No scan of another patient is stored for this model.</p>");
                return;
            }
            h.push_str(
                "<table id=\"neighbours\"><tr><th>#</th><th>Similarity</th><th>Patient</th><th>Date</th><th>Age</th>\
                 <th>Series UID</th><th>Description</th></tr>",
            );
            for (i, x) in hits.iter().enumerate() {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{:.4}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    i + 1,
                    x.score,
                    escape(&x.patient),
                    escape(&display_date(x.date.as_deref())),
                    escape(&age_text(x.age)),
                    escape(&x.series_uid),
                    escape(x.description.as_deref().unwrap_or(""))
                );
            }
            h.push_str("</table>");
        }
    }
}

fn probes(h: &mut String, probes: &[ProbeColumn]) {
    h.push_str("<h2>Probes</h2>");
    if probes.is_empty() {
        h.push_str(
            "<p id=\"probes\">No probes configured (list probe files under <code>[lookup] probes</code> in the \
             configuration to see their scores on every timepoint).</p>",
        );
        return;
    }
    h.push_str(
        "<p>Linear probes on y_sem (z-scored with the training mean and standard deviation). A score is the \
         linear output; for two classes, the probability of the first.</p><table id=\"probes\"><tr><th>File</th>\
         <th>Target</th><th>Kind</th><th>Status</th></tr>",
    );
    for p in probes {
        let kind = match p.kind {
            Some(ProbeKind::Logistic) => "logistic",
            Some(ProbeKind::Ridge) => "ridge",
            None => "",
        };
        let status =
            p.error.as_deref().map(|e| format!("not applied: {}", escape(e))).unwrap_or_else(|| "applied".into());
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{kind}</td><td>{status}</td></tr>",
            escape(&p.name),
            escape(&probe_title(p))
        );
    }
    h.push_str("</table>");
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
