//! The SANE rule catalogue: what a backend must do around `sane_cancel`, each rule with the
//! sentence of the SANE standard (1.06, reference §3) it rests on, checked over a [`SaneTrace`].
//!
//! Words the checks use: a *frame is active* at time t when the last `sane_start` that
//! returned GOOD before t has not been followed by a read that returned something other than
//! GOOD, by a `sane_cancel` or by `sane_close`. Times are the trace's call/return times; every
//! comparison is between calls the script orders (a read blocked for tens of milliseconds
//! before the cancel), so verdicts do not depend on scheduling.

use std::fmt::Write as _;

use crate::rules::{RuleResult, RuleStatus};

use super::ffi::Status;
use super::scenario::SaneScenario;
use super::trace::{Call, CancelLatency, DeviceEvent, Op, SaneTrace};

/// A SANE rule.
pub struct SaneRule {
    /// Stable ID (`SANE-CANCEL-STATUS`, ...).
    pub id: &'static str,
    /// The rule in one sentence.
    pub statement: &'static str,
    /// The sentence it rests on, verbatim.
    pub quote: &'static str,
    /// Where the quote comes from.
    pub source: &'static str,
    /// What the check looks at.
    pub looks_at: &'static str,
    check: fn(&Ctx<'_>) -> Verdict,
}

impl std::fmt::Debug for SaneRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaneRule")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

enum Verdict {
    NotApplicable,
    Pass,
    Fail(usize, String),
}

const SRC_CANCEL: &str = "SANE Standard 1.06, sane_cancel (doc/sane.tex; reference §3.2)";
const SRC_READ: &str = "SANE Standard 1.06, sane_read (reference §3.2)";
const SRC_START: &str = "SANE Standard 1.06, sane_start (reference §3.2)";
const SRC_FLOW: &str = "SANE Standard 1.06, Code Flow (reference §3.2)";
const SRC_IO: &str = "SANE Standard 1.06, sane_set_io_mode (reference §3.2)";
const SRC_FD: &str = "SANE Standard 1.06, sane_get_select_fd (reference §3.2)";
const SRC_CLOSE: &str = "SANE Standard 1.06, sane_close (reference §3.2)";

const Q_CANCELLED: &str = "Cancellation completes only when the cancelled call returns (typically with a status value of SANE_STATUS_CANCELLED).";

static CATALOG: [SaneRule; 21] = [
    SaneRule {
        id: "SANE-CANCEL-STATUS",
        statement: "after sane_cancel during a frame, the cancelled (or next) sane_read returns SANE_STATUS_CANCELLED",
        quote: Q_CANCELLED,
        source: SRC_CANCEL,
        looks_at: "For each sane_cancel called while a frame was active, the first read that returned after the cancel was called with a status other than GOOD (a read in flight may still deliver data: cancel only initiates); it must be CANCELLED.",
        check: cancel_status,
    },
    SaneRule {
        id: "SANE-NO-GOOD-AFTER-CANCEL",
        statement: "no sane_read started after sane_cancel returned delivers GOOD before the next sane_start",
        quote: Q_CANCELLED,
        source: "SANE Standard 1.06, sane_cancel (reference §3.2); the check is tstbackend's \"after each cancel a read must not return GOOD\" (reference §5)",
        looks_at: "Reads called after a sane_cancel returned and before the next sane_start.",
        check: no_good_after_cancel,
    },
    SaneRule {
        id: "SANE-LEN-ZERO-ON-ERROR",
        statement: "sane_read sets *len to 0 whenever it returns a status other than GOOD",
        quote: "A backend must set this to zero when a status other than SANE_STATUS_GOOD is returned.",
        source: SRC_READ,
        looks_at: "Every read with a status other than GOOD; the runner pre-sets *len to -7777 so an untouched length shows.",
        check: len_zero,
    },
    SaneRule {
        id: "SANE-BLOCKING-READ",
        statement: "in blocking mode a GOOD sane_read returns between 1 and maxlen bytes; in non-blocking mode between 0 and maxlen",
        quote: "the call blocks until at least one data byte is available (or until some error occurs)",
        source: SRC_READ,
        looks_at: "Every GOOD read; the io mode is the last set-io-mode that returned GOOD since the frame's start (blocking after sane_start).",
        check: blocking_read,
    },
    SaneRule {
        id: "SANE-RESTART-AFTER-CANCEL",
        statement: "after sane_cancel has returned, the next sane_start succeeds and the frame reads to EOF",
        quote: "Once all desired frames have been acquired, function sane_cancel() must be called.",
        source: "SANE Standard 1.06, Code Flow (reference §3.2): sane_cancel ends the acquisition and the handle is ready for sane_start; \"think of sane_cancel() as sane_stop()\" (D. Mosberger, quoted in backend/hp3500.c, reference §3.3)",
        looks_at: "The first sane_start after each sane_cancel: it must return GOOD (NO_DOCS is accepted when the feeder is empty), and reads of that frame must end in EOF, not in an error or CANCELLED.",
        check: restart_after_cancel,
    },
    SaneRule {
        id: "SANE-EOF-THEN-CANCEL",
        statement: "sane_cancel after the last frame's EOF is harmless: it returns and the next sane_start succeeds",
        quote: "Note that sane_cancel() must be called even if the last read operation returned SANE_STATUS_EOF.",
        source: SRC_FLOW,
        looks_at: "Each sane_cancel whose preceding read returned EOF: the next sane_start must return GOOD.",
        check: eof_then_cancel,
    },
    SaneRule {
        id: "SANE-CANCEL-ANY-TIME",
        statement: "sane_cancel may be called at any time with a valid handle and returns promptly (within the scenario's cancel budget)",
        quote: "This function can be called at any time (as long as handle h is a valid handle) but usually affects long-running operations only.",
        source: SRC_CANCEL,
        looks_at: "The time from each sane_cancel call to its return, against cancel_budget_ms (5000 by default).",
        check: cancel_any_time,
    },
    SaneRule {
        id: "SANE-NEXT-FRAME",
        statement: "after EOF of a frame that is not the last, sane_start starts the next frame",
        quote: "If the frontend expects additional frames (e.g., the individual channels in of a red/green/blue image or multiple images), it can call sane_start() again.",
        source: SRC_FLOW,
        looks_at: "A sane_start following EOF of a frame whose parameters said last_frame=false, with no cancel between: it must return GOOD and its parameters must name a different frame.",
        check: next_frame,
    },
    SaneRule {
        id: "SANE-CANCEL-ENDS-IMAGE",
        statement: "after sane_cancel, the next image starts at its first frame (not at the next channel of a multi-pass image)",
        quote: "Once all desired frames have been acquired, function sane_cancel() must be called.",
        source: SRC_FLOW,
        looks_at: "get-parameters after the first successful sane_start that follows a sane_cancel: format must be GRAY, RGB or RED (the first pass), never GREEN or BLUE.",
        check: cancel_ends_image,
    },
    SaneRule {
        id: "SANE-IO-MODE",
        statement: "during an acquisition sane_set_io_mode(FALSE) returns GOOD; sane_set_io_mode(TRUE) returns GOOD or UNSUPPORTED",
        quote: "calling this function with argument m set to SANE_FALSE is guaranteed to complete successfully.",
        source: SRC_IO,
        looks_at: "set-io-mode calls while a frame is active.",
        check: io_mode,
    },
    SaneRule {
        id: "SANE-INVAL-OUTSIDE-SCAN",
        statement: "sane_set_io_mode and sane_get_select_fd return INVAL (or UNSUPPORTED) when no acquisition is pending",
        quote: "No image acquisition is pending.",
        source: "SANE Standard 1.06, sane_set_io_mode and sane_get_select_fd, status SANE_STATUS_INVAL (reference §3.2)",
        looks_at: "set-io-mode and get-select-fd calls made before any sane_start or after a sane_cancel (and before the next start).",
        check: inval_outside_scan,
    },
    SaneRule {
        id: "SANE-SELECT-FD",
        statement: "during a frame sane_get_select_fd returns GOOD with a file descriptor (or UNSUPPORTED), and the descriptor turns readable while data is pending",
        quote: "until sane_cancel() or sane_start() get called again or until sane_read() returns with status SANE_STATUS_EOF",
        source: SRC_FD,
        looks_at: "get-select-fd calls while a frame is active (GOOD needs fd >= 0) and wait-readable polls on that fd before the frame's EOF (must report readable within the step's timeout).",
        check: select_fd,
    },
    SaneRule {
        id: "SANE-SELECT-FD-CLOSED-AT-EOF",
        statement: "the backend closes the select file descriptor when sane_read returns EOF",
        quote: "a backend must guarantee to close the returned select file descriptor at the point when the next sane_read() call would return SANE_STATUS_EOF.",
        source: SRC_FD,
        looks_at: "The runner's fd-check right after a read returned EOF in a frame whose select fd the frontend obtained: the fd must be closed.",
        check: fd_closed_at_eof,
    },
    SaneRule {
        id: "SANE-CLOSE-CANCELS",
        statement: "sane_close on an active device cancels the acquisition first (its select fd is closed)",
        quote: "If the device is presently active, a call to sane_cancel() is performed first.",
        source: SRC_CLOSE,
        looks_at: "The runner's fd-check right after sane_close of a handle with an active frame whose select fd the frontend obtained: the fd must be closed, as sane_cancel would have done.",
        check: close_cancels,
    },
    SaneRule {
        id: "SANE-NO-DOCS",
        statement: "when the feeder is empty sane_start (or sane_read) reports NO_DOCS with no data, and after sane_cancel the next batch starts",
        quote: "The document feeder is out of documents.",
        source: SRC_START,
        looks_at: "Each NO_DOCS status: reads after it (before the next GOOD start) must not return GOOD; a read's NO_DOCS comes with len 0; a sane_start after the following sane_cancel must return GOOD.",
        check: no_docs,
    },
    SaneRule {
        id: "SANE-CANCEL-PROMPT",
        statement: "once sane_cancel has been called during a frame, the cancelled read (the one blocked at that moment, or the next one) returns within the scenario's cancel budget",
        quote: "It is safe to call this function asynchronously (e.g., from within a signal handler). [...] Cancellation completes only when the cancelled call returns (typically with a status value of SANE_STATUS_CANCELLED).",
        source: SRC_CANCEL,
        looks_at: "For each sane_cancel while a frame was active, the first read that returned afterwards with a status other than GOOD: the time from the later of the cancel call and the read call to the read's return, against cancel_budget_ms. With an emulated device the failure names the wire traffic in between.",
        check: cancel_prompt,
    },
    SaneRule {
        id: "SANE-READ-STATUS-AFTER-CANCEL",
        statement: "after sane_read returned CANCELLED, further sane_read calls of that frame return a status sane_read is specified to return (CANCELLED again, EOF, ...), not INVAL",
        quote: "SANE_STATUS_CANCELLED, SANE_STATUS_EOF, SANE_STATUS_JAMMED, SANE_STATUS_NO_DOCS, SANE_STATUS_COVER_OPEN, SANE_STATUS_IO_ERROR, SANE_STATUS_NO_MEM, SANE_STATUS_ACCESS_DENIED",
        source: "SANE Standard 1.06, sane_read, its list of failure statuses (reference §3.2): SANE_STATUS_INVAL is not among them",
        looks_at: "Reads called after a read returned CANCELLED and before the next sane_start; GOOD is left to SANE-NO-GOOD-AFTER-CANCEL. Not judged when no read follows a CANCELLED one.",
        check: read_status_after_cancel,
    },
    SaneRule {
        id: "SANE-DEVICE-TOLD-TO-STOP",
        statement: "when the read cancelled by sane_cancel returns, the scanner has been told to stop: CAN went on the wire (or its scan had already ended)",
        quote: Q_CANCELLED,
        source: "SANE Standard 1.06, sane_cancel (reference §3.2); on the wire, ESC/I's only way to stop a running scan is CAN in place of a block's ACK: ESC/I Reference Manual (Epson, 1995): \"ESC G → data block → ACK … CAN (abort scanning) → ACK\" (reference escI-epson2-brief.md §4)",
        looks_at: "Emulated device only (not judged otherwise). For each sane_cancel while both the frame and the device's scan were active, the first read returning afterwards with a status other than GOOD: by its return the device's scan must have ended (can, scan-abandoned, its last block sent, halted).",
        check: device_told_to_stop,
    },
    SaneRule {
        id: "SANE-DEVICE-STOPPED-AT-CLOSE",
        statement: "sane_close of a device that is scanning stops the scanner before it returns (a cancel is performed first, and reaches the device)",
        quote: "If the device is presently active, a call to sane_cancel() is performed first.",
        source: SRC_CLOSE,
        looks_at: "Emulated device only (not judged otherwise). Each sane_close called while the frame and the device's scan were active: by its return the device's scan must have ended. The ESC/I stop is CAN (escI brief §4).",
        check: device_stopped_at_close,
    },
    SaneRule {
        id: "SANE-DEVICE-ERROR-REPORTED",
        statement: "when the scanner aborts a scan by itself (its Cancel button, a jam, a stall), the frame's reads end in a status other than GOOD and EOF: a partial image is never reported complete",
        quote: "No more data is available for the current frame.",
        source: "SANE Standard 1.06, sane_read, SANE_STATUS_EOF (reference §3.2); the device side: an extended ESC/I block's status byte 0x10 (cancel request) or 0x80 (fatal error), a halted bulk endpoint (escI-epson2-brief.md §3.2, §4)",
        looks_at: "Emulated device only (not judged otherwise). Each aborting device fault (cancel-button, paper-jam, cover-open, stall, disconnect) during an active frame: the first read of that frame returning a status other than GOOD after the fault must not be EOF.",
        check: device_error_reported,
    },
    SaneRule {
        id: "SANE-FRAME-DATA",
        statement: "a frame read to EOF carries bytes_per_line × lines bytes, equal to the image the scanner sent",
        quote: "No more data is available for the current frame.",
        source: "SANE Standard 1.06, sane_read, SANE_STATUS_EOF (reference §3.2); sane_get_parameters gives bytes_per_line and lines",
        looks_at: "Emulated device only (not judged otherwise). Each frame read to EOF by the frontend's own thread: its byte count against get-parameters, its bytes against the emulator's test pattern (scanemu::engine::pattern_line).",
        check: frame_data,
    },
];

/// The SANE catalogue.
pub fn catalog() -> &'static [SaneRule] {
    &CATALOG
}

