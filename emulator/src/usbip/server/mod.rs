//! The USB/IP server: exports emulated scanners over TCP, on tokio.
//!
//! [`UsbIpServer::bind`] listens on an address (loopback unless the caller decides otherwise)
//! and exports one device per [`DeviceSpec`] of its [`ServerConfig`], each with its own bus id,
//! profile and faults. A connection may list the devices (`OP_REQ_DEVLIST`) as often as it
//! likes; `OP_REQ_IMPORT` of a bus id hands it that device until it disconnects. One importer
//! per device: a second import of a taken device is answered `ST_DEV_BUSY`, while the other
//! devices stay importable by other clients at the same time. Every import gets a freshly
//! built [`Device`] from the device's profile and faults, enumerated on the server side as a
//! host bus would (bus reset, SET_ADDRESS, SET_CONFIGURATION), so each client starts from a
//! device in its power-on state.
//!
//! # The network edge
//!
//! tokio lives here and nowhere below: the server runs a runtime of its own (on a thread of
//! its own plus [`ServerConfig::worker_threads`] workers), accepts asynchronously and serves
//! each connection on one task. The task owns its [`Device`] (a sans-IO state machine) and
//! steps it with instants read from the wall clock at this edge: on every command that
//! arrives and at the device's [`Device::poll_at`], woken by a timerfd so the device's
//! schedule is kept to the microsecond (tokio's own timer counts milliseconds).
//!
//! URBs queue per endpoint (all control URBs share EP0) and only the head of each queue is
//! stepped, with the same host-controller transfers ([`crate::usb::hc`]) the in-process host uses.
//! An IN URB the device NAKs stays pending (no empty completion). Completions are paced by
//! the profile's bus speed (`Speed::wire_time`, one bus shared by all endpoints), as the
//! in-process host charges them.
//!
//! Results as the Linux stub (usbip-host) reports them: a STALL is `-EPIPE`, a device that
//! disconnected is `-ESHUTDOWN`, an URB for another devid `-ENODEV`, an unknown endpoint
//! `-ENOENT`, an inconsistent control URB `-EINVAL`, babble `-EOVERFLOW`. `CMD_UNLINK` of a
//! pending URB answers `RET_UNLINK` with `-ECONNRESET` and the URB gets no `RET_SUBMIT`; of an
//! URB already completed (or unknown) it answers 0. An URB the device has completed whose
//! completion still waits for its wire time is completed: the device has handed its data out,
//! so the data is not dropped; its `RET_SUBMIT` goes out when due and the `RET_UNLINK` (0)
//! right after it, as the stub sends a given-back URB's `RET_SUBMIT` before the answer to an
//! unlink that came too late. SET_ADDRESS is answered locally (vhci-hcd
//! never forwards it), and the stub's device reset request (`bmRequestType` 0x23,
//! SET_FEATURE(PORT_RESET)) kills every pending URB with `-ESHUTDOWN`, resets and
//! re-enumerates the device.
//!
//! # Peers that misbehave
//!
//! - A malformed header, an absurd length, an unknown command or more than
//!   [`ServerConfig::max_pending_urbs`] outstanding URBs (or
//!   [`ServerConfig::max_pending_bytes`] of buffers) closes that connection only, with one log
//!   line; the device goes back to the pool for the next client.
//! - At most [`ServerConfig::max_connections`] connections live at once. At the cap, the
//!   oldest connection that has not imported a device is closed to make room (an idle flood
//!   cannot lock a well-behaved client out); when every connection holds a device, the new one
//!   is closed at once.
//! - Before its import a connection has [`ServerConfig::handshake_timeout`] for each
//!   operation; an imported connection with nothing pending that sends nothing for
//!   [`ServerConfig::idle_timeout`] is closed; a peer that stops reading its replies for
//!   [`ServerConfig::write_timeout`] is closed; TCP keepalive finds peers that vanished.
//! - When the process runs out of descriptors (`EMFILE`/`ENFILE`), the accept loop closes the
//!   oldest connection still in its handshake, backs off (up to half a second) instead of
//!   spinning, and logs one line per five seconds with the count of failures.
//! - Per-connection log lines are rate limited (a burst, then a few per second, with the count
//!   of lines left out), so a flood of connections cannot flood the log.
//!
//! # Shutdown
//!
//! [`UsbIpServer::shutdown`] (or SIGINT/SIGTERM after [`UsbIpServer::stop_on_signals`]) stops
//! accepting; each session sends the completions it owes, unlinks every pending URB with
//! `-ESHUTDOWN` as Linux does for a device that goes away (`RET_SUBMIT` with that status, and
//! the same `C` record in the capture: the client sees its device gone, not a cancel it never
//! asked for), closes its connection and lets its device finish its schedule; then the capture
//! is flushed.
//!
//! # Captures
//!
//! With [`ServerConfig::capture`], every URB is written as usbmon records as Linux's usbmon
//! writes them on the exporting host: an `S` record when it arrives, a `C` record when it
//! completes, an `E` record (setup flag `-`, data flag `E`, no data) instead of `C` when the
//! submission itself fails because there is no device (`-ENODEV`). An URB unlinked by the
//! client completes `-ECONNRESET` (`usb_unlink_urb`); URBs still pending when the client
//! disconnects complete `-ENOENT` (the stub kills them with `usb_kill_urb`); at shutdown
//! `-ESHUTDOWN`. Devices appear as bus 1, device 2, 3, ... in the order of the specs.
//!
//! # Layout
//!
//! - this module: the public API ([`UsbIpServer`], [`ServerConfig`], [`DeviceSpec`], the
//!   [`UrbBackend`] trait) and the state the connections share;
//! - `listener`: the accept loop, the connection cap and the descriptor backoff;
//! - `connection`: one connection's handshake and how it ends;
//! - `session`: the loop of an imported device, the same for both kinds of device, over a
//!   `Backend` trait; the reply buffer and the capture's records;
//! - `emulated`: the `Backend` of an emulated [`Device`]; `backend`: the `Backend` of a
//!   [`UrbBackend`].

