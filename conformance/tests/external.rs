//! The external driver protocol (`exec:` drivers, `conformance/DRIVER-PROTOCOL.md`).
//!
//! - The Python ports of `reference` and `legacy-xp` (`conformance/examples/`) give the same
//!   verdicts and the same traces as the in-process drivers on every scenario and service; the
//!   only difference allowed is `log` events (the driver's stderr), of which they write none.
//! - Two runs of the external reference give byte-identical traces.
//! - The protocol version 2 example with read-ahead (`examples/readahead_driver.py`) gives the
//!   reference's verdicts on every scenario and service, really keeps several reads in flight,
//!   and two runs of it give byte-identical traces.
//! - Each hostile behaviour (`tests/hostile/driver.py MODE`) ends in a failed verdict with a
//!   `driver-fault` saying what happened, and leaves no process behind; the version 2 ones
//!   (a malformed or out-of-turn `submit`, `cancel` or `wait`) each name the message and why.
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
fn python_readahead_driver_gives_the_reference_verdicts_on_every_scenario() {
    let cmd = python("examples/readahead_driver.py", "");
    let mut problems = Vec::new();
    let (mut runs, mut read_ahead) = (0, 0);
    for s in catalog() {
        for &service in &s.scenario.services {
            let reference = run(
                &s,
                service,
                "reference",
                drivers::instantiate("reference").unwrap(),
            );
            let ext = run(
                &s,
                service,
                "readahead",
                external(&cmd, ExternalConfig::default()),
            );
            runs += 1;
            if failed_rules(&reference) != failed_rules(&ext) || !ext.async_cancel {
                problems.push(format!(
                    "{} [{}]: verdict differs: reference {:?}, readahead {:?}",
                    s.id,
                    service.name(),
                    failed_rules(&reference),
                    failed_rules(&ext)
                ));
            }
            // Reads still queued when the driver stops end cancelled, several at one instant.
            let cancelled: Vec<u64> = ext
                .trace
                .events
                .iter()
                .filter(|e| {
                    matches!(
                        e.kind,
                        Kind::Bulk {
                            result: scanconform::trace::TransferOutcome::Cancelled,
                            ..
                        }
                    )
                })
                .map(|e| e.at_us)
                .collect();
            if cancelled.windows(2).any(|w| w[0] == w[1]) {
                read_ahead += 1;
            }
        }
    }
    assert!(runs > 100, "the catalog has only {runs} runs");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        read_ahead >= 10,
        "only {read_ahead} runs show two or more reads in flight when the driver stopped"
    );
}

#[test]
fn two_runs_of_the_external_drivers_give_byte_identical_traces() {
    let scenarios: Vec<LoadedScenario> = catalog()
        .into_iter()
        .filter(|s| s.id.starts_with("cancel-io/") || s.id.starts_with("faults/"))
        .collect();
    assert!(!scenarios.is_empty());
    for script in [
        "examples/reference_driver.py",
        "examples/readahead_driver.py",
    ] {
        let cmd = python(script, "");
        assert_identical_reruns(&cmd, &scenarios);
    }
}

fn assert_identical_reruns(cmd: &str, scenarios: &[LoadedScenario]) {
    for s in scenarios {
        for &service in &s.scenario.services {
            let a = run(s, service, "ext", external(cmd, ExternalConfig::default()));
            let b = run(s, service, "ext", external(cmd, ExternalConfig::default()));
            assert_eq!(
                a.trace.to_json_lines(),
                b.trace.to_json_lines(),
                "{cmd}: {} [{}]",
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
    hostile_in(mode, "complete/gray8")
}

/// Runs scenario `id` against `driver.py MODE`; returns the driver fault texts.
fn hostile_in(mode: &str, id: &str) -> Vec<String> {
    let s = catalog()
        .into_iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("{id} in the catalog"));
    let config = ExternalConfig::default()
        .with_reply_timeout(Duration::from_millis(1500))
        .with_max_messages_per_instant(2000);
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
fn version_2_misuse_is_a_driver_fault_naming_the_message_and_why() {
    let cases = [
        ("v2-in-v1", "complete/gray8", "protocol: submit needs protocol version 2; the driver chose 1 in its hello"),
        ("v2-bad-submit", "complete/gray8", "unknown variant `warp_in`"),
        ("v2-duplicate-id", "complete/gray8", "protocol: submit of id 1: a transfer with that id is still in flight"),
        ("v2-too-many", "complete/gray8", "protocol: submit of id 65: 64 transfers are in flight already"),
        ("v2-unknown-cancel", "complete/gray8", "protocol: cancel of id 99: no transfer with that id was submitted"),
        ("v2-cancel-finished", "complete/gray8", "protocol: cancel of id 1: that transfer completed and its done was delivered already"),
        ("v2-wait-nothing", "complete/gray8", "protocol: wait with no transfer in flight and no completion to deliver"),
        ("v2-overtake", "complete/gray8", "protocol: bulk_in (id 2) on endpoint 0x81 while submitted transfers are in flight there (ids 1)"),
        ("v2-submit-in-notify", "cancel-io/during-warm-up", "protocol: submit while handling notify"),
        ("v2-wait-stalled", "complete/gray8", "hang: acquisition 1"),
        ("v2-spin", "complete/gray8", "hang: the driver wrote 2001 messages while virtual time stood at 0 us"),
    ];
    let mut problems = Vec::new();
    for (mode, scenario, needle) in cases {
        let faults = hostile_in(mode, scenario);
        if !faults.iter().any(|f| f.contains(needle)) {
            problems.push(format!(
                "{mode}: no driver fault mentions {needle:?}: {faults:?}"
            ));
        }
        if faults.iter().any(|f| f.contains('\n')) {
            problems.push(format!("{mode}: a fault of more than one line: {faults:?}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_read_submitted_and_left_behind_counts_as_pending() {
    let s = catalog()
        .into_iter()
        .find(|s| s.id == "complete/gray8")
        .unwrap();
    let d = external(
        &python("tests/hostile/driver.py", "v2-early-result"),
        ExternalConfig::default(),
    );
    let r = run(&s, ServiceModel::Xp, "hostile", d);
    let pending = r.trace.events.iter().find_map(|e| match e.kind {
        Kind::AcquireReturn { pending, .. } => Some(pending),
        _ => None,
    });
    assert_eq!(
        pending,
        Some(1),
        "the submitted read is pending at the return"
    );
    assert!(
        failed_rules(&r).iter().any(|f| f == "USB-NO-PENDING"),
        "{:?}",
        failed_rules(&r)
    );
    assert!(
        !r.trace
            .events
            .iter()
            .any(|e| matches!(e.kind, Kind::DriverFault { .. })),
        "leaving a transfer pending is a rule failure, not a protocol error"
    );
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