/// The SANE rule with this ID.
pub fn find(id: &str) -> Option<&'static SaneRule> {
    CATALOG.iter().find(|r| r.id == id)
}

/// A SANE rule explained for people (`scanconform explain SANE-…`).
pub fn explain(id: &str) -> Option<String> {
    let r = find(id)?;
    let mut s = String::new();
    let _ = writeln!(s, "{}: {}", r.id, r.statement);
    let _ = writeln!(s, "  \"{}\"", r.quote);
    let _ = writeln!(s, "    -- {}", r.source);
    let _ = writeln!(s, "  checks: {}", r.looks_at);
    Some(s)
}

/// Runs every SANE rule over a trace.
pub fn check_all(trace: &SaneTrace, scenario: &SaneScenario) -> Vec<RuleResult> {
    let ctx = Ctx {
        calls: &trace.calls,
        trace,
        scenario,
    };
    CATALOG
        .iter()
        .map(|r| RuleResult {
            id: r.id,
            status: match (r.check)(&ctx) {
                Verdict::NotApplicable => RuleStatus::NotApplicable,
                Verdict::Pass => RuleStatus::Pass,
                Verdict::Fail(event, message) => RuleStatus::Fail { event, message },
            },
        })
        .collect()
}

struct Ctx<'a> {
    calls: &'a [Call],
    trace: &'a SaneTrace,
    scenario: &'a SaneScenario,
}

