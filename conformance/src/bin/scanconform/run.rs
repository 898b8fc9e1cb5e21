//! `scanconform run`: one pipeline for every driver kind.
//!
//! First every input is checked, before anything is printed: the driver (a built-in name,
//! `exec:'CMD ARGS'` or `sane:BACKEND[:DEVICE]`), the options against the driver's kind (an
//! option that cannot apply is refused with one line saying why, never ignored), the output
//! paths (`--junit`, `--report`, `--traces`, `--pcap`), the scenarios and `--filter`, the
//! scenarios' profiles (WIA) or the backend and its device (SANE). Then each scenario run
//! becomes a [`RunRecord`] and goes through one [`Pipeline`]: trace files, the table row or
//! JSON line, and at the end the failure details, the summary, JUnit and the HTML report.
//!
//! SIGINT or SIGTERM ([`super::interrupt`]) stops the run at the next scenario run boundary:
//! runs under way are finished, runs not started are listed as not run (skipped in JUnit,
//! counted in the report), every output of the finished runs is written, one line on stderr
//! says what, and the exit status is 130 or 143.
//!
//! About 800 lines: `run` for the three driver kinds (WIA 1.0, WIA 2.0, SANE), one function each,
//! and the one results pipeline they share (`Pipeline`: table, JUnit, report, traces, captures,
//! progress, signals), which belongs with its callers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _};
use scanconform::record::{self, DriverModel};
use scanconform::report::{self, junit::junit_with_not_run, RunRecord, TraceKind, Verdict};
use scanconform::run::{self as wia_run, parallel, RunOptions, Transport};
use scanconform::sane::{self, expected::ExpectedFailures, runner::Session};
use scanconform::scenario::wia2::LoadedScenario2;
use scanconform::scenario::{LoadedScenario, ServiceModel};
use scanconform::trace::Kind;
use scanconform::{drivers, sane::scenario as sane_scenario};

use super::interrupt::{self, Interrupted};
use super::output::line;
use super::DRIVER_FORMS;
use super::{
    fixtures_dir, load_scenarios, load_scenarios2, profiles_dir_for, Format, Services, TransportArg,
};

/// The options of `scanconform run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Driver: reference, legacy-xp, a mutant, reference-wia2 or a mutant2-* (a WIA 2.0 stream
    /// driver: the WIA 2.0 catalog, conformance/WIA2.md; see `scanconform drivers`), exec:'CMD ARGS' (an
    /// external driver process speaking conformance/DRIVER-PROTOCOL.md, e.g.
    /// exec:'python3 conformance/examples/reference_driver.py') or sane:BACKEND[:DEVICE] (a
    /// SANE backend library; see conformance/SANE.md).
    #[arg(long, default_value = "reference")]
    driver: String,
    /// Service model(s) to run under (WIA drivers; default both).
    #[arg(long, value_enum)]
    service: Option<Services>,
    /// Scenario folder (or one scenario file).
    #[arg(long)]
    scenarios: Option<PathBuf>,
    /// Only scenarios whose id (`group/name`) matches this glob.
    #[arg(long)]
    filter: Option<String>,
    /// Write JUnit XML here, one testcase per scenario run.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Write each run's trace as JSON lines under this folder, with its verdict beside it.
    #[arg(long)]
    traces: Option<PathBuf>,
    /// Write a self-contained HTML report (summary table, SVG timelines) to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    /// How a WIA driver reaches the emulated scanner (default inproc): in-process (virtual
    /// time), USB/IP over loopback, or libusb: the driver's rusb host on the scanlab
    /// libusb-1.0 stand-in (emulator/libusb-shim, built beside this program) over USB/IP, run
    /// by the scanconform-libusb beside this program (built by `cargo build -p scanconform
    /// --features libusb`) with the stand-in on LD_LIBRARY_PATH. usbip and libusb run in real
    /// time, the real-time subset of the catalog.
    #[arg(long, value_enum)]
    transport: Option<TransportArg>,
    /// Run on the wall clock instead of virtual time (implied by `--transport usbip` and
    /// `--transport libusb`; WIA drivers).
    #[arg(long)]
    realtime: bool,
    /// Capture every run's USB transfers as usbmon pcap files (Wireshark, tshark, umockdev) in
    /// this folder, one per scenario run: `<group>.<name>.<service>.pcap` (WIA),
    /// `sane.<name>.pcap` (a SANE backend driving the emulated scanner, such as sane:epson2).
    #[arg(long, value_name = "DIR")]
    pcap: Option<PathBuf>,
    /// Serve a recording (`scanconform record`, `scanemu import-pcap`) instead of the
    /// emulated scanner (WIA drivers): in-process, or exported over USB/IP with `--transport
    /// usbip` or `libusb`; a driver that departs from it fails WIA-FAULT-NO-HANG (WIA2-NO-HANG)
    /// with the first divergent transaction. A WIA 1.0 recording takes a WIA 1.0 driver and a
    /// WIA 2.0 one a WIA 2.0 driver (the recording's provenance names its model; one without
    /// is WIA 1.0).
    #[arg(long, value_name = "DIR")]
    replay: Option<PathBuf>,
    /// With --replay: every departure from the recording is a divergence (a request after
    /// its end, a GET_DESCRIPTOR or CANCEL it does not hold, a pending transfer never
    /// asked for); by default those NAK or are answered as the device would.
    #[arg(long, requires = "replay")]
    strict: bool,
    /// Scenario runs at once, each on a thread of its own with its own simulated scanner and
    /// driver (an exec: driver: its own process). Default: the number of CPUs. The output
    /// (table, JSON, --traces, --junit, --report, --pcap) is the same byte for byte whatever
    /// N: runs are independent and are reported in catalog order. Real-time runs
    /// (--transport usbip or libusb, --realtime) and SANE backends run one at a time whatever
    /// N: they measure wall-clock latency, and a SANE backend's state is process-wide.
    #[arg(long, value_name = "N")]
    jobs: Option<std::num::NonZeroUsize>,
}

