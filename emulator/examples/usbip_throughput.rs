//! USB/IP loopback throughput and latency of the emulated scanner.
//!
//! Run: `cargo run --release -p scanemu --example usbip_throughput`
//!
//! Serves `fixtures/profiles/a4-flatbed-1200.json` (bus speed "unlimited", 10 us per line, so
//! the device is not the bottleneck) on 127.0.0.1 and measures:
//! - bulk IN throughput of a 600-dpi colour A4 scan (about 104 MB) read in 64 KiB transfers
//!   through [`UsbIpHost`] (one transfer at a time, as a driver's `bulk_in` loop does), and
//!   through a raw client keeping 8 URBs of 64 KiB in flight;
//! - the round-trip latency of GET_DEVICE_STATUS (a 3-stage control transfer) over USB/IP.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;

use scanemu::engine::{ScanJob, ScanMode, ScanSource};
use scanemu::host::usbip::UsbIpHost;
use scanemu::host::{Setup, UsbHost};
use scanemu::personality::native::protocol::*;
use scanemu::profile::Profile;
use scanemu::sim::Sim;
use scanemu::time::{Duration, Instant};
use scanemu::usbip::protocol::{
    encode_busid, CmdSubmit, DeviceRecord, OpHeader, Reply, DIR_IN, OP_REQ_IMPORT, URB_DIR_IN,
};
use scanemu::usbip::{ServerConfig, UsbIpServer};

const CHUNK: usize = 64 * 1024;
const T: Duration = Duration::from_secs(5);

fn job() -> ScanJob {
    ScanJob {
        resolution_dpi: 600,
        mode: ScanMode::Color24,
        x_px: 0,
        y_px: 0,
        width_px: 4960,
        height_px: 7016,
        source: ScanSource::Flatbed,
        pages: 1,
    }
}

async fn start(host: &dyn UsbHost) -> ParamsReport {
    let params = ScanParams { job: job() }.encode();
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
    host.control_out(Setup::vendor_out(REQ_START_SCAN, 0, 0, 0), &[], T)
        .await
        .expect("START_SCAN");
    ParamsReport::decode(&r).expect("params report")
}

fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

fn main() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/profiles/a4-flatbed-1200.json");
    let profile = Profile::load(&path).expect("profile loads");
    let server = UsbIpServer::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        ServerConfig::new(profile),
    )
    .expect("binds");
    let addr = server.local_addr();

    // 1. UsbIpHost, one 64 KiB bulk_in at a time.
    let sim = Sim::realtime();
    let host = UsbIpHost::connect(addr, "1-1", Rc::new(sim.clone())).expect("imports");
    let h = host.clone();
    let (bytes, secs, lat) = sim
        .block_on(
            async move {
                let report = start(&h).await;
                let total = u64::from(report.bytes_per_line) * u64::from(report.lines_per_page);
                let mut buf = vec![0u8; CHUNK];
                let mut got = 0u64;
                let t0 = std::time::Instant::now();
                while got < total {
                    got += h.bulk_in(EP_DATA_IN, &mut buf, T).await.expect("bulk") as u64;
                }
                let secs = t0.elapsed().as_secs_f64();
                let mut lat = Vec::new();
                for _ in 0..2000 {
                    let t = std::time::Instant::now();
                    h.control_in(Setup::vendor_in(REQ_GET_DEVICE_STATUS, 0, 0, 8), T)
                        .await
                        .expect("status");
                    lat.push(t.elapsed().as_secs_f64() * 1e6);
                }
                (got, secs, lat)
            },
            Instant::from_millis(600_000),
        )
        .expect("runs");
    drop(host);
    println!(
        "UsbIpHost bulk IN, 64 KiB transfers, 1 in flight: {bytes} bytes in {secs:.3} s = {:.0} MB/s ({} URBs)",
        mb_per_s(bytes, secs),
        bytes.div_ceil(CHUNK as u64)
    );
    let mut lat = lat;
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
    println!(
        "GET_DEVICE_STATUS round trip over USB/IP: median {:.1} us, p99 {:.1} us, min {:.1} us ({} requests)",
        pct(0.5),
        pct(0.99),
        lat[0],
        lat.len()
    );

    // 2. A raw client with 8 URBs in flight.
    let (bytes, secs) = pipelined(addr, 8);
    println!(
        "raw client bulk IN, 64 KiB transfers, 8 in flight: {bytes} bytes in {secs:.3} s = {:.0} MB/s",
        mb_per_s(bytes, secs)
    );
    println!("(USB 2.0 high speed: 53 MB/s theoretical)");
}

