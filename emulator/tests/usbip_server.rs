//! The USB/IP server under peers that misbehave, with several devices, and at shutdown.
//!
//! - `scanemu serve` under `ulimit -n 64` with idle, half-open, garbage-sending and flooding
//!   clients keeps serving a well-behaved client byte-exact, uses (almost) no CPU while the
//!   idle clients hang, keeps its memory bounded and its log small.
//! - Eight devices of one server are imported and scanned by eight clients at once; Debian's
//!   `usbip list -r` lists them all.
//! - Long multi-band scans streamed in 64 KiB URBs from four devices at once arrive byte for
//!   byte as the test pattern, with bands that end in a short packet and bands that end in a
//!   zero-length packet.
//! - SIGTERM with URBs in flight: each pending URB completes `-ESHUTDOWN`, the server exits 143,
//!   and its capture holds a completion or an error record for every submitted URB (URBs left
//!   by a client that disconnected complete `-ENOENT`, a submission with no device is an `E`
//!   record with `-ENODEV`), read back by our parser and by tshark. SIGINT after a client's
//!   scan: exit status 130, the capture and the device trace complete, one line naming them.
//!   The same for a signal that comes while the devices still enumerate.
//! - A port another server holds is bad input: exit status 2, one line naming the address.
//!
//! Nothing here asserts wall time: waits are bounded only to fail instead of hanging, and the
//! CPU check compares the server's CPU time with the wall time of the same window.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::Duration as StdDuration;

use scanemu::engine::{pattern_line, ScanJob, ScanMode, ScanSource};
use scanemu::host::usbip::{list_devices, UsbIpHost};
use scanemu::host::{Setup, UsbHost};
use scanemu::personality::native::protocol::*;
use scanemu::profile::Profile;
use scanemu::sim::Sim;
use scanemu::time::{Duration, Instant};
use scanemu::usbip::protocol::{
    encode_busid, errno, CmdSubmit, DeviceRecord, OpHeader, Reply, DIR_IN, OP_REQ_IMPORT,
};
use scanemu::usbip::{default_busid, DeviceSpec, ServerConfig, UsbIpServer};

const T: Duration = Duration::from_millis(5000);
const LIMIT: Instant = Instant::from_millis(120_000);

const JOB: ScanJob = ScanJob {
    resolution_dpi: 100,
    mode: ScanMode::Gray8,
    x_px: 0,
    y_px: 0,
    width_px: 200,
    height_px: 120,
    source: ScanSource::Flatbed,
    pages: 1,
};

/// A whole scan through `host`, every band compared with the test pattern.
async fn scan_byte_exact(host: &dyn UsbHost) {
    let params = ScanParams { job: JOB }.encode();
    host.control_out(Setup::vendor_out(REQ_SET_PARAMS, 0, 0, 0), &params, T)
        .await
        .expect("SET_PARAMS");
    let r = host
        .control_in(
            Setup::vendor_in(REQ_GET_PARAMS, 0, 0, PARAMS_REPORT_LEN as u16),
            T,
        )
        .await
        .expect("GET_PARAMS");
    let report = ParamsReport::decode(&r).expect("params report");
    host.control_out(Setup::vendor_out(REQ_START_SCAN, 0, 0, 0), &[], T)
        .await
        .expect("START_SCAN");
    let bpl = JOB.bytes_per_line() as usize;
    for k in 0..report.bands_per_page {
        let mut buf = vec![0u8; report.band_bytes as usize];
        let n = host.bulk_in(EP_DATA_IN, &mut buf, T).await.expect("band");
        buf.truncate(n);
        let first = k * report.band_lines;
        let lines = report.band_lines.min(report.lines_per_page - first);
        let mut want = vec![0u8; bpl * lines as usize];
        for (i, line) in want.chunks_mut(bpl).enumerate() {
            pattern_line(0, first + i as u32, line);
        }
        assert!(buf == want, "band {k} differs");
    }
}

