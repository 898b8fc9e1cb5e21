//! Fixture recording: run one scenario against a device once, keep the session, replay it.
//!
//! One path serves both driver models: a [`Session`] is a scenario with its driver, WIA 1.0
//! ([`Wia1Session`]) or WIA 2.0 ([`Wia2Session`]), and says how it runs; everything else is
//! shared. [`record_session`] runs one with a [`RecordingObserver`] on the host and writes the
//! recording folder (`fixtures/recordings/FORMAT.md`): the device's descriptors and every
//! transaction with its timing ([`scanemu::capture::recording`]), the usbmon capture, the
//! provenance naming the [`DriverModel`], and the conformance trace as JSON lines
//! (`trace.jsonl`) and text (`trace.txt`).
//!
//! [`replay_session`] runs a session against a recording instead of the emulated scanner
//! ([`scanemu::capture::replay::ReplayHost`]); a recording of the other driver model is
//! refused ([`load_for_replay`], which every replay goes through). [`compare_traces`] says
//! whether a replay's trace equals the recorded one, leaving out what a replay cannot know
//! (see its documentation). [`record`] and [`replay`] are the WIA 1.0 shorthands.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use scanemu::capture::recording::{RecordingError, RecordingMeta, RecordingObserver};
use scanemu::host::DeviceInfo;
use scanemu::profile::Profile;

use crate::driver::MiniDriver;
use crate::drivers::wia2::Factory2;
use crate::run::wia2::Run2Result;
use crate::run::{self, RunError, RunOptions, RunResult, Transport};
pub use crate::run::{load_for_replay, DriverModel, UnknownModel};
use crate::scenario::wia2::LoadedScenario2;
use crate::scenario::{LoadedScenario, ServiceModel};
use crate::trace::{Actor, Trace, TraceError};

/// Why a recording could not be made or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The run itself could not be made.
    #[error(transparent)]
    Run(#[from] RunError),
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

/// How a recording is made beyond the session itself.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RecordOptions {
    /// How the driver reaches the device (default: in-process).
    pub transport: Transport,
}

/// What a run returns, whatever its driver model.
pub trait RunOutcome {
    /// The run's trace.
    fn trace(&self) -> &Trace;
    /// True when no rule failed.
    fn passed(&self) -> bool;
}

impl RunOutcome for RunResult {
    fn trace(&self) -> &Trace {
        &self.trace
    }

    fn passed(&self) -> bool {
        RunResult::passed(self)
    }
}

impl RunOutcome for Run2Result {
    fn trace(&self) -> &Trace {
        &self.trace
    }

    fn passed(&self) -> bool {
        Run2Result::passed(self)
    }
}

/// One scenario run that can be recorded and replayed: a scenario and a driver of one model.
/// [`record_session`] and [`replay_session`] take any; [`Wia1Session`] and [`Wia2Session`] are
/// the two there are.
pub trait Session {
    /// What its run returns.
    type Outcome: RunOutcome;

    /// The driver model.
    fn model(&self) -> DriverModel;

    /// What `recording.json`'s provenance says of the session besides its model and
    /// transport: scenario, service (WIA 1.0), driver, profile.
    fn provenance(&self) -> Vec<(&'static str, String)>;

    /// The scenario's profile, its scan settings checked against it.
    fn profile(&self, profiles_dir: &Path) -> Result<Profile, RunError>;

    /// Runs the session with `options` (a recording or a replay among them).
    fn run(&self, profiles_dir: &Path, options: &RunOptions) -> Result<Self::Outcome, RunError>;
}

/// A WIA 1.0 session: a scenario under one service model, against one driver instance.
#[derive(Clone)]
pub struct Wia1Session<'a> {
    /// The scenario.
    pub scenario: &'a LoadedScenario,
    /// The service model.
    pub service: ServiceModel,
    /// The driver's name (`--driver`).
    pub driver_name: &'a str,
    /// The driver.
    pub driver: Rc<dyn MiniDriver>,
}

impl Session for Wia1Session<'_> {
    type Outcome = RunResult;

    fn model(&self) -> DriverModel {
        DriverModel::Wia1
    }

    fn provenance(&self) -> Vec<(&'static str, String)> {
        vec![
            ("scenario", self.scenario.id.clone()),
            ("service", self.service.name().to_string()),
            ("driver", self.driver_name.to_string()),
            ("profile", self.scenario.scenario.profile.clone()),
        ]
    }

    fn profile(&self, profiles_dir: &Path) -> Result<Profile, RunError> {
        run::load_profile(self.scenario, profiles_dir)
    }

    fn run(&self, profiles_dir: &Path, options: &RunOptions) -> Result<RunResult, RunError> {
        run::run_with(
            self.scenario,
            self.service,
            self.driver_name,
            self.driver.clone(),
            profiles_dir,
            options,
        )
    }
}

