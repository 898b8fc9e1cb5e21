//! Replays fuzz inputs through the emulator's fuzz harnesses without libFuzzer: the committed
//! seeds (`emulator/fuzz/seeds/<target>/`) and every input a target once failed on
//! (`emulator/fuzz/regressions/<target>/`), so `cargo test` keeps fixed crashes fixed.

#[path = "../fuzz/src/emulator_harness.rs"]
mod emulator_harness;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Every saved input of `target`, sorted by path.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for kind in ["seeds", "regressions"] {
        let Ok(dir) = std::fs::read_dir(fuzz.join(kind).join(target)) else {
            continue;
        };
        for entry in dir {
            let path = entry.expect("readable fuzz input folder").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).expect("readable fuzz input");
            (p, data)
        })
        .collect()
}

/// Feeds every saved input of `target` to `harness`; fails naming the first input that panics.
fn replay(target: &str, harness: fn(&[u8])) {
    let all = inputs(target);
    assert!(!all.is_empty(), "no saved inputs for fuzz target {target}");
    for (path, data) in &all {
        if catch_unwind(AssertUnwindSafe(|| harness(data))).is_err() {
            panic!("fuzz input {} fails again", path.display());
        }
    }
}

#[test]
fn control_requests_inputs_replay() {
    replay("control_requests", emulator_harness::control_requests);
}

#[test]
fn host_transfers_inputs_replay() {
    replay("host_transfers", emulator_harness::host_transfers);
}

#[test]
fn profile_file_inputs_replay() {
    replay("profile_file", emulator_harness::profile_file);
}

#[test]
fn protocol_payloads_inputs_replay() {
    replay("protocol_payloads", emulator_harness::protocol_payloads);
}

#[test]
fn usbip_messages_inputs_replay() {
    replay("usbip_messages", emulator_harness::usbip_messages);
}

#[test]
fn esci_wire_inputs_replay() {
    replay("esci_wire", emulator_harness::esci_wire);
}

#[test]
fn usbmon_capture_inputs_replay() {
    replay("usbmon_capture", emulator_harness::usbmon_capture);
}
