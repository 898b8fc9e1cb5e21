//! The conformance runner over USB/IP (`--transport usbip`): the driver talks to an in-process
//! USB/IP server thread on loopback, in real time.
//!
//! Real-time runs are not byte-identical, so no snapshot is compared. What is compared with the
//! virtual-time run of the same scenario: no rule fails in either; every rule's verdict kind is
//! the same, except that a time-triggered step (`at_us`) may land elsewhere in real time, so
//! for such scenarios "pass" and "not applicable" may differ; the bytes delivered are identical
//! when no step is time-triggered; the cancel-to-idle metric agrees within
//! [`IDLE_TOLERANCE_US`] (loopback latency plus the driver's status-poll period).

use std::path::{Path, PathBuf};
use std::process::Command;

use scanconform::rules::RuleStatus;
use scanconform::run::{self, RunOptions, RunResult, Transport};
use scanconform::scenario::{self, ServiceModel};
use scanconform::{drivers, rules};

/// How far a real-time cancel-to-idle time may stray from the virtual-time one.
const IDLE_TOLERANCE_US: u64 = 30_000;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn run(id: &str, service: ServiceModel, transport: Transport) -> RunResult {
    let root = fixtures().join("scenarios");
    let path = root.join(format!("{id}.json"));
    let loaded = scenario::load(&path, &root).expect("scenario loads");
    loaded
        .validate(|r| rules::find(r).is_some())
        .expect("scenario is valid");
    let mut options = RunOptions::default();
    options.transport = transport;
    let d = drivers::instantiate("reference").expect("reference driver");
    run::run_with(
        &loaded,
        service,
        "reference",
        d,
        &fixtures().join("profiles"),
        &options,
    )
    .expect("runs")
}

fn kind(s: &RuleStatus) -> &'static str {
    match s {
        RuleStatus::Pass => "pass",
        RuleStatus::NotApplicable => "n/a",
        RuleStatus::Fail { .. } => "fail",
        RuleStatus::NotJudged { .. } => "not-judged",
        _ => "report",
    }
}

/// Runs `id` in process and over USB/IP and compares them.
fn same_verdicts(id: &str, service: ServiceModel, timed: bool) {
    let virt = run(id, service, Transport::InProcess);
    let real = run(id, service, Transport::UsbIp);
    assert!(
        real.passed(),
        "{id} [{}] over USB/IP:\n{}",
        service.name(),
        scanconform::report::failure_details(&real)
    );
    let a: Vec<(&str, &str)> = virt
        .report
        .results
        .iter()
        .map(|r| (r.id, kind(&r.status)))
        .collect();
    let b: Vec<(&str, &str)> = real
        .report
        .results
        .iter()
        .map(|r| (r.id, kind(&r.status)))
        .collect();
    let loose = |k: &'static str| if timed && k == "n/a" { "pass" } else { k };
    let norm = |v: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        v.iter().map(|&(id, k)| (id, loose(k))).collect()
    };
    assert_eq!(
        norm(&a),
        norm(&b),
        "{id} [{}]: rule verdicts differ",
        service.name()
    );
    let (mv, mr) = (&virt.report.metrics, &real.report.metrics);
    assert!(
        timed || (mv.data_bytes, mv.data_callbacks) == (mr.data_bytes, mr.data_callbacks),
        "{id}: bytes delivered differ"
    );
    if let (Some(v), Some(r)) = (mv.cancel_to_idle_us, mr.cancel_to_idle_us) {
        assert!(
            v.abs_diff(r) <= IDLE_TOLERANCE_US,
            "{id}: cancel to idle {r} us over USB/IP vs {v} us in virtual time"
        );
    }
    // Device notes reach the trace from the server thread.
    assert!(
        real.trace
            .events
            .iter()
            .any(|e| e.is_device() && !e.is_note("")),
        "{id}: no device note in the USB/IP trace"
    );
}

trait EventExt {
    fn is_device(&self) -> bool;
    fn is_note(&self, what: &str) -> bool;
}

impl EventExt for scanconform::trace::Event {
    fn is_device(&self) -> bool {
        self.actor == scanconform::trace::Actor::Device
    }
    fn is_note(&self, what: &str) -> bool {
        matches!(&self.kind, scanconform::trace::Kind::Device { what: w, .. } if w.name() == what)
    }
}

#[test]
fn complete_scan_over_usbip_matches_virtual_time() {
    same_verdicts("complete/gray8", ServiceModel::Xp, false);
}

#[test]
fn s_false_mid_scan_over_usbip_matches_virtual_time() {
    same_verdicts("callback/s-false-mid-scan", ServiceModel::Vista, false);
}

#[test]
fn cancel_io_blocked_in_bulk_read_over_usbip_matches_virtual_time() {
    same_verdicts("cancel-io/blocked-in-bulk-read", ServiceModel::Xp, true);
}

#[test]
fn stall_on_cancel_over_usbip_matches_virtual_time() {
    same_verdicts("faults/stall-on-cancel", ServiceModel::Xp, false);
}

#[test]
fn disconnect_mid_scan_over_usbip_matches_virtual_time() {
    // The device leaves the bus at a band's scheduled time whether or not the host has read the
    // bands before it, so in real time the bytes delivered depend on how fast the driver reads.
    same_verdicts("device/disconnect-mid-scan", ServiceModel::Xp, true);
}

#[test]
fn cli_runs_the_realtime_subset_over_usbip() {
    let out = Command::new(env!("CARGO_BIN_EXE_scanconform"))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args([
            "run",
            "--transport",
            "usbip",
            "--service",
            "xp",
            "--filter",
            "{profiles/*,cancel-io/twice-during-transfer}",
        ])
        .output()
        .expect("scanconform runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains("skipped profiles/a4-300-s-false-at-50-percent [xp]"),
        "slow scenarios are skipped with a reason: {stderr}"
    );
    assert!(
        stdout.contains("profiles/fast-cancel-io-mid-scan"),
        "{stdout}"
    );
    assert!(stdout.contains("0 failed"), "{stdout}");
}
