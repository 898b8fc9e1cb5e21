//! Peak memory of a 1200-dpi A4 colour scan streamed end to end, in a process of its own.
//!
//! Reads the whole scan (9920 x 14032 px colour24, 417,592,320 bytes) through the in-process
//! host in 64 KiB bulk reads on `fixtures/profiles/a4-flatbed-1200.json`, then prints the bytes
//! read and the process's peak resident set size (VmHWM from /proc/self/status). Run in a
//! fresh process so VmHWM covers this scan and nothing else.
//!
//! ```sh
//! cargo run --release -p scanemu --example stream_peak -- --json
//! ```

use std::path::Path;
use std::process::ExitCode;
use std::rc::Rc;

use clap::Parser;
use scanemu::device::Device;
use scanemu::engine::{ScanJob, ScanMode};
use scanemu::host::inproc::InProcessHost;
use scanemu::host::{Setup, TransferError, UsbHost};
use scanemu::personality::native::protocol::{
    ScanParams, EP_DATA_IN, REQ_SET_PARAMS, REQ_START_SCAN,
};
use scanemu::profile::Profile;
use scanemu::sim::Sim;
use scanemu::time::{Duration, Instant};

/// Streams a 1200-dpi A4 colour scan and reports peak memory.
#[derive(Parser)]
struct Args {
    /// Lines to scan (the full A4 page by default).
    #[arg(long, default_value_t = 14032, value_parser = clap::value_parser!(u32).range(1..=14032))]
    lines: u32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// A field of /proc/self/status in KiB (`VmHWM`, `VmRSS`).
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/profiles/a4-flatbed-1200.json");
    let profile = match Profile::load(&path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let job = ScanJob::flatbed(1200, ScanMode::Color24, 9920, args.lines);
    let sim = Sim::new();
    let host = match InProcessHost::new(Device::new(&profile), Rc::new(sim.clone())) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: enumeration failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let t = Duration::from_millis(1000);
    let wall = std::time::Instant::now();
    let outcome = sim.block_on(
        async move {
            let params = ScanParams { job }.encode();
            host.control_out(Setup::vendor_out(REQ_SET_PARAMS, 0, 0, 0), &params, t)
                .await?;
            host.control_out(Setup::vendor_out(REQ_START_SCAN, 0, 0, 0), &[], t)
                .await?;
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            while total < job.page_bytes() {
                total += host.bulk_in(EP_DATA_IN, &mut buf, t).await? as u64;
            }
            Ok::<u64, TransferError>(total)
        },
        Instant::from_millis(3_600_000),
    );
    let bytes = match outcome {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            eprintln!("error: scan failed: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("error: simulation: {e}");
            return ExitCode::FAILURE;
        }
    };
    let wall_s = wall.elapsed().as_secs_f64();
    let Some(hwm) = status_kib("VmHWM") else {
        eprintln!("error: /proc/self/status has no VmHWM line");
        return ExitCode::FAILURE;
    };
    if args.json {
        println!("{{\"bytes\":{bytes},\"vmhwm_kib\":{hwm},\"wall_s\":{wall_s:.3}}}");
    } else {
        println!(
            "streamed {bytes} bytes in {wall_s:.2} s; peak RSS (VmHWM) {:.1} MiB",
            hwm as f64 / 1024.0
        );
    }
    ExitCode::SUCCESS
}
