//! `scanconform`: run the cancel-conformance catalog against a scanner driver.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use scanconform::runner::{self, RunResult};
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
enum Format {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenarios against a driver and print a verdict per scenario run.
    Run {
        /// Driver: reference, legacy-xp or a mutant (see `scanconform drivers`).
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
        /// Output format.
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
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
            format,
        } => run(driver, service, scenarios, filter, junit, traces, format),
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
                .map_err(InputError)?;
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

#[allow(clippy::too_many_arguments)]
fn run(
    driver: String,
    service: Services,
    scenarios: Option<PathBuf>,
    filter: Option<String>,
    junit: Option<PathBuf>,
    traces: Option<PathBuf>,
    format: Format,
) -> Result<ExitCode, InputError> {
    drivers::instantiate(&driver).map_err(InputError)?;
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
        let d = drivers::instantiate(&driver).map_err(InputError)?;
        let r = runner::run(s, model, &driver, d, &profiles).map_err(|e| InputError(e.0))?;
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
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
