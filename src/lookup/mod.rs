//! Researcher look-ups on stored scans and their y_sem codes. Pure code on values (no SQL, no CLI): rows come
//! from `store` (the only SQL) and the CLI orchestrates. [`similar`] is exact cosine nearest neighbours over
//! the [`matrix`] cache; [`export`] writes rows as CSV, JSON lines or NPY;
//! [`probe`], [`probe_cv`] and [`probe_file`] are the linear probes (z-score, logistic/ridge, patient-grouped
//! cross-validation, the probe file); [`preview`] (with [`font`]) draws a scan's three-view picture; [`report`]
//! builds the self-contained HTML page of one patient.

pub mod export;
pub mod font;
pub mod matrix;
pub mod preview;
pub mod probe;
pub mod probe_cv;
pub mod probe_file;
pub mod report;
pub mod similar;