/// Imports `busid` with the USB/IP client host and scans byte-exact.
fn client_scans(addr: SocketAddr, busid: &str) {
    let sim = Sim::realtime();
    let host = UsbIpHost::connect(addr, busid, Rc::new(sim.clone()))
        .unwrap_or_else(|e| panic!("import of {busid}: {e}"));
    sim.block_on(async move { scan_byte_exact(&host).await }, LIMIT)
        .unwrap_or_else(|e| panic!("scan of {busid}: {e}"));
}

/// A `scanemu serve` process, its address and the file its log goes to.
struct Served {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Served {
    /// Starts `scanemu serve --usbip 127.0.0.1:0 ARGS`, under `ulimit -n FD_LIMIT` if given.
    fn start(name: &str, args: &[&str], fd_limit: Option<u32>) -> Served {
        let exe = env!("CARGO_BIN_EXE_scanemu");
        let log = scratch(&format!("{name}.log"));
        let mut cmd = match fd_limit {
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.args(["serve", "--usbip", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let mut child = cmd.spawn().expect("scanemu starts");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("first line");
        let addr = line
            .split_whitespace()
            .find_map(|w| w.parse::<SocketAddr>().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        // Keep reading stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink);
        });
        Served { child, addr, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// utime + stime of the server, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("stat");
        // Fields after the command name, which ends with the last ')'.
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
    }

    fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS")
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(ok.success(), "kill {sig} failed");
    }

    /// Waits (bounded) for the process to exit; its exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        for _ in 0..300 {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s.code();
            }
            std::thread::sleep(StdDuration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("scanemu did not exit within 15 s of the signal");
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("scanemu-usbip-server-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

/// A USB/IP peer speaking the URB protocol by hand.
struct Raw {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    devid: u32,
}

impl Raw {
    fn import(addr: SocketAddr, busid: &str) -> Raw {
        for _ in 0..200 {
            let mut stream = TcpStream::connect(addr).expect("connects");
            stream
                .set_read_timeout(Some(StdDuration::from_secs(10)))
                .expect("timeout");
            let mut req = OpHeader::new(OP_REQ_IMPORT, 0).encode().to_vec();
            req.extend_from_slice(&encode_busid(busid).expect("busid"));
            stream.write_all(&req).expect("import");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let h = OpHeader::read(&mut reader).expect("import reply");
            if h.status == 0 {
                let rec = DeviceRecord::read(&mut reader).expect("record");
                return Raw {
                    stream,
                    reader,
                    devid: rec.devid(),
                };
            }
            assert_eq!(h.status, 2, "only a busy device refuses");
            std::thread::sleep(StdDuration::from_millis(20));
        }
        panic!("{busid} stayed busy");
    }

    fn submit(&mut self, seqnum: u32, ep: u32, len: u32, setup: [u8; 8], devid: u32) {
        let mut b = Vec::new();
        CmdSubmit {
            seqnum,
            devid,
            direction: DIR_IN,
            ep,
            transfer_flags: 0,
            transfer_buffer_length: len,
            start_frame: 0,
            number_of_packets: 0,
            interval: 0,
            setup,
            data: Vec::new(),
        }
        .write(&mut b)
        .expect("encode");
        self.stream.write_all(&b).expect("send");
    }

    fn reply(&mut self) -> Option<Reply> {
        Reply::read(&mut self.reader, |_| Some(1 << 20)).ok()
    }
}

#[test]
fn idle_half_open_flooding_and_hostile_clients_under_64_descriptors() {
    let mut served = Served::start(
        "hostile",
        &["--devices", "2", "--handshake-timeout-ms", "120000"],
        Some(64),
    );
    let addr = served.addr;
    // Twice as many silent connections as the server has descriptors.
    let idle: Vec<TcpStream> = (0..128)
        .map(|_| TcpStream::connect(addr).expect("idle connects"))
        .collect();
    // Half-open operations: the start of a header, then nothing.
    let half: Vec<TcpStream> = (0..16)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("half-open connects");
            let _ = s.write_all(&[0x01, 0x11, 0x80]);
            s
        })
        .collect();
    // Garbage before import.
    for _ in 0..16 {
        if let Ok(mut s) = TcpStream::connect(addr) {
            let _ = s.write_all(&[0xff; 64]);
        }
    }
    // A flood after import: far more URBs than the server keeps pending, never reading.
    let mut flood = Raw::import(addr, "1-2");
    let mut burst = Vec::new();
    for seq in 1..=3000u32 {
        CmdSubmit {
            seqnum: seq,
            devid: flood.devid,
            direction: DIR_IN,
            ep: 1,
            transfer_flags: 0,
            transfer_buffer_length: 65536,
            start_frame: 0,
            number_of_packets: 0,
            interval: 0,
            setup: [0; 8],
            data: Vec::new(),
        }
        .write(&mut burst)
        .expect("encode");
    }
    let _ = flood.stream.write_all(&burst);
    // The flooder is cut off: its stream ends (cleanly or reset), it does not time out.
    let mut sink = Vec::new();
    let end = flood.stream.read_to_end(&mut sink);
    assert!(
        end.as_ref().map_or_else(
            |e| e.kind() == std::io::ErrorKind::ConnectionReset,
            |_| true
        ),
        "the flood was not cut off: {end:?}"
    );

    // The well-behaved client scans while all of the above hang.
    client_scans(addr, "1-1");
    // And the device the flooder held is free again.
    client_scans(addr, "1-2");

    // While the idle clients hang, the server does (almost) nothing.
    std::thread::sleep(StdDuration::from_millis(300));
    let before = served.cpu_ticks();
    let window = std::time::Instant::now();
    std::thread::sleep(StdDuration::from_secs(2));
    let ticks = served.cpu_ticks() - before;
    let wall_ticks = window.elapsed().as_millis() as u64 / 10;
    assert!(
        ticks * 10 <= wall_ticks,
        "the server used {ticks} ticks of CPU in {wall_ticks} ticks of wall time while clients idled"
    );
    let rss = served.rss_kib();
    assert!(rss < 128 * 1024, "server RSS {rss} KiB");
    drop(idle);
    drop(half);

    served.signal("-TERM");
    assert_eq!(served.wait_exit(), Some(143), "exit status after SIGTERM");
    let log = served.log_text();
    assert!(
        log.len() < 32 * 1024,
        "log of {} bytes:\n{}",
        log.len(),
        &log[..log.len().min(4000)]
    );
    assert!(
        log.contains("backing off"),
        "the descriptor limit was never hit:\n{log}"
    );
    assert!(log.contains("SIGTERM"), "{log}");
}

#[test]
fn at_the_connection_cap_idle_connections_make_room_and_importers_keep_theirs() {
    let specs = (0..2)
        .map(|i| DeviceSpec::new(Profile::builtin_fast(), default_busid(i)))
        .collect();
    let mut config = ServerConfig::with_devices(specs);
    config.max_connections = 4;
    let server = UsbIpServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config).expect("binds");
    let addr = server.local_addr();
    // Ten silent connections against a cap of four: the oldest are closed to make room.
    let idle: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect(addr).expect("connects"))
        .collect();
    client_scans(addr, "1-1");
    assert!(server.stats().evicted >= 6, "{:?}", server.stats());
    // Two importers hold both devices; with the cap at four and two more silent
    // connections, a newcomer closes a silent one, never an importer.
    let a = Raw::import(addr, "1-1");
    let b = Raw::import(addr, "1-2");
    let newcomer = TcpStream::connect(addr).expect("connects");
    drop(newcomer);
    for mut r in [a, b] {
        r.submit(1, 0, 2, [0x80, 0, 0, 0, 0, 0, 2, 0], r.devid);
        match r.reply() {
            Some(Reply::Submit(ret)) => assert_eq!(ret.status, 0),
            other => panic!("an importer lost its connection: {other:?}"),
        }
    }
    drop(idle);

