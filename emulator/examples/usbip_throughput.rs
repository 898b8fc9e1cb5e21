//! USB/IP loopback throughput and latency of the emulated scanner, side by side with raw
//! loopback TCP measured in the same run.
//!
//! Run: `cargo run --release -p scanemu --example usbip_throughput` (scripts/bench runs it and
//! reads the JSON object it prints last).
//!
//! Serves `fixtures/profiles/a4-flatbed-1200.json` (bus speed "unlimited", 10 us per line, so
//! the device is not the bottleneck) on 127.0.0.1 and measures, each figure beside the raw TCP
//! figure it is compared with:
//! - control round trip: GET_DEVICE_STATUS (a 3-stage control transfer) from a blocking
//!   client, against a 48-byte ping-pong with a blocking echo thread;
//! - 64 KiB bulk IN, one URB in flight, from a blocking client, against a 48-byte request
//!   answered by 48 + 64 KiB from a blocking thread; and, for reference, against the same
//!   responder copying 64 KiB of other bytes into its reply before each answer, as any
//!   server sending data it just produced does (the plain responder sends the same bytes
//!   every time, which the kernel copies faster), and against one that produces each reply
//!   as the emulated device must at the least (the scan engine renders it, and it is copied
//!   once, as a usb-device endpoint write copies it): the most any server built on the device
//!   model could reach;
//! - for each 64 KiB figure, the CPU time per transfer of the answering side (the server's
//!   threads, or the responder's thread) and of the asking side (the client's thread), from
//!   `/proc/self/task/*/schedstat` and the thread's CPU clock: unlike a rate, it does not move
//!   with what else the machine runs, and it says which side a difference in the rates is on;
//! - 8 devices of one server streaming at once (one client thread each, one URB in flight),
//!   against one device streamed alone the same way;
//! - for reference, the same figures through [`UsbIpHost`] (a reader thread and a waker per
//!   URB, as drivers use it) and a raw client keeping 8 URBs in flight.
//!
//! `USBIP_WORKERS=N` sets the server's worker threads (`ServerConfig::worker_threads`).
//!
//! `USBIP_PLACEMENT` chooses where the threads run, the same for both sides of every
//! comparison: `free` (default: wherever the scheduler puts them), `same` (every thread on
//! the first CPU allowed) or `split` (clients on the first CPU, the server's threads and the
//! raw responders on the second). Where two threads wake each other, the figures depend on
//! it: on a virtual machine a wake-up that crosses to an idle CPU can cost tens of
//! microseconds, one on the waker's own CPU a few.

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::time::Instant as WallInstant;

use scanemu::engine::{ScanJob, ScanMode, ScanSource};
use scanemu::host::usbip::UsbIpHost;
use scanemu::host::{Setup, UsbHost};
use scanemu::personality::native::protocol::*;
use scanemu::profile::Profile;
use scanemu::sim::Sim;
use scanemu::time::{Duration, Instant};
use scanemu::usbip::protocol::{
    encode_busid, CmdSubmit, DeviceRecord, OpHeader, DIR_IN, DIR_OUT, OP_REQ_IMPORT, URB_DIR_IN,
    URB_HEADER_LEN,
};
use scanemu::usbip::{default_busid, DeviceSpec, ServerConfig, UsbIpServer};

const CHUNK: usize = 64 * 1024;
const T: Duration = Duration::from_secs(5);
/// Rounds of each comparison: every round measures both sides, one right after the other, and
/// the figure reported is the median of the rounds' ratios, so load from other processes that
/// comes and goes cancels out.
const ROUNDS: usize = 9;
/// Round trips per round.
const ROUND_TRIPS: usize = 500;
/// 64 KiB transfers per round (a 1200-dpi colour A4 page holds about 6400).
const TRANSFERS: usize = 300;
/// 64 KiB transfers per device and phase of the many-device rounds (the first device reads
/// twice that per round, within one page).
const MANY_TRANSFERS: usize = 200;
/// Devices streaming at once.
const DEVICES: usize = 8;

