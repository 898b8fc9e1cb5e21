//! Fuzz harnesses for the emulator's outside inputs: control requests and raw packets on the
//! wire, transfer sequences through the in-process host, profile files and protocol payloads.
//!
//! The byte-level harnesses read their input as a little program: an opcode byte, then that
//! operation's fields (see each function). Reading stops at the end of the input, so every
//! byte string is a valid program and libFuzzer's mutations stay meaningful.

use std::rc::Rc;

use scanemu::device::Device;
use scanemu::engine::{ScanJob, ScanMode};
use scanemu::host::inproc::InProcessHost;
use scanemu::host::{Setup, UsbHost};
use scanemu::personality::native::protocol::{
    self, Capabilities, DeviceStatus, Event, ParamsReport, ScanParams, ScanStatus,
};
use scanemu::profile::Profile;
use scanemu::sim::Sim;
use scanemu::time::{Duration, Instant};
use scanemu::usb::hc::{self, ControlTransfer, SetupPacket};

/// Reads fields from the front of a fuzz input.
struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Input<'a> {
        Input { rest: data }
    }

    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.bytes(2)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(head)
    }

    /// Up to `n` bytes (fewer at the end of the input).
    fn up_to(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.rest.len());
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        head
    }

    fn setup(&mut self) -> Option<SetupPacket> {
        SetupPacket::parse(self.bytes(8)?).ok()
    }
}

/// A small valid job on the built-in profile, so programs reach the streaming states quickly.
fn small_job() -> ScanJob {
    ScanJob::flatbed(100, ScanMode::Gray8, 64, 64)
}

/// Control requests and raw tokens against a [`Device`] through the host-controller model.
///
/// Program: a sequence of `op` bytes, each followed by its fields:
/// - `0`, `1`: a control transfer: 8-byte SETUP, then for OUT requests `wLength` data bytes
///   (fewer at the end of the input), run by [`hc::run`];
/// - `2`: a raw SETUP token (8 bytes), then a poll;
/// - `3`: a raw OUT packet: endpoint, length byte, data;
/// - `4`: a raw IN token: endpoint, buffer length (u16, at most 2048);
/// - `5`: time passes: u16 x 16 microseconds, then a poll;
/// - `6`: a port event: reset, suspend, resume, disconnect or reconnect;
/// - `7`: SET_PARAMS with a small valid job, then START_SCAN.
///
/// The device is enumerated first; that must succeed.
pub fn control_requests(data: &[u8]) {
    let profile = Profile::builtin_fast();
    let mut device = Device::new(&profile);
    let mut now = Instant::ZERO;
    let port = device.port().clone();
    hc::enumerate(&port, &mut device.poller(now)).expect("a fresh device enumerates");
    let mut input = Input::new(data);
    while let Some(op) = input.u8() {
        match op % 8 {
            0 | 1 => {
                let Some(setup) = input.setup() else { break };
                let mut transfer = if setup.is_in() {
                    ControlTransfer::new_in(setup)
                } else {
                    let data = input.up_to(usize::from(setup.length)).to_vec();
                    ControlTransfer::new_out(setup, data)
                };
                let _ = hc::run(&mut transfer, &port, &mut device.poller(now), 64);
            }
            2 => {
                let Some(bytes) = input.bytes(8) else { break };
                let mut packet = [0u8; 8];
                packet.copy_from_slice(bytes);
                let _ = port.setup(packet);
                device.poll(now);
            }
            3 => {
                let (Some(ep), Some(len)) = (input.u8(), input.u8()) else {
                    break;
                };
                let data = input.up_to(usize::from(len) * 4);
                let _ = port.out(ep, data);
                device.poll(now);
            }
            4 => {
                let (Some(ep), Some(len)) = (input.u8(), input.u16()) else {
                    break;
                };
                let mut buf = vec![0u8; usize::from(len).min(2048)];
                let _ = port.in_packet(ep, &mut buf);
                device.poll(now);
            }
            5 => {
                let Some(step) = input.u16() else { break };
                now += Duration::from_micros(u64::from(step) * 16);
                device.poll(now);
            }
            6 => {
                let Some(which) = input.u8() else { break };
                match which % 5 {
                    0 => port.bus_reset(),
                    1 => port.suspend(),
                    2 => port.resume(),
                    3 => port.disconnect(),
                    _ => port.reconnect(),
                }
                device.poll(now);
            }
            _ => {
                let params = ScanParams { job: small_job() }.encode().to_vec();
                let setup = Setup::vendor_out(protocol::REQ_SET_PARAMS, 0, 0, 0);
                let mut set = ControlTransfer::new_out(setup, params);
                let _ = hc::run(&mut set, &port, &mut device.poller(now), 64);
                let setup = Setup::vendor_out(protocol::REQ_START_SCAN, 0, 0, 0);
                let mut start = ControlTransfer::new_out(setup, Vec::new());
                let _ = hc::run(&mut start, &port, &mut device.poller(now), 64);
            }
        }
        // Notes are the observer's business; drop them so long programs stay small.
        drop(device.take_notes());
    }
}

