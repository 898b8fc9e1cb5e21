//! Replays fuzz inputs through the conformance fuzz harnesses without libFuzzer: the committed
//! seeds (`emulator/fuzz/seeds/<target>/`) and every input a target once failed on
//! (`emulator/fuzz/regressions/<target>/`), so `cargo test` keeps fixed crashes fixed.

#[path = "../../emulator/fuzz/src/conformance_harness.rs"]
mod conformance_harness;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Feeds every saved input of `target` to `harness`; fails naming the first input that panics.
fn replay(target: &str, harness: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../emulator/fuzz");
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
    assert!(
        !files.is_empty(),
        "no saved inputs for fuzz target {target}"
    );
    for path in &files {
        let data = std::fs::read(path).expect("readable fuzz input");
        if catch_unwind(AssertUnwindSafe(|| harness(&data))).is_err() {
            panic!("fuzz input {} fails again", path.display());
        }
    }
}

#[test]
fn scenario_file_inputs_replay() {
    replay("scenario_file", conformance_harness::scenario_file);
}

#[test]
fn driver_protocol_inputs_replay() {
    replay("driver_protocol", conformance_harness::driver_protocol);
}