fn is_cancel(c: &Call) -> bool {
    matches!(c.op, Op::Cancel | Op::SignalCancel)
}

fn is_read(c: &Call) -> bool {
    matches!(c.op, Op::Read(_))
}

fn st(c: &Call) -> String {
    c.status().map_or_else(|| "-".into(), Status::name)
}

impl<'a> Ctx<'a> {
    fn of<F: Fn(&Call) -> bool>(&self, f: F) -> impl Iterator<Item = &'a Call> {
        let calls: &'a [Call] = self.calls;
        calls.iter().filter(move |c| f(c))
    }

    /// The GOOD start that begins the frame active at time `t`, if one is.
    fn active_frame_at(&self, t: u64) -> Option<&Call> {
        let start = self
            .of(|c| matches!(c.op, Op::Start) && c.ret_us <= t)
            .last()?;
        if start.status() != Some(Status::GOOD) {
            return None;
        }
        let ended = self.calls.iter().any(|c| {
            let after = c.ret_us > start.ret_us;
            match c.op {
                Op::Read(_) => after && c.ret_us <= t && c.status() != Some(Status::GOOD),
                Op::Cancel | Op::SignalCancel | Op::Close => {
                    c.call_us > start.ret_us && c.call_us < t
                }
                _ => false,
            }
        });
        (!ended).then_some(start)
    }

    fn next_start_after(&self, t: u64) -> Option<&Call> {
        self.of(|c| matches!(c.op, Op::Start) && c.call_us >= t)
            .next()
    }

    /// The last read that returned before `t` and after the last start before `t`.
    fn last_read_before(&self, t: u64) -> Option<&Call> {
        let start_ret = self
            .of(|c| matches!(c.op, Op::Start) && c.ret_us <= t)
            .last()
            .map_or(0, |s| s.ret_us);
        self.of(|c| is_read(c) && c.ret_us <= t && c.ret_us >= start_ret)
            .last()
    }
}

