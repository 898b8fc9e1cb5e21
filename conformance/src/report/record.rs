//! One scenario run of any driver kind, as every writer reads it: a [`RunRecord`] holds the
//! run's [`RunVerdict`] (what `<scenario>.verdict.json` stores beside the trace), its trace
//! ([`RunTrace`]: a WIA trace or a SANE trace) and, for a run just made, every rule's result.
//!
//! The WIA runner's [`RunResult`] and a SANE [`SaneRun`] (judged against its backend's
//! expected-failure list) both become records ([`RunRecord::wia`], [`RunRecord::sane`]); the
//! table, JSON lines, JUnit, trace files and the HTML report are written from records only, so
//! they treat every driver kind alike. A record read back from a `--traces` folder
//! ([`super::html::load_dir`]) has the verdict and the trace but no per-rule results.

use serde::{Deserialize, Serialize};

use crate::report::timeline::{self, Mark, SvgOptions};
use crate::rules;
use crate::run::wia2::Run2Result;
use crate::run::RunResult;
use crate::sane::expected::{compare_run, ExpectedFailures};
use crate::sane::runner::SaneRun;
use crate::sane::trace::{CancelLatency, SaneTrace, TraceParseError};
use crate::trace::{render_event, Trace, TraceError};
use crate::verdict::{Metrics, RuleResult, RuleStatus};

/// The verdict of one run, in the words every writer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Every rule passed.
    Pass,
    /// A rule failed that no expected-failure list names, or the run had a problem.
    Fail,
    /// Rules failed, each exactly as the backend's expected-failure list names it (SANE).
    ExpectedFail,
    /// The scenario did not apply to the driver (SANE: an option the backend lacks).
    Skip,
    /// A trace read back without a verdict file.
    Unknown,
}

impl Verdict {
    /// The word in JSON, verdict files and the HTML report: `pass`, `fail`, `expected-fail`,
    /// `skip`, `unknown`.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::ExpectedFail => "expected-fail",
            Verdict::Skip => "skip",
            Verdict::Unknown => "unknown",
        }
    }

    /// The word in the human table, at most 8 characters: `pass`, `FAIL`, `xfail`, `skip`,
    /// `unknown`.
    pub fn table_word(self) -> &'static str {
        match self {
            Verdict::Fail => "FAIL",
            Verdict::ExpectedFail => "xfail",
            other => other.word(),
        }
    }
}

/// Which trace model a run's trace follows (and so how it is read, drawn and excerpted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceKind {
    /// The WIA runner's trace ([`crate::trace`]); verdict files without a `trace` field.
    #[default]
    Wia,
    /// A SANE frontend's trace ([`crate::sane::trace`]).
    Sane,
}

impl TraceKind {
    fn is_wia(&self) -> bool {
        *self == TraceKind::Wia
    }
}

/// A rule that failed in a run, as the verdict file records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedRule {
    /// Rule ID.
    pub id: String,
    /// The first violation: an index into the trace's events (WIA), a call's seq (SANE).
    pub event: usize,
    /// What was wrong.
    pub message: String,
    /// The rule in one sentence.
    pub statement: String,
    /// The sentence the rule enforces, verbatim.
    pub quote: String,
    /// Where the quote comes from.
    pub source: String,
    /// When the failure is one the driver's expected-failure list names as observed: that
    /// list's finding (the failure then does not fail the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
}

/// A rule listed as a consequence of another failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotJudged {
    /// Rule ID.
    pub id: String,
    /// The failed rule it depends on.
    pub because: String,
}

