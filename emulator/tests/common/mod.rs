//! Helpers shared by the wire-level integration tests: a device on an in-process host, and the
//! native protocol's requests as a driver would send them.
#![allow(dead_code)]

use std::path::PathBuf;
use std::rc::Rc;

use scanemu::device::Device;
use scanemu::engine::{pattern_line, Fault, ScanJob};
use scanemu::host::inproc::InProcessHost;
use scanemu::host::{Setup, TransferError, UsbHost};
use scanemu::personality::native::protocol::*;
use scanemu::profile::Profile;
use scanemu::sim::Sim;
use scanemu::time::{Duration, Instant};

/// Timeout of every request that is expected to succeed.
pub const T: Duration = Duration::from_millis(1000);
/// Limit of virtual time for one test.
pub const LIMIT: Instant = Instant::from_millis(600_000);

/// `fixtures/profiles/NAME`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/profiles")
        .join(name)
}

/// Loads `fixtures/profiles/NAME`.
pub fn load(name: &str) -> Profile {
    Profile::load(&fixture(name)).expect("fixture profile loads")
}

/// A simulation and a host that has enumerated a device of `profile` with `faults`.
pub fn setup(profile: &Profile, faults: Vec<Fault>) -> (Sim, InProcessHost) {
    let sim = Sim::new();
    let mut device = Device::new(profile);
    device.set_faults(faults);
    let host = InProcessHost::new(device, Rc::new(sim.clone())).expect("enumerates");
    (sim, host)
}

/// SET_PARAMS, GET_PARAMS, START_SCAN.
pub async fn start(host: &dyn UsbHost, job: ScanJob) -> ParamsReport {
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

/// Get Device Status (0x67).
pub async fn device_status(host: &dyn UsbHost) -> DeviceStatus {
    let r = host
        .control_in(Setup::vendor_in(REQ_GET_DEVICE_STATUS, 0, 0, 8), T)
        .await
        .expect("GET_DEVICE_STATUS");
    DeviceStatus::decode(&r).unwrap()
}

/// GET_SCAN_STATUS.
pub async fn scan_status(host: &dyn UsbHost) -> ScanStatus {
    let r = host
        .control_in(
            Setup::vendor_in(REQ_GET_SCAN_STATUS, 0, 0, SCAN_STATUS_LEN as u16),
            T,
        )
        .await
        .expect("GET_SCAN_STATUS");
    ScanStatus::decode(&r).unwrap()
}

/// Cancel Request (0x64) with the Still Image cancellation code.
pub async fn cancel(host: &dyn UsbHost) -> Result<(), TransferError> {
    let mut payload = [0u8; 6];
    payload[..2].copy_from_slice(&CANCEL_CODE.to_le_bytes());
    host.control_out(Setup::vendor_out(REQ_CANCEL, 0, 0, 6), &payload, T)
        .await
}

/// Device Reset (0x66).
pub async fn device_reset(host: &dyn UsbHost) -> Result<(), TransferError> {
    host.control_out(Setup::vendor_out(REQ_DEVICE_RESET, 0, 0, 0), &[], T)
        .await
}

/// Reads one band (a transfer ended by its short packet or ZLP).
pub async fn read_band(
    host: &dyn UsbHost,
    report: &ParamsReport,
) -> Result<Vec<u8>, TransferError> {
    let mut buf = vec![0u8; report.band_bytes as usize];
    let n = host.bulk_in(EP_DATA_IN, &mut buf, T).await?;
    buf.truncate(n);
    Ok(buf)
}

/// The test pattern of `lines` lines of `page` from `first_line`.
pub fn expected(job: &ScanJob, page: u16, first_line: u32, lines: u32) -> Vec<u8> {
    let bpl = job.bytes_per_line() as usize;
    let mut out = vec![0u8; bpl * lines as usize];
    for (i, line) in out.chunks_mut(bpl).enumerate() {
        pattern_line(page, first_line + i as u32, line);
    }
    out
}

/// The bytes of band `k` of `page`.
pub fn expected_band(job: &ScanJob, report: &ParamsReport, page: u16, k: u32) -> Vec<u8> {
    let first = k * report.band_lines;
    let lines = report.band_lines.min(report.lines_per_page - first);
    expected(job, page, first, lines)
}

/// Starts `job` and checks its first band byte for byte: the device is ready for the next
/// transfer and nothing of an earlier scan is left in its pipe.
pub async fn next_scan_is_correct(host: &dyn UsbHost, job: ScanJob) {
    let report = start(host, job).await;
    let band = read_band(host, &report)
        .await
        .expect("first band of the new scan");
    assert_eq!(
        band,
        expected_band(&job, &report, 0, 0),
        "first band of the next scan"
    );
}

/// Reads every event waiting on the interrupt endpoint (until a read times out).
pub async fn drain_events(host: &dyn UsbHost) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        let mut buf = [0u8; 16];
        match host
            .interrupt_in(EP_EVENTS, &mut buf, Duration::from_millis(1))
            .await
        {
            Ok(n) => {
                assert_eq!(n, EVENT_LEN, "one 8-byte event per interrupt transfer");
                events.push(Event::decode(&buf[..n]).unwrap());
            }
            Err(TransferError::Timeout { actual: 0 }) => return events,
            Err(e) => panic!("interrupt IN failed: {e}"),
        }
    }
}

