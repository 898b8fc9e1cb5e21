//! SANE backends as drivers under test: `scanconform run --driver sane:BACKEND[:DEVICE]`.
//!
//! On Linux a scanner driver is a SANE backend, a shared library with a small C API whose
//! cancel contract has the shape of WIA's. The runner plays the frontend against a real,
//! unmodified backend:
//! - [`ffi`]: the only unsafe code: `dlopen` (libloading), the SANE 1 ABI, safe wrappers;
//! - [`scenario`]: scenario files under `fixtures/scenarios/sane/` (`"kind": "sane"`);
//! - [`runner`]: resolves the backend, plays a script in real time (a reader thread and a
//!   canceller thread for cancels during a blocked read) and records a [`trace::SaneTrace`];
//! - [`analysis`]: what a trace says about frames and the device's scans (active frames,
//!   cancel latency), knowing no rule;
//! - [`rules`]: the SANE rule catalogue, each rule quoting the SANE standard, judged into the
//!   shared [`crate::verdict`] types (never the WIA rules);
//! - [`expected`]: the findings against a backend as data, checked both ways.
//!
//! `conformance/SANE.md` documents the schema, the rules and how to run another backend.

pub mod analysis;
pub mod device;
pub mod expected;
#[allow(unsafe_code)]
pub mod ffi;
mod play;
pub mod rules;
pub mod runner;
pub mod scenario;
pub mod target;
pub mod trace;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use self::expected::{compare, ExpectedFailures};
use self::runner::{SaneRun, Session};

/// What `scanconform run --driver sane:…` was asked for.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct CliOptions {
    /// The repository's fixtures folder (scenarios, configs, expected failures).
    pub fixtures: PathBuf,
    /// `--scenarios` (default `<fixtures>/scenarios/sane`).
    pub scenarios: Option<PathBuf>,
    /// `--filter` glob on scenario ids.
    pub filter: Option<String>,
    /// `--junit` file.
    pub junit: Option<PathBuf>,
    /// `--traces` folder: `<dir>/sane-<backend>/<name>.jsonl`.
    pub traces: Option<PathBuf>,
    /// `--format json`: one JSON object per scenario run.
    pub json: bool,
}

impl CliOptions {
    /// Options with the fixtures folder; everything else default.
    pub fn new(fixtures: PathBuf) -> CliOptions {
        CliOptions {
            fixtures,
            ..CliOptions::default()
        }
    }
}

/// The config folder for `backend`: `<fixtures>/sane` when it holds `<backend>.conf`.
pub fn config_dir(fixtures: &Path, backend: &str) -> Option<PathBuf> {
    let dir = fixtures.join("sane");
    dir.join(format!("{backend}.conf")).is_file().then_some(dir)
}

/// The SANE scenarios of `backend`: `<fixtures>/scenarios/sane/<backend>/` when that folder
/// exists (the scenarios written for that backend and its emulated device), otherwise the
/// shared `<fixtures>/scenarios/sane/`.
pub fn scenario_root(fixtures: &Path, backend: &str) -> PathBuf {
    let shared = fixtures.join("scenarios").join("sane");
    let own = shared.join(backend);
    if !backend.is_empty() && own.is_dir() {
        own
    } else {
        shared
    }
}

/// The expected-failure list of `backend`.
pub fn expected_path(fixtures: &Path, backend: &str) -> PathBuf {
    fixtures
        .join("sane-expected")
        .join(format!("{backend}.json"))
}

