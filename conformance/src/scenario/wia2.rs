//! WIA 2.0 scenarios: JSON files under `fixtures/scenarios/wia2/` that script a stream transfer
//! application (Download, Upload, its TransferCallback and GetNextStream answers, its streams,
//! IWiaTransfer::Cancel, a service restart) and the device for one case.
//!
//! Their id is `wia2/<group>/<name>`. The schema is documented in `conformance/WIA2.md`; it
//! shares the scan settings ([`ScanSettings`]), the device faults, the outcomes ([`Outcome`]) and
//! the idle cancels ([`IdleCancel`]) with WIA 1.0 scenarios, and its errors are the same one-line
//! `file:line:column: message` ([`ScenarioError`]).
//!
//! About 650 lines, most of them the documented types of the WIA 2.0 scenario format and their
//! checks, field by field, which `conformance/WIA2.md` points to.

use std::path::{Path, PathBuf};

use scanemu::engine::{Fault, ScanJob, ScanSource};
use serde::{Deserialize, Serialize};

use super::check::{check_idle_cancels, check_outcome, check_scan_basics};
use super::{locate, IdleCancel, Invalid, Outcome, ScanSettings, ScenarioError, Seg};
use crate::wia::{Hresult, StreamMethod, TransferMsg, TYMED_FILE, TYMED_MULTIPAGE_FILE};

/// WIA_IPA_TYMED of the item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Tymed {
    /// One stream per item, or per page of a feeder.
    #[serde(rename = "TYMED_FILE")]
    File,
    /// One stream for every page of the item.
    #[serde(rename = "TYMED_MULTIPAGE_FILE")]
    MultipageFile,
}

impl Tymed {
    /// The wiadef.h value.
    pub const fn value(self) -> i32 {
        match self {
            Tymed::File => TYMED_FILE,
            Tymed::MultipageFile => TYMED_MULTIPAGE_FILE,
        }
    }
}

/// A child item of a folder: a region of the flatbed, at the scan's resolution and mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
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
}

/// A stream the application gives from its GetNextStream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// Bytes already in the stream (an existing file opened for appending); the seek pointer
    /// starts at 0.
    #[serde(default)]
    pub prefill: u64,
    /// Disk full: the stream cannot grow past this size; a Write that would fails with
    /// STG_E_MEDIUMFULL after writing what fits.
    #[serde(default)]
    pub full_at: Option<u64>,
    /// One method call that fails.
    #[serde(default)]
    pub fail: Option<StreamFail>,
    /// Virtual microseconds each Write takes (a slow disk or network share).
    #[serde(default)]
    pub write_us: u64,
}

/// The `n`th call of `op` on a stream fails with `hr` and does nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamFail {
    /// The method.
    pub op: StreamMethod,
    /// Which call of it (1-based; default 1).
    #[serde(default = "one")]
    pub n: u32,
    /// What it returns.
    pub hr: Hresult,
}

/// The source stream of an upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadSource {
    /// A stream holding this many bytes.
    Bytes(u64),
    /// A stream holding nothing.
    Empty,
    /// A stream whose every method fails with STG_E_REVERTED (the object was invalidated).
    Invalid,
}

/// A message trigger: the `n`th TransferCallback with this lMessage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageTrigger {
    /// lMessage.
    pub msg: TransferMsg,
    /// Which one (1-based; default 1).
    #[serde(default = "one")]
    pub n: u32,
}

/// When an application action fires, within one transfer.
///
/// `message`, `percent` and `any_message` fire inside the application's TransferCallback,
/// `next_stream` inside its GetNextStream, `device_status` inside its error handler; `write`
/// and `at_us` fire on its second thread (the driver sees them at its next await: `write` while
/// the driver is blocked in that Write).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Trigger2 {
    /// The `n`th TransferCallback with lMessage `msg`.
    Message(MessageTrigger),
    /// The first STATUS message whose lPercentComplete is at least this.
    Percent(i32),
    /// The Nth TransferCallback of any message (1-based).
    AnyMessage(u32),
    /// The application's Nth GetNextStream (1-based).
    NextStream(u32),
    /// The application error handler's Nth ReportStatus (1-based).
    DeviceStatus(u32),
    /// While the driver is blocked in its Nth Write of this transfer (1-based); that Write takes
    /// at least 1 ms.
    Write(u32),
    /// This many virtual microseconds after the transfer started.
    AtUs(u64),
}

