//! A cheap pre-scan that refuses files whose element lengths run past the end of the file.
//!
//! dicom-rs allocates an element's declared length before reading it, so a 600-byte file claiming a 4 GiB element
//! costs 4 GiB of memory (and a few of them in parallel would exhaust the machine). This walks the element headers
//! only — seeking over values, entering undefined-length sequences and items — and checks every defined length
//! against the bytes left. Deflated data sets are only checked up to the end of the meta group.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::DicomError;

const UNDEFINED: u32 = 0xFFFF_FFFF;

/// Check the element lengths of a Part 10 file. Files without the `DICM` preamble are left to the parser.
pub fn check_lengths(path: &Path) -> Result<(), DicomError> {
    let io = |e: std::io::Error| DicomError::Io { path: path.to_path_buf(), source: e };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut r = BufReader::with_capacity(4096, file);
    let mut pre = [0u8; 132];
    if len < 132 || r.read_exact(&mut pre).is_err() || &pre[128..132] != b"DICM" {
        return Ok(());
    }
    let mut pos: u64 = 132;
    let mut ts = String::new();
    // Meta group: always explicit VR little endian.
    let mut mode = Mode { explicit: true, big_endian: false };
    let mut in_meta = true;
    while pos + 8 <= len {
        let mut h = [0u8; 8];
        if r.read_exact(&mut h).is_err() {
            return Ok(());
        }
        let group_le = u16::from_le_bytes([h[0], h[1]]);
        if in_meta && group_le != 0x0002 {
            in_meta = false;
            let t = ts.trim_end_matches(['\0', ' ']);
            if t == "1.2.840.10008.1.2.1.99" {
                return Ok(()); // deflated: the rest is compressed
            }
            mode = Mode { explicit: t != "1.2.840.10008.1.2", big_endian: t == "1.2.840.10008.1.2.2" };
        }
        let u16_at = |b: [u8; 2]| if mode.big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) };
        let u32_at = |b: [u8; 4]| if mode.big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) };
        let group = u16_at([h[0], h[1]]);
        let elem = u16_at([h[2], h[3]]);
        pos += 8;
        let length: u32 = if group == 0xFFFE || !mode.explicit {
            u32_at([h[4], h[5], h[6], h[7]])
        } else {
            let vr = [h[4], h[5]];
            if matches!(
                &vr,
                b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"SQ" | b"SV" | b"UC" | b"UN" | b"UR" | b"UT" | b"UV"
            ) {
                let mut l = [0u8; 4];
                if r.read_exact(&mut l).is_err() {
                    return Ok(());
                }
                pos += 4;
                u32_at(l)
            } else {
                u16_at([h[6], h[7]]) as u32
            }
        };
        if length == UNDEFINED {
            continue; // enter the sequence / item / encapsulated pixel data
        }
        let left = len - pos;
        if length as u64 > left {
            return Err(DicomError::NotDicom {
                path: path.to_path_buf(),
                reason: format!(
                    "element ({group:04X},{elem:04X}) claims {length} bytes but only {left} remain (truncated or corrupt)"
                ),
            });
        }
        if in_meta && group == 0x0002 && elem == 0x0010 {
            let mut v = vec![0u8; length as usize];
            if r.read_exact(&mut v).is_err() {
                return Ok(());
            }
            ts = String::from_utf8_lossy(&v).into_owned();
        } else if r.seek_relative(length as i64).is_err() {
            return Ok(());
        }
        pos += length as u64;
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct Mode {
    explicit: bool,
    big_endian: bool,
}
