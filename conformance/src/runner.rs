//! Runs one scenario under one service model against one driver, in virtual time.
//!
//! [`run`] builds the emulated scanner from the scenario's profile and faults, attaches it to an
//! [`InProcessHost`] on a fresh [`Sim`], and plays the two roles around the driver:
//! - the **application** follows the scenario's script: it starts each acquisition, answers
//!   every BandedDataCallback (S_OK, or the scripted S_FALSE or error), and calls
//!   CancelPendingIO at a callback or at a time; after calling it, it returns S_FALSE from every
//!   later callback, as the XP documentation says it "will also have to";
//! - the **service** relays callbacks between driver and application, checks each band against
//!   the image the device scans, and delivers drvNotifyPnPEvent(WIA_EVENT_CANCEL_IO). Under
//!   `vista`, Cancel also makes every later callback return S_FALSE by itself.
//!
//! Every role writes to one [`Recorder`]; the finished [`Trace`] is checked by the rules.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use async_trait::async_trait;
use scanemu::capture::recording::{Recording, RecordingObserver};
use scanemu::capture::replay::ReplayHost;
use scanemu::device::Device;
use scanemu::engine::{ImageSource, ScanJob};
use scanemu::host::inproc::InProcessHost;
use scanemu::host::usbip::UsbIpHost;
use scanemu::host::{DeviceInfo, HostObserver, TransferKind, TransferRecord, UsbHost};
use scanemu::personality::native::protocol::{self, DeviceStatus, ScanStatus};
use scanemu::personality::DeviceNote;
use scanemu::profile::Profile;
use scanemu::sim::{Sim, SimError};
use scanemu::time::{Duration, Instant};
use scanemu::usb::hc::request as std_request;
use scanemu::usbip::{ServerConfig, UsbIpServer};

use crate::driver::{CallbackArgs, MiniDriver, MiniDrvCallback, PnpEvent, TransferContext};
use crate::rules::{self, RuleReport, RunFacts};
use crate::scenario::{Action, LoadedScenario, ServiceModel, Trigger};
use crate::trace::{crc32, Actor, Kind, Recorder, Trace};
use crate::wia::{Hresult, ItMsg, TYMED_CALLBACK, TYMED_MULTIPAGE_CALLBACK};

/// A problem with the run's inputs (not with the driver): exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

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

/// Finds a profile by name (`fixtures/profiles/<name>.json`) or by path.
pub fn resolve_profile(name: &str, profiles_dir: &Path) -> Result<Profile, InputError> {
    let direct = PathBuf::from(name);
    let path = if direct.extension().is_some() && direct.exists() {
        direct
    } else {
        profiles_dir.join(format!("{name}.json"))
    };
    Profile::load(&path).map_err(|e| InputError(e.to_string()))
}

/// How the driver reaches the emulated scanner.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// The in-process host over the virtual bus, in virtual time (the default).
    #[default]
    InProcess,
    /// The driver reaches the device over USB/IP on loopback: an in-process
    /// [`UsbIpServer`] thread serves the scenario's device on `127.0.0.1:0` and the driver
    /// uses a [`UsbIpHost`]. Always real time (see [`RunOptions::realtime`]).
    UsbIp,
    /// The driver reaches the device through libusb: the same in-process USB/IP server as
    /// [`Transport::UsbIp`], but the driver's host is scanemu's rusb host
    /// (`scanemu::host::rusb::RusbHost`), whose libusb must be the scanlab stand-in
    /// (`emulator/libusb-shim`) that speaks USB/IP. Always real time. Needs the `libusb` cargo
    /// feature (module `libusb_transport`); without it a run is an [`InputError`] saying so
    /// ([`LIBUSB_FEATURE_MISSING`]).
    Libusb,
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
/// - events recorded inside one MiniDrvCallback (the application's answer, CancelPendingIO,
///   the notify and the callback) share one timestamp, as they do in virtual time, so rules
///   that compare "same instant" keep their meaning;
/// - traces are not compared with snapshots (real time is not byte-identical); device notes
///   come from the server thread, stamped on the same clock as the driver's transfers.
pub fn realtime_skip_reason(
    scenario: &LoadedScenario,
    service: ServiceModel,
    driver_name: &str,
    driver: Rc<dyn MiniDriver>,
    profiles_dir: &Path,
) -> Result<Option<String>, InputError> {
    let r = run(scenario, service, driver_name, driver, profiles_dir)?;
    let end = r.trace.events.last().map_or(0, |e| e.at_us);
    Ok((end > REALTIME_MAX_US).then(|| {
        format!(
            "lasts {} in virtual time, over the real-time limit of {}",
            Duration::from_micros(end),
            Duration::from_micros(REALTIME_MAX_US)
        )
    }))
}

