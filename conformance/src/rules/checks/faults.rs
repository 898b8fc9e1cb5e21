//! Faults and repeated cancels: a device fault ends in an error, never a hang; CancelPendingIO
//! while idle or twice is harmless (WIA-FAULT-NO-HANG, WIA-IDLE-CANCEL-HARMLESS).

use std::collections::BTreeSet;

use super::{Ctx, Verdict};
use crate::rules::analysis::{cancel_points, is_app_cancel, ms, transfer_failed};
use crate::rules::Judgement;
use crate::scenario::Outcome;
use crate::trace::Kind;
use crate::wia::Hresult;

pub(crate) fn fault_no_hang(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    if !c.acqs.is_empty() {
        v.judged();
    }
    for (i, e) in c.trace.events.iter().enumerate() {
        if let Kind::DriverFault { what } = &e.kind {
            let (acq, when) = fault_place(c, i);
            v.fail(acq, i, format!("driver fault {when}: {what}"));
        }
    }
    for a in &c.acqs {
        match a.ret {
            None if a.fault.is_none() => v.fail(
                Some(a.n),
                a.end,
                format!("acquisition {}: drvAcquireItemData never returned", a.n),
            ),
            Some(ret) if c.at(ret) > c.facts.scenario.budget_us => v.fail(
                Some(a.n),
                ret,
                format!(
                    "acquisition {}: drvAcquireItemData returned at {}, after the scenario budget of {}",
                    a.n,
                    ms(c.at(ret)),
                    ms(c.facts.scenario.budget_us)
                ),
            ),
            _ => {}
        }
    }
    v.done()
}

/// The acquisition a driver fault at event `i` belongs to, and where it came in words. A
/// fault reported after the run (a replay's divergence) carries the time it happened: it
/// belongs to the acquisition running at that time.
fn fault_place(c: &Ctx<'_>, i: usize) -> (Option<u32>, String) {
    if let Some(a) = c.acq_of(i) {
        return (Some(a.n), format!("during acquisition {}", a.n));
    }
    let at = c.at(i);
    let started = c
        .acqs
        .iter()
        .rev()
        .find(|a| c.at(a.start) <= at && a.start < i);
    match started {
        Some(a) if a.ret.is_none_or(|r| c.at(r) >= at) => {
            (Some(a.n), format!("during acquisition {}", a.n))
        }
        Some(a) => (Some(a.n), format!("after acquisition {}", a.n)),
        None => match c.acqs.first() {
            Some(a) => (Some(a.n), format!("before acquisition {}", a.n)),
            None => (None, "outside any acquisition".into()),
        },
    }
}

pub(crate) fn idle_cancel_harmless(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    let n_events = c.trace.events.len();
    let mut next_checked = BTreeSet::new();
    for ci in (0..n_events).filter(|&i| is_app_cancel(c.ev(i)) && c.acq_of(i).is_none()) {
        v.judged();
        let next = c.acqs.iter().find(|a| a.start > ci);
        let window_end = next.map_or(n_events, |a| a.start);
        for i in ci + 1..window_end {
            if let Some(result) = transfer_failed(c.ev(i)) {
                v.fail(
                    next.map(|a| a.n),
                    i,
                    format!(
                        "after CancelPendingIO while idle (#{ci}), a USB transfer failed: {result}"
                    ),
                );
            }
        }
        let Some(b) = next else { continue };
        if !next_checked.insert(b.n) || c.expect(b.n) != Some(&Outcome::Complete) {
            continue;
        }
        if let (Some(ret), Some(hr)) = (b.ret, b.hr(c.trace)) {
            if hr != Hresult::S_OK {
                v.fail(
                    Some(b.n),
                    ret,
                    format!(
                        "acquisition {} after CancelPendingIO while idle (#{ci}) returned {hr}, not S_OK",
                        b.n
                    ),
                );
            }
        }
    }
    for a in &c.acqs {
        // A CancelPendingIO after the acquisition already had a cancel point (an earlier
        // CancelPendingIO's event, a callback's S_FALSE or error, a device fault).
        let cps = cancel_points(c.trace, a);
        let Some(second) = a
            .range()
            .find(|&i| is_app_cancel(c.ev(i)) && cps.iter().any(|cp| cp.idx < i))
        else {
            continue;
        };
        v.judged();
        for i in second + 1..=a.end {
            if let Some(result) = transfer_failed(c.ev(i)) {
                v.fail(
                    Some(a.n),
                    i,
                    format!(
                        "acquisition {}: after CancelPendingIO on an already cancelled transfer (#{second}), a USB transfer failed: {result}",
                        a.n
                    ),
                );
            }
        }
    }
    v.done()
}
