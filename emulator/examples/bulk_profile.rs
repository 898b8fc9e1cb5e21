//! A fixed amount of bulk IN work, for instruction counting (`valgrind --tool=callgrind`),
//! where wall time on a shared machine says little.
//!
//! Run: `cargo build --release -p scanemu --example bulk_profile`, then
//! `valgrind --tool=callgrind target/release/examples/bulk_profile inproc 1024` or
//! `... bulk_profile usbip 300`.
//!
//! - `inproc LINES`: what `cargo bench --bench bulk` measures, once: enumerate a fresh device of
//!   `fixtures/profiles/a4-flatbed-1200.json`, start a colour24 scan of LINES lines at 9920 px
//!   and read all of it through the in-process host in 64 KiB bulk reads.
//! - `usbip TRANSFERS`: the 64 KiB one-in-flight row of `usbip_throughput`: a USB/IP server on
//!   127.0.0.1 with the same profile, a blocking client speaking the URB protocol by hand,
//!   TRANSFERS bulk IN URBs of 64 KiB one after the other.
//!
//! `USBIP_WORKERS=N` sets the server's worker threads (`ServerConfig::worker_threads`; 1 runs
//! it on one thread), as in `usbip_throughput`.
//!
//! Two runs with different counts give the instructions of one transfer as their difference
//! over the difference of the counts, setup excluded. Prints the bytes read.

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::ExitCode;
use std::rc::Rc;

use scanemu::device::Device;
use scanemu::engine::{ScanJob, ScanMode};
use scanemu::host::inproc::InProcessHost;
use scanemu::host::{Setup, UsbHost};
use scanemu::personality::native::protocol::{
    ScanParams, EP_DATA_IN, REQ_SET_PARAMS, REQ_START_SCAN,
};
use scanemu::profile::Profile;
use scanemu::sim::Sim;
use scanemu::time::{Duration, Instant};
use scanemu::usbip::protocol::{
    encode_busid, CmdSubmit, DeviceRecord, OpHeader, DIR_IN, DIR_OUT, OP_REQ_IMPORT, URB_DIR_IN,
    URB_HEADER_LEN,
};
use scanemu::usbip::{default_busid, ServerConfig, UsbIpServer};

const CHUNK: usize = 64 * 1024;
const T: Duration = Duration::from_secs(5);

fn profile() -> Profile {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/profiles/a4-flatbed-1200.json");
    Profile::load(&path).expect("fixtures/profiles/a4-flatbed-1200.json loads")
}

fn inproc(lines: u32) -> u64 {
    let job = ScanJob::flatbed(1200, ScanMode::Color24, 9920, lines);
    let sim = Sim::new();
    let host =
        InProcessHost::new(Device::new(&profile()), Rc::new(sim.clone())).expect("enumerates");
    sim.block_on(
        async move {
            let params = ScanParams { job }.encode();
            host.control_out(Setup::vendor_out(REQ_SET_PARAMS, 0, 0, 0), &params, T)
                .await
                .expect("SET_PARAMS");
            host.control_out(Setup::vendor_out(REQ_START_SCAN, 0, 0, 0), &[], T)
                .await
                .expect("START_SCAN");
            let mut buf = vec![0u8; CHUNK];
            let mut total = 0u64;
            while total < job.page_bytes() {
                total += host
                    .bulk_in(EP_DATA_IN, &mut buf, T)
                    .await
                    .expect("bulk read") as u64;
            }
            total
        },
        Instant::from_millis(600_000),
    )
    .expect("scan completes")
}

/// Sends one URB and reads its reply into `buf`; returns (status, actual length).
fn urb(
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    cmd: CmdSubmit,
    buf: &mut [u8],
) -> (i32, usize) {
    let mut out = Vec::with_capacity(URB_HEADER_LEN + cmd.data.len());
    let dir = cmd.direction;
    cmd.write(&mut out).expect("encode");
    stream.write_all(&out).expect("send");
    let mut h = [0u8; URB_HEADER_LEN];
    reader.read_exact(&mut h).expect("reply header");
    let word = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let (status, actual) = (word(20) as i32, word(24) as usize);
    if dir == DIR_IN {
        reader.read_exact(&mut buf[..actual]).expect("reply data");
    }
    (status, actual)
}

