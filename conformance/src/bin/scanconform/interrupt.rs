//! SIGINT and SIGTERM during work that takes a while (`run`, `record`).
//!
//! The first signal asks the work to stop at the next run boundary: the scenario runs under way
//! are finished (each one's trace, verdict and capture are whole), no further run starts, and
//! the command writes what the finished runs give (table, JUnit, report, traces), says in one
//! line on stderr what it wrote and exits 128 + the signal's number (130, 143), as a program the
//! signal ended. A second signal ends the program at once with that status.
//!
//! The handlers are `signal-hook`'s (they only store into atomics, which is all a signal
//! handler may do); exec'd children start with the default dispositions again.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};

/// The first signal received (its number; 0 for none).
static RECEIVED: AtomicUsize = AtomicUsize::new(0);
/// Set by every signal; a signal that finds it set ends the program.
static SEEN: AtomicBool = AtomicBool::new(false);

/// A signal that asked the work to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interrupted(i32);

impl Interrupted {
    /// `SIGINT` or `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self.0 {
            SIGINT => "SIGINT",
            SIGTERM => "SIGTERM",
            _ => "a signal",
        }
    }

    /// 128 + the signal's number: 130 for SIGINT, 143 for SIGTERM.
    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(128u8.saturating_add(u8::try_from(self.0).unwrap_or(0)))
    }
}

/// Installs the handlers: from now on SIGINT and SIGTERM are [`received`] instead of ending
/// the program (a second one still ends it).
pub fn install() -> std::io::Result<()> {
    for sig in [SIGINT, SIGTERM] {
        // Registered first so that it sees SEEN as the earlier signal left it.
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, &SEEN)?;
        signal_hook::flag::register(sig, &SEEN)?;
        // Only the first signal's number is kept.
        signal_hook::flag::register_usize(sig, &RECEIVED, sig as usize)?;
    }
    Ok(())
}

/// The signal received since [`install`], if any.
pub fn received() -> Option<Interrupted> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        n => Some(Interrupted(i32::try_from(n).unwrap_or(SIGINT))),
    }
}
