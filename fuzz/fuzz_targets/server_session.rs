#![no_main]
//! See `misar_proto_fuzz::server_session` for the input format and the invariants checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| misar_proto_fuzz::server_session::run(data));
