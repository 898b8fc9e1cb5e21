//! Fuzz harness for the conformance runner's input files: scenario files.

use std::path::Path;

use scanconform::rules;
use scanconform::scenario::{self, LoadedScenario};

/// A scenario file's text: parse it, validate it against the rule catalogue, and place any
/// problem at a line and column. Never panics; every error is one line naming file:line:column.
pub fn scenario_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz/input.json");
    let parsed = match scenario::parse(text, path) {
        Ok(s) => s,
        Err(e) => {
            assert!(e.line >= 1 && e.column >= 1, "error without a place: {e}");
            return;
        }
    };
    let loaded = LoadedScenario {
        id: "fuzz/input".into(),
        path: path.to_path_buf(),
        scenario: parsed,
        text: text.to_string(),
    };
    if let Err(e) = loaded.validate(|id| rules::find(id).is_some()) {
        assert!(e.line >= 1 && e.column >= 1, "error without a place: {e}");
    }
}
