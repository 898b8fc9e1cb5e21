//! Fixture recording and replay: record the emulator's native personality, replay the
//! recording, and get the same conformance trace (every event but the device's own notes, see
//! `record::compare_traces`); a driver that departs from a recording gets a verdict naming the
//! first divergent transaction; the committed recordings under `fixtures/recordings/` replay
//! to their committed traces. All of it for WIA 1.0 and WIA 2.0 sessions, and a recording of
//! one driver model is refused to a driver of the other.

use std::path::{Path, PathBuf};

use scanconform::drivers;
use scanconform::record::{self, DriverModel, RecordOptions, RunOutcome, Wia2Session};
use scanconform::run::wia2::Run2Result;
use scanconform::run::{RunError, RunResult, Transport};
use scanconform::scenario::wia2::LoadedScenario2;
use scanconform::scenario::{self, LoadedScenario, ServiceModel};
use scanconform::trace::{Actor, Kind, Trace};
use scanemu::capture::recording::Recording;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn profiles() -> PathBuf {
    fixtures().join("profiles")
}

/// A scenario of the catalog (`cancel-io/...`) or of the recordings' own (`replay/...`).
fn scenario(id: &str) -> LoadedScenario {
    for root in [
        fixtures().join("scenarios"),
        fixtures().join("recordings/scenarios"),
    ] {
        let path = root.join(format!("{id}.json"));
        if path.exists() {
            return scenario::load(&path, &root).unwrap();
        }
    }
    panic!("no scenario {id}");
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("scanconform-rec-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn record_into(id: &str, transport: Transport, out: &Path) -> RunResult {
    let mut options = RecordOptions::default();
    options.transport = transport;
    let d = drivers::instantiate("reference").unwrap();
    record::record(
        &scenario(id),
        ServiceModel::Xp,
        "reference",
        d,
        &profiles(),
        &options,
        out,
    )
    .unwrap()
}

fn replay(id: &str, driver: &str, recording: &Path) -> RunResult {
    let d = drivers::instantiate(driver).unwrap();
    record::replay(
        &scenario(id),
        ServiceModel::Xp,
        driver,
        d,
        &profiles(),
        recording,
    )
    .unwrap()
}

fn faults(trace: &Trace) -> Vec<String> {
    trace
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            Kind::DriverFault { what } => Some(what.clone()),
            _ => None,
        })
        .collect()
}

fn device_notes(trace: &Trace, what: &str) -> Vec<String> {
    trace
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            Kind::Device {
                what: w, detail, ..
            } if w.name() == what => Some(detail.to_string()),
            _ => None,
        })
        .collect()
}

/// Every event but the device's notes, without its time.
fn shape(t: &Trace) -> Vec<String> {
    t.events
        .iter()
        .filter(|e| e.actor != Actor::Device)
        .map(|e| serde_json::to_string(&e.kind).unwrap())
        .collect()
}