/// One operation of [`host_transfers`].
enum Op {
    ControlIn(Setup, Duration),
    ControlOut(Setup, Vec<u8>, Duration),
    BulkIn(u8, usize, Duration),
    BulkOut(u8, Vec<u8>, Duration),
    InterruptIn(u8, usize, Duration),
    ClearHalt(u8),
    Reset,
    Abort(u8),
    Sleep(Duration),
    StartScan,
}

/// A timeout byte: 0 means none, otherwise that many milliseconds.
fn timeout(b: u8) -> Duration {
    Duration::from_millis(u64::from(b))
}

fn decode_op(input: &mut Input<'_>, code: u8) -> Option<Op> {
    Some(match code % 10 {
        0 => Op::ControlIn(input.setup()?, timeout(input.u8()?)),
        1 => {
            let setup = input.setup()?;
            let t = timeout(input.u8()?);
            let data = input.up_to(usize::from(setup.length)).to_vec();
            Op::ControlOut(setup, data, t)
        }
        2 => Op::BulkIn(input.u8()?, usize::from(input.u16()?), timeout(input.u8()?)),
        3 => {
            let ep = input.u8()?;
            let t = timeout(input.u8()?);
            let len = usize::from(input.u16()?);
            Op::BulkOut(ep, input.up_to(len).to_vec(), t)
        }
        4 => Op::InterruptIn(input.u8()?, usize::from(input.u8()?), timeout(input.u8()?)),
        5 => Op::ClearHalt(input.u8()?),
        6 => Op::Reset,
        7 => Op::Abort(input.u8()?),
        8 => Op::Sleep(Duration::from_micros(u64::from(input.u16()?) * 16)),
        _ => Op::StartScan,
    })
}

async fn perform(host: InProcessHost, op: Op) {
    match op {
        Op::ControlIn(setup, t) => drop(host.control_in(setup, t).await),
        Op::ControlOut(setup, data, t) => drop(host.control_out(setup, &data, t).await),
        Op::BulkIn(ep, len, t) => drop(host.bulk_in(ep, &mut vec![0u8; len], t).await),
        Op::BulkOut(ep, data, t) => drop(host.bulk_out(ep, &data, t).await),
        Op::InterruptIn(ep, len, t) => drop(host.interrupt_in(ep, &mut vec![0u8; len], t).await),
        Op::ClearHalt(ep) => drop(host.clear_halt(ep).await),
        Op::Reset => drop(host.reset_device().await),
        Op::Abort(ep) => host.abort_endpoint(ep),
        Op::Sleep(d) => host.sleep(d).await,
        Op::StartScan => {
            let t = Duration::from_millis(100);
            let params = ScanParams { job: small_job() }.encode();
            let set = Setup::vendor_out(protocol::REQ_SET_PARAMS, 0, 0, 0);
            if host.control_out(set, &params, t).await.is_ok() {
                let start = Setup::vendor_out(protocol::REQ_START_SCAN, 0, 0, 0);
                drop(host.control_out(start, &[], t).await);
            }
        }
    }
}

