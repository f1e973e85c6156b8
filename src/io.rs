//! Small I/O helpers shared by the file parsers (DICOM pre-scan, NIfTI reader).

use std::io::Read;

/// Fill `buf` as far as the source goes; the number of bytes read (less than `buf.len()` only at the end).
pub(crate) fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
