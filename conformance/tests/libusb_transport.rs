//! The conformance runner through libusb (`--transport libusb`, feature `libusb`): the
//! reference driver's host is scanemu's rusb host, its libusb the scanlab stand-in
//! (`emulator/libusb-shim`, `cargo build -p scanlab-libusb`), which speaks USB/IP to an
//! in-process server, in real time.
//!
//! The runs go through the `scanconform` binary, which runs `scanconform-libusb` with the stand-in
//! on `LD_LIBRARY_PATH`; this test process loaded the system libusb. Each run's verdicts are
//! compared with the in-process virtual-time run of the same scenario, as `tests/usbip.rs` does for
//! USB/IP: no rule fails, every rule's verdict kind is the same (a time-triggered step may land
//! elsewhere in real time, so there "pass" and "not applicable" may differ), and the bytes
//! delivered are the same when no step is time-triggered. One more scenario, written by the
//! test, makes every band reach the driver through a read whose timeout fired while the band
//! was on the wire.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use scanconform::rules::RuleStatus;
use scanconform::run::{self, RunOptions, Transport};
use scanconform::scenario::{self, LoadedScenario, ServiceModel, Trigger};
use scanconform::{drivers, rules};

/// The scenarios run through libusb: a complete scan, a callback cancel, CancelPendingIO
/// while blocked in a bulk read, an acquisition after a cancelled one (a read the abort left
/// on the device would swallow its first band), and a device stall during the cancel.
const SCENARIOS: [&str; 5] = [
    "complete/gray8",
    "callback/s-false-mid-scan",
    "cancel-io/blocked-in-bulk-read",
    "cancel-io/then-acquire-again",
    "faults/stall-on-cancel",
];

/// The real-time runs of this file, one at a time: two at once on a loaded machine would
/// measure each other's load.
static REAL_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn load(id: &str) -> LoadedScenario {
    let root = repo().join("fixtures/scenarios");
    let loaded = scenario::load(&root.join(format!("{id}.json")), &root).expect("scenario loads");
    loaded
        .validate(|r| rules::find(r).is_some())
        .expect("scenario is valid");
    loaded
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

/// The verdict kind of a `--format json` rule status (`pass`, `n/a`, `fail: ...`, ...).
fn word_kind(word: &str) -> &'static str {
    match word {
        "pass" => "pass",
        "n/a" => "n/a",
        w if w.starts_with("fail") => "fail",
        w if w.starts_with("not judged") => "not-judged",
        _ => "report",
    }
}

/// True when a step of the scenario fires at a time rather than at a callback.
fn time_triggered(s: &LoadedScenario) -> bool {
    s.scenario
        .acquisitions
        .iter()
        .flat_map(|a| &a.steps)
        .any(|step| matches!(step.when, Trigger::AtUs(_)))
}

#[test]
fn libusb_runs_match_the_in_process_verdicts() {
    let _one_at_a_time = REAL_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let filter = format!("{{{}}}", SCENARIOS.join(","));
    let out = Command::new(env!("CARGO_BIN_EXE_scanconform"))
        .current_dir(repo())
        .args(["run", "--transport", "libusb", "--format", "json"])
        .args(["--filter", &filter])
        .output()
        .expect("scanconform runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let runs: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let mut seen = BTreeMap::new();
    for run in &runs {
        let id = run["scenario"].as_str().expect("scenario id");
        let service = match run["service"].as_str() {
            Some("xp") => ServiceModel::Xp,
            Some("vista") => ServiceModel::Vista,
            other => panic!("{id}: service {other:?}"),
        };
        assert_eq!(
            run["verdict"],
            "pass",
            "{id} [{}] through libusb: {run}",
            service.name()
        );
        let loaded = load(id);
        let driver = drivers::instantiate("reference").expect("reference driver");
        let virt = run::run(
            &loaded,
            service,
            "reference",
            driver,
            &repo().join("fixtures/profiles"),
        )
        .expect("runs in process");
        let timed = time_triggered(&loaded);
        let loose = |k: &'static str| if timed && k == "n/a" { "pass" } else { k };
        let want: Vec<(String, &str)> = virt
            .report
            .results
            .iter()
            .map(|r| (r.id.to_string(), loose(kind(&r.status))))
            .collect();
        let got: Vec<(String, &str)> = run["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .map(|pair| {
                let id = pair[0].as_str().expect("rule id").to_string();
                (id, loose(word_kind(pair[1].as_str().expect("status"))))
            })
            .collect();
        assert_eq!(want, got, "{id} [{}]: rule verdicts differ", service.name());
        if !timed {
            let m = &virt.report.metrics;
            assert_eq!(
                (
                    run["metrics"]["data_bytes"].as_u64(),
                    run["metrics"]["data_callbacks"].as_u64()
                ),
                (Some(m.data_bytes), Some(u64::from(m.data_callbacks))),
                "{id} [{}]: bytes delivered differ",
                service.name()
            );
        }
        *seen.entry(id.to_string()).or_insert(0) += 1;
    }
    for id in SCENARIOS {
        let want = load(id).scenario.services.len();
        assert_eq!(
            seen.get(id),
            Some(&want),
            "{id}: runs missing from {runs:?}"
        );
    }
}

