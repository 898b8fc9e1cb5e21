//! How the driver reaches the device: the host a run hands to the driver, and what it reports to.
//!
//! [`connect`] builds one of four hosts:
//! - **in-process**: [`InProcessHost`] over the virtual bus, the device ticking as a task of the
//!   run's [`Sim`];
//! - **replay**: [`ReplayHost`] serving a recording instead of the emulated scanner, in-process,
//!   or over USB/IP or libusb from a server exporting it (`scanemu::capture::serve`);
//! - **USB/IP**: a [`ServedDevice`] on loopback and a [`UsbIpHost`] importing it;
//! - **libusb**: the same server, reached by scanemu's rusb host through the scanlab libusb-1.0
//!   stand-in (cargo feature `libusb`).
//!
//! Every host reports to one observer chain ([`Taps`]): the recording if any, wrapping the pcap
//! capture if any, wrapping the [`TraceObserver`]. Over USB/IP the device lives on the server's
//! thread; its notes reach the trace through a task on the run's [`Sim`] while the run goes,
//! and the rest when the link is closed ([`Link::close`]).

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use scanemu::capture::pcap::{CaptureConfig, PcapObserver, PcapWriter};
use scanemu::capture::recording::{Recording, RecordingObserver};
use scanemu::capture::replay::{describe_transaction, ReplayConfig, ReplayHost, ReplayReport};
use scanemu::capture::serve::ServedRecording;
use scanemu::device::Device;
use scanemu::engine::Fault;
use scanemu::host::inproc::InProcessHost;
use scanemu::host::usbip::UsbIpHost;
use scanemu::host::{DeviceInfo, HostObserver, Observed, Tee, UsbHost};
use scanemu::profile::Profile;
use scanemu::sim::Sim;
use scanemu::time::Instant;
use scanemu::usbip::{default_busid, DeviceSpec, ServerConfig};

use super::observe::TraceObserver;
use super::{DriverModel, RunError, RunOptions};
use crate::device::ServedDevice;
use crate::scenario::ServiceModel;
use crate::trace::{Actor, Kind, Recorder};

/// How the driver reaches the emulated scanner.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// The in-process host over the virtual bus, in virtual time (the default).
    #[default]
    InProcess,
    /// The driver reaches the device over USB/IP on loopback: an in-process
    /// [`scanemu::usbip::UsbIpServer`] thread serves the scenario's device on `127.0.0.1:0` and
    /// the driver uses a [`UsbIpHost`]. Always real time (see [`super::RunOptions::realtime`]).
    UsbIp,
    /// The driver reaches the device through libusb: the same in-process USB/IP server as
    /// [`Transport::UsbIp`], but the driver's host is scanemu's rusb host
    /// (`scanemu::host::rusb::RusbHost`), whose libusb must be the scanlab stand-in
    /// (`emulator/libusb-shim`) that speaks USB/IP. Always real time. Needs the `libusb` cargo
    /// feature (module `crate::libusb::transport`); without it a run is a
    /// [`RunError::LibusbFeatureMissing`].
    Libusb,
}

/// The error text of a [`Transport::Libusb`] run in a build without the `libusb` feature.
pub const LIBUSB_FEATURE_MISSING: &str = "--transport libusb: this library was built without \
     the libusb feature (the `scanconform` program runs it through `scanconform-libusb`, which \
     `cargo build --release -p scanconform --features libusb` builds; it needs libusb-1.0-0-dev)";

/// The device a run serves: its profile and the faults it injects.
pub(crate) struct DeviceSetup<'a> {
    pub profile: &'a Profile,
    pub faults: Vec<Fault>,
}

/// Where a host reports: the recording (if any) beside the capture (if any), which wraps the
/// trace.
pub(crate) struct Taps {
    pub trace: Rc<TraceObserver>,
    pub pcap: Option<Rc<PcapCapture>>,
    pub record: Option<Rc<RecordingObserver>>,
}

