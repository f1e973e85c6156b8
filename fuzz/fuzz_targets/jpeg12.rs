//! ldae's own 12-bit JPEG Extended decoder (`ldae::dicom::jpeg12::decode`) on a bare JPEG stream.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The frame size a DICOM header would give: the 12-bit seed series is 48×48.
    let _ = ldae::dicom::jpeg12::decode(data, (48, 48));
});
