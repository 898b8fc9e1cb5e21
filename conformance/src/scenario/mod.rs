//! Scenarios: JSON files that script the application and the device for one cancel case.
//!
//! A scenario lives at `fixtures/scenarios/<group>/<name>.json`; its id is `<group>/<name>`.
//! The schema is documented in `conformance/SCENARIOS.md`. Unknown fields are errors, reported
//! with file:line:column, and so are rule IDs that the catalog does not know.
//!
//! Loading has two steps: [`load`] / [`discover`] parse files (syntax, schema, unknown fields),
//! then [`LoadedScenario::validate`] checks what the schema cannot say (rule IDs known, at least
//! one acquisition, sensible triggers, ...) and places each problem at the line and column of
//! the offending value. Every error is one [`ScenarioError`] line:
//!
//! ```text
//! fixtures/scenarios/callback/x.json:4:23: unknown rule ID "WIA-CB-NOPE"
//! ```

mod check;
mod locate;
pub mod wia2;

use std::path::{Path, PathBuf};

use scanemu::engine::{Fault, ScanJob, ScanMode, ScanSource};
use serde::{Deserialize, Serialize};

use crate::wia::Hresult;

pub use self::check::{Invalid, Seg};
pub use self::locate::locate;

/// Which service model(s) a scenario runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceModel {
    /// Windows XP: CancelPendingIO only raises WIA_EVENT_CANCEL_IO; callbacks are not affected.
    Xp,
    /// Windows Vista: the event is raised and every later callback returns S_FALSE.
    Vista,
}

impl ServiceModel {
    /// Lowercase name.
    pub const fn name(self) -> &'static str {
        match self {
            ServiceModel::Xp => "xp",
            ServiceModel::Vista => "vista",
        }
    }
}

/// The item's scan settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanSettings {
    /// Resolution in dpi.
    pub resolution_dpi: u16,
    /// Colour mode.
    pub mode: ScanMode,
    /// Left edge in pixels (default 0).
    #[serde(default)]
    pub x_px: u32,
    /// Top edge in pixels (default 0).
    #[serde(default)]
    pub y_px: u32,
    /// Width in pixels.
    pub width_px: u32,
    /// Height in pixels.
    pub height_px: u32,
    /// Flatbed (default) or ADF.
    #[serde(default = "default_source")]
    pub source: ScanSource,
    /// Pages (ADF; 0 = until the feeder is empty). Default 1.
    #[serde(default = "default_pages")]
    pub pages: u16,
}

impl ScanSettings {
    /// The scan engine's job for these settings.
    pub const fn job(&self) -> ScanJob {
        ScanJob {
            resolution_dpi: self.resolution_dpi,
            mode: self.mode,
            x_px: self.x_px,
            y_px: self.y_px,
            width_px: self.width_px,
            height_px: self.height_px,
            source: self.source,
            pages: self.pages,
        }
    }
}

fn default_source() -> ScanSource {
    ScanSource::Flatbed
}

fn default_pages() -> u16 {
    1
}

/// When an application action fires, within one acquisition.
///
/// Callback triggers (`data_callback`, `percent`, `any_callback`, `status_callback`, `new_page`,
/// `last_data_callback`) fire *inside* a BandedDataCallback call; the others fire on the
/// application's second thread. Each trigger fires at most once per acquisition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Trigger {
    /// At the Nth IT_MSG_DATA callback of this acquisition (1-based).
    DataCallback(u32),
    /// At the first IT_MSG_DATA callback whose percent is at least this value.
    Percent(i32),
    /// At the Nth callback of any kind (1-based), status and data alike.
    AnyCallback(u32),
    /// At the Nth IT_MSG_STATUS callback (1-based): the progress a driver reports while it
    /// waits (warm-up, a late band), where no data callback can come.
    StatusCallback(u32),
    /// At the Nth IT_MSG_NEW_PAGE callback (1-based).
    NewPage(u32),
    /// At this many virtual microseconds after the acquisition started (a separate thread of the
    /// application, not inside a callback).
    AtUs(u64),
    /// At the IT_MSG_DATA callback that delivers the last byte of the image (the last byte of
    /// the last page the job will produce). Added so "at the last band" does not depend on how
    /// a driver cuts bands into callbacks.
    LastDataCallback,
    /// Right after the callback of [`Trigger::LastDataCallback`] has returned to the driver, on
    /// the application's second thread (the driver sees it at its next await, before or while it
    /// finishes). Only for `cancel_pending_io`: the race of a cancel with completion.
    AfterLastDataCallback,
}