mod backend;
mod connection;
mod emulated;
mod listener;
mod session;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration as StdDuration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::device::Device;
use crate::engine::Fault;
use crate::personality::DeviceNote;
use crate::profile::Profile;
use crate::time::Instant;
use crate::usb::descriptor::{self, DeviceDescriptor};
use crate::usb::descriptor_type;
use crate::usb::hc::{self, SetupPacket};
use crate::usb::speed::Speed;
use crate::usb::usbmon::{PcapWriter, TransferType};
use crate::usbip::protocol::{
    DeviceRecord, ExportedDevice, InterfaceRecord, Limits, ProtocolError, RetSubmit, RetUnlink,
};

/// Receives every device note of one served device, with its time on the server's clock.
pub type NoteSink = Arc<dyn Fn(&DeviceNote) + Send + Sync>;
/// Receives one line per server event (accepted, imported, closed and why, backoff).
pub type LogSink = Arc<dyn Fn(&str) + Send + Sync>;

/// A usbmon pcap (link type 220) shared by the server's sessions; see the module
/// documentation for what is written when. Records are flushed after every batch a session
/// handles, so a server stopped by a signal leaves a complete file.
pub type Capture = Arc<Mutex<PcapWriter<Box<dyn Write + Send>>>>;

/// One exported device.
#[derive(Clone)]
#[non_exhaustive]
pub struct DeviceSpec {
    /// The device profile (descriptors, timing, faults).
    pub profile: Profile,
    /// Faults to inject instead of the profile's (default: the profile's own).
    pub faults: Option<Vec<Fault>>,
    /// The bus id clients import (at most 31 bytes; unique within a server).
    pub busid: String,
    /// Where this device's notes go (default: nowhere).
    pub notes: Option<NoteSink>,
    /// Something that answers URBs instead of an emulated device of `profile` (default:
    /// none); see [`UrbBackend`].
    pub backend: Option<Arc<dyn UrbBackend>>,
}

impl DeviceSpec {
    /// A device of `profile` exported as `busid`, with the profile's faults and no note sink.
    pub fn new(profile: Profile, busid: impl Into<String>) -> DeviceSpec {
        DeviceSpec {
            profile,
            faults: None,
            busid: busid.into(),
            notes: None,
            backend: None,
        }
    }

    /// A device whose URBs `backend` answers, exported as `busid` (its profile is unused).
    pub fn with_backend(backend: Arc<dyn UrbBackend>, busid: impl Into<String>) -> DeviceSpec {
        DeviceSpec {
            backend: Some(backend),
            ..DeviceSpec::new(Profile::builtin_fast(), busid)
        }
    }
}

