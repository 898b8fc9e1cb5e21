//! The USB/IP server: exports one emulated scanner over TCP.
//!
//! [`UsbIpServer::bind`] listens on an address (loopback unless the caller decides otherwise)
//! and serves each connection on a thread of its own. A connection may list the device
//! (`OP_REQ_DEVLIST`) as often as it likes; `OP_REQ_IMPORT` of the bus id hands it the device
//! until it disconnects. One importer at a time: a second import while the device is taken is
//! answered `ST_DEV_BUSY`. Every import gets a freshly built [`Device`] from the configured
//! profile and faults, enumerated on the server side as a host bus would (bus reset,
//! SET_ADDRESS, SET_CONFIGURATION), so each client starts from a device in its power-on
//! state: the device is reset between clients.
//!
//! An imported connection runs two threads. A reader decodes commands (buffered reads,
//! validated by [`Command::read`]) and hands them over a channel; the session thread owns the
//! device and the URB queues. URBs queue per endpoint (all control URBs share EP0) and only
//! the head of each queue is stepped, with the same host-controller transfers
//! ([`crate::usb::hc`]) the in-process host uses. An IN URB the device NAKs stays pending (no
//! empty completion); the session steps pending URBs again on every URB that arrives and
//! whenever the device asks to be polled ([`Device::poll_at`]), on the wall clock. Completions
//! are paced by the profile's bus speed (`Speed::wire_time`, one bus shared by all endpoints),
//! as the in-process host charges them.
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
//! A hostile peer cannot take the server down: a malformed header, an absurd length, an
//! unknown command or more than [`ServerConfig::max_pending_urbs`] outstanding URBs (or
//! [`ServerConfig::max_pending_bytes`] of buffers) closes that connection only, with one log
//! line; the device goes back to the pool for the next client.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufReader, BufWriter, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::protocol::{
    encode_devlist, errno, read_busid, CmdSubmit, CmdUnlink, Command, DeviceRecord, ExportedDevice,
    InterfaceRecord, Limits, OpHeader, ProtocolError, RetSubmit, RetUnlink, DIR_IN, OP_REP_IMPORT,
    OP_REQ_DEVLIST, OP_REQ_IMPORT, ST_DEV_BUSY, ST_DEV_ERR, ST_NODEV, ST_OK, URB_ZERO_PACKET,
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

/// Receives every device note of the served device, with its time on the server's clock.
pub type NoteSink = Arc<dyn Fn(&DeviceNote) + Send + Sync>;
/// Receives one line per connection event (accepted, imported, closed and why).
pub type LogSink = Arc<dyn Fn(&str) + Send + Sync>;

/// What the server exports and how it bounds its peers.
#[derive(Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The device profile (descriptors, timing, faults).
    pub profile: Profile,
    /// Faults to inject instead of the profile's (default: the profile's own).
    pub faults: Option<Vec<Fault>>,
    /// The bus id clients import (default `1-1`).
    pub busid: String,
    /// Decoder limits (default: [`Limits::default`], 16 MiB per transfer).
    pub limits: Limits,
    /// Most URBs one connection may have outstanding before it is closed (default 1024).
    pub max_pending_urbs: usize,
    /// Most buffer bytes one connection may have outstanding before it is closed (default 64 MiB).
    pub max_pending_bytes: usize,
    /// The instant the device's time counts from (default: when the server was bound). Give
    /// the epoch of another clock to put device notes on that clock.
    pub epoch: Option<std::time::Instant>,
    /// Where device notes go (default: nowhere).
    pub notes: Option<NoteSink>,
    /// Where connection log lines go (default: nowhere).
    pub log: Option<LogSink>,
    /// A usbmon capture every URB is written to (default: none); see [`Capture`].
    pub capture: Option<Capture>,
}

/// A usbmon pcap (link type 220) shared by the server's sessions: each URB is written as its
/// `S` record when it arrives and its `C` record when its RET_SUBMIT leaves (an unlinked URB
/// completes with `-ECONNRESET`), on the server's clock. Records are flushed as they are
/// written, so a server stopped by a signal leaves a complete file.
pub type Capture = Arc<Mutex<PcapWriter<Box<dyn Write + Send>>>>;

