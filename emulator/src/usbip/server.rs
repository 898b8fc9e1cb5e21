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
//! URB already completed (or unknown) it answers 0. SET_ADDRESS is answered locally (vhci-hcd
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

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration as StdDuration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use super::protocol::{
    encode_devlist, errno, read_busid, CmdSubmit, CmdUnlink, Command, DeviceRecord, ExportedDevice,
    InterfaceRecord, Limits, OpHeader, ProtocolError, RetSubmit, RetUnlink, BUSID_LEN, DIR_IN,
    OP_HEADER_LEN, OP_REP_IMPORT, OP_REQ_DEVLIST, OP_REQ_IMPORT, ST_DEV_BUSY, ST_DEV_ERR, ST_NODEV,
    ST_OK, URB_HEADER_LEN, URB_ZERO_PACKET,
};
use crate::device::Device;
use crate::engine::Fault;
use crate::personality::DeviceNote;
use crate::profile::Profile;
use crate::time::{Duration, Instant};
use crate::usb::descriptor::{self, DeviceDescriptor};
use crate::usb::hc::{
    self, ControlTransfer, InTransfer, OutTransfer, SetupPacket, StepResult, Transfer,
};
use crate::usb::speed::Speed;
use crate::usb::usbmon::{self, EventType, PcapWriter, TransferType, UsbmonEvent, URB_DIR_IN};
use crate::usb::{descriptor_type, Request};

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

/// A live connection as the accept loop sees it.
struct ConnEntry {
    imported: bool,
    /// Already told to close (it has not finished yet): not chosen again.
    evicting: bool,
    evict: Arc<Notify>,
}

impl ConnEntry {
    /// Tells the connection to close; false if it holds a device or was already told.
    fn evict(&mut self) -> bool {
        if self.imported || self.evicting {
            return false;
        }
        self.evicting = true;
        self.evict.notify_one();
        true
    }
}

struct Shared {
    config: ServerConfig,
    epoch: std::time::Instant,
    exports: Vec<ExportedDevice>,
    taken: Vec<AtomicBool>,
    stop: watch::Sender<bool>,
    conns: Mutex<BTreeMap<u64, ConnEntry>>,
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
                        Ok(l) => serve(l, s).await,
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
            shared.stopped_by.store(signal.number(), Ordering::SeqCst);
            shared.log(&format!(
                "{}: shutting down (pending URBs are unlinked with -ESHUTDOWN)",
                signal.name()
            ));
            shared.stop.send_replace(true);
        });
        Ok(())
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

/// True for accept errors that mean "out of descriptors or memory": retrying at once spins.
fn is_resource_exhaustion(e: &io::Error) -> bool {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOBUFS: i32 = 105;
    const ENOMEM: i32 = 12;
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}

/// Closes the oldest connection that has not imported a device; false if there is none.
fn evict_oldest_handshake(shared: &Shared) -> bool {
    let mut conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
    // One at a time: a connection already told to close frees its descriptor shortly.
    if conns.values().any(|c| c.evicting) {
        return false;
    }
    let evicted = conns.values_mut().any(ConnEntry::evict);
    if evicted {
        shared.evicted.fetch_add(1, Ordering::Relaxed);
    }
    evicted
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let mut next_id = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    let mut backoff = StdDuration::ZERO;
    let mut exhausted_since_log = 0u64;
    let mut last_exhaustion_log: Option<std::time::Instant> = None;
    loop {
        // Reap finished connection tasks so the set stays as small as the live connections.
        while tasks.try_join_next().is_some() {}
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                shared.accept_errors.fetch_add(1, Ordering::Relaxed);
                if is_resource_exhaustion(&e) {
                    exhausted_since_log += 1;
                    let due = last_exhaustion_log
                        .is_none_or(|t| t.elapsed() >= StdDuration::from_secs(5));
                    if due {
                        shared.log(&format!(
                            "accept failed: {e}; backing off ({exhausted_since_log} failures since the last line)"
                        ));
                        exhausted_since_log = 0;
                        last_exhaustion_log = Some(std::time::Instant::now());
                    }
                    evict_oldest_handshake(&shared);
                    backoff = (backoff * 2)
                        .clamp(StdDuration::from_millis(5), StdDuration::from_millis(500));
                } else {
                    shared.log_limited(&format!("accept failed: {e}"));
                    backoff = StdDuration::from_millis(1);
                }
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                continue;
            }
        };
        backoff = StdDuration::ZERO;
        next_id += 1;
        let id = next_id;
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let evict = Arc::new(Notify::new());
        {
            let mut conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
            // Connections already told to close are leaving: they do not hold a slot.
            let live = conns.values().filter(|c| !c.evicting).count();
            if live >= shared.config.max_connections.max(1) {
                match conns.values_mut().any(ConnEntry::evict) {
                    true => {
                        shared.evicted.fetch_add(1, Ordering::Relaxed);
                    }
                    false => {
                        drop(conns);
                        shared.refused.fetch_add(1, Ordering::Relaxed);
                        shared.log_limited(&format!(
                            "connection {id} from {peer} refused: {} connections hold devices",
                            shared.config.max_connections
                        ));
                        drop(stream);
                        continue;
                    }
                }
            }
            conns.insert(
                id,
                ConnEntry {
                    imported: false,
                    evicting: false,
                    evict: evict.clone(),
                },
            );
        }
        let s = shared.clone();
        tasks.spawn(async move {
            let _entry = ConnGuard { shared: &s, id };
            s.log_limited(&format!("connection {id} from {peer}"));
            let why = connection(stream, &s, id, evict).await;
            s.log_limited(&format!("connection {id} closed: {why}"));
        });
    }
    // Sessions see the stop too: wait for them to complete their URBs and close.
    while tasks.join_next().await.is_some() {}
}

/// Removes a connection from the registry when its task ends, however it ends.
struct ConnGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut c) = self.shared.conns.lock() {
            c.remove(&self.id);
        }
    }
}

/// Releases the importer slot of a device when the session ends, however it ends.
struct ImportGuard<'a>(&'a AtomicBool);

impl Drop for ImportGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

fn protocol_error(shared: &Shared, e: ProtocolError) -> CloseReason {
    match e {
        ProtocolError::Closed => CloseReason::PeerClosed,
        e => {
            shared.protocol_errors.fetch_add(1, Ordering::Relaxed);
            CloseReason::Protocol(e)
        }
    }
}

/// How far past the end of a connection the device's own schedule is still run (see
/// `Session::settle`), in microseconds.
const SETTLE_LIMIT_US: u64 = 5_000_000;
/// Most device-scheduled instants one wake-up catches up on (see `Session::pump`).
const MAX_CATCH_UP_STEPS: usize = 10_000;
/// Bytes read from the socket at a time (more when a command needs more).
const READ_CHUNK: usize = 64 * 1024;

/// Bytes received and not yet decoded.
struct Inbox {
    buf: Vec<u8>,
    start: usize,
}

