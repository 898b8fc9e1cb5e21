//! Reporting runs of every driver kind, from their [`RunRecord`]s: the human verdict table and
//! the sections that close it, one JSON object per run, the trace and verdict files of
//! `--traces`, JUnit XML ([`junit`]) and the self-contained HTML report ([`html`], drawing
//! [`timeline`] pictures).
//!
//! A WIA run ([`crate::run::RunResult`]) and a SANE run ([`crate::sane::runner::SaneRun`])
//! both become a [`RunRecord`] ([`record`]); everything here reads records only, so filter,
//! table, JUnit, `--traces`, `--report` and `--format json` are one path for both. Nothing here
//! prints: the functions return text and the `scanconform` binary prints it.

pub mod html;
pub mod junit;
pub mod record;
pub mod timeline;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use self::record::{RunRecord, RunTrace, RunVerdict, TraceKind, Verdict};
use crate::run::RunResult;
use crate::sane::trace::CancelLatency;
use crate::scenario::wia2::is_wia2_id;
use crate::verdict::{Metrics, RuleStatus};

/// A failure the expected-failure list names, as `--format json` shows it.
#[derive(Debug, Serialize)]
pub struct JsonExpected<'a> {
    /// The rule.
    pub rule: &'a str,
    /// The listed finding.
    pub finding: &'a str,
}

/// One line of `--format json`: a scenario run and its verdict. WIA lines have exactly the
/// fields they always had; the SANE fields are left out when empty.
#[derive(Debug, Serialize)]
pub struct JsonRun<'a> {
    /// The driver.
    pub driver: &'a str,
    /// `<group>/<name>`.
    pub scenario: &'a str,
    /// xp or vista (WIA runs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<&'a str>,
    /// `pass`, `fail`, `expected-fail` or `skip`.
    pub verdict: &'static str,
    /// IDs of the failed rules (expected ones included).
    pub failed: Vec<&'a str>,
    /// Rule results: id -> pass | fail | n/a | not-judged | report.
    pub rules: Vec<(&'a str, String)>,
    /// Measurements.
    pub metrics: &'a Metrics,
    /// Why the scenario was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<&'a str>,
    /// Problems of the run itself.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub problems: &'a [String],
    /// Failures the expected-failure list names as observed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expected: Vec<JsonExpected<'a>>,
    /// The blocks sent after each `sane_cancel` (SANE runs with an emulated device).
    #[serde(skip_serializing_if = "<[CancelLatency]>::is_empty")]
    pub cancel_latency: &'a [CancelLatency],
}

