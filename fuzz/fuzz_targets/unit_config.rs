//! Fuzz target `unit_config`: see `shipper_fuzz::unit_config` (fuzz/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = shipper_fuzz::unit_config(data);
});
