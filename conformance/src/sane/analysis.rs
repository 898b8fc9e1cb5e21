//! What a SANE trace says about frames and the device's scans: the facts the rules judge and
//! the cancel latency the runner measures, computed from a [`SaneTrace`] alone.
//!
//! Words used here and by the rules: a *frame is active* at time t when the last `sane_start`
//! that returned GOOD before t has not been followed by a read that returned something other
//! than GOOD, by a `sane_cancel` or by `sane_close`. A *device scan* runs from the emulated
//! scanner's `blocks-planned` note to the note that ends it ([`scan_end`]).
//!
//! This module knows no rule and no scenario: the rules ([`super::rules`]) and the runner
//! ([`super::runner`], which stores [`cancel_latencies`] with each run) both build on it.

use scanemu::personality::NoteKind;

use super::ffi::Status;
use super::trace::{Call, CancelLatency, DeviceEvent, Op, SaneTrace};

/// A `sane_cancel`, from the frontend's thread or from a signal handler.
pub fn is_cancel(c: &Call) -> bool {
    matches!(c.op, Op::Cancel | Op::SignalCancel)
}

/// A `sane_read`.
pub fn is_read(c: &Call) -> bool {
    matches!(c.op, Op::Read(_))
}

/// The status of a call as text (`GOOD`, `IO_ERROR`), `-` for void calls.
pub fn st(c: &Call) -> String {
    c.status().map_or_else(|| "-".into(), Status::name)
}

/// A trace seen as frames and device scans.
#[derive(Clone, Copy, Debug)]
pub struct TraceView<'a> {
    /// The frontend's calls, in call order (the trace's).
    pub calls: &'a [Call],
    /// The whole trace (device notes, frames).
    pub trace: &'a SaneTrace,
}

impl<'a> TraceView<'a> {
    /// A view of `trace`.
    pub fn new(trace: &'a SaneTrace) -> TraceView<'a> {
        TraceView {
            calls: &trace.calls,
            trace,
        }
    }

    /// The calls for which `f` holds, in call order.
    pub fn of<F: Fn(&Call) -> bool>(&self, f: F) -> impl Iterator<Item = &'a Call> {
        let calls: &'a [Call] = self.calls;
        calls.iter().filter(move |c| f(c))
    }

    /// The GOOD start that begins the frame active at time `t`, if one is.
    pub fn active_frame_at(&self, t: u64) -> Option<&'a Call> {
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

    /// The first `sane_start` called at or after `t`.
    pub fn next_start_after(&self, t: u64) -> Option<&'a Call> {
        self.of(|c| matches!(c.op, Op::Start) && c.call_us >= t)
            .next()
    }

    /// The last read that returned before `t` and after the last start before `t`.
    pub fn last_read_before(&self, t: u64) -> Option<&'a Call> {
        let start_ret = self
            .of(|c| matches!(c.op, Op::Start) && c.ret_us <= t)
            .last()
            .map_or(0, |s| s.ret_us);
        self.of(|c| is_read(c) && c.ret_us <= t && c.ret_us >= start_ret)
            .last()
    }

    /// The first read that returned after `cancel` was called with a status other than GOOD,
    /// before the next start or close was called.
    pub fn cancelled_read(&self, cancel: &Call) -> Option<&'a Call> {
        let limit = self
            .of(|c| matches!(c.op, Op::Start | Op::Close) && c.call_us > cancel.call_us)
            .next()
            .map_or(u64::MAX, |c| c.call_us);
        let mut reads: Vec<&Call> = self
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
}

/// Whether a device note ends the device's scan, and how (`can`, `abandoned`, `completed`,
/// `halted`, `reset`, `disconnected`).
pub fn scan_end(d: &DeviceEvent) -> Option<&'static str> {
    match d.kind {
        NoteKind::Can if d.detail != "no scan running" => Some("can"),
        NoteKind::ScanAbandoned => Some("abandoned"),
        NoteKind::Idle if d.detail == "last block sent" => Some("completed"),
        NoteKind::Halted => Some("halted"),
        NoteKind::Reset => Some("reset"),
        NoteKind::Disconnected => Some("disconnected"),
        _ => None,
    }
}

/// The index of the `blocks-planned` of the device scan running at `t`, if one is.
pub fn device_scan_at(device: &[DeviceEvent], t: u64) -> Option<usize> {
    let start = device
        .iter()
        .rposition(|d| d.kind == NoteKind::BlocksPlanned && d.at_us <= t)?;
    let ended = device[start + 1..]
        .iter()
        .any(|d| d.at_us <= t && scan_end(d).is_some());
    (!ended).then_some(start)
}

/// The first event at or after `from` (index) and not before `t` that ends the scan.
pub fn device_scan_end(
    device: &[DeviceEvent],
    from: usize,
    t: u64,
) -> Option<(usize, &DeviceEvent)> {
    device
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, d)| d.at_us >= t && scan_end(d).is_some())
}

/// The wire events (labels) from `from_us` to `to_us`, at most `max`, `…` when cut.
pub fn wire_between(device: &[DeviceEvent], from_us: u64, to_us: u64, max: usize) -> String {
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
    let view = TraceView::new(trace);
    let mut out = Vec::new();
    for cancel in view.of(is_cancel) {
        if view.active_frame_at(cancel.call_us).is_none() {
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
            .filter(|d| d.kind == NoteKind::BlockSent && d.at_us >= t && d.at_us <= until)
            .count();
        let ended_by = match end {
            None => "never".to_string(),
            Some((i, d)) => match scan_end(d) {
                Some("abandoned") => {
                    let by = device[i + 1..]
                        .iter()
                        .find(|c| c.kind == NoteKind::Command)
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
