//! Findings as data: the rules a backend is known to break, per scenario, with the observed
//! behaviour (`fixtures/sane-expected/<backend>.json`), checked both ways.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::runner::SaneRun;

/// One known failure.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedFailure {
    /// Scenario id, `sane/<name>`.
    pub scenario: String,
    /// The rule it fails.
    pub rule: String,
    /// Text the failure message must contain (the observed status, e.g. `IO_ERROR`).
    pub observed: String,
    /// The finding in a sentence, for people.
    pub finding: String,
    /// With an emulated device: the wire evidence, the device events that show the finding as
    /// the failure message names them (e.g. `block-sent #3, can`); must appear in the message
    /// too. Optional (backends without a device have none).
    #[serde(default)]
    pub wire: Option<String>,
}

impl ExpectedFailure {
    /// Whether a failure `message` is this finding as listed: it contains `observed` and,
    /// when given, `wire`.
    pub fn matches(&self, message: &str) -> bool {
        message.contains(&self.observed)
            && self
                .wire
                .as_ref()
                .is_none_or(|w| message.contains(w.as_str()))
    }
}

/// A backend's expected-failure list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedFailures {
    /// The backend's name.
    pub backend: String,
    /// Which build the findings were observed on.
    #[serde(default)]
    pub observed_on: String,
    /// The failures.
    pub failures: Vec<ExpectedFailure>,
}

/// An expected-failure list that cannot be used; `Display` is one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ExpectedError {
    /// The file cannot be read.
    #[error("{}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid list.
    #[error("{}:{}:{}: {source}", .path.display(), .source.line(), .source.column())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why, with the place.
        source: serde_json::Error,
    },
    /// A listed rule is not in the SANE catalogue.
    #[error("{}: unknown SANE rule {rule:?} (scenario {scenario})", .path.display())]
    UnknownRule {
        /// The file.
        path: PathBuf,
        /// The rule ID listed.
        rule: String,
        /// The scenario it is listed for.
        scenario: String,
    },
}

impl ExpectedFailures {
    /// Reads a list; a missing file is an empty list (every rule must pass). Every listed rule
    /// must be one `known_rule` knows (the SANE catalogue: `|id| sane::rules::find(id).is_some()`).
    pub fn load(
        path: &Path,
        known_rule: impl Fn(&str) -> bool,
    ) -> Result<ExpectedFailures, ExpectedError> {
        if !path.exists() {
            return Ok(ExpectedFailures::default());
        }
        let text = std::fs::read_to_string(path).map_err(|source| ExpectedError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let list: ExpectedFailures =
            serde_json::from_str(&text).map_err(|source| ExpectedError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        if let Some(f) = list.failures.iter().find(|f| !known_rule(&f.rule)) {
            return Err(ExpectedError::UnknownRule {
                path: path.to_path_buf(),
                rule: f.rule.clone(),
                scenario: f.scenario.clone(),
            });
        }
        Ok(list)
    }

    /// The listed failure for (scenario, rule).
    pub fn get(&self, scenario: &str, rule: &str) -> Option<&ExpectedFailure> {
        self.failures
            .iter()
            .find(|f| f.scenario == scenario && f.rule == rule)
    }
}

/// How one run compares with the list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunComparison {
    /// Failed rules the list names for this scenario with the observed behaviour: (rule, the
    /// listed finding).
    pub honoured: Vec<(&'static str, String)>,
    /// Failed rules the list does not name.
    pub unlisted: Vec<&'static str>,
    /// What else breaks the run, one line each, without the scenario: run problems, listed
    /// failures whose observed behaviour changed, listed failures that passed.
    pub problems: Vec<String>,
}

impl RunComparison {
    /// Whether the run is as the list says (nothing unlisted, no problem).
    pub fn as_listed(&self) -> bool {
        self.unlisted.is_empty() && self.problems.is_empty()
    }
}

/// Compares one run with `list`. A skipped run has nothing to compare (its listed failures are
/// not checked).
pub fn compare_run(run: &SaneRun, list: &ExpectedFailures) -> RunComparison {
    let mut out = RunComparison {
        problems: run
            .problems
            .iter()
            .map(|p| format!("run problem: {p}"))
            .collect(),
        ..RunComparison::default()
    };
    for (rule, _, message) in run.failures() {
        match list.get(&run.id, rule) {
            Some(f) if f.matches(message) => out.honoured.push((rule, f.finding.clone())),
            Some(f) => out.problems.push(format!(
                "{rule} failed as listed, but the observed behaviour changed: expected {:?}{} in: {message}",
                f.observed,
                f.wire
                    .as_ref()
                    .map(|w| format!(" and wire evidence {w:?}"))
                    .unwrap_or_default()
            )),
            None => out.unlisted.push(rule),
        }
    }
    if run.skipped.is_none() {
        let failures = run.failures();
        for f in list.failures.iter().filter(|f| f.scenario == run.id) {
            if !failures.iter().any(|(rule, _, _)| *rule == f.rule) {
                out.problems.push(format!(
                    "{} is listed as an expected failure ({}) but passed; remove it from the list",
                    f.rule, f.observed
                ));
            }
        }
    }
    out
}

/// How the runs compare with the list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Listed failures that happened as listed: (scenario, rule, message).
    pub honoured: Vec<(String, String, String)>,
    /// What breaks the run: unlisted failures, listed failures that passed or changed, run
    /// problems. One line each.
    pub violations: Vec<String>,
}

/// Compares `runs` with `list` ([`compare_run`] for each). Listed failures of scenarios that
/// were not run (a `--filter`) are ignored.
pub fn compare(runs: &[SaneRun], list: &ExpectedFailures) -> Comparison {
    let mut out = Comparison::default();
    for r in runs {
        let cmp = compare_run(r, list);
        for (rule, _, message) in r.failures() {
            if cmp.honoured.iter().any(|(h, _)| *h == rule) {
                out.honoured
                    .push((r.id.clone(), rule.to_string(), message.to_string()));
            } else if cmp.unlisted.contains(&rule) {
                out.violations.push(format!(
                    "{}: {rule} failed and is not in the expected-failure list: {message}",
                    r.id
                ));
            }
        }
        out.violations
            .extend(cmp.problems.iter().map(|p| format!("{}: {p}", r.id)));
    }
    out
}