/// A device served at the level of URBs rather than of packets: something other than an
/// emulated [`Device`] answers each URB of an imported device (a recording:
/// `capture::serve::ServedRecording`). The server keeps the connection (commands, replies,
/// limits, timeouts, the capture) and hands the URBs over through a [`UrbSession`], one per
/// import, whose answers may come from any thread.
pub trait UrbBackend: Send + Sync {
    /// The device descriptor and the whole configuration descriptor, as the device list and
    /// the client see them.
    fn descriptors(&self) -> (Vec<u8>, Vec<u8>);
    /// The bus speed the device list reports.
    fn speed(&self) -> Speed;
    /// Starts serving one import: its URBs come through the returned session, every answer
    /// goes to `answer` (a [`RetSubmit`] per URB, a [`RetUnlink`] per unlink), device notes
    /// to `notes`; instants count from `epoch` (the server's clock).
    fn open(
        &self,
        epoch: std::time::Instant,
        notes: Option<NoteSink>,
        answer: UrbAnswerSink,
    ) -> Box<dyn UrbSession>;
}

/// Where a [`UrbSession`] sends its answers.
pub type UrbAnswerSink = Box<dyn Fn(UrbAnswer) + Send>;

/// One import of a [`UrbBackend`] device.
pub trait UrbSession: Send {
    /// A new URB; its [`RetSubmit`] goes to the answer sink when it ends.
    fn submit(&mut self, urb: UrbRequest);
    /// `CMD_UNLINK` number `seqnum` of URB `target`: answered with a [`RetUnlink`], status
    /// `-ECONNRESET` (and no `RetSubmit` for `target`) if it was pending, else 0.
    fn unlink(&mut self, seqnum: u32, target: u32);
    /// The import is over (the client left, or the server stops): ends the session's work and
    /// returns once it has; answers after this are dropped.
    fn close(self: Box<Self>);
}

/// One URB for a [`UrbBackend`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrbRequest {
    /// The URB's sequence number.
    pub seqnum: u32,
    /// Control, bulk or interrupt (from the endpoint's descriptor).
    pub transfer_type: TransferType,
    /// The endpoint address with its direction bit (`0x00` or `0x80` for control).
    pub endpoint: u8,
    /// The SETUP packet of a control URB.
    pub setup: Option<SetupPacket>,
    /// The buffer length: the most an IN URB may return, the OUT data's length.
    pub length: u32,
    /// OUT data.
    pub data: Vec<u8>,
}

/// An answer of a [`UrbSession`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrbAnswer {
    /// An URB ended.
    Submit(RetSubmit),
    /// An unlink was done.
    Unlink(RetUnlink),
}

/// The bus id of the `index`-th device (from 0) when the caller names none: `1-1`, `1-2`, ...
pub fn default_busid(index: usize) -> String {
    format!("1-{}", index + 1)
}

/// What the server exports and how it bounds its peers.
#[derive(Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The exported devices, in the order `OP_REP_DEVLIST` lists them (default: one).
    pub devices: Vec<DeviceSpec>,
    /// Decoder limits (default: [`Limits::default`], 16 MiB per transfer).
    pub limits: Limits,
    /// Most URBs one connection may have outstanding before it is closed (default 1024).
    pub max_pending_urbs: usize,
    /// Most buffer bytes one connection may have outstanding before it is closed (default 64 MiB).
    pub max_pending_bytes: usize,
    /// Most connections alive at once (default 256; at least 1).
    pub max_connections: usize,
    /// How long a connection that has not imported a device may take over each operation
    /// (default 10 s).
    pub handshake_timeout: StdDuration,
    /// How long an imported connection with no URB pending may stay silent before it is
    /// closed (default 10 minutes; `None`: never, for a device left attached with `usbip
    /// attach` and no driver bound).
    pub idle_timeout: Option<StdDuration>,
    /// How long a peer may leave its replies unread before it is closed (default 30 s).
    pub write_timeout: StdDuration,
    /// Worker threads of the server's runtime (default 0: one per core, at most 4).
    pub worker_threads: usize,
    /// The instant the devices' time counts from (default: when the server was bound). Give
    /// the epoch of another clock to put device notes on that clock.
    pub epoch: Option<std::time::Instant>,
    /// Where server log lines go (default: nowhere).
    pub log: Option<LogSink>,
    /// A usbmon capture every URB of every device is written to (default: none).
    pub capture: Option<Capture>,
}

