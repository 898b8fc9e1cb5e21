//! The emulated scanner behind a SANE backend that drives real hardware through libusb
//! (`sane:epson2`): the scanlab libusb-1.0 stand-in made the process's libusb, and for each run
//! a fresh in-process USB/IP server exporting the scenario's device (the same
//! `crate::device::ServedDevice` a WIA run over USB/IP uses), whose notes become the `device`
//! actor of the run's trace, on the trace's clock.
//!
//! Loading: a backend such as `libsane-epson2.so.1` has `libusb-1.0.so.0` as a NEEDED entry.
//! [`provide_stand_in`] loads the stand-in (SONAME `libusb-1.0.so.0`) into the process before the
//! backend, so the dynamic loader binds the backend to it. When the process already runs on the
//! stand-in (`scanconform run --transport libusb` re-executed it with the stand-in on
//! `LD_LIBRARY_PATH`) nothing is loaded; when another libusb is already loaded (the `libusb`
//! cargo feature links the system's), the program re-executes itself with the stand-in first on
//! `LD_LIBRARY_PATH` ([`crate::libusb::stand_in::reexec`]).
//!
//! The stand-in reads its server's address (`SCANLAB_USBIP`) when a libusb context is created;
//! `sanei_usb` creates one in the first `sane_init` after the backend is loaded, so the runner
//! loads the backend afresh for every run (which also resets its process-wide state, such as
//! epson2's command counters that decide which status requests `sane_close` sends).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use scanemu::capture::pcap::PcapWriter;
use scanemu::personality::DeviceNote;
use scanemu::profile::ProfileError;
use scanemu::usbip::server::Capture;
use scanemu::usbip::ServerConfig;

use super::ffi::LoadError;
use super::scenario::DeviceSpec;
use super::trace::DeviceEvent;
use crate::device::{self, ServedDevice};
use crate::libusb::stand_in::{self, Loaded, StandInError};

/// Why the emulated device (or the libusb it is reached through) is not available; `Display` is
/// one line.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The stand-in cannot be the process's libusb.
    #[error(transparent)]
    StandIn(#[from] StandInError),
    /// The stand-in does not load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The scenario's device profile is unusable.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The USB/IP server does not start.
    #[error("{}: cannot serve the device: {source}", .path.display())]
    Serve {
        /// The profile served.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The capture file cannot be written.
    #[error("--pcap {}: {source}", .path.display())]
    Capture {
        /// The capture file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Backends whose scenarios run against an emulated device, and the device protocol it speaks.
/// The emulator's ESC/I personality is the only one a SANE backend drives.
pub fn needs_device(backend: &str) -> bool {
    backend == "epson2"
}

/// How this module's errors begin.
const WHO: &str = "sane";

/// Makes the scanlab stand-in the libusb of this process, before a backend is loaded (see the
/// module documentation). One line when it cannot: the stand-in is not built, or another libusb
/// is already loaded and re-executing did not help.
pub fn provide_stand_in() -> Result<(), DeviceError> {
    match stand_in::loaded() {
        Loaded::StandIn => Ok(()),
        // A libusb already linked at start-up (the `libusb` cargo feature): only re-executing
        // with the stand-in first on LD_LIBRARY_PATH replaces it.
        Loaded::Other(_) => Ok(stand_in::reexec(WHO)?),
        Loaded::None => Ok(super::ffi::load_for_process(&stand_in::library(WHO)?)?),
    }
}

/// After a backend was loaded: `Ok` when no libusb but the stand-in is mapped, so the backend
/// cannot reach a real scanner on this machine.
pub fn check_only_stand_in() -> Result<(), DeviceError> {
    Ok(stand_in::check(WHO)?)
}

/// One run's emulated scanner: the scenario's device served over USB/IP on `127.0.0.1:0`
/// ([`crate::device::ServedDevice`], shared with WIA runs over USB/IP), with `SCANLAB_USBIP`
/// pointing at it, its notes on the trace's clock, and optionally a usbmon capture of every
/// URB it served.
pub struct Emulator {
    served: ServedDevice,
    capture: Option<(Capture, PathBuf)>,
}

impl Emulator {
    /// Serves `spec` (its profile by name from `profiles`, or by a path relative to the
    /// scenario's folder `scenario_dir`; its faults added to the profile's) with device times
    /// counted from `epoch`; with `capture`, every URB is written to that usbmon pcap file
    /// (created or truncated).
    pub fn start(
        profiles: &Path,
        scenario_dir: &Path,
        spec: &DeviceSpec,
        epoch: Instant,
        capture: Option<&Path>,
    ) -> Result<Emulator, DeviceError> {
        let profile = device::resolve_profile(&spec.profile, scenario_dir, profiles)?;
        let mut config = ServerConfig::new(profile.clone());
        config.device_mut().faults = Some(device::faults(&profile, &spec.faults));
        config.epoch = Some(epoch);
        let capture = match capture {
            Some(file) => {
                let fail = |source| DeviceError::Capture {
                    path: file.to_path_buf(),
                    source,
                };
                let out: Box<dyn std::io::Write + Send> = Box::new(std::io::BufWriter::new(
                    std::fs::File::create(file).map_err(fail)?,
                ));
                let writer: Capture = Arc::new(Mutex::new(PcapWriter::new(out).map_err(fail)?));
                config.capture = Some(writer.clone());
                Some((writer, file.to_path_buf()))
            }
            None => None,
        };
        let served = ServedDevice::with_config(config).map_err(|source| DeviceError::Serve {
            path: profiles.join(format!("{}.json", spec.profile)),
            source,
        })?;
        // The stand-in reads it in libusb_init; runs are serialised by the runner's lock.
        std::env::set_var(
            stand_in::SERVER_ENV,
            served.server().local_addr().to_string(),
        );
        Ok(Emulator { served, capture })
    }

    /// Waits until the device has been quiet for `quiet` (at most `cap`), so that what it does
    /// after the frontend's last call (a motor stopping, bands piling up) is in the trace.
    pub fn settle(&self, quiet: Duration, cap: Duration) {
        let notes = self.served.notes();
        let began = Instant::now();
        let mut seen = notes.made();
        let mut since = Instant::now();
        while began.elapsed() < cap {
            std::thread::sleep(Duration::from_millis(5));
            let n = notes.made();
            if n != seen {
                seen = n;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                break;
            }
        }
    }

    /// Stops the server and returns the device's notes in time order, and whether the
    /// capture (if any) was written completely.
    pub fn finish(self) -> (Vec<DeviceEvent>, Result<(), DeviceError>) {
        let mut events: Vec<DeviceEvent> = self
            .served
            .shutdown()
            .iter()
            .map(|n: &DeviceNote| DeviceEvent {
                at_us: n.at.total_micros(),
                kind: n.kind,
                value: n.value,
                detail: n.detail.to_string(),
            })
            .collect();
        events.sort_by_key(|e| e.at_us);
        let written = match self.capture {
            Some((writer, path)) => writer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .flush()
                .map_err(|source| DeviceError::Capture { path, source }),
            None => Ok(()),
        };
        (events, written)
    }
}
