//! The WIA 2.0 checks of V2, H21, H18, H22, H26, H28, no-hang, outcome: the service, restarts, idle cancels, hangs.

use super::*;

pub(crate) fn v2_sticky(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for (i, e) in c.trace.events.iter().enumerate() {
        if !is_app_cancel(e) {
            continue;
        }
        v.judged();
        let notified = c
            .trace
            .events
            .get(i + 1)
            .is_some_and(|n| is_notify(n) && n.at_us == e.at_us);
        if !notified {
            v.fail(
                None,
                i,
                "the application called IWiaTransfer::Cancel, and the service did not deliver WIA_EVENT_CANCEL_IO".into(),
            );
        }
        let Some(x) = c
            .xfers
            .iter()
            .find(|x| x.start < i && x.done.is_none_or(|d| d > i))
        else {
            continue;
        };
        let end = x.done.unwrap_or(c.trace.events.len() - 1);
        for j in i + 1..=end {
            let r = gns(c.ev(j))
                .map(|(r, _, _)| r)
                .or_else(|| msg(c.ev(j)).map(|m| m.result));
            if let Some(r) = r {
                if r != Hresult::S_FALSE {
                    v.fail(
                        Some(x.calls.first().map_or(0, |k| k.n)),
                        j,
                        format!(
                            "after IWiaTransfer::Cancel at #{i} the service answered the driver {r}"
                        ),
                    );
                }
            }
        }
    }
    v.done()
}