/// Which pipeline a `--driver` takes.
pub enum DriverKind {
    /// A WIA minidriver: built-in or `exec:`.
    Wia,
    /// A WIA 2.0 stream minidriver (`reference-wia2`, a `mutant2-*`): the WIA 2.0 catalogue
    /// (conformance/WIA2.md).
    Wia2,
    /// A SANE backend: what follows `sane:`.
    Sane(String),
}

impl DriverKind {
    /// The kind of `driver`, or the unknown-driver error naming every form.
    pub fn parse(driver: &str) -> anyhow::Result<DriverKind> {
        if let Some(spec) = driver.strip_prefix("sane:") {
            return Ok(DriverKind::Sane(spec.to_string()));
        }
        if driver.starts_with("exec:") || drivers::find(driver).is_some() {
            return Ok(DriverKind::Wia);
        }
        if drivers::wia2::find(driver).is_some() {
            return Ok(DriverKind::Wia2);
        }
        bail!(
            "unknown driver {driver:?}: built-in drivers are {}; or {DRIVER_FORMS}",
            drivers::BUILTIN
                .iter()
                .map(|d| d.name)
                .chain(drivers::wia2::BUILTIN2.iter().map(|d| d.name))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// `scanconform run`.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut kind = DriverKind::parse(&args.driver)?;
    // An exec: driver runs the WIA 2.0 catalog when given WIA 2.0 scenarios; its hello must
    // then name the wia2 contract.
    let wia2_scenarios = args
        .scenarios
        .as_deref()
        .is_some_and(|p| super::in_wia2_folder(p) == Some(true));
    if matches!(kind, DriverKind::Wia) && args.driver.starts_with("exec:") && wia2_scenarios {
        kind = DriverKind::Wia2;
    }
    refuse_what_cannot_apply(&kind, &args)?;
    if args.transport == Some(TransportArg::Libusb) {
        use_libusb_stand_in()?;
    }
    let filter = args.filter.as_deref().map(Filter::new).transpose()?;
    match kind {
        DriverKind::Wia => run_wia(&args, filter.as_ref()),
        DriverKind::Wia2 => run_wia2(&args, filter.as_ref()),
        DriverKind::Sane(spec) => run_sane(&spec, &args, filter.as_ref()),
    }
}

/// Refuses, with one line each, the options that cannot apply to the driver's kind.
fn refuse_what_cannot_apply(kind: &DriverKind, args: &RunArgs) -> anyhow::Result<()> {
    let driver = &args.driver;
    match kind {
        DriverKind::Sane(_) => {
            if args.service.is_some() {
                bail!("--service does not apply to {driver}: SANE backends have no WIA service model (xp, vista)");
            }
            if let Some(t) = args.transport {
                bail!(
                    "--transport {} does not apply to {driver}: a SANE backend reaches its device itself (sane:epson2 through the libusb stand-in over USB/IP)",
                    t.name()
                );
            }
            if args.realtime {
                bail!(
                    "--realtime does not apply to {driver}: SANE runs always run on the wall clock"
                );
            }
            if args.replay.is_some() {
                bail!("--replay does not apply to {driver}: a recording replays a WIA driver's USB session");
            }
        }
        DriverKind::Wia2 => {
            if let Some(svc) = args.service {
                bail!(
                    "--service {} does not apply to {driver}: WIA 2.0 has one service, the WIA service of Windows Vista and later (conformance/WIA2.md)",
                    format!("{svc:?}").to_lowercase()
                );
            }
        }
        DriverKind::Wia => {}
    }
    Ok(())
}

/// Makes this process run on the libusb-1.0 stand-in for `--transport libusb`, or says why it
/// cannot. `scanconform` (whatever its features) executes `scanconform-libusb` beside it on the
/// stand-in; `scanconform-libusb` (this program built with the `libusb` feature) re-executes
/// itself once if needed. See `scanconform::libusb::stand_in`.
fn use_libusb_stand_in() -> anyhow::Result<()> {
    #[cfg(feature = "libusb")]
    if env!("CARGO_BIN_NAME") == scanconform::libusb::stand_in::LIBUSB_PROGRAM {
        return Ok(scanconform::libusb::transport::ensure_stand_in()?);
    }
    Err(scanconform::libusb::stand_in::exec_libusb_program("--transport libusb").into())
}

/// The output paths, checked last before the run starts (so that bad input leaves no folder
/// behind): the folders exist (`--traces` and `--pcap` are created), and the files can be
/// written.
struct Outputs {
    junit: Option<PathBuf>,
    report: Option<PathBuf>,
    traces: Option<PathBuf>,
    pcap: Option<PathBuf>,
}

impl Outputs {
    fn check(args: &RunArgs) -> anyhow::Result<Outputs> {
        for (option, path) in [("--junit", &args.junit), ("--report", &args.report)] {
            if let Some(path) = path {
                check_writable(option, path)?;
            }
        }
        for (option, dir) in [("--traces", &args.traces), ("--pcap", &args.pcap)] {
            if let Some(dir) = dir {
                if dir.exists() && !dir.is_dir() {
                    bail!("{option} {}: is a file, not a folder", dir.display());
                }
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("{option} {}", dir.display()))?;
            }
        }
        Ok(Outputs {
            junit: args.junit.clone(),
            report: args.report.clone(),
            traces: args.traces.clone(),
            pcap: args.pcap.clone(),
        })
    }
}

/// Whether the file `path` can be written (its folder exists, it is not a folder, it opens
/// for writing), leaving no file behind that was not there.
fn check_writable(option: &str, path: &Path) -> anyhow::Result<()> {
    let name = || format!("{option} {}", path.display());
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        bail!("{}: the folder {} does not exist", name(), folder.display());
    }
    if path.is_dir() {
        bail!("{}: is a folder", name());
    }
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .with_context(name)?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// `--filter`: scenario ids matching a glob.
struct Filter {
    glob: String,
    matcher: globset::GlobMatcher,
}

impl Filter {
    fn new(glob: &str) -> anyhow::Result<Filter> {
        let matcher = globset::Glob::new(glob)
            .with_context(|| format!("--filter {glob:?}"))?
            .compile_matcher();
        Ok(Filter {
            glob: glob.to_string(),
            matcher,
        })
    }