    // Every slot holds a device: a new connection is closed at once.
    let specs = (0..2)
        .map(|i| DeviceSpec::new(Profile::builtin_fast(), default_busid(i)))
        .collect();
    let mut config = ServerConfig::with_devices(specs);
    config.max_connections = 2;
    let server = UsbIpServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config).expect("binds");
    let _a = Raw::import(server.local_addr(), "1-1");
    let _b = Raw::import(server.local_addr(), "1-2");
    let mut refused = TcpStream::connect(server.local_addr()).expect("connects");
    refused
        .set_read_timeout(Some(StdDuration::from_secs(10)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    let end = refused.read(&mut byte);
    assert!(
        matches!(end, Ok(0))
            || end
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{end:?}"
    );
    assert_eq!(server.stats().refused, 1, "{:?}", server.stats());
}

#[test]
fn eight_devices_import_and_scan_at_once() {
    let profile = Profile::builtin_fast();
    let specs = (0..8)
        .map(|i| DeviceSpec::new(profile.clone(), default_busid(i)))
        .collect();
    let server = UsbIpServer::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        ServerConfig::with_devices(specs),
    )
    .expect("binds");
    let addr = server.local_addr();
    let list = list_devices(addr).expect("devlist");
    let busids: Vec<&str> = list.iter().map(|d| d.record.busid.as_str()).collect();
    assert_eq!(
        busids,
        ["1-1", "1-2", "1-3", "1-4", "1-5", "1-6", "1-7", "1-8"]
    );
    let devids: std::collections::BTreeSet<u32> = list.iter().map(|d| d.record.devid()).collect();
    assert_eq!(devids.len(), 8, "every device has its own devid");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                client_scans(addr, &default_busid(i));
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client failed");
    }
    let stats = server.stats();
    assert_eq!(stats.imports, 8, "{stats:?}");
    assert_eq!(stats.protocol_errors, 0, "{stats:?}");

