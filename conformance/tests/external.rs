//! The external driver protocol (`exec:` drivers, `conformance/DRIVER-PROTOCOL.md`).
//!
//! - The Python ports of `reference` and `legacy-xp` (`conformance/examples/`) give the same
//!   verdicts and the same traces as the in-process drivers on every scenario and service; the
//!   only difference allowed is `log` events (the driver's stderr), of which they write none.
//! - Two runs of the external reference give byte-identical traces.
//! - Each hostile behaviour (`tests/hostile/driver.py MODE`) ends in a failed verdict with a
//!   `driver-fault` saying what happened, and leaves no process behind.
//!
//! Drivers run as `python3 -S` here: the same programs, without site-packages start-up time.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use scanconform::drivers::external::{ExternalConfig, ExternalDriver};
use scanconform::run::{self, RunResult};
use scanconform::scenario::{self, LoadedScenario, ServiceModel};
use scanconform::trace::{Kind, Trace};
use scanconform::{drivers, rules};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn fixtures() -> PathBuf {
    root().join("../fixtures")
}

fn catalog() -> Vec<LoadedScenario> {
    let dir = fixtures().join("scenarios");
    let mut files = Vec::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                // sane/ holds SANE-backend scenarios and wia2/ WIA 2.0 ones, not WIA 1.0
                // driver scenarios.
                if p.file_name().is_some_and(|n| n != "sane" && n != "wia2") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|e| e == "json") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
        .iter()
        .map(|p| {
            let s = scenario::load(p, &dir).unwrap();
            s.validate(|id| rules::find(id).is_some()).unwrap();
            s
        })
        .collect()
}

fn python(script: &str, args: &str) -> String {
    format!(
        "python3 -S '{}' {args}",
        root()
            .join(script)
            .display()
            .to_string()
            .replace('\'', "'\\''")
    )
}

fn external(command: &str, config: ExternalConfig) -> Rc<ExternalDriver> {
    Rc::new(ExternalDriver::new(command, config).unwrap())
}

fn run(
    s: &LoadedScenario,
    service: ServiceModel,
    name: &str,
    d: Rc<dyn scanconform::driver::MiniDriver>,
) -> RunResult {
    run::run(s, service, name, d, &fixtures().join("profiles")).unwrap()
}

/// The trace as text without `log` events (the one documented difference).
fn render_without_logs(t: &Trace) -> String {
    Trace {
        events: t
            .events
            .iter()
            .filter(|e| !matches!(e.kind, Kind::Log { .. }))
            .cloned()
            .collect(),
    }
    .render_text()
}

fn failed_rules(r: &RunResult) -> Vec<String> {
    r.report.failed().iter().map(|f| f.id.to_string()).collect()
}

/// Runs the whole catalog on the in-process driver and on its external port; returns the
/// differences, one line each.
fn compare_catalog(builtin: &str, port: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut runs = 0;
    for s in catalog() {
        for &service in &s.scenario.services {
            let native = run(&s, service, builtin, drivers::instantiate(builtin).unwrap());
            let ext = run(
                &s,
                service,
                builtin,
                external(&python(port, ""), ExternalConfig::default()),
            );
            runs += 1;
            let id = format!("{} [{}]", s.id, service.name());
            if native.passed() != ext.passed() || failed_rules(&native) != failed_rules(&ext) {
                problems.push(format!(
                    "{id}: verdict differs: in-process {:?}, external {:?}",
                    failed_rules(&native),
                    failed_rules(&ext)
                ));
            }
            if native.async_cancel != ext.async_cancel {
                problems.push(format!("{id}: async_cancel differs"));
            }
            let (a, b) = (
                render_without_logs(&native.trace),
                render_without_logs(&ext.trace),
            );
            if a != b {
                let first = a
                    .lines()
                    .zip(b.lines())
                    .find(|(x, y)| x != y)
                    .map(|(x, y)| format!("\n  in-process: {x}\n  external:   {y}"))
                    .unwrap_or_else(|| " (one trace is a prefix of the other)".into());
                problems.push(format!("{id}: trace differs{first}"));
            }
        }
    }
    assert!(runs > 100, "the catalog has only {runs} runs");
    problems
}