impl ServerConfig {
    /// A configuration exporting one device of `profile` as `1-1`, every other field at its
    /// default.
    pub fn new(profile: Profile) -> ServerConfig {
        ServerConfig::with_devices(vec![DeviceSpec::new(profile, default_busid(0))])
    }

    /// A configuration exporting `devices`, every other field at its default.
    pub fn with_devices(devices: Vec<DeviceSpec>) -> ServerConfig {
        ServerConfig {
            devices,
            limits: Limits::default(),
            max_pending_urbs: 1024,
            max_pending_bytes: 64 << 20,
            max_connections: 256,
            handshake_timeout: StdDuration::from_secs(10),
            idle_timeout: Some(StdDuration::from_secs(600)),
            write_timeout: StdDuration::from_secs(30),
            worker_threads: 0,
            epoch: None,
            log: None,
            capture: None,
        }
    }

    /// The first device's spec, where most callers set faults and notes.
    ///
    /// # Panics
    /// If the configuration has no device (only [`ServerConfig::with_devices`] of an empty
    /// list makes one; [`UsbIpServer::bind`] refuses it).
    pub fn device_mut(&mut self) -> &mut DeviceSpec {
        &mut self.devices[0]
    }
}

/// Counters of a running server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted.
    pub connections: u64,
    /// Successful imports.
    pub imports: u64,
    /// Connections closed because the peer broke the protocol or a limit.
    pub protocol_errors: u64,
    /// Connections closed at once because every slot held an imported device.
    pub refused: u64,
    /// Connections in their handshake closed to make room for a new one.
    pub evicted: u64,
    /// Connections closed by the handshake, idle or write timeout.
    pub timed_out: u64,
    /// Accept calls that failed (descriptors exhausted and other errors).
    pub accept_errors: u64,
    /// Connections alive now.
    pub live: u64,
}

/// A token bucket for log lines that a peer can cause: a burst, then a few per second.
struct LogLimiter {
    tokens: f64,
    last: std::time::Instant,
    suppressed: u64,
}

const LOG_BURST: f64 = 40.0;
const LOG_PER_SECOND: f64 = 4.0;

struct Shared {
    config: ServerConfig,
    epoch: std::time::Instant,
    exports: Vec<ExportedDevice>,
    taken: Vec<AtomicBool>,
    stop: watch::Sender<bool>,
    conns: Mutex<BTreeMap<u64, listener::ConnEntry>>,
    limiter: Mutex<LogLimiter>,
    connections: AtomicU64,
    imports: AtomicU64,
    protocol_errors: AtomicU64,
    refused: AtomicU64,
    evicted: AtomicU64,
    timed_out: AtomicU64,
    accept_errors: AtomicU64,
    /// The signal that stopped the server (0: none), set by [`UsbIpServer::stop_on_signals`].
    stopped_by: std::sync::atomic::AtomicU8,
}

/// A signal that stopped the server ([`UsbIpServer::stop_on_signals`], [`UsbIpServer::wait`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl StopSignal {
    /// `SIGINT` or `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }

    /// The signal's number (2, 15); a program stopped by it exits with 128 plus this.
    pub fn number(self) -> u8 {
        match self {
            StopSignal::Interrupt => 2,
            StopSignal::Terminate => 15,
        }
    }

    fn from_code(code: u8) -> Option<StopSignal> {
        match code {
            2 => Some(StopSignal::Interrupt),
            15 => Some(StopSignal::Terminate),
            _ => None,
        }
    }
}

impl Shared {
    /// The graceful shutdown for `signal`, once: the first signal is the one reported.
    fn stop_by(&self, signal: StopSignal) {
        let first = self
            .stopped_by
            .compare_exchange(0, signal.number(), Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if first {
            self.log(&format!(
                "{}: shutting down (pending URBs are unlinked with -ESHUTDOWN)",
                signal.name()
            ));
            self.stop.send_replace(true);
        }
    }

    fn log(&self, line: &str) {
        if let Some(log) = &self.config.log {
            log(line);
        }
    }

    /// Logs a line a peer caused, within the rate limit.
    fn log_limited(&self, line: &str) {
        if self.config.log.is_none() {
            return;
        }
        let suppressed = {
            let mut l = self.limiter.lock().unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            let refill = now.duration_since(l.last).as_secs_f64() * LOG_PER_SECOND;
            l.tokens = (l.tokens + refill).min(LOG_BURST);
            l.last = now;
            if l.tokens < 1.0 {
                l.suppressed += 1;
                return;
            }
            l.tokens -= 1.0;
            std::mem::take(&mut l.suppressed)
        };
        if suppressed > 0 {
            self.log(&format!("{line} ({suppressed} similar lines left out)"));
        } else {
            self.log(line);
        }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX))
    }

    /// The wall-clock instant of `at` on the server's clock.
    fn wall(&self, at: Instant) -> std::time::Instant {
        self.epoch + StdDuration::from_micros(at.total_micros())
    }
}

