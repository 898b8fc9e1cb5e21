//! SANE scenario files: `fixtures/scenarios/sane/<name>.json`, marked `"kind": "sane"`.
//!
//! A scenario names the rules it exercises, the backend options to set after `sane_open` (in
//! file order, typed by the option's descriptor), and the frontend's script of steps. Unknown
//! fields are errors with file:line:column (the same reporting as WIA scenarios).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::scenario::{locate, ScenarioError, Seg};

/// The marker every SANE scenario carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A SANE scenario.
    Sane,
}

fn default_max() -> u32 {
    65536
}

fn default_blocked_ms() -> u64 {
    60
}

fn default_timeout_ms() -> u64 {
    20_000
}

fn default_cancel_budget_ms() -> u64 {
    5_000
}

/// Where a cancel during a blocked read comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CancelFrom {
    /// sane_cancel called by a second thread.
    #[default]
    Thread,
    /// SIGUSR2 sent to the reader; its handler calls sane_cancel (as scanimage does on SIGINT).
    Signal,
}

/// One step of the frontend's script. (Steps without fields are written `Name {}` so that
/// serde rejects unknown fields on them too.)
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "do", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Step {
    /// `sane_start`.
    Start {},
    /// `sane_get_parameters`.
    GetParameters {},
    /// One `sane_read` of at most `max` bytes.
    Read {
        /// maxlen.
        #[serde(default = "default_max")]
        max: u32,
    },
    /// `sane_read` until at least `bytes` bytes arrived in this step or a status other than
    /// GOOD came back.
    ReadBytes {
        /// Bytes to read.
        bytes: u64,
        /// maxlen of each read.
        #[serde(default = "default_max")]
        max: u32,
    },
    /// `sane_read` until a status other than GOOD (EOF at the end of the frame).
    ReadToEnd {
        /// maxlen of each read.
        #[serde(default = "default_max")]
        max: u32,
    },
    /// A reader thread reads until a status other than GOOD; a second thread calls
    /// `sane_cancel` once one read has been blocked for `blocked_ms`.
    CancelWhileBlocked {
        /// maxlen of each read.
        #[serde(default = "default_max")]
        max: u32,
        /// How long a read must have been pending before it counts as blocked.
        #[serde(default = "default_blocked_ms")]
        blocked_ms: u64,
        /// Who calls sane_cancel: a second thread (default) or a signal handler in the
        /// blocked reader thread.
        #[serde(default)]
        from: CancelFrom,
    },
    /// `sane_cancel` from the frontend's own thread.
    Cancel {},
    /// `sane_set_io_mode`.
    SetIoMode {
        /// true = non-blocking.
        non_blocking: bool,
    },
    /// `sane_get_select_fd`.
    GetSelectFd {},
    /// `poll` the select fd for readability (after `get-select-fd` returned GOOD).
    WaitReadable {
        /// How long to wait.
        #[serde(default = "default_timeout_ms")]
        timeout_ms: u64,
    },
    /// Set one option (as in `options`).
    SetOption {
        /// The option's name.
        name: String,
        /// Its value.
        value: serde_json::Value,
    },
    /// `sane_close` (the runner then checks whether the select fd, if any, was closed).
    Close {},
    /// `sane_open` the same device again.
    Open {},
    /// Sleep, for scenarios that need the backend to make progress.
    Sleep {
        /// Milliseconds.
        ms: u64,
    },
    /// The inner steps, `times` times.
    Repeat {
        /// How many times.
        times: u32,
        /// The steps.
        steps: Vec<Step>,
    },
}

fn default_device_profile() -> String {
    "escI-b7-flatbed".to_string()
}

/// The emulated scanner a scenario runs against, for backends that reach a device through
/// libusb (`sane:epson2`): served in-process over USB/IP for each run, so that every run starts
/// from a device in its power-on state. Backends without a device ignore it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    /// A profile in `fixtures/profiles/` by name (without `.json`), or a path (it contains `/`
    /// or ends in `.json`) relative to the scenario's folder; default `escI-b7-flatbed`.
    #[serde(default = "default_device_profile")]
    pub profile: String,
    /// Faults injected in addition to the profile's own (the WIA scenarios' fault syntax).
    #[serde(default)]
    pub faults: Vec<scanemu::engine::Fault>,
}

impl Default for DeviceSpec {
    fn default() -> Self {
        DeviceSpec {
            profile: default_device_profile(),
            faults: Vec::new(),
        }
    }
}

