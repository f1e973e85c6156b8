//! Researcher look-ups: nearest neighbours, exports, linear probes and pictures of stored scans.
//!
//! Pure code on values (no SQL, no CLI): [`preview`] draws a scan's three-view picture.

pub mod font;
pub mod preview;
