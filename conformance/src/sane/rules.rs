//! The SANE rule catalogue: what a backend must do around `sane_cancel`, each rule with the
//! sentence of the SANE standard (1.06, reference §3) it rests on, checked over a [`SaneTrace`].
//!
//! The catalogue is data (ID, statement, quote, source, what the check looks at); the checks,
//! one function per rule, are in `rules/checks.rs` and read the trace through
//! [`super::analysis`] (active frames, device scans). Times are the trace's call/return times;
//! every comparison is between calls the script orders (a read blocked for tens of milliseconds
//! before the cancel), so verdicts do not depend on scheduling.
//!
//! The results are [`crate::verdict`] types, shared with the WIA catalogue; nothing here
//! imports the WIA rules.

mod checks;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;

use crate::verdict::{RuleResult, RuleStatus};

use self::checks::{Ctx, Verdict};
use super::scenario::SaneScenario;
use super::trace::SaneTrace;

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

const SRC_CANCEL: &str = "SANE Standard 1.06, sane_cancel (doc/sane.tex; reference §3.2)";
const SRC_READ: &str = "SANE Standard 1.06, sane_read (reference §3.2)";
const SRC_START: &str = "SANE Standard 1.06, sane_start (reference §3.2)";
const SRC_FLOW: &str = "SANE Standard 1.06, Code Flow (reference §3.2)";
const SRC_IO: &str = "SANE Standard 1.06, sane_set_io_mode (reference §3.2)";
const SRC_FD: &str = "SANE Standard 1.06, sane_get_select_fd (reference §3.2)";
const SRC_CLOSE: &str = "SANE Standard 1.06, sane_close (reference §3.2)";

const Q_CANCELLED: &str = "Cancellation completes only when the cancelled call returns (typically with a status value of SANE_STATUS_CANCELLED).";