/// A SANE scenario.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaneScenario {
    /// Always `"sane"`.
    pub kind: Kind,
    /// One sentence: what the frontend does.
    pub description: String,
    /// The rule IDs this scenario exercises; each must have something to judge.
    pub rules: Vec<String>,
    /// Backend options set after `sane_open`, in file order.
    #[serde(default)]
    pub options: serde_json::Map<String, serde_json::Value>,
    /// The script.
    pub steps: Vec<Step>,
    /// Longest a read loop may take before the run fails (default 20 000 ms).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Longest `sane_cancel` may take to return, and longest the cancelled read may take to
    /// return after it (default 5 000 ms; SANE-CANCEL-ANY-TIME, SANE-CANCEL-PROMPT).
    #[serde(default = "default_cancel_budget_ms")]
    pub cancel_budget_ms: u64,
    /// The emulated device (profile, faults) for backends that drive one; optional.
    #[serde(default)]
    pub device: Option<DeviceSpec>,
}

/// A SANE scenario read from disk.
#[derive(Clone, Debug)]
pub struct LoadedSaneScenario {
    /// `sane/<name>`.
    pub id: String,
    /// The file.
    pub path: PathBuf,
    /// Its content.
    pub scenario: SaneScenario,
    /// The file's text (for placing errors at a line and column).
    pub text: String,
}

impl LoadedSaneScenario {
    /// The folder of the scenario file, against which a device profile path is resolved.
    pub fn folder(&self) -> &Path {
        crate::scenario::folder_of(&self.path)
    }

    /// Checks what syntax cannot: every ID in `"rules"` names a rule `known_rule` knows (the
    /// SANE catalogue: `|id| sane::rules::find(id).is_some()`). An unknown ID is an error at
    /// its line and column.
    pub fn validate(&self, known_rule: impl Fn(&str) -> bool) -> Result<(), ScenarioError> {
        for (i, r) in self.scenario.rules.iter().enumerate() {
            if !known_rule(r) {
                let (line, column) =
                    locate(&self.text, &[Seg::Key("rules"), Seg::Idx(i)]).unwrap_or((1, 1));
                return Err(ScenarioError {
                    path: self.path.display().to_string(),
                    line,
                    column,
                    message: format!("unknown SANE rule {r:?} in \"rules\""),
                });
            }
        }
        Ok(())
    }
}

/// Parses one SANE scenario file; `id` is `sane/<file stem>`. Syntax and schema only: call
/// [`LoadedSaneScenario::validate`] next.
pub fn load(path: &Path) -> Result<LoadedSaneScenario, ScenarioError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ScenarioError::whole_file(path, format!("cannot read scenario: {e}")))?;
    let scenario: SaneScenario = serde_json::from_str(&text).map_err(|e| {
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        ScenarioError {
            path: path.display().to_string(),
            line: e.line().max(1),
            column: e.column().max(1),
            message: full.strip_suffix(&suffix).unwrap_or(&full).to_string(),
        }
    })?;
    if scenario.steps.is_empty() {
        return Err(ScenarioError::whole_file(path, "\"steps\" is empty"));
    }
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| ScenarioError::whole_file(path, "file name is not UTF-8"))?;
    Ok(LoadedSaneScenario {
        id: format!("sane/{stem}"),
        path: path.to_path_buf(),
        scenario,
        text,
    })
}

/// Every `*.json` in `dir` (or the one file `dir`), parsed (not validated), sorted by id. An
/// empty folder is an error.
pub fn discover(dir: &Path) -> Result<Vec<LoadedSaneScenario>, ScenarioError> {
    let meta = std::fs::metadata(dir)
        .map_err(|e| ScenarioError::whole_file(dir, format!("cannot read scenarios: {e}")))?;
    if meta.is_file() {
        return Ok(vec![load(dir)?]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)
        .map_err(|e| ScenarioError::whole_file(dir, format!("cannot list folder: {e}")))?
    {
        let entry = entry
            .map_err(|e| ScenarioError::whole_file(dir, format!("cannot list folder: {e}")))?;
        let p = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && p.extension().is_some_and(|x| x == "json") {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(ScenarioError::whole_file(
            dir,
            "no SANE scenario files (*.json) in this folder",
        ));
    }
    let mut out = files
        .iter()
        .map(|f| load(f))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}