/// Width of the scan: a colour A4 page at 1200 dpi. A band of the profile's 64 lines is then
/// 29.06 transfers of 64 KiB, so one URB in 30 ends early with the band's last 4 KiB, as a
/// driver reading bands sees: the USB/IP figure counts the bytes that arrive, about 3% fewer
/// per round trip than the raw replies carry. No width avoids it: a band of whole 64 KiB
/// transfers ends with a zero-length packet, which the next URB receives alone.
const WIDTH_PX: u32 = 9920;

fn job() -> ScanJob {
    ScanJob {
        resolution_dpi: 1200,
        mode: ScanMode::Color24,
        x_px: 0,
        y_px: 0,
        width_px: WIDTH_PX,
        height_px: 14032,
        source: ScanSource::Flatbed,
        pages: 1,
    }
}

/// Where the threads of a run are placed; see the module documentation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    Free,
    Same,
    Split,
}

impl Placement {
    /// `USBIP_PLACEMENT`, or the one error line that names a value it cannot be.
    fn try_from_env() -> Result<Placement, String> {
        match std::env::var("USBIP_PLACEMENT").as_deref() {
            Ok("same") => Ok(Placement::Same),
            Ok("split") => Ok(Placement::Split),
            Ok("free") | Err(_) => Ok(Placement::Free),
            Ok(other) => Err(format!(
                "usbip_throughput: USBIP_PLACEMENT={other:?}: expected free, same or split"
            )),
        }
    }

    /// `USBIP_PLACEMENT`, which `main` checked before starting any thread.
    fn from_env() -> Placement {
        Placement::try_from_env().unwrap_or(Placement::Free)
    }

    fn name(self) -> &'static str {
        match self {
            Placement::Free => "free",
            Placement::Same => "same",
            Placement::Split => "split",
        }
    }

    /// The CPUs for clients and for servers, or `None` to leave threads where they are.
    fn cpus(self) -> Option<(usize, usize)> {
        // The CPUs the process was allowed when it started, before any thread was pinned.
        static ALLOWED: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();
        let allowed = ALLOWED.get_or_init(|| {
            let set = rustix::thread::sched_getaffinity(None).expect("affinity");
            (0..rustix::thread::CpuSet::MAX_CPU)
                .filter(|&c| set.is_set(c))
                .collect()
        });
        let mut cpus = allowed.iter().copied();
        let first = cpus.next().expect("a CPU");
        match self {
            Placement::Free => None,
            Placement::Same => Some((first, first)),
            // With one CPU allowed, split is all it can be: the same.
            Placement::Split => Some((first, cpus.next().unwrap_or(first))),
        }
    }

    /// Pins the calling thread (and the threads it starts) where clients run.
    fn client(self) {
        if let Some((c, _)) = self.cpus() {
            pin(c);
        }
    }

    /// Pins the calling thread (and the threads it starts) where servers run.
    fn server(self) {
        if let Some((_, s)) = self.cpus() {
            pin(s);
        }
    }
}

/// Pins the calling thread (and the threads it starts from now on) to `cpu`.
fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).expect("pins");
}

fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

/// CPU time so far, in nanoseconds, of this process's threads named one of `names` (the
/// first field of `/proc/self/task/*/schedstat`: time spent on a CPU). Unlike a rate, it
/// does not depend on what else the machine runs.
fn cpu_ns(names: &[&str]) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| names.contains(&c.trim_end()))
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// CPU time so far of the calling thread, in nanoseconds.
fn own_cpu_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

/// The threads of the USB/IP server.
const SERVER_THREADS: &[&str] = &["usbip-server", "usbip-worker"];

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn p99(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) * 99 / 100]
}