    // Debian's client lists every device.
    if Command::new("usbip").arg("version").output().is_err() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "usbip is not installed (apt-get install usbip); CI must have it"
        );
        eprintln!("skipped `usbip list`: the usbip tool is not installed");
        return;
    }
    let out = Command::new("usbip")
        .args([
            "--tcp-port",
            &addr.port().to_string(),
            "list",
            "-r",
            "127.0.0.1",
        ])
        .output()
        .expect("usbip runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for i in 0..8 {
        let busid = default_busid(i);
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{busid}:"))),
            "{busid} missing from `usbip list`:\n{text}"
        );
    }
}

/// Streams a whole page of `job` through `host` in 64 KiB bulk reads (two in flight), and
/// compares every byte with the test pattern, line by line; returns the bytes read.
async fn stream_byte_exact(host: &UsbIpHost, job: ScanJob) -> u64 {
    let params = ScanParams { job }.encode();
    host.control_out(Setup::vendor_out(REQ_SET_PARAMS, 0, 0, 0), &params, T)
        .await
        .expect("SET_PARAMS");
    host.control_out(Setup::vendor_out(REQ_START_SCAN, 0, 0, 0), &[], T)
        .await
        .expect("START_SCAN");
    let bpl = job.bytes_per_line() as usize;
    let total = bpl as u64 * u64::from(job.height_px);
    let mut line = vec![0u8; bpl];
    let mut got = 0u64;
    let (mut a, mut b) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    while got < total {
        // Two URBs in flight (the second queued behind the first on the endpoint) while the
        // page has data for both; one at the end.
        let reads = if total - got >= 2 * a.len() as u64 {
            let (ra, rb) = futures_join(
                host.bulk_in(EP_DATA_IN, &mut a, T),
                host.bulk_in(EP_DATA_IN, &mut b, T),
            )
            .await;
            vec![(&a, ra.expect("bulk IN")), (&b, rb.expect("bulk IN"))]
        } else {
            let n = host.bulk_in(EP_DATA_IN, &mut a, T).await.expect("bulk IN");
            vec![(&a, n)]
        };
        for (buf, n) in reads {
            for (i, &byte) in buf[..n].iter().enumerate() {
                let at = got + i as u64;
                let (l, x) = ((at / bpl as u64) as u32, (at % bpl as u64) as usize);
                if x == 0 || i == 0 {
                    pattern_line(0, l, &mut line);
                }
                if byte != line[x] {
                    panic!(
                        "byte {at} (line {l}, offset {x}) is {byte:#04x}, the pattern has {:#04x}",
                        line[x]
                    );
                }
            }
            got += n as u64;
            if got >= total {
                break;
            }
        }
    }
    assert_eq!(got, total, "the page's bytes");
    got
}

