//! One run: one scenario under one service model against one driver, then the rules.
//!
//! [`run_with`] does five things in order, each in a function of its own:
//! 1. loads the scenario's profile and checks the scan settings against it;
//! 2. builds the host the driver uses (`transport.rs`): in-process in virtual time by
//!    default, or a replay of a recording of the driver's model ([`DriverModel`],
//!    [`load_for_replay`]), or the device over USB/IP or libusb in real time; every host reports
//!    to the trace (`observe.rs`), through a pcap capture and a recording when asked for;
//! 3. hands the driver its [`RunContext`] ([`MiniDriver::begin_run`]);
//! 4. plays the roles (`crate::roles`): the application and the service, on a [`Sim`] until
//!    the application is done or the scenario's budget runs out (a hang, recorded as a
//!    `driver-fault`);
//! 5. closes the link, finishes the trace and checks every rule over it.
//!
//! The trace is one recorder that the roles, the host's observer and the driver's context all
//! write to; the finished [`Trace`] is what [`crate::rules::check_all`] judges.

mod observe;
pub mod parallel;
mod transport;
mod urb;
pub mod wia2;

use std::path::{Path, PathBuf};
use std::rc::Rc;

use scanemu::capture::recording::{Recording, RecordingError, RecordingMeta, RecordingObserver};
use scanemu::engine::{Fault, JobError};
use scanemu::personality::NoteKind;
use scanemu::profile::{Profile, ProfileError};
use scanemu::sim::{Sim, SimError};
use scanemu::time::{Duration, Instant};

use crate::device;
use crate::driver::{MiniDriver, RunContext, Urb, UsbRequest};
use crate::roles::app::Application;
use crate::roles::service::Service;
use crate::roles::RoleTrace;
use crate::rules::lag::LagProbe;
use crate::rules::{self, RuleReport, RunFacts};
use crate::scenario::{LoadedScenario, ServiceModel};
use crate::trace::{Actor, Kind, Recorder, Trace};

use self::observe::TraceObserver;
pub use self::transport::{pcap_file_name, Transport, LIBUSB_FEATURE_MISSING};
use self::transport::{DeviceSetup, Taps};
use self::urb::Submitter;

/// A problem with a run's inputs or surroundings (not with the driver): exit status 2.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The scenario's profile could not be loaded.
    #[error("{}: profile {profile:?}: {error}", scenario.display())]
    Profile {
        /// The scenario file.
        scenario: PathBuf,
        /// The profile it names.
        profile: String,
        /// Why it could not be loaded.
        error: Box<ProfileError>,
    },
    /// The scenario's scan settings do not fit its profile's optics.
    #[error("{}: scan settings do not fit profile {profile:?}: {error}", scenario.display())]
    ScanSettings {
        /// The scenario file.
        scenario: PathBuf,
        /// The profile it names.
        profile: String,
        /// What does not fit.
        error: JobError,
    },
    /// The host could not reach or enumerate the device.
    #[error("{}: enumeration failed: {reason}", scenario.display())]
    Enumeration {
        /// The scenario file.
        scenario: PathBuf,
        /// What the transport said.
        reason: String,
    },
    /// The recording to replay could not be loaded.
    #[error("replay: {0}")]
    Replay(RecordingError),
    /// The recording to replay holds a session of the other driver model.
    #[error(
        "replay: {}: a {} recording (a session of {}), which {driver}, a {} driver, cannot follow; replay it with a {} driver",
        dir.display(),
        recorded.label(),
        recorded_driver.as_deref().unwrap_or("an unnamed driver"),
        model.label(),
        recorded.label()
    )]
    ReplayModel {
        /// The recording folder.
        dir: PathBuf,
        /// The model its provenance names (WIA 1.0 when it names none).
        recorded: DriverModel,
        /// The driver its provenance names.
        recorded_driver: Option<String>,
        /// The model of the driver given.
        model: DriverModel,
        /// The driver given.
        driver: String,
    },
    /// The recording's provenance names a driver model that does not exist.
    #[error("replay: {}: recording.json: {error}", dir.display())]
    ReplayModelUnknown {
        /// The recording folder.
        dir: PathBuf,
        /// The model it names.
        error: UnknownModel,
    },
    /// The pcap capture could not be written.
    #[error("--pcap {}: {error}", path.display())]
    Pcap {
        /// The capture file.
        path: PathBuf,
        /// The failure.
        error: std::io::Error,
    },
    /// `--transport libusb` in a build without the `libusb` feature.
    #[error("{LIBUSB_FEATURE_MISSING}")]
    LibusbFeatureMissing,
    /// `--transport libusb` without the scanlab stand-in as the process's libusb.
    #[error("{0}")]
    Libusb(String),
}