/// A blocking USB/IP client that speaks the URB protocol by hand, with no thread or
/// allocation per URB: the client side of the comparison costs what the raw TCP client costs.
struct RawClient {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    devid: u32,
    seq: u32,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl RawClient {
    fn import(addr: SocketAddr, busid: &str) -> RawClient {
        let mut stream = TcpStream::connect(addr).expect("connects");
        stream.set_nodelay(true).expect("nodelay");
        let mut req = OpHeader::new(OP_REQ_IMPORT, 0).encode().to_vec();
        req.extend_from_slice(&encode_busid(busid).expect("busid"));
        stream.write_all(&req).expect("import");
        let mut reader = BufReader::with_capacity(1 << 20, stream.try_clone().expect("clone"));
        let h = OpHeader::read(&mut reader).expect("reply");
        assert_eq!(h.status, 0, "import of {busid} refused");
        let rec = DeviceRecord::read(&mut reader).expect("record");
        RawClient {
            stream,
            reader,
            devid: rec.devid(),
            seq: 0,
            buf: vec![0; CHUNK],
            out: Vec::with_capacity(256),
        }
    }

    /// Sends one URB and reads its reply; returns (status, actual length).
    fn urb(&mut self, ep: u32, dir: u32, len: u32, setup: Setup, data: &[u8]) -> (i32, usize) {
        self.seq += 1;
        self.out.clear();
        CmdSubmit {
            seqnum: self.seq,
            devid: self.devid,
            direction: dir,
            ep,
            transfer_flags: if dir == DIR_IN { URB_DIR_IN } else { 0 },
            transfer_buffer_length: len,
            start_frame: 0,
            number_of_packets: 0,
            interval: 0,
            setup: setup.to_bytes(),
            data: data.to_vec(),
        }
        .write(&mut self.out)
        .expect("encode");
        self.stream.write_all(&self.out).expect("send");
        let mut h = [0u8; URB_HEADER_LEN];
        self.reader.read_exact(&mut h).expect("reply header");
        let word = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        assert_eq!(word(4), self.seq, "reply for another URB");
        let status = word(20) as i32;
        let actual = word(24) as usize;
        if dir == DIR_IN {
            self.reader
                .read_exact(&mut self.buf[..actual])
                .expect("reply data");
        }
        (status, actual)
    }

    fn start_scan(&mut self) {
        let params = ScanParams { job: job() }.encode();
        let setup = Setup::vendor_out(REQ_SET_PARAMS, 0, 0, params.len() as u16);
        let (s, _) = self.urb(0, DIR_OUT, params.len() as u32, setup, &params);
        assert_eq!(s, 0, "SET_PARAMS");
        let (s, _) = self.urb(
            0,
            DIR_OUT,
            0,
            Setup::vendor_out(REQ_START_SCAN, 0, 0, 0),
            &[],
        );
        assert_eq!(s, 0, "START_SCAN");
    }

    fn status_round_trip(&mut self) {
        let (s, n) = self.urb(
            0,
            DIR_IN,
            8,
            Setup::vendor_in(REQ_GET_DEVICE_STATUS, 0, 0, 8),
            &[],
        );
        assert!(s == 0 && n > 0, "GET_DEVICE_STATUS: status {s}, {n} bytes");
    }

    fn bulk_in(&mut self) -> usize {
        let (s, n) = self.urb(1, DIR_IN, CHUNK as u32, Setup::vendor_out(0, 0, 0, 0), &[]);
        assert_eq!(s, 0, "bulk IN failed");
        n
    }

    /// Reads `transfers` 64 KiB URBs one at a time; returns (bytes, seconds).
    fn stream(&mut self, transfers: usize) -> (u64, f64) {
        let t0 = WallInstant::now();
        let mut got = 0u64;
        for _ in 0..transfers {
            got += self.bulk_in() as u64;
        }
        (got, t0.elapsed().as_secs_f64())
    }
}

/// What a [`raw_responder`] does before each answer.
#[derive(Clone, Copy)]
enum Reply {
    /// Sends the same bytes every time (which the kernel copies fastest).
    Same,
    /// Copies 64 KiB of other bytes into the reply first, as any server of new data must.
    Copied,
    /// Produces the bytes as the emulated device does at the least ([`Producer`]). No server
    /// built on the device model can answer faster than this responder.
    Produced,
    /// The same from a task on a one-thread tokio runtime, reading and writing as the USB/IP
    /// server's sessions do: the most a tokio server on the device model can reach.
    ProducedAsync,
}

impl Reply {
    /// The name of the responder's thread, by which its CPU time is found ([`cpu_ns`]).
    fn thread(self) -> &'static str {
        match self {
            Reply::Same => "ref-same",
            Reply::Copied => "ref-copied",
            Reply::Produced => "ref-produced",
            Reply::ProducedAsync => "ref-async",
        }
    }
}

