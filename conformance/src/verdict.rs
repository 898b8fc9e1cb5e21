//! Verdicts: what judging a run gives, shared by every rule catalogue (WIA and SANE).
//!
//! A catalogue judges one run and gives a [`RuleReport`]: one [`RuleResult`] per rule, in
//! catalogue order, plus the run's [`Metrics`]. The report, JUnit and summary writers read only
//! these types (through `report::record`), so they serve every driver model alike.
//!
//! Rule IDs stay `&'static str`, the catalogue's own strings, so that rules, drivers and tests
//! compare them as they are; a verdict file records results through the report's owned
//! `FailedRule`/`NotJudged`, and only [`Metrics`] is read back as it is.

use serde::{Deserialize, Serialize};

/// The verdict of one rule for one run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum RuleStatus {
    /// Judged, no violation.
    Pass,
    /// Nothing to judge in this run.
    NotApplicable,
    /// The first violation that is not a consequence of a failed dependency.
    Fail {
        /// Index into `trace.events` of the first violation.
        event: usize,
        /// What was wrong.
        message: String,
    },
    /// Every violation followed a failure of a rule this one depends on.
    NotJudged {
        /// The failed rule it depends on.
        because: &'static str,
    },
    /// Report-only measurement.
    Report {
        /// What was measured.
        message: String,
    },
}

/// One rule's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleResult {
    /// The rule's ID.
    pub id: &'static str,
    /// Its verdict.
    pub status: RuleStatus,
}

/// Numbers measured over a run (not rules). Read back from verdict files, hence `Deserialize`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    /// First cancel point (any kind, CANCEL_IO included) to the device stopped, first
    /// acquisition that has one.
    pub cancel_to_idle_us: Option<u64>,
    /// Bands read from the device after the first cancel point of each acquisition, summed
    /// (device `band-sent` events, or bulk IN reads when the device reports none).
    pub bands_wasted: Option<u32>,
    /// IT_MSG_DATA bytes delivered after a callback returned S_FALSE or an error.
    pub bytes_after_sfalse: u64,
    /// IT_MSG_DATA callbacks.
    pub data_callbacks: u32,
    /// IT_MSG_DATA bytes.
    pub data_bytes: u64,
    /// Rules that had something to judge (all but not-applicable).
    pub rules_checked: u32,
    /// Real-time runs: how long the run's threads waited for a CPU over the whole run
    /// (`rules::lag`); absent in virtual time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_lag_us: Option<u64>,
    /// Real-time runs: the host lag inside the `cancel_to_idle_us` interval, which the
    /// idle-after-cancel rule took off it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_to_idle_lag_us: Option<u64>,
}

/// Every rule's result for one run, plus the run's metrics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleReport {
    /// One per catalogue rule, in catalogue order.
    pub results: Vec<RuleResult>,
    /// Measurements.
    pub metrics: Metrics,
}

impl RuleReport {
    /// The rules that failed (not-judged consequences excluded).
    pub fn failed(&self) -> Vec<&RuleResult> {
        self.results
            .iter()
            .filter(|r| matches!(r.status, RuleStatus::Fail { .. }))
            .collect()
    }

    /// The rules that passed.
    pub fn passed(&self) -> Vec<&RuleResult> {
        self.results
            .iter()
            .filter(|r| r.status == RuleStatus::Pass)
            .collect()
    }

    /// The result of one rule.
    pub fn get(&self, id: &str) -> Option<&RuleStatus> {
        self.results.iter().find(|r| r.id == id).map(|r| &r.status)
    }
}