/// Both futures, run together on the current task.
async fn futures_join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none() {
            if let std::task::Poll::Ready(r) = a.as_mut().poll(cx) {
                ra = Some(r);
            }
        }
        if rb.is_none() {
            if let std::task::Poll::Ready(r) = b.as_mut().poll(cx) {
                rb = Some(r);
            }
        }
        if ra.is_some() && rb.is_some() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    (ra.expect("ready"), rb.expect("ready"))
}

#[test]
fn long_scans_from_four_devices_at_once_arrive_byte_for_byte() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/profiles/a4-flatbed-1200.json");
    let profile = Profile::load(&path).expect("profile loads");
    let specs = (0..4)
        .map(|i| DeviceSpec::new(profile.clone(), default_busid(i)))
        .collect();
    let server = UsbIpServer::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        ServerConfig::with_devices(specs),
    )
    .expect("binds");
    let addr = server.local_addr();
    let job = |mode, width_px, height_px| ScanJob {
        resolution_dpi: 1200,
        mode,
        x_px: 0,
        y_px: 0,
        width_px,
        height_px,
        source: ScanSource::Flatbed,
        pages: 1,
    };
    let jobs = [
        // 5997-byte lines: packets straddle lines, 64-line bands end in a short packet.
        job(ScanMode::Color24, 1999, 2800),
        // 1024-byte lines: every band is whole packets and ends in a zero-length packet.
        job(ScanMode::Gray8, 1024, 4000),
        job(ScanMode::Color48, 1001, 1200),
        job(ScanMode::Color24, 9920, 800),
    ];
    let want: u64 = jobs
        .iter()
        .map(|j| j.bytes_per_line() * u64::from(j.height_px))
        .sum();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(jobs.len()));
    let threads: Vec<_> = jobs
        .into_iter()
        .enumerate()
        .map(|(i, job)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let sim = Sim::realtime();
                let busid = default_busid(i);
                let host = UsbIpHost::connect(addr, &busid, Rc::new(sim.clone()))
                    .unwrap_or_else(|e| panic!("import of {busid}: {e}"));
                barrier.wait();
                sim.block_on(async move { stream_byte_exact(&host, job).await }, LIMIT)
                    .unwrap_or_else(|e| panic!("scan of {busid}: {e}"))
            })
        })
        .collect();
    let got: u64 = threads
        .into_iter()
        .map(|t| t.join().expect("a client failed"))
        .sum();
    assert_eq!(got, want, "bytes of the four pages");
    assert_eq!(server.stats().protocol_errors, 0);
}

/// One usbmon record: (URB id, event type, status).
fn records(pcap: &[u8]) -> Vec<(u64, u8, i32)> {
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    assert!(pcap.len() >= 24, "no pcap header");
    assert_eq!(u32_at(pcap, 20), 220, "link type");
    let mut at = 24;
    let mut out = Vec::new();
    while at + 16 <= pcap.len() {
        let incl = u32_at(pcap, at + 8) as usize;
        let h = &pcap[at + 16..at + 16 + incl];
        out.push((
            u64::from_le_bytes(h[0..8].try_into().unwrap()),
            h[8],
            u32_at(h, 28) as i32,
        ));
        at += 16 + incl;
    }
    assert_eq!(at, pcap.len(), "a record is cut short");
    out
}