impl Inbox {
    fn new() -> Inbox {
        Inbox {
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Reads what the socket has (at least one byte, or 0 at the end of the stream), with
    /// room for `want` bytes beyond those pending. Cancel-safe.
    async fn fill(&mut self, stream: &mut TcpStream, want: usize) -> io::Result<usize> {
        if self.start > 0 && self.buf.capacity() - self.buf.len() < want.max(READ_CHUNK / 4) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(want.max(READ_CHUNK / 4));
        stream.read_buf(&mut self.buf).await
    }
}

/// IN data at least this long is written from its own buffer instead of being copied.
const VECTORED_MIN: usize = 4096;

/// Data buffers of written replies kept for the next IN transfers, at most.
const SPARE_BUFFERS: usize = 4;
/// A data buffer larger than this is not kept.
const SPARE_MAX_BYTES: usize = 1 << 20;
/// Most buffers one vectored write hands the kernel.
const MAX_IOVECS: usize = 64;

/// Replies encoded and not yet written: small replies back to back in `tail`, large IN data
/// in buffers of their own (each written after `tail[..at]`), so that data is never copied
/// into the reply stream. Data buffers that went out are kept for the next transfers: a
/// buffer reused while warm costs less to fill and to write than a fresh one.
#[derive(Default)]
struct Outgoing {
    tail: Vec<u8>,
    /// `(at, data)`: `data` goes out after the first `at` bytes of `tail`.
    data: Vec<(usize, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
}

impl Outgoing {
    fn is_empty(&self) -> bool {
        self.data.is_empty() && self.tail.is_empty()
    }

    /// Appends a data buffer after what `tail` holds now.
    fn push_data(&mut self, data: Vec<u8>) {
        self.data.push((self.tail.len(), data));
    }

    /// A buffer for the next IN transfer: a spare one if there is one.
    fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    fn len(&self) -> usize {
        self.tail.len() + self.data.iter().map(|(_, d)| d.len()).sum::<usize>()
    }

    /// Everything to write, in order.
    fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        let mut from = 0;
        let last = self.data.last().map_or(0, |(at, _)| *at);
        self.data
            .iter()
            .flat_map(move |(at, d)| {
                let head = &self.tail[from..*at];
                from = *at;
                [head, d.as_slice()]
            })
            .chain(std::iter::once(&self.tail[last..]))
    }

    /// The bytes from `skip` on, as at most [`MAX_IOVECS`] slices.
    fn slices(&self, mut skip: usize) -> Vec<io::IoSlice<'_>> {
        let mut out = Vec::with_capacity((2 * self.data.len() + 1).min(MAX_IOVECS));
        for piece in self.pieces() {
            if skip >= piece.len() {
                skip -= piece.len();
                continue;
            }
            out.push(io::IoSlice::new(&piece[skip..]));
            skip = 0;
            if out.len() == MAX_IOVECS {
                break;
            }
        }
        out
    }

    /// Forgets what was written, keeping data buffers for reuse.
    fn clear(&mut self) {
        self.tail.clear();
        for (_, mut d) in self.data.drain(..) {
            if self.spare.len() < SPARE_BUFFERS && d.capacity() <= SPARE_MAX_BYTES {
                d.clear();
                self.spare.push(d);
            }
        }
    }

    /// Writes everything with vectored writes within `limit`, and empties itself. What the
    /// socket takes at once goes without a timer; the rest waits for the peer to read, up to
    /// `limit`.
    async fn write(
        &mut self,
        stream: &mut TcpStream,
        limit: StdDuration,
    ) -> Result<(), CloseReason> {
        let total = self.len();
        let mut done = 0;
        let r = loop {
            if done == total {
                break Ok(());
            }
            match stream.try_write_vectored(&self.slices(done)) {
                Ok(0) => break Err(CloseReason::Write(io::ErrorKind::WriteZero.into())),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let this = &*self;
                    let rest = async {
                        while done < total {
                            let n = stream.write_vectored(&this.slices(done)).await?;
                            if n == 0 {
                                return Err(io::Error::from(io::ErrorKind::WriteZero));
                            }
                            done += n;
                        }
                        Ok(())
                    };
                    break match tokio::time::timeout(limit, rest).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(CloseReason::Write(e)),
                        Err(_) => Err(CloseReason::Unread {
                            bytes: total,
                            ms: limit.as_millis(),
                        }),
                    };
                }
                Err(e) => break Err(CloseReason::Write(e)),
            }
        };
        self.clear();
        r
    }
}

/// Why the server ended a connection: the reason its log line gives.
#[derive(Debug, thiserror::Error)]
enum CloseReason {
    /// The peer closed its end between messages.
    #[error("peer closed the connection")]
    PeerClosed,
    /// The peer closed its end inside a message.
    #[error("peer closed the connection in the middle of {0}")]
    PeerClosedIn(&'static str),
    /// A malformed, truncated or unknown message.
    #[error("protocol error: {0}")]
    Protocol(ProtocolError),
    /// Reading from the socket failed.
    #[error("read failed: {0}")]
    Read(io::Error),
    /// Writing to the socket failed.
    #[error("write failed: {0}")]
    Write(io::Error),
    /// The peer did not read what the server wrote in time.
    #[error("the peer left {bytes} bytes unread for {ms} ms")]
    Unread { bytes: usize, ms: u128 },
    /// The device list could not be encoded.
    #[error("cannot encode the device list: {0}")]
    DeviceList(ProtocolError),
    /// The device record of an import could not be encoded.
    #[error("cannot encode the device record")]
    DeviceRecord,
    /// The import was answered with a refusal.
    #[error("import of {busid:?} refused with status {status}")]
    ImportRefused { busid: String, status: u32 },
    /// The device did not enumerate on the server's side.
    #[error("device failed to enumerate: {0}")]
    Enumeration(hc::WireError),
    /// The session's timer could not be created, armed or read.
    #[error("timer failed: {0}")]
    Timer(io::Error),
    /// Too many URBs or buffer bytes outstanding.
    #[error("limit: {urbs} URBs / {bytes} bytes outstanding (at most {max_urbs} / {max_bytes})")]
    Limit {
        urbs: usize,
        bytes: usize,
        max_urbs: usize,
        max_bytes: usize,
    },
    /// No complete operation before the handshake timeout.
    #[error("handshake timeout: no complete operation within {0} ms")]
    HandshakeTimeout(u128),
    /// Nothing pending and nothing received for the idle timeout.
    #[error("idle timeout: nothing pending and nothing received for {0} s")]
    IdleTimeout(u64),
    /// The server is shutting down.
    #[error("server shutting down")]
    Shutdown,
    /// The connection cap needed the slot.
    #[error("closed to make room for a new connection")]
    Evicted,
}

/// Why reading a message failed.
enum ReadEnd {
    Closed(CloseReason),
    Stopped,
    Evicted,
    TimedOut,
}

/// Fills `inbox` until it holds `n` bytes, within `deadline`, giving up on stop or eviction.
async fn read_at_least(
    stream: &mut TcpStream,
    inbox: &mut Inbox,
    n: usize,
    deadline: tokio::time::Instant,
    stop: &mut watch::Receiver<bool>,
    evict: &Notify,
    what: &'static str,
) -> Result<(), ReadEnd> {
    while inbox.pending().len() < n {
        let want = n - inbox.pending().len();
        let r = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return Err(ReadEnd::Stopped),
            _ = evict.notified() => return Err(ReadEnd::Evicted),
            _ = tokio::time::sleep_until(deadline) => return Err(ReadEnd::TimedOut),
            r = inbox.fill(stream, want) => r,
        };
        match r {
            Ok(0) if inbox.pending().is_empty() => {
                return Err(ReadEnd::Closed(CloseReason::PeerClosed))
            }
            Ok(0) => return Err(ReadEnd::Closed(CloseReason::PeerClosedIn(what))),
            Ok(_) => {}
            Err(e) => return Err(ReadEnd::Closed(CloseReason::Read(e))),
        }
    }
    Ok(())
}

async fn write_within(
    stream: &mut TcpStream,
    bytes: &[u8],
    limit: StdDuration,
) -> Result<(), CloseReason> {
    match tokio::time::timeout(limit, stream.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(CloseReason::Write(e)),
        Err(_) => Err(CloseReason::Unread {
            bytes: bytes.len(),
            ms: limit.as_millis(),
        }),
    }
}

