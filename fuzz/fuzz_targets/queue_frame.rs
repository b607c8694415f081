//! Fuzz target `queue_frame`: see `shipper_fuzz::queue_frame` (fuzz/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = shipper_fuzz::queue_frame(data);
});
