//! Standard output of the subcommands. A reader that goes away (`scanconform list | head -5`)
//! mutes it instead of ending the program with a panic: the command finishes quietly, writes
//! its other artifacts (JUnit, report, traces) and exits with the status it would have had.

use std::fmt::Display;
use std::io::{ErrorKind, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once stdout's reader has gone away.
static MUTED: AtomicBool = AtomicBool::new(false);

/// Writes `text` as it is to stdout. A closed pipe mutes stdout (`Ok`); any other write error
/// is returned.
pub fn text(text: &str) -> std::io::Result<()> {
    if MUTED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => {
            MUTED.store(true, Ordering::Relaxed);
            Ok(())
        }
        other => other,
    }
}

/// Writes `line` and a newline to stdout, as [`text`].
pub fn line(line: impl Display) -> std::io::Result<()> {
    text(&format!("{line}\n"))
}