impl Taps {
    /// The observer chain for a host whose device is `info` (the capture and the recording
    /// learn the device first).
    fn attach(&self, info: &DeviceInfo) -> Rc<dyn HostObserver> {
        if let Some(p) = &self.pcap {
            p.set_device_info(info);
        }
        let inner: Rc<dyn HostObserver> = match &self.pcap {
            Some(p) => p.clone(),
            None => self.trace.clone(),
        };
        match &self.record {
            Some(r) => {
                r.set_device_info(info);
                Rc::new(Tee(vec![r.clone(), inner]))
            }
            None => inner,
        }
    }
}

/// A run's host and what keeps it running.
pub(crate) struct Link {
    /// The host the driver uses.
    pub host: Rc<dyn UsbHost>,
    /// The observer chain the host reports to (for transfers a driver cancels before the host
    /// finished them).
    pub observer: Rc<dyn HostObserver>,
    /// The server of a USB/IP or libusb run.
    served: Option<ServedDevice>,
    /// The recording served instead of the device.
    replay: Option<Verdict>,
}

/// Where a replay's verdict comes from.
enum Verdict {
    /// The replay host of an in-process run.
    Host(ReplayHost),
    /// The reports of a recording served over USB/IP (one per import).
    Served(Arc<Mutex<Vec<ReplayReport>>>),
}

/// A recording to serve instead of the device.
pub(crate) struct Replay {
    /// The recording.
    pub recording: Recording,
    /// Every departure is a divergence.
    pub strict: bool,
}

impl Replay {
    /// The recording `options` ask to replay, if any, checked to hold a session of `model`
    /// (`driver` names the run's driver in the refusal).
    pub(crate) fn load(
        options: &RunOptions,
        model: DriverModel,
        driver: &str,
    ) -> Result<Option<Replay>, RunError> {
        let Some(dir) = &options.replay else {
            return Ok(None);
        };
        Ok(Some(Replay {
            recording: super::load_for_replay(dir, model, driver)?,
            strict: options.strict_replay,
        }))
    }
}

/// Builds the host of a run: `replay` (a recording folder) or the device of `setup` reached
/// over `transport`, reporting to `taps`; `scenario` names the run in errors.
pub(crate) fn connect(
    transport: &Transport,
    replay: Option<Replay>,
    setup: DeviceSetup<'_>,
    sim: &Sim,
    taps: &Taps,
    scenario: &Path,
) -> Result<Link, RunError> {
    let enumeration = |reason: String| RunError::Enumeration {
        scenario: scenario.to_path_buf(),
        reason,
    };
    if let Some(replay) = replay {
        let recording = replay.recording;
        let mut config = ReplayConfig::default();
        config.strict = replay.strict;
        if *transport != Transport::InProcess {
            return connect_served_replay(transport, recording, config, sim, taps, scenario);
        }
        let host = ReplayHost::with_config(recording, Rc::new(sim.clone()), config);
        let observer = taps.attach(&host.device_info());
        host.set_note_observer(observer.clone());
        return Ok(Link {
            host: Rc::new(Observed::new(host.clone(), observer.clone())),
            observer,
            served: None,
            replay: Some(Verdict::Host(host)),
        });
    }
    match transport {
        Transport::InProcess => {
            let mut device = Device::new(setup.profile);
            device.set_faults(setup.faults);
            let host = InProcessHost::new(device, Rc::new(sim.clone()))
                .map_err(|e| enumeration(e.to_string()))?;
            let observer = taps.attach(&host.device_info());
            host.set_note_observer(observer.clone());
            let ticker = host.clone();
            sim.spawn(async move { ticker.run_device().await });
            Ok(Link {
                host: Rc::new(Observed::new(host, observer.clone())),
                observer,
                served: None,
                replay: None,
            })
        }
        Transport::UsbIp => {
            let served = serve(setup, sim, &taps.trace).map_err(|e| enumeration(e.to_string()))?;
            let server = served.server();
            let host = UsbIpHost::connect(
                server.local_addr(),
                &server.exported().record.busid,
                Rc::new(sim.clone()),
            )
            .map_err(|e| enumeration(format!("USB/IP import: {e}")))?;
            let observer = taps.attach(&host.device_info());
            Ok(Link {
                host: Rc::new(Observed::new(host, observer.clone())),
                observer,
                served: Some(served),
                replay: None,
            })
        }
        #[cfg(feature = "libusb")]
        Transport::Libusb => {
            crate::libusb::transport::check_stand_in_loaded()
                .map_err(|e| RunError::Libusb(e.to_string()))?;
            let served = serve(setup, sim, &taps.trace).map_err(|e| enumeration(e.to_string()))?;
            let host = crate::libusb::transport::open_host(served.server(), sim)
                .map_err(|e| enumeration(e.to_string()))?;
            let observer = taps.attach(&host.device_info());
            Ok(Link {
                host: Rc::new(Observed::new(host, observer.clone())),
                observer,
                served: Some(served),
                replay: None,
            })
        }
        #[cfg(not(feature = "libusb"))]
        Transport::Libusb => Err(RunError::LibusbFeatureMissing),
    }
}