#[test]
fn a_process_on_another_libusb_refuses_the_libusb_transport() {
    // This test process loaded the system libusb: a run must not reach for real devices.
    let loaded = load("complete/gray8");
    let mut options = RunOptions::default();
    options.transport = Transport::Libusb;
    let driver = drivers::instantiate("reference").expect("reference driver");
    let err = run::run_with(
        &loaded,
        ServiceModel::Xp,
        "reference",
        driver,
        &repo().join("fixtures/profiles"),
        &options,
    )
    .expect_err("the system libusb is not the stand-in");
    assert!(
        matches!(err, run::RunError::Libusb(_))
            && err.to_string().contains("not the scanlab stand-in"),
        "{err}"
    );
    assert!(
        scanconform::libusb::transport::check_stand_in_loaded().is_err(),
        "the test process runs on the system libusb"
    );
}

#[test]
fn a_missing_stand_in_is_one_line_naming_the_build_command() {
    // A copy of the programs in a folder without libscanlab_libusb.so beside them.
    let dir = std::env::temp_dir().join(format!("scanconform-libusb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("debug")).expect("temp folder");
    let exe = dir.join("debug/scanconform");
    std::fs::copy(env!("CARGO_BIN_EXE_scanconform"), &exe).expect("copy of scanconform");
    std::fs::copy(
        env!("CARGO_BIN_EXE_scanconform-libusb"),
        dir.join("debug/scanconform-libusb"),
    )
    .expect("copy of scanconform-libusb");
    let out = Command::new(&exe)
        .current_dir(repo())
        .env_remove(scanconform::libusb::transport::STAND_IN_ENV)
        .args(["run", "--transport", "libusb", "--filter", "complete/gray8"])
        .output()
        .expect("the copy runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("stand-in") && stderr.contains("`cargo build -p scanlab-libusb`"),
        "{stderr}"
    );
}

#[test]
fn a_recording_replays_through_libusb() {
    let _one_at_a_time = REAL_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir =
        std::env::temp_dir().join(format!("scanconform-libusb-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let scenario = "fixtures/recordings/scenarios/replay/complete-gray8.json";
    let out = Command::new(env!("CARGO_BIN_EXE_scanconform"))
        .current_dir(repo())
        .args(["record", "--scenario", scenario, "--out"])
        .arg(&dir)
        .output()
        .expect("scanconform records");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The recording, exported over USB/IP, reached through the stand-in: the scenario passes,
    // and a scenario that asks for another image departs at its first different request.
    for (scenarios, code, want) in [
        (scenario, 0, "2 passed, 0 failed"),
        (
            "fixtures/recordings/scenarios/replay/complete-gray8-64.json",
            1,
            "WIA-FAULT-NO-HANG",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_scanconform"))
            .current_dir(repo())
            .args(["run", "--transport", "libusb", "--replay"])
            .arg(&dir)
            .args(["--scenarios", scenarios])
            .output()
            .expect("scanconform runs");
        assert_eq!(out.status.code(), Some(code), "{scenarios}: {}", text(&out));
        assert!(text(&out).contains(want), "{scenarios}: {}", text(&out));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// WIA 2.0 through libusb: the reference WIA 2.0 driver passes its cancel, device and feeder
/// scenarios in real time (the ones a wall clock cannot replay are skipped with a reason), and
/// the driver that ignores WIA_EVENT_CANCEL_IO fails exactly its rule.
#[test]
fn wia2_runs_through_libusb() {
    let _one_at_a_time = REAL_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let run = |driver: &str| {
        Command::new(env!("CARGO_BIN_EXE_scanconform"))
            .current_dir(repo())
            .args(["run", "--transport", "libusb", "--format", "json"])
            .args([
                "--driver",
                driver,
                "--filter",
                "wia2/{cancel,device,idle}/*",
            ])
            .output()
            .expect("scanconform runs")
    };
    let out = run("reference-wia2");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let runs = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(runs >= 20, "{}", text(&out));
    let out = run("mutant2-ignore-cancel-io");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let failed: std::collections::BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .flat_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("one JSON object per line");
            v["failed"]
                .as_array()
                .expect("failed rules")
                .iter()
                .map(|f| f.as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        failed,
        std::collections::BTreeSet::from(["WIA2-N1-CANCEL-IO".to_string()])
    );
}

/// A scenario where the read that gets each band times out while the band is on the wire: a
/// full-speed device with two 196608-byte bands (about 160 ms on the wire each, against the
/// reference driver's 100 ms read slices), scanned slowly enough that every band becomes
/// ready during a read. The timeout unlinks an URB the device has already filled; the band
/// must still reach the driver (the timed-out read returns it), not be dropped with the
/// unlink, which left the next read the following band and failed the scan.
#[test]
fn a_read_that_times_out_while_its_band_is_on_the_wire_keeps_the_band() {
    let _one_at_a_time = REAL_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("scanconform-wire-race-{}", std::process::id()));
    let (profiles, scenarios) = (dir.join("profiles"), dir.join("scenarios"));
    for d in [&profiles, &scenarios] {
        std::fs::create_dir_all(d).expect("temp folder");
    }
    let fast = std::fs::read_to_string(repo().join("fixtures/profiles/fast-flatbed.json"))
        .expect("fast profile");
    let mut profile: serde_json::Value = serde_json::from_str(&fast).expect("profile JSON");
    profile["name"] = "fast-flatbed-full-speed".into();
    profile["usb"]["speed"] = "full".into();
    profile["usb"]["bulk_max_packet"] = 64.into();
    profile["timing"]["band_lines"] = 128.into();
    profile["timing"]["line_period_us"] = 10_000.into();
    std::fs::write(profiles.join("full-speed.json"), profile.to_string()).expect("profile");
    let scenario = serde_json::json!({
        "description": "Two bands of 196608 bytes on a full-speed bus, each outlasting the driver's read timeout on the wire: every byte arrives.",
        "rules": ["WIA-OUTCOME", "WIA-DATA-CONTIGUOUS", "WIA-DATA-EXACT", "WIA-DATA-COMPLETE", "USB-NO-PENDING"],
        "profile": "../profiles/full-speed.json",
        "scan": {"resolution_dpi": 100, "mode": "color48", "width_px": 256, "height_px": 256},
        "buffer": 262144,
        "acquisitions": [{"expect": "complete"}]
    });
    std::fs::write(scenarios.join("wire-race.json"), scenario.to_string()).expect("scenario");
    for transport in ["libusb", "usbip"] {
        let out = Command::new(env!("CARGO_BIN_EXE_scanconform"))
            .current_dir(repo())
            .args([
                "run",
                "--transport",
                transport,
                "--format",
                "json",
                "--scenarios",
            ])
            .arg(&scenarios)
            .output()
            .expect("scanconform runs");
        assert_eq!(out.status.code(), Some(0), "{transport}: {}", text(&out));
        let runs: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        assert_eq!(runs.len(), 2, "{transport}: xp and vista: {runs:?}");
        for run in &runs {
            assert_eq!(run["verdict"], "pass", "{transport}: {run}");
            assert_eq!(
                run["metrics"]["data_bytes"].as_u64(),
                Some(256 * 256 * 6),
                "{transport}: the whole page: {run}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
