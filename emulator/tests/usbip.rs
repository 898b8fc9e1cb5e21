//! The emulated scanner over USB/IP: full scans and cancels through the USB/IP client host,
//! byte-exact against the test pattern; URB unlink; a stall during cancel; a hostile peer that
//! never brings the server down; several clients in turn; Debian's `usbip list`.
//!
//! Everything runs on loopback in real time, with the fast built-in profile.

mod common;
use common::join;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::Duration as StdDuration;

use scanemu::engine::{pattern_line, Fault, ScanJob, ScanMode, ScanSource};
use scanemu::host::usbip::{list_devices, ConnectError, UsbIpHost};
use scanemu::host::{Setup, TransferError, UsbHost};
use scanemu::personality::native::protocol::*;
use scanemu::profile::Profile;
use scanemu::sim::Sim;
use scanemu::time::{Duration, Instant};
use scanemu::usb::hc::SetupPacket;
use scanemu::usbip::protocol::{
    encode_busid, errno, CmdSubmit, CmdUnlink, DeviceRecord, OpHeader, Reply, DIR_IN, DIR_OUT,
    OP_REQ_DEVLIST, OP_REQ_IMPORT, URB_HEADER_LEN,
};
use scanemu::usbip::{ServerConfig, UsbIpServer};

const T: Duration = Duration::from_millis(2000);
const LIMIT: Instant = Instant::from_millis(60_000);

const JOB: ScanJob = ScanJob {
    resolution_dpi: 100,
    mode: ScanMode::Gray8,
    x_px: 0,
    y_px: 0,
    width_px: 200,
    height_px: 200,
    source: ScanSource::Flatbed,
    pages: 1,
};

fn server(faults: Vec<Fault>) -> UsbIpServer {
    let mut config = ServerConfig::new(Profile::builtin_fast());
    config.device_mut().faults = Some(faults);
    UsbIpServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config).expect("binds loopback")
}

/// Imports `1-1`, waiting while a previous client's session is still being torn down.
fn connect(server: &UsbIpServer, sim: &Sim) -> UsbIpHost {
    for _ in 0..200 {
        match UsbIpHost::connect(server.local_addr(), "1-1", Rc::new(sim.clone())) {
            Ok(h) => return h,
            Err(ConnectError::Refused { status: 2, .. }) => {
                std::thread::sleep(StdDuration::from_millis(10))
            }
            Err(e) => panic!("import of 1-1: {e}"),
        }
    }
    panic!("the device stayed busy");
}

async fn start(host: &dyn UsbHost, job: ScanJob) -> ParamsReport {
    let params = ScanParams { job }.encode();
    host.control_out(Setup::vendor_out(REQ_SET_PARAMS, 0, 0, 0), &params, T)
        .await
        .expect("SET_PARAMS");
    let report = host
        .control_in(
            Setup::vendor_in(REQ_GET_PARAMS, 0, 0, PARAMS_REPORT_LEN as u16),
            T,
        )
        .await
        .expect("GET_PARAMS");
    host.control_out(Setup::vendor_out(REQ_START_SCAN, 0, 0, 0), &[], T)
        .await
        .expect("START_SCAN");
    ParamsReport::decode(&report).unwrap()
}

async fn device_status(host: &dyn UsbHost) -> DeviceStatus {
    let r = host
        .control_in(Setup::vendor_in(REQ_GET_DEVICE_STATUS, 0, 0, 8), T)
        .await
        .expect("GET_DEVICE_STATUS");
    DeviceStatus::decode(&r).unwrap()
}

async fn cancel(host: &dyn UsbHost) -> Result<(), TransferError> {
    let mut payload = [0u8; 6];
    payload[..2].copy_from_slice(&CANCEL_CODE.to_le_bytes());
    host.control_out(Setup::vendor_out(REQ_CANCEL, 0, 0, 6), &payload, T)
        .await
}

async fn read_band(host: &dyn UsbHost, report: &ParamsReport) -> Result<Vec<u8>, TransferError> {
    let mut buf = vec![0u8; report.band_bytes as usize];
    let n = host.bulk_in(EP_DATA_IN, &mut buf, T).await?;
    buf.truncate(n);
    Ok(buf)
}