/// Options of a run beyond the scenario, service and driver.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RunOptions {
    /// How the driver reaches the device (default: in-process).
    pub transport: Transport,
    /// Run on the wall clock ([`Sim::realtime`]) instead of virtual time (default: false;
    /// implied by [`Transport::UsbIp`]).
    pub realtime: bool,
    /// Capture every transfer of the run as a usbmon pcap into this folder (created if
    /// missing), one file per run named by [`pcap_file_name`] (default: no capture).
    pub pcap: Option<PathBuf>,
    /// Keep every transfer and device note of the run in this recording (default: none; see
    /// [`crate::record`]).
    pub record: Option<Rc<RecordingObserver>>,
    /// Serve the recording in this folder instead of the emulated scanner (in-process only;
    /// default: none). A driver that departs from it gets a `DriverFault` naming the first
    /// divergent transaction.
    pub replay: Option<PathBuf>,
}

/// Runs `scenario` under `service` against `driver`, with profiles from `profiles_dir`, in
/// process and in virtual time.
pub fn run(
    scenario: &LoadedScenario,
    service: ServiceModel,
    driver_name: &str,
    driver: Rc<dyn MiniDriver>,
    profiles_dir: &Path,
) -> Result<RunResult, InputError> {
    run_with(
        scenario,
        service,
        driver_name,
        driver,
        profiles_dir,
        &RunOptions::default(),
    )
}