pub(crate) fn h21_service_restart(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for (i, e) in c.trace.events.iter().enumerate() {
        if !matches!(e.kind, Kind::ServiceRestart {}) {
            continue;
        }
        let Some(next) = c.xfers.iter().find(|x| x.start > i) else {
            continue;
        };
        let Some(expect) = c.expect(next.n) else {
            continue;
        };
        if !expect.accepts(Hresult::S_OK) && !expect.accepts(Hresult::WIA_STATUS_END_OF_MEDIA) {
            continue;
        }
        v.judged();
        for call in &next.calls {
            let succeeded = call
                .hr
                .is_some_and(|h| h.succeeded() && h != Hresult::S_FALSE);
            if !succeeded {
                v.fail(
                    Some(call.n),
                    call.ret.or(call.fault).unwrap_or(call.end),
                    format!(
                        "the service restarted at #{i}; the next transfer's drvAcquireItemData returned {}",
                        hr_of(call)
                    ),
                );
            }
            for (j, s) in bad_stream_ends(c, call) {
                v.fail(
                    Some(call.n),
                    j,
                    format!(
                        "the service restarted at #{i}; stream {s} of the next transfer does not hold its image"
                    ),
                );
            }
        }
        if next.calls.is_empty() {
            v.fail(
                None,
                next.start,
                format!(
                    "the service restarted at #{i}; the next transfer never reached the driver"
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn h18_identical_device(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    let peers: Vec<(usize, u32, Hresult, bool)> = c
        .trace
        .events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match (&e.kind, e.actor) {
            (Kind::PeerTransfer { n, hr, whole, .. }, Actor::Service) => Some((i, *n, *hr, *whole)),
            _ => None,
        })
        .collect();
    if peers.is_empty() {
        return v.done();
    }
    for (i, n, hr, whole) in peers {
        v.judged();
        if hr.failed() || hr == Hresult::S_FALSE || !whole {
            v.fail(
                None,
                i,
                format!(
                    "the identical device's transfer {n}, made at the same time by another instance of the driver, returned {hr}{}",
                    if whole { "" } else { " and its streams do not hold their images" }
                ),
            );
        }
    }
    for x in &c.xfers {
        if c.expect(x.n) != Some(&Outcome::Complete) {
            continue;
        }
        for call in &x.calls {
            v.judged();
            if call.hr != Some(Hresult::S_OK) {
                v.fail(
                    Some(call.n),
                    call.ret.or(call.fault).unwrap_or(call.end),
                    format!(
                        "call {} returned {} while an identical device transferred at the same time",
                        call.n,
                        hr_of(call)
                    ),
                );
            }
            for (j, s) in bad_stream_ends(c, call) {
                v.fail(
                    Some(call.n),
                    j,
                    format!(
                        "call {}: stream {s} does not hold its image; an identical device transferred at the same time",
                        call.n
                    ),
                );
            }
        }
    }
    v.done()
}

pub(crate) fn h22_idle_cancel_io(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for (i, e) in c.trace.events.iter().enumerate() {
        if !is_notify(e) {
            continue;
        }
        let inside = c.calls().any(|k| k.start < i && i <= k.end);
        let in_xfer = c
            .xfers
            .iter()
            .any(|x| x.start < i && x.done.is_none_or(|d| d > i));
        if inside || in_xfer {
            continue;
        }
        v.judged();
        let next = c.xfers.iter().find(|x| x.start > i);
        let until = next.map_or(c.trace.events.len(), |x| x.start);
        for j in i + 1..until {
            let e = c.ev(j);
            if matches!(e.kind, Kind::DriverFault { .. }) {
                v.fail(
                    None,
                    j,
                    format!("after WIA_EVENT_CANCEL_IO while idle at #{i} the driver failed"),
                );
            } else if let Some(r) = transfer_failed(e) {
                v.fail(
                    None,
                    j,
                    format!(
                        "after WIA_EVENT_CANCEL_IO while idle at #{i} a USB transfer ended {r}"
                    ),
                );
            }
        }
        let Some(x) = next else { continue };
        if !c.left_alone(x.n) || c.expect(x.n) != Some(&Outcome::Complete) {
            continue;
        }
        for call in &x.calls {
            if call.hr != Some(Hresult::S_OK) {
                v.fail(
                    Some(call.n),
                    call.ret.or(call.fault).unwrap_or(call.end),
                    format!(
                        "after WIA_EVENT_CANCEL_IO while idle at #{i}, the next transfer's drvAcquireItemData returned {}",
                        hr_of(call)
                    ),
                );
            }
        }
    }
    v.done()
}

pub(crate) fn h26_no_eos_eot(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls() {
        for i in call.range() {
            let Some(m) = msg(c.ev(i)) else { continue };
            v.judged();
            if m.msg == TransferMsg::END_OF_STREAM || m.msg == TransferMsg::END_OF_TRANSFER {
                v.fail(
                    Some(call.n),
                    i,
                    format!("call {}: the driver sent {} itself", call.n, m.msg),
                );
            }
        }
    }
    v.done()
}

pub(crate) fn h28_upload_bad_stream(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for x in &c.xfers {
        let Some(t) = spec(c.facts.scenario, x.n) else {
            continue;
        };
        if !bad_upload(t) {
            continue;
        }
        for call in x.calls.iter().filter(|k| k.restart.is_none()) {
            v.judged();
            if let Some(f) = call.fault {
                v.fail(
                    Some(call.n),
                    f,
                    format!(
                        "call {}: an upload from an {} stream: the driver crashed or hung",
                        call.n,
                        upload_kind(t)
                    ),
                );
            } else if call.ret.is_none() {
                v.fail(
                    Some(call.n),
                    call.end,
                    format!(
                        "call {}: an upload from an {} stream never returned",
                        call.n,
                        upload_kind(t)
                    ),
                );
            }
        }
    }
    v.done()
}

pub(super) fn upload_kind(t: &crate::scenario::wia2::Transfer2) -> &'static str {
    match t.upload {
        Some(crate::scenario::wia2::UploadSource::Empty) => "empty",
        _ => "invalid",
    }
}

pub(crate) fn no_hang(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    let budget = c.facts.scenario.budget_us;
    for call in c.calls() {
        v.judged();
        if let Some(f) = call.fault {
            let what = match &c.ev(f).kind {
                Kind::DriverFault { what } => what.clone(),
                _ => String::new(),
            };
            v.fail(Some(call.n), f, format!("call {}: {what}", call.n));
        } else if call.ret.is_none() && call.restart.is_none() {
            v.fail(
                Some(call.n),
                call.end,
                format!("call {}: drvAcquireItemData never returned", call.n),
            );
        } else if call.ret.is_some_and(|r| c.at(r) > budget) {
            v.fail(
                Some(call.n),
                call.ret.unwrap_or(call.end),
                format!("call {}: returned after the scenario's budget", call.n),
            );
        }
    }
    for (i, e) in c.trace.events.iter().enumerate() {
        if e.actor == Actor::Driver
            && matches!(e.kind, Kind::DriverFault { .. })
            && !c.calls().any(|k| k.fault == Some(i))
        {
            v.fail(
                None,
                i,
                "a driver fault outside any drvAcquireItemData".into(),
            );
        }
    }
    v.done()
}

pub(crate) fn outcome(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for (k, t) in c.facts.scenario.transfers.iter().enumerate() {
        let n = k as u32 + 1;
        v.judged();
        let Some(x) = c.xfers.iter().find(|x| x.n == n) else {
            v.fail(
                None,
                c.trace.events.len().saturating_sub(1),
                format!("transfer {n} of the scenario never started"),
            );
            continue;
        };
        let restarted = x.calls.iter().any(|k| k.restart.is_some());
        let (got, at, call_n) = if restarted {
            (x.hr, x.done.unwrap_or(x.start), None)
        } else {
            match x.calls.last() {
                Some(call) => (call.hr, call.ret.unwrap_or(call.end), Some(call.n)),
                None => (None, x.done.unwrap_or(x.start), None),
            }
        };
        match got {
            Some(hr) if t.expect.accepts(hr) => {}
            Some(hr) => v.fail(
                call_n,
                at,
                format!(
                    "transfer {n} returned {hr}; the scenario expects {}",
                    serde_json::to_string(&t.expect).unwrap_or_default()
                ),
            ),
            None => v.fail(call_n, at, format!("transfer {n} never returned")),
        }
    }
    v.done()
}