#[test]
fn sigterm_with_urbs_in_flight_completes_them_and_the_capture() {
    let pcap = scratch("shutdown.pcap");
    let mut served = Served::start(
        "shutdown",
        &[
            "--devices",
            "2",
            "--pcap",
            pcap.to_str().expect("utf-8 path"),
        ],
        None,
    );
    let addr = served.addr;
    let get_status = [0x80, 0, 0, 0, 0, 0, 2, 0];

    // Client A: a completed request, a submission for another device, two pending reads.
    let mut a = Raw::import(addr, "1-1");
    let devid = a.devid;
    a.submit(1, 0, 2, get_status, devid);
    a.submit(2, 0, 2, get_status, devid ^ 0xff);
    for seq in 1..=2 {
        match a.reply() {
            Some(Reply::Submit(r)) => {
                let want = if seq == 1 { 0 } else { -errno::ENODEV };
                assert_eq!((r.seqnum, r.status), (seq, want));
            }
            other => panic!("expected RET_SUBMIT {seq}, got {other:?}"),
        }
    }
    a.submit(3, 1, 512, [0; 8], devid);
    a.submit(4, 3, 16, [0; 8], devid);

    // Client B leaves a read pending and disconnects.
    let mut b = Raw::import(addr, "1-2");
    b.submit(1, 1, 512, [0; 8], b.devid);
    drop(b);
    // Its device is released once its session has ended.
    drop(Raw::import(addr, "1-2"));

    std::thread::sleep(StdDuration::from_millis(100));
    served.signal("-TERM");
    let mut pending = Vec::new();
    while let Some(reply) = a.reply() {
        match reply {
            Reply::Submit(r) => pending.push((r.seqnum, r.status)),
            other => panic!("unexpected {other:?}"),
        }
    }
    pending.sort_unstable();
    assert_eq!(
        pending,
        [(3, -errno::ESHUTDOWN), (4, -errno::ESHUTDOWN)],
        "pending URBs at shutdown"
    );
    assert_eq!(served.wait_exit(), Some(143), "exit status after SIGTERM");
    let log = served.log_text();
    assert_eq!(
        log.lines()
            .filter(|l| l.starts_with("scanemu: stopped by SIGTERM; wrote capture "))
            .count(),
        1,
        "one line says what was written:\n{log}"
    );

    let bytes = std::fs::read(&pcap).expect("capture written");
    let recs = records(&bytes);
    let mut by_id: std::collections::BTreeMap<u64, Vec<(u8, i32)>> = Default::default();
    for (id, kind, status) in &recs {
        by_id.entry(*id).or_default().push((*kind, *status));
    }
    for (id, events) in &by_id {
        assert_eq!(events.len(), 2, "URB {id:#x}: {events:?}");
        assert_eq!(events[0], (b'S', -115), "URB {id:#x}: {events:?}");
        assert!(
            matches!(events[1].0, b'C' | b'E'),
            "URB {id:#x}: {events:?}"
        );
    }
    let ends: Vec<(u8, i32)> = by_id.values().map(|e| e[1]).collect();
    let count = |kind: u8, status: i32| ends.iter().filter(|e| **e == (kind, status)).count();
    assert_eq!(count(b'E', -errno::ENODEV), 1, "{ends:?}");
    assert_eq!(count(b'C', -errno::ESHUTDOWN), 2, "{ends:?}");
    assert_eq!(count(b'C', -errno::ENOENT), 1, "{ends:?}");
    assert!(count(b'C', 0) >= 1, "{ends:?}");
    assert!(
        !ends.iter().any(|e| e.1 == -110),
        "no URB status is -ETIMEDOUT: {ends:?}"
    );
    tshark_agrees(&pcap, &recs);
}

/// tshark reads the capture without warnings and sees the same types and statuses.
fn tshark_agrees(pcap: &Path, recs: &[(u64, u8, i32)]) {
    if Command::new("tshark").arg("--version").output().is_err() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "tshark is missing (apt-get install tshark); CI must run this check"
        );
        eprintln!("skipped the tshark check: tshark is not installed");
        return;
    }
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-Y", "_ws.malformed || _ws.expert.severity >= warning"])
        .output()
        .expect("tshark runs");
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "tshark warns:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-T", "fields", "-e", "usb.urb_type", "-e", "usb.urb_status"])
        .output()
        .expect("tshark runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let seen: Vec<(String, i32)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let kind = f.next()?.trim_matches('\'').to_string();
            let status = f.next()?.parse().ok()?;
            Some((kind, status))
        })
        .collect();
    let ours: Vec<(String, i32)> = recs
        .iter()
        .map(|(_, k, s)| ((*k as char).to_string(), *s))
        .collect();
    assert_eq!(seen, ours, "tshark reads other types or statuses:\n{text}");
}