/// A `model` in a recording's provenance that names no [`DriverModel`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("provenance model {0:?} is neither wia1 nor wia2")]
pub struct UnknownModel(pub String);

/// The driver contract a run's driver speaks, and so the one a recorded session was made with.
/// A replay takes a driver of the recording's model only ([`load_for_replay`]): the
/// transactions of a WIA 1.0 acquisition and of a WIA 2.0 transfer differ from the first
/// request on, so a driver of the other model could only diverge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverModel {
    /// WIA 1.0: `drvAcquireItemData` and the banded data callback, under the XP or Vista
    /// service model.
    Wia1,
    /// WIA 2.0: stream transfers through `IWiaMiniDrvTransferCallback` (`conformance/WIA2.md`).
    Wia2,
}

impl DriverModel {
    /// The provenance key of `recording.json` that names the model.
    pub const PROVENANCE_KEY: &'static str = "model";

    /// The model's name in `recording.json`: `wia1` or `wia2`.
    pub fn name(self) -> &'static str {
        match self {
            DriverModel::Wia1 => "wia1",
            DriverModel::Wia2 => "wia2",
        }
    }

    /// The model for people: `WIA 1.0` or `WIA 2.0`.
    pub fn label(self) -> &'static str {
        match self {
            DriverModel::Wia1 => "WIA 1.0",
            DriverModel::Wia2 => "WIA 2.0",
        }
    }

    /// The model a recording's provenance names; a recording that names none was made before
    /// WIA 2.0 sessions could be recorded (or imported from a capture) and is WIA 1.0.
    pub fn of(meta: &RecordingMeta) -> Result<DriverModel, UnknownModel> {
        match meta
            .provenance
            .get(Self::PROVENANCE_KEY)
            .map(String::as_str)
        {
            None | Some("wia1") => Ok(DriverModel::Wia1),
            Some("wia2") => Ok(DriverModel::Wia2),
            Some(other) => Err(UnknownModel(other.to_string())),
        }
    }
}

/// The recording in `dir`, for a replay by `driver`, a driver of `model`: refused when the
/// recording holds a session of the other model (or names a model that does not exist).
pub fn load_for_replay(
    dir: &Path,
    model: DriverModel,
    driver: &str,
) -> Result<Recording, RunError> {
    let recording = Recording::load(dir).map_err(RunError::Replay)?;
    let recorded =
        DriverModel::of(&recording.meta).map_err(|error| RunError::ReplayModelUnknown {
            dir: dir.to_path_buf(),
            error,
        })?;
    if recorded != model {
        return Err(RunError::ReplayModel {
            dir: dir.to_path_buf(),
            recorded,
            recorded_driver: recording.meta.provenance.get("driver").cloned(),
            model,
            driver: driver.to_string(),
        });
    }
    Ok(recording)
}

/// Everything one run produced.
#[derive(Debug)]
pub struct RunResult {
    /// `<group>/<name>` of the scenario.
    pub scenario: String,
    /// The service model.
    pub service: ServiceModel,
    /// The driver's name.
    pub driver: String,
    /// The trace.
    pub trace: Trace,
    /// Rule results and metrics.
    pub report: RuleReport,
    /// True when the driver claimed asynchronous cancel support.
    pub async_cancel: bool,
}

impl RunResult {
    /// True when no rule failed.
    pub fn passed(&self) -> bool {
        self.report.failed().is_empty()
    }
}

/// Options of a run beyond the scenario, service and driver.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RunOptions {
    /// How the driver reaches the device (default: in-process).
    pub transport: Transport,
    /// Run on the wall clock ([`Sim::realtime`]) instead of virtual time (default: false;
    /// implied by [`Transport::UsbIp`] and [`Transport::Libusb`]).
    pub realtime: bool,
    /// Capture every transfer of the run as a usbmon pcap into this folder (created if
    /// missing), one file per run named by [`pcap_file_name`] (default: no capture).
    pub pcap: Option<PathBuf>,
    /// Keep every transfer and device note of the run in this recording (default: none; see
    /// [`crate::record`]).
    pub record: Option<Rc<RecordingObserver>>,
    /// Serve the recording in this folder instead of the emulated scanner, in process or over
    /// the transport (default: none). It must hold a session of the run's driver model
    /// ([`load_for_replay`]). A driver that departs from it gets a `DriverFault` naming the
    /// first divergent transaction.
    pub replay: Option<PathBuf>,
    /// Make every departure from the replayed recording a divergence (default false; see
    /// `scanemu::capture::replay::ReplayConfig::strict`).
    pub strict_replay: bool,
}