#[test]
fn a_recorded_complete_scan_replays_to_the_same_trace() {
    let dir = temp_dir("complete");
    let recorded = record_into("replay/complete-gray8", Transport::InProcess, &dir);
    assert!(recorded.passed(), "{:?}", recorded.report.failed());
    let replayed = replay("replay/complete-gray8", "reference", &dir);
    assert_eq!(faults(&replayed.trace), Vec::<String>::new());
    record::compare_traces(&recorded.trace, &replayed.trace).unwrap();
    assert!(replayed.passed(), "{:?}", replayed.report.failed());
    // The stored trace is the run's.
    assert_eq!(record::load_trace(&dir).unwrap(), recorded.trace);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_recorded_cancel_replays_to_the_same_trace() {
    let dir = temp_dir("cancel");
    let recorded = record_into("cancel-io/in-data-callback", Transport::InProcess, &dir);
    let replayed = replay("cancel-io/in-data-callback", "reference", &dir);
    assert_eq!(faults(&replayed.trace), Vec::<String>::new());
    record::compare_traces(&recorded.trace, &replayed.trace).unwrap();
    assert_eq!(recorded.passed(), replayed.passed());
    // The recording held the CANCEL: nothing was synthesized.
    assert!(device_notes(&replayed.trace, "replay-cancel").is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_cancel_the_recording_lacks_is_answered_by_the_protocol() {
    let dir = temp_dir("synth-cancel");
    record_into("replay/complete-gray8", Transport::InProcess, &dir);
    let replayed = replay("cancel-io/in-data-callback", "reference", &dir);
    let notes = device_notes(&replayed.trace, "replay-cancel");
    assert_eq!(notes.len(), 1, "{}", replayed.trace.render_text());
    assert!(notes[0].contains("native protocol"), "{}", notes[0]);
    assert_eq!(faults(&replayed.trace), Vec::<String>::new());
    // Busy while the motor stops, then OK; no band after the cancel.
    let text = replayed.trace.render_text();
    let cancel_at = text
        .lines()
        .position(|l| l.contains("CANCEL"))
        .expect("a CANCEL on the wire");
    let after: Vec<&str> = text.lines().skip(cancel_at).collect();
    assert!(after.iter().any(|l| l.contains("busy")), "{text}");
    assert!(after.iter().any(|l| l.contains("0x2001 ok")), "{text}");
    assert!(
        !after
            .iter()
            .any(|l| l.contains(" bulk ") && l.contains("result=ok") && !l.contains("actual=0")),
        "{text}"
    );
    assert!(replayed.passed(), "{:?}", replayed.report.failed());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_driver_that_departs_gets_the_first_divergence() {
    let dir = temp_dir("diverge");
    record_into("replay/complete-gray8", Transport::InProcess, &dir);
    let replayed = replay("replay/complete-gray8-64", "reference", &dir);
    let f = faults(&replayed.trace);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(
        f[0].contains("first divergence at transaction #"),
        "{}",
        f[0]
    );
    assert!(f[0].contains("expected control-out SET_PARAMS"), "{}", f[0]);
    assert!(f[0].contains("got control-out SET_PARAMS"), "{}", f[0]);
    assert_eq!(device_notes(&replayed.trace, "replay-divergence").len(), 1);
    assert!(!replayed.passed());
    let failed: Vec<&str> = replayed.report.failed().iter().map(|r| r.id).collect();
    assert!(failed.contains(&"WIA-FAULT-NO-HANG"), "{failed:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_driver_that_stops_early_is_told_what_never_came() {
    let dir = temp_dir("early");
    record_into("cancel-io/in-data-callback", Transport::InProcess, &dir);
    let replayed = replay(
        "cancel-io/in-data-callback",
        "mutant-no-device-cancel",
        &dir,
    );
    let f = faults(&replayed.trace);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(
        f[0].contains("first divergence") || f[0].contains("never came"),
        "{}",
        f[0]
    );
    assert!(!replayed.passed());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_imported_capture_replays_to_the_same_trace() {
    let dir = temp_dir("pcap");
    let recorded = record_into("replay/complete-gray8", Transport::InProcess, &dir);
    let bytes = std::fs::read(dir.join("capture.pcap")).unwrap();
    let mut imported = Recording::from_pcap(&bytes, None).unwrap();
    let original = Recording::load(&dir).unwrap();
    // A capture holds transfers only: the descriptors come from enumeration, which happened
    // before the capture started.
    imported.meta.device_descriptor = original.meta.device_descriptor.clone();
    imported.meta.config_descriptor = original.meta.config_descriptor.clone();
    let urbs: Vec<_> = original
        .transactions
        .iter()
        .filter(|t| !matches!(t.kind, scanemu::capture::recording::TxKind::Abort))
        .map(|t| (t.kind, t.ep, t.setup, &t.data, t.result, t.at_us))
        .collect();
    let back: Vec<_> = imported
        .transactions
        .iter()
        .map(|t| (t.kind, t.ep, t.setup, &t.data, t.result, t.at_us))
        .collect();
    assert_eq!(urbs, back);
    let out = temp_dir("pcap-import");
    imported.save(&out).unwrap();
    let replayed = replay("replay/complete-gray8", "reference", &out);
    assert_eq!(faults(&replayed.trace), Vec::<String>::new());
    record::compare_traces(&recorded.trace, &replayed.trace).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn a_usbip_recording_replays_in_virtual_time() {
    let dir = temp_dir("usbip");
    let recorded = record_into("replay/complete-gray8", Transport::UsbIp, &dir);
    assert!(recorded.passed(), "{:?}", recorded.report.failed());
    let replayed = replay("replay/complete-gray8", "reference", &dir);
    assert_eq!(faults(&replayed.trace), Vec::<String>::new());
    assert!(replayed.passed(), "{:?}", replayed.report.failed());
    // Real time is not byte-identical, so compare what happened, not when.
    assert_eq!(shape(&recorded.trace), shape(&replayed.trace));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn committed_recordings_replay_to_their_traces() {
    let root = fixtures().join("recordings");
    let mut seen = [0; 2];
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.join("recording.json").exists() {
            continue;
        }
        let rec = Recording::load(&dir).unwrap();
        let id = rec.meta.provenance["scenario"].clone();
        let driver = rec.meta.provenance["driver"].clone();
        // Recordings made before WIA 2.0 ones could be name no model: WIA 1.0.
        let model = DriverModel::of(&rec.meta).unwrap();
        let replayed = match model {
            DriverModel::Wia1 => replay(&id, &driver, &dir).trace,
            DriverModel::Wia2 => replay2(&id, &driver, &dir).trace,
        };
        assert_eq!(faults(&replayed), Vec::<String>::new(), "{}", dir.display());
        let stored = record::load_trace(&dir).unwrap();
        if rec.meta.provenance["transport"] == "inproc" {
            if let Err(e) = record::compare_traces(&stored, &replayed) {
                panic!("{}: {e}", dir.display());
            }
        } else {
            // Real time is not byte-identical, so compare what happened, not when.
            assert_eq!(shape(&stored), shape(&replayed), "{}", dir.display());
        }
        seen[usize::from(model == DriverModel::Wia2)] += 1;
    }
    assert!(
        seen[0] >= 3 && seen[1] >= 3,
        "expected committed WIA 1.0 and WIA 2.0 recordings under {}: {seen:?}",
        root.display()
    );
}

/// A WIA 2.0 scenario of the catalog (`wia2/...`).
fn scenario2(id: &str) -> LoadedScenario2 {
    let root = fixtures().join("scenarios");
    scanconform::scenario::wia2::load(&root.join(format!("{id}.json")), &root).unwrap()
}

fn session2<'a>(s: &'a LoadedScenario2, driver: &'a str) -> Wia2Session<'a> {
    Wia2Session {
        scenario: s,
        driver_name: driver,
        factory: drivers::wia2::instantiate(driver).unwrap(),
    }
}

fn record2_into(id: &str, transport: Transport, out: &Path) -> Run2Result {
    let mut options = RecordOptions::default();
    options.transport = transport;
    let s = scenario2(id);
    record::record_session(&session2(&s, "reference-wia2"), &profiles(), &options, out).unwrap()
}

fn replay2(id: &str, driver: &str, recording: &Path) -> Run2Result {
    let s = scenario2(id);
    record::replay_session(&session2(&s, driver), &profiles(), recording).unwrap()
}

#[test]
fn a_recorded_wia2_transfer_replays_to_the_same_trace() {
    let dir = temp_dir("wia2-complete");
    let recorded = record2_into("wia2/complete/flatbed-gray8", Transport::InProcess, &dir);
    assert!(recorded.passed(), "{:?}", recorded.report.failed());
    // The provenance says what the session was.
    let meta = Recording::load(&dir).unwrap().meta;
    assert_eq!(DriverModel::of(&meta), Ok(DriverModel::Wia2));
    assert_eq!(meta.provenance["driver"], "reference-wia2");
    assert_eq!(meta.provenance["scenario"], "wia2/complete/flatbed-gray8");
    assert!(!meta.provenance.contains_key("service"), "{meta:?}");
    let replayed = replay2("wia2/complete/flatbed-gray8", "reference-wia2", &dir);
    assert_eq!(faults(&replayed.trace), Vec::<String>::new());
    record::compare_traces(&recorded.trace, &replayed.trace).unwrap();
    assert!(replayed.passed(), "{:?}", replayed.report.failed());
    assert_eq!(record::load_trace(&dir).unwrap(), recorded.trace);
    // The replay knew the device by its transfers only.
    assert!(!replayed
        .trace
        .events
        .iter()
        .any(|e| matches!(&e.kind, Kind::Device { what, .. } if what.name() == "band-ready")));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every WIA 2.0 scenario, recorded with the reference driver and replayed to it, gives the
/// recorded trace: cancels at every message, skips, stream failures, device faults, a second
/// device (H18), service restarts (H21: the transfer the dead process left is handed back to
/// the recording, which never saw it finish).
#[test]
fn every_wia2_scenario_replays_to_its_recorded_trace() {
    let root = fixtures().join("scenarios");
    let list = scanconform::scenario::wia2::discover(&root.join("wia2")).unwrap();
    assert!(list.len() >= 40, "{}", list.len());
    for s in &list {
        let dir = temp_dir(&format!("every-{}", s.id.replace('/', ".")));
        let session = session2(s, "reference-wia2");
        let recorded =
            record::record_session(&session, &profiles(), &RecordOptions::default(), &dir).unwrap();
        let replayed = record::replay_session(&session, &profiles(), &dir).unwrap();
        assert_eq!(faults(replayed.trace()), Vec::<String>::new(), "{}", s.id);
        if let Err(e) = record::compare_traces(recorded.trace(), replayed.trace()) {
            panic!("{}: {e}", s.id);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_wia2_mutant_that_departs_gets_the_first_divergence() {
    let dir = temp_dir("wia2-diverge");
    let recorded = record2_into(
        "wia2/cancel/cancel-while-reading",
        Transport::InProcess,
        &dir,
    );
    assert!(recorded.passed(), "{:?}", recorded.report.failed());
    // The mutant reads the rest of the image after the cancel where the recorded driver sent
    // CANCEL.
    let replayed = replay2(
        "wia2/cancel/cancel-while-reading",
        "mutant2-drain-on-cancel",
        &dir,
    );
    let f = faults(&replayed.trace);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(
        f[0].contains("first divergence at transaction #"),
        "{}",
        f[0]
    );
    assert!(f[0].contains("expected control-out CANCEL"), "{}", f[0]);
    assert_eq!(device_notes(&replayed.trace, "replay-divergence").len(), 1);
    let failed: Vec<&str> = replayed.report.failed().iter().map(|r| r.id).collect();
    assert!(failed.contains(&"WIA2-NO-HANG"), "{failed:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_wia2_usbip_recording_replays_in_virtual_time() {
    let dir = temp_dir("wia2-usbip");
    let recorded = record2_into("wia2/complete/flatbed-gray8", Transport::UsbIp, &dir);
    assert!(recorded.passed(), "{:?}", recorded.report.failed());
    let meta = Recording::load(&dir).unwrap().meta;
    assert_eq!(meta.provenance["transport"], "usbip");
    let replayed = replay2("wia2/complete/flatbed-gray8", "reference-wia2", &dir);
    assert_eq!(faults(&replayed.trace), Vec::<String>::new());
    assert!(replayed.passed(), "{:?}", replayed.report.failed());
    assert_eq!(shape(&recorded.trace), shape(&replayed.trace));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A WIA 2.0 recording exported over USB/IP (as `run --replay DIR --transport usbip` does):
/// a cancel at a transfer message replays on the wall clock too.
#[test]
fn a_wia2_recording_served_over_usbip_replays_and_passes() {
    let dir = fixtures().join("recordings/wia2-cancel-at-status-inproc");
    let id = "wia2/cancel/cancel-at-status";
    let s = scenario2(id);
    let mut options = scanconform::run::RunOptions::default();
    options.replay = Some(dir.clone());
    options.transport = Transport::UsbIp;
    let replayed = scanconform::run::wia2::run2_with(
        &s,
        "reference-wia2",
        drivers::wia2::instantiate("reference-wia2").unwrap(),
        &profiles(),
        &options,
    )
    .unwrap();
    assert_eq!(faults(&replayed.trace), Vec::<String>::new());
    assert!(replayed.passed(), "{:?}", replayed.report.failed());
    assert!(device_notes(&replayed.trace, "replay-divergence").is_empty());
    // The cancel came where the recording has it, and the transfer ended cancelled.
    let text = replayed.trace.render_text();
    assert!(text.contains("CANCEL"), "{text}");
    assert!(text.contains("hr=S_FALSE"), "{text}");
}

#[test]
fn a_recording_of_the_other_driver_model_is_refused() {
    let wia1 = fixtures().join("recordings/complete-gray8-inproc");
    let wia2 = fixtures().join("recordings/wia2-flatbed-gray8-inproc");
    // A recording without a model (made before WIA 2.0 ones could be) is WIA 1.0.
    let meta = Recording::load(&wia1).unwrap().meta;
    assert!(!meta.provenance.contains_key("model"));
    assert_eq!(DriverModel::of(&meta), Ok(DriverModel::Wia1));
    let s = scenario2("wia2/complete/flatbed-gray8");
    let e =
        record::replay_session(&session2(&s, "reference-wia2"), &profiles(), &wia1).unwrap_err();
    assert!(matches!(e, RunError::ReplayModel { .. }), "{e:?}");
    let text = e.to_string();
    for needle in ["WIA 1.0 recording", "reference-wia2", "WIA 2.0 driver"] {
        assert!(text.contains(needle), "{needle:?} missing in {text}");
    }
    let d = drivers::instantiate("reference").unwrap();
    let e = record::replay(
        &scenario("replay/complete-gray8"),
        ServiceModel::Xp,
        "reference",
        d,
        &profiles(),
        &wia2,
    )
    .unwrap_err();
    let text = e.to_string();
    for needle in ["WIA 2.0 recording", "reference", "WIA 1.0 driver"] {
        assert!(text.contains(needle), "{needle:?} missing in {text}");
    }
    // A model that does not exist is named.
    let dir = temp_dir("bad-model");
    let mut rec = Recording::load(&wia2).unwrap();
    rec.meta.provenance.insert("model".into(), "wia3".into());
    rec.save(&dir).unwrap();
    let e = record::replay_session(&session2(&s, "reference-wia2"), &profiles(), &dir).unwrap_err();
    assert!(e.to_string().contains("\"wia3\""), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Replays `recording` against `driver` with the recording exported over USB/IP (as `run
/// --replay DIR --transport usbip` does).
fn replay_over_usbip(id: &str, driver: &str, recording: &Path) -> RunResult {
    let d = drivers::instantiate(driver).unwrap();
    let mut options = scanconform::run::RunOptions::default();
    options.replay = Some(recording.to_path_buf());
    options.transport = Transport::UsbIp;
    scanconform::run::run_with(
        &scenario(id),
        ServiceModel::Xp,
        driver,
        d,
        &profiles(),
        &options,
    )
    .unwrap()
}

/// The message WIA-FAULT-NO-HANG failed with.
fn no_hang_message(r: &RunResult) -> String {
    r.report
        .results
        .iter()
        .find(|x| x.id == "WIA-FAULT-NO-HANG")
        .and_then(|x| match &x.status {
            scanconform::verdict::RuleStatus::Fail { message, .. } => Some(message.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

#[test]
fn a_recording_served_over_usbip_replays_and_passes() {
    let dir = temp_dir("over-usbip");
    record_into("replay/complete-gray8", Transport::InProcess, &dir);
    let replayed = replay_over_usbip("replay/complete-gray8", "reference", &dir);
    assert_eq!(faults(&replayed.trace), Vec::<String>::new());
    assert!(replayed.passed(), "{:?}", replayed.report.failed());
    // The replay's own notes crossed the server: none, since nothing departed.
    assert!(device_notes(&replayed.trace, "replay-divergence").is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_driver_that_departs_over_usbip_gets_the_first_divergence_in_its_acquisition() {
    let dir = temp_dir("diverge-usbip");
    record_into("replay/complete-gray8", Transport::InProcess, &dir);
    let replayed = replay_over_usbip("replay/complete-gray8-64", "reference", &dir);
    let f = faults(&replayed.trace);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(
        f[0].contains("first divergence at transaction #"),
        "{}",
        f[0]
    );
    assert!(f[0].contains("expected control-out SET_PARAMS"), "{}", f[0]);
    assert!(f[0].contains("got control-out SET_PARAMS"), "{}", f[0]);
    assert_eq!(device_notes(&replayed.trace, "replay-divergence").len(), 1);
    let failed: Vec<&str> = replayed.report.failed().iter().map(|r| r.id).collect();
    assert!(failed.contains(&"WIA-FAULT-NO-HANG"), "{failed:?}");
    // The scenario has one acquisition: the fault is placed in it, never in one that does
    // not exist.
    let message = no_hang_message(&replayed);
    assert!(message.contains("during acquisition 1"), "{message}");
    assert!(!message.contains("acquisition 2"), "{message}");
    let _ = std::fs::remove_dir_all(&dir);
}
