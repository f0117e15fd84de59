#![no_main]
//! See `misar_proto_fuzz::client_session` for the input format and the invariants checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| misar_proto_fuzz::client_session::run(data));
