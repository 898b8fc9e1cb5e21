//! The WIA 2.0 checks of H7, H25, H24: releasing streams and calls after them.

use super::*;

pub(crate) fn h7_release(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls().filter(|k| k.returned()) {
        let streams = given(c.trace, call);
        for (k, &(from, s)) in streams.iter().enumerate() {
            v.judged();
            let ret = call.ret.unwrap_or(call.end);
            let next_gns = (from + 1..=ret).find(|&i| gns(c.ev(i)).is_some());
            let deadline = next_gns.unwrap_or(ret);
            let released = (from + 1..deadline).any(|i| {
                op(c.ev(i)).is_some_and(|o| o.stream == s && o.op == StreamMethod::Release)
            });
            if !released {
                let when = if next_gns.is_some() {
                    format!("asked for the next stream at #{deadline}")
                } else {
                    "drvAcquireItemData returned".into()
                };
                let _ = k;
                v.fail(
                    Some(call.n),
                    deadline,
                    format!(
                        "call {}: the driver had not released stream {s} when it {when}",
                        call.n
                    ),
                );
            }
        }
    }
    v.done()
}

pub(crate) fn h25_no_stream_call_after_next(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls() {
        let streams = given(c.trace, call);
        for &(from, s) in &streams {
            let next_gns = (from + 1..=call.end).find(|&i| gns(c.ev(i)).is_some());
            let Some(after) = next_gns.or(call.ret) else {
                continue;
            };
            v.judged();
            for i in after + 1..c.trace.events.len() {
                let Some(o) = op(c.ev(i)) else { continue };
                if o.stream == s && o.op != StreamMethod::Release {
                    let when = if next_gns.is_some() {
                        format!("after it asked for the next stream at #{after}")
                    } else {
                        format!("after drvAcquireItemData returned at #{after}")
                    };
                    v.fail(
                        Some(call.n),
                        i,
                        format!(
                            "call {}: IStream::{} on stream {s} {when}",
                            call.n,
                            o.op.name()
                        ),
                    );
                }
            }
        }
    }
    v.done()
}

pub(crate) fn h24_no_stream_call_after_stop(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls() {
        let streams = given(c.trace, call);
        for i in call.range() {
            let Some(m) = msg(c.ev(i)) else { continue };
            let stops = m.result == Hresult::S_FALSE
                || m.result == Hresult::WIA_STATUS_SKIP_ITEM
                || m.result.failed();
            if !stops {
                continue;
            }
            v.judged();
            // The streams the answer was about: for a skip the item's (the last one given),
            // otherwise every stream given so far.
            let held: Vec<u32> = if m.result == Hresult::WIA_STATUS_SKIP_ITEM {
                streams
                    .iter()
                    .rev()
                    .find(|(g, _)| *g < i)
                    .map(|(_, s)| *s)
                    .into_iter()
                    .collect()
            } else {
                streams
                    .iter()
                    .filter(|(g, _)| *g < i)
                    .map(|(_, s)| *s)
                    .collect()
            };
            for j in i + 1..=call.end {
                let Some(o) = op(c.ev(j)) else { continue };
                if held.contains(&o.stream) && o.op != StreamMethod::Release {
                    v.fail(
                        Some(call.n),
                        j,
                        format!(
                            "call {}: IStream::{} on stream {} after SendMessage({}) returned {} at #{i}",
                            call.n,
                            o.op.name(),
                            o.stream,
                            m.msg,
                            m.result
                        ),
                    );
                }
            }
        }
    }
    v.done()
}