/// A running USB/IP server; see the module documentation. Dropping it shuts it down.
pub struct UsbIpServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    runtime: tokio::runtime::Handle,
    thread: Option<JoinHandle<()>>,
}

impl UsbIpServer {
    /// Binds `addr` and starts serving. Each device is built and enumerated once here, so a
    /// profile the firmware cannot enumerate, a duplicate or overlong bus id, or an empty
    /// device list is an error now rather than at the first import.
    pub fn bind(addr: SocketAddr, config: ServerConfig) -> io::Result<UsbIpServer> {
        if config.devices.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no device to export",
            ));
        }
        let mut exports = Vec::new();
        for (i, spec) in config.devices.iter().enumerate() {
            if config.devices[..i].iter().any(|d| d.busid == spec.busid) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("bus id {:?} is exported twice", spec.busid),
                ));
            }
            let export = describe(spec, i).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("{}: {e}", spec.busid))
            })?;
            exports.push(export);
        }
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let workers = match config.worker_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get().min(4)),
            n => n,
        };
        // One worker: everything runs on the server's own thread, with no cross-thread wake-ups.
        let runtime = if workers == 1 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .thread_name("usbip-worker")
                .enable_all()
                .build()?
        };
        let (stop, _) = watch::channel(false);
        let taken = exports.iter().map(|_| AtomicBool::new(false)).collect();
        let shared = Arc::new(Shared {
            epoch: config.epoch.unwrap_or_else(std::time::Instant::now),
            config,
            exports,
            taken,
            stop,
            conns: Mutex::new(BTreeMap::new()),
            limiter: Mutex::new(LogLimiter {
                tokens: LOG_BURST,
                last: std::time::Instant::now(),
                suppressed: 0,
            }),
            connections: AtomicU64::new(0),
            imports: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            stopped_by: std::sync::atomic::AtomicU8::new(0),
        });
        let handle = runtime.handle().clone();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("usbip-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(l) => listener::serve(l, s).await,
                        Err(e) => s.log(&format!("cannot register the listener: {e}")),
                    }
                });
                // Sessions finish their shutdown on their own; give stragglers a moment.
                runtime.shutdown_timeout(StdDuration::from_secs(2));
            })?;
        Ok(UsbIpServer {
            shared,
            addr,
            runtime: handle,
            thread: Some(thread),
        })
    }

    /// The address it listens on (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The first device's record as clients see it in `OP_REP_DEVLIST` and `OP_REP_IMPORT`.
    pub fn exported(&self) -> &ExportedDevice {
        &self.shared.exports[0]
    }

    /// Every exported device's record, in the order of [`ServerConfig::devices`].
    pub fn exports(&self) -> &[ExportedDevice] {
        &self.shared.exports
    }

    /// Counters so far.
    pub fn stats(&self) -> ServerStats {
        let s = &self.shared;
        ServerStats {
            connections: s.connections.load(Ordering::Relaxed),
            imports: s.imports.load(Ordering::Relaxed),
            protocol_errors: s.protocol_errors.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            evicted: s.evicted.load(Ordering::Relaxed),
            timed_out: s.timed_out.load(Ordering::Relaxed),
            accept_errors: s.accept_errors.load(Ordering::Relaxed),
            live: s.conns.lock().map_or(0, |c| c.len() as u64),
        }
    }

    /// Shuts the server down gracefully on the first SIGINT or SIGTERM (one log line names
    /// the signal); [`UsbIpServer::wait`] then returns once the shutdown is complete.
    pub fn stop_on_signals(&self) -> io::Result<()> {
        let _guard = self.runtime.enter();
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let shared = self.shared.clone();
        self.runtime.spawn(async move {
            let signal = tokio::select! {
                _ = int.recv() => StopSignal::Interrupt,
                _ = term.recv() => StopSignal::Terminate,
            };
            shared.stop_by(signal);
        });
        Ok(())
    }

    /// Shuts the server down as [`UsbIpServer::stop_on_signals`] does for `signal`, for a
    /// program that caught the signal itself (before the server existed, say);
    /// [`UsbIpServer::wait`] then returns it. Only the first signal counts: a second one,
    /// by this or by the handlers, changes nothing.
    pub fn stop_by(&self, signal: StopSignal) {
        self.shared.stop_by(signal);
    }

    /// Blocks until the server stops: after [`UsbIpServer::shutdown`] from elsewhere, a
    /// signal ([`UsbIpServer::stop_on_signals`]) or a failed accept loop. Returns the signal
    /// that stopped it, if one did; the shutdown is complete and the capture flushed either way.
    pub fn wait(mut self) -> Option<StopSignal> {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.flush_capture();
        StopSignal::from_code(self.shared.stopped_by.load(Ordering::SeqCst))
    }

    /// Stops accepting, unlinks every session's pending URBs (`-ESHUTDOWN`), closes every
    /// connection, flushes the capture and waits for all of it.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.send_replace(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.flush_capture();
    }

    fn flush_capture(&self) {
        if let Some(c) = &self.shared.config.capture {
            let mut w = c.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = w.flush() {
                self.shared.log(&format!("capture flush failed: {e}"));
            }
        }
    }
}

