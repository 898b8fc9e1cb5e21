//! The checks of the SANE catalogue ([`super`]), one function per rule, each judging a
//! [`SaneTrace`] with the help of [`crate::sane::analysis`].
//!
//! About 750 lines because it holds one function per rule of the catalogue (21), each read on
//! its own next to the rule it checks; what they share lives in `analysis`.

use std::ops::Deref;

use scanemu::personality::NoteKind;

use crate::sane::analysis::{
    device_scan_at, device_scan_end, is_cancel, is_read, scan_end, st, wire_between, TraceView,
};
use crate::sane::ffi::{Parameters, Status, LEN_SENTINEL};
use crate::sane::scenario::SaneScenario;
use crate::sane::trace::{frame_name, Call, DeviceEvent, Op, SaneTrace};

/// What one check concludes.
pub(super) enum Verdict {
    NotApplicable,
    Pass,
    Fail(usize, String),
}

/// What a check sees: the trace (as frames and device scans) and the scenario that made it.
pub(super) struct Ctx<'a> {
    view: TraceView<'a>,
    scenario: &'a SaneScenario,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(trace: &'a SaneTrace, scenario: &'a SaneScenario) -> Ctx<'a> {
        Ctx {
            view: TraceView::new(trace),
            scenario,
        }
    }
}

impl<'a> Deref for Ctx<'a> {
    type Target = TraceView<'a>;

    fn deref(&self) -> &TraceView<'a> {
        &self.view
    }
}

fn verdict(judged: bool, fail: Option<(usize, String)>) -> Verdict {
    match fail {
        Some((e, m)) => Verdict::Fail(e, m),
        None if judged => Verdict::Pass,
        None => Verdict::NotApplicable,
    }
}

pub(super) fn cancel_status(cx: &Ctx<'_>) -> Verdict {
    let mut judged = false;
    for cancel in cx.of(is_cancel) {
        if cx.active_frame_at(cancel.call_us).is_none() {
            continue;
        }
        let limit = cx
            .of(|c| matches!(c.op, Op::Start | Op::Close) && c.call_us > cancel.call_us)
            .next()
            .map_or(u64::MAX, |c| c.call_us);
        let mut reads: Vec<&Call> = cx
            .of(|c| {
                is_read(c)
                    && c.ret_us >= cancel.call_us
                    && c.call_us < limit
                    && c.status() != Some(Status::GOOD)
            })
            .collect();
        reads.sort_by_key(|c| c.ret_us);
        let Some(first) = reads.first() else { continue };
        judged = true;
        if first.status() != Some(Status::CANCELLED) {
            let blocked = if first.call_us < cancel.call_us {
                let how = if matches!(cancel.op, Op::SignalCancel) {
                    "from a signal handler in the reading thread"
                } else {
                    "from another thread"
                };
                format!("the read blocked when sane_cancel was called {how}")
            } else {
                "the first read after sane_cancel".to_string()
            };
            return Verdict::Fail(
                first.seq,
                format!(
                    "{blocked} returned {} (len {}) instead of CANCELLED",
                    st(first),
                    first.outcome.len.unwrap_or(0)
                ),
            );
        }
    }
    verdict(judged, None)
}

pub(super) fn no_good_after_cancel(cx: &Ctx<'_>) -> Verdict {
    let mut judged = false;
    for cancel in cx.of(is_cancel) {
        let limit = cx
            .next_start_after(cancel.ret_us)
            .map_or(u64::MAX, |s| s.call_us);
        for r in cx.of(|c| is_read(c) && c.call_us >= cancel.ret_us && c.call_us < limit) {
            judged = true;
            if r.status() == Some(Status::GOOD) {
                return Verdict::Fail(
                    r.seq,
                    format!(
                        "sane_read returned GOOD (len {}) after sane_cancel had returned",
                        r.outcome.len.unwrap_or(0)
                    ),
                );
            }
        }
    }
    verdict(judged, None)
}

