//! `celerity bench --quick`: a smoke run that checks the bench runs and reports every figure. It
//! asserts no timing: figures are read by people, from full runs of a release build.

use std::process::Command;

/// The ids a full report carries, in order.
const IDS: [&str; 9] = [
    "publish",
    "e2e_results",
    "e2e_ignore_result",
    "chain_step_p50",
    "chain_step_p99",
    "chord_10k",
    "priority_start",
    "worker_rss_idle",
    "worker_rss_peak",
];

#[test]
fn a_quick_run_reports_every_figure_as_a_table_and_as_json() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let json = dir.path().join("bench.json");
    let output = Command::new(env!("CARGO_BIN_EXE_celerity"))
        .args(["bench", "--quick", "--breakdown", "--json"])
        .arg(&json)
        .output()
        .expect("celerity runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("chain step latency, p50"), "{stdout}");

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON file")).expect("JSON");
    assert!(report["versions"]["nats_server"].is_string(), "{report}");
    assert!(report["versions"]["celerity"].is_string(), "{report}");
    assert!(
        report["machine"]["cores"]
            .as_u64()
            .is_some_and(|cores| cores >= 1),
        "{report}"
    );
    let figures = report["figures"].as_array().expect("a list of figures");
    let ids: Vec<&str> = figures
        .iter()
        .map(|figure| figure["id"].as_str().expect("an id"))
        .collect();
    assert_eq!(ids, IDS, "{report}");
    for figure in figures {
        let celerity = figure["celerity"].as_f64().expect("a measured value");
        assert!(celerity > 0.0, "{figure}");
        assert!(figure["unit"].is_string(), "{figure}");
        let has_raw = !matches!(
            figure["id"].as_str(),
            Some("priority_start" | "worker_rss_idle" | "worker_rss_peak")
        );
        if has_raw {
            assert!(
                figure["raw"].as_f64().is_some_and(|raw| raw > 0.0),
                "{figure}"
            );
            let ratio = figure["ratio"].as_f64().expect("a ratio");
            let expected = celerity / figure["raw"].as_f64().expect("raw");
            assert!((ratio - expected).abs() < 1e-9, "{figure}");
        }
    }

    // Both sides of each throughput figure, split by process; the bench started the server, so
    // every process was read.
    assert!(stdout.contains("CPU per task, microseconds"), "{stdout}");
    let splits = report["cpu_per_task"].as_array().expect("a CPU split");
    let sides: Vec<(&str, &str)> = splits
        .iter()
        .map(|split| {
            (
                split["figure"].as_str().expect("a figure"),
                split["side"].as_str().expect("a side"),
            )
        })
        .collect();
    let figures = ["publish", "e2e_results", "e2e_ignore_result"];
    let expected: Vec<(&str, &str)> = figures
        .iter()
        .flat_map(|figure| [(*figure, "raw"), (*figure, "celerity")])
        .collect();
    assert_eq!(sides, expected, "{report}");
    for split in splits {
        let part = |name: &str| split[name].as_f64().expect("a figure per process");
        let sum = part("server_us") + part("bench_us") + part("worker_us");
        assert!((part("total_us") - sum).abs() < 1e-9, "{split}");
    }
    let worker_us = |figure: &str| {
        splits
            .iter()
            .find(|split| split["figure"] == figure && split["side"] == "celerity")
            .and_then(|split| split["worker_us"].as_f64())
            .expect("the worker's share")
    };
    let costs = report["publish_costs"]
        .as_array()
        .expect("the publish breakdown");
    assert_eq!(costs.len(), 5, "{report}");
    for cost in costs {
        assert!(
            cost["rate"].as_f64().is_some_and(|rate| rate > 0.0),
            "{cost}"
        );
        assert!(cost["server_us"].is_f64(), "{cost}");
        assert!(cost["bench_us"].is_f64(), "{cost}");
    }
    // CPU time is counted in 10 ms ticks: the two figures together are many ticks of work.
    assert!(
        worker_us("e2e_results") + worker_us("e2e_ignore_result") > 0.0,
        "{report}"
    );
}

#[test]
fn bad_sizes_are_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_celerity"))
        .args(["bench", "--quick", "--tasks", "0"])
        .output()
        .expect("celerity runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--tasks"), "{stderr}");
}
