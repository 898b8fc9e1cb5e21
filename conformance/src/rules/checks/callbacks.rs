//! The callback contract: S_FALSE stops the data, drvAcquireItemData returns S_FALSE on
//! cancel and the application's error unchanged, and each acquisition ends as the scenario
//! expects (WIA-CB-STOP, WIA-RET-SFALSE, WIA-ERR-PROPAGATE, WIA-OUTCOME).

use std::collections::BTreeSet;

use super::{describe_cp, Ctx, Verdict};
use crate::rules::analysis::{
    cancel_points, completed_before, data_callback, first_stop_callback, CpKind,
};
use crate::rules::Judgement;
use crate::scenario::Outcome;
use crate::wia::Hresult;

pub(crate) fn cb_stop(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    for a in &c.acqs {
        let Some((si, stop)) = first_stop_callback(c.trace, a) else {
            continue;
        };
        v.judged();
        for i in si + 1..=a.end {
            if let Some(d) = data_callback(c.ev(i)) {
                v.fail(
                    Some(a.n),
                    i,
                    format!(
                        "acquisition {}: IT_MSG_DATA (offset {}, {} bytes) delivered after the callback at #{si} returned {}",
                        a.n, d.offset, d.length, stop.result
                    ),
                );
            }
        }
    }
    v.done()
}

pub(crate) fn ret_sfalse(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    for a in &c.acqs {
        let (Some(ret), Some(hr)) = (a.ret, a.hr(c.trace)) else {
            continue;
        };
        let cps = cancel_points(c.trace, a);
        let first = cps.iter().find(|cp| match cp.kind {
            CpKind::Notify => c.facts.async_cancel && !completed_before(&c.facts, a, cp.idx),
            _ => true,
        });
        let Some(cp) = first else { continue };
        if !matches!(
            cp.kind,
            CpKind::SFalse | CpKind::Notify | CpKind::DeviceCancel
        ) {
            continue;
        }
        v.judged();
        // A device that left the bus during the cancel may end it with an error instead.
        let gone_after = c.gone_between(cp.idx, ret);
        if hr == Hresult::S_FALSE || (gone_after && !hr.succeeded()) {
            continue;
        }
        v.fail(
            Some(a.n),
            ret,
            format!(
                "acquisition {} was cancelled ({}) but drvAcquireItemData returned {hr}, not S_FALSE",
                a.n,
                describe_cp(cp)
            ),
        );
    }
    v.done()
}

pub(crate) fn err_propagate(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    for a in &c.acqs {
        let (Some(ret), Some(hr)) = (a.ret, a.hr(c.trace)) else {
            continue;
        };
        let Some((si, stop)) = first_stop_callback(c.trace, a) else {
            continue;
        };
        if stop.result.succeeded() {
            continue;
        }
        v.judged();
        if hr != stop.result {
            v.fail(
                Some(a.n),
                ret,
                format!(
                    "acquisition {}: the callback at #{si} returned {} but drvAcquireItemData returned {hr}",
                    a.n, stop.result
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn outcome(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    for a in &c.acqs {
        let Some(expect) = c.expect(a.n) else {
            continue;
        };
        v.judged();
        let (Some(ret), Some(hr)) = (a.ret, a.hr(c.trace)) else {
            v.fail(
                Some(a.n),
                a.fault.unwrap_or(a.end),
                format!(
                    "acquisition {} never returned (expected {})",
                    a.n,
                    outcome_name(expect)
                ),
            );
            continue;
        };
        let ok = expect.accepts(hr);
        if !ok {
            v.fail(
                Some(a.n),
                ret,
                format!(
                    "acquisition {} returned {hr}; the scenario expects {}",
                    a.n,
                    outcome_name(expect)
                ),
            );
        }
    }
    if !c.trace.events.is_empty() {
        let ran: BTreeSet<u32> = c.acqs.iter().map(|a| a.n).collect();
        for n in 1..=c.facts.scenario.acquisitions.len() as u32 {
            if !ran.contains(&n) {
                v.fail(
                    Some(n),
                    c.trace.events.len() - 1,
                    format!("acquisition {n} of the scenario never started"),
                );
            }
        }
    }
    v.done()
}

fn outcome_name(o: &Outcome) -> String {
    match o {
        Outcome::Complete => "complete (S_OK)".into(),
        Outcome::Cancelled => "cancelled (S_FALSE)".into(),
        Outcome::Hresult(h) => format!("exactly {h}"),
        Outcome::Error => "an error (FAILED(hr))".into(),
        Outcome::OneOf(all) => {
            let names: Vec<String> = all.iter().map(outcome_name).collect();
            format!("one of {}", names.join(", "))
        }
    }
}