/// The in-process host and the device behind it, driven by an arbitrary sequence of transfers
/// in virtual time.
///
/// Program: a sequence of `op` bytes; bit 7 set runs the operation as a task of its own
/// (concurrently with the ones after it), clear awaits it. Low bits modulo 10 choose:
/// `0` control IN (SETUP, timeout), `1` control OUT (SETUP, timeout, data), `2` bulk IN
/// (endpoint, u16 length, timeout), `3` bulk OUT (endpoint, timeout, u16 length, data),
/// `4` interrupt IN (endpoint, length, timeout), `5` clear halt (endpoint), `6` device reset,
/// `7` abort (endpoint), `8` sleep (u16 x 16 us), `9` start a small scan. Timeouts are bytes
/// in milliseconds, 0 meaning none.
///
/// The device's ticker runs beside the program. The run must end (complete, stall or reach
/// the time limit) without a panic.
pub fn host_transfers(data: &[u8]) {
    let mut input = Input::new(data);
    let mut ops = Vec::new();
    while let Some(code) = input.u8() {
        let Some(op) = decode_op(&mut input, code) else {
            break;
        };
        ops.push((code & 0x80 != 0, op));
    }
    let sim = Sim::new();
    let host = InProcessHost::new(Device::new(&Profile::builtin_fast()), Rc::new(sim.clone()))
        .expect("a fresh device enumerates");
    let ticker = host.clone();
    sim.spawn(async move { ticker.run_device().await });
    let spawner = sim.clone();
    let _ = sim.block_on(
        async move {
            for (concurrent, op) in ops {
                if concurrent {
                    spawner.spawn(perform(host.clone(), op));
                } else {
                    perform(host.clone(), op).await;
                }
            }
        },
        Instant::from_millis(120_000),
    );
}

/// A profile file's text: parse and validate it. A valid profile must build a device that
/// enumerates, and must read back the same after writing it out.
pub fn profile_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(profile) = Profile::from_json_str(text, "fuzz/profile.json") else {
        return;
    };
    let mut device = Device::new(&profile);
    let port = device.port().clone();
    hc::enumerate(&port, &mut device.poller(Instant::ZERO))
        .expect("a device built from a valid profile enumerates");
    let written = serde_json::to_string(&profile).expect("a profile serializes");
    let again = Profile::from_json_str(&written, "fuzz/written.json")
        .expect("a written profile reads back");
    assert_eq!(again, profile, "profile changed through a write and read");
}

/// The native protocol's payload decoders. The first byte chooses the decoder, the rest is the
/// payload. Whatever decodes must encode back to something that decodes to the same value; a
/// decoded scan job that fits a profile must have sizes that do not overflow.
pub fn protocol_payloads(data: &[u8]) {
    let Some((&which, payload)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0 => {
            if let Ok(c) = Capabilities::decode(payload) {
                assert_eq!(Capabilities::decode(&c.encode()), Ok(c));
            }
        }
        1 => {
            if let Ok(p) = ScanParams::decode(payload) {
                assert_eq!(ScanParams::decode(&p.encode()), Ok(p.clone()));
                check_job(&p.job);
            }
        }
        2 => {
            if let Ok(r) = ParamsReport::decode(payload) {
                assert_eq!(ParamsReport::decode(&r.encode()), Ok(r));
            }
        }
        3 => {
            if let Ok(s) = ScanStatus::decode(payload) {
                assert_eq!(ScanStatus::decode(&s.encode()), Ok(s));
            }
        }
        4 => {
            if let Ok(s) = DeviceStatus::decode(payload) {
                assert_eq!(DeviceStatus::decode(&s.encode()), Ok(s));
            }
        }
        5 => {
            if let Ok(e) = Event::decode(payload) {
                assert_eq!(Event::decode(&e.encode()), Ok(e));
            }
        }
        6 => {
            for &code in payload {
                if let Some(m) = protocol::mode_from_code(code) {
                    assert_eq!(protocol::mode_code(m), code);
                }
                let _ = protocol::DeviceState::from_code(code);
                let _ = protocol::ScanError::from_code(code);
            }
        }
        _ => {
            if let Ok(s) = SetupPacket::parse(payload) {
                assert_eq!(s.to_bytes().as_slice(), payload);
            }
        }
    }
}

/// A decoded job checked against the built-in optics and against the largest optics a profile
/// can describe; where it fits, its sizes must compute without overflow.
fn check_job(job: &ScanJob) {
    let small = Profile::builtin_fast();
    let mut huge = small.clone();
    huge.optics.max_width_px = u32::MAX;
    huge.optics.max_height_px = u32::MAX;
    huge.optics.optical_dpi = 1;
    huge.optics.resolutions.push(job.resolution_dpi);
    for optics in [&small.optics, &huge.optics] {
        if job.validate(optics).is_ok() {
            let _ = job.page_bytes();
            let _ = job.bands_per_page(small.timing.band_lines);
        }
    }
}