/// One run's verdict: the `<scenario>.verdict.json` file written beside its trace. WIA verdict
/// files keep the fields (and bytes) they always had; the SANE fields are left out when empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunVerdict {
    /// The driver (`reference`, `exec:…`, `sane:test`).
    pub driver: String,
    /// `<group>/<name>`.
    pub scenario: String,
    /// The WIA service model (`xp`, `vista`); none for SANE runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The verdict.
    pub verdict: Verdict,
    /// Which trace model the trace beside it follows.
    #[serde(default, skip_serializing_if = "TraceKind::is_wia")]
    pub trace: TraceKind,
    /// Whether the driver claimed asynchronous cancel (WIA drivers; false for SANE).
    #[serde(default)]
    pub async_cancel: bool,
    /// Failed rules, in catalogue order.
    #[serde(default)]
    pub failed: Vec<FailedRule>,
    /// Rules not judged because a rule they depend on failed.
    #[serde(default)]
    pub not_judged: Vec<NotJudged>,
    /// Measurements. SANE runs with an emulated device fill `cancel_to_idle_us` (first
    /// `sane_cancel` to the device's scan end), `bands_wasted` (blocks sent after
    /// `sane_cancel`, summed) and `rules_checked`.
    #[serde(default)]
    pub metrics: Metrics,
    /// Problems of the run itself, one line each (SANE: a read loop that timed out, a listed
    /// failure that passed or changed); any problem fails the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// Why the scenario was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// SANE runs with an emulated device: the blocks sent after each `sane_cancel`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cancel_latency: Vec<CancelLatency>,
}

impl RunVerdict {
    /// The violations to mark on the timeline, earliest first.
    pub fn marks(&self) -> Vec<Mark> {
        let mut marks: Vec<Mark> = self
            .failed
            .iter()
            .map(|f| Mark {
                rule: f.id.clone(),
                event: f.event,
                message: f.message.clone(),
                quote: f.quote.clone(),
            })
            .collect();
        marks.sort_by_key(|m| m.event);
        marks
    }

    /// `-` or the cancel-to-idle latency in ms with one decimal.
    pub fn idle_text(&self) -> String {
        self.metrics
            .cancel_to_idle_us
            .map(|us| format!("{}.{} ms", us / 1000, (us % 1000) / 100))
            .unwrap_or_else(|| "-".into())
    }

    /// `-` or the bands (SANE: blocks) read after a cancel.
    pub fn wasted_text(&self) -> String {
        self.metrics
            .bands_wasted
            .map(|b| b.to_string())
            .unwrap_or_else(|| "-".into())
    }

    /// `xp`, `vista`, or `-` for a run without a service model.
    pub fn service_text(&self) -> &str {
        self.service.as_deref().unwrap_or("-")
    }

    /// The failed rules that fail the run (not the expected ones).
    pub fn unexpected(&self) -> impl Iterator<Item = &FailedRule> {
        self.failed.iter().filter(|f| f.expected.is_none())
    }

    /// The title drawn above a run's timeline: `group/name [xp] reference — FAIL`.
    pub fn title(&self) -> String {
        match &self.service {
            Some(svc) => format!(
                "{} [{svc}] {} — {}",
                self.scenario,
                self.driver,
                self.verdict.word().to_uppercase()
            ),
            None => format!(
                "{} {} — {}",
                self.scenario,
                self.driver,
                self.verdict.word().to_uppercase()
            ),
        }
    }
}

/// A run's trace, of either model.
#[derive(Clone, Debug, PartialEq)]
pub enum RunTrace {
    /// A WIA run: one event per role's action.
    Wia(Trace),
    /// A SANE run: the frontend's calls and the device's notes.
    Sane(SaneTrace),
}

