//! ldae's own 12-bit JPEG Extended decoder (`ldae::dicom::jpeg12::decode`) on a bare JPEG stream.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ldae::dicom::jpeg12::decode(data);
});