fn expected_band(job: &ScanJob, report: &ParamsReport, k: u32) -> Vec<u8> {
    let bpl = job.bytes_per_line() as usize;
    let first = k * report.band_lines;
    let lines = report.band_lines.min(report.lines_per_page - first);
    let mut out = vec![0u8; bpl * lines as usize];
    for (i, line) in out.chunks_mut(bpl).enumerate() {
        pattern_line(0, first + i as u32, line);
    }
    out
}

/// A whole scan, every band compared with the pattern.
async fn full_scan(host: &dyn UsbHost) {
    let report = start(host, JOB).await;
    for k in 0..report.bands_per_page {
        let band = read_band(host, &report).await.expect("band");
        assert!(band == expected_band(&JOB, &report, k), "band {k} differs");
    }
}

/// Polls Get Device Status until OK.
async fn wait_idle(host: &dyn UsbHost) {
    for _ in 0..500 {
        if device_status(host).await.code == STATUS_OK {
            return;
        }
        host.sleep(Duration::from_millis(2)).await;
    }
    panic!("device never idle");
}

/// A well-behaved client imports the device and scans byte-exact.
fn client_scans(server: &UsbIpServer) {
    let sim = Sim::realtime();
    let host = connect(server, &sim);
    sim.block_on(async move { full_scan(&host).await }, LIMIT)
        .unwrap();
}

#[test]
fn full_scan_through_usbip_is_byte_exact() {
    let server = server(vec![]);
    let sim = Sim::realtime();
    let host = connect(&server, &sim);
    let info = host.device_info();
    assert_eq!(
        (info.vendor_id, info.product_id),
        (
            Profile::builtin_fast().usb.vid,
            Profile::builtin_fast().usb.pid
        )
    );
    assert_eq!(info.device_descriptor.len(), 18);
    assert_eq!(info.config_descriptor[1], 2);
    sim.block_on(
        async move {
            full_scan(&host).await;
            wait_idle(&host).await;
            assert_eq!(host.pending_transfers(), 0);
        },
        LIMIT,
    )
    .unwrap();
}

#[test]
fn cancel_mid_scan_then_next_scan_is_exact() {
    let server = server(vec![]);
    let sim = Sim::realtime();
    let host = connect(&server, &sim);
    sim.block_on(
        async move {
            let report = start(&host, JOB).await;
            for k in 0..2 {
                assert_eq!(
                    read_band(&host, &report).await.unwrap(),
                    expected_band(&JOB, &report, k)
                );
            }
            cancel(&host).await.expect("cancel accepted");
            wait_idle(&host).await;
            // Nothing of the cancelled scan is left in the pipe.
            let mut buf = vec![0u8; 4096];
            assert_eq!(
                host.bulk_in(EP_DATA_IN, &mut buf, Duration::from_millis(30))
                    .await,
                Err(TransferError::Timeout { actual: 0 })
            );
            full_scan(&host).await;
        },
        LIMIT,
    )
    .unwrap();
}

#[test]
fn abort_and_timeout_unlink_a_pending_bulk_read() {
    let server = server(vec![]);
    let sim = Sim::realtime();
    let host = connect(&server, &sim);
    let h2 = host.clone();
    sim.block_on(
        async move {
            // No scan: the device NAKs, so the read stays pending until its timeout.
            let mut buf = vec![0u8; 512];
            let t0 = host.now();
            let r = host
                .bulk_in(EP_DATA_IN, &mut buf, Duration::from_millis(40))
                .await;
            assert_eq!(r, Err(TransferError::Timeout { actual: 0 }));
            assert!(host.now() - t0 >= Duration::from_millis(40));
            assert_eq!(host.pending_transfers(), 0);
            // abort_endpoint from another task cancels a read without timeout.
            let sim2 = Sim::realtime();
            let _ = sim2;
            let aborter = h2.clone();
            let reader = async {
                let mut buf = vec![0u8; 512];
                host.bulk_in(EP_DATA_IN, &mut buf, Duration::ZERO).await
            };
            let abort = async {
                aborter.sleep(Duration::from_millis(20)).await;
                assert_eq!(aborter.pending_transfers(), 1);
                aborter.abort_endpoint(EP_DATA_IN);
            };
            let (r, ()) = join(reader, abort).await;
            assert_eq!(r, Err(TransferError::Cancelled { actual: 0 }));
            // The device is still in order: a full scan follows.
            full_scan(&host).await;
        },
        LIMIT,
    )
    .unwrap();
}