/// A WIA 2.0 session: a stream-transfer scenario against the driver instances a factory makes
/// (the service loads a new one when it restarts).
#[derive(Clone)]
pub struct Wia2Session<'a> {
    /// The scenario.
    pub scenario: &'a LoadedScenario2,
    /// The driver's name (`--driver`).
    pub driver_name: &'a str,
    /// Makes the driver's instances.
    pub factory: Factory2,
}

impl Session for Wia2Session<'_> {
    type Outcome = Run2Result;

    fn model(&self) -> DriverModel {
        DriverModel::Wia2
    }

    fn provenance(&self) -> Vec<(&'static str, String)> {
        vec![
            ("scenario", self.scenario.id.clone()),
            ("driver", self.driver_name.to_string()),
            ("profile", self.scenario.scenario.profile.clone()),
        ]
    }

    fn profile(&self, profiles_dir: &Path) -> Result<Profile, RunError> {
        run::wia2::load_profile(self.scenario, profiles_dir)
    }

    fn run(&self, profiles_dir: &Path, options: &RunOptions) -> Result<Run2Result, RunError> {
        run::wia2::run2_with(
            self.scenario,
            self.driver_name,
            self.factory.clone(),
            profiles_dir,
            options,
        )
    }
}

/// Runs `session` and writes the recording into `out` (created if missing): the transactions,
/// the capture, and `recording.json` whose provenance names the driver model, scenario,
/// service (WIA 1.0), driver, transport and profile. Returns the run, whose trace is the one
/// stored.
pub fn record_session<S: Session>(
    session: &S,
    profiles_dir: &Path,
    options: &RecordOptions,
    out: &Path,
) -> Result<S::Outcome, RecordError> {
    let profile = session.profile(profiles_dir)?;
    let mut meta = RecordingMeta::new(
        "record",
        &DeviceInfo::default(),
        profile.usb.speed,
        profile.timing.motor_stop_us,
    );
    let transport = match options.transport {
        Transport::UsbIp => "usbip",
        Transport::Libusb => "libusb",
        _ => "inproc",
    };
    let provenance = session.provenance().into_iter().chain([
        (
            DriverModel::PROVENANCE_KEY,
            session.model().name().to_string(),
        ),
        ("transport", transport.to_string()),
    ]);
    meta.provenance
        .extend(provenance.map(|(k, v)| (k.to_string(), v)));
    let recorder = Rc::new(RecordingObserver::new(meta));
    let run_options = RunOptions {
        transport: options.transport.clone(),
        record: Some(recorder.clone()),
        ..RunOptions::default()
    };
    let result = session.run(profiles_dir, &run_options)?;
    let recording = recorder.recording();
    recording.save(out).map_err(RecordError::Save)?;
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|error| RecordError::Write { path, error })
    };
    write(TRACE_FILE, result.trace().to_json_lines())?;
    write(TRACE_TEXT_FILE, result.trace().render_text())?;
    Ok(result)
}

/// Runs `session` in process, served by the recording in `recording` instead of the emulated
/// scanner. A recording of the other driver model is refused ([`load_for_replay`]).
pub fn replay_session<S: Session>(
    session: &S,
    profiles_dir: &Path,
    recording: &Path,
) -> Result<S::Outcome, RunError> {
    let options = RunOptions {
        replay: Some(recording.to_path_buf()),
        ..RunOptions::default()
    };
    session.run(profiles_dir, &options)
}

/// [`record_session`] of a WIA 1.0 session: `scenario` under `service` against `driver`.
pub fn record(
    scenario: &LoadedScenario,
    service: ServiceModel,
    driver_name: &str,
    driver: Rc<dyn MiniDriver>,
    profiles_dir: &Path,
    options: &RecordOptions,
    out: &Path,
) -> Result<RunResult, RecordError> {
    let session = Wia1Session {
        scenario,
        service,
        driver_name,
        driver,
    };
    record_session(&session, profiles_dir, options, out)
}

/// [`replay_session`] of a WIA 1.0 session: `scenario` under `service` against `driver`.
pub fn replay(
    scenario: &LoadedScenario,
    service: ServiceModel,
    driver_name: &str,
    driver: Rc<dyn MiniDriver>,
    profiles_dir: &Path,
    recording: &Path,
) -> Result<RunResult, RunError> {
    let session = Wia1Session {
        scenario,
        service,
        driver_name,
        driver,
    };
    replay_session(&session, profiles_dir, recording)
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
