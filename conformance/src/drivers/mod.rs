//! The built-in drivers and the list of which rule each mutant breaks.
//!
//! The expected failures are data (`fixtures/mutants.json`), checked both ways by the test
//! suite: a mutant that passes, or that fails on any other rule, fails the suite.

pub mod external;
pub mod native;
pub mod wia2;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use self::native::{Flavor, Mutation};
use crate::driver::MiniDriver;

/// A driver shipped with the runner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuiltinDriver {
    /// Name used with `--driver`.
    pub name: &'static str,
    /// Which behaviour it has.
    pub flavor: Flavor,
    /// One line on what it does.
    pub description: &'static str,
}

/// Every built-in driver, correct ones first.
pub const BUILTIN: &[BuiltinDriver] = &[
    BuiltinDriver {
        name: "reference",
        flavor: Flavor::Reference,
        description: "correct; honours WIA_EVENT_CANCEL_IO by aborting its pending bulk read",
    },
    BuiltinDriver {
        name: "legacy-xp",
        flavor: Flavor::LegacyXp,
        description: "correct for XP; ignores WIA_EVENT_CANCEL_IO (as Microsoft's WIA 2.0 sample does) and says so",
    },
    mutant("mutant-data-after-sfalse", Mutation::DataAfterSFalse, "delivers one more band after a callback returned S_FALSE"),
    mutant("mutant-sok-on-cancel", Mutation::SOkOnCancel, "returns S_OK instead of S_FALSE when cancelled"),
    mutant("mutant-efail-on-cancel", Mutation::EFailOnCancel, "returns E_FAIL instead of S_FALSE when cancelled"),
    mutant("mutant-swallow-error", Mutation::SwallowError, "returns S_FALSE instead of the application's error"),
    mutant("mutant-no-device-cancel", Mutation::NoDeviceCancel, "stops reading on cancel but never tells the device"),
    mutant("mutant-no-status-poll", Mutation::NoStatusPoll, "sends the Cancel Request but does not wait for status OK"),
    mutant("mutant-slow-cancel", Mutation::SlowCancel, "lets a device that is still scanning go on for up to two seconds before stopping it"),
    mutant("mutant-halt-uncleared", Mutation::HaltUncleared, "leaves the halted endpoints of a device-initiated cancel uncleared"),
    mutant("mutant-stale-band", Mutation::StaleBand, "keeps a band read ahead across a cancel, so the next scan starts with it"),
    mutant("mutant-claims-async-ignores", Mutation::ClaimsAsyncIgnores, "claims asynchronous cancel but ignores WIA_EVENT_CANCEL_IO"),
    mutant("mutant-offset-gap", Mutation::OffsetGap, "reports band offsets 16 bytes too far from the third band on"),
    mutant("mutant-percent-backwards", Mutation::PercentBackwards, "reports a lower percentage on the third band"),
    mutant("mutant-hang-on-stall", Mutation::HangOnStall, "polls status forever when the device stalls during a cancel"),
    mutant("mutant-sparse-callbacks", Mutation::SparseCallbacks, "never calls back while it waits for data (warm-up, a late band)"),
    mutant("mutant-drop-short-band", Mutation::DropShortBand, "reads whole bands only, leaving a page's short last band in the device, and returns S_OK"),
    mutant("mutant-last-length-overrun", Mutation::LastLengthOverrun, "reports a full chunk (a whole band, at most lBufferSize) as lLength of a page's short last chunk"),
    mutant("mutant-band-per-callback", Mutation::BandPerCallback, "ignores lBufferSize and hands each whole band to one callback"),
    mutant("mutant-all-pages-as-one", Mutation::AllPagesAsOne, "takes pages = 0 (until the feeder is empty) for one page and returns S_OK with the feeder still running"),
    mutant("mutant-swallow-status-error", Mutation::SwallowStatusError, "turns the application's error from a status or new-page callback into S_FALSE"),
    mutant("mutant-slow-return", Mutation::SlowReturn, "stops the device promptly on a cancel, then waits three seconds before returning"),
    mutant("mutant-abort-then-reread", Mutation::AbortThenReread, "on WIA_EVENT_CANCEL_IO aborts its pending read, then reads once more before acting on the cancel"),
    mutant("mutant-pending-drain", Mutation::PendingDrain, "after a cancel posts a bulk read to drain the pipe and returns with it still pending"),
    mutant("mutant-status-once-per-second", Mutation::StatusOncePerSecond, "calls back only once a second while it waits for data, too rarely for a transfer shorter than ten seconds"),
];

const fn mutant(name: &'static str, m: Mutation, description: &'static str) -> BuiltinDriver {
    BuiltinDriver {
        name,
        flavor: Flavor::Mutant(m),
        description,
    }
}

/// The built-in driver called `name`.
pub fn find(name: &str) -> Option<&'static BuiltinDriver> {
    BUILTIN.iter().find(|d| d.name == name)
}

/// Why `fixtures/mutants.json` could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExpectedFailuresError {
    /// The file could not be read.
    #[error("{}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The failure.
        error: std::io::Error,
    },
    /// The file is not a JSON object of strings.
    #[error("{}:{}:{}: {error}", path.display(), error.line(), error.column())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        error: serde_json::Error,
    },
}

/// `fixtures/mutants.json`: mutant name -> the one rule ID it must fail.
pub fn load_expected_failures(
    path: &Path,
) -> Result<BTreeMap<String, String>, ExpectedFailuresError> {
    let text = std::fs::read_to_string(path).map_err(|error| ExpectedFailuresError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    serde_json::from_str(&text).map_err(|error| ExpectedFailuresError::Parse {
        path: path.to_path_buf(),
        error,
    })
}

/// Why `--driver NAME` names no driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// Neither a built-in driver nor `exec:`.
    #[error("unknown driver {name:?}: built-in drivers are {}", BUILTIN.iter().map(|d| d.name).collect::<Vec<_>>().join(", "))]
    Unknown {
        /// The name given.
        name: String,
    },
    /// An `exec:` command that cannot run.
    #[error(transparent)]
    Command(#[from] external::CommandError),
}

/// Builds the driver called `name` for one run; `exec:'CMD ARGS'` is an external driver process
/// (see `conformance/DRIVER-PROTOCOL.md`), started anew for each run.
pub fn instantiate(name: &str) -> Result<Rc<dyn MiniDriver>, DriverError> {
    if let Some(command) = name.strip_prefix("exec:") {
        let config = external::ExternalConfig::from_env();
        return Ok(Rc::new(external::ExternalDriver::new(command, config)?));
    }
    match find(name) {
        Some(d) => Ok(Rc::new(native::NativeDriver::new(d.flavor))),
        None => Err(DriverError::Unknown {
            name: name.to_string(),
        }),
    }
}