#[test]
fn stall_during_cancel_reaches_the_client_as_epipe() {
    let server = server(vec![Fault::StallOnCancel]);
    let sim = Sim::realtime();
    let host = connect(&server, &sim);
    sim.block_on(
        async move {
            let report = start(&host, JOB).await;
            read_band(&host, &report).await.unwrap();
            cancel(&host).await.expect("the request is accepted");
            let st = device_status(&host).await;
            assert_eq!(
                (st.code, st.halted),
                (STATUS_TRANSACTION_CANCELLED, vec![EP_DATA_IN, EP_DATA_OUT])
            );
            assert_eq!(read_band(&host, &report).await, Err(TransferError::Stall));
            host.clear_halt(EP_DATA_IN).await.unwrap();
            host.clear_halt(EP_DATA_OUT).await.unwrap();
            wait_idle(&host).await;
            full_scan(&host).await;
        },
        LIMIT,
    )
    .unwrap();
}

#[test]
fn reset_device_kills_pending_urbs_and_restores_the_device() {
    let server = server(vec![]);
    let sim = Sim::realtime();
    let host = connect(&server, &sim);
    sim.block_on(
        async move {
            let report = start(&host, JOB).await;
            read_band(&host, &report).await.unwrap();
            host.reset_device().await.expect("reset");
            wait_idle(&host).await;
            full_scan(&host).await;
        },
        LIMIT,
    )
    .unwrap();
}

/// A raw USB/IP peer: imports `1-1` and speaks the URB protocol by hand.
struct Raw {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    devid: u32,
}

impl Raw {
    /// Imports, waiting while the previous client's session is still being torn down.
    fn import(server: &UsbIpServer) -> Raw {
        for _ in 0..200 {
            if let Some(raw) = Raw::try_import(server) {
                return raw;
            }
            std::thread::sleep(StdDuration::from_millis(10));
        }
        panic!("the device stayed busy");
    }

    fn try_import(server: &UsbIpServer) -> Option<Raw> {
        let mut stream = TcpStream::connect(server.local_addr()).unwrap();
        stream
            .set_read_timeout(Some(StdDuration::from_secs(5)))
            .unwrap();
        let mut req = OpHeader::new(OP_REQ_IMPORT, 0).encode().to_vec();
        req.extend_from_slice(&encode_busid("1-1").unwrap());
        stream.write_all(&req).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let h = OpHeader::read(&mut reader).unwrap();
        if h.status != 0 {
            assert_eq!(h.status, 2, "only a busy device refuses");
            return None;
        }
        let rec = DeviceRecord::read(&mut reader).unwrap();
        Some(Raw {
            stream,
            reader,
            devid: rec.devid(),
        })
    }

    fn submit(&mut self, seqnum: u32, ep: u32, dir: u32, len: u32, setup: [u8; 8], data: &[u8]) {
        let cmd = CmdSubmit {
            seqnum,
            devid: self.devid,
            direction: dir,
            ep,
            transfer_flags: 0,
            transfer_buffer_length: len,
            start_frame: 0,
            number_of_packets: 0,
            interval: 0,
            setup,
            data: data.to_vec(),
        };
        let mut buf = Vec::new();
        cmd.write(&mut buf).unwrap();
        self.stream.write_all(&buf).unwrap();
    }

    fn unlink(&mut self, seqnum: u32, victim: u32) {
        let mut buf = Vec::new();
        CmdUnlink {
            seqnum,
            devid: self.devid,
            direction: DIR_IN,
            ep: 1,
            unlink_seqnum: victim,
        }
        .write(&mut buf)
        .unwrap();
        self.stream.write_all(&buf).unwrap();
    }

    fn reply(&mut self) -> Reply {
        Reply::read(&mut self.reader, |_| Some(1 << 20)).expect("a reply")
    }
}