fn verdict(judged: bool, fail: Option<(usize, String)>) -> Verdict {
    match fail {
        Some((e, m)) => Verdict::Fail(e, m),
        None if judged => Verdict::Pass,
        None => Verdict::NotApplicable,
    }
}

fn cancel_status(cx: &Ctx<'_>) -> Verdict {
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

fn no_good_after_cancel(cx: &Ctx<'_>) -> Verdict {
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

fn len_zero(cx: &Ctx<'_>) -> Verdict {
    let mut judged = false;
    for r in cx.of(|c| is_read(c) && c.status() != Some(Status::GOOD)) {
        judged = true;
        let len = r.outcome.len.unwrap_or(0);
        if len != 0 {
            let shown = if len == super::runner::LEN_SENTINEL {
                "left *len unset".to_string()
            } else {
                format!("set *len to {len}")
            };
            return Verdict::Fail(r.seq, format!("sane_read returned {} but {shown}", st(r)));
        }
    }
    verdict(judged, None)
}

fn blocking_read(cx: &Ctx<'_>) -> Verdict {
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

fn restart_after_cancel(cx: &Ctx<'_>) -> Verdict {
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

fn eof_then_cancel(cx: &Ctx<'_>) -> Verdict {
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

fn cancel_any_time(cx: &Ctx<'_>) -> Verdict {
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
fn params_after(cx: &Ctx<'_>, start: &Call) -> Option<(usize, super::ffi::Parameters)> {
    cx.calls
        .iter()
        .filter(|c| c.seq > start.seq)
        .take_while(|c| !matches!(c.op, Op::Start | Op::Cancel | Op::SignalCancel))
        .find_map(|c| c.outcome.params.map(|p| (c.seq, p)))
}

fn next_frame(cx: &Ctx<'_>) -> Verdict {
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
                    super::trace::frame_name(params.format),
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
                        super::trace::frame_name(p.format)
                    ),
                );
            }
        }
    }
    verdict(judged, None)
}

fn cancel_ends_image(cx: &Ctx<'_>) -> Verdict {
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
                    super::trace::frame_name(p.format)
                ),
            );
        }
    }
    verdict(judged, None)
}

