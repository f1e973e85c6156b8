//! The DICOM header reader (`ldae::dicom::read_header`): any bytes must give a header or an error, never a
//! panic, an abort or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = ldae_fuzz::scratch_file("input.dcm", data);
    let _ = ldae::dicom::read_header(&path);
});