/// Real-time runs only take scenarios whose virtual-time run lasts at most this long
/// (see [`realtime_skip_reason`]): longer ones would make a catalog run take minutes.
pub const REALTIME_MAX_US: u64 = 3_000_000;

/// Why `scenario` is left out of real-time runs, or `None` if it belongs to the real-time
/// subset. The subset is decided by running the scenario once in virtual time (milliseconds
/// of wall time) with the same driver: a scenario whose trace ends later than
/// [`REALTIME_MAX_US`] is skipped. What real-time runs check, and with what tolerance on time:
/// - every rule is checked as in virtual time; the time-based ones already carry slack that
///   covers loopback latency: WIA-CANCEL-IO-ASAP (a cancel on the wire within 10 ms of
///   WIA_EVENT_CANCEL_IO), idle after cancel (the motor stop time + 50 ms), callback cadence
///   (1.5 x the limit) and the scenario's hang budget;
/// - those rules measure each interval net of host lag (`rules::lag`): a probe thread samples
///   how long the run's threads waited for a CPU, and that time is taken off the interval, so
///   scheduler lag on a loaded machine cannot fail a correct driver while a driver that is
///   slow on its own still fails; the metrics report the lag (`host_lag_us`,
///   `cancel_to_idle_lag_us`);
/// - events recorded inside one MiniDrvCallback (the application's answer, CancelPendingIO,
///   the notify and the callback) share one timestamp, as they do in virtual time, so rules
///   that compare "same instant" keep their meaning;
/// - traces are not compared with snapshots (real time is not byte-identical); device notes
///   come from the server thread, stamped on the same clock as the driver's transfers;
/// - a scenario with a fault scheduled at a band that never fires in its virtual-time run is
///   skipped too: the driver outruns that fault by design (by under a millisecond in the
///   `*-during-cancel` scenarios), and on a loaded machine the wall clock cannot keep that
///   order, so the verdict would flip with the load.
pub fn realtime_skip_reason(
    scenario: &LoadedScenario,
    service: ServiceModel,
    driver_name: &str,
    driver: Rc<dyn MiniDriver>,
    profiles_dir: &Path,
) -> Result<Option<String>, RunError> {
    let r = run(scenario, service, driver_name, driver, profiles_dir)?;
    Ok(too_long_for_realtime(&r.trace)
        .or_else(|| unfired_fault(&r.trace, &scenario.scenario.faults)))
}

/// A real-time skip reason both driver models give: the virtual-time run whose `trace` this
/// is lasts longer than [`REALTIME_MAX_US`].
pub(crate) fn too_long_for_realtime(trace: &Trace) -> Option<String> {
    let end = trace.events.last().map_or(0, |e| e.at_us);
    (end > REALTIME_MAX_US).then(|| {
        format!(
            "lasts {} in virtual time, over the real-time limit of {}",
            Duration::from_micros(end),
            Duration::from_micros(REALTIME_MAX_US)
        )
    })
}

/// A real-time skip reason both driver models give: one of the scenario's `faults` at a band
/// never fires in its virtual-time run (whose `trace` this is).
///
/// Such a fault is one the driver outruns by design (the `*-during-cancel` scenarios: the
/// device's fault comes under a millisecond after the driver's cancel). On the wall clock a
/// loaded machine delays the driver past it and the scenario tests another order than the one
/// it was written for.
pub(crate) fn unfired_fault(trace: &Trace, faults: &[Fault]) -> Option<String> {
    let fired = |page: u16, band: u32| {
        trace.events.iter().any(|e| {
            matches!(&e.kind, Kind::Device { what: NoteKind::Fault, page: p, value, .. }
                if *p == u32::from(page) && *value == u64::from(band))
        })
    };
    faults.iter().find_map(|f| {
        let (page, band) = f.position().filter(|&(p, b)| !fired(p, b))?;
        Some(format!(
            "its {} fault at page {page} band {band} never fires in virtual time: the driver \
             outruns it by design, an order the wall clock cannot keep on a loaded machine",
            f.kind().name()
        ))
    })
}

