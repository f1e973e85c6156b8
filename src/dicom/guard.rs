//! A cheap pre-scan that refuses a file before dicom-rs parses it, when parsing it would cost more than the
//! file's claims allow: element lengths past the end of the file (or of their sequence), lengths or inflated
//! sizes over [`Limits`], sequences nested deeper than `max_nesting_depth`, more fragments than `max_frames`,
//! or a Basic Offset Table pointing outside the fragments.
//!
//! dicom-rs allocates an element's declared length before reading it and parses sequences recursively, so a
//! 600-byte file claiming a 4 GiB element costs 4 GiB of memory and 20 000 nested sequences overflow the stack.
//! This walks the element headers only — seeking over values, entering every sequence and item (defined or
//! undefined length), counting encapsulated fragments — in O(1) memory. It reads Part 10 files (preamble +
//! `DICM`), files that start with `DICM` (no preamble) and raw data sets without a meta group (implicit or
//! explicit VR). A deflated data set is inflated as a stream, bounded by `max_inflated_bytes`, while its element
//! headers are walked the same way, so a deflate bomb is refused after inflating at most the bound.

use crate::io::read_up_to;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::Path;

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use super::prefix::{HeadFile, Prefixed};
use super::DicomError;
use crate::limits::Limits;

const UNDEFINED: u32 = 0xFFFF_FFFF;
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";
/// VRs with a 4-byte length in explicit VR.
const LONG_VRS: [&[u8; 2]; 13] =
    [b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"];

/// What the pre-scan learnt about the top-level Pixel Data, for the header's consistency checks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scan {
    pub pixel_data: Option<PixelExtent>,
    /// The file starts with `DICM` and no preamble (a parser must not skip 128 bytes first).
    pub no_preamble: bool,
    /// The meta group names the deflated transfer syntax (the data set inflates past the file's size).
    pub deflated: bool,
}

/// Size of the top-level Pixel Data as stored.
#[derive(Debug, Clone, PartialEq)]
pub enum PixelExtent {
    /// Native: the value length in bytes, and where the value starts in the file (`None` for a deflated data
    /// set, whose offsets are in the inflated stream).
    Native { bytes: u64, offset: Option<u64> },
    /// Encapsulated: fragments after the Basic Offset Table, and the offset table's entry count.
    Encapsulated { fragments: u64, offsets: u64 },
}

/// Scan one file (see the module doc); `Ok` says dicom-rs may parse it within the limits.
pub fn scan(path: &Path, limits: &Limits) -> Result<Scan, DicomError> {
    scan_open(&HeadFile::open(path)?, path, limits)
}

/// [`scan`] of a file already opened (its header is then parsed from the same [`HeadFile`]).
pub fn scan_open(file: &HeadFile, path: &Path, limits: &Limits) -> Result<Scan, DicomError> {
    let io = |e: std::io::Error| DicomError::Io { path: path.to_path_buf(), source: e };
    let len = file.size();
    let mut r = BufReader::with_capacity(8192, file.reader());
    let mut head = [0u8; 132];
    let got = read_up_to(&mut r, &mut head).map_err(io)?;
    let (start, meta) = if got == 132 && &head[128..132] == b"DICM" {
        (132, true)
    } else if got >= 4 && &head[..4] == b"DICM" {
        (4, true)
    } else {
        (0, false)
    };
    r.seek(std::io::SeekFrom::Start(start)).map_err(io)?;
    let mut w = Walk::new(FileSource(r), path, limits, Some(len), start);
    let mut ts = String::new();
    if meta {
        ts = w.meta_group()?;
    } else {
        // A raw data set: explicit VR when bytes 4..6 spell a VR.
        w.explicit = got >= 6 && is_vr(&[head[4], head[5]]);
    }
    let ts = ts.trim_end_matches(['\0', ' ']);
    if meta {
        w.explicit = ts != "1.2.840.10008.1.2";
        w.big_endian = ts == "1.2.840.10008.1.2.2";
    }
    let deflated = ts == DEFLATED;
    let mut scan = if deflated {
        let inflate = InflateSource(flate2::bufread::DeflateDecoder::new(w.src.0));
        let mut d = Walk::new(inflate, path, limits, None, 0);
        d.explicit = true;
        d.data_set()?
    } else {
        w.data_set()?
    };
    scan.no_preamble = start == 4;
    scan.deflated = deflated;
    Ok(scan)
}

