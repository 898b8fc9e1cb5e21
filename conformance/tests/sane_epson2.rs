//! The SANE adapter against Debian's real `epson2` backend (package libsane1) scanning from the
//! emulated ESC/I scanner through the libusb-1.0 stand-in: every scenario under
//! `fixtures/scenarios/sane/epson2/` runs with the device side in the trace, the findings of
//! `fixtures/sane-expected/epson2.json` are honoured both ways and each names its wire evidence,
//! cancel latencies are measured, and each run's outline (frontend calls, then the device's
//! wire events) matches its snapshot under `fixtures/snapshots/sane-epson2/`; `--pcap` captures
//! each run's USB traffic as a usbmon pcap.
//!
//! Without the backend or the stand-in (`cargo build -p scanlab-libusb`) these tests print why
//! and pass, except under `CI=true`, where that fails them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use scanconform::sane::expected::{compare, ExpectedFailures};
use scanconform::sane::runner::{SaneRun, Session};
use scanconform::sane::target;
use scanconform::sane::{self, scenario as sane_scenario};

/// The runs share the process's libusb stand-in and environment: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn skip_or_fail(why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true and {why}"
    );
    eprintln!("skipping: {why}");
}

/// The epson2 backend and the stand-in, or None (with the reason printed) outside CI.
fn available() -> Option<target::Target> {
    let target = match target::resolve("epson2") {
        Ok(t) => t,
        Err(e) => {
            skip_or_fail(&format!("the SANE epson2 backend is missing: {e}"));
            return None;
        }
    };
    let exe = std::env::current_exe().expect("test executable");
    let debug = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    if !debug.join("libscanlab_libusb.so").is_file() {
        skip_or_fail(&format!(
            "the libusb stand-in {} is not built (cargo build -p scanlab-libusb)",
            debug.join("libscanlab_libusb.so").display()
        ));
        return None;
    }
    Some(target)
}

fn session(target: target::Target) -> Session {
    let config = sane::config_dir(&fixtures(), "epson2");
    assert!(config.is_some(), "fixtures/sane/epson2.conf is missing");
    Session::prepare_with_device(target, config.as_deref(), &fixtures().join("profiles"))
        .expect("epson2 loads and opens the emulated device")
}

fn scenarios() -> Vec<sane_scenario::LoadedSaneScenario> {
    sane_scenario::discover(&sane::scenario_root(&fixtures(), "epson2"))
        .expect("epson2 scenarios load")
}

/// The snapshot: the frontend's outline, then the device's wire events and cancel latencies.
fn outline(r: &SaneRun) -> Vec<String> {
    let mut lines = r.trace.outline();
    lines.push("--- device".into());
    lines.extend(r.trace.device_outline(&r.latency));
    lines
}

