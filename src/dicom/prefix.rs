//! A DICOM file opened once for its header: its first bytes held in memory, the rest read on demand.
//!
//! Reading a header used to open the file three times (a size check, the pre-scan of [`super::guard`], then
//! dicom-rs), each with its own buffered reads and seeks — seventeen system calls per file, a third of
//! `ldae convert`'s time on a series of small files. [`HeadFile::open`] stats and opens the file once and reads
//! its first [`HEAD`] bytes with one read; the pre-scan and the parser then read through
//! [`Prefixed`] cursors, which serve those bytes from memory and anything further (a long header, the end of
//! the file) with positioned reads of the same descriptor, bounded by the size the file had when it was opened.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::DicomError;

/// Bytes read up front: every header of a typical MR/CT slice (Siemens CSA headers included) fits.
const HEAD: usize = 16 << 10;

/// An open regular file, its size when opened and its first bytes.
pub struct HeadFile {
    file: File,
    len: u64,
    head: Vec<u8>,
}

impl HeadFile {
    /// Stat `path` (refusing an empty or non-regular file before opening it: a FIFO would block, a device may
    /// act on open), open it and read its first bytes.
    pub fn open(path: &Path) -> Result<HeadFile, DicomError> {
        let io = |e: std::io::Error| DicomError::Io { path: path.to_path_buf(), source: e };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.len() == 0 {
            return Err(DicomError::Empty { path: path.to_path_buf() });
        }
        if !meta.is_file() {
            return Err(DicomError::NotDicom { path: path.to_path_buf(), reason: "not a regular file".into() });
        }
        let file = File::open(path).map_err(io)?;
        let want = meta.len().min(HEAD as u64) as usize;
        let mut head = vec![0u8; want];
        // A freshly opened file reads from its start.
        let got = crate::io::read_up_to(&mut &file, &mut head).map_err(io)?;
        // A file that shrank since the stat ends where its bytes end.
        head.truncate(got);
        let len = if got < want { got as u64 } else { meta.len() };
        Ok(HeadFile { file, len, head })
    }

    /// The file's size when it was opened.
    pub fn size(&self) -> u64 {
        self.len
    }

    /// A fresh cursor at the start of the file.
    pub fn reader(&self) -> Prefixed<'_> {
        Prefixed { file: self, pos: 0 }
    }
}

/// A read cursor over a [`HeadFile`]: memory for the first bytes, positioned reads after them, end of file at
/// the size it had when opened.
pub struct Prefixed<'a> {
    file: &'a HeadFile,
    pos: u64,
}

impl Read for Prefixed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let f = self.file;
        if self.pos >= f.len || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(f.len - self.pos).unwrap_or(usize::MAX));
        let n = match usize::try_from(self.pos).ok().and_then(|p| f.head.get(p..)) {
            Some(rest) if !rest.is_empty() => {
                let n = want.min(rest.len());
                buf[..n].copy_from_slice(&rest[..n]);
                n
            }
            _ => f.file.read_at(&mut buf[..want], self.pos)?,
        };
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Prefixed<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.file.len.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before start"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_seeks_match_the_file_across_the_head_boundary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        let bytes: Vec<u8> = (0..(HEAD as u32 * 3 + 77)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        std::fs::write(&p, &bytes).expect("write");
        let f = HeadFile::open(&p).expect("open");
        assert_eq!(f.size(), bytes.len() as u64);
        let mut all = Vec::new();
        f.reader().read_to_end(&mut all).expect("read");
        assert_eq!(all, bytes);
        for (at, n) in [(0usize, 10usize), (HEAD - 3, 8), (HEAD, 100), (bytes.len() - 5, 50), (bytes.len() + 9, 4)] {
            let mut r = f.reader();
            r.seek(SeekFrom::Start(at as u64)).expect("seek");
            let mut buf = vec![0u8; n];
            let got = crate::io::read_up_to(&mut r, &mut buf).expect("read");
            let end = (at + n).min(bytes.len());
            assert_eq!(&buf[..got], bytes.get(at..end).unwrap_or(&[]), "at {at}");
        }
        let mut r = f.reader();
        assert!(r.seek(SeekFrom::Current(-1)).is_err(), "no seek before the start");
        assert_eq!(r.seek(SeekFrom::End(-2)).expect("seek"), bytes.len() as u64 - 2);
    }

    #[test]
    fn empty_and_non_regular_files_are_refused_before_opening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("empty");
        std::fs::write(&p, b"").expect("write");
        assert!(matches!(HeadFile::open(&p), Err(DicomError::Empty { .. })));
        assert!(matches!(HeadFile::open(dir.path()), Err(DicomError::NotDicom { .. })));
    }
}
