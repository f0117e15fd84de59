//! Async server connection driver (being written).