/// The JSON object for one run.
pub fn json_run(r: &RunRecord) -> JsonRun<'_> {
    let v = &r.verdict;
    JsonRun {
        driver: &v.driver,
        scenario: &v.scenario,
        service: v.service.as_deref(),
        verdict: v.verdict.word(),
        failed: v.failed.iter().map(|f| f.id.as_str()).collect(),
        rules: r
            .results
            .iter()
            .map(|x| (x.id, status_word(&x.status)))
            .collect(),
        metrics: &v.metrics,
        skipped: v.skipped.as_deref(),
        problems: &v.problems,
        expected: v
            .failed
            .iter()
            .filter_map(|f| {
                f.expected.as_deref().map(|finding| JsonExpected {
                    rule: &f.id,
                    finding,
                })
            })
            .collect(),
        cancel_latency: &v.cancel_latency,
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

/// One row of the human verdict table (`-` for a run without a service model; a skipped run
/// shows why in the last column).
pub fn table_row(r: &RunRecord) -> String {
    let v = &r.verdict;
    let last = match &v.skipped {
        Some(why) => format!("skipped: {why}"),
        None => v
            .failed
            .iter()
            .map(|f| f.id.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    };
    format!(
        "{:<44} {:<6} {:<8} {:>12} {:>7}  {}",
        v.scenario,
        v.service_text(),
        v.verdict.table_word(),
        v.idle_text(),
        v.wasted_text(),
        last
    )
}

/// The full explanation of every failed rule of a run that fails it (not the expected ones):
/// rule, quote, message and the trace around the violation.
pub fn details(r: &RunRecord) -> String {
    let v = &r.verdict;
    let mut out = String::new();
    for f in v.unexpected() {
        let _ = match &v.service {
            Some(svc) => writeln!(out, "--- {} [{svc}] {}", v.scenario, v.driver),
            None => writeln!(out, "--- {} {}", v.scenario, v.driver),
        };
        let _ = writeln!(out, "FAIL {}: {}", f.id, f.statement);
        let _ = writeln!(out, "  \"{}\"", f.quote);
        let _ = writeln!(out, "    -- {}", f.source);
        let _ = writeln!(out, "  {}", f.message);
        let excerpt = r.trace.excerpt(f.event);
        if excerpt.is_empty() {
            let _ = writeln!(out, "  (empty trace)");
        } else {
            let _ = match r.trace.kind() {
                TraceKind::Wia => writeln!(out, "  trace around event #{}:", f.event),
                TraceKind::Sane => writeln!(out, "  calls up to #{}:", f.event),
            };
            for line in excerpt {
                let _ = writeln!(out, "  {line}");
            }
        }
        out.push('\n');
    }
    out
}

/// [`details`] of a WIA run.
pub fn failure_details(r: &RunResult) -> String {
    details(&RunRecord::wia(r))
}

/// The closing summary of a run of `driver` (whose trace model is `kind`): runs and what was
/// read after a cancel (WIA 2.0 runs: and what the streams got), then the verdict counts.
pub fn summary(driver: &str, kind: TraceKind, records: &[RunRecord]) -> Vec<String> {
    let count = |v: Verdict| records.iter().filter(|r| r.verdict.verdict == v).count();
    let wasted: Option<u32> = records
        .iter()
        .filter_map(|r| r.verdict.metrics.bands_wasted)
        .reduce(|a, b| a + b);
    let mut first = format!("driver {driver}: {} scenario runs", records.len());
    let mut second = format!(
        "{} passed, {} failed",
        count(Verdict::Pass),
        count(Verdict::Fail)
    );
    match kind {
        TraceKind::Wia => {
            if records.iter().all(|r| is_wia2_id(&r.verdict.scenario)) {
                let bytes: u64 = records.iter().map(|r| r.verdict.metrics.data_bytes).sum();
                let _ = write!(
                    first,
                    ", {} bands read after a cancel in total, {bytes} bytes written to streams",
                    wasted.unwrap_or(0)
                );
            } else {
                let _ = write!(
                    first,
                    ", {} bands wasted after CancelPendingIO in total",
                    wasted.unwrap_or(0)
                );
            }
            // Real-time runs: how much the machine's load delayed the run's threads.
            let lags: Vec<u64> = records
                .iter()
                .filter_map(|r| r.verdict.metrics.cancel_to_idle_lag_us)
                .collect();
            if let Some(max) = lags.iter().max() {
                let _ = write!(
                    first,
                    "\nhost lag inside cancel→idle (threads waiting for a CPU, taken off the \
                     time-based rules): max {}.{} ms over {} runs",
                    max / 1000,
                    (max % 1000) / 100,
                    lags.len()
                );
            }
        }
        TraceKind::Sane => {
            if let Some(blocks) = wasted {
                let _ = write!(first, ", {blocks} blocks sent after sane_cancel in total");
            }
            let honoured = records
                .iter()
                .flat_map(|r| &r.verdict.failed)
                .filter(|f| f.expected.is_some())
                .count();
            let problems: usize = records.iter().map(|r| r.verdict.problems.len()).sum();
            let _ = write!(
                second,
                ", {} failed as expected, {} skipped; {honoured} expected failures honoured, {problems} problems",
                count(Verdict::ExpectedFail),
                count(Verdict::Skip)
            );
        }
    }
    vec![first, second]
}

/// The failures that happened as the expected-failure list `list` names them, one line each
/// after a heading; nothing when there are none.
pub fn findings(records: &[RunRecord], list: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for r in records {
        for f in r.verdict.failed.iter().filter(|f| f.expected.is_some()) {
            lines.push(format!("  {}  {}: {}", r.verdict.scenario, f.id, f.message));
        }
    }
    if !lines.is_empty() {
        lines.insert(
            0,
            format!("findings (expected failures, {}):", list.display()),
        );
    }
    lines
}

/// Every run problem, `error: <scenario>: <problem>`.
pub fn problem_lines(records: &[RunRecord]) -> Vec<String> {
    records
        .iter()
        .flat_map(|r| {
            r.verdict
                .problems
                .iter()
                .map(|p| format!("error: {}: {p}", r.verdict.scenario))
        })
        .collect()
}

/// The cancel latencies of the runs (SANE with an emulated device), one line each after a
/// heading; nothing when no run measured one.
pub fn latency_table(records: &[RunRecord]) -> Vec<String> {
    let mut lines = Vec::new();
    for r in records {
        for l in &r.verdict.cancel_latency {
            lines.push(format!(
                "  {:<40} {:>2}  {}{}",
                r.verdict.scenario,
                l.blocks,
                l.summary(),
                l.after_us
                    .map(|us| format!(" ({} ms after sane_cancel)", us / 1000))
                    .unwrap_or_default()
            ));
        }
    }
    if !lines.is_empty() {
        lines.insert(
            0,
            "cancel latency (blocks the device sent after sane_cancel until it was told to stop):"
                .to_string(),
        );
    }
    lines
}

/// The folder name of `driver` under `--traces`: the name with every character other than
/// ASCII letters, digits, `.`, `_` and `-` turned into `-` (`sane:test` → `sane-test`), runs of
/// `-` collapsed, no leading `.` or `-`, at most 80 characters. When that changed more than
/// `:` (an `exec:` command line), a CRC-32 of the whole name follows, so that two commands never
/// share a folder. The result is one plain path component: never empty, `.` or `..`, never
/// containing `/`, so traces stay inside the `--traces` folder.
pub fn driver_folder(driver: &str) -> String {
    let mut name = String::with_capacity(driver.len());
    for c in driver.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
            c
        } else {
            '-'
        };
        if !(c == '-' && name.ends_with('-')) {
            name.push(c);
        }
    }
    let mut name: String = name
        .trim_start_matches(['.', '-'])
        .trim_end_matches('-')
        .chars()
        .take(80)
        .collect();
    if name != driver.replace(':', "-") || name.is_empty() {
        if !name.is_empty() {
            name.push('-');
        }
        let _ = write!(name, "{:08x}", crc32fast::hash(driver.as_bytes()));
    }
    name
}