#[test]
fn python_reference_matches_the_in_process_reference_on_every_scenario() {
    let problems = compare_catalog("reference", "examples/reference_driver.py");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn python_legacy_xp_matches_the_in_process_legacy_xp_on_every_scenario() {
    let problems = compare_catalog("legacy-xp", "examples/legacy_xp_driver.py");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn two_runs_of_the_external_reference_give_byte_identical_traces() {
    let cmd = python("examples/reference_driver.py", "");
    let scenarios: Vec<LoadedScenario> = catalog()
        .into_iter()
        .filter(|s| s.id.starts_with("cancel-io/") || s.id.starts_with("faults/"))
        .collect();
    assert!(!scenarios.is_empty());
    for s in &scenarios {
        for &service in &s.scenario.services {
            let a = run(s, service, "ext", external(&cmd, ExternalConfig::default()));
            let b = run(s, service, "ext", external(&cmd, ExternalConfig::default()));
            assert_eq!(
                a.trace.to_json_lines(),
                b.trace.to_json_lines(),
                "{} [{}]",
                s.id,
                service.name()
            );
        }
    }
}

/// True if `pid` is a process (running or zombie) whose parent is this test process.
fn is_our_child(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The command name may hold spaces; the fields after its closing parenthesis are fixed.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ppid: u32 = rest
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    ppid == std::process::id()
}

/// Runs one scenario against `driver.py MODE`; returns the driver fault texts.
fn hostile(mode: &str) -> Vec<String> {
    let s = catalog()
        .into_iter()
        .find(|s| s.id == "complete/gray8")
        .expect("complete/gray8 in the catalog");
    let config = ExternalConfig::default().with_reply_timeout(Duration::from_millis(1500));
    let d = external(&python("tests/hostile/driver.py", mode), config);
    let wall = std::time::Instant::now();
    let r = run(&s, ServiceModel::Xp, "hostile", d.clone());
    assert!(
        wall.elapsed() < Duration::from_secs(20),
        "{mode}: the run took {:?}",
        wall.elapsed()
    );
    assert!(!r.passed(), "{mode}: a hostile driver passed");
    assert!(
        failed_rules(&r)
            .iter()
            .any(|f| f.contains("WIA-FAULT-NO-HANG")),
        "{mode}: WIA-FAULT-NO-HANG did not fail: {:?}",
        failed_rules(&r)
    );
    let pids = d.pids();
    assert_eq!(pids.len(), 1, "{mode}: one process per run");
    for pid in pids {
        assert!(
            !is_our_child(pid),
            "{mode}: process {pid} left running or unreaped"
        );
    }
    r.trace
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            Kind::DriverFault { what } => Some(what.clone()),
            _ => None,
        })
        .collect()
}

fn assert_fault(mode: &str, needle: &str) {
    let faults = hostile(mode);
    assert!(
        faults.iter().any(|f| f.contains(needle)),
        "{mode}: no driver fault mentions {needle:?}: {faults:?}"
    );
}

#[test]
fn a_driver_that_exits_mid_transfer_fails_and_is_reaped() {
    assert_fault("exit-mid-transfer", "exited with status 3");
}

#[test]
fn a_driver_that_stops_answering_hits_the_wall_clock_guard() {
    assert_fault("stop-answering", "did not answer acquire within 1500 ms");
}

#[test]
fn a_driver_that_sleeps_forever_hits_the_scenario_budget() {
    assert_fault("sleep-forever", "budget");
}

#[test]
fn a_driver_that_writes_garbage_fails() {
    assert_fault("garbage", "not a valid message");
}

#[test]
fn a_100_mb_line_is_refused_without_reading_it_whole() {
    assert_fault("huge-line", "a line longer than");
}

#[test]
fn an_unknown_message_type_fails() {
    assert_fault("unknown-type", "unknown variant `callback_result`");
}

#[test]
fn a_message_out_of_turn_fails() {
    assert_fault("out-of-turn", "notify_done out of turn");
}

#[test]
fn a_driver_that_closes_stdout_but_keeps_running_fails() {
    assert_fault("close-stdout", "closed its stdout but kept running");
}

#[test]
fn a_driver_of_another_protocol_version_fails_at_the_handshake() {
    assert_fault("bad-hello", "protocol version 99");
}

#[test]
fn stderr_becomes_log_events_at_the_end_of_the_run() {
    let s = catalog()
        .into_iter()
        .find(|s| s.id == "complete/gray8")
        .unwrap();
    let config = ExternalConfig::default().with_reply_timeout(Duration::from_millis(1500));
    let d = external(&python("tests/hostile/driver.py", "garbage"), config);
    let r = run(&s, ServiceModel::Xp, "hostile", d);
    let last_at = r.trace.events.last().map(|e| e.at_us).unwrap();
    let logs: Vec<(u64, String)> = r
        .trace
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            Kind::Log { text } => Some((e.at_us, text.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        logs,
        vec![(last_at, "hostile driver, mode garbage".to_string())]
    );
}

#[test]
fn exec_drivers_are_built_by_name_and_bad_commands_are_refused() {
    assert!(drivers::instantiate("exec:python3 -S examples/reference_driver.py").is_ok());
    let err = drivers::instantiate("exec:no-such-driver-program --x")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not found"), "{err}");
    assert!(drivers::instantiate("exec:").is_err());
}
