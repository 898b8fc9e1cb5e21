//! The frontend's session with one backend: loads it, checks that it initialises and that its
//! device opens ([`Session::prepare`]), then plays scenario after scenario in real time
//! ([`Session::run`], the script itself in `play.rs`) and judges each run with the SANE
//! rules into a [`SaneRun`].
//!
//! SANE backends keep process-wide state (`sane_init`/`sane_exit`), so runs in one process are
//! serialised by a lock; each run is `sane_init`, `sane_open`, options, the script, `sane_close`
//! (if still open), `sane_exit`. A backend that drives an emulated device
//! ([`super::device::needs_device`]) is loaded afresh for every run, against a fresh device.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::device::DeviceError;
use super::ffi::{Backend, LoadError, Status};
use super::play::play;
use super::scenario::LoadedSaneScenario;
use super::target::Target;
use super::trace::{CancelLatency, Recorder, SaneTrace};
use crate::verdict::{RuleResult, RuleStatus};

static RUN_LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    RUN_LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a session cannot start; `Display` is one line (the CLI's exit-2 message).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The library does not load or is not a SANE backend.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// `sane_init` failed.
    #[error("{}: sane_init returned {}", .library.display(), .status.name())]
    Init {
        /// The library.
        library: PathBuf,
        /// What it returned.
        status: Status,
    },
    /// The device does not open.
    #[error("SANE device {device:?} of backend {backend} does not open: sane_open returned {} (devices listed: {})", .status.name(), if .listed.is_empty() { "none".to_string() } else { .listed.join(", ") })]
    Open {
        /// The device name tried.
        device: String,
        /// The backend.
        backend: String,
        /// What sane_open returned.
        status: Status,
        /// The devices the backend listed.
        listed: Vec<String>,
    },
    /// The libusb stand-in cannot be the process's libusb.
    #[error("sane:{backend}: {source}")]
    StandIn {
        /// The backend.
        backend: String,
        /// Why.
        source: DeviceError,
    },
    /// The emulated device cannot be served.
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// The capture file of one SANE run inside the `--pcap` folder: the scenario id with `/` turned
/// into `.`: `sane.cancel-blocked-read.pcap`.
pub fn pcap_file_name(scenario_id: &str) -> String {
    format!("{}.pcap", scenario_id.replace('/', "."))
}

/// A loaded backend and the device the runs open.
pub struct Session {
    /// The backend loaded once for every run; `None` for a backend driving an emulated device,
    /// which is loaded afresh for each run (see [`super::device`]).
    backend: Option<Backend>,
    /// What was asked for.
    pub target: Target,
    /// The device name passed to `sane_open`.
    pub device: String,
    /// The SANE_CONFIG_DIR in effect, if the runner set one.
    pub config_dir: Option<PathBuf>,
    /// For a backend driving an emulated device: the folder of device profiles.
    pub profiles: Option<PathBuf>,
    /// For a backend driving an emulated device: capture each run's USB traffic (the USB/IP
    /// server's URBs) as a usbmon pcap in this folder, named by [`pcap_file_name`] (default:
    /// none; see [`Session::capture_into`]).
    pcap: Option<PathBuf>,
}

/// How long the emulated device must be quiet after a run before its server stops, and the
/// longest the runner waits for that.
const SETTLE_QUIET: Duration = Duration::from_millis(60);
const SETTLE_CAP: Duration = Duration::from_millis(600);

/// The SANE_CONFIG_DIR and the device name a freshly loaded backend opens.
fn pick_device(backend: &Backend, target: &Target) -> Result<String, SessionError> {
    let (st, _) = backend.init();
    if st != Status::GOOD {
        return Err(SessionError::Init {
            library: target.library.clone(),
            status: st,
        });
    }
    let devices = backend.devices().unwrap_or_default();
    let device = match &target.device {
        None => devices.first().map(|d| d.name.clone()).unwrap_or_default(),
        Some(d) if devices.iter().any(|x| &x.name == d) => d.clone(),
        // `sane:test:0` for the device `test:0`.
        Some(d)
            if devices
                .iter()
                .any(|x| x.name == format!("{}:{d}", target.name)) =>
        {
            format!("{}:{d}", target.name)
        }
        Some(d) => d.clone(),
    };
    let opened = backend.open(&device).map(|h| h.close());
    backend.exit();
    if let Err(st) = opened {
        return Err(SessionError::Open {
            device,
            backend: target.name.clone(),
            status: st,
            listed: devices.into_iter().map(|d| d.name).collect(),
        });
    }
    Ok(device)
}

impl Session {
    /// Loads the backend, checks it initialises and that the device opens. `config_dir`, when
    /// given, becomes SANE_CONFIG_DIR (set before the library is loaded, as backends read it
    /// once).
    pub fn prepare(target: Target, config_dir: Option<&Path>) -> Result<Session, SessionError> {
        let _guard = lock();
        if let Some(dir) = config_dir {
            // Only this folder: no trailing ':' so the system's /etc/sane.d is not appended.
            std::env::set_var("SANE_CONFIG_DIR", dir);
        }
        let backend = Backend::load(&target.library, &target.name)?;
        let device = pick_device(&backend, &target)?;
        Ok(Session {
            backend: Some(backend),
            target,
            device,
            config_dir: config_dir.map(Path::to_path_buf),
            profiles: None,
            pcap: None,
        })
    }

    /// As [`Session::prepare`] for a backend that drives an emulated device
    /// ([`super::device::needs_device`]): makes the libusb stand-in the process's libusb, serves
    /// the default device (`escI-b7-flatbed` from `profiles`) to find the device name, and
    /// unloads the backend again: each run loads it afresh against its own device.
    pub fn prepare_with_device(
        target: Target,
        config_dir: Option<&Path>,
        profiles: &Path,
    ) -> Result<Session, SessionError> {
        let _guard = lock();
        if let Some(dir) = config_dir {
            std::env::set_var("SANE_CONFIG_DIR", dir);
        }
        let stand_in = |source| SessionError::StandIn {
            backend: target.name.clone(),
            source,
        };
        super::device::provide_stand_in().map_err(stand_in)?;
        let emulator = super::device::Emulator::start(
            profiles,
            profiles,
            &super::scenario::DeviceSpec::default(),
            Instant::now(),
            None,
        )?;
        let backend = Backend::load(&target.library, &target.name)?;
        super::device::check_only_stand_in().map_err(stand_in)?;
        let device = pick_device(&backend, &target);
        backend.call_void_if_exported("sanei_usb_exit");
        drop(backend);
        // Only the device name was wanted; its notes and (absent) capture are not.
        let _ = emulator.finish();
        Ok(Session {
            backend: None,
            target,
            device: device?,
            config_dir: config_dir.map(Path::to_path_buf),
            profiles: Some(profiles.to_path_buf()),
            pcap: None,
        })
    }

    /// Whether the runs drive an emulated device (and so have USB traffic to capture).
    pub fn has_device(&self) -> bool {
        self.profiles.is_some()
    }

    /// Captures every later run's USB traffic into `dir` (which must exist), one usbmon pcap per
    /// run named by [`pcap_file_name`]; only a session with an emulated device has any
    /// ([`Session::has_device`]), a session without one keeps `dir` and writes nothing.
    pub fn capture_into(&mut self, dir: &Path) {
        self.pcap = Some(dir.to_path_buf());
    }

    /// Plays one scenario.
    ///
    /// A backend call that never returns (a deadlock inside the library) cannot be recovered
    /// from in this process: a watchdog then prints one line naming the scenario and the call,
    /// and exits with status 1 instead of hanging.
    pub fn run(&self, s: &LoadedSaneScenario) -> SaneRun {
        let _guard = lock();
        let rec = Recorder::new();
        let _watchdog = Watchdog::start(s, &rec);
        let mut problems = Vec::new();
        let mut skipped = None;
        let mut frames = Vec::new();
        let mut device_events = Vec::new();
        match (&self.backend, &self.profiles) {
            (Some(backend), _) => {
                play(
                    backend,
                    &self.device,
                    s,
                    &rec,
                    &mut problems,
                    &mut skipped,
                    None,
                );
            }
            (None, Some(profiles)) => {
                let spec = s.scenario.device.clone().unwrap_or_default();
                let capture = self.pcap.as_ref().map(|d| d.join(pcap_file_name(&s.id)));
                match super::device::Emulator::start(
                    profiles,
                    s.folder(),
                    &spec,
                    rec.epoch(),
                    capture.as_deref(),
                ) {
                    Err(e) => problems.push(e.to_string()),
                    Ok(emulator) => {
                        match Backend::load(&self.target.library, &self.target.name) {
                            Err(e) => problems.push(e.to_string()),
                            Ok(backend) => {
                                play(
                                    &backend,
                                    &self.device,
                                    s,
                                    &rec,
                                    &mut problems,
                                    &mut skipped,
                                    Some(&mut frames),
                                );
                                emulator.settle(SETTLE_QUIET, SETTLE_CAP);
                                // Closes the backend's libusb context (and its connection).
                                backend.call_void_if_exported("sanei_usb_exit");
                            }
                        }
                        let (events, captured) = emulator.finish();
                        device_events = events;
                        if let Err(e) = captured {
                            problems.push(e.to_string());
                        }
                    }
                }
            }
            (None, None) => problems.push("the session has no backend".into()),
        }
        let mut trace = rec.finish();
        trace.device = device_events;
        trace.frames = frames;
        let results = if skipped.is_some() {
            Vec::new()
        } else {
            super::rules::check_all(&trace, &s.scenario)
        };
        if skipped.is_none() {
            for id in &s.scenario.rules {
                let judged = results
                    .iter()
                    .find(|r| r.id == id)
                    .is_some_and(|r| r.status != RuleStatus::NotApplicable);
                if !judged {
                    problems.push(format!(
                        "the scenario lists {id} but the run gave it nothing to judge"
                    ));
                }
            }
        }
        let latency = super::analysis::cancel_latencies(&trace);
        SaneRun {
            id: s.id.clone(),
            trace,
            results,
            problems,
            skipped,
            latency,
        }
    }
}

/// One scenario's run.
#[derive(Clone, Debug)]
pub struct SaneRun {
    /// `sane/<name>`.
    pub id: String,
    /// What happened.
    pub trace: SaneTrace,
    /// One result per SANE rule (empty when skipped).
    pub results: Vec<RuleResult>,
    /// Problems of the run itself (a read loop that timed out, a read that never blocked, a
    /// listed rule with nothing to judge). Never expected: they always fail the run.
    pub problems: Vec<String>,
    /// Why the scenario did not run against this backend (an option it lacks or refuses).
    pub skipped: Option<String>,
    /// Cancel latency in blocks of every frontend cancel of a device scan (emulated device
    /// only).
    pub latency: Vec<CancelLatency>,
}

impl SaneRun {
    /// The rules that failed, with their call index and message.
    pub fn failures(&self) -> Vec<(&'static str, usize, &str)> {
        self.results
            .iter()
            .filter_map(|r| match &r.status {
                RuleStatus::Fail { event, message } => Some((r.id, *event, message.as_str())),
                _ => None,
            })
            .collect()
    }
}

/// Beyond the scenario's own limits, how long a run may take before the watchdog gives up.
const WATCHDOG_SLACK: Duration = Duration::from_secs(60);

/// Ends the process with one line if a scenario run outlives its limits (see [`Session::run`]);
/// dropping it (the run finished) stops it.
struct Watchdog {
    done: Option<std::sync::mpsc::Sender<()>>,
}

impl Watchdog {
    fn start(s: &LoadedSaneScenario, rec: &Recorder) -> Watchdog {
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let limit = Duration::from_millis(
            s.scenario
                .timeout_ms
                .saturating_add(s.scenario.cancel_budget_ms),
        ) + WATCHDOG_SLACK;
        let id = s.id.clone();
        let rec = rec.clone();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(limit) {
                let call = rec.last_call().map_or_else(
                    || "none".to_string(),
                    |(name, thread, age_us)| {
                        format!(
                            "{name} (thread {}, called {:.1} s ago)",
                            thread.name(),
                            age_us as f64 / 1e6
                        )
                    },
                );
                eprintln!(
                    "scanconform: {id}: the run passed {} s without finishing (last backend call: {call}); stopping: a call stuck inside the backend cannot be recovered in this process",
                    limit.as_secs()
                );
                std::process::exit(1);
            }
        });
        Watchdog { done: Some(done) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}
