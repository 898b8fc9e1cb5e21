//! The emulated scanner behind a SANE backend that drives real hardware through libusb
//! (`sane:epson2`): the scanlab libusb-1.0 stand-in made the process's libusb, and for each run
//! a fresh in-process USB/IP server exporting the scenario's device, whose notes become the
//! `device` actor of the run's trace, on the trace's clock.
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

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use scanemu::personality::DeviceNote;
use scanemu::profile::Profile;
use scanemu::usbip::{ServerConfig, UsbIpServer};

use super::scenario::DeviceSpec;
use super::trace::DeviceEvent;
use crate::libusb::stand_in::{self, Loaded};

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
pub fn provide_stand_in() -> Result<(), String> {
    match stand_in::loaded() {
        Loaded::StandIn => Ok(()),
        // A libusb already linked at start-up (the `libusb` cargo feature): only re-executing
        // with the stand-in first on LD_LIBRARY_PATH replaces it.
        Loaded::Other(_) => stand_in::reexec(WHO),
        Loaded::None => super::ffi::load_for_process(&stand_in::library(WHO)?),
    }
}

/// After a backend was loaded: `Ok` when no libusb but the stand-in is mapped, so the backend
/// cannot reach a real scanner on this machine.
pub fn check_only_stand_in() -> Result<(), String> {
    stand_in::check(WHO)
}

/// One run's emulated scanner: a USB/IP server on `127.0.0.1:0` exporting the scenario's
/// device, with `SCANLAB_USBIP` pointing at it, and its notes on the trace's clock.
pub struct Emulator {
    server: UsbIpServer,
    notes: Arc<Mutex<Vec<DeviceEvent>>>,
}

impl Emulator {
    /// Serves `spec` (its profile from `profiles`, its faults added to the profile's) with
    /// device times counted from `epoch`. One line on failure.
    pub fn start(profiles: &Path, spec: &DeviceSpec, epoch: Instant) -> Result<Emulator, String> {
        let path = profiles.join(format!("{}.json", spec.profile));
        let profile = Profile::load(&path).map_err(|e| e.to_string())?;
        let mut config = ServerConfig::new(profile.clone());
        if !spec.faults.is_empty() {
            let mut faults = profile.faults.clone();
            faults.extend(spec.faults.iter().copied());
            config.device_mut().faults = Some(faults);
        }
        config.epoch = Some(epoch);
        let notes: Arc<Mutex<Vec<DeviceEvent>>> = Arc::new(Mutex::new(Vec::new()));
        let sink = notes.clone();
        config.device_mut().notes = Some(Arc::new(move |n: &DeviceNote| {
            let event = DeviceEvent {
                at_us: n.at.total_micros(),
                what: n.kind.name().to_string(),
                value: n.value,
                detail: n.detail.to_string(),
            };
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(event);
        }));
        let server = UsbIpServer::bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), config)
            .map_err(|e| format!("{}: cannot serve the device: {e}", path.display()))?;
        // The stand-in reads it in libusb_init; runs are serialised by the runner's lock.
        std::env::set_var(stand_in::SERVER_ENV, server.local_addr().to_string());
        Ok(Emulator { server, notes })
    }

    fn count(&self) -> usize {
        self.notes.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Waits until the device has been quiet for `quiet` (at most `cap`), so that what it does
    /// after the frontend's last call (a motor stopping, bands piling up) is in the trace.
    pub fn settle(&self, quiet: Duration, cap: Duration) {
        let began = Instant::now();
        let mut seen = self.count();
        let mut since = Instant::now();
        while began.elapsed() < cap {
            std::thread::sleep(Duration::from_millis(5));
            let n = self.count();
            if n != seen {
                seen = n;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                break;
            }
        }
    }

    /// Stops the server and returns the device's notes in time order.
    pub fn finish(self) -> Vec<DeviceEvent> {
        self.server.shutdown();
        let mut events = std::mem::take(&mut *self.notes.lock().unwrap_or_else(|p| p.into_inner()));
        events.sort_by_key(|e| e.at_us);
        events
    }
}
