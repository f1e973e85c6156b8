//! Researcher look-ups on stored y_sem codes: linear probes (z-score, logistic/ridge, grouped cross-validation)
//! and their files. Pure: no SQL, no CLI.

pub mod probe;
pub mod probe_cv;
pub mod probe_file;
