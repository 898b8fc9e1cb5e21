//! `scanconform`: run the cancel-conformance catalog against a scanner driver.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use scanconform::report::{html as html_report, timeline};
use scanconform::run::{self, RunResult};
use scanconform::scenario::{self, LoadedScenario, ServiceModel};
use scanconform::{drivers, report, rules};

#[derive(Parser)]
#[command(
    name = "scanconform",
    version,
    about = "Replays scripted scan-cancel scenarios against a scanner driver and checks the rules the documentation states."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Services {
    Xp,
    Vista,
    Both,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OneService {
    Xp,
    Vista,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TransportArg {
    /// The in-process virtual bus.
    Inproc,
    /// USB/IP over loopback to an in-process server.
    Usbip,
    /// The rusb host through libusb: the scanlab libusb-1.0 stand-in, USB/IP to an
    /// in-process server (build with `--features libusb`).
    Libusb,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenarios against a driver and print a verdict per scenario run.
    Run {
        /// Driver: reference, legacy-xp, a mutant (see `scanconform drivers`), or
        /// sane:BACKEND[:DEVICE] (a SANE backend library; see conformance/SANE.md).
        #[arg(long, default_value = "reference")]
        driver: String,
        /// Service model(s) to run under.
        #[arg(long, value_enum, default_value = "both")]
        service: Services,
        /// Scenario folder (or one scenario file).
        #[arg(long)]
        scenarios: Option<PathBuf>,
        /// Only scenarios whose id (`group/name`) matches this glob.
        #[arg(long)]
        filter: Option<String>,
        /// Write JUnit XML here, one testcase per scenario run.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Write each run's trace as JSON lines under this folder.
        #[arg(long)]
        traces: Option<PathBuf>,
        /// Write a self-contained HTML report (summary table, SVG timelines) to this file.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
        /// How the driver reaches the emulated scanner: in-process (virtual time), USB/IP over
        /// loopback, or libusb: the driver's rusb host on the scanlab libusb-1.0 stand-in
        /// (emulator/libusb-shim, built beside this program; scanconform re-executes itself
        /// with it on LD_LIBRARY_PATH) over USB/IP. usbip and libusb run in real time, the
        /// real-time subset of the catalog; libusb needs `--features libusb`.
        #[arg(long, value_enum, default_value = "inproc")]
        transport: TransportArg,
        /// Run on the wall clock instead of virtual time (implied by `--transport usbip` and
        /// `--transport libusb`).
        #[arg(long)]
        realtime: bool,
        /// Capture every run's transfers as usbmon pcap files (Wireshark, tshark, umockdev) in
        /// this folder, one per scenario and service: `<group>.<name>.<service>.pcap`.
        #[arg(long, value_name = "DIR")]
        pcap: Option<PathBuf>,
        /// Serve a recording (`scanconform record`, `scanemu import-pcap`) instead of the
        /// emulated scanner; a driver that departs from it fails WIA-FAULT-NO-HANG with the
        /// first divergent transaction.
        #[arg(long, value_name = "DIR")]
        replay: Option<PathBuf>,
        /// With --replay: every departure from the recording is a divergence (a request after
        /// its end, a GET_DESCRIPTOR or CANCEL it does not hold, a pending transfer never
        /// asked for); by default those NAK or are answered as the device would.
        #[arg(long, requires = "replay")]
        strict: bool,
    },
    /// Run one scenario against a device and store the session as a recording (descriptors,
    /// every transaction with its timing, the usbmon capture and the conformance trace; see
    /// fixtures/recordings/FORMAT.md), which `run --replay` and the tests replay.
    Record {
        /// Driver (see `scanconform drivers`).
        #[arg(long, default_value = "reference")]
        driver: String,
        /// How the driver reaches the emulated scanner.
        #[arg(long, value_enum, default_value = "inproc")]
        transport: TransportArg,
        /// The scenario file.
        #[arg(long)]
        scenario: PathBuf,
        /// Service model.
        #[arg(long, value_enum, default_value = "xp")]
        service: OneService,
        /// The recording folder to write (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Build the HTML report of a `--traces` folder (traces and the verdict files beside them).
    Report {
        /// The folder `run --traces` wrote.
        #[arg(long)]
        traces: PathBuf,
        /// The HTML file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a trace as text and optionally draw its timeline as SVG.
    Show {
        /// A trace file (`.jsonl`); a `.verdict.json` beside it marks the violations.
        trace: PathBuf,
        /// Write the SVG timeline here.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// List the scenarios.
    List {
        /// Scenario folder.
        #[arg(long)]
        scenarios: Option<PathBuf>,
    },
    /// List the built-in drivers and, for each mutant, the rule it breaks.
    Drivers {
        /// Output format.
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Print a rule: statement, the quoted sentence and its source, what is checked.
    Explain {
        /// A rule ID such as WIA-RET-SFALSE.
        rule: String,
    },
}

/// An input problem: printed as one line, exit status 2.
struct InputError(String);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match dispatch(cli) {
        Ok(code) => code,
        Err(InputError(msg)) => {
            eprintln!("scanconform: error: {msg}");
            ExitCode::from(2)
        }
    }
}

/// The repository's fixtures folder: `./fixtures` when run from the checkout, else the one the
/// binary was built from.
fn fixtures_dir() -> PathBuf {
    let here = PathBuf::from("fixtures");
    if here.join("scenarios").is_dir() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn load_scenarios(path: Option<PathBuf>) -> Result<(PathBuf, Vec<LoadedScenario>), InputError> {
    let root = path.unwrap_or_else(|| fixtures_dir().join("scenarios"));
    let list = scenario::discover(&root).map_err(|e| InputError(e.to_string()))?;
    for s in &list {
        s.validate(|id| rules::find(id).is_some())
            .map_err(|e| InputError(e.to_string()))?;
    }
    Ok((root, list))
}

/// `<fixtures>/profiles` for a scenarios folder (or file) somewhere under `<fixtures>/scenarios`.
fn profiles_dir_for(scenarios_root: &Path) -> PathBuf {
    // The fixtures folder is the nearest ancestor holding both `scenarios/` and `profiles/`.
    scenarios_root
        .ancestors()
        .find(|p| p.join("profiles").is_dir() && p.join("scenarios").is_dir())
        .map(|p| p.join("profiles"))
        .unwrap_or_else(|| fixtures_dir().join("profiles"))
}

fn dispatch(cli: Cli) -> Result<ExitCode, InputError> {
    match cli.command {
        Command::Run {
            driver,
            service,
            scenarios,
            filter,
            junit,
            traces,
            report,
            format,
            transport,
            realtime,
            pcap,
            replay,
            strict,
        } => {
            let mut options = run::RunOptions::default();
            options.transport = match transport {
                TransportArg::Inproc => run::Transport::InProcess,
                TransportArg::Usbip => run::Transport::UsbIp,
                TransportArg::Libusb => {
                    use_libusb_stand_in()?;
                    run::Transport::Libusb
                }
            };
            options.realtime = realtime;
            options.pcap = pcap;
            options.replay = replay;
            options.strict_replay = strict;
            run(
                driver, service, scenarios, filter, junit, traces, report, format, options,
            )
        }
        Command::Record {
            driver,
            transport,
            scenario,
            service,
            out,
        } => record(driver, transport, &scenario, service, &out),
        Command::Report { traces, out } => {
            let runs = html_report::load_dir(&traces).map_err(InputError)?;
            write_report(&out, &runs)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { trace, svg } => {
            let (t, verdict) = html_report::load_trace(&trace).map_err(InputError)?;
            print!("{}", t.render_text());
            if let Some(path) = svg {
                let (title, marks) = match &verdict {
                    Some(v) => (html_report::run_title(v), v.marks()),
                    None => (trace.display().to_string(), Vec::new()),
                };
                let picture =
                    timeline::render_svg(&t, &marks, &timeline::SvgOptions::standalone(title));
                std::fs::write(&path, picture)
                    .map_err(|e| InputError(format!("{}: {e}", path.display())))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::List { scenarios } => {
            let (_, list) = load_scenarios(scenarios)?;
            for s in &list {
                let services: Vec<&str> = s.scenario.services.iter().map(|m| m.name()).collect();
                println!(
                    "{:<44} [{}] {}",
                    s.id,
                    services.join(","),
                    s.scenario.description
                );
            }
            println!("{} scenarios", list.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Drivers { format } => {
            let expected = drivers::load_expected_failures(&fixtures_dir().join("mutants.json"))
                .map_err(|e| InputError(e.to_string()))?;
            for d in drivers::BUILTIN {
                let breaks = expected.get(d.name).map(String::as_str);
                match format {
                    Format::Json => println!(
                        "{}",
                        serde_json::json!({"name": d.name, "description": d.description, "breaks": breaks})
                    ),
                    Format::Human => println!(
                        "{:<30} {:<22} {}",
                        d.name,
                        breaks.unwrap_or("-"),
                        d.description
                    ),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain { rule } => match rules::explain(&rule) {
            Some(text) => {
                println!("{text}");
                Ok(ExitCode::SUCCESS)
            }
            None => Err(InputError(format!(
                "unknown rule {rule:?}; known rules: {}",
                rules::catalog()
                    .iter()
                    .map(|r| r.id)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        },
    }
}

/// Makes this process run on the libusb-1.0 stand-in for `--transport libusb` (re-executing it
/// once if needed), or says why it cannot.
fn use_libusb_stand_in() -> Result<(), InputError> {
    #[cfg(feature = "libusb")]
    return scanconform::libusb::transport::ensure_stand_in().map_err(InputError);
    #[cfg(not(feature = "libusb"))]
    return Err(InputError(run::LIBUSB_FEATURE_MISSING.into()));
}

/// `scanconform record`: one scenario, one run, one recording folder.
fn record(
    driver: String,
    transport: TransportArg,
    scenario_path: &Path,
    service: OneService,
    out: &Path,
) -> Result<ExitCode, InputError> {
    let d = drivers::instantiate(&driver).map_err(|e| InputError(e.to_string()))?;
    if !scenario_path.is_file() {
        return Err(InputError(format!(
            "--scenario {}: not a scenario file",
            scenario_path.display()
        )));
    }
    // The id is `group/name` below the nearest `scenarios` folder, as in catalog runs.
    let root = scenario_path
        .ancestors()
        .skip(1)
        .find(|p| p.file_name().is_some_and(|n| n == "scenarios"))
        .or_else(|| scenario_path.parent())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let s = scenario::load(scenario_path, &root).map_err(|e| InputError(e.to_string()))?;
    s.validate(|id| rules::find(id).is_some())
        .map_err(|e| InputError(e.to_string()))?;
    let s = &s;
    let service = match service {
        OneService::Xp => ServiceModel::Xp,
        OneService::Vista => ServiceModel::Vista,
    };
    let mut options = scanconform::record::RecordOptions::default();
    options.transport = match transport {
        TransportArg::Inproc => run::Transport::InProcess,
        TransportArg::Usbip => run::Transport::UsbIp,
        TransportArg::Libusb => {
            return Err(InputError(
                "record --transport libusb is not supported; use inproc or usbip".into(),
            ))
        }
    };
    let r = scanconform::record::record(
        s,
        service,
        &driver,
        d,
        &profiles_dir_for(&root),
        &options,
        out,
    )
    .map_err(|e| InputError(e.to_string()))?;
    println!(
        "recorded {} [{}] with {}: {} trace events, {} -> {}",
        r.scenario,
        service.name(),
        driver,
        r.trace.events.len(),
        if r.passed() { "pass" } else { "FAIL" },
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
fn run(
    driver: String,
    service: Services,
    scenarios: Option<PathBuf>,
    filter: Option<String>,
    junit: Option<PathBuf>,
    traces: Option<PathBuf>,
    report_html: Option<PathBuf>,
    format: Format,
    options: run::RunOptions,
) -> Result<ExitCode, InputError> {
    if let Some(spec) = driver.strip_prefix("sane:") {
        let mut opts = scanconform::sane::CliOptions::new(fixtures_dir());
        (opts.scenarios, opts.filter, opts.junit, opts.traces) = (scenarios, filter, junit, traces);
        opts.json = format == Format::Json;
        let code = scanconform::sane::cli_run(spec, &opts).map_err(InputError)?;
        return Ok(ExitCode::from(code));
    }
    drivers::instantiate(&driver).map_err(|e| InputError(e.to_string()))?;
    let (root, mut list) = load_scenarios(scenarios)?;
    if let Some(glob) = &filter {
        let m = globset::Glob::new(glob)
            .map_err(|e| InputError(format!("--filter {glob:?}: {e}")))?
            .compile_matcher();
        list.retain(|s| m.is_match(&s.id));
        if list.is_empty() {
            return Err(InputError(format!("--filter {glob:?} matches no scenario")));
        }
    }
    let profiles = profiles_dir_for(&root);
    let services: Vec<ServiceModel> = match service {
        Services::Xp => vec![ServiceModel::Xp],
        Services::Vista => vec![ServiceModel::Vista],
        Services::Both => vec![ServiceModel::Xp, ServiceModel::Vista],
    };
    let plan: Vec<(&LoadedScenario, ServiceModel)> = list
        .iter()
        .flat_map(|s| {
            services
                .iter()
                .filter(|m| s.scenario.services.contains(m))
                .map(move |m| (s, *m))
        })
        .collect();
    let progress = indicatif::ProgressBar::new(plan.len() as u64);
    if format == Format::Json {
        progress.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut results: Vec<RunResult> = Vec::with_capacity(plan.len());
    let stdout = std::io::stdout();
    if format == Format::Human {
        progress.suspend(|| println!("{}", report::table_header()));
    }
    for (s, model) in plan {
        progress.set_message(s.id.clone());
        let d = drivers::instantiate(&driver).map_err(|e| InputError(e.to_string()))?;
        if options.realtime || options.transport != run::Transport::InProcess {
            let probe = drivers::instantiate(&driver).map_err(|e| InputError(e.to_string()))?;
            let skip = run::realtime_skip_reason(s, model, &driver, probe, &profiles)
                .map_err(|e| InputError(e.to_string()))?;
            if let Some(why) = skip {
                progress.suspend(|| eprintln!("skipped {} [{}]: {why}", s.id, model.name()));
                progress.inc(1);
                continue;
            }
        }
        let r = run::run_with(s, model, &driver, d, &profiles, &options)
            .map_err(|e| InputError(e.to_string()))?;
        if let Some(dir) = &traces {
            report::write_trace(dir, &r)
                .map_err(|e| InputError(format!("{}: {e}", dir.display())))?;
        }
        match format {
            Format::Human => progress.suspend(|| println!("{}", report::table_row(&r))),
            Format::Json => {
                let line = serde_json::to_string(&report::json_run(&r)).unwrap_or_default();
                let _ = writeln!(stdout.lock(), "{line}");
            }
        }
        progress.inc(1);
        results.push(r);
    }
    progress.finish_and_clear();
    let failed = results.iter().filter(|r| !r.passed()).count();
    let passed = results.len() - failed;
    if format == Format::Human {
        for r in results.iter().filter(|r| !r.passed()) {
            print!("{}", report::failure_details(r));
        }
        let wasted: u32 = results
            .iter()
            .filter_map(|r| r.report.metrics.bands_wasted)
            .sum();
        println!(
            "driver {driver}: {} scenario runs, {wasted} bands wasted after CancelPendingIO in total",
            results.len()
        );
        println!("{passed} passed, {failed} failed");
    }
    if let Some(path) = &junit {
        std::fs::write(path, report::junit(&driver, &results))
            .map_err(|e| InputError(format!("{}: {e}", path.display())))?;
    }
    if let Some(path) = &report_html {
        let runs: Vec<_> = results
            .iter()
            .map(html_report::ReportRun::from_run)
            .collect();
        write_report(path, &runs)?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Writes the HTML report of `runs` to `path`.
fn write_report(path: &Path, runs: &[html_report::ReportRun]) -> Result<(), InputError> {
    std::fs::write(path, html_report::render_html(runs))
        .map_err(|e| InputError(format!("{}: {e}", path.display())))
}
