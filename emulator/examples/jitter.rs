//! Real-time band emission jitter: how late, by the wall clock, the host sees each band.
//!
//! A device whose profile gives one band every 10 ms (10 lines of 1 ms, so 100 bands/s) scans
//! on a [`Sim::realtime`] simulation, with the in-process host reading the data as it comes and
//! the device's ticker (`InProcessHost::run_device`) polling it on its own schedule. For every
//! `band-ready` note the observer records the wall time at which the note reached it minus the
//! time the engine scheduled the band for. Prints p50, p99 and max of that delay, in
//! microseconds, as one JSON line (`--json`) or as text. The goal is p99 under 1 ms.
//!
//! ```sh
//! cargo run --release -p scanemu --example jitter -- --bands 300 --json
//! ```

use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;

use clap::Parser;
use scanemu::device::Device;
use scanemu::engine::{ScanJob, ScanMode};
use scanemu::host::inproc::InProcessHost;
use scanemu::host::{HostObserver, Setup, TransferRecord, UsbHost};
use scanemu::personality::native::protocol::{
    ScanParams, EP_DATA_IN, REQ_SET_PARAMS, REQ_START_SCAN,
};
use scanemu::personality::{DeviceNote, NoteKind};
use scanemu::profile::Profile;
use scanemu::sim::Sim;
use scanemu::time::{Duration, Instant};

/// Lines per band and line period: 10 x 1 ms = one band every 10 ms.
const BAND_LINES: u32 = 10;
const LINE_PERIOD_US: u64 = 1000;

/// Measures real-time band emission jitter at 100 bands/s.
#[derive(Parser)]
struct Args {
    /// Bands to scan (at 10 ms each); must be at least 1.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    bands: u32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Records, for each band-ready note, the wall-clock delay past its scheduled time.
struct Lateness {
    sim: Sim,
    delays_us: RefCell<Vec<u64>>,
}

impl HostObserver for Lateness {
    fn transfer(&self, _record: &TransferRecord<'_>) {}
    fn device(&self, note: &DeviceNote) {
        if note.kind == NoteKind::BandReady {
            let seen = self.sim.now();
            let delay = seen.total_micros().saturating_sub(note.at.total_micros());
            self.delays_us.borrow_mut().push(delay);
        }
    }
}

fn profile() -> Profile {
    let mut p = Profile::builtin_fast();
    p.timing.band_lines = BAND_LINES;
    p.timing.line_period_us = LINE_PERIOD_US;
    p.timing.warmup_us = 10_000;
    p.timing.jitter_us = 0;
    p.optics.max_height_px = 1_000_000;
    p
}

/// The `q`-th quantile (0..=100) of sorted values, nearest rank.
fn percentile(sorted: &[u64], q: u64) -> u64 {
    let n = sorted.len() as u64;
    let rank = (q * n).div_ceil(100).clamp(1, n);
    sorted[(rank - 1) as usize]
}

fn main() -> ExitCode {
    let args = Args::parse();
    let profile = profile();
    let job = ScanJob::flatbed(100, ScanMode::Gray8, 64, args.bands * BAND_LINES);
    if let Err(e) = job.validate(&profile.optics) {
        eprintln!("error: jitter scan: {e}");
        return ExitCode::from(2);
    }
    let sim = Sim::realtime();
    let host = match InProcessHost::new(Device::new(&profile), Rc::new(sim.clone())) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: enumeration failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let lateness = Rc::new(Lateness {
        sim: sim.clone(),
        delays_us: RefCell::new(Vec::new()),
    });
    host.set_note_observer(lateness.clone());
    let ticker = host.clone();
    sim.spawn(async move { ticker.run_device().await });
    let t = Duration::from_millis(1000);
    let limit = Instant::from_millis(u64::from(args.bands) * 10 + 60_000);
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
            Ok::<u64, scanemu::host::TransferError>(total)
        },
        limit,
    );
    match outcome {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            eprintln!("error: scan failed: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("error: simulation: {e}");
            return ExitCode::FAILURE;
        }
    }
    let mut delays = lateness.delays_us.borrow().clone();
    if delays.len() != args.bands as usize {
        eprintln!(
            "error: saw {} band-ready notes, expected {}",
            delays.len(),
            args.bands
        );
        return ExitCode::FAILURE;
    }
    delays.sort_unstable();
    let (p50, p99, max) = (
        percentile(&delays, 50),
        percentile(&delays, 99),
        delays[delays.len() - 1],
    );
    if args.json {
        println!(
            "{{\"bands\":{},\"period_us\":{},\"p50_us\":{p50},\"p99_us\":{p99},\"max_us\":{max},\"goal_p99_us\":1000}}",
            args.bands,
            u64::from(BAND_LINES) * LINE_PERIOD_US
        );
    } else {
        println!(
            "{} bands at one per {} us: delay p50 {p50} us, p99 {p99} us, max {max} us (goal p99 < 1000 us)",
            args.bands,
            u64::from(BAND_LINES) * LINE_PERIOD_US
        );
    }
    ExitCode::SUCCESS
}
