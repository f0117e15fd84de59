//! Reconnecting client (being written).