/// A recording served over USB/IP on loopback (the replay's rules hold there, see
/// `scanemu::capture::serve`), reached over `transport` (USB/IP or libusb) as the device of
/// a run is; its report becomes the run's verdict when the link closes.
fn connect_served_replay(
    transport: &Transport,
    recording: Recording,
    config: ReplayConfig,
    sim: &Sim,
    taps: &Taps,
    scenario: &Path,
) -> Result<Link, RunError> {
    let enumeration = |reason: String| RunError::Enumeration {
        scenario: scenario.to_path_buf(),
        reason,
    };
    let reports: Arc<Mutex<Vec<ReplayReport>>> = Arc::default();
    let mut served = ServedRecording::new(recording);
    served.config = config;
    let sink = reports.clone();
    served.reports = Some(Arc::new(move |r: &ReplayReport| {
        sink.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(r.clone())
    }));
    let mut server = ServerConfig::with_devices(vec![DeviceSpec::with_backend(
        Arc::new(served),
        default_busid(0),
    )]);
    server.epoch = epoch_of(sim);
    let served = ServedDevice::with_config(server).map_err(|e| enumeration(e.to_string()))?;
    forward_notes(&served, sim, &taps.trace);
    let verdict = Some(Verdict::Served(reports));
    match transport {
        #[cfg(feature = "libusb")]
        Transport::Libusb => {
            crate::libusb::transport::check_stand_in_loaded()
                .map_err(|e| RunError::Libusb(e.to_string()))?;
            let host = crate::libusb::transport::open_host(served.server(), sim)
                .map_err(|e| enumeration(e.to_string()))?;
            Ok(served_link(host, served, verdict, taps))
        }
        #[cfg(not(feature = "libusb"))]
        Transport::Libusb => Err(RunError::LibusbFeatureMissing),
        _ => {
            let host = UsbIpHost::connect(
                served.server().local_addr(),
                &served.server().exported().record.busid,
                Rc::new(sim.clone()),
            )
            .map_err(|e| enumeration(format!("USB/IP import: {e}")))?;
            Ok(served_link(host, served, verdict, taps))
        }
    }
}

/// The link of a host that reaches `served`.
fn served_link<H: UsbHost + 'static>(
    host: H,
    served: ServedDevice,
    replay: Option<Verdict>,
    taps: &Taps,
) -> Link {
    let observer = taps.attach(&host.device_info());
    Link {
        host: Rc::new(Observed::new(host, observer.clone())),
        observer,
        served: Some(served),
        replay,
    }
}

/// The wall-clock instant `sim`'s time counts from, so a server's notes land on its clock.
fn epoch_of(sim: &Sim) -> Option<std::time::Instant> {
    let since = std::time::Duration::from_micros(sim.now().total_micros());
    std::time::Instant::now().checked_sub(since)
}

