#![no_main]
//! See `misar_proto_fuzz::event_decode` for the input format and the invariants checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| misar_proto_fuzz::event_decode::run(data));