/// [`run`] with explicit [`RunOptions`].
pub fn run_with(
    scenario: &LoadedScenario,
    service: ServiceModel,
    driver_name: &str,
    driver: Rc<dyn MiniDriver>,
    profiles_dir: &Path,
    options: &RunOptions,
) -> Result<RunResult, InputError> {
    let sc = &scenario.scenario;
    let profile = resolve_profile(&sc.profile, profiles_dir).map_err(|e| {
        InputError(format!(
            "{}: profile {:?}: {}",
            scenario.path.display(),
            sc.profile,
            e.0
        ))
    })?;
    let job = ScanJob {
        resolution_dpi: sc.scan.resolution_dpi,
        mode: sc.scan.mode,
        x_px: sc.scan.x_px,
        y_px: sc.scan.y_px,
        width_px: sc.scan.width_px,
        height_px: sc.scan.height_px,
        source: sc.scan.source,
        pages: sc.scan.pages,
    };
    job.validate(&profile.optics).map_err(|e| {
        InputError(format!(
            "{}: scan settings do not fit profile {:?}: {e}",
            scenario.path.display(),
            sc.profile
        ))
    })?;
    let mut faults = profile.faults.clone();
    faults.extend(sc.faults.iter().copied());
    let realtime = options.realtime || options.transport != Transport::InProcess;
    let sim = if realtime {
        Sim::realtime()
    } else {
        Sim::new()
    };
    let rec = Recorder::new();
    let observer = Rc::new(TraceObserver { rec: rec.clone() });
    let pcap = match &options.pcap {
        Some(dir) => {
            let trace = observer.clone();
            Some(open_pcap(dir, &scenario.id, service, &profile, trace)?)
        }
        None => None,
    };
    let enumeration_failed = |e: &dyn std::fmt::Display| {
        InputError(format!(
            "{}: enumeration failed: {e}",
            scenario.path.display()
        ))
    };
    let replay = match &options.replay {
        Some(_) if options.transport != Transport::InProcess => {
            return Err(InputError("a replay runs in-process only".into()))
        }
        Some(dir) => Some(ReplayHost::new(
            Recording::load(dir).map_err(|e| InputError(format!("replay: {e}")))?,
            Rc::new(sim.clone()),
        )),
        None => None,
    };
    // Every host reports to the trace, through the pcap capture and the recording when asked
    // for, which learn the device first.
    let attach = |info: &DeviceInfo, set_observer: &dyn Fn(Rc<dyn HostObserver>)| {
        if let Some((p, _)) = &pcap {
            p.set_device_info(info);
        }
        if let Some(r) = &options.record {
            r.set_device_info(info);
        }
        let pcap_tap = pcap
            .as_ref()
            .map(|(p, _)| p.clone() as Rc<dyn HostObserver>);
        set_observer(tap(observer.clone(), pcap_tap, &options.record));
    };
    let (host, usbip): (Rc<dyn UsbHost>, Option<UsbIpLink>) = match options.transport {
        Transport::InProcess if replay.is_some() => {
            let host = replay.clone().expect("checked by the guard");
            attach(&host.device_info(), &|o| host.set_observer(o));
            (Rc::new(host), None)
        }
        Transport::InProcess => {
            let mut device = Device::new(&profile);
            device.set_faults(faults);
            let host = InProcessHost::new(device, Rc::new(sim.clone()))
                .map_err(|e| enumeration_failed(&e))?;
            attach(&host.device_info(), &|o| host.set_observer(o));
            let ticker = host.clone();
            sim.spawn(async move { ticker.run_device().await });
            (Rc::new(host), None)
        }
        Transport::UsbIp => {
            let (server, inbox) = serve_usbip(&profile, faults, &sim, observer.clone())
                .map_err(|e| enumeration_failed(&e))?;
            let host = UsbIpHost::connect(
                server.local_addr(),
                &server.exported().record.busid,
                Rc::new(sim.clone()),
            )
            .map_err(|e| enumeration_failed(&format!("USB/IP import: {e}")))?;
            attach(&host.device_info(), &|o| host.set_observer(o));
            (Rc::new(host), Some((server, inbox)))
        }
        #[cfg(feature = "libusb")]
        Transport::Libusb => {
            crate::libusb::transport::check_stand_in_loaded()
                .map_err(|e| InputError(e.to_string()))?;
            let (server, inbox) = serve_usbip(&profile, faults, &sim, observer.clone())
                .map_err(|e| enumeration_failed(&e))?;
            let host = crate::libusb::transport::open_host(&server, &sim)
                .map_err(|e| enumeration_failed(&e))?;
            attach(&host.device_info(), &|o| host.set_observer(o));
            (Rc::new(host), Some((server, inbox)))
        }
        #[cfg(not(feature = "libusb"))]
        Transport::Libusb => return Err(InputError(LIBUSB_FEATURE_MISSING.into())),
    };
    driver.begin_run(&sim, &rec);
    let async_cancel = driver.supports_async_cancel();

    let session = Rc::new(Session {
        sim: sim.clone(),
        host: host.clone(),
        frozen_us: Cell::new(None),
        rec: rec.clone(),
        model: service,
        driver: driver.clone(),
        scenario: scenario.clone(),
        job,
        image: ImageSource::Pattern,
        acq: RefCell::new(None),
        running: Cell::new(0),
    });
    let s = session.clone();
    let limit = Instant::from_micros(sc.budget_us);
    if let Err(e) = sim.block_on(async move { s.play().await }, limit) {
        let n = session.running.get();
        let what = match e {
            SimError::TimeLimit { .. } => format!(
                "hang: acquisition {n} had not returned when the scenario's budget of {} ran out",
                Duration::from_micros(sc.budget_us)
            ),
            SimError::Stalled { .. } => {
                format!("hang: acquisition {n} waits for something that can never happen")
            }
            SimError::ExternalTimeout { guard_ms } => {
                format!("hang: the driver did not answer for {guard_ms} ms of wall-clock time")
            }
        };
        rec.push(
            sim.now().total_micros(),
            Actor::Driver,
            Kind::DriverFault { what },
        );
    }
    driver.end_run();
    if let Some(r) = &replay {
        replay_verdict(r, &rec, sim.now());
    }
    if let Some((server, inbox)) = usbip {
        // Notes the server made before the run ended that the executor had not yet taken.
        let end = sim.now();
        drop(session);
        drop(host);
        server.shutdown();
        for note in inbox.take().iter().filter(|n| n.at <= end) {
            observer.device(note);
        }
    }
    if let Some((p, path)) = pcap {
        p.finish()
            .map_err(|e| InputError(format!("--pcap {}: {e}", path.display())))?;
    }
    let trace = rec.finish();
    let facts = RunFacts {
        trace: &trace,
        scenario: sc,
        service,
        async_cancel,
        motor_stop_us: profile.timing.motor_stop_us,
    };
    let report = rules::check_all(&facts);
    Ok(RunResult {
        scenario: scenario.id.clone(),
        service,
        driver: driver_name.to_string(),
        trace,
        report,
        async_cancel,
    })
}

/// The application's view of the acquisition in progress.
#[derive(Default)]
struct AppState {
    n: u32,
    data_callbacks: u32,
    any_callbacks: u32,
    new_pages: u32,
    /// Steps already carried out (each fires once).
    fired: Vec<bool>,
    /// Once the application cancelled or failed, it answers every later callback the same way.
    answer: Option<Hresult>,
    /// Vista: Cancel was called; the service answers S_FALSE by itself.
    sticky: bool,
    page: u32,
    page_pos: u64,
    bytes: u64,
}