impl Trigger2 {
    /// The JSON name of the variant.
    pub const fn name(&self) -> &'static str {
        match self {
            Trigger2::Message(_) => "message",
            Trigger2::Percent(_) => "percent",
            Trigger2::AnyMessage(_) => "any_message",
            Trigger2::NextStream(_) => "next_stream",
            Trigger2::DeviceStatus(_) => "device_status",
            Trigger2::Write(_) => "write",
            Trigger2::AtUs(_) => "at_us",
        }
    }

    /// True for the triggers that fire inside TransferCallback.
    pub const fn in_transfer_callback(&self) -> bool {
        matches!(
            self,
            Trigger2::Message(_) | Trigger2::Percent(_) | Trigger2::AnyMessage(_)
        )
    }

    /// True for the triggers that fire on the application's second thread.
    pub const fn on_thread(&self) -> bool {
        matches!(self, Trigger2::Write(_) | Trigger2::AtUs(_))
    }
}

/// What the application does when a trigger fires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Action2 {
    /// The answer of the callback the trigger fired in: S_FALSE cancels, WIA_STATUS_SKIP_ITEM
    /// skips the item, an error fails; for `device_status`, the error handler's answer.
    Return(Hresult),
    /// GetNextStream answers S_OK without a stream (a NULL pointer).
    NullStream,
    /// GetNextStream gives this stream instead of the transfer's default one.
    Stream(StreamSpec),
    /// `IWiaTransfer::Cancel`.
    Cancel,
    /// Inside TransferCallback the application reads the current stream, which leaves its seek
    /// pointer at this position.
    MovePosition(u64),
    /// The WIA service terminates now and is started again (HLK H21); the transfer is lost.
    RestartService,
}

impl Action2 {
    /// The JSON name of the variant.
    pub const fn name(&self) -> &'static str {
        match self {
            Action2::Return(_) => "return",
            Action2::NullStream => "null_stream",
            Action2::Stream(_) => "stream",
            Action2::Cancel => "cancel",
            Action2::MovePosition(_) => "move_position",
            Action2::RestartService => "restart_service",
        }
    }
}

/// One scripted application action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step2 {
    /// When.
    pub when: Trigger2,
    /// What.
    #[serde(rename = "do")]
    pub action: Action2,
}

/// One IWiaTransfer::Download (or Upload) of the application.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer2 {
    /// An upload from this source instead of a download.
    #[serde(default)]
    pub upload: Option<UploadSource>,
    /// The stream the application gives from every GetNextStream of this download (default:
    /// empty, fast, never failing).
    #[serde(default)]
    pub stream: StreamSpec,
    /// Scripted actions, in any order.
    #[serde(default)]
    pub steps: Vec<Step2>,
    /// What drvAcquireItemData must return (for a folder the service walks: the last call).
    pub expect: Outcome,
    /// Virtual microseconds the application waits before starting this transfer.
    #[serde(default)]
    pub delay_us: u64,
}