#[test]
fn unlink_of_a_pending_read_answers_econnreset_and_no_ret_submit() {
    let server = server(vec![]);
    let mut raw = Raw::import(&server);
    // Bulk IN with no scan running: the device NAKs, the URB stays pending.
    raw.submit(10, 1, DIR_IN, 512, [0; 8], &[]);
    raw.stream
        .set_read_timeout(Some(StdDuration::from_millis(100)))
        .unwrap();
    let mut probe = [0u8; 1];
    let quiet = raw.reader.read(&mut probe);
    assert!(quiet.is_err(), "no completion while the device NAKs");
    raw.stream
        .set_read_timeout(Some(StdDuration::from_secs(5)))
        .unwrap();
    raw.unlink(11, 10);
    match raw.reply() {
        Reply::Unlink(u) => assert_eq!((u.seqnum, u.status), (11, -errno::ECONNRESET)),
        other => panic!("expected RET_UNLINK, got {other:?}"),
    }
    // A completed URB: GET_STATUS(device) answers, then its unlink answers 0.
    let setup = SetupPacket {
        request_type: 0x80,
        request: 0,
        value: 0,
        index: 0,
        length: 2,
    };
    raw.submit(12, 0, DIR_IN, 2, setup.to_bytes(), &[]);
    match raw.reply() {
        Reply::Submit(r) => assert_eq!((r.seqnum, r.status, r.actual_length), (12, 0, 2)),
        other => panic!("expected RET_SUBMIT 12, got {other:?}"),
    }
    raw.unlink(13, 12);
    match raw.reply() {
        Reply::Unlink(u) => assert_eq!((u.seqnum, u.status), (13, 0)),
        other => panic!("expected RET_UNLINK, got {other:?}"),
    }
    // A STALL is -EPIPE: an unknown vendor request.
    let bad = Setup::vendor_in(0x7e, 0, 0, 4);
    raw.submit(14, 0, DIR_IN, 4, bad.to_bytes(), &[]);
    match raw.reply() {
        Reply::Submit(r) => assert_eq!((r.seqnum, r.status), (14, -errno::EPIPE)),
        other => panic!("expected RET_SUBMIT 14, got {other:?}"),
    }
    // Another devid: -ENODEV.
    raw.devid ^= 0xff;
    raw.submit(15, 0, DIR_IN, 2, setup.to_bytes(), &[]);
    match raw.reply() {
        Reply::Submit(r) => assert_eq!((r.seqnum, r.status), (15, -errno::ENODEV)),
        other => panic!("expected RET_SUBMIT 15, got {other:?}"),
    }
    drop(raw);
    client_scans(&server);
}

#[test]
fn one_importer_at_a_time_and_a_fresh_device_for_the_next() {
    let server = server(vec![]);
    let sim = Sim::realtime();
    let first = connect(&server, &sim);
    let busy = UsbIpHost::connect(server.local_addr(), "1-1", Rc::new(sim.clone()));
    assert!(
        matches!(busy, Err(ConnectError::Refused { status: 2, .. })),
        "second importer refused as busy"
    );
    let unknown = UsbIpHost::connect(server.local_addr(), "9-9", Rc::new(sim.clone()));
    assert!(matches!(
        unknown,
        Err(ConnectError::Refused { status: 4, .. })
    ));
    // Listing works while the device is imported.
    let list = list_devices(server.local_addr()).unwrap();
    assert_eq!(list.len(), 1);
    // The first client leaves mid-scan; the next one finds an idle device.
    let h = first.clone();
    sim.block_on(
        async move {
            let report = start(&h, JOB).await;
            read_band(&h, &report).await.unwrap();
        },
        LIMIT,
    )
    .unwrap();
    drop(first);
    let mut second = None;
    for _ in 0..100 {
        match UsbIpHost::connect(server.local_addr(), "1-1", Rc::new(sim.clone())) {
            Ok(h) => {
                second = Some(h);
                break;
            }
            Err(ConnectError::Refused { status: 2, .. }) => {
                std::thread::sleep(StdDuration::from_millis(10))
            }
            Err(e) => panic!("{e}"),
        }
    }
    let second = second.expect("the device is released when the first client leaves");
    sim.block_on(
        async move {
            assert_eq!(device_status(&second).await.code, STATUS_OK);
            full_scan(&second).await;
        },
        LIMIT,
    )
    .unwrap();
    assert_eq!(server.stats().imports, 2);
}