impl Drop for UsbIpServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop();
        }
    }
}

/// Why a device cannot be exported.
#[derive(Debug, thiserror::Error)]
enum DescribeError {
    /// The device did not enumerate.
    #[error("enumeration failed: {0}")]
    Enumeration(hc::WireError),
    /// The bus id does not fit USB/IP's field.
    #[error("{0}")]
    BusId(ProtocolError),
    /// More devices than device numbers.
    #[error("too many devices")]
    TooMany,
    /// A backend without a device or configuration descriptor: no client could configure it.
    #[error("no {0} descriptor to export")]
    NoDescriptor(&'static str),
}

/// Builds and enumerates a device once to fill its exported record.
fn describe(spec: &DeviceSpec, index: usize) -> Result<ExportedDevice, DescribeError> {
    let (device_descriptor, config_descriptor, speed) = match &spec.backend {
        Some(b) => {
            let (d, c) = b.descriptors();
            if d.len() < 18 {
                return Err(DescribeError::NoDescriptor("device"));
            }
            if c.len() < 9 {
                return Err(DescribeError::NoDescriptor("configuration"));
            }
            (d, c, b.speed())
        }
        None => {
            let mut device = Device::new(&spec.profile);
            let (port, mut poller) = device.port_and_poller(Instant::ZERO);
            let e = hc::enumerate(&port, &mut poller).map_err(DescribeError::Enumeration)?;
            (
                e.device_descriptor,
                e.config_descriptor,
                spec.profile.usb.speed,
            )
        }
    };
    let d = DeviceDescriptor::read(&device_descriptor);
    let c = &config_descriptor;
    // Alternate setting 0 of each interface, as usbip lists them.
    let interfaces: Vec<InterfaceRecord> = descriptor::walk(c)
        .filter(|desc| desc[1] == descriptor_type::INTERFACE && desc.len() >= 9 && desc[3] == 0)
        .map(|desc| InterfaceRecord {
            class: desc[5],
            subclass: desc[6],
            protocol: desc[7],
        })
        .collect();
    let busid = spec.busid.clone();
    super::protocol::encode_busid(&busid).map_err(DescribeError::BusId)?;
    let devnum = u32::try_from(index + 2).map_err(|_| DescribeError::TooMany)?;
    Ok(ExportedDevice {
        record: DeviceRecord {
            path: format!("/sys/devices/platform/scanemu/usb1/{busid}"),
            busid,
            busnum: 1,
            devnum,
            speed: speed.usbip_code(),
            id_vendor: d.vendor_id,
            id_product: d.product_id,
            bcd_device: d.device_version,
            device_class: d.class,
            device_subclass: d.subclass,
            device_protocol: d.protocol,
            configuration_value: c.get(5).copied().unwrap_or(1),
            num_configurations: d.num_configurations,
            num_interfaces: u8::try_from(interfaces.len()).unwrap_or(u8::MAX),
        },
        interfaces,
    })
}
