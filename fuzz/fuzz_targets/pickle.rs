//! The restricted unpickler alone (`ldae::model::pickle::parse_state_dict`) on a `data.pkl`, without the zip
//! around it, so mutations reach the opcodes directly.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ldae::model::pickle::parse_state_dict(data);
});
