//! The scenario's scanner: its profile found by name, its faults, and the device served over
//! USB/IP with its notes collected.
//!
//! Both pipelines use it: a WIA run over USB/IP or libusb ([`crate::run`]) and a SANE backend
//! driving the emulated scanner ([`crate::sane`]). [`ServedDevice`] binds a USB/IP server on
//! `127.0.0.1:0`, exporting a device of the profile with the scenario's faults added to the
//! profile's, its clock starting at a given epoch so that its notes land on the run's clock. The
//! server's thread hands each device note to an inbox that the run reads from its own thread,
//! as it goes ([`DeviceNotes::next`]) or at the end ([`ServedDevice::shutdown`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use scanemu::engine::Fault;
use scanemu::personality::DeviceNote;
use scanemu::profile::{Profile, ProfileError};
use scanemu::usbip::{ServerConfig, UsbIpServer};

/// Finds a scenario's profile: a bare name is `<profiles_dir>/<name>.json`; a path (it contains
/// `/` or ends in `.json`) is taken relative to the scenario file's folder `scenario_dir`
/// (conformance/SCENARIOS.md), never to the current directory.
pub fn resolve_profile(
    name: &str,
    scenario_dir: &Path,
    profiles_dir: &Path,
) -> Result<Profile, ProfileError> {
    Profile::load(&profile_path(name, scenario_dir, profiles_dir))
}

/// The file [`resolve_profile`] reads for `name`.
pub fn profile_path(name: &str, scenario_dir: &Path, profiles_dir: &Path) -> PathBuf {
    if name.contains('/') || name.ends_with(".json") {
        scenario_dir.join(name)
    } else {
        profiles_dir.join(format!("{name}.json"))
    }
}

/// The faults a run injects: the profile's, then the scenario's.
pub fn faults(profile: &Profile, scenario: &[Fault]) -> Vec<Fault> {
    let mut faults = profile.faults.clone();
    faults.extend(scenario.iter().copied());
    faults
}

/// A device of the scenario served over USB/IP on loopback, and the notes it made. See the
/// module documentation.
pub struct ServedDevice {
    server: UsbIpServer,
    notes: DeviceNotes,
}

impl ServedDevice {
    /// Serves a device of `profile` with `faults` on `127.0.0.1:0`; its time counts from
    /// `epoch` (default: now).
    pub fn serve(
        profile: &Profile,
        faults: Vec<Fault>,
        epoch: Option<std::time::Instant>,
    ) -> std::io::Result<ServedDevice> {
        let mut config = ServerConfig::new(profile.clone());
        config.device_mut().faults = Some(faults);
        config.epoch = epoch;
        ServedDevice::with_config(config)
    }

    /// Serves the device `config` describes on `127.0.0.1:0` (its faults, epoch and capture as
    /// the caller set them); its notes go to [`ServedDevice::notes`] instead of
    /// `config.notes`.
    pub fn with_config(mut config: ServerConfig) -> std::io::Result<ServedDevice> {
        let notes = DeviceNotes::default();
        let sink = notes.clone();
        config.device_mut().notes =
            Some(Arc::new(move |note: &DeviceNote| sink.push(note.clone())));
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let server = UsbIpServer::bind(loopback, config).map_err(|e| {
            std::io::Error::new(e.kind(), format!("USB/IP server on {loopback}: {e}"))
        })?;
        Ok(ServedDevice { server, notes })
    }

    /// The server (its address and the device it exports).
    pub fn server(&self) -> &UsbIpServer {
        &self.server
    }

    /// The device's notes, as they arrive.
    pub fn notes(&self) -> DeviceNotes {
        self.notes.clone()
    }

    /// Stops the server and returns the notes not taken yet, in the order they were made.
    pub fn shutdown(self) -> Vec<DeviceNote> {
        self.server.shutdown();
        self.notes.take()
    }
}

/// The notes of a [`ServedDevice`], handed from the server's thread to the run's thread.
/// Cloning gives another handle to the same notes.
#[derive(Clone, Default)]
pub struct DeviceNotes {
    inner: Arc<Mutex<Inbox>>,
}

#[derive(Default)]
struct Inbox {
    notes: Vec<DeviceNote>,
    made: usize,
    waker: Option<Waker>,
}

impl DeviceNotes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inbox> {
        // A panic never happens while the lock is held, so poisoning carries no half-updated
        // state.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, note: DeviceNote) {
        let mut g = self.lock();
        g.notes.push(note);
        g.made += 1;
        if let Some(w) = g.waker.take() {
            w.wake();
        }
    }

    /// Notes the device has made so far, taken or not.
    pub fn made(&self) -> usize {
        self.lock().made
    }

    /// Takes the notes that arrived and were not taken yet, oldest first.
    pub fn take(&self) -> Vec<DeviceNote> {
        std::mem::take(&mut self.lock().notes)
    }

    /// Waits for at least one note and takes every note there is, oldest first.
    pub async fn next(&self) -> Vec<DeviceNote> {
        std::future::poll_fn(|cx| {
            let mut g = self.lock();
            if g.notes.is_empty() {
                g.waker = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(std::mem::take(&mut g.notes))
            }
        })
        .await
    }
}
