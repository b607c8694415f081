//! Fuzz target `event_check`: see `shipper_fuzz::event_check` (fuzz/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = shipper_fuzz::event_check(data);
});
