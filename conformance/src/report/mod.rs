//! Reporting a run: the verdict table, JSON lines, JUnit XML and trace files.

pub mod html;
pub mod timeline;

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::rules::{self, RuleStatus};
use crate::runner::RunResult;

/// One line of `--format json`: a scenario run and its verdict.
#[derive(Debug, Serialize)]
pub struct JsonRun<'a> {
    /// The driver.
    pub driver: &'a str,
    /// `<group>/<name>`.
    pub scenario: &'a str,
    /// xp or vista.
    pub service: &'a str,
    /// "pass" or "fail".
    pub verdict: &'static str,
    /// IDs of the failed rules.
    pub failed: Vec<&'a str>,
    /// Rule results: id -> pass | fail | n/a | not-judged | report.
    pub rules: Vec<(&'a str, String)>,
    /// Measurements.
    pub metrics: &'a rules::Metrics,
}

/// The JSON object for one run.
pub fn json_run(r: &RunResult) -> JsonRun<'_> {
    JsonRun {
        driver: &r.driver,
        scenario: &r.scenario,
        service: r.service.name(),
        verdict: if r.passed() { "pass" } else { "fail" },
        failed: r.report.failed().iter().map(|x| x.id).collect(),
        rules: r
            .report
            .results
            .iter()
            .map(|x| (x.id, status_word(&x.status)))
            .collect(),
        metrics: &r.report.metrics,
    }
}

fn status_word(s: &RuleStatus) -> String {
    match s {
        RuleStatus::Pass => "pass".into(),
        RuleStatus::NotApplicable => "n/a".into(),
        RuleStatus::Fail { message, .. } => format!("fail: {message}"),
        RuleStatus::NotJudged { because } => format!("not judged (consequence of {because})"),
        RuleStatus::Report { message } => format!("report: {message}"),
    }
}

/// The header of the human verdict table.
pub fn table_header() -> String {
    format!(
        "{:<44} {:<6} {:<8} {:>12} {:>7}  {}",
        "scenario", "svc", "verdict", "cancel→idle", "wasted", "failed rules"
    )
}

/// One row of the human verdict table.
pub fn table_row(r: &RunResult) -> String {
    let m = &r.report.metrics;
    let idle = m
        .cancel_to_idle_us
        .map(|us| format!("{}.{} ms", us / 1000, (us % 1000) / 100))
        .unwrap_or_else(|| "-".into());
    let wasted = m
        .bands_wasted
        .map(|b| b.to_string())
        .unwrap_or_else(|| "-".into());
    let failed: Vec<&str> = r.report.failed().iter().map(|x| x.id).collect();
    format!(
        "{:<44} {:<6} {:<8} {:>12} {:>7}  {}",
        r.scenario,
        r.service.name(),
        if r.passed() { "pass" } else { "FAIL" },
        idle,
        wasted,
        failed.join(", ")
    )
}

/// The full explanation of every failed rule of a run: rule, quote, trace around the violation.
pub fn failure_details(r: &RunResult) -> String {
    let mut out = String::new();
    for res in r.report.failed() {
        if let (Some(rule), RuleStatus::Fail { event, message }) =
            (rules::find(res.id), &res.status)
        {
            let _ = writeln!(
                out,
                "--- {} [{}] {}",
                r.scenario,
                r.service.name(),
                r.driver
            );
            out.push_str(&rules::render_failure(rule, &r.trace, *event, message));
            out.push('\n');
        }
    }
    out
}

/// Writes the trace of `r` as JSON lines under `dir/<driver>/<service>/<scenario>.jsonl`, and
/// its verdict beside it as `<scenario>.verdict.json` (see `html_report::RunVerdict`).
pub fn write_trace(dir: &Path, r: &RunResult) -> std::io::Result<()> {
    let path = dir
        .join(&r.driver)
        .join(r.service.name())
        .join(format!("{}.jsonl", r.scenario));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, r.trace.to_json_lines())?;
    let verdict = crate::report::html::RunVerdict::from_run(r);
    let json = serde_json::to_string_pretty(&verdict).unwrap_or_default();
    std::fs::write(crate::report::html::verdict_path(&path), json + "\n")
}

/// JUnit XML with one testcase per scenario run.
pub fn junit(driver: &str, runs: &[RunResult]) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut report = Report::new("scanconform");
    let mut suite = TestSuite::new(format!("scanconform.{driver}"));
    for r in runs {
        let status = if r.passed() {
            TestCaseStatus::success()
        } else {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            let failed: Vec<&str> = r.report.failed().iter().map(|x| x.id).collect();
            s.set_message(format!("failed rules: {}", failed.join(", ")));
            s.set_description(failure_details(r));
            s
        };
        let mut case = TestCase::new(format!("{} [{}]", r.scenario, r.service.name()), status);
        case.set_classname(format!("{driver}.{}", r.service.name()));
        suite.add_test_case(case);
    }
    report.add_test_suite(suite);
    report
        .to_string()
        .unwrap_or_else(|e| format!("<!-- junit serialization failed: {e} -->"))
}
