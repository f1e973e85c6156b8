//! Patient timelines and gap filling. Pure code on dates and values: [`dates`] (calendar arithmetic), [`policy`]
//! (the `[longitudinal]` gap policy: which missing visits are synthesised, which requests are refused and why,
//! when a synthetic timepoint is superseded) and [`timeline`] (a patient's acquired and synthetic timepoints in
//! order). The store reads and writes the rows; the daemon and the CLI orchestrate.

pub mod dates;
pub mod policy;
pub mod timeline;
