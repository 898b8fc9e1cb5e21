//! Replays fuzz inputs through the scenario-file fuzz harness without libFuzzer: the committed
//! seeds (`emulator/fuzz/seeds/scenario_file/`) and every input the target once failed on
//! (`emulator/fuzz/regressions/scenario_file/`), so `cargo test` keeps fixed crashes fixed.

#[path = "../../emulator/fuzz/src/conformance_harness.rs"]
mod conformance_harness;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

#[test]
fn scenario_file_inputs_replay() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../emulator/fuzz");
    let mut files = Vec::new();
    for kind in ["seeds", "regressions"] {
        let Ok(dir) = std::fs::read_dir(fuzz.join(kind).join("scenario_file")) else {
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
        "no saved inputs for fuzz target scenario_file"
    );
    for path in &files {
        let data = std::fs::read(path).expect("readable fuzz input");
        if catch_unwind(AssertUnwindSafe(|| {
            conformance_harness::scenario_file(&data)
        }))
        .is_err()
        {
            panic!("fuzz input {} fails again", path.display());
        }
    }
}