    /// Keeps the items whose id matches; none left is an error.
    fn apply<T>(&self, items: &mut Vec<T>, id: impl Fn(&T) -> &str) -> anyhow::Result<()> {
        items.retain(|s| self.matcher.is_match(id(s)));
        if items.is_empty() {
            bail!("--filter {:?} matches no scenario", self.glob);
        }
        Ok(())
    }
}

/// The options of every WIA run of `args` (each worker builds its own: they hold nothing that
/// crosses threads).
fn wia_options(args: &RunArgs) -> RunOptions {
    let mut options = RunOptions::default();
    options.transport = match args.transport.unwrap_or(TransportArg::Inproc) {
        TransportArg::Inproc => Transport::InProcess,
        TransportArg::Usbip => Transport::UsbIp,
        TransportArg::Libusb => Transport::Libusb,
    };
    options.realtime = args.realtime;
    options.pcap = args.pcap.clone();
    options.replay = args.replay.clone();
    options.strict_replay = args.strict;
    options
}

/// A WIA driver against the catalog.
fn run_wia(args: &RunArgs, filter: Option<&Filter>) -> anyhow::Result<ExitCode> {
    let driver = &args.driver;
    drivers::instantiate(driver).map_err(|e| anyhow!(e))?;
    let options = wia_options(args);
    let realtime = options.realtime || options.transport != Transport::InProcess;
    let (root, mut list) = load_scenarios(args.scenarios.clone())?;
    if let Some(f) = filter {
        f.apply(&mut list, |s| &s.id)?;
    }
    let profiles = profiles_dir_for(&root);
    let services: Vec<ServiceModel> = match args.service.unwrap_or(Services::Both) {
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
    preflight_wia(&plan, &profiles, &options, driver)?;
    let outputs = Outputs::check(args)?;
    let mut pipe = Pipeline::start(driver, args.format, &outputs, None, plan.len())?;
    // Real-time runs measure wall-clock latency: one at a time.
    let workers = match args.jobs {
        _ if realtime => std::num::NonZeroUsize::MIN,
        Some(n) => n,
        None => parallel::default_workers(),
    };
    let work = |(s, model): (&LoadedScenario, ServiceModel)| -> anyhow::Result<WiaRun> {
        let not_run = |abandoned| NotRun {
            scenario: s.id.clone(),
            service: Some(model.name().to_string()),
            abandoned,
        };
        if interrupt::received().is_some() {
            return Ok(WiaRun::NotRun(not_run(false)));
        }
        let options = wia_options(args);
        if realtime {
            let probe = drivers::instantiate(driver).map_err(|e| anyhow!(e))?;
            if let Some(why) = wia_run::realtime_skip_reason(s, model, driver, probe, &profiles)? {
                return Ok(WiaRun::Skipped(format!(
                    "skipped {} [{}]: {why}",
                    s.id,
                    model.name()
                )));
            }
        }
        let d = drivers::instantiate(driver).map_err(|e| anyhow!(e))?;
        let r = wia_run::run_with(s, model, driver, d, &profiles, &options)?;
        // A driver process that faulted once the signal was in may have been hit by it (a
        // Ctrl-C reaches the terminal's whole process group): the run is abandoned, not judged.
        let faulted = r
            .trace
            .events
            .iter()
            .any(|e| matches!(e.kind, Kind::DriverFault { .. }));
        if faulted && interrupt::received().is_some() {
            if let Some(dir) = &options.pcap {
                let _ = std::fs::remove_file(dir.join(wia_run::pcap_file_name(&s.id, model)));
            }
            return Ok(WiaRun::NotRun(not_run(true)));
        }
        Ok(WiaRun::Done(Box::new(RunRecord::wia(&r)), s.id.clone()))
    };
    if let Some(e) = pipe.take_in_order(plan, workers, work) {
        return Err(e);
    }
    pipe.finish(TraceKind::Wia, None, None)
}

/// What a worker hands back for one WIA scenario run.
enum WiaRun {
    /// The run's record, and its scenario id (for the progress line).
    Done(Box<RunRecord>, String),
    /// A real-time run left out: the line saying why.
    Skipped(String),
    /// Not started, or abandoned: a signal asked the run to stop.
    NotRun(NotRun),
}

/// A scenario run a signal kept from starting, or abandoned (its driver process faulted after
/// the signal; nothing of it is kept).
pub struct NotRun {
    /// `<group>/<name>`.
    scenario: String,
    /// The service model (WIA runs).
    service: Option<String>,
    /// Started, then abandoned.
    abandoned: bool,
}

/// A WIA 2.0 driver against the WIA 2.0 catalog (`fixtures/scenarios/wia2`), `--jobs` runs at
/// once as for WIA 1.0 (each worker makes its own driver instances), reported in catalog
/// order.
fn run_wia2(args: &RunArgs, filter: Option<&Filter>) -> anyhow::Result<ExitCode> {
    let driver = &args.driver;
    let factory = || drivers::wia2::instantiate(driver).map_err(|e| anyhow!(e));
    factory()?;
    let options = wia_options(args);
    let realtime = options.realtime || options.transport != Transport::InProcess;
    let (root, mut list) = load_scenarios2(args.scenarios.clone())?;
    if let Some(f) = filter {
        f.apply(&mut list, |s| &s.id)?;
    }
    let profiles = profiles_dir_for(&root);
    for s in &list {
        wia_run::wia2::load_profile(s, &profiles)?;
    }
    if let Some(dir) = &options.replay {
        record::load_for_replay(dir, DriverModel::Wia2, driver)?;
    }
    let outputs = Outputs::check(args)?;
    let mut pipe = Pipeline::start(driver, args.format, &outputs, None, list.len())?;
    // Real-time runs measure wall-clock latency: one at a time.
    let workers = match args.jobs {
        _ if realtime => std::num::NonZeroUsize::MIN,
        Some(n) => n,
        None => parallel::default_workers(),
    };
    let work = |s: &LoadedScenario2| -> anyhow::Result<WiaRun> {
        let not_run = |abandoned| NotRun {
            scenario: s.id.clone(),
            service: None,
            abandoned,
        };
        if interrupt::received().is_some() {
            return Ok(WiaRun::NotRun(not_run(false)));
        }
        let options = wia_options(args);
        if realtime {
            let skip = wia_run::wia2::realtime_skip_reason(s, driver, factory()?, &profiles)?;
            if let Some(why) = skip {
                return Ok(WiaRun::Skipped(format!("skipped {}: {why}", s.id)));
            }
        }
        let r = wia_run::wia2::run2_with(s, driver, factory()?, &profiles, &options)?;
        // As for WIA 1.0: a driver process that faulted once the signal was in is abandoned.
        let faulted = r
            .trace
            .events
            .iter()
            .any(|e| matches!(e.kind, Kind::DriverFault { .. }));
        if faulted && interrupt::received().is_some() {
            if let Some(dir) = &options.pcap {
                let _ = std::fs::remove_file(dir.join(wia_run::wia2::pcap_file_name(&s.id)));
            }
            return Ok(WiaRun::NotRun(not_run(true)));
        }
        Ok(WiaRun::Done(Box::new(RunRecord::wia2(&r)), s.id.clone()))
    };
    if let Some(e) = pipe.take_in_order(list.iter().collect(), workers, work) {
        return Err(e);
    }
    pipe.finish(TraceKind::Wia, None, None)
}

/// What a WIA run would refuse once it started, found before the table begins: each
/// scenario's profile and scan settings, and the recording of `--replay` (a WIA 2.0 one
/// included).
fn preflight_wia(
    plan: &[(&LoadedScenario, ServiceModel)],
    profiles: &Path,
    options: &RunOptions,
    driver: &str,
) -> anyhow::Result<()> {
    let mut seen = BTreeSet::new();
    for (s, _) in plan {
        if !seen.insert(&s.id) {
            continue;
        }
        wia_run::load_profile(s, profiles)?;
    }
    if let Some(dir) = &options.replay {
        record::load_for_replay(dir, DriverModel::Wia1, driver)?;
    }
    Ok(())
}

/// A SANE backend against its scenarios.
fn run_sane(spec: &str, args: &RunArgs, filter: Option<&Filter>) -> anyhow::Result<ExitCode> {
    let target = sane::target::resolve(spec)?;
    let with_device = sane::device::needs_device(&target.name);
    if args.pcap.is_some() && !with_device {
        bail!(
            "--pcap does not apply to {}: the backend reaches no USB device the runner serves (a backend driving the emulated scanner over USB/IP, such as sane:epson2, can be captured)",
            args.driver
        );
    }
    let fixtures = fixtures_dir();
    let list_path = sane::expected_path(&fixtures, &target.name);
    let list = ExpectedFailures::load(&list_path, |id| sane::rules::find(id).is_some())?;
    let root = args
        .scenarios
        .clone()
        .unwrap_or_else(|| sane::scenario_root(&fixtures, &target.name));
    let mut scenarios = sane_scenario::discover(&root)?;
    for s in &scenarios {
        s.validate(|id| sane::rules::find(id).is_some())?;
    }
    if let Some(f) = filter {
        f.apply(&mut scenarios, |s| &s.id)?;
    }
    let outputs = Outputs::check(args)?;
    let config = sane::config_dir(&fixtures, &target.name);
    let mut session = if with_device {
        Session::prepare_with_device(target, config.as_deref(), &fixtures.join("profiles"))?
    } else {
        Session::prepare(target, config.as_deref())?
    };
    if let Some(dir) = &outputs.pcap {
        session.capture_into(dir);
    }
    let driver = format!("sane:{}", session.target.name);
    let preamble = format!(
        "SANE backend {} ({}), device {:?}, SANE_CONFIG_DIR {}",
        session.target.name,
        session.target.library.display(),
        session.device,
        session
            .config_dir
            .as_ref()
            .map_or_else(|| "(inherited)".to_string(), |d| d.display().to_string())
    );
    let began = Instant::now();
    let mut pipe = Pipeline::start(
        &driver,
        args.format,
        &outputs,
        Some(preamble),
        scenarios.len(),
    )?;
    for s in &scenarios {
        if interrupt::received().is_some() {
            pipe.not_run.push(NotRun {
                scenario: s.id.clone(),
                service: None,
                abandoned: false,
            });
            continue;
        }
        pipe.progress.set_message(s.id.clone());
        pipe.add(RunRecord::sane(session.run(s), &driver, &list))?;
    }
    let tail = session.has_device().then(|| {
        format!(
            "ran in {:.1} s against the emulated device",
            began.elapsed().as_secs_f64()
        )
    });
    pipe.finish(TraceKind::Sane, Some(&list_path), tail)
}

/// Where every run's record goes, whatever the driver kind.
struct Pipeline<'a> {
    driver: &'a str,
    format: Format,
    outputs: &'a Outputs,
    progress: indicatif::ProgressBar,
    records: Vec<RunRecord>,
    /// Runs a signal kept from starting.
    not_run: Vec<NotRun>,
    /// When the runs began (the report's `when` without `--traces`).
    began: std::time::SystemTime,
}

impl<'a> Pipeline<'a> {
    /// Prints `preamble` and the table header (human format) and shows progress over `runs`
    /// on stderr (`progress.rs`: a terminal only, after a couple of seconds).
    fn start(
        driver: &'a str,
        format: Format,
        outputs: &'a Outputs,
        preamble: Option<String>,
        runs: usize,
    ) -> anyhow::Result<Pipeline<'a>> {
        let progress = super::progress::runs_bar(runs as u64, format == Format::Json);
        if format != Format::Json {
            progress.suspend(|| -> std::io::Result<()> {
                if let Some(p) = preamble {
                    line(p)?;
                }
                line(report::table_header())
            })?;
        }
        Ok(Pipeline {
            driver,
            format,
            outputs,
            progress,
            records: Vec::with_capacity(runs),
            not_run: Vec::new(),
            began: std::time::SystemTime::now(),
        })
    }