/// Serves one connection until it closes; returns why it closed.
async fn connection(
    mut stream: TcpStream,
    shared: &Shared,
    id: u64,
    evict: Arc<Notify>,
) -> CloseReason {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(StdDuration::from_secs(30))
        .with_interval(StdDuration::from_secs(10))
        .with_retries(3);
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    let mut stop = shared.stop.subscribe();
    let mut inbox = Inbox::new();
    let config = &shared.config;
    loop {
        let deadline = tokio::time::Instant::now() + config.handshake_timeout;
        let r = read_at_least(
            &mut stream,
            &mut inbox,
            OP_HEADER_LEN,
            deadline,
            &mut stop,
            &evict,
            "an operation",
        )
        .await;
        if let Err(end) = r {
            return handshake_end(shared, end);
        }
        let mut b = [0u8; OP_HEADER_LEN];
        b.copy_from_slice(&inbox.pending()[..OP_HEADER_LEN]);
        let header = match OpHeader::decode(&b) {
            Ok(h) => h,
            Err(e) => return protocol_error(shared, e),
        };
        match header.code {
            OP_REQ_DEVLIST => {
                inbox.consume(OP_HEADER_LEN);
                let reply = match encode_devlist(&shared.exports) {
                    Ok(r) => r,
                    Err(e) => return CloseReason::DeviceList(e),
                };
                if let Err(e) = write_within(&mut stream, &reply, config.handshake_timeout).await {
                    return e;
                }
            }
            OP_REQ_IMPORT => {
                let r = read_at_least(
                    &mut stream,
                    &mut inbox,
                    OP_HEADER_LEN + BUSID_LEN,
                    deadline,
                    &mut stop,
                    &evict,
                    "an import request",
                )
                .await;
                if let Err(end) = r {
                    return handshake_end(shared, end);
                }
                let busid = match read_busid(&mut &inbox.pending()[OP_HEADER_LEN..]) {
                    Ok(b) => b,
                    Err(e) => return protocol_error(shared, e),
                };
                inbox.consume(OP_HEADER_LEN + BUSID_LEN);
                let index = shared.exports.iter().position(|e| e.record.busid == busid);
                let status = match index {
                    None => ST_NODEV,
                    Some(i) => match shared.taken[i].compare_exchange(
                        false,
                        true,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    ) {
                        Ok(_) => ST_OK,
                        Err(_) => ST_DEV_BUSY,
                    },
                };
                let mut reply = OpHeader::new(OP_REP_IMPORT, status).encode().to_vec();
                let Some(index) = index.filter(|_| status == ST_OK) else {
                    let _ = write_within(&mut stream, &reply, config.handshake_timeout).await;
                    return CloseReason::ImportRefused { busid, status };
                };
                let guard = ImportGuard(&shared.taken[index]);
                let export = &shared.exports[index];
                let Ok(record) = export.record.encode() else {
                    let refused = OpHeader::new(OP_REP_IMPORT, ST_DEV_ERR).encode();
                    let _ = write_within(&mut stream, &refused, config.handshake_timeout).await;
                    return CloseReason::DeviceRecord;
                };
                reply.extend_from_slice(&record);
                if let Err(e) = write_within(&mut stream, &reply, config.handshake_timeout).await {
                    return e;
                }
                if let Ok(mut conns) = shared.conns.lock() {
                    if let Some(c) = conns.get_mut(&id) {
                        c.imported = true;
                    }
                }
                shared.imports.fetch_add(1, Ordering::Relaxed);
                shared.log_limited(&format!("connection {id}: device {busid} imported"));
                let why = run_session(stream, inbox, stop, shared, index, id).await;
                drop(guard);
                return why;
            }
            other => return protocol_error(shared, ProtocolError::UnknownOp(other)),
        }
    }
}

fn handshake_end(shared: &Shared, end: ReadEnd) -> CloseReason {
    match end {
        ReadEnd::Closed(why) => why,
        ReadEnd::Stopped => CloseReason::Shutdown,
        ReadEnd::Evicted => CloseReason::Evicted,
        ReadEnd::TimedOut => {
            shared.timed_out.fetch_add(1, Ordering::Relaxed);
            CloseReason::HandshakeTimeout(shared.config.handshake_timeout.as_millis())
        }
    }
}

/// A timer on a timerfd: wakes the session at a microsecond-precise instant.
struct Alarm {
    fd: AsyncFd<OwnedFd>,
    armed: Option<std::time::Instant>,
}

impl Alarm {
    fn new() -> io::Result<Alarm> {
        use rustix::time::{timerfd_create, TimerfdClockId, TimerfdFlags};
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // tokio deprecated `new` because an `AsRawFd` type may close its descriptor while it
        // is registered; an `OwnedFd` moved into the `AsyncFd` cannot, so this use is sound
        // (and needs no `unsafe`, which this crate keeps to its FFI modules).
        #[allow(deprecated)]
        let fd = AsyncFd::new(fd)?;
        Ok(Alarm { fd, armed: None })
    }

