//! A cancel reaching the driver and the device: CANCEL_IO honoured as soon as possible, the XP
//! gap measured, Vista's sticky S_FALSE, the device idle in time, the driver back from the
//! cancel without delay, the next transfer clean (WIA-CANCEL-IO-ASAP, WIA-XP-GAP,
//! WIA-VISTA-STICKY, WIA-IDLE-AFTER-CANCEL, WIA-CANCEL-RETURN, WIA-NEXT-TRANSFER).

use scanemu::personality::NoteKind;

use super::{describe_cp, Ctx, Verdict};
use crate::rules::analysis::{
    bulk_in_data, callback, completed_before, control, data_callback, first_stopped,
    in_flight_callback, is_app_cancel, is_cancel_request, is_device_reset, is_notify,
    is_start_scan, ms, note, CpKind, CANCEL_IO_WIRE_US, IDLE_SLACK_US, RETURN_SLACK_US,
};
use crate::rules::Judgement;
use crate::scenario::{Outcome, ServiceModel};
use crate::trace::Kind;
use crate::wia::Hresult;

pub(crate) fn cancel_io_asap(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    if !c.facts.async_cancel {
        return v.done();
    }
    for a in &c.acqs {
        for ni in a.range().filter(|&i| is_notify(c.ev(i))) {
            if completed_before(&c.facts, a, ni) {
                continue;
            }
            v.judged();
            let in_flight = in_flight_callback(c.trace, ni);
            if let Some(di) =
                (ni + 1..=a.end).find(|&i| Some(i) != in_flight && data_callback(c.ev(i)).is_some())
            {
                v.fail(
                    Some(a.n),
                    di,
                    format!(
                        "acquisition {}: IT_MSG_DATA delivered {} after WIA_EVENT_CANCEL_IO at #{ni}",
                        a.n,
                        ms(c.at(di) - c.at(ni))
                    ),
                );
            }
            // An abort answered by a read on the same endpoint restarts the I/O it cancelled.
            let reread = (ni + 1..=a.end)
                .filter(|&i| matches!(c.ev(i).kind, Kind::Abort { .. }))
                .find_map(|j| c.read_after_abort(j, a.end).map(|k| (j, k)));
            if let Some((j, k)) = reread.filter(|_| c.dev[ni].busy()) {
                v.fail(
                    Some(a.n),
                    k,
                    format!(
                        "acquisition {}: after WIA_EVENT_CANCEL_IO at #{ni} the driver aborted the endpoint (#{j}) but submitted a read on it again (#{k}) before any Cancel Request or Device Reset",
                        a.n
                    ),
                );
            }
            if c.dev[ni].busy() && c.wire_cancel_within(ni, a.end).is_none() {
                let deadline = c.at(ni) + CANCEL_IO_WIRE_US;
                let late = (ni + 1..=a.end).find(|&i| {
                    let e = c.ev(i);
                    is_cancel_request(e)
                        || is_device_reset(e)
                        || matches!(e.kind, Kind::Abort { .. })
                });
                let when = match late {
                    Some(i) => format!(
                        "the first came {} later (#{i}){}",
                        ms(c.net_us(ni, i)),
                        c.lag_note(c.at(ni), c.at(i))
                    ),
                    None => "none came before the acquisition ended".into(),
                };
                v.fail(
                    Some(a.n),
                    c.first_after(ni, deadline).min(a.end.max(ni)),
                    format!(
                        "acquisition {}: WIA_EVENT_CANCEL_IO at #{ni} while the device was scanning, but no Cancel Request, Device Reset or endpoint abort within 10 ms; {when}",
                        a.n
                    ),
                );
            }
        }
    }
    v.done()
}

pub(crate) fn xp_gap(c: &Ctx<'_>) -> Judgement {
    if c.facts.service != ServiceModel::Xp || c.facts.async_cancel {
        return Judgement::NotApplicable;
    }
    let has_band_sent = c
        .trace
        .events
        .iter()
        .any(|e| note(e) == Some(NoteKind::BandSent));
    let mut parts = Vec::new();
    for a in &c.acqs {
        let Some(ni) = a.range().find(|&i| is_notify(c.ev(i))) else {
            continue;
        };
        let mut bands = 0u32;
        let mut bytes = 0u64;
        for i in ni + 1..=a.end {
            let e = c.ev(i);
            if let Some((_, actual)) = bulk_in_data(e) {
                bytes += u64::from(actual);
                if !has_band_sent {
                    bands += 1;
                }
            }
            if has_band_sent && note(e) == Some(NoteKind::BandSent) {
                bands += 1;
            }
        }
        let learned = (ni + 1..=a.end)
            .find(|&i| callback(c.ev(i)).is_some_and(|cb| cb.result == Hresult::S_FALSE));
        let learned = match learned {
            Some(i) => format!(
                "the driver learned of the cancel {} later, from a callback's S_FALSE at #{i}",
                ms(c.at(i) - c.at(ni))
            ),
            None => "no callback returned S_FALSE afterwards".into(),
        };
        parts.push(format!(
            "acquisition {}: {bands} band(s), {bytes} bytes read from the device after CancelPendingIO at #{ni}; {learned}",
            a.n
        ));
    }
    if parts.is_empty() {
        Judgement::NotApplicable
    } else {
        Judgement::Report(parts.join("; "))
    }
}