struct Session {
    sim: Sim,
    host: Rc<dyn UsbHost>,
    /// While set, every event is stamped with this time: what happens inside one callback
    /// happens at one instant, in real time as in virtual time.
    frozen_us: Cell<Option<u64>>,
    rec: Recorder,
    model: ServiceModel,
    driver: Rc<dyn MiniDriver>,
    scenario: LoadedScenario,
    job: ScanJob,
    image: ImageSource,
    acq: RefCell<Option<AppState>>,
    /// The acquisition in progress (0 when idle).
    running: Cell<u32>,
}

impl Session {
    fn now_us(&self) -> u64 {
        self.frozen_us
            .get()
            .unwrap_or_else(|| self.sim.now().total_micros())
    }

    fn push(&self, actor: Actor, kind: Kind) {
        self.rec.push(self.now_us(), actor, kind);
    }

    async fn play(self: Rc<Self>) {
        let sc = &self.scenario.scenario;
        let total = sc.acquisitions.len() as u32;
        let mut cancels = 0u32;
        for i in 0..=total {
            for idle in sc.idle_cancels.iter().filter(|c| c.before == i) {
                for _ in 0..idle.times {
                    cancels += 1;
                    self.cancel_pending_io(cancels);
                }
            }
            if i == total {
                break;
            }
            let acq = &sc.acquisitions[i as usize];
            if acq.delay_us > 0 {
                self.sim.sleep(Duration::from_micros(acq.delay_us)).await;
            }
            let n = i + 1;
            cancels = self.clone().acquire(n, cancels).await;
        }
    }

    async fn acquire(self: Rc<Self>, n: u32, mut cancels: u32) -> u32 {
        let sc = &self.scenario.scenario;
        let acq = &sc.acquisitions[(n - 1) as usize];
        let tymed = if self.job.pages == 1 {
            TYMED_CALLBACK
        } else {
            TYMED_MULTIPAGE_CALLBACK
        };
        self.push(
            Actor::App,
            Kind::Acquire {
                n,
                tymed,
                buffer: sc.buffer,
            },
        );
        self.push(Actor::Service, Kind::DrvAcquireItemData { n });
        *self.acq.borrow_mut() = Some(AppState {
            n,
            fired: vec![false; acq.steps.len()],
            ..AppState::default()
        });
        self.running.set(n);
        for (k, step) in acq.steps.iter().enumerate() {
            if let Trigger::AtUs(at) = step.when {
                let s = self.clone();
                let at = self.sim.now() + Duration::from_micros(at);
                self.sim.spawn(async move {
                    s.sim.sleep_until(at).await;
                    s.timed_step(n, k);
                });
            }
        }
        let ctx = TransferContext {
            tymed,
            buffer_size: sc.buffer,
            job: self.job,
            interface: 0,
        };
        let callback = ServiceCallback {
            session: self.clone(),
        };
        let hr = self
            .driver
            .acquire_item_data(&ctx, self.host.as_ref(), &callback)
            .await;
        self.push(
            Actor::Driver,
            Kind::AcquireReturn {
                n,
                hr,
                pending: self.host.pending_transfers(),
            },
        );
        self.running.set(0);
        let state = self.acq.borrow_mut().take().unwrap_or_default();
        cancels += state
            .fired
            .iter()
            .zip(&acq.steps)
            .filter(|(f, s)| **f && s.action == Action::CancelPendingIo)
            .count() as u32;
        self.push(
            Actor::App,
            Kind::AcquireDone {
                n,
                hr,
                bytes: state.bytes,
            },
        );
        cancels
    }

    /// CancelPendingIO from the application's second thread, if acquisition `n` still runs.
    fn fire_cancel(&self, n: u32) {
        if self.running.get() != n {
            self.push(
                Actor::App,
                Kind::Note {
                    text: format!("cancel after the last band of acquisition {n} not fired: the acquisition had ended"),
                },
            );
            return;
        }
        let count = self
            .acq
            .borrow()
            .as_ref()
            .map_or(0, |st| st.fired.iter().filter(|f| **f).count() as u32);
        self.cancel_pending_io(count);
    }