    /// Arms the timer for `at` (disarms it for `None`); re-arming for the same instant is free.
    fn set(&mut self, at: Option<std::time::Instant>) -> io::Result<()> {
        use rustix::time::{timerfd_settime, Itimerspec, TimerfdTimerFlags, Timespec};
        if at == self.armed {
            return Ok(());
        }
        let value = match at {
            // A zero value disarms: an instant already past fires after a nanosecond.
            Some(at) => at
                .saturating_duration_since(std::time::Instant::now())
                .max(StdDuration::from_nanos(1)),
            None => StdDuration::ZERO,
        };
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: value.as_secs() as _,
                tv_nsec: value.subsec_nanos() as _,
            },
        };
        timerfd_settime(self.fd.get_ref(), TimerfdTimerFlags::empty(), &spec)?;
        self.armed = at;
        Ok(())
    }

    /// Waits for the armed instant (forever when disarmed). Cancel-safe.
    async fn fired(&mut self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut count = [0u8; 8];
            match guard.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), &mut count)?)) {
                Ok(Ok(_)) => {
                    self.armed = None;
                    return Ok(());
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// The transfer an URB runs once it reaches the head of its endpoint queue.
enum Active {
    Control(ControlTransfer),
    In(InTransfer),
    Out(OutTransfer),
}

struct Urb {
    cmd: CmdSubmit,
    active: Option<Active>,
    wire: u64,
}

/// How an URB ended.
struct Outcome {
    status: i32,
    data: Vec<u8>,
    actual: u32,
}

impl Outcome {
    fn status(errno: i32) -> Outcome {
        Outcome {
            status: -errno,
            data: Vec::new(),
            actual: 0,
        }
    }
}

/// A completed URB waiting for its wire time to pass.
struct Done {
    due: Instant,
    ret: RetSubmit,
    bytes: usize,
}

/// The usbmon URB id of USB/IP URB `seqnum` of connection `conn`: unique within a capture of
/// many devices and clients (as long as fewer than 65536 connections overlap), and never 0,
/// which umockdev reads as "not submitted".
fn urb_id(conn: u64, seqnum: u32) -> u64 {
    0x5ca1_0000_0000_0000 | (conn & 0xffff) << 32 | u64::from(seqnum)
}

fn status_of(e: hc::WireError) -> i32 {
    -match e {
        hc::WireError::Stall => errno::EPIPE,
        hc::WireError::Disconnected => errno::ESHUTDOWN,
        hc::WireError::Babble => errno::EOVERFLOW,
        hc::WireError::NoEndpoint => errno::ENOENT,
        hc::WireError::NoProgress(_) => errno::EINVAL,
    }
}

/// True for the stub's device reset request: SET_FEATURE(PORT_RESET) to a port.
fn is_port_reset(s: &SetupPacket) -> bool {
    s.request_type == 0x23 && s.request == Request::SET_FEATURE && s.value == 4
}

fn is_set_address(s: &SetupPacket) -> bool {
    s.request_type == 0 && s.request == Request::SET_ADDRESS
}

/// What a URB's `C` record repeats from its `S` record.
#[derive(Clone, Copy)]
struct Captured {
    transfer_type: TransferType,
    endpoint: u8,
    interval: i32,
    flags: u32,
}

/// One imported device: the URB queues and the device they run on.
struct Session<'a> {
    shared: &'a Shared,
    /// The connection's number, part of every URB id in the capture.
    conn: u64,
    spec: &'a DeviceSpec,
    device: Device,
    devid: u32,
    /// The device number captures carry (the record's devnum).
    devnum: u8,
    speed: Speed,
    /// Per endpoint address (EP0 is 0x00 for both directions); only heads are stepped.
    queues: BTreeMap<u8, VecDeque<Urb>>,
    /// Completed URBs waiting for their wire time to pass, in completion order.
    outbox: VecDeque<Done>,
    bus_free_at: Instant,
    /// The device poll a bulk IN transfer left for after its reply went out (see
    /// [`InTransfer::defer_final_poll`]): made before anything else touches the device.
    owed_poll: Option<Instant>,
    pending_urbs: usize,
    pending_bytes: usize,
    /// Replies encoded and not yet written.
    out: Outgoing,
    /// Capture details of URBs submitted and not yet completed, by seqnum.
    captured: BTreeMap<u32, Captured>,
    capture_dirty: bool,
}

async fn run_session(
    mut stream: TcpStream,
    mut inbox: Inbox,
    mut stop: watch::Receiver<bool>,
    shared: &Shared,
    index: usize,
    conn: u64,
) -> CloseReason {
    let spec = &shared.config.devices[index];
    if let Some(backend) = &spec.backend {
        return run_backend_session(stream, inbox, stop, shared, index, conn, backend.clone())
            .await;
    }
    let record = &shared.exports[index].record;
    let mut device = Device::new(&spec.profile);
    if let Some(f) = &spec.faults {
        device.set_faults(f.clone());
    }
    let now = shared.now();
    device.poll(now);
    {
        let (port, mut poller) = device.port_and_poller(now);
        if let Err(e) = hc::enumerate(&port, &mut poller) {
            return CloseReason::Enumeration(e);
        }
    }
    // Enumeration is the server's business, as on a host that exports a real device.
    let _ = device.take_notes();
    let mut alarm = match Alarm::new() {
        Ok(a) => a,
        Err(e) => return CloseReason::Timer(e),
    };
    let mut session = Session {
        shared,
        conn,
        spec,
        device,
        devid: record.devid(),
        devnum: u8::try_from(record.devnum).unwrap_or(u8::MAX),
        speed: spec.profile.usb.speed,
        queues: BTreeMap::new(),
        outbox: VecDeque::new(),
        bus_free_at: Instant::ZERO,
        owed_poll: None,
        pending_urbs: 0,
        pending_bytes: 0,
        out: Outgoing::default(),
        captured: BTreeMap::new(),
        capture_dirty: false,
    };
    let why = session
        .run(&mut stream, &mut inbox, &mut stop, &mut alarm)
        .await;
    session.settle();
    session.flush_capture();
    let _ = stream.shutdown().await;
    why
}

/// How a session's loop ended.
enum End {
    /// The peer went away or broke the protocol: pending URBs are killed.
    Peer(CloseReason),
    /// The server is shutting down: pending URBs complete as unlinked.
    Shutdown,
}

impl Session<'_> {
    async fn run(
        &mut self,
        stream: &mut TcpStream,
        inbox: &mut Inbox,
        stop: &mut watch::Receiver<bool>,
        alarm: &mut Alarm,
    ) -> CloseReason {
        let idle = self.shared.config.idle_timeout;
        let mut last_heard = tokio::time::Instant::now();
        // Commands that arrived with the import reply are decoded before the first read.
        let mut need = URB_HEADER_LEN;
        let end = loop {
            match self.decode(inbox, &mut need) {
                Ok(()) => {}
                Err(why) => break End::Peer(why),
            }
            let now = self.shared.now();
            self.pump(now);
            self.send_due(now);
            if !self.out.is_empty() {
                let r = self
                    .out
                    .write(stream, self.shared.config.write_timeout)
                    .await;
                if let Err(why) = r {
                    if matches!(why, CloseReason::Unread { .. }) {
                        self.shared.timed_out.fetch_add(1, Ordering::Relaxed);
                    }
                    break End::Peer(why);
                }
            }
            // The firmware refills its FIFO once the reply is on its way.
            self.pay_poll();
            self.report_notes();
            self.flush_capture();
            let wake = match (self.device.poll_at(), self.outbox.front().map(|d| d.due)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Err(e) = alarm.set(wake.map(|w| self.shared.wall(w))) {
                break End::Peer(CloseReason::Timer(e));
            }
            let idle_at = match idle {
                Some(t) if self.pending_urbs == 0 => Some(last_heard + t),
                _ => None,
            };
            let want = need.saturating_sub(inbox.pending().len()).max(1);
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break End::Shutdown,
                r = inbox.fill(stream, want) => match r {
                    Ok(0) if inbox.pending().is_empty() => break End::Peer(CloseReason::PeerClosed),
                    Ok(0) => break End::Peer(protocol_error(self.shared, ProtocolError::Truncated {
                        what: "URB command",
                        source: io::ErrorKind::UnexpectedEof.into(),
                    })),
                    Ok(_) => last_heard = tokio::time::Instant::now(),
                    Err(e) => break End::Peer(CloseReason::Read(e)),
                },
                r = alarm.fired(), if wake.is_some() => {
                    if let Err(e) = r {
                        break End::Peer(CloseReason::Timer(e));
                    }
                }
                _ = sleep_until_opt(idle_at), if idle_at.is_some() => {
                    self.shared.timed_out.fetch_add(1, Ordering::Relaxed);
                    break End::Peer(CloseReason::IdleTimeout(idle.map_or(0, |t| t.as_secs())));
                }
            }
        };
        match end {
            End::Peer(why) => {
                self.kill_pending();
                why
            }
            End::Shutdown => {
                self.unlink_all();
                let limit = self
                    .shared
                    .config
                    .write_timeout
                    .min(StdDuration::from_secs(1));
                let _ = self.out.write(stream, limit).await;
                CloseReason::Shutdown
            }
        }
    }

    /// Decodes and handles every complete command in `inbox`; `need` becomes the length the
    /// next command needs. An error closes the connection.
    fn decode(&mut self, inbox: &mut Inbox, need: &mut usize) -> Result<(), CloseReason> {
        let limits = self.shared.config.limits;
        loop {
            let avail = inbox.pending();
            if avail.len() < URB_HEADER_LEN {
                *need = URB_HEADER_LEN;
                return Ok(());
            }
            let mut header = [0u8; URB_HEADER_LEN];
            header.copy_from_slice(&avail[..URB_HEADER_LEN]);
            let len =
                Command::wire_len(&header, &limits).map_err(|e| protocol_error(self.shared, e))?;
            if avail.len() < len {
                *need = len;
                return Ok(());
            }
            let cmd = Command::read(&mut &avail[..len], &limits)
                .map_err(|e| protocol_error(self.shared, e))?;
            inbox.consume(len);
            match cmd {
                Command::Submit(s) => {
                    let (max_urbs, max_bytes) = (
                        self.shared.config.max_pending_urbs,
                        self.shared.config.max_pending_bytes,
                    );
                    self.pending_urbs += 1;
                    self.pending_bytes += s.transfer_buffer_length as usize;
                    if self.pending_urbs > max_urbs || self.pending_bytes > max_bytes {
                        self.shared.protocol_errors.fetch_add(1, Ordering::Relaxed);
                        let why = CloseReason::Limit {
                            urbs: self.pending_urbs,
                            bytes: self.pending_bytes,
                            max_urbs,
                            max_bytes,
                        };
                        // Not queued: it gets no capture record.
                        self.pending_urbs -= 1;
                        self.pending_bytes -= s.transfer_buffer_length as usize;
                        return Err(why);
                    }
                    self.submit(s);
                }
                Command::Unlink(u) => self.unlink(u),
            }
        }
    }

    /// The connection is gone: lets the device finish what it already scheduled (a motor
    /// stopping after a cancel, bands still being scanned into its buffer) at the scheduled
    /// instants, up to [`SETTLE_LIMIT_US`] ahead, so the notes of the session are complete.
    fn settle(&mut self) {
        self.pay_poll();
        let limit = self.shared.now() + Duration::from_micros(SETTLE_LIMIT_US);
        while let Some(at) = self.device.poll_at() {
            if at > limit {
                break;
            }
            self.device.poll(at);
            self.report_notes();
        }
    }

    fn release(&mut self, bytes: usize) {
        self.pending_urbs = self.pending_urbs.saturating_sub(1);
        self.pending_bytes = self.pending_bytes.saturating_sub(bytes);
    }

    /// Makes the device poll a finished bulk IN transfer left owed, if any.
    fn pay_poll(&mut self) {
        if let Some(at) = self.owed_poll.take() {
            self.device.poll(at);
        }
    }

    fn report_notes(&mut self) {
        let notes = self.device.take_notes();
        if let Some(sink) = &self.spec.notes {
            for n in &notes {
                sink(n);
            }
        }
    }

    fn queue_key(cmd: &CmdSubmit) -> u8 {
        if cmd.ep == 0 {
            0
        } else if cmd.is_in() {
            0x80 | cmd.ep as u8
        } else {
            cmd.ep as u8
        }
    }

    fn submit(&mut self, cmd: CmdSubmit) {
        self.pay_poll();
        let now = self.shared.now();
        self.capture_submit(&cmd, now);
        if cmd.devid != self.devid {
            self.refuse_no_device(cmd, now);
            return;
        }
        if cmd.ep == 0 {
            let setup = cmd.setup_packet();
            if is_set_address(&setup) {
                self.complete(cmd, Outcome::status(0), 0, now);
                return;
            }
            if is_port_reset(&setup) {
                self.reset_device(now);
                let status = if self.device.port().is_connected() {
                    0
                } else {
                    errno::ENODEV
                };
                self.complete(cmd, Outcome::status(status), 0, now);
                return;
            }
        }
        if !self.device.port().is_connected() {
            self.refuse_no_device(cmd, now);
            return;
        }
        let key = Self::queue_key(&cmd);
        self.queues.entry(key).or_default().push_back(Urb {
            cmd,
            active: None,
            wire: 0,
        });
    }

    /// No device to submit to: the submission fails with `-ENODEV`, as `usb_submit_urb`
    /// does, and the capture gets an `E` record instead of a completion.
    fn refuse_no_device(&mut self, cmd: CmdSubmit, now: Instant) {
        self.capture_end(cmd.seqnum, EventType::Error, -errno::ENODEV, &[], 0, now);
        self.out_ret(RetSubmit {
            seqnum: cmd.seqnum,
            status: -errno::ENODEV,
            actual_length: 0,
            data: Vec::new(),
        });
        self.release(cmd.transfer_buffer_length as usize);
    }

    /// Writes the `S` record of `cmd` to the capture, if there is one.
    fn capture_submit(&mut self, cmd: &CmdSubmit, now: Instant) {
        let Some(capture) = &self.shared.config.capture else {
            return;
        };
        let setup = (cmd.ep == 0).then_some(cmd.setup);
        let endpoint = match setup {
            Some(s) => s[0] & 0x80,
            None if cmd.is_in() => 0x80 | cmd.ep as u8,
            None => cmd.ep as u8,
        };
        let transfer_type = if cmd.ep == 0 {
            TransferType::Control
        } else {
            match self.device.port().endpoint_info(endpoint).map(|i| i.0) {
                Some(usb_device::endpoint::EndpointType::Interrupt) => TransferType::Interrupt,
                Some(usb_device::endpoint::EndpointType::Isochronous { .. }) => {
                    TransferType::Isochronous
                }
                _ => TransferType::Bulk,
            }
        };
        let flags = cmd.transfer_flags | if endpoint & 0x80 != 0 { URB_DIR_IN } else { 0 };
        let ctx = Captured {
            transfer_type,
            endpoint,
            interval: cmd.interval as i32,
            flags,
        };
        self.captured.insert(cmd.seqnum, ctx);
        let event = UsbmonEvent {
            id: urb_id(self.conn, cmd.seqnum),
            event: EventType::Submit,
            transfer_type,
            endpoint,
            device: self.devnum,
            bus: 1,
            setup,
            at: now,
            status: -usbmon::errno::EINPROGRESS,
            urb_len: cmd.transfer_buffer_length,
            data: &cmd.data,
            interval: ctx.interval,
            start_frame: 0,
            xfer_flags: flags,
            ndesc: 0,
        };
        write_capture(capture, &event, self.shared);
        self.capture_dirty = true;
    }

    /// Writes the `C` (or `E`) record of URB `seqnum` to the capture, if there is one.
    fn capture_end(
        &mut self,
        seqnum: u32,
        kind: EventType,
        status: i32,
        data: &[u8],
        actual: u32,
        now: Instant,
    ) {
        let Some(capture) = &self.shared.config.capture else {
            return;
        };
        let Some(ctx) = self.captured.remove(&seqnum) else {
            return;
        };
        let event = UsbmonEvent {
            id: urb_id(self.conn, seqnum),
            event: kind,
            transfer_type: ctx.transfer_type,
            endpoint: ctx.endpoint,
            device: self.devnum,
            bus: 1,
            setup: None,
            at: now,
            status,
            urb_len: actual,
            data: if ctx.endpoint & 0x80 != 0 && kind == EventType::Complete {
                data
            } else {
                &[]
            },
            interval: ctx.interval,
            start_frame: 0,
            xfer_flags: ctx.flags,
            ndesc: 0,
        };
        write_capture(capture, &event, self.shared);
        self.capture_dirty = true;
    }

    fn flush_capture(&mut self) {
        if !self.capture_dirty {
            return;
        }
        self.capture_dirty = false;
        if let Some(capture) = &self.shared.config.capture {
            let mut w = capture.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = w.flush() {
                self.shared
                    .log_limited(&format!("capture write failed: {e}"));
            }
        }
    }

    /// The stub's device reset: pending URBs die with -ESHUTDOWN, the device re-enumerates.
    fn reset_device(&mut self, now: Instant) {
        self.pay_poll();
        let queues = std::mem::take(&mut self.queues);
        for urb in queues.into_values().flatten() {
            self.complete(urb.cmd, Outcome::status(errno::ESHUTDOWN), 0, now);
        }
        self.device.poll(now);
        {
            let (port, mut poller) = self.device.port_and_poller(now);
            let _ = hc::enumerate(&port, &mut poller);
        }
        self.report_notes();
    }

    fn unlink(&mut self, u: CmdUnlink) {
        let mut found = None;
        for q in self.queues.values_mut() {
            if let Some(i) = q.iter().position(|urb| urb.cmd.seqnum == u.unlink_seqnum) {
                found = q
                    .remove(i)
                    .map(|urb| urb.cmd.transfer_buffer_length as usize);
                break;
            }
        }
        if found.is_none() {
            if let Some(i) = self
                .outbox
                .iter()
                .position(|d| d.ret.seqnum == u.unlink_seqnum)
            {
                found = self.outbox.remove(i).map(|d| d.bytes);
            }
        }
        let status = match found {
            Some(bytes) => {
                self.release(bytes);
                let now = self.shared.now();
                self.capture_end(
                    u.unlink_seqnum,
                    EventType::Complete,
                    -errno::ECONNRESET,
                    &[],
                    0,
                    now,
                );
                -errno::ECONNRESET
            }
            None => 0,
        };
        // Writing to a Vec cannot fail.
        let _ = RetUnlink {
            seqnum: u.seqnum,
            status,
        }
        .write(&mut self.out.tail);
    }

    /// Queues `cmd`'s RET_SUBMIT for when its `wire` bytes have crossed the bus.
    fn complete(&mut self, cmd: CmdSubmit, outcome: Outcome, wire: u64, now: Instant) {
        let begin = self.bus_free_at.max(now);
        let due = begin + self.speed.wire_time(wire);
        self.bus_free_at = due;
        self.outbox.push_back(Done {
            due,
            ret: RetSubmit {
                seqnum: cmd.seqnum,
                status: outcome.status,
                actual_length: outcome.actual,
                data: outcome.data,
            },
            bytes: cmd.transfer_buffer_length as usize,
        });
    }

    fn out_ret(&mut self, mut ret: RetSubmit) {
        // Large IN data goes out as a buffer of its own (a vectored write), not copied.
        let data = if ret.data.len() >= VECTORED_MIN {
            std::mem::take(&mut ret.data)
        } else {
            Vec::new()
        };
        // Writing to a Vec cannot fail.
        let _ = ret.write(&mut self.out.tail);
        if !data.is_empty() {
            self.out.push_data(data);
        }
    }

    /// Encodes every completion whose wire time has passed.
    fn send_due(&mut self, now: Instant) {
        while self.outbox.front().is_some_and(|d| d.due <= now) {
            if let Some(d) = self.outbox.pop_front() {
                let ret = d.ret;
                self.capture_end(
                    ret.seqnum,
                    EventType::Complete,
                    ret.status,
                    &ret.data,
                    ret.actual_length,
                    now,
                );
                self.release(d.bytes);
                self.out_ret(ret);
            }
        }
    }

    /// The peer is gone: completions it will never read are captured as they ended, and
    /// URBs still queued are killed (`-ENOENT`), as the stub kills them on disconnect.
    fn kill_pending(&mut self) {
        let now = self.shared.now();
        for d in std::mem::take(&mut self.outbox) {
            let r = d.ret;
            self.capture_end(
                r.seqnum,
                EventType::Complete,
                r.status,
                &r.data,
                r.actual_length,
                now,
            );
        }
        for urb in std::mem::take(&mut self.queues).into_values().flatten() {
            self.capture_end(
                urb.cmd.seqnum,
                EventType::Complete,
                -errno::ENOENT,
                &[],
                0,
                now,
            );
        }
        self.pending_urbs = 0;
        self.pending_bytes = 0;
    }

    /// Shutdown: completions already due go out as they ended, every other URB is unlinked
    /// with `-ESHUTDOWN`, as Linux unlinks the URBs of a device that goes away
    /// (`usb_hcd_flush_endpoint`), so the client sees its device gone, not a cancel of its own.
    fn unlink_all(&mut self) {
        let now = self.shared.now();
        for d in std::mem::take(&mut self.outbox) {
            let r = d.ret;
            self.capture_end(
                r.seqnum,
                EventType::Complete,
                r.status,
                &r.data,
                r.actual_length,
                now,
            );
            self.out_ret(r);
        }
        for urb in std::mem::take(&mut self.queues).into_values().flatten() {
            let seqnum = urb.cmd.seqnum;
            self.capture_end(seqnum, EventType::Complete, -errno::ESHUTDOWN, &[], 0, now);
            self.out_ret(RetSubmit {
                seqnum,
                status: -errno::ESHUTDOWN,
                actual_length: 0,
                data: Vec::new(),
            });
        }
        self.pending_urbs = 0;
        self.pending_bytes = 0;
    }

    /// Runs the device up to `now` and steps the head of every queue until nothing moves.
    ///
    /// A session woken late (a loaded machine) catches up in device time: it steps pending
    /// URBs at each instant the device had scheduled before `now`, in order, as a host
    /// controller polling the endpoint all along would have, so a band that was ready before a
    /// fault reaches an URB that was waiting for it before the fault does. Completions found
    /// on the way are due from the instant they happened.
    fn pump(&mut self, now: Instant) {
        self.pay_poll();
        let mut last = None;
        for _ in 0..MAX_CATCH_UP_STEPS {
            match self.device.poll_at() {
                Some(at) if at < now && last.is_none_or(|l| at > l) && !self.queues.is_empty() => {
                    self.step_at(at);
                    last = Some(at);
                }
                _ => break,
            }
        }
        self.step_at(now);
    }

    /// Runs the device at `now` and steps the head of every queue until nothing moves.
    fn step_at(&mut self, now: Instant) {
        self.pay_poll();
        self.device.poll(now);
        loop {
            let mut progressed = false;
            let keys: Vec<u8> = self.queues.keys().copied().collect();
            for key in keys {
                let Some(q) = self.queues.get_mut(&key) else {
                    continue;
                };
                let Some(urb) = q.front_mut() else { continue };
                if let Some(at) = self.owed_poll.take() {
                    self.device.poll(at);
                }
                let (outcome, moved, owed) = {
                    let (port, mut poller) = self.device.port_and_poller(now);
                    step_urb(urb, &port, &mut poller, &mut self.out)
                };
                if owed {
                    self.owed_poll = Some(now);
                }
                if moved {
                    progressed = true;
                }
                if let Some(outcome) = outcome {
                    progressed = true;
                    if let Some(urb) = q.pop_front() {
                        self.complete(urb.cmd, outcome, urb.wire, now);
                    }
                }
            }
            self.queues.retain(|_, q| !q.is_empty());
            if !progressed {
                break;
            }
        }
        self.report_notes();
    }
}

