//! tokio binding of [`misar_proto`] (arrives with its issue).
#![forbid(unsafe_code)]