/// A trace file that cannot be read back; `Display` is `line N…: what` (the caller names the
/// file).
#[derive(Debug, thiserror::Error)]
pub enum RunTraceError {
    /// A WIA trace line.
    #[error(transparent)]
    Wia(#[from] TraceError),
    /// A SANE trace line.
    #[error(transparent)]
    Sane(#[from] TraceParseError),
}

impl RunTrace {
    /// Which model it follows.
    pub fn kind(&self) -> TraceKind {
        match self {
            RunTrace::Wia(_) => TraceKind::Wia,
            RunTrace::Sane(_) => TraceKind::Sane,
        }
    }

    /// How many events a mark may point at: WIA events, SANE calls.
    pub fn len(&self) -> usize {
        match self {
            RunTrace::Wia(t) => t.events.len(),
            RunTrace::Sane(t) => t.calls.len(),
        }
    }

    /// Whether it has nothing a mark could point at.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `N events` or `N calls`.
    pub fn size_text(&self) -> String {
        match self {
            RunTrace::Wia(t) => format!("{} events", t.events.len()),
            RunTrace::Sane(t) => format!("{} calls", t.calls.len()),
        }
    }

    /// The time of the violation at `event` (a SANE call's return), in µs.
    pub fn at_us(&self, event: usize) -> Option<u64> {
        match self {
            RunTrace::Wia(t) => t.events.get(event).map(|e| e.at_us),
            RunTrace::Sane(t) => t.calls.get(event).map(|c| c.ret_us),
        }
    }

    /// The trace around `event`, one line each, the event itself marked: five events before
    /// and three after (WIA; `>> #N …`), or the six calls before it (SANE; `<== here`).
    pub fn excerpt(&self, event: usize) -> Vec<String> {
        match self {
            RunTrace::Wia(t) => {
                if t.events.is_empty() {
                    return Vec::new();
                }
                let at = event.min(t.events.len() - 1);
                let to = (at + 3).min(t.events.len() - 1);
                (at.saturating_sub(5)..=to)
                    .map(|i| {
                        let mark = if i == event { ">>" } else { "  " };
                        format!("{mark} #{i:<4} {}", render_event(&t.events[i]))
                    })
                    .collect()
            }
            RunTrace::Sane(t) => t.context(event, 6),
        }
    }

    /// The JSON lines `--traces` writes; a SANE trace carries `latency` as `cancel-latency`
    /// events.
    pub fn to_json_lines(&self, latency: &[CancelLatency]) -> String {
        match self {
            RunTrace::Wia(t) => t.to_json_lines(),
            RunTrace::Sane(t) => t.to_json_lines(latency),
        }
    }

    /// Reads a trace of model `kind` back from its JSON lines (a SANE trace's latencies are
    /// dropped: the verdict file holds them).
    pub fn from_json_lines(kind: TraceKind, text: &str) -> Result<RunTrace, RunTraceError> {
        match kind {
            TraceKind::Wia => Ok(RunTrace::Wia(Trace::from_json_lines(text)?)),
            TraceKind::Sane => Ok(RunTrace::Sane(SaneTrace::from_json_lines(text)?.0)),
        }
    }

    /// The model of a trace file without a verdict beside it, from its first event: SANE events
    /// carry a call `seq` and a `thread` (or are device notes with `value` and `detail`).
    pub fn guess_kind(text: &str) -> TraceKind {
        let first = text
            .lines()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok());
        let fields = first.as_ref().map(|v| &v["fields"]);
        match fields {
            Some(f) if f.get("seq").is_some() && f.get("thread").is_some() => TraceKind::Sane,
            _ => TraceKind::Wia,
        }
    }

    /// The trace as aligned text, one event per line: a WIA trace as
    /// [`Trace::render_text`]; a SANE trace's calls (at their call time, with what came back)
    /// and device notes in time order.
    pub fn render_text(&self) -> String {
        self.text_lines()
            .into_iter()
            .map(|(l, _)| l + "\n")
            .collect()
    }

    /// [`RunTrace::render_text`] with the violations marked: each line starts with `>> ` where
    /// a mark points at its event (WIA event, SANE call) and three spaces elsewhere, and under
    /// a marked line one `   ^ RULE: message` line per mark on it; without marks, exactly
    /// [`RunTrace::render_text`].
    pub fn render_text_marked(&self, marks: &[Mark]) -> String {
        if marks.is_empty() {
            return self.render_text();
        }
        let mut out = String::new();
        for (line, event) in self.text_lines() {
            let on: Vec<&Mark> = marks.iter().filter(|m| event == Some(m.event)).collect();
            out.push_str(if on.is_empty() { "   " } else { ">> " });
            out.push_str(&line);
            out.push('\n');
            for m in on {
                out.push_str(&format!("   ^ {}: {}\n", m.rule, m.message));
            }
        }
        let rules: Vec<&str> = marks.iter().map(|m| m.rule.as_str()).collect();
        out.push_str(&format!(
            "{} violation{} marked with >>: {}\n",
            marks.len(),
            if marks.len() == 1 { "" } else { "s" },
            rules.join(", ")
        ));
        out
    }

    /// Every line of the text form, with the index a mark uses for it (WIA: the event; SANE:
    /// the call; device notes have none).
    fn text_lines(&self) -> Vec<(String, Option<usize>)> {
        match self {
            RunTrace::Wia(t) => t
                .events
                .iter()
                .enumerate()
                .map(|(i, e)| (render_event(e), Some(i)))
                .collect(),
            RunTrace::Sane(t) => {
                let calls = t.calls.iter().enumerate().map(|(k, c)| {
                    (
                        c.call_us,
                        0,
                        c.seq,
                        format!(
                            "{:>9} us  #{:<4} {:<9} {}",
                            c.call_us,
                            c.seq,
                            c.thread.name(),
                            c.describe()
                        ),
                        Some(k),
                    )
                });
                let device = t.device.iter().enumerate().map(|(k, d)| {
                    (
                        d.at_us,
                        1,
                        k,
                        format!("{:>9} us        {:<9} {}", d.at_us, "device", d.label()),
                        None,
                    )
                });
                let mut lines: Vec<_> = calls.chain(device).collect();
                lines.sort_by_key(|(at, kind, i, _, _)| (*at, *kind, *i));
                lines.into_iter().map(|(_, _, _, l, m)| (l, m)).collect()
            }
        }
    }

    /// The run's timeline with `marks`.
    pub fn render_svg(&self, marks: &[Mark], opts: &SvgOptions) -> String {
        match self {
            RunTrace::Wia(t) => timeline::render_svg(t, marks, opts),
            RunTrace::Sane(t) => timeline::render_sane_svg(t, marks, opts),
        }
    }
}

/// One run of any driver kind: its verdict, its trace and, for a run just made, every rule's
/// result.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRecord {
    /// The verdict (what the verdict file stores).
    pub verdict: RunVerdict,
    /// The trace.
    pub trace: RunTrace,
    /// Every rule's result in catalogue order; empty for a record read back from disk.
    pub results: Vec<RuleResult>,
}

