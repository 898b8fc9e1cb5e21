//! Fixture recording: run one scenario against a device once, keep the session, replay it.
//!
//! [`record`] runs a scenario with a [`RecordingObserver`] on the host and writes the
//! recording folder (`fixtures/recordings/FORMAT.md`): the device's descriptors and every
//! transaction with its timing ([`scanemu::capture::recording`]), the usbmon capture, and the
//! conformance trace as JSON lines (`trace.jsonl`) and text (`trace.txt`).
//!
//! [`replay`] runs a scenario against a recording instead of the emulated scanner
//! ([`scanemu::capture::replay::ReplayHost`]). [`compare_traces`] says whether a replay's trace equals
//! the recorded one, leaving out what a replay cannot know (see its documentation).

use std::path::{Path, PathBuf};
use std::rc::Rc;

use scanemu::capture::recording::{RecordingError, RecordingMeta, RecordingObserver};
use scanemu::host::DeviceInfo;
use scanemu::profile::ProfileError;

use crate::device;
use crate::driver::MiniDriver;
use crate::run::{self, RunError, RunOptions, RunResult, Transport};
use crate::scenario::{LoadedScenario, ServiceModel};
use crate::trace::{Actor, Trace, TraceError};

/// Why a recording could not be made or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The run itself could not be made.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The scenario's profile could not be loaded.
    #[error(transparent)]
    Profile(Box<ProfileError>),
    /// The recording could not be saved.
    #[error("--out {0}")]
    Save(RecordingError),
    /// A trace file could not be written.
    #[error("--out {}: {error}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The failure.
        error: std::io::Error,
    },
    /// The stored trace could not be read.
    #[error("{}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The failure.
        error: std::io::Error,
    },
    /// The stored trace is not a trace.
    #[error("{}: {error}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The first bad line.
        error: TraceError,
    },
}

/// The first line where a replay's trace departs from the recorded one (see
/// [`compare_traces`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: recorded {:?}, replayed {:?}", recorded.as_deref().unwrap_or("(end)"), replayed.as_deref().unwrap_or("(end)"))]
pub struct TraceMismatch {
    /// 1-based line of [`comparable_text`].
    pub line: usize,
    /// The recorded line, `None` past the end.
    pub recorded: Option<String>,
    /// The replayed line, `None` past the end.
    pub replayed: Option<String>,
}

/// The recorded conformance trace, as JSON lines.
pub const TRACE_FILE: &str = "trace.jsonl";
/// The recorded conformance trace, as text.
pub const TRACE_TEXT_FILE: &str = "trace.txt";

/// How a recording is made beyond scenario, service and driver.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RecordOptions {
    /// How the driver reaches the device (default: in-process).
    pub transport: Transport,
}

/// Runs `scenario` under `service` against `driver` and writes the recording into `out`
/// (created if missing). Returns the run, whose trace is the one stored.
pub fn record(
    scenario: &LoadedScenario,
    service: ServiceModel,
    driver_name: &str,
    driver: Rc<dyn MiniDriver>,
    profiles_dir: &Path,
    options: &RecordOptions,
    out: &Path,
) -> Result<RunResult, RecordError> {
    let profile =
        device::resolve_profile(&scenario.scenario.profile, scenario.folder(), profiles_dir)
            .map_err(|e| RecordError::Profile(Box::new(e)))?;
    let mut meta = RecordingMeta::new(
        "record",
        &DeviceInfo::default(),
        profile.usb.speed,
        profile.timing.motor_stop_us,
    );
    let transport = match options.transport {
        Transport::UsbIp => "usbip",
        _ => "inproc",
    };
    for (k, v) in [
        ("scenario", scenario.id.as_str()),
        ("service", service.name()),
        ("driver", driver_name),
        ("transport", transport),
        ("profile", scenario.scenario.profile.as_str()),
    ] {
        meta.provenance.insert(k.into(), v.into());
    }
    let recorder = Rc::new(RecordingObserver::new(meta));
    let run_options = RunOptions {
        transport: options.transport.clone(),
        record: Some(recorder.clone()),
        ..RunOptions::default()
    };
    let result = run::run_with(
        scenario,
        service,
        driver_name,
        driver,
        profiles_dir,
        &run_options,
    )?;
    let recording = recorder.recording();
    recording.save(out).map_err(RecordError::Save)?;
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|error| RecordError::Write { path, error })
    };
    write(TRACE_FILE, result.trace.to_json_lines())?;
    write(TRACE_TEXT_FILE, result.trace.render_text())?;
    Ok(result)
}

/// Runs `scenario` under `service` against `driver`, served by the recording in `recording`.
pub fn replay(
    scenario: &LoadedScenario,
    service: ServiceModel,
    driver_name: &str,
    driver: Rc<dyn MiniDriver>,
    profiles_dir: &Path,
    recording: &Path,
) -> Result<RunResult, RunError> {
    let options = RunOptions {
        replay: Some(recording.to_path_buf()),
        ..RunOptions::default()
    };
    run::run_with(
        scenario,
        service,
        driver_name,
        driver,
        profiles_dir,
        &options,
    )
}

/// Reads the trace stored with a recording.
pub fn load_trace(recording: &Path) -> Result<Trace, RecordError> {
    let path = recording.join(TRACE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) => return Err(RecordError::Read { path, error }),
    };
    Trace::from_json_lines(&text).map_err(|error| RecordError::Parse { path, error })
}

/// The part of a trace a replay reproduces, as text: every event but the device's own notes
/// (a replay knows the device only by its transfers, and says what it synthesized in notes
/// of its own).
pub fn comparable_text(trace: &Trace) -> String {
    Trace {
        events: trace
            .events
            .iter()
            .filter(|e| e.actor != Actor::Device)
            .cloned()
            .collect(),
    }
    .render_text()
}

/// `Ok` when `replayed` equals `recorded` in [`comparable_text`]; otherwise the first line
/// that differs, with its line number, as `Err`.
pub fn compare_traces(recorded: &Trace, replayed: &Trace) -> Result<(), TraceMismatch> {
    let (a, b) = (comparable_text(recorded), comparable_text(replayed));
    if a == b {
        return Ok(());
    }
    let (mut la, mut lb) = (a.lines(), b.lines());
    let mut line = 1;
    loop {
        match (la.next(), lb.next()) {
            (Some(x), Some(y)) if x == y => line += 1,
            (x, y) => {
                return Err(TraceMismatch {
                    line,
                    recorded: x.map(str::to_owned),
                    replayed: y.map(str::to_owned),
                })
            }
        }
    }
}