/// The transfer type of each endpoint a configuration descriptor declares.
fn endpoint_types(config: &[u8]) -> BTreeMap<u8, TransferType> {
    descriptor::walk(config)
        .filter(|d| d[1] == descriptor_type::ENDPOINT && d.len() >= 4)
        .map(|d| {
            let kind = match d[3] & 0x03 {
                0x01 => TransferType::Isochronous,
                0x03 => TransferType::Interrupt,
                _ => TransferType::Bulk,
            };
            (d[2], kind)
        })
        .collect()
}

/// An URB of a backend session, submitted and not yet answered.
struct BackendUrb {
    bytes: usize,
}

/// One import of a [`UrbBackend`] device: the connection's commands go to the backend's
/// session, its answers back to the peer (and the capture), with the limits, timeouts and
/// shutdown rules of an emulated device's session.
struct BackendSession<'a> {
    shared: &'a Shared,
    conn: u64,
    devid: u32,
    devnum: u8,
    types: BTreeMap<u8, TransferType>,
    urbs: BTreeMap<u32, BackendUrb>,
    /// CMD_UNLINK sequence numbers sent to the backend, with the URB each names.
    unlinks: BTreeMap<u32, u32>,
    pending_bytes: usize,
    out: Outgoing,
    captured: BTreeMap<u32, Captured>,
    capture_dirty: bool,
}

