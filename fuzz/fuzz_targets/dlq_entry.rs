//! Fuzz target `dlq_entry`: see `shipper_fuzz::dlq_entry` (fuzz/harness.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = shipper_fuzz::dlq_entry(data);
});