/// Sleeps until virtual time `at` (no-op if it has passed).
pub async fn sleep_until(host: &dyn UsbHost, at: Instant) {
    let now = host.now();
    if at > now {
        host.sleep(at - now).await;
    }
}

/// Collects the device notes a host reports.
#[derive(Default)]
pub struct Notes(pub std::cell::RefCell<Vec<scanemu::personality::DeviceNote>>);

impl scanemu::host::HostObserver for Notes {
    fn transfer(&self, _record: &scanemu::host::TransferRecord<'_>) {}
    fn device(&self, note: &scanemu::personality::DeviceNote) {
        self.0.borrow_mut().push(note.clone());
    }
}

impl Notes {
    /// Starts collecting the notes of `host`.
    pub fn attach(host: &InProcessHost) -> Rc<Notes> {
        let notes = Rc::new(Notes::default());
        host.set_note_observer(notes.clone());
        notes
    }

    /// `(what, detail)` of every note so far.
    pub fn names(&self) -> Vec<(&'static str, String)> {
        self.0
            .borrow()
            .iter()
            .map(|n| (n.kind.name(), n.detail.to_string()))
            .collect()
    }
}

/// Polls two futures to completion on one task.
pub async fn join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    let mut a = Box::pin(a);
    let mut b = Box::pin(b);
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none() {
            if let std::task::Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let std::task::Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        if ra.is_some() && rb.is_some() {
            std::task::Poll::Ready((ra.take().unwrap(), rb.take().unwrap()))
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// A proxy's first steps between a USB/IP client and `server`: accepts the client on
/// `listener`, connects to the server and forwards the import (`OP_REQ_IMPORT`, 40 bytes up;
/// `OP_REP_IMPORT`, 8 + 312 bytes down). Returns the client's and the server's streams.
pub fn proxy_import(
    listener: &std::net::TcpListener,
    server: std::net::SocketAddr,
) -> (std::net::TcpStream, std::net::TcpStream) {
    use std::io::{Read, Write};
    let (mut client, _) = listener.accept().unwrap();
    let mut upstream = std::net::TcpStream::connect(server).unwrap();
    let mut req = [0u8; 40];
    client.read_exact(&mut req).unwrap();
    upstream.write_all(&req).unwrap();
    let mut rep = [0u8; 8 + 312];
    upstream.read_exact(&mut rep).unwrap();
    client.write_all(&rep).unwrap();
    (client, upstream)
}