static CATALOG: [SaneRule; 23] = [
    SaneRule {
        id: "SANE-CANCEL-STATUS",
        statement: "after sane_cancel during a frame, the cancelled (or next) sane_read returns SANE_STATUS_CANCELLED",
        quote: Q_CANCELLED,
        source: SRC_CANCEL,
        looks_at: "For each sane_cancel called while a frame was active, the first read that returned after the cancel was called with a status other than GOOD (a read in flight may still deliver data: cancel only initiates); it must be CANCELLED.",
        check: checks::cancel_status,
    },
    SaneRule {
        id: "SANE-NO-GOOD-AFTER-CANCEL",
        statement: "no sane_read started after sane_cancel returned delivers GOOD before the next sane_start",
        quote: Q_CANCELLED,
        source: "SANE Standard 1.06, sane_cancel (reference §3.2); the check is tstbackend's \"after each cancel a read must not return GOOD\" (reference §5)",
        looks_at: "Reads called after a sane_cancel returned and before the next sane_start.",
        check: checks::no_good_after_cancel,
    },
    SaneRule {
        id: "SANE-LEN-ZERO-ON-ERROR",
        statement: "sane_read sets *len to 0 whenever it returns a status other than GOOD",
        quote: "A backend must set this to zero when a status other than SANE_STATUS_GOOD is returned.",
        source: SRC_READ,
        looks_at: "Every read with a status other than GOOD; the runner pre-sets *len to -7777 so an untouched length shows.",
        check: checks::len_zero,
    },
    SaneRule {
        id: "SANE-BLOCKING-READ",
        statement: "in blocking mode a GOOD sane_read returns between 1 and maxlen bytes; in non-blocking mode between 0 and maxlen",
        quote: "the call blocks until at least one data byte is available (or until some error occurs)",
        source: SRC_READ,
        looks_at: "Every GOOD read; the io mode is the last set-io-mode that returned GOOD since the frame's start (blocking after sane_start).",
        check: checks::blocking_read,
    },
    SaneRule {
        id: "SANE-RESTART-AFTER-CANCEL",
        statement: "after sane_cancel has returned, the next sane_start succeeds and the frame reads to EOF",
        quote: "Once all desired frames have been acquired, function sane_cancel() must be called.",
        source: "SANE Standard 1.06, Code Flow (reference §3.2): sane_cancel ends the acquisition and the handle is ready for sane_start; \"think of sane_cancel() as sane_stop()\" (D. Mosberger, quoted in backend/hp3500.c, reference §3.3)",
        looks_at: "The first sane_start after each sane_cancel: it must return GOOD (NO_DOCS is accepted when the feeder is empty), and reads of that frame must end in EOF, not in an error or CANCELLED.",
        check: checks::restart_after_cancel,
    },
    SaneRule {
        id: "SANE-EOF-THEN-CANCEL",
        statement: "sane_cancel after the last frame's EOF is harmless: it returns and the next sane_start succeeds",
        quote: "Note that sane_cancel() must be called even if the last read operation returned SANE_STATUS_EOF.",
        source: SRC_FLOW,
        looks_at: "Each sane_cancel whose preceding read returned EOF: the next sane_start must return GOOD.",
        check: checks::eof_then_cancel,
    },
    SaneRule {
        id: "SANE-CANCEL-ANY-TIME",
        statement: "sane_cancel may be called at any time with a valid handle and returns promptly (within the scenario's cancel budget)",
        quote: "This function can be called at any time (as long as handle h is a valid handle) but usually affects long-running operations only.",
        source: SRC_CANCEL,
        looks_at: "The time from each sane_cancel call to its return, against cancel_budget_ms (5000 by default).",
        check: checks::cancel_any_time,
    },
    SaneRule {
        id: "SANE-NEXT-FRAME",
        statement: "after EOF of a frame that is not the last, sane_start starts the next frame",
        quote: "If the frontend expects additional frames (e.g., the individual channels in of a red/green/blue image or multiple images), it can call sane_start() again.",
        source: SRC_FLOW,
        looks_at: "A sane_start following EOF of a frame whose parameters said last_frame=false, with no cancel between: it must return GOOD and its parameters must name a different frame.",
        check: checks::next_frame,
    },
    SaneRule {
        id: "SANE-NEXT-IMAGE",
        statement: "after EOF of an image's last frame, a sane_start without sane_cancel starts another image (GOOD, or NO_DOCS from an empty feeder) that reads to EOF",
        quote: "If the frontend expects additional frames (e.g., the individual channels in of a red/green/blue image or multiple images), it can call sane_start() again.",
        source: SRC_FLOW,
        looks_at: "A sane_start following EOF of a frame whose parameters said last_frame=true, with no sane_cancel between (\"multiple images\": the ADF convention of sane-cancel-bugs §3.3, and frontends that forget the final cancel, reference C15-C17): it must return GOOD (NO_DOCS when a source is set), and its frame must end in EOF unless cancelled.",
        check: checks::next_image,
    },
    SaneRule {
        id: "SANE-CANCEL-ENDS-IMAGE",
        statement: "after sane_cancel, the next image starts at its first frame (not at the next channel of a multi-pass image)",
        quote: "Once all desired frames have been acquired, function sane_cancel() must be called.",
        source: SRC_FLOW,
        looks_at: "get-parameters after the first successful sane_start that follows a sane_cancel: format must be GRAY, RGB or RED (the first pass), never GREEN or BLUE.",
        check: checks::cancel_ends_image,
    },
    SaneRule {
        id: "SANE-IO-MODE",
        statement: "during an acquisition sane_set_io_mode(FALSE) returns GOOD; sane_set_io_mode(TRUE) returns GOOD or UNSUPPORTED",
        quote: "calling this function with argument m set to SANE_FALSE is guaranteed to complete successfully.",
        source: SRC_IO,
        looks_at: "set-io-mode calls while a frame is active.",
        check: checks::io_mode,
    },
    SaneRule {
        id: "SANE-INVAL-OUTSIDE-SCAN",
        statement: "sane_set_io_mode and sane_get_select_fd return INVAL (or UNSUPPORTED) when no acquisition is pending",
        quote: "No image acquisition is pending.",
        source: "SANE Standard 1.06, sane_set_io_mode and sane_get_select_fd, status SANE_STATUS_INVAL (reference §3.2)",
        looks_at: "set-io-mode and get-select-fd calls made before any sane_start or after a sane_cancel (and before the next start).",
        check: checks::inval_outside_scan,
    },
    SaneRule {
        id: "SANE-SELECT-FD",
        statement: "during a frame sane_get_select_fd returns GOOD with a file descriptor (or UNSUPPORTED), and the descriptor turns readable while data is pending",
        quote: "until sane_cancel() or sane_start() get called again or until sane_read() returns with status SANE_STATUS_EOF",
        source: SRC_FD,
        looks_at: "get-select-fd calls while a frame is active (GOOD needs fd >= 0) and wait-readable polls on that fd before the frame's EOF (must report readable within the step's timeout).",
        check: checks::select_fd,
    },
    SaneRule {
        id: "SANE-SELECT-FD-CLOSED-AT-EOF",
        statement: "the backend closes the select file descriptor when sane_read returns EOF",
        quote: "a backend must guarantee to close the returned select file descriptor at the point when the next sane_read() call would return SANE_STATUS_EOF.",
        source: SRC_FD,
        looks_at: "The runner's fd-check right after a read returned EOF in a frame whose select fd the frontend obtained: the fd must be closed.",
        check: checks::fd_closed_at_eof,
    },
    SaneRule {
        id: "SANE-CLOSE-CANCELS",
        statement: "sane_close on an active device cancels the acquisition first (its select fd is closed)",
        quote: "If the device is presently active, a call to sane_cancel() is performed first.",
        source: SRC_CLOSE,
        looks_at: "The runner's fd-check right after sane_close of a handle with an active frame whose select fd the frontend obtained: the fd must be closed, as sane_cancel would have done.",
        check: checks::close_cancels,
    },
    SaneRule {
        id: "SANE-REOPEN-AFTER-CLOSE",
        statement: "after sane_close, whatever the device was doing, sane_open and sane_start succeed and the frame reads to EOF",
        quote: "If the device is presently active, a call to sane_cancel() is performed first.",
        source: SRC_CLOSE,
        looks_at: "Each sane_close followed by sane_open: the open must return GOOD, and the first sane_start after it GOOD with its frame ending in EOF unless cancelled. A close that cancels first leaves the device ready for the next session (reference C10, C12, C17: closes after a cancel, during a scan, or after EOF without the final cancel).",
        check: checks::reopen_after_close,
    },
    SaneRule {
        id: "SANE-NO-DOCS",
        statement: "when the feeder is empty sane_start (or sane_read) reports NO_DOCS with no data, and after sane_cancel the next batch starts",
        quote: "The document feeder is out of documents.",
        source: SRC_START,
        looks_at: "Each NO_DOCS status: reads after it (before the next GOOD start) must not return GOOD; a read's NO_DOCS comes with len 0; a sane_start after the following sane_cancel must return GOOD.",
        check: checks::no_docs,
    },
    SaneRule {
        id: "SANE-CANCEL-PROMPT",
        statement: "once sane_cancel has been called during a frame, the cancelled read (the one blocked at that moment, or the next one) returns within the scenario's cancel budget",
        quote: "It is safe to call this function asynchronously (e.g., from within a signal handler). [...] Cancellation completes only when the cancelled call returns (typically with a status value of SANE_STATUS_CANCELLED).",
        source: SRC_CANCEL,
        looks_at: "For each sane_cancel while a frame was active, the first read that returned afterwards with a status other than GOOD: the time from the later of the cancel call and the read call to the read's return, against cancel_budget_ms. With an emulated device the failure names the wire traffic in between.",
        check: checks::cancel_prompt,
    },
    SaneRule {
        id: "SANE-READ-STATUS-AFTER-CANCEL",
        statement: "after sane_read returned CANCELLED, further sane_read calls of that frame return a status sane_read is specified to return (CANCELLED again, EOF, ...), not INVAL",
        quote: "SANE_STATUS_CANCELLED, SANE_STATUS_EOF, SANE_STATUS_JAMMED, SANE_STATUS_NO_DOCS, SANE_STATUS_COVER_OPEN, SANE_STATUS_IO_ERROR, SANE_STATUS_NO_MEM, SANE_STATUS_ACCESS_DENIED",
        source: "SANE Standard 1.06, sane_read, its list of failure statuses (reference §3.2): SANE_STATUS_INVAL is not among them",
        looks_at: "Reads called after a read returned CANCELLED and before the next sane_start; GOOD is left to SANE-NO-GOOD-AFTER-CANCEL. Not judged when no read follows a CANCELLED one.",
        check: checks::read_status_after_cancel,
    },
    SaneRule {
        id: "SANE-DEVICE-TOLD-TO-STOP",
        statement: "when the read cancelled by sane_cancel returns, the scanner has been told to stop: CAN went on the wire (or its scan had already ended)",
        quote: Q_CANCELLED,
        source: "SANE Standard 1.06, sane_cancel (reference §3.2); on the wire, ESC/I's only way to stop a running scan is CAN in place of a block's ACK: ESC/I Reference Manual (Epson, 1995): \"ESC G → data block → ACK … CAN (abort scanning) → ACK\" (reference escI-epson2-brief.md §4)",
        looks_at: "Emulated device only (not judged otherwise). For each sane_cancel while both the frame and the device's scan were active, the first read returning afterwards with a status other than GOOD: by its return the device's scan must have ended (can, scan-abandoned, its last block sent, halted).",
        check: checks::device_told_to_stop,
    },
    SaneRule {
        id: "SANE-DEVICE-STOPPED-AT-CLOSE",
        statement: "sane_close of a device that is scanning stops the scanner before it returns (a cancel is performed first, and reaches the device)",
        quote: "If the device is presently active, a call to sane_cancel() is performed first.",
        source: SRC_CLOSE,
        looks_at: "Emulated device only (not judged otherwise). Each sane_close called while the frame and the device's scan were active: by its return the device's scan must have ended. The ESC/I stop is CAN (escI brief §4).",
        check: checks::device_stopped_at_close,
    },
    SaneRule {
        id: "SANE-DEVICE-ERROR-REPORTED",
        statement: "when the scanner aborts a scan by itself (its Cancel button, a jam, a stall), the frame's reads end in a status other than GOOD and EOF: a partial image is never reported complete",
        quote: "No more data is available for the current frame.",
        source: "SANE Standard 1.06, sane_read, SANE_STATUS_EOF (reference §3.2); the device side: an extended ESC/I block's status byte 0x10 (cancel request) or 0x80 (fatal error), a halted bulk endpoint (escI-epson2-brief.md §3.2, §4)",
        looks_at: "Emulated device only (not judged otherwise). Each aborting device fault (cancel-button, paper-jam, cover-open, stall, disconnect) during an active frame: the first read of that frame returning a status other than GOOD after the fault must not be EOF.",
        check: checks::device_error_reported,
    },
    SaneRule {
        id: "SANE-FRAME-DATA",
        statement: "a frame read to EOF carries bytes_per_line × lines bytes, equal to the image the scanner sent",
        quote: "No more data is available for the current frame.",
        source: "SANE Standard 1.06, sane_read, SANE_STATUS_EOF (reference §3.2); sane_get_parameters gives bytes_per_line and lines",
        looks_at: "Emulated device only (not judged otherwise). Each frame read to EOF by the frontend's own thread: its byte count against get-parameters, its bytes against the emulator's test pattern (scanemu::engine::pattern_line).",
        check: checks::frame_data,
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
    let ctx = Ctx::new(trace, scenario);
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