pub(super) fn len_zero(cx: &Ctx<'_>) -> Verdict {
    let mut judged = false;
    for r in cx.of(|c| is_read(c) && c.status() != Some(Status::GOOD)) {
        judged = true;
        let len = r.outcome.len.unwrap_or(0);
        if len != 0 {
            let shown = if len == LEN_SENTINEL {
                "left *len unset".to_string()
            } else {
                format!("set *len to {len}")
            };
            return Verdict::Fail(r.seq, format!("sane_read returned {} but {shown}", st(r)));
        }
    }
    verdict(judged, None)
}

pub(super) fn blocking_read(cx: &Ctx<'_>) -> Verdict {
    let mut judged = false;
    let mut non_blocking = false;
    for c in cx.calls {
        match &c.op {
            Op::Start => non_blocking = false,
            Op::SetIoMode(nb) if c.status() == Some(Status::GOOD) => non_blocking = *nb,
            Op::Read(max) if c.status() == Some(Status::GOOD) => {
                judged = true;
                let len = c.outcome.len.unwrap_or(0);
                let min = if non_blocking { 0 } else { 1 };
                if len < min || i64::from(len) > i64::from(*max) {
                    let mode = if non_blocking {
                        "non-blocking"
                    } else {
                        "blocking"
                    };
                    return Verdict::Fail(
                        c.seq,
                        format!(
                            "GOOD read in {mode} mode returned len {len} (allowed {min}..={max})"
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    verdict(judged, None)
}

pub(super) fn restart_after_cancel(cx: &Ctx<'_>) -> Verdict {
    let mut judged = false;
    for cancel in cx.of(is_cancel) {
        let Some(start) = cx.next_start_after(cancel.ret_us) else {
            continue;
        };
        judged = true;
        match start.status() {
            Some(Status::GOOD) => {}
            Some(Status::NO_DOCS) if cx.scenario.options.contains_key("source") => continue,
            _ => {
                return Verdict::Fail(
                    start.seq,
                    format!("sane_start after sane_cancel returned {}", st(start)),
                )
            }
        }
        let end = cx
            .of(|c| is_read(c) && c.call_us > start.ret_us && c.status() != Some(Status::GOOD))
            .next();
        if let Some(r) = end {
            let cancelled_again = cx
                .of(|c| is_cancel(c) && c.call_us > start.ret_us && c.call_us < r.ret_us)
                .next()
                .is_some();
            if !cancelled_again && r.status() != Some(Status::EOF) {
                return Verdict::Fail(
                    r.seq,
                    format!(
                        "the frame started after sane_cancel ended with {} instead of EOF",
                        st(r)
                    ),
                );
            }
        }
    }
    verdict(judged, None)
}

pub(super) fn eof_then_cancel(cx: &Ctx<'_>) -> Verdict {
    let mut judged = false;
    for cancel in cx.of(is_cancel) {
        let after_eof = cx
            .last_read_before(cancel.call_us)
            .is_some_and(|r| r.status() == Some(Status::EOF));
        if !after_eof {
            continue;
        }
        let Some(start) = cx.next_start_after(cancel.ret_us) else {
            continue;
        };
        judged = true;
        if start.status() != Some(Status::GOOD) {
            return Verdict::Fail(
                start.seq,
                format!(
                    "sane_start after EOF and sane_cancel returned {}",
                    st(start)
                ),
            );
        }
    }
    verdict(judged, None)
}

pub(super) fn cancel_any_time(cx: &Ctx<'_>) -> Verdict {
    let budget_us = cx.scenario.cancel_budget_ms * 1000;
    let mut judged = false;
    for cancel in cx.of(is_cancel) {
        judged = true;
        let took = cancel.ret_us.saturating_sub(cancel.call_us);
        if took > budget_us {
            return Verdict::Fail(
                cancel.seq,
                format!(
                    "sane_cancel took {} ms to return (budget {} ms)",
                    took / 1000,
                    cx.scenario.cancel_budget_ms
                ),
            );
        }
    }
    verdict(judged, None)
}

/// The parameters the frontend read for the frame `start` began (before the next start or
/// cancel).
fn params_after(cx: &Ctx<'_>, start: &Call) -> Option<(usize, Parameters)> {
    cx.calls
        .iter()
        .filter(|c| c.seq > start.seq)
        .take_while(|c| !matches!(c.op, Op::Start | Op::Cancel | Op::SignalCancel))
        .find_map(|c| c.outcome.params.map(|p| (c.seq, p)))
}

pub(super) fn next_frame(cx: &Ctx<'_>) -> Verdict {
    let mut judged = false;
    for eof in cx.of(|c| is_read(c) && c.status() == Some(Status::EOF)) {
        let Some(frame_start) = cx
            .of(|c| matches!(c.op, Op::Start) && c.seq < eof.seq)
            .last()
        else {
            continue;
        };
        let Some((_, params)) = params_after(cx, frame_start) else {
            continue;
        };
        if params.last_frame {
            continue;
        }
        let Some(next) = cx
            .of(|c| {
                !is_read(c)
                    && c.seq > eof.seq
                    && !matches!(c.op, Op::FdCheck(_) | Op::GetParameters)
            })
            .next()
        else {
            continue;
        };
        if !matches!(next.op, Op::Start) {
            continue;
        }
        judged = true;
        if next.status() != Some(Status::GOOD) {
            return Verdict::Fail(
                next.seq,
                format!(
                    "sane_start for the frame after {} returned {}",
                    frame_name(params.format),
                    st(next)
                ),
            );
        }
        if let Some((seq, p)) = params_after(cx, next) {
            if p.format == params.format {
                return Verdict::Fail(
                    seq,
                    format!(
                        "the next frame has the same format {} as the last one",
                        frame_name(p.format)
                    ),
                );
            }
        }
    }
    verdict(judged, None)
}

/// The status of the read that ended the frame `start` began (its first read that was not
/// GOOD), and whether a sane_cancel came before it.
fn frame_end<'a>(cx: &Ctx<'a>, start: &Call) -> Option<(&'a Call, bool)> {
    let end = cx
        .of(|c| is_read(c) && c.call_us > start.ret_us && c.status() != Some(Status::GOOD))
        .next()?;
    let cancelled = cx
        .of(|c| is_cancel(c) && c.call_us > start.ret_us && c.call_us < end.ret_us)
        .next()
        .is_some();
    Some((end, cancelled))
}

pub(super) fn next_image(cx: &Ctx<'_>) -> Verdict {
    let mut judged = false;
    for eof in cx.of(|c| is_read(c) && c.status() == Some(Status::EOF)) {
        let Some(frame_start) = cx
            .of(|c| matches!(c.op, Op::Start) && c.seq < eof.seq)
            .last()
        else {
            continue;
        };
        let Some((_, params)) = params_after(cx, frame_start) else {
            continue;
        };
        if !params.last_frame {
            continue;
        }
        let Some(next) = cx
            .of(|c| {
                !is_read(c)
                    && c.seq > eof.seq
                    && !matches!(c.op, Op::FdCheck(_) | Op::GetParameters)
            })
            .next()
        else {
            continue;
        };
        if !matches!(next.op, Op::Start) {
            continue;
        }
        judged = true;
        match next.status() {
            Some(Status::GOOD) => {}
            Some(Status::NO_DOCS) if cx.scenario.options.contains_key("source") => continue,
            _ => {
                return Verdict::Fail(
                    next.seq,
                    format!(
                        "sane_start after the last frame's EOF, without sane_cancel, returned {}",
                        st(next)
                    ),
                )
            }
        }
        if let Some((end, false)) = frame_end(cx, next) {
            if end.status() != Some(Status::EOF) {
                return Verdict::Fail(
                    end.seq,
                    format!(
                        "the image started after EOF without sane_cancel ended with {} instead of EOF",
                        st(end)
                    ),
                );
            }
        }
    }
    verdict(judged, None)
}

pub(super) fn reopen_after_close(cx: &Ctx<'_>) -> Verdict {
    let mut judged = false;
    for close in cx.of(|c| matches!(c.op, Op::Close)) {
        let Some(open) = cx
            .of(|c| matches!(c.op, Op::Open(_)) && c.seq > close.seq)
            .next()
        else {
            continue;
        };
        judged = true;
        if open.status() != Some(Status::GOOD) {
            return Verdict::Fail(
                open.seq,
                format!("sane_open after sane_close returned {}", st(open)),
            );
        }
        let Some(start) = cx
            .of(|c| matches!(c.op, Op::Start) && c.seq > open.seq)
            .next()
        else {
            continue;
        };
        if start.status() != Some(Status::GOOD) {
            return Verdict::Fail(
                start.seq,
                format!(
                    "the first sane_start after sane_close and sane_open returned {}",
                    st(start)
                ),
            );
        }
        if let Some((end, false)) = frame_end(cx, start) {
            if end.status() != Some(Status::EOF) {
                return Verdict::Fail(
                    end.seq,
                    format!(
                        "the first frame after sane_close and sane_open ended with {} instead of EOF",
                        st(end)
                    ),
                );
            }
        }
    }
    verdict(judged, None)
}

pub(super) fn cancel_ends_image(cx: &Ctx<'_>) -> Verdict {
    let mut judged = false;
    for cancel in cx.of(is_cancel) {
        let Some(start) = cx
            .of(|c| {
                matches!(c.op, Op::Start)
                    && c.call_us >= cancel.ret_us
                    && c.status() == Some(Status::GOOD)
            })
            .next()
        else {
            continue;
        };
        let Some((seq, p)) = params_after(cx, start) else {
            continue;
        };
        judged = true;
        if p.format == 3 || p.format == 4 {
            return Verdict::Fail(
                seq,
                format!(
                    "the first frame after sane_cancel is {} (the image continued where it was cancelled instead of starting anew)",
                    frame_name(p.format)
                ),
            );
        }
    }
    verdict(judged, None)
}

pub(super) fn io_mode(cx: &Ctx<'_>) -> Verdict {
    let mut judged = false;
    for c in cx.of(|c| matches!(c.op, Op::SetIoMode(_))) {
        if cx.active_frame_at(c.call_us).is_none() {
            continue;
        }
        judged = true;
        let ok = match c.op {
            Op::SetIoMode(false) => c.status() == Some(Status::GOOD),
            _ => matches!(c.status(), Some(Status::GOOD | Status::UNSUPPORTED)),
        };
        if !ok {
            return Verdict::Fail(
                c.seq,
                format!("sane_set_io_mode during a frame returned {}", st(c)),
            );
        }
    }
    verdict(judged, None)
}

pub(super) fn inval_outside_scan(cx: &Ctx<'_>) -> Verdict {
    let mut judged = false;
    for c in cx.of(|c| matches!(c.op, Op::SetIoMode(_) | Op::GetSelectFd)) {
        let last_start = cx.of(|s| matches!(s.op, Op::Start) && s.seq < c.seq).last();
        let idle = match last_start {
            None => true,
            Some(s) => cx
                .of(|k| is_cancel(k) && k.seq > s.seq && k.seq < c.seq)
                .next()
                .is_some(),
        };
        if !idle {
            continue;
        }
        judged = true;
        if !matches!(c.status(), Some(Status::INVAL | Status::UNSUPPORTED)) {
            return Verdict::Fail(
                c.seq,
                format!(
                    "{} with no acquisition pending returned {}",
                    c.op.name(),
                    st(c)
                ),
            );
        }
    }
    verdict(judged, None)
}

pub(super) fn select_fd(cx: &Ctx<'_>) -> Verdict {
    let mut judged = false;
    for c in cx.of(|c| matches!(c.op, Op::GetSelectFd)) {
        if cx.active_frame_at(c.call_us).is_none() {
            continue;
        }
        judged = true;
        match c.status() {
            Some(Status::UNSUPPORTED) => {}
            Some(Status::GOOD) if c.outcome.fd.unwrap_or(-1) >= 0 => {}
            _ => {
                return Verdict::Fail(
                    c.seq,
                    format!(
                        "sane_get_select_fd during a frame returned {} fd {}",
                        st(c),
                        c.outcome.fd.unwrap_or(-1)
                    ),
                )
            }
        }
    }
    for w in cx.of(|c| matches!(c.op, Op::WaitReadable(_))) {
        if cx.active_frame_at(w.call_us).is_none() {
            continue;
        }
        judged = true;
        if w.outcome.flag != Some(true) {
            return Verdict::Fail(
                w.seq,
                "the select fd did not turn readable while the frame still had data".into(),
            );
        }
    }
    verdict(judged, None)
}

fn fd_check_after<'a>(cx: &Ctx<'a>, what: impl Fn(&Call) -> bool) -> Vec<(&'a Call, &'a Call)> {
    cx.of(|c| matches!(c.op, Op::FdCheck(_)))
        .filter_map(|check| {
            let prev = cx.calls.get(check.seq.checked_sub(1)?)?;
            what(prev).then_some((prev, check))
        })
        .collect()
}

pub(super) fn fd_closed_at_eof(cx: &Ctx<'_>) -> Verdict {
    let mut judged = false;
    for (eof, check) in fd_check_after(cx, |p| is_read(p) && p.status() == Some(Status::EOF)) {
        judged = true;
        if check.outcome.flag == Some(true) {
            return Verdict::Fail(
                check.seq,
                format!(
                    "the select fd was still open after sane_read returned EOF (call {})",
                    eof.seq
                ),
            );
        }
    }
    verdict(judged, None)
}

pub(super) fn close_cancels(cx: &Ctx<'_>) -> Verdict {
    let mut judged = false;
    for (close, check) in fd_check_after(cx, |p| matches!(p.op, Op::Close)) {
        if cx.active_frame_at(close.call_us).is_none() {
            continue;
        }
        judged = true;
        if check.outcome.flag == Some(true) {
            return Verdict::Fail(
                check.seq,
                "sane_close of an active device left the select fd open: no sane_cancel was performed first"
                    .into(),
            );
        }
    }
    verdict(judged, None)
}

pub(super) fn no_docs(cx: &Ctx<'_>) -> Verdict {
    let mut judged = false;
    for nd in
        cx.of(|c| matches!(c.op, Op::Start | Op::Read(_)) && c.status() == Some(Status::NO_DOCS))
    {
        judged = true;
        if is_read(nd) && nd.outcome.len.unwrap_or(0) != 0 {
            return Verdict::Fail(nd.seq, "NO_DOCS from sane_read came with data".into());
        }
        let next_good_start = cx
            .of(|c| matches!(c.op, Op::Start) && c.seq > nd.seq && c.status() == Some(Status::GOOD))
            .next()
            .map_or(usize::MAX, |c| c.seq);
        if let Some(r) = cx
            .of(|c| is_read(c) && c.seq > nd.seq && c.seq < next_good_start)
            .find(|c| c.status() == Some(Status::GOOD))
        {
            return Verdict::Fail(r.seq, "sane_read returned GOOD after NO_DOCS".into());
        }
        if let Some(cancel) = cx.of(|c| is_cancel(c) && c.seq > nd.seq).next() {
            if let Some(start) = cx.next_start_after(cancel.ret_us) {
                if start.status() != Some(Status::GOOD) {
                    return Verdict::Fail(
                        start.seq,
                        format!(
                            "sane_start of a new batch after NO_DOCS and sane_cancel returned {}",
                            st(start)
                        ),
                    );
                }
            }
        }
    }
    verdict(judged, None)
}

pub(super) fn cancel_prompt(cx: &Ctx<'_>) -> Verdict {
    let budget_us = cx.scenario.cancel_budget_ms * 1000;
    let mut judged = false;
    for cancel in cx.of(is_cancel) {
        if cx.active_frame_at(cancel.call_us).is_none() {
            continue;
        }
        let Some(read) = cx.cancelled_read(cancel) else {
            continue;
        };
        judged = true;
        let from = cancel.call_us.max(read.call_us);
        let took = read.ret_us.saturating_sub(from);
        if took > budget_us {
            let who = if read.call_us < cancel.call_us {
                "the read blocked when sane_cancel was called"
            } else {
                "the first read after sane_cancel"
            };
            let wire = if cx.trace.device.is_empty() {
                String::new()
            } else {
                format!(
                    "; on the wire after sane_cancel: {}",
                    wire_between(&cx.trace.device, cancel.call_us, read.ret_us, 6)
                )
            };
            return Verdict::Fail(
                read.seq,
                format!(
                    "{who} returned {} {} ms after it (budget {} ms){wire}",
                    st(read),
                    took / 1000,
                    cx.scenario.cancel_budget_ms
                ),
            );
        }
    }
    verdict(judged, None)
}

pub(super) fn read_status_after_cancel(cx: &Ctx<'_>) -> Verdict {
    const ALLOWED: [Status; 8] = [
        Status::CANCELLED,
        Status::EOF,
        Status::JAMMED,
        Status::NO_DOCS,
        Status::COVER_OPEN,
        Status::IO_ERROR,
        Status::NO_MEM,
        Status::ACCESS_DENIED,
    ];
    let mut judged = false;
    for cancelled in cx.of(|c| is_read(c) && c.status() == Some(Status::CANCELLED)) {
        let limit = cx
            .of(|c| matches!(c.op, Op::Start) && c.call_us > cancelled.ret_us)
            .next()
            .map_or(u64::MAX, |c| c.call_us);
        for r in cx.of(|c| {
            is_read(c)
                && c.call_us > cancelled.ret_us
                && c.call_us < limit
                && c.status() != Some(Status::GOOD)
        }) {
            judged = true;
            if !r.status().is_some_and(|s| ALLOWED.contains(&s)) {
                let wire = if cx.trace.device.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; the device had seen: {}",
                        wire_between(
                            &cx.trace.device,
                            cx.calls
                                .iter()
                                .rev()
                                .find(|c| is_cancel(c) && c.call_us < cancelled.ret_us)
                                .map_or(cancelled.call_us, |c| c.call_us),
                            r.ret_us,
                            4
                        )
                    )
                };
                return Verdict::Fail(
                    r.seq,
                    format!(
                        "sane_read after a read returned CANCELLED returned {}, which is not a status sane_read may return{wire}",
                        st(r)
                    ),
                );
            }
        }
    }
    verdict(judged, None)
}

pub(super) fn device_told_to_stop(cx: &Ctx<'_>) -> Verdict {
    let device = &cx.trace.device;
    let mut judged = false;
    for cancel in cx.of(is_cancel) {
        if cx.active_frame_at(cancel.call_us).is_none() {
            continue;
        }
        let Some(start) = device_scan_at(device, cancel.call_us) else {
            continue;
        };
        let Some(read) = cx.cancelled_read(cancel) else {
            continue;
        };
        judged = true;
        let end = device_scan_end(device, start + 1, cancel.call_us);
        if end.is_none_or(|(_, d)| d.at_us > read.ret_us) {
            let last_block = device[..]
                .iter()
                .rfind(|d| d.kind == NoteKind::BlockSent && d.at_us < cancel.call_us)
                .map_or(cancel.call_us, |d| d.at_us);
            let later = match end {
                Some((i, d)) => format!(
                    "; later: {}",
                    if scan_end(d) == Some("abandoned") {
                        format!(
                            "{} when {} arrived",
                            d.label(),
                            device[i + 1..]
                                .iter()
                                .find(|c| c.kind == NoteKind::Command)
                                .map_or("a command".to_string(), DeviceEvent::label)
                        )
                    } else {
                        d.label()
                    }
                ),
                None => "; the device was still scanning when the run ended".into(),
            };
            return Verdict::Fail(
                read.seq,
                format!(
                    "sane_read returned {} but the device was not told to stop: no CAN (wire from the last block before sane_cancel to that return: {}){later}",
                    st(read),
                    wire_between(device, last_block, read.ret_us, 6),
                ),
            );
        }
    }
    verdict(judged, None)
}

pub(super) fn device_stopped_at_close(cx: &Ctx<'_>) -> Verdict {
    let device = &cx.trace.device;
    let mut judged = false;
    for close in cx.of(|c| matches!(c.op, Op::Close)) {
        if cx.active_frame_at(close.call_us).is_none() {
            continue;
        }
        let Some(start) = device_scan_at(device, close.call_us) else {
            continue;
        };
        judged = true;
        let end = device_scan_end(device, start + 1, close.call_us);
        if end.is_none_or(|(_, d)| d.at_us > close.ret_us) {
            return Verdict::Fail(
                close.seq,
                format!(
                    "sane_close of a scanning device returned and the device was not told to stop: no CAN (wire during sane_close: {}){}",
                    wire_between(device, close.call_us, close.ret_us, 6),
                    match end {
                        Some((_, d)) => format!("; later: {}", d.label()),
                        None => "; the device was still scanning when the run ended".into(),
                    }
                ),
            );
        }
    }
    verdict(judged, None)
}

pub(super) fn device_error_reported(cx: &Ctx<'_>) -> Verdict {
    const ABORTING: [&str; 5] = [
        "cancel-button",
        "paper-jam",
        "cover-open",
        "stall",
        "disconnect",
    ];
    let mut judged = false;
    for fault in cx
        .trace
        .device
        .iter()
        .filter(|d| d.kind == NoteKind::Fault && ABORTING.contains(&d.detail.as_str()))
    {
        let Some(start) = cx
            .of(|c| matches!(c.op, Op::Start) && c.ret_us <= fault.at_us)
            .last()
        else {
            continue;
        };
        if start.status() != Some(Status::GOOD) {
            continue;
        }
        let Some(end) = cx
            .of(|c| {
                is_read(c)
                    && c.call_us > start.ret_us
                    && c.ret_us >= fault.at_us
                    && c.status() != Some(Status::GOOD)
            })
            .next()
        else {
            continue;
        };
        judged = true;
        if end.status() == Some(Status::EOF) {
            return Verdict::Fail(
                end.seq,
                format!(
                    "the frame ended with EOF although the device aborted the scan ({}); wire: {}",
                    fault.detail,
                    wire_between(&cx.trace.device, fault.at_us, end.ret_us, 6)
                ),
            );
        }
    }
    verdict(judged, None)
}

pub(super) fn frame_data(cx: &Ctx<'_>) -> Verdict {
    let mut judged = false;
    for f in &cx.trace.frames {
        judged = true;
        if f.bytes != f.expected {
            return Verdict::Fail(
                f.eof_seq,
                format!(
                    "the frame read to EOF carried {} bytes; sane_get_parameters announced {}",
                    f.bytes, f.expected
                ),
            );
        }
        if let Some(at) = f.first_mismatch {
            return Verdict::Fail(
                f.eof_seq,
                format!("the frame's byte {at} differs from the image the device sent"),
            );
        }
    }
    verdict(judged, None)
}