    /// One finished run: its trace files, its row or JSON line.
    fn add(&mut self, r: RunRecord) -> anyhow::Result<()> {
        if let Some(dir) = &self.outputs.traces {
            report::write_trace(dir, &r).context("--traces")?;
        }
        match self.format {
            Format::Human => self.progress.suspend(|| line(report::table_row(&r)))?,
            Format::Json => line(serde_json::to_string(&report::json_run(&r))?)?,
        }
        self.progress.inc(1);
        self.records.push(r);
        Ok(())
    }

    /// Runs `work` on every job on up to `workers` threads ([`parallel::in_order`]) and adds
    /// each run's record in job order (a skipped real-time run prints its line); the first
    /// error stops the rest and is returned.
    fn take_in_order<J, W>(
        &mut self,
        jobs: Vec<J>,
        workers: std::num::NonZeroUsize,
        work: W,
    ) -> Option<anyhow::Error>
    where
        J: Send,
        W: Fn(J) -> anyhow::Result<WiaRun> + Sync,
    {
        let mut failure = None;
        parallel::in_order(jobs, workers, work, |_, run| {
            let added = match run {
                Ok(WiaRun::Done(record, id)) => {
                    self.progress.set_message(id);
                    self.add(*record)
                }
                Ok(WiaRun::Skipped(line)) => {
                    self.progress.suspend(|| eprintln!("{line}"));
                    self.progress.inc(1);
                    Ok(())
                }
                Ok(WiaRun::NotRun(n)) => {
                    self.not_run.push(n);
                    Ok(())
                }
                Err(e) => Err(e),
            };
            match added {
                Ok(()) => true,
                Err(e) => {
                    failure = Some(e);
                    false
                }
            }
        });
        failure
    }