/// A WIA 2.0 scenario file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario2 {
    /// What the scenario checks, in a sentence or two.
    pub description: String,
    /// IDs of the rules this scenario exercises (all rules are checked).
    pub rules: Vec<String>,
    /// Device profile: a name in fixtures/profiles or a path.
    pub profile: String,
    /// The item's scan settings (flatbed: one image; `adf`: a feeder item of `pages` pages).
    pub scan: ScanSettings,
    /// A folder item: these regions of the flatbed are its children, downloaded with
    /// WIA_TRANSFER_ACQUIRE_CHILDREN.
    #[serde(default)]
    pub children: Vec<Region>,
    /// WIA_IPA_TYMED (default TYMED_FILE).
    #[serde(default = "default_tymed")]
    pub tymed: Tymed,
    /// Device faults, added to the profile's.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// The application's transfers, in order.
    pub transfers: Vec<Transfer2>,
    /// IWiaTransfer::Cancel calls while no transfer runs.
    #[serde(default)]
    pub idle_cancels: Vec<IdleCancel>,
    /// An identical device is installed and transfers at the same time (HLK H18): a second
    /// device of the same profile, served by its own instance of the same driver, downloads the
    /// same item alongside each transfer, with no script (default false).
    #[serde(default)]
    pub peer: bool,
    /// Virtual-time budget for the whole scenario (default 120 s).
    #[serde(default = "default_budget")]
    pub budget_us: u64,
}

fn one() -> u32 {
    1
}

fn default_tymed() -> Tymed {
    Tymed::File
}

fn default_budget() -> u64 {
    120_000_000
}

/// The item a scenario transfers, as the service names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemKind {
    /// The flatbed: one image.
    Flatbed,
    /// The feeder: one image per sheet.
    Feeder,
    /// A folder of flatbed regions.
    Folder,
}

impl Scenario2 {
    /// The script of the identical device of a `peer` scenario: the same transfers, left
    /// alone, all expected to complete.
    pub fn peer_script(&self) -> Scenario2 {
        Scenario2 {
            transfers: self
                .transfers
                .iter()
                .map(|t| Transfer2 {
                    upload: t.upload,
                    stream: StreamSpec::default(),
                    steps: Vec::new(),
                    expect: Outcome::Complete,
                    delay_us: t.delay_us,
                })
                .collect(),
            idle_cancels: Vec::new(),
            faults: Vec::new(),
            peer: false,
            ..self.clone()
        }
    }

    /// What kind of item the scenario transfers.
    pub fn item_kind(&self) -> ItemKind {
        if !self.children.is_empty() {
            ItemKind::Folder
        } else if self.scan.source == ScanSource::Adf {
            ItemKind::Feeder
        } else {
            ItemKind::Flatbed
        }
    }

    /// The scan job of each unit the item is transferred in: the item itself, or each child
    /// region of a folder.
    pub fn jobs(&self) -> Vec<ScanJob> {
        let base = self.scan.job();
        if self.children.is_empty() {
            return vec![base];
        }
        self.children
            .iter()
            .map(|r| ScanJob {
                x_px: r.x_px,
                y_px: r.y_px,
                width_px: r.width_px,
                height_px: r.height_px,
                ..base
            })
            .collect()
    }

    /// Where the profile is (as [`super::Scenario::profile_path`]).
    pub fn profile_path(&self, profiles_dir: &Path, scenario_dir: &Path) -> PathBuf {
        let p = &self.profile;
        if p.contains('/') || p.contains('\\') || p.ends_with(".json") {
            scenario_dir.join(p)
        } else {
            profiles_dir.join(format!("{p}.json"))
        }
    }

