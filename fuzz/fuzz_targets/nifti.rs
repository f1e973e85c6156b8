//! The NIfTI-1 reader (`ldae::nifti::read_nifti`) on a file: plain `.nii` bytes, or gzip (`.nii.gz`), which the
//! reader recognises by its magic whatever the name.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let name = if data.starts_with(&[0x1f, 0x8b]) { "input.nii.gz" } else { "input.nii" };
    let path = ldae_fuzz::scratch_file(name, data);
    let _ = ldae::nifti::read_nifti(&path);
});
