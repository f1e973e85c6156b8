//! Weights loading (`ldae::model::weights::read_tensors`): a `.pth` torch zip (restricted unpickler + storages)
//! or `.safetensors`, told apart by content, as the model loader reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = ldae_fuzz::scratch_file("input.pth", data);
    let _ = ldae::model::weights::read_tensors(&path);
});
