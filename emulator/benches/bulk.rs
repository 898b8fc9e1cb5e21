//! In-process bulk throughput beside a plain memcpy of the same bytes.
//!
//! `bulk/inproc_64k` reads a 1200-dpi colour scan of 1024 lines (29 MiB) through the
//! in-process host in 64 KiB bulk reads, on the `unlimited`-speed A4 profile, so the figure is
//! the emulator's own cost: the scan engine filling bands, usb-device moving them packet by
//! packet (512-byte packets) over the virtual bus, and the host stepping each transfer.
//! `bulk/memcpy_64k` copies the same number of bytes into the same 64 KiB buffer. Both run in
//! one criterion group, one after the other, so their ratio holds on a noisy machine.
//! `scripts/bench` turns the two into a ratio and a packet rate.

use std::hint::black_box;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration as StdDuration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
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

/// Lines of the benchmarked scan: 16 bands of 64 lines at 9920 px colour24.
const LINES: u32 = 1024;
/// The host's read size.
const READ: usize = 64 * 1024;
const T: Duration = Duration::from_millis(1000);

fn profile() -> Profile {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/profiles/a4-flatbed-1200.json");
    Profile::load(&path).expect("fixtures/profiles/a4-flatbed-1200.json loads")
}

fn job() -> ScanJob {
    ScanJob::flatbed(1200, ScanMode::Color24, 9920, LINES)
}

/// Enumerates a fresh device, starts the scan and reads all of it; returns the bytes read.
fn scan_through_host(profile: &Profile) -> u64 {
    let sim = Sim::new();
    let host = InProcessHost::new(Device::new(profile), Rc::new(sim.clone())).expect("enumerates");
    let job = job();
    sim.block_on(
        async move {
            let params = ScanParams { job }.encode();
            host.control_out(Setup::vendor_out(REQ_SET_PARAMS, 0, 0, 0), &params, T)
                .await
                .expect("SET_PARAMS");
            host.control_out(Setup::vendor_out(REQ_START_SCAN, 0, 0, 0), &[], T)
                .await
                .expect("START_SCAN");
            let mut buf = vec![0u8; READ];
            let mut total = 0u64;
            while total < job.page_bytes() {
                let n = host
                    .bulk_in(EP_DATA_IN, &mut buf, T)
                    .await
                    .expect("bulk read");
                black_box(&buf[..n]);
                total += n as u64;
            }
            total
        },
        Instant::from_millis(600_000),
    )
    .expect("scan completes")
}

/// Copies `src` into a 64 KiB buffer, one read-sized chunk at a time.
fn memcpy_chunks(src: &[u8], dst: &mut [u8]) -> u64 {
    let mut total = 0u64;
    for chunk in src.chunks(READ) {
        dst[..chunk.len()].copy_from_slice(chunk);
        black_box(&dst[..chunk.len()]);
        total += chunk.len() as u64;
    }
    total
}

fn bulk(c: &mut Criterion) {
    let profile = profile();
    let bytes = job().page_bytes();
    let mut group = c.benchmark_group("bulk");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(StdDuration::from_secs(1))
        .measurement_time(StdDuration::from_secs(4))
        .throughput(Throughput::Bytes(bytes));
    group.bench_function("inproc_64k", |b| {
        b.iter(|| assert_eq!(scan_through_host(&profile), bytes));
    });
    let src: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    let mut dst = vec![0u8; READ];
    group.bench_function("memcpy_64k", |b| {
        b.iter(|| assert_eq!(memcpy_chunks(black_box(&src), &mut dst), bytes));
    });
    group.finish();
}

criterion_group!(benches, bulk);
criterion_main!(benches);