pub(crate) fn vista_sticky(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    if c.facts.service != ServiceModel::Vista {
        return v.done();
    }
    for a in &c.acqs {
        let cancels: Vec<usize> = a.range().filter(|&i| is_app_cancel(c.ev(i))).collect();
        let Some(&first) = cancels.first() else {
            continue;
        };
        v.judged();
        for (k, &ci) in cancels.iter().enumerate() {
            let until = cancels.get(k + 1).copied().unwrap_or(c.trace.events.len());
            if !(ci + 1..until).any(|i| is_notify(c.ev(i))) {
                v.fail(
                    Some(a.n),
                    ci,
                    format!(
                        "acquisition {}: the application cancelled at #{ci} but the service did not deliver WIA_EVENT_CANCEL_IO",
                        a.n
                    ),
                );
            }
        }
        // The callback the application cancelled from inside keeps its own answer.
        let in_flight: Vec<usize> = cancels
            .iter()
            .filter_map(|&ci| in_flight_callback(c.trace, ci))
            .collect();
        for i in first + 1..=a.end {
            if in_flight.contains(&i) {
                continue;
            }
            if let Some(cb) = callback(c.ev(i)) {
                if cb.result != Hresult::S_FALSE || !cb.sticky {
                    v.fail(
                        Some(a.n),
                        i,
                        format!(
                            "acquisition {}: {} callback after Cancel at #{first} returned {} (sticky={}), not the sticky S_FALSE",
                            a.n,
                            cb.msg.name(),
                            cb.result,
                            cb.sticky
                        ),
                    );
                }
            }
        }
    }
    v.done()
}

pub(crate) fn idle_after_cancel(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    for a in &c.acqs {
        if a.ret.is_none() {
            continue;
        }
        let Some(cp) = c.acted_cancel_point(a) else {
            continue;
        };
        let stopped = first_stopped(c.trace, &c.dev, cp.idx);
        let horizon = stopped.map_or(c.dev.len().saturating_sub(1), |(i, _)| i);
        if c.gone_between(cp.idx, horizon) {
            continue;
        }
        v.judged();
        // The device's own stop time is not the driver's: allow the longest observed
        // cancel-requested -> motor-stopped interval when it exceeds the profile's.
        let mut observed = 0u64;
        let mut requested: Option<u64> = None;
        for i in cp.idx..=horizon {
            match note(c.ev(i)) {
                Some(NoteKind::CancelRequested) => requested = Some(c.at(i)),
                Some(NoteKind::MotorStopped) => {
                    if let Some(t) = requested.take() {
                        observed = observed.max(c.at(i) - t);
                    }
                }
                _ => {}
            }
        }
        let stop_us = c.facts.motor_stop_us.max(observed);
        let budget = stop_us + IDLE_SLACK_US;
        let deadline = cp.at + budget;
        let over = match stopped {
            Some((_, t)) if c.net_between(cp.at, t) <= budget => continue,
            Some((i, t)) => format!(
                "the device was idle only at #{i}, {} after it{}",
                ms(c.net_between(cp.at, t)),
                c.lag_note(cp.at, t)
            ),
            None => "the device never became idle".into(),
        };
        v.fail(
            Some(a.n),
            c.first_after(cp.idx, deadline),
            format!(
                "acquisition {}: cancel point ({}); {over}; budget {} (motor stop {} + 50 ms)",
                a.n,
                describe_cp(&cp),
                ms(budget),
                ms(stop_us)
            ),
        );
    }
    v.done()
}

pub(crate) fn cancel_return(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    for a in &c.acqs {
        let Some(ret) = a.ret else { continue };
        let Some(cp) = c.acted_cancel_point(a) else {
            continue;
        };
        if !matches!(
            cp.kind,
            CpKind::SFalse | CpKind::Notify | CpKind::DeviceCancel
        ) {
            continue;
        }
        let Some((si, stopped_at)) = first_stopped(c.trace, &c.dev, cp.idx) else {
            continue;
        };
        if c.gone_between(cp.idx, si.max(ret)) {
            continue;
        }
        v.judged();
        let from = stopped_at.max(cp.at);
        let took = c.net_between(from, c.at(ret));
        if took > RETURN_SLACK_US {
            v.fail(
                Some(a.n),
                ret,
                format!(
                    "acquisition {}: cancel point ({}); the device was stopped at #{si}, {} after it, but drvAcquireItemData returned only {} after that{} (budget 50 ms)",
                    a.n,
                    describe_cp(&cp),
                    ms(stopped_at.saturating_sub(cp.at)),
                    ms(took),
                    c.lag_note(from, c.at(ret))
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn next_transfer(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    for w in c.acqs.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if a.ret.is_none() || !c.ended_badly(a) {
            continue;
        }
        if c.expect(b.n) != Some(&Outcome::Complete) {
            continue;
        }
        let (Some(ret), Some(hr)) = (b.ret, b.hr(c.trace)) else {
            continue;
        };
        v.judged();
        let refused = b.range().find(|&i| {
            let e = c.ev(i);
            note(e) == Some(NoteKind::StartRefused)
                || (is_start_scan(e) && control(e).is_some_and(|(_, _, r, _)| !r.is_ok()))
        });
        if let Some(i) = refused {
            v.fail(
                Some(b.n),
                i,
                format!(
                    "acquisition {} (after acquisition {} ended {}): the device refused the scan",
                    b.n,
                    a.n,
                    a.hr(c.trace).map_or("?".into(), |h| h.to_string())
                ),
            );
        } else if hr != Hresult::S_OK {
            v.fail(
                Some(b.n),
                ret,
                format!(
                    "acquisition {} (after acquisition {} was cancelled or failed) returned {hr}, not S_OK",
                    b.n, a.n
                ),
            );
        }
    }
    v.done()
}