/// Where the element headers come from: the file itself, or the inflated stream of a deflated data set.
trait Source: Read {
    /// Skip `n` bytes of value.
    fn skip(&mut self, n: u64) -> std::io::Result<()>;
}

struct FileSource<'a>(BufReader<Prefixed<'a>>);

impl Read for FileSource<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Source for FileSource<'_> {
    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        // n is at most the bytes left in the file (checked by the caller), so it fits an i64.
        self.0.seek_relative(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

struct InflateSource<R: BufRead>(flate2::bufread::DeflateDecoder<R>);

impl<R: BufRead> Read for InflateSource<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: BufRead> Source for InflateSource<R> {
    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        let copied = std::io::copy(&mut (&mut self.0).take(n), &mut std::io::sink())?;
        if copied < n {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "deflated data ends inside a value"));
        }
        Ok(())
    }
}

fn is_vr(b: &[u8; 2]) -> bool {
    std::str::from_utf8(b).ok().and_then(|s| s.parse::<VR>().ok()).is_some()
}

/// An open sequence, item or encapsulated Pixel Data, with its end when its length is defined.
struct Open {
    kind: Kind,
    end: Option<u64>,
}

enum Kind {
    Seq,
    Item,
    /// Encapsulated pixel data: fragments seen (the first item is the offset table), whether it is the
    /// top-level Pixel Data, the offset table's last entry, and the fragment bytes after it.
    Encap {
        items: u64,
        top: bool,
        offsets: u64,
        last_offset: Option<u64>,
        bytes: u64,
    },
}

struct Walk<'a, S: Source> {
    src: S,
    path: &'a Path,
    limits: &'a Limits,
    /// End of the file; `None` for an inflated stream (bounded by `max_inflated_bytes` instead).
    end: Option<u64>,
    pos: u64,
    explicit: bool,
    big_endian: bool,
    header_bytes: u64,
}

impl<'a, S: Source> Walk<'a, S> {
    fn new(src: S, path: &'a Path, limits: &'a Limits, end: Option<u64>, pos: u64) -> Self {
        Walk { src, path, limits, end, pos, explicit: true, big_endian: false, header_bytes: 0 }
    }

    fn bad(&self, reason: String) -> DicomError {
        DicomError::NotDicom { path: self.path.to_path_buf(), reason }
    }

    fn limit(&self, what: &str, claimed: u64, limit: u64) -> Result<(), DicomError> {
        Limits::check(what, claimed, limit)
            .map(|_| ())
            .map_err(|source| DicomError::Limit { path: self.path.to_path_buf(), source })
    }