/// Writes `bytes` after importing, then closes; the server must survive.
fn hostile(server: &UsbIpServer, bytes: &[u8]) {
    let mut raw = Raw::import(server);
    let _ = raw.stream.write_all(bytes);
    let _ = raw.stream.shutdown(std::net::Shutdown::Write);
    // The server closes (or answers and waits for more); either way the connection ends.
    let mut sink = Vec::new();
    raw.stream
        .set_read_timeout(Some(StdDuration::from_millis(300)))
        .unwrap();
    let _ = raw.stream.read_to_end(&mut sink);
}

fn header(command: u32, dir: u32, ep: u32, len: u32, packets: u32) -> Vec<u8> {
    let mut b = vec![0u8; URB_HEADER_LEN];
    b[0..4].copy_from_slice(&command.to_be_bytes());
    b[4..8].copy_from_slice(&1u32.to_be_bytes());
    b[8..12].copy_from_slice(&0x0001_0002u32.to_be_bytes());
    b[12..16].copy_from_slice(&dir.to_be_bytes());
    b[16..20].copy_from_slice(&ep.to_be_bytes());
    b[24..28].copy_from_slice(&len.to_be_bytes());
    b[32..36].copy_from_slice(&packets.to_be_bytes());
    b
}

#[test]
fn hostile_peers_never_bring_the_server_down() {
    let server = server(vec![]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "truncated header",
            header(1, DIR_IN, 1, 512, 0)[..30].to_vec(),
        ),
        ("absurd IN length", header(1, DIR_IN, 1, u32::MAX, 0)),
        ("absurd OUT length", header(1, DIR_OUT, 2, u32::MAX, 0)),
        ("unknown command", header(0x77, DIR_IN, 1, 0, 0)),
        ("bad direction", header(1, 7, 1, 0, 0)),
        ("bad endpoint", header(1, DIR_IN, 99, 0, 0)),
        ("isochronous", header(1, DIR_IN, 1, 64, 3)),
        ("OUT data cut short", {
            let mut b = header(1, DIR_OUT, 2, 4096, 0);
            b.extend_from_slice(&[0xaa; 100]);
            b
        }),
        ("garbage", vec![0xff; 1000]),
        ("flood of SUBMITs", {
            let mut b = Vec::new();
            for i in 0..2000u32 {
                let mut h = header(1, DIR_IN, 1, 512, 0);
                h[4..8].copy_from_slice(&(i + 1).to_be_bytes());
                b.extend_from_slice(&h);
            }
            b
        }),
    ];
    for (name, bytes) in &cases {
        hostile(&server, bytes);
        // After each, a well-behaved client still scans.
        let sim = Sim::realtime();
        let host = connect(&server, &sim);
        sim.block_on(async move { full_scan(&host).await }, LIMIT)
            .unwrap_or_else(|e| panic!("after {name}: {e}"));
    }
    // A hostile peer before import: garbage operation codes and an abrupt close mid-URB.
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    let _ = s.write_all(&[0x01, 0x11, 0x12, 0x34, 0, 0, 0, 0]);
    drop(s);
    let mut raw = Raw::import(&server);
    raw.submit(1, 1, DIR_IN, 512, [0; 8], &[]);
    let setup = Setup::vendor_out(REQ_SET_PARAMS, 0, 0, PARAMS_LEN as u16);
    let mut b = Vec::new();
    CmdSubmit {
        seqnum: 2,
        devid: raw.devid,
        direction: DIR_OUT,
        ep: 0,
        transfer_flags: 0,
        transfer_buffer_length: PARAMS_LEN as u32,
        start_frame: 0,
        number_of_packets: 0,
        interval: 0,
        setup: setup.to_bytes(),
        data: vec![0; PARAMS_LEN],
    }
    .write(&mut b)
    .unwrap();
    let _ = raw.stream.write_all(&b[..b.len() - 5]);
    drop(raw);
    let sim = Sim::realtime();
    let host = connect(&server, &sim);
    sim.block_on(async move { full_scan(&host).await }, LIMIT)
        .unwrap();
    assert!(
        server.stats().protocol_errors >= cases.len() as u64 - 1,
        "{:?}",
        server.stats()
    );
}

