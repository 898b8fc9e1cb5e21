//! The WIA 2.0 checks of H11, H12, H13, H27, H14, the cancel and abort rules (A1, N1, M4, A2): skip, cancel, abort.

use super::*;

pub(crate) fn h11_skip_continues(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    let sc = c.facts.scenario;
    for call in c.calls().filter(|k| !k.upload()) {
        let asks: Vec<(usize, Hresult)> = call
            .range()
            .filter_map(|i| gns(c.ev(i)).map(|(r, _, _)| (i, r)))
            .collect();
        for (k, &(i, r)) in asks.iter().enumerate() {
            if r != Hresult::WIA_STATUS_SKIP_ITEM {
                continue;
            }
            let more = match (call.children(), sc.scan.source) {
                (true, _) => (k + 1) < sc.children.len(),
                (false, ScanSource::Adf) => {
                    sc.tymed == Tymed::File && (k as u32 + 1) < c.feeder_pages()
                }
                _ => false,
            };
            if !more {
                continue;
            }
            // Something else that stops the call after the skip excuses it.
            let stopped = (i + 1..=call.end).any(|j| {
                let e = c.ev(j);
                is_notify(e)
                    || msg(e).is_some_and(|m| m.result == Hresult::S_FALSE || m.result.failed())
                    || matches!(device(e), Some((NoteKind::Fault, _, _)))
            });
            if stopped {
                continue;
            }
            v.judged();
            let went_on = asks.get(k + 1).is_some();
            if !went_on {
                v.fail(
                    Some(call.n),
                    call.ret.unwrap_or(call.end),
                    format!(
                        "call {}: GetNextStream returned WIA_STATUS_SKIP_ITEM for image {} of a multi-item download at #{i}, and the driver transferred none of the images after it",
                        call.n,
                        k + 1
                    ),
                );
            }
        }
    }
    v.done()
}

impl Ctx2<'_> {
    /// Pages a feeder job of this scenario yields: the pages asked for, at most the sheets
    /// loaded (unknown here: the pages the device scanned in the first call), 0 = every sheet.
    fn feeder_pages(&self) -> u32 {
        let asked = u32::from(self.facts.scenario.scan.pages);
        let scanned = self
            .calls()
            .map(|k| pages_scanned(self.trace, k))
            .max()
            .unwrap_or(0);
        if asked == 0 {
            scanned.max(1)
        } else {
            asked
        }
    }
}