    /// The closing sections (human format), JUnit and the HTML report; the exit status (after
    /// a signal: its status, and one line on stderr naming what was written).
    fn finish(
        self,
        kind: TraceKind,
        expected_list: Option<&Path>,
        tail: Option<String>,
    ) -> anyhow::Result<ExitCode> {
        self.progress.finish_and_clear();
        let interrupted = interrupt::received();
        let records = &self.records;
        if self.format == Format::Human {
            for r in records.iter().filter(|r| r.failed()) {
                super::output::text(&report::details(r))?;
            }
            let mut lines = Vec::new();
            if let Some(list) = expected_list {
                lines.extend(report::findings(records, list));
            }
            lines.extend(report::problem_lines(records));
            lines.extend(report::latency_table(records));
            lines.extend(report::summary(self.driver, kind, records));
            lines.extend(tail);
            if let Some(sig) = interrupted {
                lines.push(format!(
                    "interrupted by {}: {} scenario runs not run",
                    sig.name(),
                    self.not_run.len()
                ));
            }
            for l in lines {
                line(l)?;
            }
        }
        let signal = interrupted.map_or("a signal", Interrupted::name);
        let not_run: Vec<(String, Option<String>, String)> = self
            .not_run
            .iter()
            .map(|n| {
                let why = if n.abandoned {
                    format!("abandoned: its driver process faulted after {signal}")
                } else {
                    format!("not run: interrupted by {signal}")
                };
                (n.scenario.clone(), n.service.clone(), why)
            })
            .collect();
        if let Some(path) = &self.outputs.junit {
            super::write_file(
                path,
                "--junit",
                &junit_with_not_run(self.driver, records, &not_run),
            )?;
        }
        if let Some(path) = &self.outputs.report {
            let note = interrupted.map(|sig| {
                format!(
                    "interrupted by {}: {} scenario runs not run",
                    sig.name(),
                    self.not_run.len()
                )
            });
            // With --traces, the time `scanconform report --traces` will show for them (the
            // newest file written), so that the two pages are the same byte for byte even when
            // the runs cross a minute; without, when the runs began.
            let made = match &self.outputs.traces {
                Some(dir) => super::newest_file_time(dir).or(Some(self.began)),
                None => Some(self.began),
            };
            let meta = super::report_meta(made, note);
            super::write_file(
                path,
                "--report",
                &report::html::render_report(records, &meta),
            )?;
        }
        if let Some(sig) = interrupted {
            eprintln!("{}", self.interrupted_line(sig));
            return Ok(sig.exit_code());
        }
        Ok(
            if records.iter().any(|r| r.verdict.verdict == Verdict::Fail) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            },
        )
    }
}

impl Pipeline<'_> {
    /// The line that says, after a signal, how far the run got and what was written.
    fn interrupted_line(&self, sig: Interrupted) -> String {
        let done = self.records.len();
        let o = self.outputs;
        let mut wrote = Vec::new();
        if let Some(p) = &o.junit {
            wrote.push(format!("JUnit {}", p.display()));
        }
        if let Some(p) = &o.report {
            wrote.push(format!("report {}", p.display()));
        }
        if let Some(p) = &o.traces {
            wrote.push(format!("{done} traces under {}", p.display()));
        }
        if let Some(p) = &o.pcap {
            wrote.push(format!("captures under {}", p.display()));
        }
        let abandoned = self.not_run.iter().filter(|n| n.abandoned).count();
        format!(
            "scanconform: interrupted by {}: {done} scenario runs finished (runs under way were completed{}), {} not run; {}",
            sig.name(),
            if abandoned > 0 {
                format!(", except {abandoned} abandoned whose driver process faulted")
            } else {
                String::new()
            },
            self.not_run.len() - abandoned,
            if wrote.is_empty() {
                "no output files were asked for".to_string()
            } else {
                format!("wrote {}", wrote.join(", "))
            }
        )
    }
}