/// The USB/IP decoders (`scanemu::usbip::protocol`) on arbitrary bytes, and a live server.
///
/// The first byte picks the side, the rest is the stream that side reads:
/// - `0`: a server in the operation phase: operation headers, each `OP_REQ_IMPORT` followed by
///   its bus id, until the first error;
/// - `1`: a client in the operation phase: one reply header, then an `OP_REP_DEVLIST` body
///   (at most 64 devices) or an `OP_REP_IMPORT` device record;
/// - `2`: a server in the URB phase: `CMD_SUBMIT` / `CMD_UNLINK` with the default [`Limits`]
///   until the first error; every command read must write back to the bytes it came from;
/// - `3`: a client in the URB phase: `RET_SUBMIT` / `RET_UNLINK`, where even sequence numbers
///   name IN URBs of `seqnum & 0xffff` bytes and odd ones OUT URBs; no reply may carry more
///   data than its URB asked for;
/// - `4`: the stream is sent to a live [`UsbIpServer`] on loopback (one per process), whose
///   answers are read until it closes; the server must still answer `OP_REQ_DEVLIST` after it.
///
/// [`Limits`]: scanemu::usbip::protocol::Limits
/// [`UsbIpServer`]: scanemu::usbip::UsbIpServer
pub fn usbip_messages(data: &[u8]) {
    use scanemu::usbip::protocol::{
        read_busid, read_devlist, Command, DeviceRecord, Limits, OpHeader, Reply, OP_REP_DEVLIST,
        OP_REP_IMPORT, OP_REQ_IMPORT, URB_HEADER_LEN,
    };

    let Some((&side, stream)) = data.split_first() else {
        return;
    };
    let mut r = stream;
    match side % 5 {
        0 => {
            while let Ok(h) = OpHeader::read(&mut r) {
                if h.code == OP_REQ_IMPORT && read_busid(&mut r).is_err() {
                    break;
                }
            }
        }
        1 => {
            if let Ok(h) = OpHeader::read(&mut r) {
                match h.code {
                    OP_REP_DEVLIST => {
                        if let Ok(list) = read_devlist(&mut r, 64) {
                            assert!(list.len() <= 64, "device list over its limit");
                            for d in &list {
                                assert_eq!(
                                    d.interfaces.len(),
                                    usize::from(d.record.num_interfaces)
                                );
                            }
                        }
                    }
                    OP_REP_IMPORT => {
                        let _ = DeviceRecord::read(&mut r);
                    }
                    _ => {}
                }
            }
        }
        2 => {
            let limits = Limits::default();
            loop {
                let before = r;
                let Ok(cmd) = Command::read(&mut r, &limits) else {
                    break;
                };
                let used = &before[..before.len() - r.len()];
                let mut again = Vec::new();
                match &cmd {
                    Command::Submit(s) => {
                        assert!(s.transfer_buffer_length <= limits.max_transfer);
                        if s.is_in() {
                            assert!(s.data.is_empty(), "IN submit carries data");
                        } else {
                            assert_eq!(s.data.len() as u64, u64::from(s.transfer_buffer_length));
                        }
                        s.write(&mut again).expect("writing to a Vec");
                        assert_eq!(again, used, "CMD_SUBMIT does not write back as read");
                    }
                    Command::Unlink(u) => {
                        assert!(u.ep <= 15 && u.direction <= 1);
                        u.write(&mut again).expect("writing to a Vec");
                        assert_eq!(used.len(), URB_HEADER_LEN);
                        assert_eq!(again[..24], used[..24], "CMD_UNLINK does not write back");
                    }
                }
            }
        }
        3 => {
            let in_length = |seq: u32| seq.is_multiple_of(2).then_some(seq & 0xffff);
            while let Ok(reply) = Reply::read(&mut r, in_length) {
                if let Reply::Submit(s) = reply {
                    match in_length(s.seqnum) {
                        Some(len) => {
                            assert!(s.actual_length <= len, "reply longer than its URB");
                            assert_eq!(s.data.len() as u64, u64::from(s.actual_length));
                        }
                        None => assert!(s.data.is_empty(), "OUT reply carries data"),
                    }
                }
            }
        }
        _ => live_server(stream),
    }
}

