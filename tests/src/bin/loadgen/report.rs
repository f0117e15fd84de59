//! `loadgen report`: the JSON lines of a run as one table per scenario, each with the ratio of
//! every server to the reference server (the first in the file unless `--reference` says).

use std::path::PathBuf;

use serde_json::Value;

use crate::BoxError;

/// Arguments of `loadgen report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// File of JSON lines written by `idle`, `fanout` and `upgrades`.
    file: PathBuf,
    /// The server the ratios compare against (default: the first one in the file).
    #[arg(long)]
    reference: Option<String>,
}

/// A computed column of B5: its deliveries per second over the same server's B3 with as many
/// subscribers (the goal: the others' throughput stays within 10 % of B3).
const VS_B3: &str = "@vs_b3";

/// A computed column of B5: its peak RSS minus that of the same server's B3 with as many
/// subscribers, in KiB (what the slow consumer cost, to compare with the server's cap).
const RSS_OVER_B3: &str = "@rss_over_b3";

/// How a scenario is shown.
struct Spec {
    scenario: &'static str,
    title: &'static str,
    /// The metric the goal is about, and whether more of it is better.
    headline: &'static str,
    higher_is_better: bool,
    columns: &'static [(&'static str, &'static str)],
}

const SPECS: &[Spec] = &[
    Spec {
        scenario: "B2",
        title: "B2 idle memory",
        headline: "rss_per_conn_bytes",
        higher_is_better: false,
        columns: &[
            ("bytes/conn", "rss_per_conn_bytes"),
            ("conns ok", "conns_ok"),
            ("failed", "conns_failed"),
            ("pinged", "pinged"),
            ("RSS before KiB", "rss_before_kib"),
            ("RSS after KiB", "rss_after_kib"),
            ("connects/s", "connects_per_sec"),
        ],
    },
    Spec {
        scenario: "B3",
        title: "B3 fan-out",
        headline: "deliveries_per_sec",
        higher_is_better: true,
        columns: &[
            ("deliveries/s", "deliveries_per_sec"),
            ("p50 us", "p50_us"),
            ("p99 us", "p99_us"),
            ("burst p50 us", "burst_p50_us"),
            ("burst p99 us", "burst_p99_us"),
            ("missing", "missing"),
            ("out of order", "out_of_order"),
            ("server CPU %", "server_cpu_pct"),
            ("core busy %", "server_core_busy_pct"),
            ("loadgen CPU %", "loadgen_cpu_pct"),
        ],
    },
    Spec {
        scenario: "B4",
        title: "B4 heartbeat",
        headline: "server_cpu_pct",
        higher_is_better: false,
        columns: &[
            ("server CPU %", "server_cpu_pct"),
            ("core busy %", "server_core_busy_pct"),
            ("pings/conn/s", "pings_per_conn_per_sec"),
            ("open at end", "open_at_end"),
            ("window s", "window_secs"),
        ],
    },
    Spec {
        scenario: "B5",
        title: "B5 slow consumer",
        headline: "deliveries_per_sec",
        higher_is_better: true,
        columns: &[
            ("deliveries/s", "deliveries_per_sec"),
            ("vs B3", VS_B3),
            ("burst p99 us", "burst_p99_us"),
            ("missing", "missing"),
            ("slow frames", "slow_frames"),
            ("of", "slow_expected"),
            ("slow end", "slow_end"),
            ("RSS peak KiB", "rss_peak_kib"),
            ("over B3 KiB", RSS_OVER_B3),
        ],
    },
    Spec {
        scenario: "B6",
        title: "B6 upgrades",
        headline: "upgrades_per_sec",
        higher_is_better: true,
        columns: &[
            ("upgrades/s", "upgrades_per_sec"),
            ("failed", "failed"),
            ("server CPU %", "server_cpu_pct"),
            ("core busy %", "server_core_busy_pct"),
            ("loadgen CPU %", "loadgen_cpu_pct"),
        ],
    },
];

/// B7 (in-process, `target/release/b7`): one table per size and rates, ratios against
/// its own reference row (`misar`, else the first row), whatever the servers of the other
/// scenarios are called.
const B7: Spec = Spec {
    scenario: "B7",
    title: "B7 many streams",
    headline: "inbox_events_per_sec",
    higher_is_better: true,
    columns: &[
        ("inbox ev/s", "inbox_events_per_sec"),
        ("p50 us", "inbox_p50_us"),
        ("p99 us", "inbox_p99_us"),
        ("p99.9 us", "inbox_p999_us"),
        ("call p99 us", "inbox_publish_call_p99_us"),
        ("missing", "inbox_missing"),
        ("campaign ev/s", "campaign_events_per_sec"),
        ("deliveries/s", "campaign_deliveries_per_sec"),
        ("camp. p50 us", "campaign_p50_us"),
        ("camp. p99 us", "campaign_p99_us"),
        ("CPU %", "cpu_pct"),
        ("B/conn", "rss_per_conn_bytes"),
        ("RSS peak KiB", "rss_peak_kib"),
    ],
};