#[test]
fn sigint_after_a_scan_exits_130_with_the_capture_and_trace_complete() {
    let pcap = scratch("sigint.pcap");
    let trace = scratch("sigint.jsonl");
    let mut served = Served::start(
        "sigint",
        &[
            "--pcap",
            pcap.to_str().expect("utf-8 path"),
            "--trace",
            trace.to_str().expect("utf-8 path"),
        ],
        None,
    );
    client_scans(served.addr, "1-1");
    // A second client is still attached, a read pending, when the signal comes.
    let mut a = Raw::import(served.addr, "1-1");
    a.submit(1, 1, 512, [0; 8], a.devid);
    served.signal("-INT");
    assert_eq!(served.wait_exit(), Some(130), "exit status after SIGINT");
    let log = served.log_text();
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("scanemu: stopped by SIGINT"))
        .collect();
    assert_eq!(said.len(), 1, "one line says what was written:\n{log}");
    assert!(
        said[0].contains(&pcap.display().to_string())
            && said[0].contains(&trace.display().to_string()),
        "{}",
        said[0]
    );
    // Every URB submitted has its end in the capture, and no record is cut short.
    let recs = records(&std::fs::read(&pcap).expect("capture written"));
    let submitted = recs.iter().filter(|r| r.1 == b'S').count();
    let ended = recs.iter().filter(|r| matches!(r.1, b'C' | b'E')).count();
    assert!(submitted > 10, "the scan was captured: {submitted} URBs");
    assert_eq!(submitted, ended, "every URB completes in the capture");
    // The device trace is whole JSON lines, the scan's notes among them.
    let notes = std::fs::read_to_string(&trace).expect("trace written");
    assert!(notes.ends_with('\n'), "the trace ends with a whole line");
    for line in notes.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    }
    assert!(notes.contains("motor-stopped") || notes.contains("scan-complete"));
}

/// A signal that comes while 64 devices enumerate, before the server is up: sent as soon as
/// the capture file exists (the server creates it just before it binds), it still gets the
/// graceful shutdown, its exit status, its line and a whole capture file, each time.
#[test]
fn a_signal_while_the_devices_enumerate_still_shuts_down_gracefully() {
    for (sig, name, code) in [("-INT", "SIGINT", 130), ("-TERM", "SIGTERM", 143)] {
        for round in 0..5 {
            let pcap = scratch(&format!("early-{name}-{round}.pcap"));
            let _ = std::fs::remove_file(&pcap);
            let log = scratch(&format!("early-{name}-{round}.log"));
            let mut child = Command::new(env!("CARGO_BIN_EXE_scanemu"))
                .args([
                    "serve",
                    "--usbip",
                    "127.0.0.1:0",
                    "--devices",
                    "64",
                    "--pcap",
                ])
                .arg(&pcap)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .expect("scanemu starts");
            let mut waited = 0;
            while !pcap.exists() {
                assert!(waited < 100_000, "no capture file after 10 s");
                std::thread::sleep(StdDuration::from_micros(100));
                waited += 1;
            }
            let ok = Command::new("kill")
                .args([sig, &child.id().to_string()])
                .status()
                .expect("kill runs");
            assert!(ok.success(), "kill {sig} failed");
            let mut status = None;
            for _ in 0..300 {
                status = child.try_wait().expect("try_wait");
                if status.is_some() {
                    break;
                }
                std::thread::sleep(StdDuration::from_millis(50));
            }
            let Some(status) = status else {
                let _ = child.kill();
                panic!("scanemu did not exit within 15 s of {name}");
            };
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert_eq!(
                status.code(),
                Some(code),
                "{name}, round {round}: {status}\n{text}"
            );
            let said = text
                .lines()
                .filter(|l| l.starts_with(&format!("scanemu: stopped by {name}; wrote capture")))
                .count();
            assert_eq!(said, 1, "{name}, round {round}: one line says so:\n{text}");
            records(&std::fs::read(&pcap).expect("capture written"));
        }
    }
}

#[test]
fn a_port_in_use_is_bad_input() {
    let served = Served::start("holder", &[], None);
    let out = Command::new(env!("CARGO_BIN_EXE_scanemu"))
        .args(["serve", "--usbip", &served.addr.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("scanemu runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("--usbip {}", served.addr)) && err.contains("in use"),
        "{err}"
    );
}