/// Sends `stream` to the process's loopback USB/IP server, reads until it closes the
/// connection (or 2 s pass), then checks that it still lists its device.
fn live_server(stream: &[u8]) {
    use std::io::{Read, Write};
    use std::net::{Shutdown, SocketAddr, TcpStream};
    use std::sync::OnceLock;
    use std::time::Duration as WallDuration;

    use scanemu::host::usbip::list_devices;
    use scanemu::usbip::{ServerConfig, UsbIpServer};

    static SERVER: OnceLock<SocketAddr> = OnceLock::new();
    let addr = *SERVER.get_or_init(|| {
        let server = UsbIpServer::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            ServerConfig::new(Profile::builtin_fast()),
        )
        .expect("a loopback USB/IP server starts");
        let addr = server.local_addr();
        // It serves every input of this process; the process's end stops it.
        std::mem::forget(server);
        addr
    });
    let Ok(mut conn) = TcpStream::connect(addr) else {
        panic!("the USB/IP server stopped accepting connections");
    };
    conn.set_read_timeout(Some(WallDuration::from_secs(2)))
        .expect("read timeout");
    // The server may close early (a protocol error); a failed write is then expected.
    let _ = conn.write_all(stream);
    let _ = conn.shutdown(Shutdown::Write);
    let mut sink = [0u8; 64 * 1024];
    while let Ok(n) = conn.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
    drop(conn);
    let list = list_devices(addr).expect("the server still answers OP_REQ_DEVLIST");
    assert_eq!(list.len(), 1, "the server lost its device");
}

/// An ESC/I device of `level` with fast timing, so fuzzed scans reach every state quickly.
fn esci_profile(classic: bool) -> Profile {
    let text = include_str!("../../../fixtures/profiles/escI-b7-flatbed.json");
    let text = if classic {
        text.replace("\"level\": \"B7\"", "\"level\": \"B6\"")
    } else {
        text.to_string()
    };
    let mut profile = Profile::from_json_str(&text, "escI-b7-flatbed.json").expect("fixture");
    profile.timing.warmup_us = 1_000;
    profile.timing.line_period_us = 20;
    profile.timing.band_lines = 4;
    profile.timing.motor_stop_us = 500;
    profile
}

/// Commands an ESC/I host sends (the letter after ESC or FS).
const ESCI_LETTERS: &[u8] = b"@IFfmCDBLZMQgKdstNeRAzGW!iq";