/// The whole `run --driver sane:SPEC` command: Ok(exit status 0 or 1) or Err(one line, exit 2).
pub fn cli_run(spec: &str, opts: &CliOptions) -> Result<u8, String> {
    let target = target::resolve(spec).map_err(|e| e.to_string())?;
    let list = ExpectedFailures::load(&expected_path(&opts.fixtures, &target.name), |id| {
        rules::find(id).is_some()
    })
    .map_err(|e| e.to_string())?;
    let root = opts
        .scenarios
        .clone()
        .unwrap_or_else(|| scenario_root(&opts.fixtures, &target.name));
    let mut scenarios = scenario::discover(&root).map_err(|e| e.to_string())?;
    for s in &scenarios {
        s.validate(|id| rules::find(id).is_some())
            .map_err(|e| e.to_string())?;
    }
    if let Some(glob) = &opts.filter {
        let m = globset::Glob::new(glob)
            .map_err(|e| format!("--filter {glob:?}: {e}"))?
            .compile_matcher();
        scenarios.retain(|s| m.is_match(&s.id));
        if scenarios.is_empty() {
            return Err(format!("--filter {glob:?} matches no SANE scenario"));
        }
    }
    let config = config_dir(&opts.fixtures, &target.name);
    let session = if device::needs_device(&target.name) {
        Session::prepare_with_device(target, config.as_deref(), &opts.fixtures.join("profiles"))
            .map_err(|e| e.to_string())?
    } else {
        Session::prepare(target, config.as_deref()).map_err(|e| e.to_string())?
    };
    let began = std::time::Instant::now();
    let stdout = std::io::stdout();
    if !opts.json {
        println!(
            "SANE backend {} ({}), device {:?}, SANE_CONFIG_DIR {}",
            session.target.name,
            session.target.library.display(),
            session.device,
            session
                .config_dir
                .as_ref()
                .map_or_else(|| "(inherited)".to_string(), |d| d.display().to_string())
        );
        println!("{:<40} {:<14} failed rules", "scenario", "verdict");
    }
    let mut runs: Vec<SaneRun> = Vec::with_capacity(scenarios.len());
    for s in &scenarios {
        let r = session.run(s);
        if let Some(dir) = &opts.traces {
            let path = dir
                .join(format!("sane-{}", session.target.name))
                .join(format!("{}.jsonl", s.id.trim_start_matches("sane/")));
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            std::fs::write(&path, r.trace.to_json_lines(&r.latency))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let verdict = verdict(&r, &list);
        let failed: Vec<&str> = r.failures().iter().map(|f| f.0).collect();
        if opts.json {
            let line = serde_json::json!({
                "scenario": r.id,
                "driver": format!("sane:{}", session.target.name),
                "verdict": verdict,
                "skipped": r.skipped,
                "problems": r.problems,
                "failures": r.failures().iter().map(|(rule, seq, msg)| serde_json::json!({"rule": rule, "call": seq, "message": msg})).collect::<Vec<_>>(),
            });
            let mut line = line;
            if session.profiles.is_some() {
                line["cancel_latency"] = r
                    .latency
                    .iter()
                    .map(|l| serde_json::json!({"cancel_call": l.cancel_seq, "blocks": l.blocks, "ended_by": l.ended_by, "after_us": l.after_us}))
                    .collect();
            }
            let _ = writeln!(stdout.lock(), "{line}");
        } else {
            let mut detail = match &r.skipped {
                Some(why) => why.clone(),
                None => failed.join(", "),
            };
            for l in &r.latency {
                if !detail.is_empty() {
                    detail.push_str("; ");
                }
                detail.push_str(&format!("cancel latency: {}", l.summary()));
            }
            println!("{:<40} {:<14} {detail}", r.id, verdict);
        }
        runs.push(r);
    }
    let cmp = compare(&runs, &list);
    if !opts.json {
        if !cmp.honoured.is_empty() {
            println!(
                "findings (expected failures, {}):",
                expected_path(&opts.fixtures, &session.target.name).display()
            );
            for (scenario, rule, message) in &cmp.honoured {
                println!("  {scenario}  {rule}: {message}");
            }
        }
        for r in &runs {
            for (rule, seq, message) in r.failures() {
                if list.get(&r.id, rule).is_none() {
                    println!("{}: {rule}: {message}", r.id);
                    if let Some(q) = rules::find(rule) {
                        println!("  \"{}\"\n    -- {}", q.quote, q.source);
                    }
                    for line in r.trace.context(seq, 6) {
                        println!("  {line}");
                    }
                }
            }
        }
        for v in &cmp.violations {
            println!("error: {v}");
        }
        let skipped = runs.iter().filter(|r| r.skipped.is_some()).count();
        if session.profiles.is_some() {
            println!(
                "cancel latency (blocks the device sent after sane_cancel until it was told to stop):"
            );
            for r in &runs {
                for l in &r.latency {
                    println!(
                        "  {:<40} {:>2}  {}{}",
                        r.id,
                        l.blocks,
                        l.summary(),
                        l.after_us
                            .map(|us| format!(" ({} ms after sane_cancel)", us / 1000))
                            .unwrap_or_default()
                    );
                }
            }
        }
        println!(
            "driver sane:{}: {} scenarios, {} ran, {} skipped, {} expected failures honoured, {} problems",
            session.target.name,
            runs.len(),
            runs.len() - skipped,
            skipped,
            cmp.honoured.len(),
            cmp.violations.len()
        );
        if session.profiles.is_some() {
            println!(
                "ran in {:.1} s against the emulated device",
                began.elapsed().as_secs_f64()
            );
        }
    }
    if let Some(path) = &opts.junit {
        std::fs::write(path, junit(&session.target.name, &runs, &list))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(if cmp.violations.is_empty() { 0 } else { 1 })
}

/// `pass`, `expected-fail`, `FAIL` or `skip` for one run.
pub fn verdict(r: &SaneRun, list: &ExpectedFailures) -> &'static str {
    if r.skipped.is_some() {
        return "skip";
    }
    let failures = r.failures();
    if !r.problems.is_empty()
        || failures
            .iter()
            .any(|(rule, _, msg)| list.get(&r.id, rule).is_none_or(|f| !f.matches(msg)))
    {
        "FAIL"
    } else if failures.is_empty() {
        "pass"
    } else {
        "expected-fail"
    }
}

fn junit(backend: &str, runs: &[SaneRun], list: &ExpectedFailures) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut report = Report::new("scanconform");
    let mut suite = TestSuite::new(format!("scanconform.sane-{backend}"));
    for r in runs {
        let status = match verdict(r, list) {
            "FAIL" => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                let mut lines: Vec<String> = r.problems.clone();
                lines.extend(
                    r.failures()
                        .iter()
                        .map(|(rule, _, msg)| format!("{rule}: {msg}")),
                );
                s.set_message(lines.join("; "));
                s
            }
            "skip" => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(r.skipped.clone().unwrap_or_default());
                s
            }
            _ => TestCaseStatus::success(),
        };
        let mut case = TestCase::new(r.id.clone(), status);
        case.set_classname(format!("sane-{backend}"));
        suite.add_test_case(case);
    }
    report.add_test_suite(suite);
    report
        .to_string()
        .unwrap_or_else(|e| format!("<!-- junit serialization failed: {e} -->"))
}