async fn run_backend_session(
    mut stream: TcpStream,
    mut inbox: Inbox,
    mut stop: watch::Receiver<bool>,
    shared: &Shared,
    index: usize,
    conn: u64,
    backend: Arc<dyn UrbBackend>,
) -> CloseReason {
    let spec = &shared.config.devices[index];
    let record = &shared.exports[index].record;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<UrbAnswer>();
    let mut urbs = backend.open(
        shared.epoch,
        spec.notes.clone(),
        Box::new(move |a| {
            // The session is over when nobody receives: the answer is of no use then.
            let _ = tx.send(a);
        }),
    );
    let mut session = BackendSession {
        shared,
        conn,
        devid: record.devid(),
        devnum: u8::try_from(record.devnum).unwrap_or(u8::MAX),
        types: endpoint_types(&backend.descriptors().1),
        urbs: BTreeMap::new(),
        unlinks: BTreeMap::new(),
        pending_bytes: 0,
        out: Outgoing::default(),
        captured: BTreeMap::new(),
        capture_dirty: false,
    };
    let idle = shared.config.idle_timeout;
    let mut last_heard = tokio::time::Instant::now();
    let mut need = URB_HEADER_LEN;
    let end = loop {
        if let Err(why) = session.decode(&mut inbox, &mut need, urbs.as_mut()) {
            break End::Peer(why);
        }
        while let Ok(a) = rx.try_recv() {
            session.answer(a);
        }
        if !session.out.is_empty() {
            if let Err(why) = session
                .out
                .write(&mut stream, shared.config.write_timeout)
                .await
            {
                if matches!(why, CloseReason::Unread { .. }) {
                    shared.timed_out.fetch_add(1, Ordering::Relaxed);
                }
                break End::Peer(why);
            }
        }
        session.flush_capture();
        let idle_at = match idle {
            Some(t) if session.urbs.is_empty() => Some(last_heard + t),
            _ => None,
        };
        let want = need.saturating_sub(inbox.pending().len()).max(1);
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break End::Shutdown,
            a = rx.recv() => if let Some(a) = a {
                session.answer(a);
            },
            r = inbox.fill(&mut stream, want) => match r {
                Ok(0) if inbox.pending().is_empty() => break End::Peer(CloseReason::PeerClosed),
                Ok(0) => break End::Peer(protocol_error(shared, ProtocolError::Truncated {
                    what: "URB command",
                    source: io::ErrorKind::UnexpectedEof.into(),
                })),
                Ok(_) => last_heard = tokio::time::Instant::now(),
                Err(e) => break End::Peer(CloseReason::Read(e)),
            },
            _ = sleep_until_opt(idle_at), if idle_at.is_some() => {
                shared.timed_out.fetch_add(1, Ordering::Relaxed);
                break End::Peer(CloseReason::IdleTimeout(idle.map_or(0, |t| t.as_secs())));
            }
        }
    };
    // The backend's work ends before the session does: its notes and reports are complete
    // when the import is over.
    let _ = tokio::task::spawn_blocking(move || urbs.close()).await;
    let why = match end {
        End::Peer(why) => {
            session.end_pending(-errno::ENOENT, false);
            why
        }
        End::Shutdown => {
            session.end_pending(-errno::ESHUTDOWN, true);
            let limit = shared.config.write_timeout.min(StdDuration::from_secs(1));
            let _ = session.out.write(&mut stream, limit).await;
            CloseReason::Shutdown
        }
    };
    session.flush_capture();
    let _ = stream.shutdown().await;
    why
}