    /// A time-triggered step: fires only while its acquisition runs.
    fn timed_step(&self, n: u32, k: usize) {
        if self.running.get() != n {
            self.push(
                Actor::App,
                Kind::Note {
                    text: format!(
                        "step {} of acquisition {n} not fired: the acquisition had ended",
                        k + 1
                    ),
                },
            );
            return;
        }
        let count = {
            let mut acq = self.acq.borrow_mut();
            let Some(state) = acq.as_mut() else { return };
            state.fired[k] = true;
            state.fired.iter().filter(|f| **f).count() as u32
        };
        self.cancel_pending_io(count);
    }

    /// IWiaItemExtras::CancelPendingIO (xp) / IWiaTransfer::Cancel (vista).
    fn cancel_pending_io(&self, n: u32) {
        self.push(Actor::App, Kind::CancelPendingIo { n });
        if let Some(state) = self.acq.borrow_mut().as_mut() {
            state.answer.get_or_insert(Hresult::S_FALSE);
            if self.model == ServiceModel::Vista {
                state.sticky = true;
            }
        }
        self.push(Actor::Service, Kind::NotifyCancelIo {});
        self.driver
            .notify_pnp_event(PnpEvent::CancelIo, self.host.as_ref());
    }

    /// CRC-32 of the image bytes the device scans at `[pos, pos + len)` of `page`.
    fn expected_crc(&self, page: u32, pos: u64, len: u64) -> u32 {
        let bpl = self.job.bytes_per_line();
        if bpl == 0 || len == 0 {
            return crc32(&[]);
        }
        let mut hasher = crc32fast::Hasher::new();
        let mut line_buf = vec![0u8; bpl as usize];
        let mut at = pos;
        let end = pos + len;
        let page_bytes = bpl * u64::from(self.job.lines_per_page());
        while at < end {
            if at >= page_bytes {
                // Beyond the page: nothing the device could have sent; hash zeros so it differs.
                hasher.update(&vec![0u8; (end - at) as usize]);
                break;
            }
            let line = (at / bpl) as u32;
            let from = (at % bpl) as usize;
            self.image
                .render_line(&self.job, page as u16, line, &mut line_buf);
            let take = ((bpl as usize) - from).min((end - at) as usize);
            hasher.update(&line_buf[from..from + take]);
            at += take as u64;
        }
        hasher.finalize()
    }
}

/// The service's MiniDrvCallback, handed to the driver.
struct ServiceCallback {
    session: Rc<Session>,
}

#[async_trait(?Send)]
impl MiniDrvCallback for ServiceCallback {
    async fn call(&self, args: CallbackArgs<'_>) -> Hresult {
        let s = &self.session;
        s.frozen_us.set(Some(s.now_us()));
        let result = self.call_at_one_instant(args);
        s.frozen_us.set(None);
        result
    }
}

