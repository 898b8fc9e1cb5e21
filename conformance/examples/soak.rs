//! Soak: the reference driver through many scenario runs in virtual time, watching for leaks.
//!
//! Loops over the catalog (every scenario under each of its service models, each in a fresh
//! simulation) until `--runs` runs are done, sampling the process's resident memory (VmRSS) and
//! open file descriptors (/proc/self/fd) every `--sample-every` runs. After the first tenth of
//! the runs (allocator and caches warm), memory may grow by at most `--rss-slack-kib` and the
//! descriptor count must not grow at all; otherwise the soak fails (exit 1). A run that fails a
//! rule also fails the soak. Bad arguments exit 2.
//!
//! ```sh
//! cargo run --release -p scanconform --example soak -- --runs 10000
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use scanconform::scenario;
use scanconform::{drivers, rules, run};

/// Runs the reference driver through the catalog many times and checks memory and fds stay flat.
#[derive(Parser)]
struct Args {
    /// Scenario runs in total.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(10..))]
    runs: u64,
    /// Runs between two samples.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    sample_every: u64,
    /// Memory growth allowed after warm-up, in KiB.
    #[arg(long, default_value_t = 4096)]
    rss_slack_kib: u64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// One observation of the process.
#[derive(Clone, Copy)]
struct Sample {
    runs: u64,
    rss_kib: u64,
    fds: u64,
    wall_s: f64,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn main() -> ExitCode {
    let args = Args::parse();
    let catalog = match scenario::discover_valid(&fixtures().join("scenarios"), |id| {
        rules::find(id).is_some()
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let profiles = fixtures().join("profiles");
    let plan: Vec<_> = catalog
        .iter()
        .flat_map(|s| s.scenario.services.iter().map(move |&m| (s, m)))
        .collect();
    if plan.is_empty() {
        eprintln!(
            "error: {}: no scenario runs",
            fixtures().join("scenarios").display()
        );
        return ExitCode::from(2);
    }
    let start = std::time::Instant::now();
    let sample = |runs| Sample {
        runs,
        rss_kib: rss_kib(),
        fds: open_fds(),
        wall_s: start.elapsed().as_secs_f64(),
    };
    let mut samples = vec![sample(0)];
    let (mut failures, mut virtual_us) = (0u64, 0u64);
    for i in 0..args.runs {
        let (s, service) = plan[(i % plan.len() as u64) as usize];
        let driver = match drivers::instantiate("reference") {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        match run::run(s, service, "reference", driver, &profiles) {
            Ok(r) => {
                virtual_us += r.trace.events.last().map_or(0, |e| e.at_us);
                if !r.passed() {
                    failures += 1;
                    eprintln!("run {i}: {} [{}] failed a rule", s.id, service.name());
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
        if (i + 1) % args.sample_every == 0 || i + 1 == args.runs {
            let now = sample(i + 1);
            if !args.json {
                println!(
                    "{:>7} runs  {:>8.2} s  VmRSS {:>7} KiB  fds {}",
                    now.runs, now.wall_s, now.rss_kib, now.fds
                );
            }
            samples.push(now);
        }
    }
    // The baseline is the first sample at or after a tenth of the runs.
    let warm = samples
        .iter()
        .copied()
        .find(|s| s.runs >= args.runs / 10 && s.runs > 0)
        .unwrap_or(samples[samples.len() - 1]);
    let last = samples[samples.len() - 1];
    let peak_rss = samples
        .iter()
        .filter(|s| s.runs >= warm.runs)
        .map(|s| s.rss_kib)
        .max()
        .unwrap_or(last.rss_kib);
    let max_fds = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    let rss_growth = peak_rss.saturating_sub(warm.rss_kib);
    let rss_flat = rss_growth <= args.rss_slack_kib;
    let fds_flat = max_fds <= samples[0].fds;
    if args.json {
        println!(
            "{{\"runs\":{},\"catalog_runs\":{},\"failures\":{failures},\"virtual_us\":{virtual_us},\"wall_s\":{:.3},\
\"rss_start_kib\":{},\"rss_warm_kib\":{},\"rss_peak_kib\":{peak_rss},\"rss_end_kib\":{},\"rss_growth_kib\":{rss_growth},\
\"rss_flat\":{rss_flat},\"fds_start\":{},\"fds_max\":{max_fds},\"fds_end\":{},\"fds_flat\":{fds_flat}}}",
            args.runs,
            plan.len(),
            last.wall_s,
            samples[0].rss_kib,
            warm.rss_kib,
            last.rss_kib,
            samples[0].fds,
            last.fds
        );
    } else {
        println!(
            "{} runs ({} per catalog pass) in {:.2} s wall, {:.1} s virtual; {failures} failed",
            args.runs,
            plan.len(),
            last.wall_s,
            virtual_us as f64 / 1e6
        );
        println!(
            "memory: {} KiB at start, {} KiB after warm-up ({} runs), peak {peak_rss} KiB after: {}",
            samples[0].rss_kib,
            warm.rss_kib,
            warm.runs,
            if rss_flat { "flat" } else { "GROWING" }
        );
        println!(
            "file descriptors: {} at start, at most {max_fds}: {}",
            samples[0].fds,
            if fds_flat { "flat" } else { "GROWING" }
        );
    }
    if failures > 0 || !rss_flat || !fds_flat {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
