//! Fuzz target `dlq_segment`: see `shipper_fuzz::dlq_segment` (fuzz/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = shipper_fuzz::dlq_segment(data);
});
