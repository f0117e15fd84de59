//! `loadgen criterion`: B1's results (the `codec` criterion bench of `misar-proto`) as JSON
//! lines, so that `loadgen report` shows them beside B2–B6.
//!
//! criterion leaves, for each benchmark, `<dir>/<group>/<function>/new/benchmark.json` (its
//! ids and throughput) and `estimates.json` (its time estimates, ns per iteration). The groups
//! of the codec bench are `encode/<type>` and `decode/<type>`, the functions `misar`, `derive`
//! and `value`.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::BoxError;

/// Arguments of `loadgen criterion`.
#[derive(Debug, clap::Args)]
pub struct CriterionArgs {
    /// criterion's output directory.
    #[arg(long, default_value = "target/criterion")]
    dir: PathBuf,
}

/// Prints one B1 line per benchmark of the codec groups found under `args.dir`.
pub fn run(args: &CriterionArgs) -> Result<(), BoxError> {
    let records = collect(&args.dir)?;
    if records.is_empty() {
        return Err(format!(
            "no encode/* or decode/* benchmark under {}",
            args.dir.display()
        )
        .into());
    }
    for record in records {
        println!("{record}");
    }
    Ok(())
}

/// The B1 records of every codec benchmark under `dir`, sorted by group and function.
fn collect(dir: &Path) -> Result<Vec<Value>, BoxError> {
    let mut records = Vec::new();
    for group in std::fs::read_dir(dir)? {
        let group = group?.path();
        if !group.is_dir() {
            continue;
        }
        for function in std::fs::read_dir(&group)? {
            let new = function?.path().join("new");
            let (Ok(benchmark), Ok(estimates)) = (
                std::fs::read_to_string(new.join("benchmark.json")),
                std::fs::read_to_string(new.join("estimates.json")),
            ) else {
                continue;
            };
            if let Some(record) = record(
                &serde_json::from_str(&benchmark)?,
                &serde_json::from_str(&estimates)?,
            ) {
                records.push(record);
            }
        }
    }
    records.sort_by_key(|r| {
        (
            r["op"].as_str().map(str::to_owned),
            r["event"].as_str().map(str::to_owned),
            r["server"].as_str().map(str::to_owned),
        )
    });
    Ok(records)
}

/// One benchmark as a B1 record: `server` is the implementation (`misar`, `derive`, `value`),
/// `ns` criterion's estimate of the time per event (the slope of its linear sampling, which is
/// the middle figure criterion prints; the mean when there is no slope), `mb_per_s` the
/// encoded bytes per second.
fn record(benchmark: &Value, estimates: &Value) -> Option<Value> {
    let group = benchmark["group_id"].as_str()?;
    let (op, event) = group.split_once('/')?;
    if op != "encode" && op != "decode" {
        return None;
    }
    let function = benchmark["function_id"].as_str()?;
    let ns = estimates["slope"]["point_estimate"]
        .as_f64()
        .or_else(|| estimates["mean"]["point_estimate"].as_f64())?;
    let bytes = benchmark["throughput"]["Bytes"].as_u64();
    let mb_per_s = bytes
        .filter(|_| ns > 0.0)
        .map(|b| (b as f64 / ns * 1e9 / 1e6 * 10.0).round() / 10.0);
    Some(json!({
        "scenario": "B1",
        "op": op,
        "event": event,
        "server": function,
        "ns": (ns * 10.0).round() / 10.0,
        "bytes": bytes,
        "mb_per_s": mb_per_s,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_benchmark_becomes_a_b1_record() {
        let benchmark = json!({"group_id":"encode/progress","function_id":"misar",
            "throughput":{"Bytes":150}});
        let estimates = json!({"mean":{"point_estimate":120.0},"slope":{"point_estimate":100.0}});
        let r = record(&benchmark, &estimates).unwrap();
        assert_eq!(r["op"], "encode");
        assert_eq!(r["event"], "progress");
        assert_eq!(r["server"], "misar");
        assert_eq!(r["ns"], 100.0);
        assert_eq!(r["mb_per_s"], 1500.0);
        let no_slope = json!({"mean":{"point_estimate":120.0},"slope":null});
        assert_eq!(record(&benchmark, &no_slope).unwrap()["ns"], 120.0);
        let other = json!({"group_id":"other","function_id":"x"});
        assert!(record(&other, &estimates).is_none());
    }
}