impl ServiceCallback {
    /// The callback's work; it never waits, so all of it happens at one instant.
    fn call_at_one_instant(&self, args: CallbackArgs<'_>) -> Hresult {
        let s = &self.session;
        let steps = &s.scenario.scenario.acquisitions;
        // Bookkeeping under one borrow; actions that re-enter the driver run after it ends.
        let (page, crc, pos, sticky, decided, cancel_now) = {
            let mut guard = s.acq.borrow_mut();
            let Some(state) = guard.as_mut() else {
                drop(guard);
                s.push(
                    Actor::Driver,
                    Kind::DriverFault {
                        what: "protocol: MiniDrvCallback called outside drvAcquireItemData".into(),
                    },
                );
                return Hresult::E_FAIL;
            };
            let mut crc = 0;
            match args.reason {
                ItMsg::Data => {
                    crc = crc32(args.data);
                    state.data_callbacks += 1;
                    state.bytes += args.data.len() as u64;
                }
                ItMsg::NewPage => {
                    state.new_pages += 1;
                    state.page += 1;
                    state.page_pos = 0;
                }
                _ => {}
            }
            state.any_callbacks += 1;
            let page = state.page;
            let pos = state.page_pos;
            if args.reason == ItMsg::Data {
                state.page_pos += args.data.len() as u64;
            }
            let script = &steps[(state.n - 1) as usize].steps;
            let mut decided = None;
            let mut cancel_now = false;
            let pages = u64::from(s.job.pages.max(1));
            let page_bytes = s.job.page_bytes();
            let last_data = args.reason == ItMsg::Data
                && s.job.pages > 0
                && u64::from(page) + 1 == pages
                && pos + args.data.len() as u64 == page_bytes;
            if !state.sticky {
                for (k, step) in script.iter().enumerate() {
                    if state.fired[k] {
                        continue;
                    }
                    let hit = match step.when {
                        Trigger::DataCallback(m) => {
                            args.reason == ItMsg::Data && state.data_callbacks == m
                        }
                        Trigger::Percent(p) => args.reason == ItMsg::Data && args.percent >= p,
                        Trigger::AnyCallback(m) => state.any_callbacks == m,
                        Trigger::NewPage(m) => {
                            args.reason == ItMsg::NewPage && state.new_pages == m
                        }
                        Trigger::LastDataCallback => last_data,
                        Trigger::AfterLastDataCallback => {
                            if last_data {
                                state.fired[k] = true;
                                let (s2, n) = (s.clone(), state.n);
                                s.sim.spawn(async move { s2.fire_cancel(n) });
                            }
                            false
                        }
                        Trigger::AtUs(_) => false,
                    };
                    if !hit {
                        continue;
                    }
                    state.fired[k] = true;
                    match step.action {
                        Action::Return(hr) => {
                            decided.get_or_insert(hr);
                        }
                        Action::CancelPendingIo => cancel_now = true,
                    }
                }
            }
            (page, crc, pos, state.sticky, decided, cancel_now)
        };
        let expect_crc = if args.reason == ItMsg::Data {
            s.expected_crc(page, pos, args.data.len() as u64)
        } else {
            0
        };
        // The application's answer to this callback is fixed before a CancelPendingIO it makes
        // from inside the callback: that call affects later callbacks only.
        let (result, sticky_answer) = if sticky {
            (Hresult::S_FALSE, true)
        } else {
            let answer = {
                let mut guard = s.acq.borrow_mut();
                match (decided, guard.as_mut()) {
                    (Some(hr), Some(st)) => {
                        if hr != Hresult::S_OK {
                            st.answer.get_or_insert(hr);
                        }
                        st.answer.unwrap_or(hr)
                    }
                    (None, Some(st)) => st.answer.unwrap_or(Hresult::S_OK),
                    (_, None) => Hresult::S_OK,
                }
            };
            s.push(
                Actor::App,
                Kind::BandedCallback {
                    msg: args.reason,
                    percent: args.percent,
                    result: answer,
                },
            );
            (answer, false)
        };
        if cancel_now {
            let n = s
                .acq
                .borrow()
                .as_ref()
                .map_or(0, |st| st.fired.iter().filter(|f| **f).count() as u32);
            s.cancel_pending_io(n);
        }
        s.push(
            Actor::Service,
            Kind::Callback {
                msg: args.reason,
                status: args.status,
                percent: args.percent,
                offset: args.offset,
                length: args.length,
                page,
                crc,
                expect_crc,
                result,
                sticky: sticky_answer,
            },
        );
        result
    }
}

/// Turns host transfers and device notes into trace events.
struct TraceObserver {
    rec: Recorder,
}

fn result_name(r: &Result<(), scanemu::host::TransferError>) -> String {
    use scanemu::host::TransferError as E;
    match r {
        Ok(()) => "ok".into(),
        Err(E::Stall) => "stall".into(),
        Err(E::Timeout { .. }) => "timeout".into(),
        Err(E::Cancelled { .. }) => "cancelled".into(),
        Err(E::NoDevice) => "no-device".into(),
        Err(E::Overflow) => "overflow".into(),
        Err(E::Io(_)) => "io-error".into(),
    }
}

/// Symbolic name of a control request.
pub fn request_name(request_type: u8, request: u8) -> String {
    let kind = request_type & 0x60;
    if kind == 0 {
        return match request {
            std_request::GET_STATUS => "GET_STATUS",
            std_request::CLEAR_FEATURE => "CLEAR_FEATURE",
            std_request::SET_FEATURE => "SET_FEATURE",
            std_request::SET_ADDRESS => "SET_ADDRESS",
            std_request::GET_DESCRIPTOR => "GET_DESCRIPTOR",
            std_request::SET_CONFIGURATION => "SET_CONFIGURATION",
            _ => "STANDARD",
        }
        .into();
    }
    match request {
        protocol::REQ_GET_CAPABILITIES => "GET_CAPABILITIES",
        protocol::REQ_SET_PARAMS => "SET_PARAMS",
        protocol::REQ_GET_PARAMS => "GET_PARAMS",
        protocol::REQ_START_SCAN => "START_SCAN",
        protocol::REQ_GET_SCAN_STATUS => "GET_SCAN_STATUS",
        protocol::REQ_CANCEL => "CANCEL",
        protocol::REQ_DEVICE_RESET => "DEVICE_RESET",
        protocol::REQ_GET_DEVICE_STATUS => "GET_DEVICE_STATUS",
        _ => return format!("0x{request:02X}"),
    }
    .into()
}