impl Trigger {
    /// True when the trigger fires inside a BandedDataCallback (so `return` may answer it).
    pub const fn is_callback(&self) -> bool {
        !matches!(self, Trigger::AtUs(_) | Trigger::AfterLastDataCallback)
    }

    /// The JSON name of the variant.
    pub const fn name(&self) -> &'static str {
        match self {
            Trigger::DataCallback(_) => "data_callback",
            Trigger::Percent(_) => "percent",
            Trigger::AnyCallback(_) => "any_callback",
            Trigger::StatusCallback(_) => "status_callback",
            Trigger::NewPage(_) => "new_page",
            Trigger::AtUs(_) => "at_us",
            Trigger::LastDataCallback => "last_data_callback",
            Trigger::AfterLastDataCallback => "after_last_data_callback",
        }
    }
}

/// What the application does when a trigger fires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Action {
    /// Return this HRESULT from BandedDataCallback (S_FALSE to cancel, an error to fail).
    /// Only for callback triggers.
    Return(Hresult),
    /// Call CancelPendingIO (xp) / IWiaTransfer::Cancel (vista).
    CancelPendingIo,
}

/// One scripted application action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// When.
    pub when: Trigger,
    /// What.
    #[serde(rename = "do")]
    pub action: Action,
}

/// What an acquisition should end with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// drvAcquireItemData returns S_OK and the whole image arrives.
    Complete,
    /// drvAcquireItemData returns S_FALSE.
    Cancelled,
    /// drvAcquireItemData returns exactly this HRESULT.
    Hresult(Hresult),
    /// drvAcquireItemData returns some failure code (FAILED(hr)).
    Error,
    /// Any one of these (at least two, none of them `one_of`). Only for genuine races whose
    /// winner depends on a correct driver's legitimate choice; the scenario's description says
    /// which choice leads where.
    OneOf(Vec<Outcome>),
}

impl Outcome {
    /// Whether a drvAcquireItemData result satisfies this outcome. For `complete`, the "whole
    /// image arrives" half is the data rules' business, not this check's.
    pub fn accepts(&self, hr: Hresult) -> bool {
        match self {
            Outcome::Complete => hr == Hresult::S_OK,
            Outcome::Cancelled => hr == Hresult::S_FALSE,
            Outcome::Hresult(h) => hr == *h,
            Outcome::Error => !hr.succeeded(),
            Outcome::OneOf(all) => all.iter().any(|o| o.accepts(hr)),
        }
    }
}

/// One acquisition (one idtGetBandedData call) of the application.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Acquisition {
    /// Scripted actions, in any order.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// The expected result.
    pub expect: Outcome,
    /// Virtual microseconds the application waits before starting this acquisition (default 0).
    #[serde(default)]
    pub delay_us: u64,
}

/// Application actions outside any acquisition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdleCancel {
    /// Before which acquisition (0 = before the first; equal to the number of acquisitions = at
    /// the end) the application calls CancelPendingIO while nothing is being transferred.
    pub before: u32,
    /// How many times it calls it there (default 1).
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

/// A scenario file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What the scenario checks, in a sentence or two.
    pub description: String,
    /// IDs of the rules this scenario exercises (all rules are checked; these must apply).
    pub rules: Vec<String>,
    /// Service models to run under (default both).
    #[serde(default = "all_services")]
    pub services: Vec<ServiceModel>,
    /// Device profile: a name in fixtures/profiles (without .json) or a path.
    pub profile: String,
    /// Scan settings of the item.
    pub scan: ScanSettings,
    /// Transfer buffer size (lBufferSize), default 65536.
    #[serde(default = "default_buffer")]
    pub buffer: u32,
    /// Faults injected into the device for this scenario (in addition to the profile's).
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// The application's acquisitions, in order.
    pub acquisitions: Vec<Acquisition>,
    /// CancelPendingIO calls made while no transfer runs.
    #[serde(default)]
    pub idle_cancels: Vec<IdleCancel>,
    /// Virtual-time budget for the whole scenario in microseconds (default 120 s).
    #[serde(default = "default_budget")]
    pub budget_us: u64,
}

