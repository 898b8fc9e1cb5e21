//! The `scanconform` command line with WIA 2.0 drivers: `run --driver reference-wia2` passes
//! the whole WIA 2.0 catalog, each `mutant2-*` exits 1 failing exactly its own rule, `list`,
//! `drivers` and `explain` know the WIA 2.0 catalogue, `--filter`, JUnit, `--traces`,
//! `--report` and `--pcap` work for WIA 2.0 runs as for WIA 1.0 ones, `record` and `run
//! --replay` keep and play back WIA 2.0 sessions, and options, scenario folders or recordings
//! that cannot apply are refused with one line before any output.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scanconform"))
        .current_dir(repo())
        .args(args)
        .output()
        .expect("scanconform runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "scanconform-cli-wia2-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Every WIA 2.0 scenario id of the catalog (`wia2/<group>/<name>`).
fn catalog_ids() -> BTreeSet<String> {
    let root = repo().join("fixtures/scenarios");
    scanconform::scenario::wia2::discover(&root)
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn reference_wia2_passes_every_wia2_scenario() {
    let o = run(&["run", "--driver", "reference-wia2", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let runs = json_lines(&o);
    let ids: BTreeSet<String> = runs
        .iter()
        .map(|r| r["scenario"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, catalog_ids(), "one run per WIA 2.0 scenario");
    assert_eq!(runs.len(), ids.len());
    for r in &runs {
        assert_eq!(r["verdict"], "pass", "{r}");
        assert_eq!(r["driver"], "reference-wia2");
        assert!(r.get("service").is_none(), "WIA 2.0 has one service: {r}");
        let rules = r["rules"].as_array().unwrap();
        assert!(
            rules.iter().any(|x| x[0] == "WIA2-H14-CANCEL-FASTER")
                && rules.iter().any(|x| x[0] == "USB-CANCEL-SENT"),
            "every WIA 2.0 rule and the shared ones are reported: {r}"
        );
    }
    // The human table ends with the WIA 2.0 summary.
    let o = run(&[
        "run",
        "--driver",
        "reference-wia2",
        "--filter",
        "wia2/skip/*",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("bytes written to streams") && !out.contains("CancelPendingIO"),
        "{out}"
    );
}

#[test]
fn each_wia2_mutant_exits_1_failing_its_own_rule() {
    let list: BTreeMap<String, String> = serde_json::from_str(
        &std::fs::read_to_string(repo().join("fixtures/mutants-wia2.json")).unwrap(),
    )
    .unwrap();
    assert!(list.len() >= 12);
    let mut wrong = Vec::new();
    for (mutant, rule) in &list {
        let o = run(&["run", "--driver", mutant, "--format", "json"]);
        if o.status.code() != Some(1) {
            wrong.push(format!("{mutant}: exit {:?}", o.status.code()));
            continue;
        }
        let failed: BTreeSet<String> = json_lines(&o)
            .iter()
            .flat_map(|r| r["failed"].as_array().unwrap().clone())
            .map(|f| f.as_str().unwrap().to_string())
            .collect();
        if failed != BTreeSet::from([rule.clone()]) {
            wrong.push(format!("{mutant}: expected {rule}, failed {failed:?}"));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    // The human output names the rule, quotes it and shows the trace around it.
    let o = run(&[
        "run",
        "--driver",
        "mutant2-ignore-cancel-io",
        "--filter",
        "wia2/cancel/*",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let rule = scanconform::rules::wia2::find("WIA2-N1-CANCEL-IO").unwrap();
    assert!(
        out.contains("FAIL WIA2-N1-CANCEL-IO") && out.contains(rule.quote),
        "{out}"
    );
    assert!(out.contains("trace around event #"), "{out}");
}

#[test]
fn wia2_runs_write_traces_junit_report_and_pcap() {
    let d = temp_dir("outputs");
    let (traces, xml, html, pcap) = (
        d.join("traces"),
        d.join("junit.xml"),
        d.join("report.html"),
        d.join("pcap"),
    );
    let o = run(&[
        "run",
        "--driver",
        "mutant2-ignore-cancel-io",
        "--filter",
        "wia2/cancel/*",
        "--traces",
        traces.to_str().unwrap(),
        "--junit",
        xml.to_str().unwrap(),
        "--report",
        html.to_str().unwrap(),
        "--pcap",
        pcap.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let runs = json_lines(&o);
    let ids: Vec<&str> = runs
        .iter()
        .map(|r| r["scenario"].as_str().unwrap())
        .collect();
    assert!(ids.len() >= 10, "{ids:?}");
    assert!(
        ids.iter().all(|id| id.starts_with("wia2/cancel/")),
        "{ids:?}"
    );
    // --traces: a trace and a verdict per run, under <driver>/wia2/<group>/.
    for id in &ids {
        let base = traces.join("mutant2-ignore-cancel-io").join(id);
        let trace = base.with_extension("jsonl");
        let verdict = base.with_extension("verdict.json");
        assert!(
            std::fs::metadata(&trace).is_ok_and(|m| m.len() > 0),
            "{}",
            trace.display()
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&verdict).unwrap()).unwrap();
        assert_eq!(v["scenario"], *id);
    }
    // JUnit: one testcase per run, the failing ones naming the rule.
    let report = quick_junit::Report::deserialize_from_str(&std::fs::read_to_string(&xml).unwrap())
        .expect("JUnit XML parses");
    let cases: Vec<_> = report
        .test_suites
        .iter()
        .flat_map(|s| s.test_cases.iter())
        .collect();
    assert_eq!(cases.len(), ids.len());
    let failing: Vec<_> = cases
        .iter()
        .filter(|c| !matches!(c.status, quick_junit::TestCaseStatus::Success { .. }))
        .collect();
    assert!(!failing.is_empty());
    // The report: every run, its timeline with the streams the driver wrote.
    let page = std::fs::read_to_string(&html).unwrap();
    for id in &ids {
        assert!(page.contains(id), "{id} missing in the report");
    }
    assert!(page.contains("bytes written to streams"));
    // --pcap: one usbmon capture per run, named after the scenario.
    for id in &ids {
        let f = pcap.join(scanconform::run::wia2::pcap_file_name(id));
        let bytes = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(bytes.len() > 24 + 64, "{}: no packets", f.display());
        assert_eq!(&bytes[..4], &0xa1b2_c3d4u32.to_le_bytes(), "pcap magic");
    }
    // `report` rebuilds the page from the traces folder; `show` draws a run's timeline with its
    // streams.
    let rebuilt = d.join("rebuilt.html");
    let o = run(&[
        "report",
        "--traces",
        traces.to_str().unwrap(),
        "--out",
        rebuilt.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let svg = d.join("t.svg");
    let one = traces
        .join("mutant2-ignore-cancel-io")
        .join("wia2/cancel/cancel-at-status.jsonl");
    let o = run(&[
        "show",
        one.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(
        picture.contains("stream 1"),
        "the timeline shows the stream"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn wia2_traces_are_byte_identical_across_runs() {
    let (a, b) = (temp_dir("a"), temp_dir("b"));
    for d in [&a, &b] {
        let o = run(&[
            "run",
            "--driver",
            "reference-wia2",
            "--filter",
            "wia2/{device,errors}/*",
            "--traces",
            d.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let mut files = Vec::new();
    collect(&a, &mut files);
    assert!(files.len() >= 20, "only {} files", files.len());
    for f in files {
        let rel = f.strip_prefix(&a).unwrap();
        assert_eq!(
            std::fs::read(&f).unwrap(),
            std::fs::read(b.join(rel)).unwrap(),
            "{} differs between runs",
            rel.display()
        );
    }
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn list_drivers_and_explain_know_the_wia2_catalogue() {
    let o = run(&["list"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let listed: BTreeSet<String> = out
        .lines()
        .filter(|l| l.contains(" [wia2] "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(listed, catalog_ids());
    let wia1 = scanconform::scenario::discover(&repo().join("fixtures/scenarios"))
        .unwrap()
        .len();
    assert_eq!(
        out.lines().last(),
        Some(format!("{} scenarios", wia1 + listed.len()).as_str())
    );
    let o = run(&["list", "--scenarios", "fixtures/scenarios/wia2/skip"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out
        .lines()
        .filter(|l| !l.ends_with(" scenarios"))
        .all(|l| l.starts_with("wia2/skip/") && l.contains(" [wia2] ")));

    let o = run(&["drivers", "--format", "json"]);
    assert!(o.status.success());
    let drivers: BTreeMap<String, serde_json::Value> = json_lines(&o)
        .into_iter()
        .map(|v| (v["name"].as_str().unwrap().to_string(), v))
        .collect();
    assert_eq!(drivers["reference-wia2"]["kind"], "builtin-wia2");
    assert!(drivers["reference-wia2"]["breaks"].is_null());
    let list: BTreeMap<String, String> = serde_json::from_str(
        &std::fs::read_to_string(repo().join("fixtures/mutants-wia2.json")).unwrap(),
    )
    .unwrap();
    for (mutant, rule) in &list {
        assert_eq!(drivers[mutant]["breaks"], *rule, "{mutant}");
    }

    for rule in scanconform::rules::wia2::catalog() {
        let o = run(&["explain", rule.id]);
        assert!(o.status.success(), "{}", rule.id);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains(rule.quote) && out.contains(rule.source),
            "{}",
            rule.id
        );
    }
    let o = run(&["explain", "--list"]);
    let out = String::from_utf8_lossy(&o.stdout);
    for rule in scanconform::rules::wia2::catalog() {
        assert!(
            out.lines()
                .any(|l| l.split_whitespace().next() == Some(rule.id)),
            "{} not listed",
            rule.id
        );
    }
    let o = run(&["explain", "NO-SUCH-RULE"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("WIA2-H14-CANCEL-FASTER"));
}

/// Runs `args`, expecting exit 2, one line on stderr containing every needle, nothing on
/// stdout.
fn refused(args: &[&str], needles: &[&str]) {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
    assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {n:?} missing in {err}");
    }
    assert!(o.stdout.is_empty(), "{args:?}: printed {}", text(&o));
}

#[test]
fn what_cannot_apply_to_a_wia2_driver_is_refused_with_one_line() {
    refused(
        &["run", "--driver", "reference-wia2", "--service", "xp"],
        &["--service", "reference-wia2", "one service"],
    );
    // A recording of the other driver model, either way: one line naming both models.
    refused(
        &[
            "run",
            "--driver",
            "reference-wia2",
            "--replay",
            "fixtures/recordings/complete-gray8-inproc",
        ],
        &[
            "complete-gray8-inproc",
            "WIA 1.0 recording",
            "reference-wia2",
            "WIA 2.0 driver",
        ],
    );
    refused(
        &[
            "run",
            "--replay",
            "fixtures/recordings/wia2-flatbed-gray8-inproc",
            "--scenarios",
            "fixtures/recordings/scenarios/replay/complete-gray8.json",
        ],
        &[
            "wia2-flatbed-gray8-inproc",
            "WIA 2.0 recording",
            "reference, a WIA 1.0 driver",
        ],
    );
    refused(
        &[
            "run",
            "--driver",
            "reference-wia2",
            "--scenarios",
            "fixtures/scenarios/callback",
        ],
        &["fixtures/scenarios/callback", "not WIA 2.0 scenarios"],
    );
    refused(
        &["run", "--scenarios", "fixtures/scenarios/wia2"],
        &["fixtures/scenarios/wia2", "WIA 2.0 driver"],
    );
    refused(
        &[
            "run",
            "--driver",
            "reference-wia2",
            "--filter",
            "callback/*",
        ],
        &["--filter", "matches no scenario"],
    );
    // record: a scenario of the other model, a service model WIA 2.0 does not have.
    refused(
        &[
            "record",
            "--driver",
            "reference-wia2",
            "--scenario",
            "fixtures/scenarios/callback/s-false-first-band.json",
            "--out",
            "target/never-written",
        ],
        &["s-false-first-band.json", "not a WIA 2.0 scenario"],
    );
    refused(
        &[
            "record",
            "--scenario",
            "fixtures/scenarios/wia2/cancel/cancel-at-status.json",
            "--out",
            "target/never-written",
        ],
        &["cancel-at-status.json", "record it with a WIA 2.0 driver"],
    );
    refused(
        &[
            "record",
            "--driver",
            "reference-wia2",
            "--service",
            "vista",
            "--scenario",
            "fixtures/scenarios/wia2/cancel/cancel-at-status.json",
            "--out",
            "target/never-written",
        ],
        &["--service vista", "reference-wia2", "one service"],
    );
    assert!(!repo().join("target/never-written").exists());
    // A malformed WIA 2.0 scenario: one line naming the file, line and column.
    let d = temp_dir("bad");
    let group = d.join("scenarios").join("wia2").join("g");
    std::fs::create_dir_all(&group).unwrap();
    let good = std::fs::read_to_string(
        repo().join("fixtures/scenarios/wia2/cancel/cancel-at-status.json"),
    )
    .unwrap();
    let bad = good.replacen("\"rules\": [", "\"colour\": 3,\n  \"rules\": [", 1);
    assert_ne!(bad, good);
    std::fs::write(group.join("bad.json"), bad).unwrap();
    let o = run(&[
        "run",
        "--driver",
        "reference-wia2",
        "--scenarios",
        group.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("bad.json:") && err.contains("colour"), "{err}");
    assert!(o.stdout.is_empty());
    let _ = std::fs::remove_dir_all(&d);
}

/// `record` keeps a WIA 2.0 session, whose provenance names its model; `run --replay` plays
/// it back to the driver that made it (and to the Python port of it, whose USB session is the
/// same), and a mutant that departs from it is told where.
#[test]
fn a_wia2_session_records_and_replays() {
    let d = temp_dir("record");
    let out = d.join("rec");
    let scenario = "fixtures/scenarios/wia2/cancel/cancel-while-reading.json";
    let o = run(&[
        "record",
        "--driver",
        "reference-wia2",
        "--scenario",
        scenario,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("recorded wia2/cancel/cancel-while-reading [wia2] with reference-wia2"),
        "{}",
        text(&o)
    );
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("recording.json")).unwrap())
            .unwrap();
    assert_eq!(meta["provenance"]["model"], "wia2", "{meta}");
    assert_eq!(meta["provenance"]["driver"], "reference-wia2", "{meta}");
    for f in [
        "transactions.jsonl",
        "capture.pcap",
        "trace.jsonl",
        "trace.txt",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // An external driver of the wia2 contract records too: the Python port's session is the
    // in-process driver's, transfer for transfer.
    let port = "exec:python3 -S conformance/examples/reference_wia2_driver.py";
    let out2 = d.join("rec-port");
    let o = run(&[
        "record",
        "--driver",
        port,
        "--scenario",
        scenario,
        "--out",
        out2.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for f in ["transactions.jsonl", "capture.pcap", "trace.jsonl"] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(out2.join(f)).unwrap(),
            "{f}"
        );
    }
    for driver in ["reference-wia2", port] {
        let o = run(&[
            "run",
            "--driver",
            driver,
            "--scenarios",
            scenario,
            "--replay",
            out.to_str().unwrap(),
            "--strict",
        ]);
        assert_eq!(o.status.code(), Some(0), "{driver}: {}", text(&o));
        assert!(text(&o).contains("1 passed, 0 failed"), "{}", text(&o));
    }
    let o = run(&[
        "run",
        "--driver",
        "mutant2-drain-on-cancel",
        "--scenarios",
        scenario,
        "--replay",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("first divergence at transaction #"),
        "{}",
        text(&o)
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn wia2_runs_over_usbip_in_real_time() {
    let o = run(&[
        "run",
        "--driver",
        "reference-wia2",
        "--transport",
        "usbip",
        "--filter",
        "wia2/{cancel,idle}/*",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let runs = json_lines(&o);
    assert!(runs.len() >= 10, "{}", text(&o));
    assert!(runs.iter().all(|r| r["verdict"] == "pass"));
    assert!(
        runs.iter().any(|r| r["metrics"]["host_lag_us"].is_u64()),
        "real-time runs measure host lag"
    );
    let o = run(&[
        "run",
        "--driver",
        "mutant2-ignore-cancel-io",
        "--transport",
        "usbip",
        "--filter",
        "wia2/cancel/*",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let failed: BTreeSet<String> = json_lines(&o)
        .iter()
        .flat_map(|r| r["failed"].as_array().unwrap().clone())
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert_eq!(failed, BTreeSet::from(["WIA2-N1-CANCEL-IO".to_string()]));
}

#[test]
fn wia2_output_is_the_same_whatever_the_jobs() {
    let mut outputs = Vec::new();
    for jobs in ["1", "3"] {
        let d = temp_dir(&format!("jobs{jobs}"));
        let o = run(&[
            "run",
            "--driver",
            "mutant2-rewrite-error",
            "--jobs",
            jobs,
            "--traces",
            d.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let mut files = Vec::new();
        collect(&d, &mut files);
        files.sort();
        let traces: Vec<(PathBuf, Vec<u8>)> = files
            .iter()
            .map(|f| {
                (
                    f.strip_prefix(&d).unwrap().to_path_buf(),
                    std::fs::read(f).unwrap(),
                )
            })
            .collect();
        assert!(traces.len() >= 2 * catalog_ids().len());
        outputs.push((o.stdout, traces));
        let _ = std::fs::remove_dir_all(&d);
    }
    assert!(outputs[0] == outputs[1], "--jobs 1 and --jobs 3 differ");
}

#[test]
fn exec_drivers_run_the_wia2_catalog_when_given_wia2_scenarios() {
    let port = "exec:python3 -S conformance/examples/reference_wia2_driver.py";
    let o = run(&[
        "run",
        "--driver",
        port,
        "--scenarios",
        "fixtures/scenarios/wia2/cancel",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let runs = json_lines(&o);
    assert!(runs.len() >= 10);
    assert!(runs
        .iter()
        .all(|r| r["verdict"] == "pass" && r["scenario"].as_str().unwrap().starts_with("wia2/")));
    // Each contract with the other catalogue: a driver-fault at the handshake saying so.
    for (driver, scenarios, needle) in [
        (
            port,
            "fixtures/scenarios/callback",
            "this run needs a wia driver",
        ),
        (
            "exec:python3 -S conformance/examples/reference_driver.py",
            "fixtures/scenarios/wia2/idle",
            "this run needs a wia2 driver",
        ),
    ] {
        let o = run(&["run", "--driver", driver, "--scenarios", scenarios]);
        assert_eq!(o.status.code(), Some(1), "{driver}: {}", text(&o));
        assert!(text(&o).contains(needle), "{driver}: {}", text(&o));
    }
}