/// A short decoding of a control reply, for the trace.
pub fn describe_reply(request: u8, data: &[u8]) -> String {
    match request {
        protocol::REQ_GET_DEVICE_STATUS => match DeviceStatus::decode(data) {
            Ok(st) => {
                let word = match st.code {
                    protocol::STATUS_OK => "ok",
                    protocol::STATUS_BUSY => "busy",
                    protocol::STATUS_TRANSACTION_CANCELLED => "cancelled",
                    _ => "unknown",
                };
                let mut s = format!("0x{:04x} {word}", st.code);
                if !st.halted.is_empty() {
                    let eps: Vec<String> = st.halted.iter().map(|e| format!("0x{e:02x}")).collect();
                    s.push_str(&format!(" halted={}", eps.join(",")));
                }
                s
            }
            Err(e) => e.to_string(),
        },
        protocol::REQ_GET_SCAN_STATUS => match ScanStatus::decode(data) {
            Ok(st) => format!(
                "state={} error={} bands_sent={}",
                st.state.name(),
                st.error.name(),
                st.bands_sent
            ),
            Err(e) => e.to_string(),
        },
        _ => String::new(),
    }
}

impl HostObserver for TraceObserver {
    fn transfer(&self, r: &TransferRecord<'_>) {
        let at = r.at.total_micros();
        let kind = match r.kind {
            TransferKind::Control => {
                let setup = r.setup.unwrap_or(scanemu::host::Setup {
                    request_type: 0,
                    request: 0,
                    value: 0,
                    index: 0,
                    length: 0,
                });
                let vendor = setup.request_type & 0x60 != 0;
                if !vendor && setup.request == std_request::GET_DESCRIPTOR {
                    // Enumeration traffic is the same in every scenario; keep traces about the scan.
                    return;
                }
                Kind::Control {
                    dir: if setup.is_in() { "in" } else { "out" }.into(),
                    request_type: setup.request_type,
                    request: setup.request,
                    name: request_name(setup.request_type, setup.request),
                    value: setup.value,
                    length: r.data.len() as u32,
                    result: result_name(&r.result),
                    reply: if setup.is_in() && r.result.is_ok() {
                        describe_reply(setup.request, r.data)
                    } else {
                        String::new()
                    },
                }
            }
            TransferKind::Bulk => Kind::Bulk {
                ep: r.ep,
                requested: r.requested as u32,
                actual: r.data.len() as u32,
                crc: crc32(r.data),
                result: result_name(&r.result),
            },
            TransferKind::Interrupt => Kind::Interrupt {
                ep: r.ep,
                actual: r.data.len() as u32,
                result: result_name(&r.result),
                reply: protocol::Event::decode(r.data)
                    .map(|e| {
                        format!(
                            "{:?} arg={} page={} value={}",
                            e.code, e.arg, e.page, e.value
                        )
                    })
                    .unwrap_or_default(),
            },
            TransferKind::ClearHalt => Kind::ClearHalt {
                ep: r.ep,
                result: result_name(&r.result),
            },
            TransferKind::Reset => Kind::ResetDevice {
                result: result_name(&r.result),
            },
            TransferKind::Abort => Kind::Abort { ep: r.ep },
        };
        self.rec.push(at, Actor::Usb, kind);
    }

    fn device(&self, note: &DeviceNote) {
        self.rec.push(
            note.at.total_micros(),
            Actor::Device,
            Kind::Device {
                what: note.kind.name().to_string(),
                page: u32::from(note.page),
                value: note.value,
                detail: note.detail.to_string(),
            },
        );
    }
}

/// The observer a host reports to: the recording (if any), wrapping the capture (if any),
/// wrapping the trace.
fn tap(
    trace: Rc<TraceObserver>,
    pcap: Option<Rc<dyn HostObserver>>,
    record: &Option<Rc<RecordingObserver>>,
) -> Rc<dyn HostObserver> {
    let inner: Rc<dyn HostObserver> = pcap.unwrap_or(trace);
    match record {
        Some(r) => {
            r.set_inner(inner);
            r.clone()
        }
        None => inner,
    }
}