/// Runs `scenario` under `service` against `driver`, with profiles from `profiles_dir`, in
/// process and in virtual time.
pub fn run(
    scenario: &LoadedScenario,
    service: ServiceModel,
    driver_name: &str,
    driver: Rc<dyn MiniDriver>,
    profiles_dir: &Path,
) -> Result<RunResult, RunError> {
    run_with(
        scenario,
        service,
        driver_name,
        driver,
        profiles_dir,
        &RunOptions::default(),
    )
}

/// [`run`] with explicit [`RunOptions`]. See the module documentation.
pub fn run_with(
    scenario: &LoadedScenario,
    service: ServiceModel,
    driver_name: &str,
    driver: Rc<dyn MiniDriver>,
    profiles_dir: &Path,
    options: &RunOptions,
) -> Result<RunResult, RunError> {
    let sc = &scenario.scenario;
    let profile = load_profile(scenario, profiles_dir)?;
    let w = Wiring::open(
        &scenario.path,
        &profile,
        &sc.faults,
        &pcap_file_name(&scenario.id, service),
        options,
        transport::Replay::load(options, DriverModel::Wia1, driver_name)?,
    )?;
    let (sim, link) = (&w.sim, &w.link);
    let urbs = Submitter::new(sim.clone(), link.host.clone(), Some(link.observer.clone()));
    driver.begin_run(Rc::new(DriverContext {
        sim: sim.clone(),
        rec: w.rec.clone(),
        urbs: urbs.clone(),
    }));
    let async_cancel = driver.supports_async_cancel();
    let probe = w.lag_probe();
    let host = Hosted {
        host: link.host.clone(),
        unstarted: urbs.unstarted(),
    };
    play(scenario, service, &driver, host, sim, &w.rec);
    drop(urbs);
    driver.end_run();
    let (_, rec) = w.close()?;
    let host_lag = probe.map(LagProbe::finish);
    let trace = rec.finish();
    let report = rules::check_all(&RunFacts {
        trace: &trace,
        scenario: sc,
        service,
        async_cancel,
        motor_stop_us: profile.timing.motor_stop_us,
        host_lag: host_lag.as_ref(),
    });
    Ok(RunResult {
        scenario: scenario.id.clone(),
        service,
        driver: driver_name.to_string(),
        trace,
        report,
        async_cancel,
    })
}

/// What a run of either driver model sets up before its driver starts and closes after it:
/// the clock, the trace, the capture and the device behind the chosen transport.
struct Wiring {
    /// On the wall clock (USB/IP, libusb, `--realtime`) rather than in virtual time.
    realtime: bool,
    sim: Sim,
    rec: Recorder,
    observer: Rc<TraceObserver>,
    pcap: Option<(Rc<transport::PcapCapture>, PathBuf)>,
    link: transport::Link,
}

impl Wiring {
    /// The scenario at `scenario`'s device (`profile` with the profile's and the scenario's
    /// `faults`, or `replay` instead) behind `options`' transport, its USB capture written as
    /// `pcap_name` under `options.pcap`, its recording to `options.record`.
    fn open(
        scenario: &Path,
        profile: &Profile,
        faults: &[scanemu::engine::Fault],
        pcap_name: &str,
        options: &RunOptions,
        replay: Option<transport::Replay>,
    ) -> Result<Wiring, RunError> {
        let realtime = options.realtime || options.transport != Transport::InProcess;
        let sim = if realtime {
            Sim::realtime()
        } else {
            Sim::new()
        };
        let rec = Recorder::new();
        let observer = Rc::new(TraceObserver::new(rec.clone()));
        let pcap = match &options.pcap {
            Some(dir) => Some(transport::open_pcap(
                dir,
                pcap_name,
                profile,
                observer.clone(),
            )?),
            None => None,
        };
        let taps = Taps {
            trace: observer.clone(),
            pcap: pcap.as_ref().map(|(p, _)| p.clone()),
            record: options.record.clone(),
        };
        let setup = DeviceSetup {
            profile,
            faults: device::faults(profile, faults),
        };
        let link = transport::connect(&options.transport, replay, setup, &sim, &taps, scenario)?;
        Ok(Wiring {
            realtime,
            sim,
            rec,
            observer,
            pcap,
            link,
        })
    }