    /// Checks what the schema cannot express. `known_rule` says whether a rule ID exists in the
    /// WIA 2.0 catalogue.
    pub fn check(&self, known_rule: impl Fn(&str) -> bool) -> Result<(), Invalid> {
        use Seg::{Idx, Key};
        let bad = |path: Vec<Seg>, message: String| Err(Invalid { path, message });
        if self.description.trim().is_empty() {
            return bad(vec![Key("description")], "description is empty".into());
        }
        if self.rules.is_empty() {
            return bad(
                vec![Key("rules")],
                "rules is empty: list the rule IDs this scenario exercises".into(),
            );
        }
        for (i, id) in self.rules.iter().enumerate() {
            if !known_rule(id) {
                return bad(
                    vec![Key("rules"), Idx(i)],
                    format!("unknown rule ID {id:?}"),
                );
            }
            if self.rules[..i].contains(id) {
                return bad(
                    vec![Key("rules"), Idx(i)],
                    format!("rule ID {id:?} listed twice"),
                );
            }
        }
        if self.profile.trim().is_empty() {
            return bad(vec![Key("profile")], "profile is empty".into());
        }
        self.check_scan()?;
        if self.budget_us == 0 {
            return bad(vec![Key("budget_us")], "budget_us must be positive".into());
        }
        for (i, f) in self.faults.iter().enumerate() {
            if let Some((page, _)) = f.position() {
                if page > 0 && self.scan.source == ScanSource::Flatbed {
                    return bad(
                        vec![Key("faults"), Idx(i)],
                        format!("fault on page {page} of a flatbed scan, which has only page 0"),
                    );
                }
            }
        }
        if self.transfers.is_empty() {
            return bad(
                vec![Key("transfers")],
                "no transfers: a scenario transfers at least once".into(),
            );
        }
        for (t, transfer) in self.transfers.iter().enumerate() {
            self.check_transfer(t, transfer)?;
        }
        check_idle_cancels(&self.idle_cancels, self.transfers.len(), "transfers")
    }

    fn check_scan(&self) -> Result<(), Invalid> {
        use Seg::{Idx, Key};
        let s = &self.scan;
        check_scan_basics(s)?;
        if !self.children.is_empty() && s.source != ScanSource::Flatbed {
            return Err(Invalid {
                path: vec![Key("children")],
                message: "a folder of regions is a flatbed item: scan.source must be flatbed"
                    .into(),
            });
        }
        for (i, r) in self.children.iter().enumerate() {
            if r.width_px == 0 || r.height_px == 0 {
                return Err(Invalid {
                    path: vec![Key("children"), Idx(i)],
                    message: "a region needs a positive width_px and height_px".into(),
                });
            }
        }
        Ok(())
    }

    fn check_transfer(&self, t: usize, transfer: &Transfer2) -> Result<(), Invalid> {
        use Seg::{Idx, Key};
        let at = |rest: &[Seg]| {
            let mut p = vec![Key("transfers"), Idx(t)];
            p.extend_from_slice(rest);
            p
        };
        let bad = |path: Vec<Seg>, message: String| Err(Invalid { path, message });
        if transfer.upload.is_some() && !self.children.is_empty() {
            return bad(
                at(&[Key("upload")]),
                "an upload goes to one item, not to a folder".into(),
            );
        }
        for (s, step) in transfer.steps.iter().enumerate() {
            let when = at(&[Key("steps"), Idx(s), Key("when"), Key(step.when.name())]);
            let what = at(&[Key("steps"), Idx(s), Key("do")]);
            match step.when {
                Trigger2::Message(MessageTrigger { n: 0, .. })
                | Trigger2::AnyMessage(0)
                | Trigger2::NextStream(0)
                | Trigger2::DeviceStatus(0)
                | Trigger2::Write(0) => {
                    return bad(when, format!("{} counts from 1, not 0", step.when.name()));
                }
                Trigger2::Message(MessageTrigger { msg, .. })
                    if msg == TransferMsg::DEVICE_STATUS =>
                {
                    return bad(
                        when,
                        "device statuses go to the error handler, not to TransferCallback: use the device_status trigger".into(),
                    );
                }
                Trigger2::Percent(p) if !(0..=100).contains(&p) => {
                    return bad(when, format!("percent {p} is outside 0..=100"));
                }
                Trigger2::AtUs(us) if us >= self.budget_us => {
                    return bad(
                        when,
                        format!("at_us {us} is not within budget_us {}", self.budget_us),
                    );
                }
                _ => {}
            }
            let fits = match &step.action {
                Action2::Return(hr) => {
                    if *hr == Hresult::S_OK && step.when.name() != "device_status" {
                        return bad(
                            what,
                            "returning S_OK is what the application does anyway; drop the step"
                                .into(),
                        );
                    }
                    !step.when.on_thread()
                }
                Action2::NullStream | Action2::Stream(_) => {
                    matches!(step.when, Trigger2::NextStream(_))
                }
                Action2::Cancel => true,
                Action2::MovePosition(_) => step.when.in_transfer_callback(),
                Action2::RestartService => step.when.on_thread(),
            };
            if !fits {
                return bad(
                    what,
                    format!(
                        "\"{}\" cannot follow the {} trigger",
                        step.action.name(),
                        step.when.name()
                    ),
                );
            }
            let answers = |a: &Action2| {
                matches!(
                    a,
                    Action2::Return(_) | Action2::NullStream | Action2::Stream(_)
                )
            };
            if answers(&step.action)
                && transfer.steps[..s]
                    .iter()
                    .any(|o| o.when == step.when && answers(&o.action))
            {
                return bad(what, "a second answer for the same trigger".into());
            }
            if transfer.upload.is_some()
                && matches!(step.when, Trigger2::NextStream(_) | Trigger2::Write(_))
            {
                return bad(
                    when,
                    "an upload's stream is the application's source: the driver asks no next stream and writes nothing".into(),
                );
            }
        }
        check_outcome(&transfer.expect, &at(&[Key("expect")]), true)
    }
}