impl ServerConfig {
    /// A configuration exporting a device of `profile`, every other field at its default.
    pub fn new(profile: Profile) -> ServerConfig {
        ServerConfig {
            profile,
            faults: None,
            busid: "1-1".into(),
            limits: Limits::default(),
            max_pending_urbs: 1024,
            max_pending_bytes: 64 << 20,
            epoch: None,
            notes: None,
            log: None,
            capture: None,
        }
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
}

struct Shared {
    config: ServerConfig,
    epoch: std::time::Instant,
    export: ExportedDevice,
    imported: AtomicBool,
    stop: AtomicBool,
    connections: AtomicU64,
    imports: AtomicU64,
    protocol_errors: AtomicU64,
    /// Streams of live connections, so that shutdown can close them.
    live: Mutex<Vec<(u64, TcpStream)>>,
}

impl Shared {
    fn log(&self, line: &str) {
        if let Some(log) = &self.config.log {
            log(line);
        }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX))
    }
}

/// A running USB/IP server; see the module documentation. Dropping it stops it.
pub struct UsbIpServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl UsbIpServer {
    /// Binds `addr` and starts serving. The device is built and enumerated once here, so a
    /// profile the firmware cannot enumerate is an error now rather than at the first import.
    pub fn bind(addr: SocketAddr, config: ServerConfig) -> io::Result<UsbIpServer> {
        let export = describe(&config).map_err(io::Error::other)?;
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            epoch: config.epoch.unwrap_or_else(std::time::Instant::now),
            config,
            export,
            imported: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            imports: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            live: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("usbip-accept".into())
            .spawn(move || accept_loop(listener, s))?;
        Ok(UsbIpServer {
            shared,
            addr,
            accept: Some(accept),
        })
    }

    /// The address it listens on (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The device record clients see in `OP_REP_DEVLIST` and `OP_REP_IMPORT`.
    pub fn exported(&self) -> &ExportedDevice {
        &self.shared.export
    }

    /// Counters so far.
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            connections: self.shared.connections.load(Ordering::Relaxed),
            imports: self.shared.imports.load(Ordering::Relaxed),
            protocol_errors: self.shared.protocol_errors.load(Ordering::Relaxed),
        }
    }

    /// Blocks until the server stops (it only stops when shut down from another handle or
    /// the accept loop fails).
    pub fn wait(mut self) {
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }

    /// Stops accepting, closes every connection and waits for the accept thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Ok(live) = self.shared.live.lock() {
            for (_, s) in live.iter() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        // Wake the blocking accept with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let _ = TcpStream::connect_timeout(&wake, std::time::Duration::from_millis(200));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

impl Drop for UsbIpServer {
    fn drop(&mut self) {
        if self.accept.is_some() {
            self.stop();
        }
    }
}

/// Builds and enumerates a device once to fill the exported record.
fn describe(config: &ServerConfig) -> Result<ExportedDevice, String> {
    let mut device = Device::new(&config.profile);
    let e = {
        let (port, mut poller) = device.port_and_poller(Instant::ZERO);
        hc::enumerate(&port, &mut poller).map_err(|e| format!("enumeration failed: {e}"))?
    };
    let d = DeviceDescriptor::read(&e.device_descriptor);
    let c = &e.config_descriptor;
    // Alternate setting 0 of each interface, as usbip lists them.
    let interfaces: Vec<InterfaceRecord> = descriptor::walk(c)
        .filter(|desc| desc[1] == descriptor_type::INTERFACE && desc.len() >= 9 && desc[3] == 0)
        .map(|desc| InterfaceRecord {
            class: desc[5],
            subclass: desc[6],
            protocol: desc[7],
        })
        .collect();
    let busid = config.busid.clone();
    Ok(ExportedDevice {
        record: DeviceRecord {
            path: format!("/sys/devices/platform/scanemu/usb1/{busid}"),
            busid,
            busnum: 1,
            devnum: 2,
            speed: config.profile.usb.speed.usbip_code(),
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

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut next_id = 0u64;
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                shared.log(&format!("accept failed: {e}"));
                continue;
            }
        };
        threads.retain(|t| !t.is_finished());
        next_id += 1;
        let id = next_id;
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string());
        if let (Ok(mut live), Ok(s)) = (shared.live.lock(), stream.try_clone()) {
            live.push((id, s));
        }
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("usbip-conn-{id}"))
            .spawn(move || {
                s.log(&format!("connection {id} from {peer}"));
                let why = serve_connection(stream, &s);
                s.log(&format!("connection {id} closed: {why}"));
                if let Ok(mut live) = s.live.lock() {
                    live.retain(|(i, _)| *i != id);
                }
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => shared.log(&format!("cannot start a connection thread: {e}")),
        }
    }
    for t in threads {
        let _ = t.join();
    }
}

