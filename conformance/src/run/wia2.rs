//! One WIA 2.0 run: one stream-transfer scenario against one WIA 2.0 driver, then its rules.
//!
//! The same steps as a WIA 1.0 run ([`super::run_with`]), on the same machinery: the profile is
//! loaded and the scan checked against it, the host is built by the same transports and
//! reports to the same trace (through a pcap capture when asked for), the roles
//! ([`crate::roles::wia2`]) play on a [`Sim`] until the script ends or the budget runs out,
//! and the WIA 2.0 catalogue ([`crate::rules::wia2`]) judges the finished trace. A WIA 2.0 run
//! takes a driver *factory*: the service loads a new driver instance when it is restarted.

use std::path::Path;
use std::rc::Rc;

use scanemu::profile::Profile;
use scanemu::sim::{Sim, SimError};
use scanemu::time::{Duration, Instant};

use super::observe::TraceObserver;
use super::transport::{self, DeviceSetup, Taps};
use super::{DriverContext, RunError, RunOptions, Transport};
use crate::device;
use crate::driver::wia2::{ImageFormat, MiniDriver2};
use crate::driver::RunContext;
use crate::roles::wia2::app::Application2;
use crate::roles::wia2::service::{DriverFactory, ItemModel, Service2};
use crate::roles::wia2::stream::StreamEnv;
use crate::roles::RoleTrace;
use crate::rules::lag::LagProbe;
use crate::rules::wia2::{self as rules2, RunFacts2};
use crate::rules::{RuleReport, RuleStatus};
use crate::scenario::wia2::LoadedScenario2;
use crate::trace::{Actor, Kind, Recorder, Trace};

/// Everything one WIA 2.0 run produced.
#[derive(Debug)]
pub struct Run2Result {
    /// `wia2/<group>/<name>` of the scenario.
    pub scenario: String,
    /// The driver's name.
    pub driver: String,
    /// The trace.
    pub trace: Trace,
    /// Rule results and metrics.
    pub report: RuleReport,
}

impl Run2Result {
    /// True when no rule failed.
    pub fn passed(&self) -> bool {
        self.report.failed().is_empty()
    }

    /// Every failed rule of the run for people: the rule, its quote, the message and the trace
    /// around the violation.
    pub fn failure_details(&self) -> String {
        let mut s = format!("{} with {}:\n", self.scenario, self.driver);
        for r in &self.report.results {
            if let RuleStatus::Fail { event, message } = &r.status {
                if let Some(text) = rules2::text_of(r.id) {
                    s.push_str(&crate::rules::render_failure_of(
                        text,
                        &self.trace,
                        *event,
                        message,
                    ));
                }
            }
        }
        s
    }
}

/// Runs `scenario` against the driver instances `factory` makes, with profiles from
/// `profiles_dir`, in process and in virtual time.
pub fn run2(
    scenario: &LoadedScenario2,
    driver_name: &str,
    factory: Rc<dyn Fn() -> Rc<dyn MiniDriver2>>,
    profiles_dir: &Path,
) -> Result<Run2Result, RunError> {
    run2_with(
        scenario,
        driver_name,
        factory,
        profiles_dir,
        &RunOptions::default(),
    )
}

/// [`run2`] with explicit [`RunOptions`] (transport, real time; replay and pcap as for WIA 1.0).
pub fn run2_with(
    scenario: &LoadedScenario2,
    driver_name: &str,
    factory: Rc<dyn Fn() -> Rc<dyn MiniDriver2>>,
    profiles_dir: &Path,
    options: &RunOptions,
) -> Result<Run2Result, RunError> {
    let sc = &scenario.scenario;
    let profile = load_profile(scenario, profiles_dir)?;
    let realtime = options.realtime || options.transport != Transport::InProcess;
    let sim = if realtime {
        Sim::realtime()
    } else {
        Sim::new()
    };
    let rec = Recorder::new();
    let observer = Rc::new(TraceObserver::new(rec.clone()));
    let taps = Taps {
        trace: observer.clone(),
        pcap: None,
        record: options.record.clone(),
    };
    let setup = DeviceSetup {
        profile: &profile,
        faults: device::faults(&profile, &sc.faults),
    };
    let link = transport::connect(
        &options.transport,
        options.replay.as_deref(),
        setup,
        &sim,
        &taps,
        &scenario.path,
    )?;
    let run: Rc<dyn RunContext> = Rc::new(DriverContext {
        sim: sim.clone(),
        rec: rec.clone(),
    });
    // Real time: measure how long the run's threads wait for a CPU, as WIA 1.0 runs do.
    let probe = realtime.then(|| {
        let since = std::time::Duration::from_micros(sim.now().total_micros());
        let epoch = std::time::Instant::now()
            .checked_sub(since)
            .unwrap_or_else(std::time::Instant::now);
        LagProbe::start(epoch)
    });
    play(scenario, factory, link.host.clone(), run, &sim, &rec);
    link.close(sim.now(), &observer, &rec);
    let host_lag = probe.map(LagProbe::finish);
    let trace = rec.finish();
    let report = rules2::check_all(&RunFacts2 {
        trace: &trace,
        scenario: sc,
        motor_stop_us: profile.timing.motor_stop_us,
        host_lag: host_lag.as_ref(),
    });
    Ok(Run2Result {
        scenario: scenario.id.clone(),
        driver: driver_name.to_string(),
        trace,
        report,
    })
}

/// The scenario's profile, with every unit's scan checked against its optics.
fn load_profile(scenario: &LoadedScenario2, profiles_dir: &Path) -> Result<Profile, RunError> {
    let sc = &scenario.scenario;
    let profile =
        device::resolve_profile(&sc.profile, profiles_dir).map_err(|error| RunError::Profile {
            scenario: scenario.path.clone(),
            profile: sc.profile.clone(),
            error: Box::new(error),
        })?;
    for job in sc.jobs() {
        job.validate(&profile.optics)
            .map_err(|error| RunError::ScanSettings {
                scenario: scenario.path.clone(),
                profile: sc.profile.clone(),
                error,
            })?;
    }
    Ok(profile)
}

/// Plays the application and the service around the driver until the script is done or the
/// scenario's budget runs out; a run that cannot finish is recorded as a `driver-fault`.
fn play(
    scenario: &LoadedScenario2,
    factory: DriverFactory,
    host: Rc<dyn scanemu::host::UsbHost>,
    run: Rc<dyn RunContext>,
    sim: &Sim,
    rec: &Recorder,
) {
    let sc = &scenario.scenario;
    let trace = Rc::new(RoleTrace::new(sim.clone(), rec.clone()));
    let item = ItemModel {
        kind: sc.item_kind(),
        tymed: sc.tymed,
        format: ImageFormat::Pnm,
        jobs: sc.jobs(),
    };
    let app = Application2::new(sim.clone(), trace.clone(), scenario.clone(), |watcher| {
        let env = StreamEnv {
            trace: trace.clone(),
            sim: sim.clone(),
            watcher,
        };
        Service2::new(factory, host, run, env, item)
    });
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
    app.end();
}

/// What a run that could not finish says about transfer `n`.
fn hang(e: &SimError, n: u32, budget_us: u64) -> String {
    match e {
        SimError::TimeLimit { .. } => format!(
            "hang: transfer {n} had not returned when the scenario's budget of {} ran out",
            Duration::from_micros(budget_us)
        ),
        SimError::Stalled { .. } => {
            format!("hang: transfer {n} waits for something that can never happen")
        }
        SimError::ExternalTimeout { guard_ms } => {
            format!("hang: the driver did not answer for {guard_ms} ms of wall-clock time")
        }
    }
}
