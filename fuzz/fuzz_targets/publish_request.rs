//! Fuzz target `publish_request`: see `shipper_fuzz::publish_request` (fuzz/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = shipper_fuzz::publish_request(data);
});