/// Releases the importer slot when the session ends, however it ends.
struct ImportGuard<'a>(&'a AtomicBool);

impl Drop for ImportGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

fn protocol_error(shared: &Shared, e: &ProtocolError) -> String {
    match e {
        ProtocolError::Closed => "peer closed the connection".into(),
        _ => {
            shared.protocol_errors.fetch_add(1, Ordering::Relaxed);
            format!("protocol error: {e}")
        }
    }
}

/// How far past the end of a connection the device's own schedule is still run (see
/// `Session::settle`), in microseconds.
const SETTLE_LIMIT_US: u64 = 5_000_000;

/// Serves one connection until it closes; returns why it closed.
fn serve_connection(stream: TcpStream, shared: &Shared) -> String {
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else {
        return "cannot clone the socket".into();
    };
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    let mut writer = BufWriter::with_capacity(64 * 1024, stream);
    loop {
        let header = match OpHeader::read(&mut reader) {
            Ok(h) => h,
            Err(e) => return protocol_error(shared, &e),
        };
        match header.code {
            OP_REQ_DEVLIST => {
                let reply = match encode_devlist(std::slice::from_ref(&shared.export)) {
                    Ok(r) => r,
                    Err(e) => return format!("cannot encode the device list: {e}"),
                };
                if let Err(e) = writer.write_all(&reply).and_then(|()| writer.flush()) {
                    return format!("write failed: {e}");
                }
            }
            OP_REQ_IMPORT => {
                let busid = match read_busid(&mut reader) {
                    Ok(b) => b,
                    Err(e) => return protocol_error(shared, &e),
                };
                let status = if busid != shared.config.busid {
                    ST_NODEV
                } else if shared
                    .imported
                    .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
                {
                    ST_DEV_BUSY
                } else {
                    ST_OK
                };
                let mut reply = OpHeader::new(OP_REP_IMPORT, status).encode().to_vec();
                if status != ST_OK {
                    let _ = writer.write_all(&reply).and_then(|()| writer.flush());
                    return format!("import of {busid:?} refused with status {status}");
                }
                let guard = ImportGuard(&shared.imported);
                let Ok(record) = shared.export.record.encode() else {
                    let _ = writer
                        .write_all(&OpHeader::new(OP_REP_IMPORT, ST_DEV_ERR).encode())
                        .and_then(|()| writer.flush());
                    return "cannot encode the device record".into();
                };
                reply.extend_from_slice(&record);
                if let Err(e) = writer.write_all(&reply).and_then(|()| writer.flush()) {
                    return format!("write failed: {e}");
                }
                shared.imports.fetch_add(1, Ordering::Relaxed);
                shared.log(&format!("device {busid} imported"));
                let why = run_session(reader, writer, shared);
                drop(guard);
                return why;
            }
            other => {
                return protocol_error(shared, &ProtocolError::UnknownOp(other));
            }
        }
    }
}

/// What the reader thread hands the session.
enum Msg {
    Command(Command),
    Closed(String),
}