/// Bytes made as the emulated device makes them at the least: the scan engine renders them
/// into a staging buffer, which is copied into the reply (the copy the firmware's
/// `UsbBus::write` of a usb-device endpoint makes).
struct Producer {
    engine: scanemu::engine::ScanEngine,
    band: scanemu::engine::Band,
    offset: u64,
    stage: Vec<u8>,
}

impl Producer {
    fn new(bytes: usize) -> Producer {
        let mut engine = load_profile().engine();
        engine.start(Instant::ZERO, job()).expect("starts");
        let mut at = Instant::ZERO;
        let band = loop {
            while engine.poll(at).is_some() {}
            if let Some(band) = engine.front_band() {
                break *band;
            }
            at += Duration::from_millis(1);
        };
        Producer {
            engine,
            band,
            offset: 0,
            stage: vec![0; bytes],
        }
    }

    /// Renders the next bytes and copies them into `out` (as long as the staging buffer).
    fn produce(&mut self, out: &mut [u8]) {
        if self.offset + self.stage.len() as u64 > self.band.bytes {
            self.offset = 0;
        }
        self.engine.fill(&self.band, self.offset, &mut self.stage);
        self.offset += self.stage.len() as u64;
        out.copy_from_slice(&self.stage);
    }
}

/// A thread answering every `request`-byte message with `reply` bytes, on loopback, doing
/// `work` before each answer.
fn raw_responder(request: usize, reply: usize, work: Reply) -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).expect("binds");
    let addr = listener.local_addr().expect("addr");
    let spawned = std::thread::Builder::new()
        .name(work.thread().into())
        .spawn(move || {
            Placement::from_env().server();
            let mut answer = vec![0x5a; reply];
            let source: Vec<u8> = (0..reply).map(|i| (i % 251) as u8).collect();
            let mut producer = matches!(work, Reply::Produced | Reply::ProducedAsync)
                .then(|| Producer::new(reply - request));
            if let Reply::ProducedAsync = work {
                if let Some(producer) = producer.take() {
                    async_responder(listener, request, answer, producer);
                }
                return;
            }
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let _ = s.set_nodelay(true);
            let mut r = BufReader::with_capacity(1 << 20, s.try_clone().expect("clone"));
            let mut req = vec![0u8; request];
            while r.read_exact(&mut req).is_ok() {
                match work {
                    Reply::Same | Reply::ProducedAsync => {}
                    Reply::Copied => answer[request..].copy_from_slice(&source[request..]),
                    Reply::Produced => {
                        if let Some(p) = &mut producer {
                            p.produce(&mut answer[request..]);
                        }
                    }
                }
                if s.write_all(&answer).is_err() {
                    break;
                }
            }
        });
    spawned.expect("spawns a responder thread");
    addr
}

/// [`Reply::ProducedAsync`]: one connection served by a task on a one-thread tokio runtime
/// (on the calling thread), reading requests into a buffer and writing each answer whole.
fn async_responder(
    listener: TcpListener,
    request: usize,
    mut answer: Vec<u8>,
    mut producer: Producer,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        listener.set_nonblocking(true).expect("nonblocking");
        let listener = tokio::net::TcpListener::from_std(listener).expect("registers");
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let _ = s.set_nodelay(true);
        let mut inbox = Vec::with_capacity(CHUNK);
        loop {
            while inbox.len() < request {
                if !matches!(s.read_buf(&mut inbox).await, Ok(n) if n > 0) {
                    return;
                }
            }
            inbox.drain(..request);
            producer.produce(&mut answer[request..]);
            if s.write_all(&answer).await.is_err() {
                return;
            }
        }
    });
}

/// The raw TCP client of a [`raw_responder`].
struct Pair {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    req: Vec<u8>,
    buf: Vec<u8>,
}

impl Pair {
    fn open(addr: SocketAddr, reply: usize) -> Pair {
        let stream = TcpStream::connect(addr).expect("connects");
        stream.set_nodelay(true).expect("nodelay");
        let reader = BufReader::with_capacity(1 << 20, stream.try_clone().expect("clone"));
        Pair {
            stream,
            reader,
            req: vec![0xa5; URB_HEADER_LEN],
            buf: vec![0; reply],
        }
    }

