//! One WIA 2.0 run: one stream-transfer scenario against one WIA 2.0 driver, then its rules.
//!
//! The same steps as a WIA 1.0 run ([`super::run_with`]), on the same machinery: the profile is
//! loaded and the scan checked against it, the host is built by the same transports and
//! reports to the same trace (through a pcap capture when asked for), the roles
//! (`crate::roles::wia2`) play on a [`Sim`] until the script ends or the budget runs out,
//! and the WIA 2.0 catalogue ([`crate::rules::wia2`]) judges the finished trace. A WIA 2.0 run
//! takes a driver *factory*: the service loads a new driver instance when it is restarted.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use scanemu::profile::Profile;
use scanemu::sim::{Sim, SimError};
use scanemu::time::{Duration, Instant};

use super::observe::TraceObserver;
use super::transport::{self, DeviceSetup, Taps};
use super::urb::Submitter;
use super::{DriverContext, DriverModel, RunError, RunOptions, Wiring};
use crate::device;
use crate::driver::wia2::{ImageFormat, MiniDriver2};
use crate::driver::RunContext;
use crate::roles::wia2::app::Application2;
use crate::roles::wia2::service::{DriverFactory, ItemModel, Service2};
use crate::roles::wia2::stream::StreamEnv;
use crate::roles::RoleTrace;
use crate::rules::lag::LagProbe;
use crate::rules::wia2::analysis::transfer_summaries;
use crate::rules::wia2::{self as rules2, RunFacts2};
use crate::rules::{RuleReport, RuleStatus};
use crate::scenario::folder_of;
use crate::scenario::wia2::{Action2, LoadedScenario2, Trigger2};
use crate::trace::{Actor, Kind, Recorder, Trace};
use crate::wia::Hresult;

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