/// A WIA 2.0 scenario read from disk, with its id.
#[derive(Clone, Debug)]
pub struct LoadedScenario2 {
    /// `wia2/<group>/<name>`.
    pub id: String,
    /// The file it came from.
    pub path: PathBuf,
    /// Its content.
    pub scenario: Scenario2,
    /// The file's text, kept so that later checks can name a line and column.
    pub text: String,
}

impl LoadedScenario2 {
    /// [`Scenario2::check`], with the problem placed at its line and column in the file.
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

/// Parses the WIA 2.0 scenario file at `path`; its id is its path relative to `root` (the
/// `scenarios` folder, so ids start with `wia2/`), without `.json`.
pub fn load(path: &Path, root: &Path) -> Result<LoadedScenario2, ScenarioError> {
    let id = super::scenario_id(path, root)?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| ScenarioError::whole_file(path, format!("cannot read scenario: {e}")))?;
    let scenario = super::parse_as(&text, path)?;
    Ok(LoadedScenario2 {
        id,
        path: path.to_path_buf(),
        scenario,
        text,
    })
}

/// Every WIA 2.0 scenario under `root`, sorted by id: `root` is the scenarios folder (its
/// `wia2/` subfolder is read), a folder inside `wia2/`, or one file. Ids are relative to the
/// nearest ancestor folder named `scenarios` when there is one. A folder without any scenario
/// is an error.
pub fn discover(root: &Path) -> Result<Vec<LoadedScenario2>, ScenarioError> {
    let meta = std::fs::metadata(root)
        .map_err(|e| ScenarioError::whole_file(root, format!("cannot read scenarios: {e}")))?;
    let base = root
        .ancestors()
        .skip(usize::from(meta.is_file()))
        .find(|p| p.file_name().is_some_and(|n| n == "scenarios"))
        .map(Path::to_path_buf);
    if meta.is_file() {
        let base = base.unwrap_or_else(|| root.parent().unwrap_or(Path::new("")).to_path_buf());
        return Ok(vec![load(root, &base)?]);
    }
    let walk = if root.join("wia2").is_dir() {
        root.join("wia2")
    } else {
        root.to_path_buf()
    };
    let base = base.unwrap_or_else(|| root.to_path_buf());
    let mut files = Vec::new();
    super::collect(&walk, &mut files)?;
    if files.is_empty() {
        return Err(ScenarioError::whole_file(
            root,
            "no WIA 2.0 scenario files (*.json) in this folder",
        ));
    }
    let mut out = files
        .iter()
        .map(|f| load(f, &base))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// True when `id` names a WIA 2.0 scenario (`wia2/...`).
pub fn is_wia2_id(id: &str) -> bool {
    id.starts_with("wia2/")
}