pub(crate) fn h12_skip_sok(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls().filter(|k| k.returned() && !k.upload()) {
        let Some(i) = call
            .range()
            .find(|&i| gns(c.ev(i)).is_some_and(|(r, _, _)| r == Hresult::WIA_STATUS_SKIP_ITEM))
        else {
            continue;
        };
        let disturbed = call.range().any(|j| {
            let e = c.ev(j);
            is_notify(e)
                || gns(e).is_some_and(|(r, _, _)| r == Hresult::S_FALSE || r.failed())
                || msg(e).is_some_and(|m| m.result != Hresult::S_OK)
                || op(e).is_some_and(|o| o.result.failed())
                || matches!(device(e), Some((NoteKind::Fault, _, _)))
        });
        if disturbed {
            continue;
        }
        v.judged();
        let ok =
            call.hr == Some(Hresult::S_OK) || call.hr == Some(Hresult::WIA_STATUS_END_OF_MEDIA);
        if !ok {
            v.fail(
                Some(call.n),
                call.ret.unwrap_or(call.end),
                format!(
                    "call {}: an item was skipped at #{i} and nothing else went wrong, but drvAcquireItemData returned {}",
                    call.n,
                    hr_of(call)
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn h13_gns_sfalse_aborts(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls() {
        let Some(i) = call
            .range()
            .find(|&i| gns(c.ev(i)).is_some_and(|(r, _, _)| r == Hresult::S_FALSE))
        else {
            continue;
        };
        v.judged();
        for j in i + 1..=call.end {
            let e = c.ev(j);
            if gns(e).is_some() {
                v.fail(
                    Some(call.n),
                    j,
                    format!(
                        "call {}: GetNextStream returned S_FALSE at #{i}, and the driver asked for another stream",
                        call.n
                    ),
                );
            } else if op(e).is_some_and(|o| o.op == StreamMethod::Write) {
                v.fail(
                    Some(call.n),
                    j,
                    format!(
                        "call {}: GetNextStream returned S_FALSE at #{i}, and the driver still wrote data",
                        call.n
                    ),
                );
            }
        }
    }
    v.done()
}

pub(crate) fn h27_no_call_after_sfalse(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls() {
        let Some((i, r)) = call.range().find_map(|i| {
            msg(c.ev(i))
                .filter(|m| m.result == Hresult::S_FALSE || m.result.failed())
                .map(|m| (i, m.result))
        }) else {
            continue;
        };
        v.judged();
        for j in i + 1..=call.end {
            let e = c.ev(j);
            let what = if gns(e).is_some() {
                "GetNextStream"
            } else if msg(e).is_some() {
                "SendMessage"
            } else {
                continue;
            };
            v.fail(
                Some(call.n),
                j,
                format!(
                    "call {}: SendMessage returned {r} at #{i}, and the driver called {what} again",
                    call.n
                ),
            );
        }
    }
    v.done()
}

/// Duration of a call from drv-acquire-item-data2 to acquire-return (net of host lag in
/// real-time runs).
pub(super) fn took(c: &Ctx2<'_>, call: &Call) -> Option<u64> {
    call.ret.map(|r| c.net(c.at(call.start), c.at(r)))
}

pub(crate) fn h14_cancel_faster(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    let completed = c
        .calls()
        .filter(|k| {
            !k.upload() && k.returned() && k.hr == Some(Hresult::S_OK) && undisturbed(c.trace, k)
        })
        .filter_map(|k| took(c, k))
        .min();
    let Some(completed) = completed else {
        return v.done();
    };
    for call in c.calls().filter(|k| !k.upload() && k.returned()) {
        let cancel_at = call.range().find(|&i| {
            let e = c.ev(i);
            is_notify(e)
                || gns(e).is_some_and(|(r, _, _)| r == Hresult::S_FALSE)
                || msg(e).is_some_and(|m| m.result == Hresult::S_FALSE)
        });
        let Some(cp) = cancel_at else { continue };
        if c.at(cp) - c.at(call.start) >= completed / 2 {
            continue;
        }
        let Some(t) = took(c, call) else { continue };
        if c.facts.host_lag.is_some() {
            // Two calls' wall-clock durations differ by the transport's latency and the
            // machine's scheduling more than by what the driver does: H14 is a virtual-time rule.
            return Judgement::Report(format!(
                "real-time run: call {} (cancelled) took {t} us, a completed one {completed} us; H14 is judged in virtual time only",
                call.n
            ));
        }
        v.judged();
        if t >= completed {
            v.fail(
                Some(call.n),
                call.ret.unwrap_or(call.end),
                format!(
                    "call {}: cancelled at #{cp} ({} us in), it returned after {t} us; a completed transfer of the same item took {completed} us",
                    call.n,
                    c.at(cp) - c.at(call.start)
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn a1_cancelled_sfalse(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls().filter(|k| k.returned()) {
        // The first thing that stopped the call.
        let first = call.range().find_map(|i| {
            let e = c.ev(i);
            if let Some((r, _, _)) = gns(e) {
                if r == Hresult::S_FALSE {
                    return Some((i, "GetNextStream returned S_FALSE"));
                }
                return r.failed().then_some((i, ""));
            }
            if let Some(m) = msg(e) {
                return (m.result == Hresult::S_FALSE || m.result.failed()).then_some((i, ""));
            }
            if is_notify(e) && !notify_in_callback(c.trace, i) {
                return Some((i, "WIA_EVENT_CANCEL_IO"));
            }
            match device(e) {
                Some((NoteKind::Fault, _, d))
                    if matches!(
                        d.fault(),
                        Some(FaultKind::CancelButton | FaultKind::ShortBand)
                    ) =>
                {
                    Some((i, "a device-initiated cancel"))
                }
                Some((NoteKind::Fault, _, d)) if crate::rules::analysis::aborting_fault(d) => {
                    Some((i, ""))
                }
                _ => None,
            }
        });
        let Some((i, what)) = first else { continue };
        if what.is_empty() {
            continue;
        }
        v.judged();
        let hr = call.hr.unwrap_or(Hresult::S_OK);
        let finished = what == "WIA_EVENT_CANCEL_IO"
            && hr == Hresult::S_OK
            && bad_stream_ends(c, call).is_empty()
            && given(c.trace, call).len() as u32 >= units(c.trace, call, c.facts.scenario).max(1);
        let ok = hr == Hresult::S_FALSE || finished || (hr.failed() && c.gone_between(i, call.end));
        if !ok {
            v.fail(
                Some(call.n),
                call.ret.unwrap_or(call.end),
                format!(
                    "call {}: cancelled ({what} at #{i}), drvAcquireItemData returned {hr}",
                    call.n
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn n1_cancel_io(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls().filter(|k| k.ret.is_some()) {
        for i in call.range() {
            if !is_notify(c.ev(i)) || notify_in_callback(c.trace, i) {
                continue;
            }
            v.judged();
            if let Some(j) = (i + 1..=call.end)
                .find(|&j| op(c.ev(j)).is_some_and(|o| o.op == StreamMethod::Write))
            {
                v.fail(
                    Some(call.n),
                    j,
                    format!(
                        "call {}: WIA_EVENT_CANCEL_IO at #{i}, and the driver went on writing",
                        call.n
                    ),
                );
                continue;
            }
            if !c.dev[i].busy() {
                continue;
            }
            // Within 10 ms, net of host lag in real-time runs.
            let wire = (i + 1..=call.end)
                .take_while(|&j| c.net(c.at(i), c.at(j)) <= CANCEL_IO_WIRE_US)
                .any(|j| {
                    let e = c.ev(j);
                    is_cancel_request(e)
                        || is_device_reset(e)
                        || matches!(e.kind, Kind::Abort { .. })
                });
            if !wire {
                v.fail(
                    Some(call.n),
                    c.trace.events.len().min(i + 1).saturating_sub(1).max(i),
                    format!(
                        "call {}: WIA_EVENT_CANCEL_IO at #{i} while the device was scanning, and no Cancel Request, Device Reset or endpoint abort within 10 ms",
                        call.n
                    ),
                );
            }
        }
    }
    v.done()
}

pub(crate) fn m4_device_status_error(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls().filter(|k| k.returned()) {
        let Some((i, r)) = call.range().find_map(|i| {
            msg(c.ev(i))
                .filter(|m| m.msg == TransferMsg::DEVICE_STATUS && m.result.failed())
                .map(|m| (i, m.result))
        }) else {
            continue;
        };
        v.judged();
        for j in i + 1..=call.end {
            let e = c.ev(j);
            let went_on = op(e).is_some_and(|o| o.op == StreamMethod::Write)
                || msg(e).is_some_and(|m| m.msg == TransferMsg::STATUS);
            if went_on {
                v.fail(
                    Some(call.n),
                    j,
                    format!(
                        "call {}: the error handlers gave {r} back at #{i}, and the driver went on transferring",
                        call.n
                    ),
                );
                break;
            }
        }
        if call.hr != Some(r) {
            v.fail(
                Some(call.n),
                call.ret.unwrap_or(call.end),
                format!(
                    "call {}: the error handlers gave {r} back at #{i}, and drvAcquireItemData returned {}",
                    call.n,
                    hr_of(call)
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn a2_adf_result(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    let sc = c.facts.scenario;
    if sc.scan.source != ScanSource::Adf {
        return v.done();
    }
    let asked = u32::from(sc.scan.pages);
    for call in c.calls().filter(|k| k.returned() && !k.upload()) {
        let disturbed = call.range().any(|j| {
            let e = c.ev(j);
            is_notify(e)
                || gns(e).is_some_and(|(r, _, _)| r != Hresult::S_OK)
                || msg(e).is_some_and(|m| {
                    m.msg != TransferMsg::DEVICE_STATUS && m.result != Hresult::S_OK
                })
                || op(e).is_some_and(|o| o.result.failed())
        });
        if disturbed {
            continue;
        }
        let hr = call.hr.unwrap_or(Hresult::S_OK);
        let refused = call
            .range()
            .any(|j| matches!(device(c.ev(j)), Some((NoteKind::StartRefused, _, _))));
        let scanned = pages_scanned(c.trace, call);
        let emptied = call
            .range()
            .any(|j| matches!(device(c.ev(j)), Some((NoteKind::FeederEmpty, _, _))));
        let (want, row): (Box<dyn Fn(Hresult) -> bool>, &str) =
            if device_fault_in(c.trace, call, FaultKind::MultiFeed).is_some() {
                (
                    Box::new(|h| h == Hresult::WIA_ERROR_MULTI_FEED),
                    "a multi-feed was detected: WIA_ERROR_MULTI_FEED",
                )
            } else if device_fault_in(c.trace, call, FaultKind::PaperJam).is_some() {
                (
                    Box::new(Hresult::failed),
                    "the paper jammed: a failure code",
                )
            } else if refused || (scanned == 0 && emptied) {
                (
                    Box::new(Hresult::failed),
                    "the feeder was empty at the first scan: a failure code",
                )
            } else if device_end_fault(c, call).is_some() {
                continue;
            } else if asked > 0 && scanned < asked && emptied {
                (
                    Box::new(|h| h == Hresult::WIA_STATUS_END_OF_MEDIA),
                    "the feeder ran out after at least one page: WIA_STATUS_END_OF_MEDIA",
                )
            } else {
                (
                    Box::new(|h| h == Hresult::S_OK),
                    "every page asked for was scanned (or the feeder emptied on pages = 0): S_OK",
                )
            };
        v.judged();
        if !want(hr) {
            v.fail(
                Some(call.n),
                call.ret.unwrap_or(call.end),
                format!(
                    "call {}: {scanned} page(s) scanned of {}; {row}, but drvAcquireItemData returned {hr}",
                    call.n,
                    if asked == 0 { "all".to_string() } else { asked.to_string() }
                ),
            );
        }
    }
    v.done()
}

/// Another aborting device fault in the call (not judged by the ADF table).
pub(super) fn device_end_fault(c: &Ctx2<'_>, call: &Call) -> Option<usize> {
    call.range().find(|&i| {
        matches!(device(c.ev(i)), Some((NoteKind::Fault, _, d)) if crate::rules::analysis::aborting_fault(d))
    })
}
