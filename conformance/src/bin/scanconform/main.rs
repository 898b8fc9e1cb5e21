//! `scanconform`: run the cancel-conformance catalog against a scanner driver.
//!
//! The edge of the program: it parses the command line, checks every input (options, driver,
//! scenarios, output paths) before it prints anything, runs, and prints what the library
//! returns. One line and exit status 2 for bad input; 1 when a scenario run fails; 0 otherwise;
//! 130 or 143 when SIGINT or SIGTERM stopped `run` or `record` (after writing what the finished
//! runs give: `interrupt.rs`). `run` lives in `run.rs`; stdout that closes early is muted by
//! `output.rs`.

mod interrupt;
mod output;
mod progress;
mod run;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use scanconform::report::html;
use scanconform::report::timeline::SvgOptions;
use scanconform::run as wia_run;
use scanconform::sane::rules as sane_rules;
use scanconform::scenario::wia2::LoadedScenario2;
use scanconform::scenario::{self, LoadedScenario, ServiceModel};
use scanconform::{drivers, rules};

use self::output::line;

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
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

impl OneService {
    fn name(self) -> &'static str {
        match self {
            OneService::Xp => "xp",
            OneService::Vista => "vista",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TransportArg {
    /// The in-process virtual bus.
    Inproc,
    /// USB/IP over loopback to an in-process server.
    Usbip,
    /// The rusb host through libusb: the scanlab libusb-1.0 stand-in, USB/IP to an
    /// in-process server (run by scanconform-libusb: `--features libusb`).
    Libusb,
}

impl TransportArg {
    fn name(self) -> &'static str {
        match self {
            TransportArg::Inproc => "inproc",
            TransportArg::Usbip => "usbip",
            TransportArg::Libusb => "libusb",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Human,
    Json,
}

/// The driver forms `--driver` takes besides the built-in names, for help and errors.
const DRIVER_FORMS: &str = "exec:'CMD ARGS' (an external driver process speaking conformance/DRIVER-PROTOCOL.md) or sane:BACKEND[:DEVICE] (a SANE backend library; conformance/SANE.md)";

#[derive(Subcommand)]
enum Command {
    /// Run scenarios against a driver and print a verdict per scenario run.
    Run(run::RunArgs),
    /// Run one scenario against a device and store the session as a recording (descriptors,
    /// every transaction with its timing, the usbmon capture and the conformance trace; see
    /// fixtures/recordings/FORMAT.md), which `run --replay` and the tests replay. WIA 1.0 and
    /// WIA 2.0 sessions alike: the recording's provenance names the driver model, and a replay
    /// takes a driver of that model only.
    Record {
        /// Driver: a WIA 1.0 one (reference, legacy-xp, a mutant-*), a WIA 2.0 one
        /// (reference-wia2, a mutant2-*) or exec:'CMD ARGS' (of the WIA 2.0 contract when the
        /// scenario is a WIA 2.0 one, under a wia2/ folder); see `scanconform drivers`. SANE
        /// backends cannot be recorded.
        #[arg(long, default_value = "reference")]
        driver: String,
        /// How the driver reaches the emulated scanner.
        #[arg(long, value_enum, default_value = "inproc")]
        transport: TransportArg,
        /// The scenario file: WIA 1.0, or WIA 2.0 (fixtures/scenarios/wia2/...) for a WIA 2.0
        /// driver.
        #[arg(long)]
        scenario: PathBuf,
        /// Service model of a WIA 1.0 session (default xp); WIA 2.0 has one service.
        #[arg(long, value_enum)]
        service: Option<OneService>,
        /// The recording folder to write (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Build the HTML report of a `--traces` folder (traces and the verdict files beside them),
    /// WIA and SANE runs alike.
    Report {
        /// The folder `run --traces` wrote.
        #[arg(long)]
        traces: PathBuf,
        /// The HTML file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a trace (WIA or SANE) as text and optionally draw its timeline as SVG.
    Show {
        /// A trace file (`.jsonl`); a `.verdict.json` beside it marks the violations.
        trace: PathBuf,
        /// Write the SVG timeline here.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
    /// List the scenarios: WIA 1.0 (with their service models), then WIA 2.0 (`[wia2]`).
    List {
        /// Scenario folder.
        #[arg(long)]
        scenarios: Option<PathBuf>,
    },
    /// List the drivers: the built-in ones, WIA 1.0 then WIA 2.0 (for each mutant, the rule it
    /// breaks), then the exec: and sane: forms.
    Drivers {
        /// Output format.
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// Print a rule of any catalogue (WIA, WIA 2.0 or SANE): statement, the quoted sentence and
    /// its source, what is checked. Without a rule (or with --list): every rule, one line each.
    Explain {
        /// A rule ID such as WIA-RET-SFALSE, WIA2-H14-CANCEL-FASTER or SANE-CANCEL-STATUS.
        rule: Option<String>,
        /// List every rule of every catalogue (ID and statement).
        #[arg(long, conflicts_with = "rule")]
        list: bool,
    },
}

/// The program (`scanconform`, and `scanconform-libusb`, which is this built with the `libusb`
/// feature).
pub(crate) fn main() -> ExitCode {
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
        Err(e) => {
            eprintln!("scanconform: error: {e:#}");
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

/// Where a scenarios path lies: `Some(true)` inside the `wia2/` folder of a `scenarios` folder
/// (WIA 2.0 scenarios), `Some(false)` inside another folder of one, `None` for a `scenarios`
/// folder itself or a path outside any.
fn in_wia2_folder(path: &Path) -> Option<bool> {
    path.ancestors()
        .zip(path.ancestors().skip(1))
        .find(|(_, parent)| parent.file_name().is_some_and(|n| n == "scenarios"))
        .map(|(child, _)| child.file_name().is_some_and(|n| n == "wia2"))
}

/// The WIA scenarios under `path` (default: the catalog), each validated against the WIA rules.
fn load_scenarios(path: Option<PathBuf>) -> anyhow::Result<(PathBuf, Vec<LoadedScenario>)> {
    let root = path.unwrap_or_else(|| fixtures_dir().join("scenarios"));
    if in_wia2_folder(&root) == Some(true) {
        bail!(
            "--scenarios {}: WIA 2.0 scenarios; run them with a WIA 2.0 driver (--driver reference-wia2, a mutant2-*)",
            root.display()
        );
    }
    let list = scenario::discover(&root)?;
    for s in &list {
        s.validate(|id| rules::find(id).is_some())?;
    }
    Ok((root, list))
}

/// The WIA 2.0 scenarios under `path` (default: the catalog's `wia2/` folder), each validated
/// against the WIA 2.0 rules.
fn load_scenarios2(path: Option<PathBuf>) -> anyhow::Result<(PathBuf, Vec<LoadedScenario2>)> {
    let root = path.unwrap_or_else(|| fixtures_dir().join("scenarios"));
    if in_wia2_folder(&root) == Some(false) {
        bail!(
            "--scenarios {}: not WIA 2.0 scenarios (those live in the wia2/ folder of a scenarios folder); run them with a WIA 1.0 driver",
            root.display()
        );
    }
    let list = scenario::wia2::discover(&root)?;
    for s in &list {
        s.validate(rules::wia2::known)?;
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

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    if matches!(cli.command, Command::Run(_) | Command::Record { .. }) {
        interrupt::install().context("installing the SIGINT/SIGTERM handlers")?;
    }
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Record {
            driver,
            transport,
            scenario,
            service,
            out,
        } => record(driver, transport, &scenario, service, &out),
        Command::Report { traces, out } => {
            let runs = html::load_dir(&traces)?;
            let meta = report_meta(newest_file_time(&traces), None);
            write_file(&out, "--out", &html::render_report(&runs, &meta))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { trace, svg } => show(&trace, svg.as_deref()),
        Command::List { scenarios } => list_scenarios(scenarios),
        Command::Drivers { format } => list_drivers(format),
        Command::Explain { rule: None, .. } => {
            output::text(&rule_list())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain {
            rule: Some(rule), ..
        } => match rules::explain(&rule)
            .or_else(|| rules::wia2::explain(&rule))
            .or_else(|| sane_rules::explain(&rule))
        {
            Some(text) => {
                line(text)?;
                Ok(ExitCode::SUCCESS)
            }
            None => bail!(
                "unknown rule {rule:?}; known rules: {} (`scanconform explain --list` shows them)",
                rules::catalog()
                    .iter()
                    .map(|r| r.id)
                    .chain(rules::wia2::catalog().iter().map(|r| r.id))
                    .chain(sane_rules::catalog().iter().map(|r| r.id))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    }
}

/// The report header's `when` and `commit`: `when` is `SOURCE_DATE_EPOCH` if set (the
/// reproducible-builds convention, for byte-identical reports), else `made`, in UTC to the
/// minute; `commit` is `git describe --always --dirty` of the checkout this program was built
/// from, left out where that is not a git checkout (or git is missing).
fn report_meta(made: Option<std::time::SystemTime>, note: Option<String>) -> html::ReportMeta {
    let fixed = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
    let when = fixed.or(made).map(|t| {
        chrono::DateTime::<chrono::Utc>::from(t)
            .format("%Y-%m-%d %H:%M UTC")
            .to_string()
    });
    let commit = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--tags"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let mut meta = html::ReportMeta::default();
    meta.when = when;
    meta.commit = commit;
    meta.note = note;
    meta
}

/// When the newest trace or verdict file under `dir` was written (when its runs were made).
fn newest_file_time(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_file_time(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// `scanconform list`: the WIA 1.0 scenarios (with their service models), then the WIA 2.0
/// ones (`[wia2]`), of the catalog or of `--scenarios` (a folder inside `wia2/` lists WIA 2.0
/// scenarios only; one without a `wia2/` folder, WIA 1.0 ones only).
fn list_scenarios(scenarios: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let root = scenarios.unwrap_or_else(|| fixtures_dir().join("scenarios"));
    let where_ = in_wia2_folder(&root);
    let mut count = 0;
    if where_ != Some(true) {
        let (_, list) = load_scenarios(Some(root.clone()))?;
        for s in &list {
            let services: Vec<&str> = s.scenario.services.iter().map(|m| m.name()).collect();
            line(format_args!(
                "{:<44} [{}] {}",
                s.id,
                services.join(","),
                s.scenario.description
            ))?;
        }
        count += list.len();
    }
    if where_ == Some(true) || (where_.is_none() && root.join("wia2").is_dir()) {
        let (_, list) = load_scenarios2(Some(root))?;
        for s in &list {
            line(format_args!(
                "{:<44} [wia2] {}",
                s.id, s.scenario.description
            ))?;
        }
        count += list.len();
    }
    line(format_args!("{count} scenarios"))?;
    Ok(ExitCode::SUCCESS)
}

/// Writes `contents` to `path`, the error naming the option it came from.
fn write_file(path: &Path, option: &str, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("{option} {}", path.display()))
}

/// `scanconform show`: the trace as text, and its timeline as SVG.
fn show(trace: &Path, svg: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (t, verdict) = html::load_trace(trace)?;
    let marks = verdict.as_ref().map(|v| v.marks()).unwrap_or_default();
    output::text(&t.render_text_marked(&marks))?;
    if let Some(path) = svg {
        let title = match &verdict {
            Some(v) => v.title(),
            None => trace.display().to_string(),
        };
        write_file(
            path,
            "--svg",
            &t.render_svg(&marks, &SvgOptions::standalone(title)),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `scanconform drivers`: the built-in WIA 1.0 drivers, the built-in WIA 2.0 drivers (kind
/// `builtin-wia2`, each mutant with the WIA 2.0 rule `fixtures/mutants-wia2.json` says it
/// breaks), then the exec: and sane: forms.
fn list_drivers(format: Format) -> anyhow::Result<ExitCode> {
    let mut expected = drivers::load_expected_failures(&fixtures_dir().join("mutants.json"))
        .map_err(|e| anyhow!(e))?;
    expected.extend(
        drivers::load_expected_failures(&fixtures_dir().join("mutants-wia2.json"))
            .map_err(|e| anyhow!(e))?,
    );
    let forms = [
        (
            "exec:'CMD ARGS'",
            "exec",
            "an external driver process speaking JSON lines over stdio (conformance/DRIVER-PROTOCOL.md), started anew for each run",
        ),
        (
            "sane:BACKEND[:DEVICE]",
            "sane",
            "a SANE backend library (a name such as test or epson2, or a path) played by a SANE frontend (conformance/SANE.md)",
        ),
    ];
    let builtin = drivers::BUILTIN
        .iter()
        .map(|d| (d.name, "builtin", d.description));
    let builtin2 = drivers::wia2::BUILTIN2
        .iter()
        .map(|d| (d.name, "builtin-wia2", d.description));
    for (name, kind, description) in builtin.chain(builtin2).chain(forms) {
        let breaks = expected.get(name).map(String::as_str);
        match format {
            Format::Json => line(serde_json::json!({
                "name": name,
                "kind": kind,
                "description": description,
                "breaks": breaks
            }))?,
            Format::Human => line(format_args!(
                "{:<30} {:<22} {}",
                name,
                breaks.unwrap_or("-"),
                description
            ))?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Every rule of the three catalogues, one line each (`ID  statement`): WIA, WIA 2.0, SANE.
fn rule_list() -> String {
    let mut out = String::from("WIA rules (WIA drivers):\n");
    for r in rules::catalog() {
        out.push_str(&format!("  {:<30} {}\n", r.id, r.statement));
    }
    out.push_str(&format!(
        "WIA 2.0 rules (WIA 2.0 drivers such as reference-wia2; also judged: {}):\n",
        rules::wia2::SHARED.join(", ")
    ));
    for r in rules::wia2::catalog() {
        out.push_str(&format!("  {:<36} {}\n", r.id, r.statement));
    }
    out.push_str("SANE rules (sane:BACKEND drivers):\n");
    for r in sane_rules::catalog() {
        out.push_str(&format!("  {:<30} {}\n", r.id, r.statement));
    }
    out
}

/// `scanconform record`: one scenario, one run, one recording folder, for a driver of either
/// model (an `exec:` driver takes the model of its scenario, as in `run`).
fn record(
    driver: String,
    transport: TransportArg,
    scenario_path: &Path,
    service: Option<OneService>,
    out: &Path,
) -> anyhow::Result<ExitCode> {
    let wia2_scenario = in_wia2_folder(scenario_path) == Some(true);
    let wia2 = match run::DriverKind::parse(&driver)? {
        run::DriverKind::Sane(_) => bail!(
            "--driver {driver}: a SANE backend cannot be recorded (record takes a WIA 1.0 or WIA 2.0 driver)"
        ),
        run::DriverKind::Wia2 => true,
        run::DriverKind::Wia => driver.starts_with("exec:") && wia2_scenario,
    };
    if wia2 {
        if let Some(svc) = service {
            bail!(
                "--service {} does not apply to {driver}: WIA 2.0 has one service, the WIA service of Windows Vista and later (conformance/WIA2.md)",
                svc.name()
            );
        }
        if !wia2_scenario {
            bail!(
                "--scenario {}: not a WIA 2.0 scenario (those live in the wia2/ folder of a scenarios folder); {driver} is a WIA 2.0 driver",
                scenario_path.display()
            );
        }
    } else if wia2_scenario {
        bail!(
            "--scenario {}: a WIA 2.0 scenario; record it with a WIA 2.0 driver (--driver reference-wia2, a mutant2-*)",
            scenario_path.display()
        );
    }
    let mut options = scanconform::record::RecordOptions::default();
    options.transport = match transport {
        TransportArg::Inproc => wia_run::Transport::InProcess,
        TransportArg::Usbip => wia_run::Transport::UsbIp,
        TransportArg::Libusb => {
            bail!("record --transport libusb is not supported; use inproc or usbip")
        }
    };
    if !scenario_path.is_file() {
        bail!(
            "--scenario {}: not a scenario file",
            scenario_path.display()
        );
    }
    // The id is `group/name` below the nearest `scenarios` folder, as in catalog runs.
    let root = scenario_path
        .ancestors()
        .skip(1)
        .find(|p| p.file_name().is_some_and(|n| n == "scenarios"))
        .or_else(|| scenario_path.parent())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let profiles = profiles_dir_for(&root);
    let command = RecordCommand {
        driver: &driver,
        profiles: &profiles,
        options: &options,
        out,
    };
    if wia2 {
        let factory = drivers::wia2::instantiate(&driver).map_err(|e| anyhow!(e))?;
        let s = scenario::wia2::load(scenario_path, &root)?;
        s.validate(rules::wia2::known)?;
        let session = scanconform::record::Wia2Session {
            scenario: &s,
            driver_name: &driver,
            factory,
        };
        command.make(&session, &s.id, "wia2")
    } else {
        let d = drivers::instantiate(&driver).map_err(|e| anyhow!(e))?;
        let s = scenario::load(scenario_path, &root)?;
        s.validate(|id| rules::find(id).is_some())?;
        let service = match service.unwrap_or(OneService::Xp) {
            OneService::Xp => ServiceModel::Xp,
            OneService::Vista => ServiceModel::Vista,
        };
        let session = scanconform::record::Wia1Session {
            scenario: &s,
            service,
            driver_name: &driver,
            driver: d,
        };
        command.make(&session, &s.id, service.name())
    }
}

/// Where `scanconform record` writes, and how it runs.
struct RecordCommand<'a> {
    driver: &'a str,
    profiles: &'a Path,
    options: &'a scanconform::record::RecordOptions,
    out: &'a Path,
}

impl RecordCommand<'_> {
    /// Records `session` (scenario `id`, shown with `tag`: its service model or `wia2`) and
    /// prints one line saying what was recorded.
    fn make<S: scanconform::record::Session>(
        &self,
        session: &S,
        id: &str,
        tag: &str,
    ) -> anyhow::Result<ExitCode> {
        use scanconform::record::RunOutcome as _;
        let (driver, out) = (self.driver, self.out);
        let spinner = progress::spinner(format!("recording {id} [{tag}] with {driver}"));
        let r = scanconform::record::record_session(session, self.profiles, self.options, out);
        spinner.finish_and_clear();
        let r = r?;
        line(format_args!(
            "recorded {id} [{tag}] with {driver}: {} trace events, {} -> {}",
            r.trace().events.len(),
            if r.passed() { "pass" } else { "FAIL" },
            out.display()
        ))?;
        if let Some(sig) = interrupt::received() {
            eprintln!(
                "scanconform: interrupted by {}: the recording under way was finished; wrote {}",
                sig.name(),
                out.display()
            );
            return Ok(sig.exit_code());
        }
        Ok(ExitCode::SUCCESS)
    }
}