/// The scan `usbip` reads: one colour A4 page at 1200 dpi.
fn usbip_job() -> ScanJob {
    ScanJob::flatbed(1200, ScanMode::Color24, 9920, 14032)
}

fn usbip(transfers: usize) -> u64 {
    let mut config = ServerConfig::new(profile());
    if let Some(n) = std::env::var("USBIP_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.worker_threads = n;
    }
    let server = UsbIpServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config).expect("binds");
    let mut stream = TcpStream::connect(server.local_addr()).expect("connects");
    stream.set_nodelay(true).expect("nodelay");
    let mut req = OpHeader::new(OP_REQ_IMPORT, 0).encode().to_vec();
    req.extend_from_slice(&encode_busid(&default_busid(0)).expect("busid"));
    stream.write_all(&req).expect("import");
    let mut reader = BufReader::with_capacity(1 << 20, stream.try_clone().expect("clone"));
    let h = OpHeader::read(&mut reader).expect("reply");
    assert_eq!(h.status, 0, "import refused");
    let devid = DeviceRecord::read(&mut reader).expect("record").devid();
    let mut seqnum = 0;
    let mut cmd = |ep: u32, direction: u32, setup: Setup, len: u32, data: Vec<u8>| {
        seqnum += 1;
        CmdSubmit {
            seqnum,
            devid,
            direction,
            ep,
            transfer_flags: if direction == DIR_IN { URB_DIR_IN } else { 0 },
            transfer_buffer_length: len,
            start_frame: 0,
            number_of_packets: 0,
            interval: 0,
            setup: setup.to_bytes(),
            data,
        }
    };
    let mut buf = vec![0u8; CHUNK];
    let params = ScanParams { job: usbip_job() }.encode().to_vec();
    let setup = Setup::vendor_out(REQ_SET_PARAMS, 0, 0, params.len() as u16);
    let len = params.len() as u32;
    let set = cmd(0, DIR_OUT, setup, len, params);
    assert_eq!(
        urb(&mut stream, &mut reader, set, &mut buf).0,
        0,
        "SET_PARAMS"
    );
    let start = cmd(
        0,
        DIR_OUT,
        Setup::vendor_out(REQ_START_SCAN, 0, 0, 0),
        0,
        Vec::new(),
    );
    assert_eq!(
        urb(&mut stream, &mut reader, start, &mut buf).0,
        0,
        "START_SCAN"
    );
    let mut total = 0u64;
    for _ in 0..transfers {
        let read = cmd(
            1,
            DIR_IN,
            Setup::vendor_out(0, 0, 0, 0),
            CHUNK as u32,
            Vec::new(),
        );
        let (status, n) = urb(&mut stream, &mut reader, read, &mut buf);
        assert_eq!(status, 0, "bulk IN failed");
        total += n as u64;
    }
    drop(stream);
    server.shutdown();
    total
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count = |default: u64| match args.get(1) {
        None => Ok(default),
        Some(s) => s.parse::<u64>().map_err(|_| format!("not a count: {s}")),
    };
    let run = match args.first().map(String::as_str) {
        Some("inproc") => count(1024).map(|n| inproc(u32::try_from(n).unwrap_or(u32::MAX))),
        Some("usbip") => count(300).and_then(|n| {
            // The device has no more to send after the page: one URB more would wait forever
            // (a bulk IN endpoint with nothing to send NAKs), so the count stops there.
            let page = usbip_job().page_bytes() / CHUNK as u64;
            if n > page {
                return Err(format!(
                    "usbip {n}: at most {page} transfers (one page of 64 KiB transfers)"
                ));
            }
            Ok(usbip(usize::try_from(n).unwrap_or(usize::MAX)))
        }),
        _ => Err("usage: bulk_profile inproc [LINES] | usbip [TRANSFERS]".into()),
    };
    match run {
        Ok(bytes) => {
            println!("{bytes} bytes read");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bulk_profile: {e}");
            ExitCode::from(2)
        }
    }
}