#[test]
fn devlist_names_the_scanner_and_its_interface() {
    let server = server(vec![]);
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.write_all(&OpHeader::new(OP_REQ_DEVLIST, 0).encode())
        .unwrap();
    let list = list_devices(server.local_addr()).unwrap();
    let p = Profile::builtin_fast();
    assert_eq!(list.len(), 1);
    let d = &list[0];
    assert_eq!(
        (
            d.record.busid.as_str(),
            d.record.id_vendor,
            d.record.id_product
        ),
        ("1-1", p.usb.vid, p.usb.pid)
    );
    assert_eq!(d.record.speed, p.usb.speed.usbip_code());
    assert_eq!(d.interfaces.len(), 1);
    assert_eq!(
        (
            d.interfaces[0].class,
            d.interfaces[0].subclass,
            d.interfaces[0].protocol
        ),
        (INTERFACE_CLASS, INTERFACE_SUBCLASS, INTERFACE_PROTOCOL)
    );
}

/// Debian's own client lists the device. Fails under CI=true when `usbip` is missing (CI
/// installs it); skips with a printed reason elsewhere.
#[test]
fn debian_usbip_list_shows_the_scanner() {
    let found = std::process::Command::new("usbip").arg("version").output();
    if found.is_err() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("usbip is not installed (apt-get install usbip); CI must have it");
        }
        eprintln!("skipped: the `usbip` tool is not installed (apt-get install usbip)");
        return;
    }
    let server = server(vec![]);
    let out = std::process::Command::new("usbip")
        .args([
            "--tcp-port",
            &server.local_addr().port().to_string(),
            "list",
            "-r",
            "127.0.0.1",
        ])
        .output()
        .expect("usbip runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let p = Profile::builtin_fast();
    let id = format!("{:04x}:{:04x}", p.usb.vid, p.usb.pid);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1-1"), "{text}");
    assert!(text.contains(&id), "{id} missing: {text}");
    assert!(
        text.contains("(ff/53/01)"),
        "interface class missing: {text}"
    );
}

/// A `Write` into a shared buffer, so a test can read what the server captured.
#[derive(Clone, Default)]
struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_server_captures_every_urb_as_usbmon_pcap() {
    let buf = SharedBuf::default();
    let mut config = ServerConfig::new(Profile::builtin_fast());
    let out: Box<dyn std::io::Write + Send> = Box::new(buf.clone());
    let writer = scanemu::capture::pcap::PcapWriter::new(out).unwrap();
    config.capture = Some(std::sync::Arc::new(std::sync::Mutex::new(writer)));
    let server =
        UsbIpServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config).expect("binds loopback");
    let sim = Sim::realtime();
    let host = connect(&server, &sim);
    sim.block_on(
        async move {
            let report = start(&host, JOB).await;
            read_band(&host, &report).await.unwrap();
            // A read that the client abandons is unlinked: its record completes -ECONNRESET.
            let mut small = vec![0u8; 64];
            host.abort_endpoint(EP_DATA_IN);
            cancel(&host).await.expect("cancel accepted");
            wait_idle(&host).await;
            let _ = host
                .bulk_in(EP_DATA_IN, &mut small, Duration::from_millis(20))
                .await;
        },
        LIMIT,
    )
    .unwrap();
    drop(server);
    let bytes = buf.0.lock().unwrap().clone();
    // Every URB has a submission and a completion, and the vendor requests are there.
    let rec =
        scanemu::capture::recording::Recording::from_pcap(&bytes, None).expect("capture parses");
    let names: Vec<String> = rec
        .transactions
        .iter()
        .map(scanemu::capture::replay::describe_transaction)
        .collect();
    let text = names.join("\n");
    for want in ["SET_PARAMS", "START_SCAN", "CANCEL", "GET_DEVICE_STATUS"] {
        assert!(
            text.contains(want),
            "{want} missing from the capture:\n{text}"
        );
    }
    assert!(
        rec.transactions
            .iter()
            .any(|t| t.ep == EP_DATA_IN && !t.bytes().is_empty()),
        "no bulk IN data in the capture:\n{text}"
    );
    if std::process::Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok()
    {
        let file = std::env::temp_dir().join(format!("scanemu-serve-{}.pcap", std::process::id()));
        std::fs::write(&file, &bytes).unwrap();
        let out = std::process::Command::new("tshark")
            .arg("-r")
            .arg(&file)
            .args(["-Y", "_ws.malformed || _ws.expert.severity >= warning"])
            .output()
            .expect("tshark runs");
        let _ = std::fs::remove_file(&file);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout.is_empty(),
            "tshark warns:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    } else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "tshark is missing (apt-get install tshark); CI must run this check"
        );
        eprintln!("skipped the tshark check: tshark is not installed");
    }
}

