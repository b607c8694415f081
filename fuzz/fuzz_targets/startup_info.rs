//! Fuzz target `startup_info`: see `shipper_fuzz::startup_info` (fuzz/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = shipper_fuzz::startup_info(data);
});