impl RunRecord {
    /// The record of a WIA run (failures explained from the WIA catalogue).
    pub fn wia(r: &RunResult) -> RunRecord {
        let (failed, not_judged) = explain_results(&r.report.results, |id| {
            rules::find(id).map(|x| (x.id, x.statement, x.quote, x.source))
        });
        RunRecord {
            verdict: RunVerdict {
                driver: r.driver.clone(),
                scenario: r.scenario.clone(),
                service: Some(r.service.name().to_string()),
                verdict: if r.passed() {
                    Verdict::Pass
                } else {
                    Verdict::Fail
                },
                trace: TraceKind::Wia,
                async_cancel: r.async_cancel,
                failed,
                not_judged,
                metrics: r.report.metrics.clone(),
                problems: Vec::new(),
                skipped: None,
                cancel_latency: Vec::new(),
            },
            trace: RunTrace::Wia(r.trace.clone()),
            results: r.report.results.clone(),
        }
    }

    /// The record of a WIA 2.0 run (failures explained from the WIA 2.0 catalogue and the
    /// shared device-level rules). WIA 2.0 has one service, so the record has no service model;
    /// its scenario id (`wia2/<group>/<name>`) says which catalogue it belongs to.
    pub fn wia2(r: &Run2Result) -> RunRecord {
        let (failed, not_judged) = explain_results(&r.report.results, rules::wia2::text_of);
        RunRecord {
            verdict: RunVerdict {
                driver: r.driver.clone(),
                scenario: r.scenario.clone(),
                service: None,
                verdict: if r.passed() {
                    Verdict::Pass
                } else {
                    Verdict::Fail
                },
                trace: TraceKind::Wia,
                async_cancel: false,
                failed,
                not_judged,
                metrics: r.report.metrics.clone(),
                problems: Vec::new(),
                skipped: None,
                cancel_latency: Vec::new(),
            },
            trace: RunTrace::Wia(r.trace.clone()),
            results: r.report.results.clone(),
        }
    }

