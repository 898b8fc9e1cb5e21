//! Fuzz harnesses for the conformance runner's outside inputs: scenario files and the lines an
//! external driver writes.

use std::path::Path;

use scanconform::drivers::external::{parse_driver_message, replay_driver_lines};
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

/// What a driver writes in the external driver protocol (`conformance/DRIVER-PROTOCOL.md`):
/// each line through [`parse_driver_message`] (it names a message type or gives one line of
/// error), and all the lines as one driver's side of a run through [`replay_driver_lines`]
/// (the turn rules and, in version 2, the submitted transfers: it accepts them all or names
/// the first fault in one line). Never panics.
pub fn driver_protocol(data: &[u8]) {
    let one_line = |e: &str| {
        assert!(
            !e.is_empty() && !e.contains('\n'),
            "the error is not one line: {e:?}"
        )
    };
    for line in data.split(|b| *b == b'\n') {
        match parse_driver_message(line).map_err(|e| e.to_string()) {
            Ok(name) => assert!(!name.is_empty(), "a message without a type name"),
            Err(e) => one_line(&e),
        }
    }
    match replay_driver_lines(data.split(|b| *b == b'\n')) {
        Ok(n) => assert!(n <= data.len() + 1, "more messages than lines"),
        Err(e) => {
            assert!(
                e.line >= 1 && e.line <= data.len() + 1,
                "line {} of none",
                e.line
            );
            one_line(&e.to_string())
        }
    }
}
