//! End-to-end conformance suite: see `tests/`.
#![forbid(unsafe_code)]

pub mod bench;