    fn io(&self, e: std::io::Error) -> DicomError {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            self.bad("data ends inside an element (truncated)".into())
        } else if self.end.is_none() {
            self.bad(format!("deflated data set cannot be inflated: {e}"))
        } else {
            DicomError::Io { path: self.path.to_path_buf(), source: e }
        }
    }

    fn u16(&self, b: [u8; 2]) -> u16 {
        if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    fn u32(&self, b: [u8; 4]) -> u32 {
        if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<(), DicomError> {
        self.src.read_exact(buf).map_err(|e| self.io(e))?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn skip(&mut self, n: u64) -> Result<(), DicomError> {
        self.src.skip(n).map_err(|e| self.io(e))?;
        self.pos += n;
        Ok(())
    }

    /// Check a defined length against the file, the innermost open container and the limits.
    fn check_len(&self, tag: (u16, u16), len: u32, stack: &[Open]) -> Result<(), DicomError> {
        let len = len as u64;
        if let Some(end) = self.end {
            let left = end.saturating_sub(self.pos);
            if len > left {
                return Err(self.bad(format!(
                    "element ({:04X},{:04X}) claims {len} bytes but only {left} remain (truncated or corrupt)",
                    tag.0, tag.1
                )));
            }
        } else {
            self.limit("the inflated data set (bytes)", self.pos + len, self.limits.max_inflated_bytes)?;
        }
        if let Some(end) = stack.iter().rev().find_map(|o| o.end) {
            if self.pos + len > end {
                return Err(self.bad(format!(
                    "element ({:04X},{:04X}) of {len} bytes runs past the end of its sequence or item",
                    tag.0, tag.1
                )));
            }
        }
        self.limit("an element's length (bytes)", len, self.limits.max_element_bytes)
    }

    /// Walk the data set to its end.
    fn data_set(&mut self) -> Result<Scan, DicomError> {
        let mut stack: Vec<Open> = Vec::new();
        let mut depth = 0u32;
        let mut scan = Scan::default();
        loop {
            while let Some(end) = stack.last().and_then(|o| o.end) {
                if self.pos < end {
                    break;
                }
                if let Some(o) = stack.pop() {
                    self.close(o, &mut scan, &mut depth)?;
                }
            }
            let mut h = [0u8; 8];
            let got = read_up_to(&mut self.src, &mut h).map_err(|e| self.io(e))?;
            if got < 8 {
                if !stack.is_empty() {
                    return Err(self.bad("data ends inside a sequence or encapsulated Pixel Data (truncated)".into()));
                }
                return Ok(scan); // trailing padding shorter than a header is left to the parser
            }
            self.pos += 8;
            let (group, elem) = (self.u16([h[0], h[1]]), self.u16([h[2], h[3]]));
            if group == 0xFFFE {
                let len = self.u32([h[4], h[5], h[6], h[7]]);
                self.item_tag(elem, len, &mut stack, &mut scan, &mut depth)?;
                continue;
            }
            if matches!(stack.last(), Some(Open { kind: Kind::Encap { .. }, .. })) {
                return Err(self.bad(format!("element ({group:04X},{elem:04X}) inside encapsulated Pixel Data")));
            }
            let vr = [h[4], h[5]];
            if self.explicit && !is_vr(&vr) {
                // dicom-rs reads an unknown VR as UN (a 4-byte length after two reserved bytes), which this walk
                // would not mirror: an explicit-VR data set with a VR the standard does not define is refused.
                return Err(self.bad(format!("element ({group:04X},{elem:04X}) has an invalid VR {vr:02X?}")));
            }
            let len = if !self.explicit {
                self.u32([h[4], h[5], h[6], h[7]])
            } else if LONG_VRS.contains(&&vr) {
                let mut l = [0u8; 4];
                self.read(&mut l)?;
                self.u32(l)
            } else {
                self.u16([h[6], h[7]]) as u32
            };
            let pixel = (group, elem) == (0x7FE0, 0x0010);
            if len == UNDEFINED {
                let encap = if self.explicit { matches!(&vr, b"OB" | b"OW") } else { pixel };
                let kind = if encap {
                    Kind::Encap { items: 0, top: pixel && stack.is_empty(), offsets: 0, last_offset: None, bytes: 0 }
                } else if !self.explicit || matches!(&vr, b"SQ" | b"UN") {
                    Kind::Seq
                } else {
                    let vr = String::from_utf8_lossy(&vr).into_owned();
                    return Err(self.bad(format!("element ({group:04X},{elem:04X}) {vr} has an undefined length")));
                };
                self.open(Open { kind, end: None }, &mut stack, &mut depth)?;
                continue;
            }
            self.check_len((group, elem), len, &stack)?;
            let sequence = if self.explicit { &vr == b"SQ" } else { dictionary_sq(Tag(group, elem)) };
            if sequence {
                self.open(Open { kind: Kind::Seq, end: Some(self.pos + len as u64) }, &mut stack, &mut depth)?;
                continue;
            }
            if pixel && stack.is_empty() {
                let offset = self.end.map(|_| self.pos);
                scan.pixel_data = Some(PixelExtent::Native { bytes: len as u64, offset });
            } else if scan.pixel_data.is_none() {
                self.header_bytes += len as u64 + 12;
                self.limit("the header before Pixel Data (bytes)", self.header_bytes, self.limits.max_header_bytes)?;
            }
            self.skip(len as u64)?;
        }
    }

    fn open(&self, o: Open, stack: &mut Vec<Open>, depth: &mut u32) -> Result<(), DicomError> {
        if matches!(o.kind, Kind::Seq) {
            *depth += 1;
            self.limit("the sequence nesting depth", *depth as u64, self.limits.max_nesting_depth as u64)?;
        }
        stack.push(o);
        Ok(())
    }

    fn close(&self, o: Open, scan: &mut Scan, depth: &mut u32) -> Result<(), DicomError> {
        match o.kind {
            Kind::Seq => *depth = depth.saturating_sub(1),
            Kind::Item => {}
            Kind::Encap { items, top, offsets, last_offset, bytes } => {
                if let Some(last) = last_offset {
                    if last >= bytes {
                        return Err(
                            self.bad(format!("Basic Offset Table points at byte {last} of {bytes} bytes of fragments"))
                        );
                    }
                }
                if top {
                    scan.pixel_data = Some(PixelExtent::Encapsulated { fragments: items.saturating_sub(1), offsets });
                }
            }
        }
        Ok(())
    }

    /// An item, item delimiter or sequence delimiter (group FFFE, always a 4-byte length, no VR).
    fn item_tag(
        &mut self,
        elem: u16,
        len: u32,
        stack: &mut Vec<Open>,
        scan: &mut Scan,
        depth: &mut u32,
    ) -> Result<(), DicomError> {
        match elem {
            0xE000 => match stack.last().map(|o| &o.kind) {
                Some(Kind::Encap { .. }) => {
                    if len == UNDEFINED {
                        return Err(self.bad("a Pixel Data fragment has an undefined length".into()));
                    }
                    self.check_len((0xFFFE, 0xE000), len, stack)?;
                    let first = matches!(stack.last(), Some(Open { kind: Kind::Encap { items: 0, .. }, .. }));
                    let mut table = None;
                    if first {
                        table = Some(self.offset_table(len)?);
                    } else {
                        self.skip(len as u64)?;
                    }
                    let max_frames = self.limits.max_frames;
                    if let Some(Open { kind: Kind::Encap { items, offsets, last_offset, bytes, .. }, .. }) =
                        stack.last_mut()
                    {
                        *items += 1;
                        if let Some((n, last)) = table {
                            *offsets = n;
                            *last_offset = last;
                        } else {
                            *bytes += 8 + len as u64;
                        }
                        let fragments = *items - 1;
                        self.limit("the number of Pixel Data fragments", fragments, max_frames)?;
                    }
                }
                Some(Kind::Seq) => {
                    let end = if len == UNDEFINED {
                        None
                    } else {
                        self.check_len((0xFFFE, 0xE000), len, stack)?;
                        Some(self.pos + len as u64)
                    };
                    stack.push(Open { kind: Kind::Item, end });
                }
                _ => return Err(self.bad("an item (FFFE,E000) outside any sequence".into())),
            },
            0xE00D => {
                if matches!(stack.last(), Some(Open { kind: Kind::Item, end: None })) {
                    stack.pop();
                }
            }
            0xE0DD => {
                while let Some(o) = stack.pop() {
                    let done = matches!(o.kind, Kind::Seq | Kind::Encap { .. });
                    self.close(o, scan, depth)?;
                    if done {
                        break;
                    }
                }
            }
            _ => return Err(self.bad(format!("unknown item tag (FFFE,{elem:04X})"))),
        }
        Ok(())
    }

    /// Read a Basic Offset Table: its entry count and last entry, checking that the entries ascend.
    fn offset_table(&mut self, len: u32) -> Result<(u64, Option<u64>), DicomError> {
        if len % 4 != 0 {
            return Err(self.bad(format!("Basic Offset Table of {len} bytes (not a multiple of 4)")));
        }
        let n = len as u64 / 4;
        self.limit("the Basic Offset Table's entries", n, self.limits.max_frames)?;
        let mut last: Option<u64> = None;
        for _ in 0..n {
            let mut b = [0u8; 4];
            self.read(&mut b)?;
            let v = self.u32(b) as u64;
            if last.is_some_and(|l| v <= l) || (last.is_none() && v != 0) {
                return Err(self.bad("Basic Offset Table entries do not ascend from 0".into()));
            }
            last = Some(v);
        }
        Ok((n, last))
    }
}

impl Walk<'_, FileSource<'_>> {
    /// Walk the meta group (explicit VR little endian, group 0002); returns the transfer syntax UID.
    fn meta_group(&mut self) -> Result<String, DicomError> {
        let mut ts = String::new();
        // (0002,0000) File Meta Information Group Length: dicom-rs ends the meta group where it says, this walk where
        // group 0002 ends; a file on which the two disagree would be parsed from another offset than checked here.
        let mut group_length: Option<(u64, u64)> = None; // (claimed, where its count starts)
        loop {
            let mut h = [0u8; 8];
            let got = read_up_to(&mut self.src, &mut h).map_err(|e| self.io(e))?;
            if got < 8 || u16::from_le_bytes([h[0], h[1]]) != 0x0002 {
                if let Some((claimed, from)) = group_length {
                    let actual = self.pos - from;
                    if claimed != actual {
                        return Err(self.bad(format!(
                            "meta group length (0002,0000) says {claimed} bytes but its elements take {actual}"
                        )));
                    }
                }
                // Not meta any more: step back (the file source can; the data set is read again from here).
                let back = i64::try_from(got).unwrap_or(0);
                self.src.0.seek_relative(-back).map_err(|e| self.io(e))?;
                return Ok(ts);
            }
            self.pos += 8;
            let elem = u16::from_le_bytes([h[2], h[3]]);
            if !is_vr(&[h[4], h[5]]) {
                return Err(self.bad(format!("meta element (0002,{elem:04X}) has an invalid VR {:02X?}", [h[4], h[5]])));
            }
            let len = if LONG_VRS.contains(&&[h[4], h[5]]) {
                let mut l = [0u8; 4];
                self.read(&mut l)?;
                u32::from_le_bytes(l)
            } else {
                u16::from_le_bytes([h[6], h[7]]) as u32
            };
            if len == UNDEFINED {
                return Err(self.bad(format!("meta element (0002,{elem:04X}) has an undefined length")));
            }
            self.check_len((2, elem), len, &[])?;
            if elem == 0x0010 && len <= 256 {
                let mut v = vec![0u8; len as usize];
                self.read(&mut v)?;
                ts = String::from_utf8_lossy(&v).into_owned();
            } else if elem == 0x0000 && len == 4 && group_length.is_none() {
                let mut v = [0u8; 4];
                self.read(&mut v)?;
                group_length = Some((u32::from_le_bytes(v) as u64, self.pos));
            } else {
                self.skip(len as u64)?;
            }
        }
    }
}

/// Does the standard dictionary say the tag is a sequence (how an implicit-VR parser decides)?
fn dictionary_sq(tag: Tag) -> bool {
    StandardDataDictionary.by_tag(tag).is_some_and(|e| matches!(e.vr(), VirtualVr::Exact(VR::SQ)))
}