fn all_services() -> Vec<ServiceModel> {
    vec![ServiceModel::Xp, ServiceModel::Vista]
}

fn default_buffer() -> u32 {
    65536
}

fn default_budget() -> u64 {
    120_000_000
}

impl Scenario {
    /// Where the profile is: a bare name (no `/`, no `.json`) is `profiles_dir/<name>.json`;
    /// anything else is a path relative to `scenario_dir` (the scenario file's folder).
    pub fn profile_path(&self, profiles_dir: &Path, scenario_dir: &Path) -> PathBuf {
        let p = &self.profile;
        if p.contains('/') || p.contains('\\') || p.ends_with(".json") {
            scenario_dir.join(p)
        } else {
            profiles_dir.join(format!("{p}.json"))
        }
    }
}

/// The folder of a scenario file (`.` for a bare file name).
pub fn folder_of(file: &Path) -> &Path {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A scenario read from disk, with its id.
#[derive(Clone, Debug)]
pub struct LoadedScenario {
    /// `<group>/<name>`.
    pub id: String,
    /// The file it came from.
    pub path: PathBuf,
    /// Its content.
    pub scenario: Scenario,
    /// The file's text, kept so that later checks can name a line and column.
    pub text: String,
}

impl LoadedScenario {
    /// The folder of the scenario file, against which a profile path is resolved.
    pub fn folder(&self) -> &Path {
        folder_of(&self.path)
    }

    /// [`Scenario::check`], with the problem placed at its line and column in the file.
    pub fn validate(&self, known_rule: impl Fn(&str) -> bool) -> Result<(), ScenarioError> {
        self.scenario.check(known_rule).map_err(|inv| {
            let (line, column) = locate(&self.text, &inv.path).unwrap_or((1, 1));
            ScenarioError {
                path: self.path.display().to_string(),
                line,
                column,
                message: inv.message,
            }
        })
    }
}

/// A scenario file that could not be used; `Display` is one line naming file:line:column.
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}:{column}: {message}")]
pub struct ScenarioError {
    /// The file.
    pub path: String,
    /// 1-based line (1 when the error is not tied to a place).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl ScenarioError {
    /// An error tied to no particular place in `path`.
    pub fn whole_file(path: &Path, message: impl Into<String>) -> ScenarioError {
        ScenarioError {
            path: path.display().to_string(),
            line: 1,
            column: 1,
            message: message.into(),
        }
    }
}

/// Parses the scenario file at `path`; its id is the path relative to `root`, without `.json`,
/// with `/` between parts. Syntax and schema only: call [`LoadedScenario::validate`] next.
pub fn load(path: &Path, root: &Path) -> Result<LoadedScenario, ScenarioError> {
    let id = scenario_id(path, root)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| ScenarioError::whole_file(path, format!("cannot read scenario: {e}")))?;
    let scenario = parse(&text, path)?;
    Ok(LoadedScenario {
        id,
        path: path.to_path_buf(),
        scenario,
        text,
    })
}

/// Parses scenario text; `path` only names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
    parse_as(text, path)
}

/// Parses a scenario file of any model; `path` only names it in errors.
fn parse_as<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T, ScenarioError> {
    serde_json::from_str(text).map_err(|e| {
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
        ScenarioError {
            path: path.display().to_string(),
            line: e.line().max(1),
            column: e.column().max(1),
            message,
        }
    })
}

