//! The WIA 2.0 checks of H10, H17, H15, H16, H19, H6: what drvAcquireItemData returns.

use super::*;

/// Calls that returned whose first stop answer satisfies `pick`, with it.
pub(super) fn first_stops<'c>(
    c: &'c Ctx2<'_>,
    pick: impl Fn(Hresult, bool) -> bool + 'c,
) -> impl Iterator<Item = (&'c Call, usize, Hresult)> + 'c {
    c.calls().filter(|k| k.returned()).filter_map(move |call| {
        first_stop(c.trace, call)
            .filter(|(_, r, from_msg)| pick(*r, *from_msg))
            .map(|(i, r, _)| (call, i, r))
    })
}

pub(crate) fn h10_sendmessage_sfalse(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for (call, i, _) in first_stops(c, |r, from_msg| from_msg && r == Hresult::S_FALSE) {
        v.judged();
        let ok = call.hr == Some(Hresult::S_FALSE)
            || (call.hr.is_some_and(Hresult::failed) && c.gone_between(i, call.end));
        if !ok {
            v.fail(
                Some(call.n),
                call.ret.unwrap_or(call.end),
                format!(
                    "call {}: SendMessage returned S_FALSE at #{i}, then drvAcquireItemData returned {}",
                    call.n,
                    hr_of(call)
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn h17_sendmessage_failure(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for (call, i, r) in first_stops(c, |r, from_msg| from_msg && r.failed()) {
        v.judged();
        if !call.hr.is_some_and(Hresult::failed) {
            v.fail(
                Some(call.n),
                call.ret.unwrap_or(call.end),
                format!(
                    "call {}: SendMessage failed with {r} at #{i}, then drvAcquireItemData returned {}",
                    call.n,
                    hr_of(call)
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn h15_gns_failure(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls().filter(|k| k.returned()) {
        let Some((i, r)) = call.range().find_map(|i| {
            gns(c.ev(i))
                .filter(|(r, _, _)| r.failed())
                .map(|(r, _, _)| (i, r))
        }) else {
            continue;
        };
        if first_stop(c.trace, call).is_some_and(|(j, _, _)| j < i) {
            continue;
        }
        v.judged();
        if !call.hr.is_some_and(Hresult::failed) {
            v.fail(
                Some(call.n),
                call.ret.unwrap_or(call.end),
                format!(
                    "call {}: GetNextStream failed with {r} at #{i}, then drvAcquireItemData returned {}",
                    call.n,
                    hr_of(call)
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn h16_null_stream(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls().filter(|k| k.restart.is_none()) {
        let Some(i) = call
            .range()
            .find(|&i| gns(c.ev(i)).is_some_and(|(r, s, _)| r == Hresult::S_OK && s == 0))
        else {
            continue;
        };
        v.judged();
        if let Some(f) = call.fault {
            v.fail(
                Some(call.n),
                f,
                format!(
                    "call {}: GetNextStream returned S_OK with a NULL stream at #{i}, and the driver crashed instead of returning a COM failure code",
                    call.n
                ),
            );
        } else if !call.hr.is_some_and(Hresult::failed) {
            v.fail(
                Some(call.n),
                call.ret.unwrap_or(call.end),
                format!(
                    "call {}: GetNextStream returned S_OK with a NULL stream at #{i}, then drvAcquireItemData returned {}",
                    call.n,
                    hr_of(call)
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn h19_stream_failure(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls().filter(|k| k.returned()) {
        let Some((i, o)) = call
            .range()
            .find_map(|i| op(c.ev(i)).filter(|o| o.result.failed()).map(|o| (i, o)))
        else {
            continue;
        };
        if first_stop(c.trace, call).is_some_and(|(j, r, _)| j < i && r == Hresult::S_FALSE) {
            continue;
        }
        v.judged();
        if !call.hr.is_some_and(Hresult::failed) {
            v.fail(
                Some(call.n),
                call.ret.unwrap_or(call.end),
                format!(
                    "call {}: IStream::{} failed with {} at #{i}, then drvAcquireItemData returned {}",
                    call.n,
                    o.op.name(),
                    o.result,
                    hr_of(call)
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn h6_success(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for x in &c.xfers {
        if !c.left_alone(x.n) {
            continue;
        }
        let Some(expect) = c.expect(x.n) else {
            continue;
        };
        let success_expected = [Hresult::S_OK, Hresult::WIA_STATUS_END_OF_MEDIA]
            .iter()
            .any(|h| expect.accepts(*h))
            && !expect.accepts(Hresult::E_FAIL);
        if !success_expected {
            continue;
        }
        for call in x.calls.iter().filter(|k| k.returned()) {
            v.judged();
            if !call.hr.is_some_and(Hresult::succeeded) {
                v.fail(
                    Some(call.n),
                    call.ret.unwrap_or(call.end),
                    format!(
                        "call {}: a transfer with good parameters where nothing went wrong returned {}",
                        call.n,
                        hr_of(call)
                    ),
                );
            }
        }
    }
    v.done()
}
