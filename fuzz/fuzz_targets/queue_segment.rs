//! Fuzz target `queue_segment`: see `shipper_fuzz::queue_segment` (fuzz/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = shipper_fuzz::queue_segment(data);
});