/// A task on `sim` that hands the served device's notes to `trace` as they come.
fn forward_notes(served: &ServedDevice, sim: &Sim, trace: &Rc<TraceObserver>) {
    let (notes, trace) = (served.notes(), trace.clone());
    sim.spawn(async move {
        loop {
            for note in notes.next().await {
                trace.device(&note);
            }
        }
    });
}

/// Serves the run's device over USB/IP, its clock starting where `sim`'s does; a task on `sim`
/// hands its notes to `trace` as they come.
fn serve(
    setup: DeviceSetup<'_>,
    sim: &Sim,
    trace: &Rc<TraceObserver>,
) -> std::io::Result<ServedDevice> {
    let epoch = epoch_of(sim);
    let served = ServedDevice::serve(setup.profile, setup.faults, epoch)?;
    let (notes, trace) = (served.notes(), trace.clone());
    sim.spawn(async move {
        loop {
            for note in notes.next().await {
                trace.device(&note);
            }
        }
    });
    Ok(served)
}

impl Link {
    /// Closes the link once the run is over at `end` (the roles must have let go of the host):
    /// the replay's verdict, or the served device's notes up to `end` that the run had not
    /// taken yet, go into the trace.
    pub(crate) fn close(self, end: Instant, trace: &TraceObserver, rec: &Recorder) {
        let Link {
            host,
            observer: _,
            served,
            replay,
        } = self;
        if let Some(Verdict::Host(r)) = &replay {
            replay_verdict(&r.report(), rec, end);
        }
        drop(host);
        if let Some(served) = served {
            // The server's shutdown ends the replay's import, which files its report.
            for note in served.shutdown().iter().filter(|n| n.at <= end) {
                trace.device(note);
            }
        }
        if let Some(Verdict::Served(reports)) = &replay {
            let reports = reports.lock().unwrap_or_else(|e| e.into_inner());
            match reports.first() {
                Some(r) => replay_verdict(r, rec, end),
                None => rec.push(
                    end.total_micros(),
                    Actor::Driver,
                    Kind::DriverFault {
                        what: "replay: the driver never imported the recorded device".into(),
                    },
                ),
            }
        }
    }
}

/// Turns a replay's first divergence, or the part of the recording the driver never asked
/// for, into a `DriverFault` (which WIA-FAULT-NO-HANG reports).
fn replay_verdict(replay: &ReplayReport, rec: &Recorder, end: Instant) {
    let (at, what) = match &replay.divergence {
        Some(d) => (d.at, format!("replay: {d}")),
        None if replay.synthesized_cancel => return,
        None => match replay.missing.first() {
            Some(t) => (
                end,
                format!(
                    "replay: the driver stopped before the recording did; transaction #{} ({}) \
                 never came",
                    t.seq,
                    describe_transaction(t)
                ),
            ),
            None => return,
        },
    };
    rec.push(at.total_micros(), Actor::Driver, Kind::DriverFault { what });
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

/// A run's usbmon capture.
pub(crate) type PcapCapture = PcapObserver<std::io::BufWriter<std::fs::File>>;

/// Creates the capture of one run in `dir` (created if missing), passing records on to
/// `trace`; returns it with its path.
pub(crate) fn open_pcap(
    dir: &Path,
    file_name: &str,
    profile: &Profile,
    trace: Rc<TraceObserver>,
) -> Result<(Rc<PcapCapture>, PathBuf), RunError> {
    let path = dir.join(file_name);
    let fail = |error: std::io::Error| RunError::Pcap {
        path: path.clone(),
        error,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let file = std::fs::File::create(&path).map_err(fail)?;
    let writer = PcapWriter::new(std::io::BufWriter::new(file)).map_err(fail)?;
    let capture = PcapObserver::new(
        writer,
        &DeviceInfo::default(),
        CaptureConfig::with_speed(profile.usb.speed),
    )
    .wrapping(trace);
    Ok((Rc::new(capture), path))
}