    /// The record of a SANE run of `driver` (`sane:NAME`), judged against the backend's
    /// expected-failure list: failures the list names as observed are expected (verdict
    /// `expected-fail` when they are all there is); an unlisted failure, a listed one that
    /// changed or passed, or a run problem fails the run.
    pub fn sane(run: SaneRun, driver: &str, list: &ExpectedFailures) -> RunRecord {
        let cmp = compare_run(&run, list);
        let failed: Vec<FailedRule> = run
            .failures()
            .into_iter()
            .map(|(id, event, message)| {
                let rule = crate::sane::rules::find(id);
                FailedRule {
                    id: id.to_string(),
                    event,
                    message: message.to_string(),
                    statement: rule.map(|x| x.statement).unwrap_or("").to_string(),
                    quote: rule.map(|x| x.quote).unwrap_or("").to_string(),
                    source: rule.map(|x| x.source).unwrap_or("").to_string(),
                    expected: cmp
                        .honoured
                        .iter()
                        .find(|(r, _)| *r == id)
                        .map(|(_, finding)| finding.clone()),
                }
            })
            .collect();
        let verdict = if run.skipped.is_some() {
            Verdict::Skip
        } else if !cmp.as_listed() {
            Verdict::Fail
        } else if failed.is_empty() {
            Verdict::Pass
        } else {
            Verdict::ExpectedFail
        };
        let metrics = Metrics {
            cancel_to_idle_us: run.latency.iter().find_map(|l| l.after_us),
            bands_wasted: (!run.latency.is_empty())
                .then(|| run.latency.iter().map(|l| l.blocks).sum()),
            rules_checked: run
                .results
                .iter()
                .filter(|r| r.status != RuleStatus::NotApplicable)
                .count() as u32,
            ..Metrics::default()
        };
        RunRecord {
            verdict: RunVerdict {
                driver: driver.to_string(),
                scenario: run.id,
                service: None,
                verdict,
                trace: TraceKind::Sane,
                async_cancel: false,
                failed,
                not_judged: Vec::new(),
                metrics,
                problems: cmp.problems,
                skipped: run.skipped,
                cancel_latency: run.latency,
            },
            trace: RunTrace::Sane(run.trace),
            results: run.results,
        }
    }

    /// Whether the run fails (its verdict is `fail`).
    pub fn failed(&self) -> bool {
        self.verdict.verdict == Verdict::Fail
    }

    /// The JSON lines of its trace, as `--traces` writes them.
    pub fn trace_json_lines(&self) -> String {
        self.trace.to_json_lines(&self.verdict.cancel_latency)
    }
}

/// The failed rules of a run's `results`, each explained by `text` (`(id, statement, quote,
/// source)` of a rule), and the rules not judged because of another failure.
fn explain_results(
    results: &[RuleResult],
    text: impl Fn(&str) -> Option<(&'static str, &'static str, &'static str, &'static str)>,
) -> (Vec<FailedRule>, Vec<NotJudged>) {
    let mut failed = Vec::new();
    let mut not_judged = Vec::new();
    for res in results {
        match &res.status {
            RuleStatus::Fail { event, message } => {
                let (_, statement, quote, source) = text(res.id).unwrap_or(("", "", "", ""));
                failed.push(FailedRule {
                    id: res.id.to_string(),
                    event: *event,
                    message: message.clone(),
                    statement: statement.to_string(),
                    quote: quote.to_string(),
                    source: source.to_string(),
                    expected: None,
                });
            }
            RuleStatus::NotJudged { because } => not_judged.push(NotJudged {
                id: res.id.to_string(),
                because: because.to_string(),
            }),
            _ => {}
        }
    }
    (failed, not_judged)
}