/// Reads one scan with `depth` bulk IN URBs outstanding; returns bytes and seconds.
fn pipelined(addr: SocketAddr, depth: u32) -> (u64, f64) {
    // Start the scan through a UsbIpHost, then hand the device to a raw client: the device
    // is rebuilt per import, so the raw client sends the control requests itself.
    let mut stream = loop {
        let mut s = TcpStream::connect(addr).expect("connects");
        s.set_nodelay(true).expect("nodelay");
        let mut req = OpHeader::new(OP_REQ_IMPORT, 0).encode().to_vec();
        req.extend_from_slice(&encode_busid("1-1").expect("busid"));
        s.write_all(&req).expect("import");
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        let h = OpHeader::read(&mut r).expect("reply");
        if h.status == 0 {
            DeviceRecord::read(&mut r).expect("record");
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let mut reader = BufReader::with_capacity(1 << 20, stream.try_clone().expect("clone"));
    let devid = 0x0001_0002;
    let mut seq = 0u32;
    let mut send =
        |stream: &mut TcpStream, ep: u32, dir: u32, len: u32, setup: Setup, data: &[u8]| {
            seq += 1;
            let cmd = CmdSubmit {
                seqnum: seq,
                devid,
                direction: dir,
                ep,
                transfer_flags: if dir == DIR_IN { URB_DIR_IN } else { 0 },
                transfer_buffer_length: len,
                start_frame: 0,
                number_of_packets: 0,
                interval: 0,
                setup: setup.to_bytes(),
                data: data.to_vec(),
            };
            let mut b = Vec::with_capacity(48 + data.len());
            cmd.write(&mut b).expect("encode");
            stream.write_all(&b).expect("send");
        };
    let params = ScanParams { job: job() }.encode();
    let no_setup = Setup::vendor_out(0, 0, 0, 0);
    send(
        &mut stream,
        0,
        0,
        params.len() as u32,
        Setup::vendor_out(REQ_SET_PARAMS, 0, 0, params.len() as u16),
        &params,
    );
    send(
        &mut stream,
        0,
        0,
        0,
        Setup::vendor_out(REQ_START_SCAN, 0, 0, 0),
        &[],
    );
    for _ in 0..2 {
        match Reply::read(&mut reader, |_| None).expect("control reply") {
            Reply::Submit(r) => assert_eq!(r.status, 0, "control request failed"),
            Reply::Unlink(_) => panic!("unexpected RET_UNLINK"),
        }
    }
    let j = job();
    let total = j.bytes_per_line() * u64::from(j.lines_per_page());
    let t0 = std::time::Instant::now();
    let mut got = 0u64;
    let mut in_flight = 0u32;
    let mut asked = 0u64;
    while got < total {
        while in_flight < depth && asked < total {
            send(&mut stream, 1, DIR_IN, CHUNK as u32, no_setup, &[]);
            in_flight += 1;
            asked += CHUNK as u64;
        }
        match Reply::read(&mut reader, |_| Some(CHUNK as u32)).expect("bulk reply") {
            Reply::Submit(r) => {
                assert_eq!(r.status, 0, "bulk IN failed");
                got += u64::from(r.actual_length);
                // A short transfer (a band's end) leaves the page shorter than asked for.
                asked -= CHUNK as u64 - u64::from(r.actual_length);
                in_flight -= 1;
            }
            Reply::Unlink(_) => panic!("unexpected RET_UNLINK"),
        }
    }
    (got, t0.elapsed().as_secs_f64())
}
