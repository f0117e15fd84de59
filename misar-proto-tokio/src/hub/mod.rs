//! In-process fan-out hub (being written).