    /// In real time, the probe of how long the run's threads wait for a CPU, on the trace's
    /// clock (the time-based rules take that lag off their intervals).
    fn lag_probe(&self) -> Option<LagProbe> {
        self.realtime.then(|| {
            let since = std::time::Duration::from_micros(self.sim.now().total_micros());
            let epoch = std::time::Instant::now()
                .checked_sub(since)
                .unwrap_or_else(std::time::Instant::now);
            LagProbe::start(epoch)
        })
    }

    /// Closes the device's link (what it left pending goes into the trace) and finishes the
    /// capture; returns the clock and the trace's recorder for what the run adds last.
    fn close(self) -> Result<(Sim, Recorder), RunError> {
        self.link.close(self.sim.now(), &self.observer, &self.rec);
        if let Some((p, path)) = self.pcap {
            p.finish().map_err(|error| RunError::Pcap { path, error })?;
        }
        Ok((self.sim, self.rec))
    }
}

/// The scenario's profile, with the scan settings checked against its optics.
pub fn load_profile(scenario: &LoadedScenario, profiles_dir: &Path) -> Result<Profile, RunError> {
    let sc = &scenario.scenario;
    let profile =
        device::resolve_profile(&sc.profile, scenario.folder(), profiles_dir).map_err(|error| {
            RunError::Profile {
                scenario: scenario.path.clone(),
                profile: sc.profile.clone(),
                error: Box::new(error),
            }
        })?;
    sc.scan
        .job()
        .validate(&profile.optics)
        .map_err(|error| RunError::ScanSettings {
            scenario: scenario.path.clone(),
            profile: sc.profile.clone(),
            error,
        })?;
    Ok(profile)
}

/// Plays the application and the service around `driver` until the script is done or the
/// scenario's budget runs out; a run that cannot finish is recorded as a `driver-fault`.
fn play(
    scenario: &LoadedScenario,
    model: ServiceModel,
    driver: &Rc<dyn MiniDriver>,
    host: Hosted,
    sim: &Sim,
    rec: &Recorder,
) {
    let sc = &scenario.scenario;
    let trace = Rc::new(RoleTrace::new(sim.clone(), rec.clone()));
    let service = Service::new(
        model,
        driver.clone(),
        host.host,
        host.unstarted,
        trace.clone(),
        sc.scan.job(),
    );
    let app = Application::new(sim.clone(), trace, Rc::new(service), scenario.clone());
    let player = app.clone();
    let limit = Instant::from_micros(sc.budget_us);
    if let Err(e) = sim.block_on(async move { player.play().await }, limit) {
        let what = hang(&e, app.running(), sc.budget_us);
        rec.push(
            sim.now().total_micros(),
            Actor::Driver,
            Kind::DriverFault { what },
        );
    }
}

/// What a run that could not finish says about acquisition `n`.
fn hang(e: &SimError, n: u32, budget_us: u64) -> String {
    match e {
        SimError::TimeLimit { .. } => format!(
            "hang: acquisition {n} had not returned when the scenario's budget of {} ran out",
            Duration::from_micros(budget_us)
        ),
        SimError::Stalled { .. } => {
            format!("hang: acquisition {n} waits for something that can never happen")
        }
        SimError::ExternalTimeout { guard_ms } => {
            format!("hang: the driver did not answer for {guard_ms} ms of wall-clock time")
        }
    }
}

/// The host the service hands the driver, with the count of submitted transfers that have not
/// reached it yet (pending all the same).
struct Hosted {
    host: Rc<dyn scanemu::host::UsbHost>,
    unstarted: Rc<std::cell::Cell<u32>>,
}

/// The driver's [`RunContext`]: the run's clock, its trace and its submitted transfers.
struct DriverContext {
    sim: Sim,
    rec: Recorder,
    urbs: Rc<Submitter>,
}

#[async_trait::async_trait(?Send)]
impl RunContext for DriverContext {
    fn now(&self) -> Instant {
        self.sim.now()
    }

    fn log(&self, text: &str) {
        let text = text.to_string();
        self.rec
            .push(self.now().total_micros(), Actor::Driver, Kind::Log { text });
    }

    fn fault(&self, what: &str) {
        let what = what.to_string();
        self.rec.push(
            self.now().total_micros(),
            Actor::Driver,
            Kind::DriverFault { what },
        );
    }

    fn submit(&self, request: UsbRequest) -> Urb {
        self.urbs.submit(request)
    }

    async fn first_completed(&self, urbs: &[Urb]) -> Option<usize> {
        self.urbs.first_completed(urbs).await
    }
}