#[test]
fn epson2_catalog_honours_the_findings_and_matches_snapshots() {
    let _g = serial();
    let Some(target) = available() else { return };
    let session = session(target);
    // Loaded directly (not through the dll meta-backend), epson2 names it without `epson2:`.
    assert_eq!(session.device, "libusb:001:002");
    let list = ExpectedFailures::load(&sane::expected_path(&fixtures(), "epson2"), |id| {
        sane::rules::find(id).is_some()
    })
    .unwrap();
    let scenarios = scenarios();
    assert!(
        scenarios.len() >= 10,
        "only {} epson2 scenarios",
        scenarios.len()
    );
    let runs: Vec<SaneRun> = scenarios.iter().map(|s| session.run(s)).collect();
    for r in &runs {
        assert!(r.skipped.is_none(), "{}: skipped: {:?}", r.id, r.skipped);
        assert!(
            !r.trace.device.is_empty(),
            "{}: no device events in the trace",
            r.id
        );
        let name = r.id.trim_start_matches("sane/");
        insta::with_settings!({
            snapshot_path => fixtures().join("snapshots/sane-epson2"),
            prepend_module_to_snapshot => false,
            omit_expression => true,
            description => format!("{} against Debian's epson2 and the emulated ESC/I scanner (order and outcome, no times; device: wire events only)", r.id),
        }, {
            insta::assert_yaml_snapshot!(name.to_string(), outline(r));
        });
    }
    let cmp = compare(&runs, &list);
    assert!(cmp.violations.is_empty(), "\n{}", cmp.violations.join("\n"));
    assert_eq!(cmp.honoured.len(), list.failures.len());
    // Every finding with a device behind it names its wire evidence.
    for f in &list.failures {
        if f.rule != "SANE-LEN-ZERO-ON-ERROR" {
            assert!(
                f.wire.as_deref().is_some_and(|w| !w.is_empty()),
                "{} {}: no wire evidence",
                f.scenario,
                f.rule
            );
        }
    }
    // Cancel latency in blocks, as documented in conformance/SANE.md.
    let latency = |id: &str| -> Vec<(u32, String)> {
        runs.iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("{id} ran"))
            .latency
            .iter()
            .map(|l| (l.blocks, l.ended_by.clone()))
            .collect()
    };
    assert_eq!(
        latency("sane/cancel-between-blocks"),
        [(1, "can".to_string())]
    );
    assert_eq!(
        latency("sane/cancel-blocked-read"),
        [(1, "can".to_string())]
    );
    assert_eq!(latency("sane/cancel-unread-data")[0].0, 0);
    assert!(latency("sane/cancel-unread-data")[0]
        .1
        .starts_with("abandoned by"));
    assert_eq!(
        latency("sane/cancel-last-block"),
        [(0, "finished".to_string())]
    );
}

#[test]
fn epson2_runs_repeat_with_the_same_verdicts_and_outlines() {
    let _g = serial();
    let Some(target) = available() else { return };
    let session = session(target);
    for s in scenarios()
        .iter()
        .filter(|s| s.id.contains("blocked") || s.id.contains("unread") || s.id.contains("close"))
    {
        let a = session.run(s);
        let b = session.run(s);
        // Messages carry milliseconds; the verdicts and the outline do not.
        let kinds = |r: &SaneRun| -> Vec<(&'static str, bool, bool)> {
            r.results
                .iter()
                .map(|x| {
                    (
                        x.id,
                        matches!(x.status, scanconform::verdict::RuleStatus::Fail { .. }),
                        x.status == scanconform::verdict::RuleStatus::NotApplicable,
                    )
                })
                .collect()
        };
        assert_eq!(kinds(&a), kinds(&b), "{}: verdicts differ", s.id);
        assert_eq!(outline(&a), outline(&b), "{}: outlines differ", s.id);
        assert!(a.problems.is_empty(), "{}: {:?}", s.id, a.problems);
    }
}

#[test]
fn cli_runs_epson2_with_latency_in_text_json_and_traces() {
    let _g = serial();
    if available().is_none() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let traces = std::env::temp_dir().join(format!("sane-epson2-traces-{}", std::process::id()));
    let o = Command::new(env!("CARGO_BIN_EXE_scanconform"))
        .args(["run", "--driver", "sane:epson2", "--traces"])
        .arg(&traces)
        .current_dir(&root)
        .output()
        .expect("scanconform runs");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("cancel latency"), "{out}");
    assert!(
        out.contains("expected failures honoured, 0 problems"),
        "{out}"
    );
    let trace = std::fs::read_to_string(traces.join("sane-epson2/cancel-blocked-read.jsonl"))
        .expect("trace written");
    assert!(trace.contains("\"actor\":\"device\""), "{trace}");
    assert!(trace.contains("\"event\":\"cancel-latency\""), "{trace}");
    let _ = std::fs::remove_dir_all(&traces);

    let o = Command::new(env!("CARGO_BIN_EXE_scanconform"))
        .args([
            "run",
            "--driver",
            "sane:epson2",
            "--format",
            "json",
            "--filter",
            "sane/cancel-between-blocks",
        ])
        .current_dir(&root)
        .output()
        .expect("scanconform runs");
    assert_eq!(o.status.code(), Some(0));
    let line: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).expect("one JSON line");
    assert_eq!(line["verdict"], "expected-fail");
    assert_eq!(line["cancel_latency"][0]["blocks"], 1);
    assert_eq!(line["cancel_latency"][0]["ended_by"], "can");
}