/// The capture file of one WIA 2.0 run inside the `--pcap` folder: the scenario id with `/`
/// turned into `.` (`wia2.cancel.sfalse-at-status.pcap`); the identical device of an H18
/// scenario is not captured.
pub fn pcap_file_name(scenario_id: &str) -> String {
    format!("{}.pcap", scenario_id.replace(['/', '\\'], "."))
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

/// [`run2`] with explicit [`RunOptions`] (transport, real time, pcap as for WIA 1.0; the
/// capture is named by [`pcap_file_name`]).
pub fn run2_with(
    scenario: &LoadedScenario2,
    driver_name: &str,
    factory: Rc<dyn Fn() -> Rc<dyn MiniDriver2>>,
    profiles_dir: &Path,
    options: &RunOptions,
) -> Result<Run2Result, RunError> {
    let sc = &scenario.scenario;
    let profile = load_profile(scenario, profiles_dir)?;
    let w = Wiring::open(
        &scenario.path,
        &profile,
        &sc.faults,
        &pcap_file_name(&scenario.id),
        options,
        transport::Replay::load(options, DriverModel::Wia2, driver_name)?,
    )?;
    let (sim, rec, link) = (&w.sim, &w.rec, &w.link);
    // A driver's submitted transfers (RunContext::submit) run on the device's host.
    let run: Rc<dyn RunContext> = Rc::new(DriverContext {
        sim: sim.clone(),
        rec: rec.clone(),
        urbs: Submitter::new(sim.clone(), link.host.clone(), Some(link.observer.clone())),
    });
    // HLK H18: an identical device, its own driver instance, transferring at the same time;
    // its events go to a trace of its own, summarised into this one.
    let peer = if sc.peer {
        let peer_rec = Recorder::new();
        let peer_taps = Taps {
            trace: Rc::new(TraceObserver::new(peer_rec.clone())),
            pcap: None,
            record: None,
        };
        let setup = DeviceSetup {
            profile: &profile,
            faults: device::faults(&profile, &[]),
        };
        let link = transport::connect(
            &options.transport,
            None,
            setup,
            sim,
            &peer_taps,
            &scenario.path,
        )?;
        Some((peer_rec, peer_taps, link))
    } else {
        None
    };
    let probe = w.lag_probe();
    let main = Side {
        scenario: scenario.clone(),
        host: link.host.clone(),
        rec: rec.clone(),
        run,
    };
    let peer_side = peer.as_ref().map(|(peer_rec, _, peer_link)| Side {
        scenario: LoadedScenario2 {
            scenario: sc.peer_script(),
            ..scenario.clone()
        },
        host: peer_link.host.clone(),
        rec: peer_rec.clone(),
        run: Rc::new(DriverContext {
            sim: sim.clone(),
            rec: peer_rec.clone(),
            urbs: Submitter::new(
                sim.clone(),
                peer_link.host.clone(),
                Some(peer_link.observer.clone()),
            ),
        }),
    });
    play(main, peer_side, factory, sim, sc.budget_us);
    let (sim, rec) = w.close()?;
    if let Some((peer_rec, peer_taps, peer_link)) = peer {
        peer_link.close(sim.now(), &peer_taps.trace, &peer_rec);
        for (at, n, hr, bytes, whole) in transfer_summaries(&peer_rec.finish()) {
            rec.push(
                at,
                Actor::Service,
                Kind::PeerTransfer {
                    n,
                    hr,
                    bytes,
                    whole,
                },
            );
        }
    }
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

/// Why `scenario` is left out of real-time runs (USB/IP, libusb, `--realtime`), or `None`:
/// the WIA 1.0 subset's measure ([`super::realtime_skip_reason`]) applied to a WIA 2.0 run
/// made once in virtual time with the same driver. A run that lasts longer than
/// [`super::REALTIME_MAX_US`] is skipped, and so is one whose device fault at a band never fires in
/// virtual time (the driver outruns it by design, an order the wall clock cannot keep), and a
/// scenario that restarts the WIA service (HLK H21) at a set time or acts at the lamp's
/// warm-up report.
pub fn realtime_skip_reason(
    scenario: &LoadedScenario2,
    driver_name: &str,
    factory: Rc<dyn Fn() -> Rc<dyn MiniDriver2>>,
    profiles_dir: &Path,
) -> Result<Option<String>, RunError> {
    // A service restart at a set time kills the driver at a wall-clock point the machine's
    // load decides; the device notes of the dead job then land beside the next call's.
    let restarts = scenario.scenario.transfers.iter().any(|t| {
        t.steps
            .iter()
            .any(|s| matches!(s.action, Action2::RestartService))
    });
    if restarts {
        return Ok(Some(
            "it restarts the WIA service at a set time: on the wall clock the driver is cut at \
             a point the machine's load decides, not the one the scenario was written for"
                .to_string(),
        ));
    }
    let r = run2(scenario, driver_name, factory, profiles_dir)?;
    if let Some(why) = super::too_long_for_realtime(&r.trace) {
        return Ok(Some(why));
    }
    // A step at the lamp's warm-up report: the warm-up lasts a few milliseconds, a window a
    // driver on the wall clock may miss (its status request coming after the lamp is warm).
    let at_warm_up = scenario.scenario.transfers.iter().any(|t| {
        t.steps
            .iter()
            .any(|s| matches!(s.when, Trigger2::DeviceStatus(_)))
    }) && r.trace.events.iter().any(|e| {
        matches!(&e.kind, Kind::SendMessage { status, .. } if *status == Hresult::WIA_STATUS_WARMING_UP)
    });
    if at_warm_up {
        return Ok(Some(
            "a step fires at the lamp's warm-up report (WIA_STATUS_WARMING_UP), a window of a \
             few milliseconds a driver on the wall clock may miss"
                .to_string(),
        ));
    }
    Ok(super::unfired_fault(&r.trace, &scenario.scenario.faults))
}

/// The scenario's profile, with every unit's scan checked against its optics.
pub fn load_profile(scenario: &LoadedScenario2, profiles_dir: &Path) -> Result<Profile, RunError> {
    let sc = &scenario.scenario;
    let profile = device::resolve_profile(&sc.profile, folder_of(&scenario.path), profiles_dir)
        .map_err(|error| RunError::Profile {
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

/// One device's side of a run: its script, its host, its trace and its driver's context.
struct Side {
    scenario: LoadedScenario2,
    host: Rc<dyn scanemu::host::UsbHost>,
    rec: Recorder,
    run: Rc<dyn RunContext>,
}

/// The application and the service of one side, playing its script.
fn roles(side: &Side, factory: DriverFactory, sim: &Sim) -> Rc<Application2> {
    let sc = &side.scenario.scenario;
    let trace = Rc::new(RoleTrace::new(sim.clone(), side.rec.clone()));
    let item = ItemModel {
        kind: sc.item_kind(),
        tymed: sc.tymed,
        format: ImageFormat::Pnm,
        jobs: sc.jobs(),
    };
    let (host, run) = (side.host.clone(), side.run.clone());
    Application2::new(
        sim.clone(),
        trace.clone(),
        side.scenario.clone(),
        |watcher| {
            let env = StreamEnv {
                trace: trace.clone(),
                sim: sim.clone(),
                watcher,
            };
            Service2::new(factory, host, run, env, item)
        },
    )
}

/// Plays the application and the service around the driver (and, for H18, the identical
/// device's) until the scripts are done or the scenario's budget runs out; a run that cannot
/// finish is recorded as a `driver-fault` of the side that hung.
fn play(main: Side, peer: Option<Side>, factory: DriverFactory, sim: &Sim, budget_us: u64) {
    let app = roles(&main, factory.clone(), sim);
    let peer_app = peer.as_ref().map(|p| roles(p, factory, sim));
    let (a, b) = (app.clone(), peer_app.clone());
    let limit = Instant::from_micros(budget_us);
    let both = async move {
        let peer = async move {
            if let Some(b) = b {
                b.play().await;
            }
        };
        Both::new(a.play(), peer).await;
    };
    if let Err(e) = sim.block_on(both, limit) {
        let sides = std::iter::once((&main, &app)).chain(peer.as_ref().zip(peer_app.as_ref()));
        for (side, app) in sides {
            let n = app.running();
            if n > 0 {
                side.rec.push(
                    sim.now().total_micros(),
                    Actor::Driver,
                    Kind::DriverFault {
                        what: hang(&e, n, budget_us),
                    },
                );
            }
        }
    }
    app.end();
    if let Some(p) = peer_app {
        p.end();
    }
}

/// Runs two futures to their ends, polling both.
struct Both<A: Future, B: Future> {
    a: Option<Pin<Box<A>>>,
    b: Option<Pin<Box<B>>>,
}

impl<A: Future, B: Future> Both<A, B> {
    fn new(a: A, b: B) -> Both<A, B> {
        Both {
            a: Some(Box::pin(a)),
            b: Some(Box::pin(b)),
        }
    }
}

impl<A: Future, B: Future> Future for Both<A, B> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(a) = self.a.as_mut() {
            if a.as_mut().poll(cx).is_ready() {
                self.a = None;
            }
        }
        if let Some(b) = self.b.as_mut() {
            if b.as_mut().poll(cx).is_ready() {
                self.b = None;
            }
        }
        if self.a.is_none() && self.b.is_none() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
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