/// Turns a replay's first divergence, or the part of the recording the driver never asked
/// for, into a `DriverFault` (which WIA-FAULT-NO-HANG reports).
fn replay_verdict(replay: &ReplayHost, rec: &Recorder, end: Instant) {
    let (at, what) = match replay.divergence() {
        Some(d) => (d.at, format!("replay: {d}")),
        None if replay.synthesized_cancel() => return,
        None => match replay.unserved().first() {
            Some(t) => (
                end,
                format!(
                    "replay: the driver stopped before the recording did; transaction #{} ({}) \
                 never came",
                    t.seq,
                    scanemu::capture::replay::describe_transaction(t)
                ),
            ),
            None => return,
        },
    };
    rec.push(at.total_micros(), Actor::Driver, Kind::DriverFault { what });
}

/// The error of a [`Transport::Libusb`] run in a build without the `libusb` feature.
pub const LIBUSB_FEATURE_MISSING: &str = "--transport libusb: this scanconform was built without \
     the libusb feature (build it with `cargo build --release -p scanconform --features libusb`, \
     which needs libusb-1.0-0-dev)";

/// Starts a USB/IP server thread on loopback with the scenario's device, its clock starting
/// where `sim`'s does; the server's device notes reach `observer` through a task on `sim`.
fn serve_usbip(
    profile: &Profile,
    faults: Vec<scanemu::engine::Fault>,
    sim: &Sim,
    observer: Rc<TraceObserver>,
) -> Result<(UsbIpServer, Arc<NoteInbox>), String> {
    let inbox = Arc::new(NoteInbox::default());
    let mut config = ServerConfig::new(profile.clone());
    config.faults = Some(faults);
    // The server's clock starts where the simulation's does.
    let since = std::time::Duration::from_micros(sim.now().total_micros());
    config.epoch = std::time::Instant::now().checked_sub(since);
    let sink = inbox.clone();
    config.notes = Some(Arc::new(move |note: &DeviceNote| sink.push(note.clone())));
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let server = UsbIpServer::bind(loopback, config)
        .map_err(|e| format!("USB/IP server on {loopback}: {e}"))?;
    let notes = inbox.clone();
    sim.spawn(async move {
        loop {
            for note in notes.next().await {
                observer.device(&note);
            }
        }
    });
    Ok((server, inbox))
}

/// A run's USB/IP server and the inbox its device notes arrive in.
type UsbIpLink = (UsbIpServer, Arc<NoteInbox>);

/// Device notes handed from the USB/IP server thread to the simulation's thread.
#[derive(Default)]
struct NoteInbox {
    inner: Mutex<(Vec<DeviceNote>, Option<Waker>)>,
}

impl NoteInbox {
    fn push(&self, note: DeviceNote) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.push(note);
        if let Some(w) = g.1.take() {
            w.wake();
        }
    }

    fn take(&self) -> Vec<DeviceNote> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut g.0)
    }

    /// Waits for at least one note and takes all that are there.
    async fn next(&self) -> Vec<DeviceNote> {
        std::future::poll_fn(|cx| {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if g.0.is_empty() {
                g.1 = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(std::mem::take(&mut g.0))
            }
        })
        .await
    }
}

/// The capture file of one run inside the `--pcap` folder: the scenario id with `/` turned
/// into `.`, then the service: `callback.s-false-at-band-3.xp.pcap`.
pub fn pcap_file_name(scenario_id: &str, service: ServiceModel) -> String {
    format!(
        "{}.{}.pcap",
        scenario_id.replace(['/', '\\'], "."),
        service.name()
    )
}

type PcapCapture = scanemu::capture::pcap::PcapObserver<std::io::BufWriter<std::fs::File>>;

/// Creates the run's capture in `dir`, passing records on to the trace observer.
fn open_pcap(
    dir: &Path,
    scenario_id: &str,
    service: ServiceModel,
    profile: &Profile,
    observer: Rc<TraceObserver>,
) -> Result<(Rc<PcapCapture>, PathBuf), InputError> {
    let path = dir.join(pcap_file_name(scenario_id, service));
    let fail = |e: std::io::Error| InputError(format!("--pcap {}: {e}", path.display()));
    std::fs::create_dir_all(dir).map_err(fail)?;
    let file = std::fs::File::create(&path).map_err(fail)?;
    let writer =
        scanemu::capture::pcap::PcapWriter::new(std::io::BufWriter::new(file)).map_err(fail)?;
    let capture = scanemu::capture::pcap::PcapObserver::new(
        writer,
        &scanemu::host::DeviceInfo::default(),
        scanemu::capture::pcap::CaptureConfig::with_speed(profile.usb.speed),
    )
    .wrapping(observer);
    Ok((Rc::new(capture), path))
}