impl BackendSession<'_> {
    /// Decodes and hands over every complete command in `inbox`, as [`Session::decode`].
    fn decode(
        &mut self,
        inbox: &mut Inbox,
        need: &mut usize,
        urbs: &mut dyn UrbSession,
    ) -> Result<(), CloseReason> {
        let limits = self.shared.config.limits;
        loop {
            let avail = inbox.pending();
            if avail.len() < URB_HEADER_LEN {
                *need = URB_HEADER_LEN;
                return Ok(());
            }
            let mut header = [0u8; URB_HEADER_LEN];
            header.copy_from_slice(&avail[..URB_HEADER_LEN]);
            let len =
                Command::wire_len(&header, &limits).map_err(|e| protocol_error(self.shared, e))?;
            if avail.len() < len {
                *need = len;
                return Ok(());
            }
            let cmd = Command::read(&mut &avail[..len], &limits)
                .map_err(|e| protocol_error(self.shared, e))?;
            inbox.consume(len);
            match cmd {
                Command::Submit(s) => self.submit(s, urbs)?,
                Command::Unlink(u) => {
                    if self.urbs.contains_key(&u.unlink_seqnum) {
                        self.unlinks.insert(u.seqnum, u.unlink_seqnum);
                        urbs.unlink(u.seqnum, u.unlink_seqnum);
                    } else {
                        // Writing to a Vec cannot fail.
                        let _ = RetUnlink {
                            seqnum: u.seqnum,
                            status: 0,
                        }
                        .write(&mut self.out.tail);
                    }
                }
            }
        }
    }

    fn submit(&mut self, cmd: CmdSubmit, urbs: &mut dyn UrbSession) -> Result<(), CloseReason> {
        let (max_urbs, max_bytes) = (
            self.shared.config.max_pending_urbs,
            self.shared.config.max_pending_bytes,
        );
        let bytes = cmd.transfer_buffer_length as usize;
        if self.urbs.len() + 1 > max_urbs || self.pending_bytes + bytes > max_bytes {
            self.shared.protocol_errors.fetch_add(1, Ordering::Relaxed);
            return Err(CloseReason::Limit {
                urbs: self.urbs.len() + 1,
                bytes: self.pending_bytes + bytes,
                max_urbs,
                max_bytes,
            });
        }
        let now = self.shared.now();
        let setup = (cmd.ep == 0).then(|| cmd.setup_packet());
        let endpoint = match setup {
            Some(s) => s.request_type & 0x80,
            None if cmd.is_in() => 0x80 | cmd.ep as u8,
            None => cmd.ep as u8,
        };
        let transfer_type = match setup {
            Some(_) => TransferType::Control,
            None => self
                .types
                .get(&endpoint)
                .copied()
                .unwrap_or(TransferType::Bulk),
        };
        self.capture_submit(&cmd, transfer_type, endpoint, now);
        self.urbs.insert(cmd.seqnum, BackendUrb { bytes });
        self.pending_bytes += bytes;
        if cmd.devid != self.devid {
            self.capture_end(cmd.seqnum, EventType::Error, -errno::ENODEV, &[], 0, now);
            self.finish(RetSubmit {
                seqnum: cmd.seqnum,
                status: -errno::ENODEV,
                actual_length: 0,
                data: Vec::new(),
            });
            return Ok(());
        }
        if setup.is_some_and(|s| is_set_address(&s)) {
            // vhci-hcd never forwards it; the device keeps its address.
            self.capture_end(cmd.seqnum, EventType::Complete, 0, &[], 0, now);
            self.finish(RetSubmit {
                seqnum: cmd.seqnum,
                status: 0,
                actual_length: 0,
                data: Vec::new(),
            });
            return Ok(());
        }
        urbs.submit(UrbRequest {
            seqnum: cmd.seqnum,
            transfer_type,
            endpoint,
            setup,
            length: cmd.transfer_buffer_length,
            data: cmd.data,
        });
        Ok(())
    }

    /// An answer of the backend: the URB's reply to the peer, and its `C` record.
    fn answer(&mut self, a: UrbAnswer) {
        let now = self.shared.now();
        match a {
            UrbAnswer::Submit(ret) => {
                if !self.urbs.contains_key(&ret.seqnum) {
                    return;
                }
                self.capture_end(
                    ret.seqnum,
                    EventType::Complete,
                    ret.status,
                    &ret.data,
                    ret.actual_length,
                    now,
                );
                self.finish(ret);
            }
            UrbAnswer::Unlink(ret) => {
                let target = self.unlinks.remove(&ret.seqnum);
                if let Some(target) = target.filter(|_| ret.status != 0) {
                    if let Some(urb) = self.urbs.remove(&target) {
                        self.pending_bytes = self.pending_bytes.saturating_sub(urb.bytes);
                    }
                    self.capture_end(target, EventType::Complete, ret.status, &[], 0, now);
                }
                // Writing to a Vec cannot fail.
                let _ = ret.write(&mut self.out.tail);
            }
        }
    }

    /// Sends `ret` and forgets its URB.
    fn finish(&mut self, ret: RetSubmit) {
        if let Some(urb) = self.urbs.remove(&ret.seqnum) {
            self.pending_bytes = self.pending_bytes.saturating_sub(urb.bytes);
        }
        // Writing to a Vec cannot fail.
        let _ = ret.write(&mut self.out.tail);
    }

    /// The import is over: every URB still pending ends with `status` in the capture, and
    /// (`send`) in a reply to the peer.
    fn end_pending(&mut self, status: i32, send: bool) {
        let now = self.shared.now();
        for seqnum in std::mem::take(&mut self.urbs).into_keys() {
            self.capture_end(seqnum, EventType::Complete, status, &[], 0, now);
            if send {
                let _ = RetSubmit {
                    seqnum,
                    status,
                    actual_length: 0,
                    data: Vec::new(),
                }
                .write(&mut self.out.tail);
            }
        }
        self.pending_bytes = 0;
    }

    fn capture_submit(
        &mut self,
        cmd: &CmdSubmit,
        transfer_type: TransferType,
        endpoint: u8,
        now: Instant,
    ) {
        let Some(capture) = &self.shared.config.capture else {
            return;
        };
        let flags = cmd.transfer_flags | if endpoint & 0x80 != 0 { URB_DIR_IN } else { 0 };
        let ctx = Captured {
            transfer_type,
            endpoint,
            interval: cmd.interval as i32,
            flags,
        };
        self.captured.insert(cmd.seqnum, ctx);
        let event = UsbmonEvent {
            id: urb_id(self.conn, cmd.seqnum),
            event: EventType::Submit,
            transfer_type,
            endpoint,
            device: self.devnum,
            bus: 1,
            setup: (cmd.ep == 0).then_some(cmd.setup),
            at: now,
            status: -usbmon::errno::EINPROGRESS,
            urb_len: cmd.transfer_buffer_length,
            data: &cmd.data,
            interval: ctx.interval,
            start_frame: 0,
            xfer_flags: flags,
            ndesc: 0,
        };
        write_capture(capture, &event, self.shared);
        self.capture_dirty = true;
    }

    fn capture_end(
        &mut self,
        seqnum: u32,
        kind: EventType,
        status: i32,
        data: &[u8],
        actual: u32,
        now: Instant,
    ) {
        let Some(capture) = &self.shared.config.capture else {
            return;
        };
        let Some(ctx) = self.captured.remove(&seqnum) else {
            return;
        };
        let event = UsbmonEvent {
            id: urb_id(self.conn, seqnum),
            event: kind,
            transfer_type: ctx.transfer_type,
            endpoint: ctx.endpoint,
            device: self.devnum,
            bus: 1,
            setup: None,
            at: now,
            status,
            urb_len: actual,
            data: if ctx.endpoint & 0x80 != 0 && kind == EventType::Complete {
                data
            } else {
                &[]
            },
            interval: ctx.interval,
            start_frame: 0,
            xfer_flags: ctx.flags,
            ndesc: 0,
        };
        write_capture(capture, &event, self.shared);
        self.capture_dirty = true;
    }

    fn flush_capture(&mut self) {
        if !self.capture_dirty {
            return;
        }
        self.capture_dirty = false;
        if let Some(capture) = &self.shared.config.capture {
            let mut w = capture.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = w.flush() {
                self.shared
                    .log_limited(&format!("capture write failed: {e}"));
            }
        }
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes one record; a capture that cannot be written is reported in the log (rate
/// limited) and never stops the server.
fn write_capture(capture: &Capture, event: &UsbmonEvent<'_>, shared: &Shared) {
    let mut w = capture.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = w.write_event(event) {
        shared.log_limited(&format!("capture write failed: {e}"));
    }
}

/// Starts or continues `urb`'s transfer; returns its outcome once it ended, whether any
/// bytes moved, and whether the device is owed the poll that follows a bulk IN transfer's
/// last burst ([`InTransfer::defer_final_poll`]).
fn step_urb(
    urb: &mut Urb,
    port: &crate::usb::bus::BusPort,
    poller: &mut dyn hc::DevicePoller,
    out: &mut Outgoing,
) -> (Option<Outcome>, bool, bool) {
    if urb.active.is_none() {
        match start(&mut urb.cmd, out) {
            Ok(a) => urb.active = Some(a),
            Err(outcome) => return (Some(outcome), false, false),
        }
    }
    let Some(active) = urb.active.as_mut() else {
        return (Some(Outcome::status(errno::EINVAL)), false, false);
    };
    let mut owed = false;
    let (outcome, moved) = match active {
        Active::Control(t) => {
            let step = t.step(port, poller);
            let moved = t.take_wire_bytes();
            let outcome = match step {
                StepResult::Pending => None,
                StepResult::Done(Ok(data)) if urb.cmd.is_in() => Some(Outcome {
                    status: 0,
                    actual: data.len() as u32,
                    data,
                }),
                // The data stage moved all of it (`start` took `cmd.data` and checked its
                // length against wLength, so the buffer length is what was sent).
                StepResult::Done(Ok(_)) => Some(Outcome {
                    status: 0,
                    actual: urb.cmd.transfer_buffer_length,
                    data: Vec::new(),
                }),
                StepResult::Done(Err(e)) => Some(Outcome::status(-status_of(e))),
            };
            (outcome, moved)
        }
        Active::In(t) => {
            let step = t.step(port, poller);
            let moved = t.take_wire_bytes();
            let outcome = match step {
                StepResult::Pending => None,
                StepResult::Done(Ok(data)) => {
                    owed = true;
                    Some(Outcome {
                        status: 0,
                        actual: data.len() as u32,
                        data,
                    })
                }
                StepResult::Done(Err(e)) => {
                    // Data that arrived before the error is delivered with it, as an URB's
                    // actual_length is.
                    let data = t.data().to_vec();
                    Some(Outcome {
                        status: status_of(e),
                        actual: data.len() as u32,
                        data,
                    })
                }
            };
            (outcome, moved)
        }
        Active::Out(t) => {
            let step = t.step(port, poller);
            let moved = t.take_wire_bytes();
            let outcome = match step {
                StepResult::Pending => None,
                StepResult::Done(Ok(n)) => Some(Outcome {
                    status: 0,
                    actual: n as u32,
                    data: Vec::new(),
                }),
                StepResult::Done(Err(e)) => Some(Outcome {
                    status: status_of(e),
                    actual: t.sent() as u32,
                    data: Vec::new(),
                }),
            };
            (outcome, moved)
        }
    };
    urb.wire += moved;
    (outcome, moved > 0, owed)
}

/// The transfer for a newly started URB, or the outcome of one that is refused. IN data goes
/// into one of `out`'s spare buffers.
fn start(cmd: &mut CmdSubmit, out: &mut Outgoing) -> Result<Active, Outcome> {
    let ep = cmd.ep as u8;
    if ep == 0 {
        let setup = cmd.setup_packet();
        if setup.length > 0 && setup.is_in() != cmd.is_in() {
            return Err(Outcome::status(errno::EINVAL));
        }
        if setup.is_in() {
            if cmd.transfer_buffer_length < u32::from(setup.length) {
                return Err(Outcome::status(errno::EINVAL));
            }
            return Ok(Active::Control(ControlTransfer::new_in(setup)));
        }
        if cmd.data.len() != usize::from(setup.length) {
            return Err(Outcome::status(errno::EINVAL));
        }
        return Ok(Active::Control(ControlTransfer::new_out(
            setup,
            std::mem::take(&mut cmd.data),
        )));
    }
    if cmd.direction == DIR_IN {
        Ok(Active::In(
            InTransfer::with_buffer(0x80 | ep, cmd.transfer_buffer_length as usize, out.buffer())
                .defer_final_poll(),
        ))
    } else {
        let zlp = cmd.transfer_flags & URB_ZERO_PACKET != 0;
        Ok(Active::Out(OutTransfer::new(
            ep,
            std::mem::take(&mut cmd.data),
            zlp,
        )))
    }
}
