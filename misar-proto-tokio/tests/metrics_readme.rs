//! README.md's metrics table lists exactly the families `misar_proto_tokio::metrics::names`
//! defines (the demo's `/metrics` is checked against the same table by
//! `tests/interop/check_metrics.py`).

use std::collections::BTreeSet;

fn defined() -> BTreeSet<String> {
    include_str!("../src/metrics.rs")
        .lines()
        .filter(|line| line.trim_start().starts_with("pub const"))
        .filter_map(|line| line.split('"').nth(1))
        .filter(|name| name.starts_with("misar_"))
        .map(str::to_owned)
        .collect()
}

fn documented() -> BTreeSet<String> {
    include_str!("../../README.md")
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .filter(|name| name.starts_with("misar_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_readme_table_lists_every_metric_and_no_other() {
    let defined = defined();
    assert!(defined.len() >= 16, "{defined:?}");
    assert_eq!(documented(), defined);
}