/// Every `*.json` file under `root` (recursively), parsed, sorted by id. If `root` is a file,
/// that one scenario (its id is its file name without `.json`). A folder without any scenario
/// is an error, so a mistyped `--scenarios` path never passes silently.
pub fn discover(root: &Path) -> Result<Vec<LoadedScenario>, ScenarioError> {
    let meta = std::fs::metadata(root)
        .map_err(|e| ScenarioError::whole_file(root, format!("cannot read scenarios: {e}")))?;
    if meta.is_file() {
        let parent = root.parent().unwrap_or(Path::new(""));
        return Ok(vec![load(root, parent)?]);
    }
    let mut files = Vec::new();
    collect(root, &mut files)?;
    // `sane/` holds SANE scenarios (`"kind": "sane"`, crate::sane::scenario) and `wia2/` WIA
    // 2.0 ones (`wia2::Scenario2`), not WIA 1.0 ones.
    files.retain(|f| {
        !f.strip_prefix(root)
            .is_ok_and(|rel| rel.starts_with("sane") || rel.starts_with("wia2"))
    });
    if files.is_empty() {
        return Err(ScenarioError::whole_file(
            root,
            "no scenario files (*.json) in this folder",
        ));
    }
    let mut out = files
        .iter()
        .map(|f| load(f, root))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// [`discover`], then [`LoadedScenario::validate`] on each; the first problem wins.
pub fn discover_valid(
    root: &Path,
    known_rule: impl Fn(&str) -> bool,
) -> Result<Vec<LoadedScenario>, ScenarioError> {
    let all = discover(root)?;
    for s in &all {
        s.validate(&known_rule)?;
    }
    Ok(all)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ScenarioError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ScenarioError::whole_file(dir, format!("cannot list folder: {e}")))?;
    for entry in entries {
        let entry = entry
            .map_err(|e| ScenarioError::whole_file(dir, format!("cannot list folder: {e}")))?;
        let path = entry.path();
        let name = entry.file_name();
        // Editor backups, `.git` and the like are never scenarios.
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let kind = entry
            .file_type()
            .map_err(|e| ScenarioError::whole_file(&path, format!("cannot stat: {e}")))?;
        if kind.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|x| x == "json") {
            out.push(path);
        }
    }
    Ok(())
}

fn scenario_id(path: &Path, root: &Path) -> Result<String, ScenarioError> {
    // Callers mix relative and absolute spellings (test harnesses pass `../fixtures/...`), so
    // fall back to the canonical paths before giving up.
    let canonical = || {
        Some((
            std::fs::canonicalize(path).ok()?,
            std::fs::canonicalize(root).ok()?,
        ))
    };
    let owned;
    let rel = match path.strip_prefix(root) {
        Ok(rel) => rel,
        Err(_) => {
            owned = canonical()
                .and_then(|(p, r)| p.strip_prefix(&r).ok().map(Path::to_path_buf))
                .ok_or_else(|| {
                    ScenarioError::whole_file(
                        path,
                        format!("is not inside the scenario folder {}", root.display()),
                    )
                })?;
            &owned
        }
    };
    let mut parts = Vec::new();
    for c in rel.components() {
        let s = c
            .as_os_str()
            .to_str()
            .ok_or_else(|| ScenarioError::whole_file(path, "file name is not UTF-8"))?;
        parts.push(s.to_string());
    }
    let id = parts.join("/");
    let id = id.strip_suffix(".json").unwrap_or(&id).to_string();
    if id.is_empty() {
        return Err(ScenarioError::whole_file(path, "empty scenario id"));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_and_outcomes_have_their_json_shapes() {
        let s: Step =
            serde_json::from_str(r#"{"when": {"data_callback": 3}, "do": {"return": "S_FALSE"}}"#)
                .unwrap();
        assert_eq!(s.when, Trigger::DataCallback(3));
        assert_eq!(s.action, Action::Return(Hresult::S_FALSE));
        let s: Step = serde_json::from_str(
            r#"{"when": "after_last_data_callback", "do": "cancel_pending_io"}"#,
        )
        .unwrap();
        assert_eq!(s.when, Trigger::AfterLastDataCallback);
        let o: Outcome =
            serde_json::from_str(r#"{"one_of": ["cancelled", {"hresult": "WIA_ERROR_OFFLINE"}]}"#)
                .unwrap();
        assert!(o.accepts(Hresult::S_FALSE) && o.accepts(Hresult::WIA_ERROR_OFFLINE));
        assert!(!o.accepts(Hresult::S_OK));
        assert!(
            Outcome::Error.accepts(Hresult::E_FAIL) && !Outcome::Error.accepts(Hresult::S_FALSE)
        );
    }
}
