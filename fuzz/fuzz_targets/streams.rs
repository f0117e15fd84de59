#![no_main]
//! See `misar_proto_fuzz::streams` for the input format and the invariants checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| misar_proto_fuzz::streams::run(data));