    /// One request and its reply; returns the seconds it took.
    fn exchange(&mut self) -> f64 {
        let t = WallInstant::now();
        self.stream.write_all(&self.req).expect("send");
        self.reader.read_exact(&mut self.buf).expect("reply");
        t.elapsed().as_secs_f64()
    }
}

/// Per round: device 1-1 streams alone, then all [`DEVICES`] stream at once (one client
/// thread each, [`MANY_TRANSFERS`] URBs each). Returns the medians of the solo rate, the aggregate
/// rate, and the rounds' ratios.
fn many_devices(addr: SocketAddr) -> (f64, f64, f64) {
    use std::sync::{Arc, Barrier};
    let barrier = Arc::new(Barrier::new(DEVICES + 1));
    let threads: Vec<_> = (0..DEVICES)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                Placement::from_env().client();
                let mut c = RawClient::import(addr, &default_busid(i));
                c.start_scan();
                let mut rounds = Vec::new();
                for _ in 0..=ROUNDS {
                    barrier.wait();
                    // Solo phase: only the first device streams.
                    let solo = (i == 0).then(|| c.stream(MANY_TRANSFERS));
                    barrier.wait();
                    let t0 = WallInstant::now();
                    let (bytes, _) = c.stream(MANY_TRANSFERS);
                    rounds.push((solo, bytes, t0, WallInstant::now()));
                }
                rounds
            })
        })
        .collect();
    for _ in 0..=ROUNDS {
        barrier.wait();
        barrier.wait();
    }
    let per_thread: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("stream thread"))
        .collect();
    let (mut solos, mut manys, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let Some((b, s)) = per_thread[0][round].0 else {
            continue;
        };
        let solo = mb_per_s(b, s);
        let total: u64 = per_thread.iter().map(|r| r[round].1).sum();
        let begin = per_thread
            .iter()
            .map(|r| r[round].2)
            .min()
            .expect("threads");
        let end = per_thread
            .iter()
            .map(|r| r[round].3)
            .max()
            .expect("threads");
        let many = mb_per_s(total, (end - begin).as_secs_f64());
        solos.push(solo);
        manys.push(many);
        ratios.push(many / solo);
    }
    (median(&mut solos), median(&mut manys), median(&mut ratios))
}

fn load_profile() -> Profile {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/profiles/a4-flatbed-1200.json");
    Profile::load(&path).expect("profile loads")
}