/// Sits between a client and the server and holds every bulk IN completion until the client
/// unlinks that URB, then hands the completion over before the unlink: the reply and the
/// unlink cross, as they do when a timeout fires late on a loaded machine.
fn crossing_proxy(server: SocketAddr) -> SocketAddr {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (client, mut upstream) = common::proxy_import(&listener, server);
        // seqnum -> (an IN URB, a bulk IN URB); completions held back by seqnum.
        type Urbs = HashMap<u32, (bool, bool)>;
        let state = Arc::new(Mutex::new((Urbs::new(), HashMap::<u32, Vec<u8>>::new())));
        let down = Arc::new(Mutex::new(client.try_clone().unwrap()));
        let (st, to_client) = (state.clone(), down.clone());
        let mut from_server = upstream.try_clone().unwrap();
        std::thread::spawn(move || loop {
            let mut h = [0u8; URB_HEADER_LEN];
            if from_server.read_exact(&mut h).is_err() {
                return;
            }
            let word = |at: usize| u32::from_be_bytes(h[at..at + 4].try_into().unwrap());
            let (cmd, seq) = (word(0), word(4));
            let mut msg = h.to_vec();
            let (is_in, hold) = st.lock().unwrap().0.get(&seq).copied().unwrap_or_default();
            if cmd == 3 && is_in {
                let mut data = vec![0u8; word(24) as usize];
                if from_server.read_exact(&mut data).is_err() {
                    return;
                }
                msg.extend_from_slice(&data);
            }
            if cmd == 3 && hold {
                st.lock().unwrap().1.insert(seq, msg);
            } else if to_client.lock().unwrap().write_all(&msg).is_err() {
                return;
            }
        });
        let mut from_client = client;
        loop {
            let mut h = [0u8; URB_HEADER_LEN];
            if from_client.read_exact(&mut h).is_err() {
                return;
            }
            let word = |at: usize| u32::from_be_bytes(h[at..at + 4].try_into().unwrap());
            let (cmd, seq, dir, ep) = (word(0), word(4), word(12), word(16));
            let mut msg = h.to_vec();
            if cmd == 1 {
                if dir == DIR_OUT {
                    let mut data = vec![0u8; word(24) as usize];
                    from_client.read_exact(&mut data).unwrap();
                    msg.extend_from_slice(&data);
                }
                // Control IN completions carry data too; only bulk IN ones are held.
                state
                    .lock()
                    .unwrap()
                    .0
                    .insert(seq, (dir == DIR_IN, dir == DIR_IN && ep != 0));
            } else if cmd == 2 {
                let victim = word(20);
                let held = state.lock().unwrap().1.remove(&victim);
                if let Some(reply) = held {
                    down.lock().unwrap().write_all(&reply).unwrap();
                }
            }
            upstream.write_all(&msg).unwrap();
        }
    });
    addr
}

#[test]
fn a_completion_that_crosses_a_timeout_unlink_delivers_its_data() {
    let server = server(vec![]);
    let proxy = crossing_proxy(server.local_addr());
    let sim = Sim::realtime();
    let host = UsbIpHost::connect(proxy, "1-1", Rc::new(sim.clone())).expect("imports");
    sim.block_on(
        async move {
            let report = start(&host, JOB).await;
            let mut buf = vec![0u8; report.band_bytes as usize];
            // The band completes on the server, the proxy holds it past the timeout: the
            // unlink and the completion cross, and the band is delivered, not lost.
            let n = host
                .bulk_in(EP_DATA_IN, &mut buf, Duration::from_millis(300))
                .await
                .expect("the completion that crossed the unlink");
            buf.truncate(n);
            assert!(buf == expected_band(&JOB, &report, 0), "band 0 differs");
            assert_eq!(host.pending_transfers(), 0);
        },
        LIMIT,
    )
    .unwrap();
}