/// One plain path component from a scenario id part: `.`, `..` and empty parts become `_`.
fn safe_part(part: &str) -> &str {
    match part {
        "" | "." | ".." => "_",
        p => p,
    }
}

/// Where `--traces DIR` puts a run's trace: `DIR/<driver>/<service>/<group>/<name>.jsonl` for
/// WIA runs, `DIR/<driver>/wia2/<group>/<name>.jsonl` for WIA 2.0 runs (no service model), `DIR/<driver>/<name>.jsonl` for SANE runs (no service model; the `sane/` group is
/// the folder's), the driver named by [`driver_folder`]. Always inside `dir`.
pub fn trace_path(dir: &Path, v: &RunVerdict) -> PathBuf {
    let mut path = dir.join(driver_folder(&v.driver));
    if let Some(svc) = &v.service {
        path.push(safe_part(svc));
    }
    let scenario = match v.trace {
        TraceKind::Sane => v.scenario.strip_prefix("sane/").unwrap_or(&v.scenario),
        TraceKind::Wia => &v.scenario,
    };
    let parts: Vec<&str> = scenario.split('/').map(safe_part).collect();
    if let Some((name, groups)) = parts.split_last() {
        for g in groups {
            path.push(g);
        }
        path.push(format!("{name}.jsonl"));
    }
    path
}

/// A trace or verdict file that cannot be written; `Display` names it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", .path.display())]
pub struct WriteError {
    /// The file or folder.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// Writes the trace of `r` as JSON lines at [`trace_path`] under `dir`, and its verdict beside
/// it as `<scenario>.verdict.json` ([`RunVerdict`]); returns the trace's path.
pub fn write_trace(dir: &Path, r: &RunRecord) -> Result<PathBuf, WriteError> {
    let path = trace_path(dir, &r.verdict);
    let fail = |p: &Path| {
        let p = p.to_path_buf();
        move |source| WriteError { path: p, source }
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(fail(parent))?;
    }
    std::fs::write(&path, r.trace_json_lines()).map_err(fail(&path))?;
    let json = serde_json::to_string_pretty(&r.verdict).unwrap_or_default();
    let vpath = html::verdict_path(&path);
    std::fs::write(&vpath, json + "\n").map_err(fail(&vpath))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_folders_are_one_plain_component() {
        assert_eq!(driver_folder("reference"), "reference");
        assert_eq!(
            driver_folder("mutant-no-status-poll"),
            "mutant-no-status-poll"
        );
        assert_eq!(driver_folder("sane:epson2"), "sane-epson2");
        for hostile in [
            "exec:../../../tmp/x",
            "exec:/usr/bin/python3 drv.py",
            "..",
            ".",
            "",
            "////",
            "exec:'a b'",
            "sane:/usr/lib/sane/libsane-test.so.1",
        ] {
            let f = driver_folder(hostile);
            assert!(
                !f.is_empty() && f != "." && f != "..",
                "{hostile:?} -> {f:?}"
            );
            assert!(
                !f.contains('/') && !f.starts_with('.'),
                "{hostile:?} -> {f:?}"
            );
            assert!(f.len() <= 89, "{hostile:?} -> {f:?}");
        }
        assert_ne!(driver_folder("exec:a b"), driver_folder("exec:a-b"));
        assert!(driver_folder("exec:python3 drv.py").starts_with("exec-python3-drv.py-"));
    }

    #[test]
    fn trace_paths_stay_inside_the_folder() {
        let v = |driver: &str, service: Option<&str>, scenario: &str, trace| RunVerdict {
            driver: driver.into(),
            scenario: scenario.into(),
            service: service.map(str::to_string),
            verdict: Verdict::Pass,
            trace,
            async_cancel: false,
            failed: Vec::new(),
            not_judged: Vec::new(),
            metrics: Metrics::default(),
            problems: Vec::new(),
            skipped: None,
            cancel_latency: Vec::new(),
        };
        let dir = Path::new("/t");
        assert_eq!(
            trace_path(
                dir,
                &v("reference", Some("xp"), "callback/a", TraceKind::Wia)
            ),
            Path::new("/t/reference/xp/callback/a.jsonl")
        );
        assert_eq!(
            trace_path(dir, &v("sane:test", None, "sane/b", TraceKind::Sane)),
            Path::new("/t/sane-test/b.jsonl")
        );
        let p = trace_path(
            dir,
            &v(
                "exec:../../x",
                Some(".."),
                "../../etc/passwd",
                TraceKind::Wia,
            ),
        );
        assert!(
            p.components().all(|c| c != std::path::Component::ParentDir),
            "{}",
            p.display()
        );
        assert!(p.starts_with(dir));
    }
}