fn main() {
    let placement = match Placement::try_from_env() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("{why}");
            std::process::exit(2);
        }
    };
    // Reads the CPUs allowed before any thread is pinned.
    let _ = placement.cpus();
    let profile = load_profile();
    let specs = (0..DEVICES)
        .map(|i| DeviceSpec::new(profile.clone(), default_busid(i)))
        .collect();
    let mut config = ServerConfig::with_devices(specs);
    if let Some(n) = std::env::var("USBIP_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.worker_threads = n;
    }
    // The server's threads start where servers run: they inherit the affinity.
    placement.server();
    let server = UsbIpServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config).expect("binds");
    let addr = server.local_addr();
    placement.client();
    match placement.cpus() {
        Some((c, s)) => println!(
            "placement: {} (clients on CPU {c}, servers on CPU {s})",
            placement.name()
        ),
        None => println!("placement: free"),
    }

    // 1. Control round trip vs a 48-byte ping-pong, interleaved round by round.
    let echo = Pair::open(
        raw_responder(URB_HEADER_LEN, URB_HEADER_LEN, Reply::Same),
        URB_HEADER_LEN,
    );
    let mut echo = echo;
    let mut client = RawClient::import(addr, "1-1");
    let (mut raw_all, mut rtt_all, mut rtt_ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..=ROUNDS {
        let mut raw: Vec<f64> = (0..ROUND_TRIPS).map(|_| echo.exchange() * 1e6).collect();
        let mut rtt: Vec<f64> = (0..ROUND_TRIPS)
            .map(|_| {
                let t = WallInstant::now();
                client.status_round_trip();
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        // Round 0 warms both paths up and is not counted.
        if round > 0 {
            rtt_ratios.push(median(&mut rtt) / median(&mut raw));
            raw_all.extend(raw);
            rtt_all.extend(rtt);
        }
    }
    let (raw_rtt_median, raw_rtt_p99) = (median(&mut raw_all), p99(&mut raw_all));
    let (rtt_median, rtt_p99) = (median(&mut rtt_all), p99(&mut rtt_all));
    let rtt_ratio = median(&mut rtt_ratios);
    println!(
        "raw TCP 48-byte ping-pong: median {raw_rtt_median:.1} us, p99 {raw_rtt_p99:.1} us ({} round trips)",
        raw_all.len()
    );
    println!(
        "USB/IP control round trip (GET_DEVICE_STATUS, blocking client): median {rtt_median:.1} us, p99 {rtt_p99:.1} us; median of round ratios {rtt_ratio:.2}x raw"
    );

    // 2. 64 KiB bulk IN, one in flight, vs 48-byte request / 48 + 64 KiB response.
    let open = |work| {
        Pair::open(
            raw_responder(URB_HEADER_LEN, URB_HEADER_LEN + CHUNK, work),
            URB_HEADER_LEN + CHUNK,
        )
    };
    let (mut rr, mut fresh_rr) = (open(Reply::Same), open(Reply::Copied));
    let (mut made_rr, mut async_rr) = (open(Reply::Produced), open(Reply::ProducedAsync));
    client.start_scan();
    let (mut raw_rates, mut one_rates, mut bulk_ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut fresh_rates, mut fresh_ratios) = (Vec::new(), Vec::new());
    let (mut made_rates, mut made_ratios) = (Vec::new(), Vec::new());
    let (mut async_rates, mut async_ratios) = (Vec::new(), Vec::new());
    let reply_bytes = (TRANSFERS * (URB_HEADER_LEN + CHUNK)) as u64;
    // Per answering side (the server, then the responders in `Reply` order): its CPU time
    // and the asking side's, in microseconds per transfer, round by round.
    let mut cpu: [[Vec<f64>; 2]; 5] = Default::default();
    let per_transfer = |ns: u64| ns as f64 / TRANSFERS as f64 / 1e3;
    let rate = |pair: &mut Pair, work: Reply, cpu: &mut [Vec<f64>; 2]| {
        let (before, own) = (cpu_ns(&[work.thread()]), own_cpu_ns());
        let secs: f64 = (0..TRANSFERS).map(|_| pair.exchange()).sum();
        cpu[1].push(per_transfer(own_cpu_ns() - own));
        cpu[0].push(per_transfer(cpu_ns(&[work.thread()]) - before));
        mb_per_s(reply_bytes, secs)
    };
    for round in 0..=ROUNDS {
        let [server_cpu, raw_cpu, fresh_cpu, made_cpu, async_cpu] = &mut cpu;
        let raw = rate(&mut rr, Reply::Same, raw_cpu);
        let (before, own) = (cpu_ns(SERVER_THREADS), own_cpu_ns());
        let (bytes, secs) = client.stream(TRANSFERS);
        server_cpu[1].push(per_transfer(own_cpu_ns() - own));
        server_cpu[0].push(per_transfer(cpu_ns(SERVER_THREADS) - before));
        let one = mb_per_s(bytes + (TRANSFERS * URB_HEADER_LEN) as u64, secs);
        let fresh = rate(&mut fresh_rr, Reply::Copied, fresh_cpu);
        let made = rate(&mut made_rr, Reply::Produced, made_cpu);
        let made_async = rate(&mut async_rr, Reply::ProducedAsync, async_cpu);
        if round == 0 {
            // Round 0 warms the paths up and is not counted.
            cpu.iter_mut().flatten().for_each(Vec::clear);
        } else {
            bulk_ratios.push(one / raw);
            raw_rates.push(raw);
            one_rates.push(one);
            fresh_rates.push(fresh);
            fresh_ratios.push(one / fresh);
            made_rates.push(made);
            made_ratios.push(made / raw);
            async_rates.push(made_async);
            async_ratios.push(made_async / raw);
        }
    }
    drop(client);
    let (raw_mbps, one_mbps) = (median(&mut raw_rates), median(&mut one_rates));
    let bulk_ratio = median(&mut bulk_ratios);
    let (fresh_mbps, fresh_ratio) = (median(&mut fresh_rates), median(&mut fresh_ratios));
    let (made_mbps, made_ratio) = (median(&mut made_rates), median(&mut made_ratios));
    let (async_mbps, async_ratio) = (median(&mut async_rates), median(&mut async_ratios));
    println!("raw TCP 64 KiB request/response: median {raw_mbps:.0} MB/s ({ROUNDS} rounds of {TRANSFERS})");
    println!(
        "raw TCP 64 KiB request/response, 64 KiB copied into each reply first: median {fresh_mbps:.0} MB/s"
    );
    println!(
        "raw TCP 64 KiB request/response, each reply rendered by the scan engine and copied once: median {made_mbps:.0} MB/s, {made_ratio:.2}x raw (the most a server on the device model can reach)"
    );
    println!(
        "the same from a tokio task: median {async_mbps:.0} MB/s, {async_ratio:.2}x raw (the most a tokio server on the device model can reach)"
    );
    println!(
        "USB/IP bulk IN, 64 KiB, 1 in flight (blocking client): median {one_mbps:.0} MB/s; median of round ratios {bulk_ratio:.2}x raw, {fresh_ratio:.2}x raw with the copy"
    );
    let [server_cpu, raw_cpu, fresh_cpu, made_cpu, async_cpu] =
        cpu.map(|sides| sides.map(|mut v| median(&mut v)));
    println!(
        "CPU time per 64 KiB transfer, answering + asking side (medians of rounds): USB/IP server {:.1} + {:.1} us; raw responder {:.1} + {:.1} us, copying {:.1} + {:.1} us, producing {:.1} + {:.1} us, producing in a tokio task {:.1} + {:.1} us",
        server_cpu[0], server_cpu[1], raw_cpu[0], raw_cpu[1], fresh_cpu[0], fresh_cpu[1],
        made_cpu[0], made_cpu[1], async_cpu[0], async_cpu[1]
    );

    // 3. Every device streaming at once vs one device alone, the same way, round by round.
    let (solo, many, many_ratio) = many_devices(addr);
    println!("one device alone, 64 KiB, 1 in flight: median {solo:.0} MB/s");
    println!(
        "{DEVICES} devices at once, 64 KiB, 1 in flight each: median {many:.0} MB/s aggregate; median of round ratios {many_ratio:.2}x one device"
    );

    // 4. For reference: UsbIpHost (as drivers use it) and 8 URBs in flight.
    let sim = Sim::realtime();
    let host = UsbIpHost::connect(addr, "1-3", Rc::new(sim.clone())).expect("imports");
    let h = host.clone();
    let (host_mbps, host_rtt) = sim
        .block_on(
            async move {
                let params = ScanParams { job: job() }.encode();
                h.control_out(Setup::vendor_out(REQ_SET_PARAMS, 0, 0, 0), &params, T)
                    .await
                    .expect("SET_PARAMS");
                h.control_out(Setup::vendor_out(REQ_START_SCAN, 0, 0, 0), &[], T)
                    .await
                    .expect("START_SCAN");
                let mut buf = vec![0u8; CHUNK];
                let t0 = std::time::Instant::now();
                let mut got = 0u64;
                for _ in 0..TRANSFERS {
                    got += h.bulk_in(EP_DATA_IN, &mut buf, T).await.expect("bulk") as u64;
                }
                let mbps = mb_per_s(got, t0.elapsed().as_secs_f64());
                let mut lat = Vec::new();
                for _ in 0..ROUND_TRIPS {
                    let t = std::time::Instant::now();
                    h.control_in(Setup::vendor_in(REQ_GET_DEVICE_STATUS, 0, 0, 8), T)
                        .await
                        .expect("status");
                    lat.push(t.elapsed().as_secs_f64() * 1e6);
                }
                (mbps, median(&mut lat))
            },
            Instant::from_millis(600_000),
        )
        .expect("runs");
    drop(host);
    println!(
        "UsbIpHost: bulk IN 64 KiB 1 in flight {host_mbps:.0} MB/s, control round trip median {host_rtt:.1} us"
    );
    let (bytes, secs) = pipelined(addr, "1-4", 8);
    let pipelined_mbps = mb_per_s(bytes, secs);
    println!(
        "raw client bulk IN, 64 KiB transfers, 8 in flight: {bytes} bytes in {secs:.3} s = {pipelined_mbps:.0} MB/s"
    );
    println!("(USB 2.0 high speed: 53 MB/s theoretical)");
    let json = serde_json::json!({
        "raw_rtt_median_us": raw_rtt_median,
        "raw_rtt_p99_us": raw_rtt_p99,
        "rtt_median_us": rtt_median,
        "rtt_p99_us": rtt_p99,
        "rtt_ratio": rtt_ratio,
        "raw_rr_mb_per_s": raw_mbps,
        "mb_per_s_1_in_flight": one_mbps,
        "bulk_ratio": bulk_ratio,
        "raw_fresh_rr_mb_per_s": fresh_mbps,
        "bulk_ratio_to_fresh": fresh_ratio,
        "raw_produced_rr_mb_per_s": made_mbps,
        "produced_ratio": made_ratio,
        "raw_produced_async_rr_mb_per_s": async_mbps,
        "produced_async_ratio": async_ratio,
        "server_cpu_us_per_transfer": server_cpu[0],
        "server_client_cpu_us_per_transfer": server_cpu[1],
        "raw_cpu_us_per_transfer": raw_cpu[0],
        "raw_client_cpu_us_per_transfer": raw_cpu[1],
        "fresh_cpu_us_per_transfer": fresh_cpu[0],
        "fresh_client_cpu_us_per_transfer": fresh_cpu[1],
        "produced_cpu_us_per_transfer": made_cpu[0],
        "produced_client_cpu_us_per_transfer": made_cpu[1],
        "produced_async_cpu_us_per_transfer": async_cpu[0],
        "produced_async_client_cpu_us_per_transfer": async_cpu[1],
        "solo_mb_per_s": solo,
        "devices": DEVICES,
        "many_mb_per_s": many,
        "many_ratio": many_ratio,
        "rounds": ROUNDS,
        "placement": placement.name(),
        "host_mb_per_s_1_in_flight": host_mbps,
        "host_rtt_median_us": host_rtt,
        "mb_per_s_8_in_flight": pipelined_mbps,
    });
    println!("{json}");
}

/// Reads `TRANSFERS` 64 KiB URBs with `depth` outstanding; returns bytes and seconds.
fn pipelined(addr: SocketAddr, busid: &str, depth: u32) -> (u64, f64) {
    let mut c = RawClient::import(addr, busid);
    c.start_scan();
    let send = |c: &mut RawClient| {
        c.seq += 1;
        c.out.clear();
        CmdSubmit {
            seqnum: c.seq,
            devid: c.devid,
            direction: DIR_IN,
            ep: 1,
            transfer_flags: URB_DIR_IN,
            transfer_buffer_length: CHUNK as u32,
            start_frame: 0,
            number_of_packets: 0,
            interval: 0,
            setup: [0; 8],
            data: Vec::new(),
        }
        .write(&mut c.out)
        .expect("encode");
        c.stream.write_all(&c.out).expect("send");
    };
    let t0 = WallInstant::now();
    let mut got = 0u64;
    let mut in_flight = 0u32;
    let mut sent = 0usize;
    let mut done = 0usize;
    while done < TRANSFERS {
        while in_flight < depth && sent < TRANSFERS {
            send(&mut c);
            in_flight += 1;
            sent += 1;
        }
        let mut h = [0u8; URB_HEADER_LEN];
        c.reader.read_exact(&mut h).expect("reply header");
        let word = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        assert_eq!(word(20), 0, "bulk IN failed");
        let actual = word(24) as usize;
        c.reader
            .read_exact(&mut c.buf[..actual])
            .expect("reply data");
        got += actual as u64;
        in_flight -= 1;
        done += 1;
    }
    (got, t0.elapsed().as_secs_f64())
}