/// Runs `loadgen report`.
pub fn run(args: &ReportArgs) -> Result<(), BoxError> {
    let text = std::fs::read_to_string(&args.file)?;
    let records: Vec<Value> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(Value::is_object)
        .collect();
    print!("{}", render(&records, args.reference.as_deref()));
    Ok(())
}

/// The tables of `records`, one per scenario and size, in the order of `SPECS`.
fn render(records: &[Value], reference: Option<&str>) -> String {
    let reference = reference
        .map(str::to_owned)
        .or_else(|| {
            // B1's "servers" are codec implementations, not servers.
            records
                .iter()
                .find(|r| r["scenario"] != "B1")
                .and_then(|r| r["server"].as_str())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let mut out = b1_tables(records);
    for spec in SPECS {
        let of_scenario: Vec<&Value> = records
            .iter()
            .filter(|r| r["scenario"] == spec.scenario)
            .collect();
        let mut sizes: Vec<u64> = of_scenario
            .iter()
            .filter_map(|r| r["conns"].as_u64())
            .collect();
        sizes.dedup();
        sizes.sort_unstable();
        sizes.dedup();
        for size in sizes {
            let rows: Vec<&Value> = of_scenario
                .iter()
                .copied()
                .filter(|r| r["conns"].as_u64() == Some(size))
                .collect();
            out.push_str(&table(spec, size, "", &rows, records, &reference));
            out.push('\n');
        }
    }
    out.push_str(&b7_tables(records));
    if !reference.is_empty() {
        out.push_str(&format!(
            "ratio: how many times better {reference} is than the row on the first metric \
             (>1: {reference} better)\n"
        ));
    }
    out
}

fn table(
    spec: &Spec,
    size: u64,
    extra: &str,
    rows: &[&Value],
    records: &[Value],
    reference: &str,
) -> String {
    let unit = if spec.scenario == "B6" {
        "at once"
    } else {
        "conns"
    };
    let mut out = format!("{} ({size} {unit}{extra})\n", spec.title);
    let ref_value = rows
        .iter()
        .find(|r| r["server"] == reference)
        .and_then(|r| r[spec.headline].as_f64());
    let mut grid: Vec<Vec<String>> = Vec::new();
    let mut titles = vec!["server".to_owned()];
    titles.extend(spec.columns.iter().map(|(title, _)| (*title).to_owned()));
    titles.push("ratio".to_owned());
    grid.push(titles);
    for row in rows {
        let mut cells = vec![row["server"].as_str().unwrap_or("?").to_owned()];
        cells.extend(spec.columns.iter().map(|(_, key)| match *key {
            VS_B3 => vs_b3(row, records),
            RSS_OVER_B3 => rss_over_b3(row, records),
            key => cell(&row[key]),
        }));
        let ratio = ref_value
            .zip(row[spec.headline].as_f64())
            .and_then(|(r, v)| {
                let (num, den) = if spec.higher_is_better {
                    (r, v)
                } else {
                    (v, r)
                };
                (den > 0.0).then(|| num / den)
            });
        cells.push(ratio.map_or_else(|| "n/a".to_owned(), |x| format!("{x:.2}x")));
        grid.push(cells);
    }
    out.push_str(&layout(&grid));
    out
}

/// B7's tables: one per connection count and pair of rates (inbox, campaign), in the order
/// they first appear.
fn b7_tables(records: &[Value]) -> String {
    let b7: Vec<&Value> = records.iter().filter(|r| r["scenario"] == "B7").collect();
    let key = |r: &Value| {
        (
            r["conns"].as_u64().unwrap_or(0),
            r["inbox_rate"].as_u64().unwrap_or(0),
            r["campaign_rate"].as_u64().unwrap_or(0),
        )
    };
    let mut groups: Vec<(u64, u64, u64)> = Vec::new();
    for r in &b7 {
        if !groups.contains(&key(r)) {
            groups.push(key(r));
        }
    }
    let rate = |what: &str, rate: u64| {
        if rate == 0 {
            format!("{what} in a loop")
        } else {
            format!("{what} {rate} events/s")
        }
    };
    let mut out = String::new();
    for (conns, inbox_rate, campaign_rate) in groups {
        let rows: Vec<&Value> = b7
            .iter()
            .copied()
            .filter(|r| key(r) == (conns, inbox_rate, campaign_rate))
            .collect();
        let reference = rows
            .iter()
            .find(|r| r["server"] == "misar")
            .or_else(|| rows.first())
            .and_then(|r| r["server"].as_str())
            .unwrap_or_default()
            .to_owned();
        let extra = format!(
            ", {}, {}",
            rate("inbox", inbox_rate),
            rate("campaign", campaign_rate)
        );
        out.push_str(&table(&B7, conns, &extra, &rows, records, &reference));
        out.push_str(&format!("  ratio: inbox events/s against {reference}\n\n"));
    }
    out
}

/// B1, one table per direction: a row per event type with each implementation's time per
/// event, ours in MB/s, and our time over the peers' (the goal: at most 1.1 against derive).
fn b1_tables(records: &[Value]) -> String {
    let b1: Vec<&Value> = records.iter().filter(|r| r["scenario"] == "B1").collect();
    let mut out = String::new();
    for op in ["encode", "decode"] {
        let rows: Vec<&&Value> = b1.iter().filter(|r| r["op"] == op).collect();
        let mut events: Vec<&str> = rows.iter().filter_map(|r| r["event"].as_str()).collect();
        events.dedup();
        if events.is_empty() {
            continue;
        }
        let find = |event: &str, server: &str| {
            rows.iter()
                .find(|r| r["event"] == event && r["server"] == server)
                .copied()
                .copied()
        };
        let ns = |event: &str, server: &str| find(event, server).and_then(|r| r["ns"].as_f64());
        let ratio = |a: Option<f64>, b: Option<f64>| {
            a.zip(b)
                .filter(|(_, b)| *b > 0.0)
                .map_or_else(|| "-".to_owned(), |(a, b)| format!("{:.2}", a / b))
        };
        let show = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |x| format!("{x:.1}"));
        let mut grid = vec![
            [
                "event",
                "misar ns",
                "derive ns",
                "value ns",
                "misar MB/s",
                "derive MB/s",
                "misar/derive",
                "misar/value",
            ]
            .map(str::to_owned)
            .to_vec(),
        ];
        let mut sums = [0.0f64; 3];
        for event in &events {
            let times = ["misar", "derive", "value"].map(|server| ns(event, server));
            for (sum, time) in sums.iter_mut().zip(times) {
                *sum += time.unwrap_or(0.0);
            }
            let mb = |server: &str| find(event, server).and_then(|r| r["mb_per_s"].as_f64());
            grid.push(vec![
                (*event).to_owned(),
                show(times[0]),
                show(times[1]),
                show(times[2]),
                show(mb("misar")),
                show(mb("derive")),
                ratio(times[0], times[1]),
                ratio(times[0], times[2]),
            ]);
        }
        grid.push(vec![
            "all ten, summed".to_owned(),
            show(Some(sums[0])),
            show(Some(sums[1])),
            show(Some(sums[2])),
            "-".to_owned(),
            "-".to_owned(),
            ratio(Some(sums[0]), Some(sums[1])),
            ratio(Some(sums[0]), Some(sums[2])),
        ]);
        out.push_str(&format!(
            "B1 codec: {op} (median ns per event; misar/derive is our time over the derive \
             peer's, <1: ours faster)\n"
        ));
        out.push_str(&layout(&grid));
        out.push('\n');
    }
    out
}

/// Aligns a grid of cells: the first column to the left, the others to the right.
fn layout(grid: &[Vec<String>]) -> String {
    let columns = grid.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            grid.iter()
                .filter_map(|r| r.get(c))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in grid {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, &w))| {
                if i == 0 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        out.push_str("  ");
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn vs_b3(row: &Value, records: &[Value]) -> String {
    let b3 = records.iter().find(|r| {
        r["scenario"] == "B3" && r["server"] == row["server"] && r["conns"] == row["conns"]
    });
    b3.and_then(|b3| b3["deliveries_per_sec"].as_f64())
        .zip(row["deliveries_per_sec"].as_f64())
        .filter(|(b3, _)| *b3 > 0.0)
        .map_or_else(|| "-".to_owned(), |(b3, b5)| format!("{:.2}", b5 / b3))
}

fn rss_over_b3(row: &Value, records: &[Value]) -> String {
    let b3 = records.iter().find(|r| {
        r["scenario"] == "B3" && r["server"] == row["server"] && r["conns"] == row["conns"]
    });
    b3.and_then(|b3| b3["rss_peak_kib"].as_i64())
        .zip(row["rss_peak_kib"].as_i64())
        .map_or_else(|| "-".to_owned(), |(b3, b5)| (b5 - b3).to_string())
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ratios_follow_the_direction_of_the_metric() {
        let records = vec![
            json!({"scenario":"B2","server":"ours","conns":100,"rss_per_conn_bytes":4000}),
            json!({"scenario":"B2","server":"peer","conns":100,"rss_per_conn_bytes":60000}),
            json!({"scenario":"B3","server":"ours","conns":100,"deliveries_per_sec":3000000}),
            json!({"scenario":"B3","server":"peer","conns":100,"deliveries_per_sec":1000000}),
            json!({"scenario":"B3","server":"peer","conns":500,"deliveries_per_sec":1000000}),
        ];
        let text = render(&records, None);
        assert!(text.contains("B2 idle memory (100 conns)"), "{text}");
        assert!(
            text.contains("15.00x"),
            "memory: peer uses 15x more\n{text}"
        );
        assert!(
            text.contains("3.00x"),
            "fan-out: ours delivers 3x more\n{text}"
        );
        assert!(text.contains("B3 fan-out (500 conns)"), "{text}");
        assert!(
            text.contains("n/a"),
            "no reference row for 500 conns\n{text}"
        );
        let flipped = render(&records, Some("peer"));
        assert!(flipped.contains("0.07x"), "{flipped}");
    }

    #[test]
    fn b7_has_a_table_per_campaign_rate_against_its_own_reference() {
        let records = vec![
            json!({"scenario":"B3","server":"misar-axum","conns":100,"deliveries_per_sec":3}),
            json!({"scenario":"B7","server":"misar","conns":20000,"inbox_rate":0,"campaign_rate":100,"inbox_events_per_sec":200000.0}),
            json!({"scenario":"B7","server":"naive","conns":20000,"inbox_rate":0,"campaign_rate":100,"inbox_events_per_sec":40000.0}),
            json!({"scenario":"B7","server":"misar","conns":20000,"inbox_rate":0,"campaign_rate":0,"inbox_events_per_sec":3000.0}),
        ];
        let text = render(&records, None);
        assert!(
            text.contains("B7 many streams (20000 conns, inbox in a loop, campaign 100 events/s)"),
            "{text}"
        );
        assert!(
            text.contains("B7 many streams (20000 conns, inbox in a loop, campaign in a loop)"),
            "{text}"
        );
        assert!(
            text.contains("5.00x"),
            "naive gets 5x fewer through\n{text}"
        );
    }

    #[test]
    fn b1_shows_our_time_over_the_peers() {
        let records = vec![
            json!({"scenario":"B1","op":"encode","event":"progress","server":"misar","ns":50.0,"mb_per_s":3000.0}),
            json!({"scenario":"B1","op":"encode","event":"progress","server":"derive","ns":100.0,"mb_per_s":1500.0}),
            json!({"scenario":"B1","op":"encode","event":"progress","server":"value","ns":200.0,"mb_per_s":750.0}),
        ];
        let text = render(&records, None);
        assert!(text.contains("B1 codec: encode"), "{text}");
        assert!(!text.contains("B1 codec: decode"), "{text}");
        let row = text.lines().find(|l| l.contains("progress")).unwrap();
        assert!(row.contains("0.50") && row.contains("0.25"), "{row}");
    }

    #[test]
    fn b5_is_compared_with_b3_of_the_same_server_and_size() {
        let records = vec![
            json!({"scenario":"B3","server":"a","conns":100,"deliveries_per_sec":1000}),
            json!({"scenario":"B3","server":"b","conns":100,"deliveries_per_sec":4000}),
            json!({"scenario":"B5","server":"a","conns":100,"deliveries_per_sec":950}),
        ];
        let text = render(&records, None);
        assert!(text.contains("0.95"), "{text}");
        let with_rss = vec![
            json!({"scenario":"B3","server":"a","conns":100,"deliveries_per_sec":1000,"rss_peak_kib":5000}),
            json!({"scenario":"B5","server":"a","conns":100,"deliveries_per_sec":950,"rss_peak_kib":7048}),
        ];
        let text = render(&with_rss, None);
        assert!(text.contains("2048"), "{text}");
    }
}