/// Outstanding URBs and bytes of one connection, shared by its reader and session.
#[derive(Default)]
struct Budget {
    urbs: AtomicUsize,
    bytes: AtomicUsize,
}

fn reader_loop(
    mut reader: BufReader<TcpStream>,
    tx: SyncSender<Msg>,
    budget: Arc<Budget>,
    limits: Limits,
    max_urbs: usize,
    max_bytes: usize,
    shared: &Shared,
) {
    loop {
        let cmd = match Command::read(&mut reader, &limits) {
            Ok(c) => c,
            Err(e) => {
                let _ = tx.send(Msg::Closed(protocol_error(shared, &e)));
                return;
            }
        };
        if let Command::Submit(s) = &cmd {
            let urbs = budget.urbs.fetch_add(1, Ordering::SeqCst) + 1;
            let bytes = budget
                .bytes
                .fetch_add(s.transfer_buffer_length as usize, Ordering::SeqCst)
                + s.transfer_buffer_length as usize;
            if urbs > max_urbs || bytes > max_bytes {
                shared.protocol_errors.fetch_add(1, Ordering::Relaxed);
                let _ = tx.send(Msg::Closed(format!(
                    "limit: {urbs} URBs / {bytes} bytes outstanding (at most {max_urbs} / {max_bytes})"
                )));
                return;
            }
        }
        if tx.send(Msg::Command(cmd)).is_err() {
            return;
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

/// The usbmon URB id of USB/IP URB `seqnum`: never 0, which umockdev reads as "not submitted".
fn urb_id(seqnum: u32) -> u64 {
    0x5ca1_0000_0000 | u64::from(seqnum)
}

/// Writes one record; a capture that cannot be written is reported once per record in the log
/// and never stops the server.
fn write_capture(capture: &Capture, event: &UsbmonEvent<'_>, shared: &Shared) {
    let mut w = capture.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = w.write_event(event).and_then(|()| w.flush()) {
        shared.log(&format!("capture write failed: {e}"));
    }
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

/// One imported device: the URB queues and the device they run on.
struct Session<'a> {
    shared: &'a Shared,
    device: Device,
    devid: u32,
    speed: Speed,
    /// Per endpoint address (EP0 is 0x00 for both directions); only heads are stepped.
    queues: BTreeMap<u8, VecDeque<Urb>>,
    /// Completed URBs waiting for their wire time to pass, in completion order.
    outbox: VecDeque<(Instant, RetSubmit, usize)>,
    bus_free_at: Instant,
    budget: Arc<Budget>,
    writer: BufWriter<TcpStream>,
    dirty: bool,
    /// Capture details of URBs submitted and not yet completed, by seqnum.
    captured: BTreeMap<u32, Captured>,
}

/// What a URB's `C` record repeats from its `S` record.
#[derive(Clone, Copy)]
struct Captured {
    transfer_type: TransferType,
    endpoint: u8,
    interval: i32,
    flags: u32,
}

fn run_session(
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    shared: &Shared,
) -> String {
    let config = &shared.config;
    let mut device = Device::new(&config.profile);
    if let Some(f) = &config.faults {
        device.set_faults(f.clone());
    }
    let now = shared.now();
    device.poll(now);
    {
        let (port, mut poller) = device.port_and_poller(now);
        if let Err(e) = hc::enumerate(&port, &mut poller) {
            return format!("device failed to enumerate: {e}");
        }
    }
    // Enumeration is the server's business, as on a host that exports a real device.
    let _ = device.take_notes();
    let budget = Arc::new(Budget::default());
    let (tx, rx) = mpsc::sync_channel::<Msg>(256);
    let close = writer.get_ref().try_clone();
    let mut session = Session {
        shared,
        device,
        devid: shared.export.record.devid(),
        speed: config.profile.usb.speed,
        queues: BTreeMap::new(),
        outbox: VecDeque::new(),
        bus_free_at: Instant::ZERO,
        budget: budget.clone(),
        writer,
        dirty: false,
        captured: BTreeMap::new(),
    };
    std::thread::scope(|scope| {
        let limits = config.limits;
        let (max_urbs, max_bytes) = (config.max_pending_urbs, config.max_pending_bytes);
        scope.spawn(move || {
            reader_loop(reader, tx, budget, limits, max_urbs, max_bytes, shared);
        });
        let why = session.run(&rx);
        session.settle();
        // Unblock the reader: it is reading from the socket we are closing.
        if let Ok(s) = &close {
            let _ = s.shutdown(Shutdown::Both);
        }
        drop(rx);
        why
    })
}

impl Session<'_> {
    fn run(&mut self, rx: &Receiver<Msg>) -> String {
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                return "server shutting down".into();
            }
            let now = self.shared.now();
            self.pump(now);
            if let Err(e) = self.send_due(now) {
                return format!("write failed: {e}");
            }
            let wake = match (self.device.poll_at(), self.outbox.front().map(|o| o.0)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let msg = match wake {
                Some(at) => {
                    let now = self.shared.now();
                    if at <= now {
                        match rx.try_recv() {
                            Ok(m) => Some(m),
                            Err(mpsc::TryRecvError::Empty) => None,
                            Err(mpsc::TryRecvError::Disconnected) => return "reader ended".into(),
                        }
                    } else {
                        let wait = std::time::Duration::from_micros((at - now).total_micros());
                        match rx.recv_timeout(wait) {
                            Ok(m) => Some(m),
                            Err(RecvTimeoutError::Timeout) => None,
                            Err(RecvTimeoutError::Disconnected) => return "reader ended".into(),
                        }
                    }
                }
                None => match rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => return "reader ended".into(),
                },
            };
            let Some(msg) = msg else { continue };
            // Take every message already waiting before stepping the device again.
            let mut next = Some(msg);
            while let Some(m) = next.take() {
                match m {
                    Msg::Closed(why) => return why,
                    Msg::Command(Command::Submit(s)) => self.submit(s),
                    Msg::Command(Command::Unlink(u)) => {
                        if let Err(e) = self.unlink(u) {
                            return format!("write failed: {e}");
                        }
                    }
                }
                next = rx.try_recv().ok();
            }
        }
    }

    /// The connection is gone: lets the device finish what it already scheduled (a motor
    /// stopping after a cancel, bands still being scanned into its buffer) at the scheduled
    /// instants, up to [`SETTLE_LIMIT_US`] ahead, so the notes of the session are complete.
    fn settle(&mut self) {
        let limit = self.shared.now() + Duration::from_micros(SETTLE_LIMIT_US);
        while let Some(at) = self.device.poll_at() {
            if at > limit {
                break;
            }
            self.device.poll(at);
            self.report_notes();
        }
    }

    fn release(&self, bytes: usize) {
        self.budget.urbs.fetch_sub(1, Ordering::SeqCst);
        self.budget.bytes.fetch_sub(bytes, Ordering::SeqCst);
    }

    fn report_notes(&mut self) {
        let notes = self.device.take_notes();
        if let Some(sink) = &self.shared.config.notes {
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
        let now = self.shared.now();
        self.capture_submit(&cmd, now);
        if cmd.devid != self.devid {
            self.complete(cmd, Outcome::status(errno::ENODEV), 0, now);
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
        let key = Self::queue_key(&cmd);
        self.queues.entry(key).or_default().push_back(Urb {
            cmd,
            active: None,
            wire: 0,
        });
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
            id: urb_id(cmd.seqnum),
            event: EventType::Submit,
            transfer_type,
            endpoint,
            device: self.device.port().address(),
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
    }

    /// Writes the `C` record of URB `seqnum` to the capture, if there is one.
    fn capture_complete(
        &mut self,
        seqnum: u32,
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
            id: urb_id(seqnum),
            event: EventType::Complete,
            transfer_type: ctx.transfer_type,
            endpoint: ctx.endpoint,
            device: self.device.port().address(),
            bus: 1,
            setup: None,
            at: now,
            status,
            urb_len: actual,
            data: if ctx.endpoint & 0x80 != 0 { data } else { &[] },
            interval: ctx.interval,
            start_frame: 0,
            xfer_flags: ctx.flags,
            ndesc: 0,
        };
        write_capture(capture, &event, self.shared);
    }

    /// The stub's device reset: pending URBs die with -ESHUTDOWN, the device re-enumerates.
    fn reset_device(&mut self, now: Instant) {
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

    fn unlink(&mut self, u: CmdUnlink) -> io::Result<()> {
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
                .position(|o| o.1.seqnum == u.unlink_seqnum)
            {
                found = self.outbox.remove(i).map(|o| o.2);
            }
        }
        let status = match found {
            Some(bytes) => {
                self.release(bytes);
                let now = self.shared.now();
                self.capture_complete(u.unlink_seqnum, -errno::ECONNRESET, &[], 0, now);
                -errno::ECONNRESET
            }
            None => 0,
        };
        RetUnlink {
            seqnum: u.seqnum,
            status,
        }
        .write(&mut self.writer)?;
        self.writer.flush()
    }

    /// Queues `cmd`'s RET_SUBMIT for when its `wire` bytes have crossed the bus.
    fn complete(&mut self, cmd: CmdSubmit, outcome: Outcome, wire: u64, now: Instant) {
        let begin = self.bus_free_at.max(now);
        let due = begin + self.speed.wire_time(wire);
        self.bus_free_at = due;
        self.outbox.push_back((
            due,
            RetSubmit {
                seqnum: cmd.seqnum,
                status: outcome.status,
                actual_length: outcome.actual,
                data: outcome.data,
            },
            cmd.transfer_buffer_length as usize,
        ));
    }

    fn send_due(&mut self, now: Instant) -> io::Result<()> {
        while self.outbox.front().is_some_and(|o| o.0 <= now) {
            if let Some((_, ret, bytes)) = self.outbox.pop_front() {
                self.capture_complete(ret.seqnum, ret.status, &ret.data, ret.actual_length, now);
                self.release(bytes);
                ret.write(&mut self.writer)?;
                self.dirty = true;
            }
        }
        if self.dirty {
            self.dirty = false;
            self.writer.flush()?;
        }
        Ok(())
    }

    /// Runs the device at `now` and steps the head of every queue until nothing moves.
    fn pump(&mut self, now: Instant) {
        self.device.poll(now);
        loop {
            let mut progressed = false;
            let keys: Vec<u8> = self.queues.keys().copied().collect();
            for key in keys {
                let Some(q) = self.queues.get_mut(&key) else {
                    continue;
                };
                let Some(urb) = q.front_mut() else { continue };
                let (outcome, moved) = {
                    let (port, mut poller) = self.device.port_and_poller(now);
                    step_urb(urb, &port, &mut poller)
                };
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

/// Starts or continues `urb`'s transfer; returns its outcome once it ended, and whether any
/// bytes moved.
fn step_urb(
    urb: &mut Urb,
    port: &crate::usb::bus::BusPort,
    poller: &mut dyn hc::DevicePoller,
) -> (Option<Outcome>, bool) {
    if urb.active.is_none() {
        match start(&mut urb.cmd) {
            Ok(a) => urb.active = Some(a),
            Err(outcome) => return (Some(outcome), false),
        }
    }
    let Some(active) = urb.active.as_mut() else {
        return (Some(Outcome::status(errno::EINVAL)), false);
    };
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
                StepResult::Done(Ok(data)) => Some(Outcome {
                    status: 0,
                    actual: data.len() as u32,
                    data,
                }),
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
    (outcome, moved > 0)
}

/// The transfer for a newly started URB, or the outcome of one that is refused.
fn start(cmd: &mut CmdSubmit) -> Result<Active, Outcome> {
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
        Ok(Active::In(InTransfer::new(
            0x80 | ep,
            cmd.transfer_buffer_length as usize,
        )))
    } else {
        let zlp = cmd.transfer_flags & URB_ZERO_PACKET != 0;
        Ok(Active::Out(OutTransfer::new(
            ep,
            std::mem::take(&mut cmd.data),
            zlp,
        )))
    }
}