#[test]
fn a_changed_finding_fails_both_ways() {
    let _g = serial();
    let Some(target) = available() else { return };
    let session = session(target);
    let s: Vec<_> = scenarios()
        .into_iter()
        .filter(|s| s.id == "sane/cancel-unread-data" || s.id == "sane/full-gray")
        .collect();
    let runs: Vec<SaneRun> = s.iter().map(|s| session.run(s)).collect();
    let mut list = ExpectedFailures::load(&sane::expected_path(&fixtures(), "epson2"), |id| {
        sane::rules::find(id).is_some()
    })
    .unwrap();
    // Other wire evidence than observed: a violation.
    for f in &mut list.failures {
        if f.scenario == "sane/cancel-unread-data" {
            f.wire = Some("block-sent #0, can".into());
        }
    }
    let cmp = compare(&runs, &list);
    assert!(
        cmp.violations
            .iter()
            .any(|v| v.contains("observed behaviour changed") && v.contains("wire evidence")),
        "{:?}",
        cmp.violations
    );
    // A listed failure that passes: a violation.
    list.failures
        .push(scanconform::sane::expected::ExpectedFailure {
            scenario: "sane/full-gray".into(),
            rule: "SANE-FRAME-DATA".into(),
            observed: "differs".into(),
            finding: "made up".into(),
            wire: None,
        });
    let cmp = compare(&runs, &list);
    assert!(
        cmp.violations.iter().any(|v| v.contains("but passed")),
        "{:?}",
        cmp.violations
    );
}

/// The records of a classic pcap file: (link type, record count), after checking each
/// record's length stays inside the file.
fn pcap_records(bytes: &[u8]) -> (u32, usize) {
    assert!(bytes.len() >= 24, "no pcap header");
    assert_eq!(&bytes[0..4], &0xa1b2_c3d4u32.to_le_bytes(), "pcap magic");
    let link = u32::from_le_bytes(bytes[20..24].try_into().unwrap());
    let (mut at, mut n) = (24, 0);
    while at < bytes.len() {
        let incl = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16 + incl;
        n += 1;
    }
    assert_eq!(at, bytes.len(), "the last record is cut");
    (link, n)
}

#[test]
fn cli_captures_the_usb_traffic_of_epson2_runs() {
    let _g = serial();
    if available().is_none() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let caps = std::env::temp_dir().join(format!("sane-epson2-pcap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&caps);
    let o = Command::new(env!("CARGO_BIN_EXE_scanconform"))
        .args([
            "run",
            "--driver",
            "sane:epson2",
            "--filter",
            "sane/cancel-b*",
            "--pcap",
        ])
        .arg(&caps)
        .current_dir(&root)
        .output()
        .expect("scanconform runs");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let file = caps.join("sane.cancel-between-blocks.pcap");
    let bytes = std::fs::read(&file).expect("one capture per run");
    let (link, records) = pcap_records(&bytes);
    assert_eq!(link, 220, "LINKTYPE_USB_LINUX_MMAPPED");
    // Enumeration, the ESC/I commands and the blocks up to the cancel: S and C per URB.
    assert!(records > 20, "{records} records");
    let runs = std::fs::read_dir(&caps).unwrap().count();
    assert!(runs >= 3, "{runs} captures");
    if Command::new("tshark").arg("--version").output().is_ok() {
        let t = Command::new("tshark")
            .arg("-r")
            .arg(&file)
            .output()
            .expect("tshark runs");
        assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
        assert_eq!(
            String::from_utf8_lossy(&t.stdout).lines().count(),
            records,
            "tshark reads every record"
        );
    }
    let _ = std::fs::remove_dir_all(&caps);
}