fn io_mode(cx: &Ctx<'_>) -> Verdict {
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

fn inval_outside_scan(cx: &Ctx<'_>) -> Verdict {
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

fn select_fd(cx: &Ctx<'_>) -> Verdict {
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

fn fd_closed_at_eof(cx: &Ctx<'_>) -> Verdict {
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

fn close_cancels(cx: &Ctx<'_>) -> Verdict {
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

fn no_docs(cx: &Ctx<'_>) -> Verdict {
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

/// The first read that returned after `cancel` was called with a status other than GOOD,
/// before the next start or close was called.
fn cancelled_read<'a>(cx: &Ctx<'a>, cancel: &Call) -> Option<&'a Call> {
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
    reads.first().copied()
}

/// Whether a device note ends the device's scan, and how (`can`, `abandoned`, `completed`,
/// `halted`, `reset`, `disconnected`).
fn scan_end(d: &DeviceEvent) -> Option<&'static str> {
    match d.what.as_str() {
        "can" if d.detail != "no scan running" => Some("can"),
        "scan-abandoned" => Some("abandoned"),
        "idle" if d.detail == "last block sent" => Some("completed"),
        "halted" => Some("halted"),
        "reset" => Some("reset"),
        "disconnected" => Some("disconnected"),
        _ => None,
    }
}

/// The index of the `blocks-planned` of the device scan running at `t`, if one is.
fn device_scan_at(device: &[DeviceEvent], t: u64) -> Option<usize> {
    let start = device
        .iter()
        .rposition(|d| d.what == "blocks-planned" && d.at_us <= t)?;
    let ended = device[start + 1..]
        .iter()
        .any(|d| d.at_us <= t && scan_end(d).is_some());
    (!ended).then_some(start)
}

/// The first event at or after `from` (index) and not before `t` that ends the scan.
fn device_scan_end(device: &[DeviceEvent], from: usize, t: u64) -> Option<(usize, &DeviceEvent)> {
    device
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, d)| d.at_us >= t && scan_end(d).is_some())
}

/// The wire events (labels) from `from_us` to `to_us`, at most `max`, `…` when cut.
fn wire_between(device: &[DeviceEvent], from_us: u64, to_us: u64, max: usize) -> String {
    let labels: Vec<String> = device
        .iter()
        .filter(|d| d.is_wire() && d.at_us >= from_us && d.at_us <= to_us)
        .map(DeviceEvent::label)
        .collect();
    if labels.is_empty() {
        return "nothing".into();
    }
    let mut shown = labels[..labels.len().min(max)].join(", ");
    if labels.len() > max {
        shown.push_str(", …");
    }
    shown
}

/// For every frontend `sane_cancel` of an active frame, on a run with an emulated device: how
/// many blocks the device sent after the call until its scan ended, and how it ended.
pub fn cancel_latencies(trace: &SaneTrace) -> Vec<CancelLatency> {
    let device = &trace.device;
    if device.is_empty() {
        return Vec::new();
    }
    let scenario_free = Ctx {
        calls: &trace.calls,
        trace,
        scenario: &EMPTY_SCENARIO,
    };
    let mut out = Vec::new();
    for cancel in scenario_free.of(is_cancel) {
        if scenario_free.active_frame_at(cancel.call_us).is_none() {
            continue;
        }
        let t = cancel.call_us;
        let Some(start) = device_scan_at(device, t) else {
            out.push(CancelLatency {
                cancel_seq: cancel.seq,
                blocks: 0,
                ended_by: "finished".into(),
                after_us: None,
            });
            continue;
        };
        let end = device_scan_end(device, start + 1, t);
        let until = end.map_or(u64::MAX, |(_, d)| d.at_us);
        let blocks = device[start + 1..]
            .iter()
            .filter(|d| d.what == "block-sent" && d.at_us >= t && d.at_us <= until)
            .count();
        let ended_by = match end {
            None => "never".to_string(),
            Some((i, d)) => match scan_end(d) {
                Some("abandoned") => {
                    let by = device[i + 1..]
                        .iter()
                        .find(|c| c.what == "command")
                        .map_or_else(|| "a command".to_string(), |c| c.detail.clone());
                    format!("abandoned by {by}")
                }
                Some(how) => how.to_string(),
                None => "never".to_string(),
            },
        };
        out.push(CancelLatency {
            cancel_seq: cancel.seq,
            blocks: u32::try_from(blocks).unwrap_or(u32::MAX),
            ended_by,
            after_us: end.map(|(_, d)| d.at_us.saturating_sub(t)),
        });
    }
    out
}

static EMPTY_SCENARIO: std::sync::LazyLock<SaneScenario> =
    std::sync::LazyLock::new(|| SaneScenario {
        kind: super::scenario::Kind::Sane,
        description: String::new(),
        rules: Vec::new(),
        options: serde_json::Map::new(),
        steps: Vec::new(),
        timeout_ms: 0,
        cancel_budget_ms: 0,
        device: None,
    });

fn cancel_prompt(cx: &Ctx<'_>) -> Verdict {
    let budget_us = cx.scenario.cancel_budget_ms * 1000;
    let mut judged = false;
    for cancel in cx.of(is_cancel) {
        if cx.active_frame_at(cancel.call_us).is_none() {
            continue;
        }
        let Some(read) = cancelled_read(cx, cancel) else {
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

fn read_status_after_cancel(cx: &Ctx<'_>) -> Verdict {
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

fn device_told_to_stop(cx: &Ctx<'_>) -> Verdict {
    let device = &cx.trace.device;
    let mut judged = false;
    for cancel in cx.of(is_cancel) {
        if cx.active_frame_at(cancel.call_us).is_none() {
            continue;
        }
        let Some(start) = device_scan_at(device, cancel.call_us) else {
            continue;
        };
        let Some(read) = cancelled_read(cx, cancel) else {
            continue;
        };
        judged = true;
        let end = device_scan_end(device, start + 1, cancel.call_us);
        if end.is_none_or(|(_, d)| d.at_us > read.ret_us) {
            let last_block = device[..]
                .iter()
                .rfind(|d| d.what == "block-sent" && d.at_us < cancel.call_us)
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
                                .find(|c| c.what == "command")
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

fn device_stopped_at_close(cx: &Ctx<'_>) -> Verdict {
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

fn device_error_reported(cx: &Ctx<'_>) -> Verdict {
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
        .filter(|d| d.what == "fault" && ABORTING.contains(&d.detail.as_str()))
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

fn frame_data(cx: &Ctx<'_>) -> Verdict {
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