/// The ESC/I personality driven by arbitrary host traffic on bulk OUT and IN, in virtual time.
///
/// Program: the first byte's bit 0 picks level B6 (classic) or B7 (extended); then `op` bytes,
/// bit 7 set runs the operation as a task of its own. Low bits modulo 9: `0` raw bulk OUT
/// (length byte, data), `1` a command (`ESC`/`FS` chosen by a byte, letter from a table),
/// `2` `FS W` with fuzzed fields (resolution index, width u16, height u16, colour, depth, line
/// count) after its command, `3` bulk IN (u16 length, at most 70000, timeout byte), `4` ACK,
/// `5` CAN, `6` sleep (byte x 256 us), `7` clear the halt of bulk IN, `8` a classic parameter
/// command with 1 to 8 parameter bytes.
///
/// The run must end without a panic, and no IN transfer may return more than it asked for.
pub fn esci_wire(data: &[u8]) {
    let mut input = Input::new(data);
    let Some(first) = input.u8() else { return };
    let profile = esci_profile(first & 1 == 1);
    let t = Duration::from_millis(50);
    let mut ops: Vec<(bool, EsciOp)> = Vec::new();
    while let Some(code) = input.u8() {
        let op = match code % 9 {
            0 => {
                let n = usize::from(input.u8().unwrap_or(0) % 80);
                EsciOp::Out(input.up_to(n).to_vec())
            }
            1 => {
                let lead = if input.u8().unwrap_or(0) & 1 == 1 {
                    0x1c
                } else {
                    0x1b
                };
                let i = usize::from(input.u8().unwrap_or(0)) % ESCI_LETTERS.len();
                EsciOp::Out(vec![lead, ESCI_LETTERS[i]])
            }
            2 => {
                let res = [75u32, 150, 300, 600, 123][usize::from(input.u8().unwrap_or(0) % 5)];
                let width = u32::from(input.u16().unwrap_or(64));
                let height = u32::from(input.u16().unwrap_or(16));
                let mut w = vec![0u8; 64];
                w[0..4].copy_from_slice(&res.to_le_bytes());
                w[4..8].copy_from_slice(&res.to_le_bytes());
                w[16..20].copy_from_slice(&width.to_le_bytes());
                w[20..24].copy_from_slice(&height.to_le_bytes());
                w[24] = if input.u8().unwrap_or(0) & 1 == 1 {
                    0x13
                } else {
                    0
                };
                w[25] = [8u8, 1, 16][usize::from(input.u8().unwrap_or(0) % 3)];
                w[28] = input.u8().unwrap_or(255);
                EsciOp::FsW(w)
            }
            3 => {
                let len = usize::from(input.u16().unwrap_or(1)).min(70_000);
                EsciOp::In(len, timeout(input.u8().unwrap_or(10)))
            }
            4 => EsciOp::Out(vec![0x06]),
            5 => EsciOp::Out(vec![0x18]),
            6 => EsciOp::Sleep(Duration::from_micros(
                u64::from(input.u8().unwrap_or(0)) * 256,
            )),
            7 => EsciOp::ClearHalt,
            _ => {
                let i = usize::from(input.u8().unwrap_or(0)) % ESCI_LETTERS.len();
                let n = 1 + usize::from(input.u8().unwrap_or(0) % 8);
                let mut bytes = vec![0x1b, ESCI_LETTERS[i]];
                bytes.extend_from_slice(input.up_to(n));
                EsciOp::Out(bytes)
            }
        };
        ops.push((code & 0x80 != 0, op));
    }
    let sim = Sim::new();
    let host = InProcessHost::new(Device::new(&profile), Rc::new(sim.clone()))
        .expect("a fresh device enumerates");
    let ticker = host.clone();
    sim.spawn(async move { ticker.run_device().await });
    let spawner = sim.clone();
    let _ = sim.block_on(
        async move {
            for (concurrent, op) in ops {
                let h = host.clone();
                let run = async move {
                    match op {
                        EsciOp::Out(b) => drop(h.bulk_out(0x02, &b, t).await),
                        EsciOp::FsW(w) => {
                            if h.bulk_out(0x02, &[0x1c, b'W'], t).await.is_ok() {
                                let mut ack = [0u8; 1];
                                if h.bulk_in(0x81, &mut ack, t).await.is_ok() {
                                    drop(h.bulk_out(0x02, &w, t).await);
                                }
                            }
                        }
                        EsciOp::In(len, timeout) => {
                            let mut buf = vec![0u8; len];
                            if let Ok(n) = h.bulk_in(0x81, &mut buf, timeout).await {
                                assert!(n <= len, "IN transfer returned {n} of {len} bytes");
                            }
                        }
                        EsciOp::Sleep(d) => h.sleep(d).await,
                        EsciOp::ClearHalt => drop(h.clear_halt(0x81).await),
                    }
                };
                if concurrent {
                    spawner.spawn(run);
                } else {
                    run.await;
                }
            }
        },
        Instant::from_millis(120_000),
    );
}

enum EsciOp {
    Out(Vec<u8>),
    FsW(Vec<u8>),
    In(usize, Duration),
    Sleep(Duration),
    ClearHalt,
}

/// A usbmon capture file (pcap or pcapng, link type 220 or 189), as `scanemu import-pcap`
/// reads it: read it, list its devices, import the default device. Never panics; every error
/// is one line. An imported recording exports a capture that reads and imports again to as
/// many transactions.
pub fn usbmon_capture(data: &[u8]) {
    use scanemu::capture::import::{self, DeviceChoice};
    use scanemu::capture::read::read_capture;
    use scanemu::capture::recording::Recording;

    let one_line = |e: &dyn std::fmt::Display| {
        let text = e.to_string();
        assert!(
            !text.is_empty() && !text.contains('\n'),
            "the error is not one line: {text:?}"
        );
    };
    let file = match read_capture(data) {
        Ok(f) => f,
        Err(e) => return one_line(&e),
    };
    let devices = import::devices(&file);
    for d in &devices {
        assert!(d.address != 0, "address 0 is no device to import");
        assert!(d.transfers > 0);
    }
    let imported = match import::import(data, DeviceChoice::Auto) {
        Ok(i) => i,
        Err(e) => return one_line(&e),
    };
    let rec = imported.recording;
    let choice = DeviceChoice::BusAddress(imported.device.bus, imported.device.address);
    let again = Recording::from_pcap(&rec.to_pcap(), Some(choice))
        .expect("an exported capture imports again");
    assert_eq!(again.transactions.len(), rec.transactions.len());
}
