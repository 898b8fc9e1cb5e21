//! What the schema cannot say about a scenario: known rule IDs, at least one acquisition,
//! sensible triggers and outcomes, ... Each problem names the offending value by its place in
//! the JSON document ([`Seg`]), which [`super::locate`] turns into a line and column.

use scanemu::engine::ScanSource;

use super::{Action, IdleCancel, Outcome, ScanSettings, Scenario, Trigger};
use crate::wia::Hresult;

impl Scenario {
    /// Checks what the schema cannot express. `known_rule` says whether a rule ID exists
    /// (pass `|id| crate::rules::find(id).is_some()`).
    ///
    /// The error names the offending value by its place in the JSON document; use
    /// [`super::LoadedScenario::validate`] to get a file:line:column error.
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
        if self.services.is_empty() {
            return bad(
                vec![Key("services")],
                "services is empty: omit it for both, or list xp and/or vista".into(),
            );
        }
        for (i, s) in self.services.iter().enumerate() {
            if self.services[..i].contains(s) {
                return bad(
                    vec![Key("services"), Idx(i)],
                    format!("service {:?} listed twice", s.name()),
                );
            }
        }
        if self.profile.trim().is_empty() {
            return bad(vec![Key("profile")], "profile is empty".into());
        }
        self.check_scan()?;
        if self.buffer == 0 {
            return bad(vec![Key("buffer")], "buffer must be at least 1 byte".into());
        }
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
        if self.acquisitions.is_empty() {
            return bad(
                vec![Key("acquisitions")],
                "no acquisitions: a scenario acquires at least once".into(),
            );
        }
        for (a, acq) in self.acquisitions.iter().enumerate() {
            let at = |rest: &[Seg]| {
                let mut p = vec![Key("acquisitions"), Idx(a)];
                p.extend_from_slice(rest);
                p
            };
            for (s, step) in acq.steps.iter().enumerate() {
                let when = [Key("steps"), Idx(s), Key("when")];
                let mut value = when.to_vec();
                value.push(Key(step.when.name()));
                match step.when {
                    Trigger::DataCallback(0)
                    | Trigger::AnyCallback(0)
                    | Trigger::StatusCallback(0)
                    | Trigger::NewPage(0) => {
                        return bad(
                            at(&value),
                            format!("{} counts from 1, not 0", step.when.name()),
                        );
                    }
                    Trigger::Percent(p) if !(0..=100).contains(&p) => {
                        return bad(at(&value), format!("percent {p} is outside 0..=100"));
                    }
                    Trigger::AtUs(t) if t >= self.budget_us => {
                        return bad(
                            at(&value),
                            format!("at_us {t} is not within budget_us {}", self.budget_us),
                        );
                    }
                    _ => {}
                }
                if let Action::Return(hr) = step.action {
                    let what = [Key("steps"), Idx(s), Key("do")];
                    if !step.when.is_callback() {
                        return bad(
                            at(&what),
                            format!(
                                "\"return\" needs a callback trigger, but {} fires outside any callback (use \"cancel_pending_io\")",
                                step.when.name()
                            ),
                        );
                    }
                    if hr == Hresult::S_OK {
                        return bad(
                            at(&what),
                            "returning S_OK is what the application does anyway; drop the step"
                                .into(),
                        );
                    }
                    let twin = acq.steps[..s]
                        .iter()
                        .any(|o| o.when == step.when && matches!(o.action, Action::Return(_)));
                    if twin {
                        return bad(at(&what), "a second \"return\" for the same trigger".into());
                    }
                }
            }
            check_outcome(&acq.expect, &at(&[Key("expect")]), true)?;
        }
        check_idle_cancels(&self.idle_cancels, self.acquisitions.len(), "acquisitions")
    }

    fn check_scan(&self) -> Result<(), Invalid> {
        check_scan_basics(&self.scan)
    }
}

/// The scan settings both scenario formats share: a positive resolution and size, one page on
/// the flatbed.
pub(super) fn check_scan_basics(s: &ScanSettings) -> Result<(), Invalid> {
    let bad = |field: &'static str, message: String| {
        Err(Invalid {
            path: vec![Seg::Key("scan"), Seg::Key(field)],
            message,
        })
    };
    if s.resolution_dpi == 0 {
        return bad("resolution_dpi", "resolution_dpi must be positive".into());
    }
    if s.width_px == 0 {
        return bad("width_px", "width_px must be positive".into());
    }
    if s.height_px == 0 {
        return bad("height_px", "height_px must be positive".into());
    }
    if s.source == ScanSource::Flatbed && s.pages > 1 {
        return bad(
            "pages",
            format!("a flatbed scan has one page, not {}", s.pages),
        );
    }
    Ok(())
}

/// The idle cancels both scenario formats share: each `before` at most the number of `units`
/// (acquisitions or transfers), each `times` at least 1.
pub(super) fn check_idle_cancels(
    idle_cancels: &[IdleCancel],
    n: usize,
    units: &str,
) -> Result<(), Invalid> {
    use Seg::{Idx, Key};
    let bad = |path: Vec<Seg>, message: String| Err(Invalid { path, message });
    for (i, idle) in idle_cancels.iter().enumerate() {
        if idle.before as usize > n {
            return bad(
                vec![Key("idle_cancels"), Idx(i), Key("before")],
                format!(
                    "before {} is past the end: there are {n} {units} (use {n} for \"at the end\")",
                    idle.before
                ),
            );
        }
        if idle.times == 0 {
            return bad(
                vec![Key("idle_cancels"), Idx(i), Key("times")],
                "times must be at least 1".into(),
            );
        }
    }
    Ok(())
}

pub(super) fn check_outcome(o: &Outcome, path: &[Seg], top: bool) -> Result<(), Invalid> {
    let bad = |extra: Option<Seg>, message: &str| {
        let mut p = path.to_vec();
        p.extend(extra);
        Err(Invalid {
            path: p,
            message: message.to_string(),
        })
    };
    match o {
        Outcome::Hresult(h) if *h == Hresult::S_OK => bad(
            Some(Seg::Key("hresult")),
            "expect \"complete\" instead of {\"hresult\": \"S_OK\"}",
        ),
        Outcome::Hresult(h) if *h == Hresult::S_FALSE => bad(
            Some(Seg::Key("hresult")),
            "expect \"cancelled\" instead of {\"hresult\": \"S_FALSE\"}",
        ),
        Outcome::OneOf(_) if !top => bad(None, "one_of inside one_of"),
        Outcome::OneOf(all) if all.len() < 2 => bad(
            Some(Seg::Key("one_of")),
            "one_of needs at least two outcomes",
        ),
        Outcome::OneOf(all) => {
            for (i, inner) in all.iter().enumerate() {
                let mut p = path.to_vec();
                p.extend([Seg::Key("one_of"), Seg::Idx(i)]);
                check_outcome(inner, &p, false)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// One step of a path into a JSON document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seg {
    /// An object member.
    Key(&'static str),
    /// An array element (0-based).
    Idx(usize),
}

/// A semantic problem found by [`Scenario::check`]: where (a path into the document) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// The offending value, e.g. `rules[2]`.
    pub path: Vec<Seg>,
    /// What is wrong.
    pub message: String,
}
