//! The SANE trace: every call the frontend made and what the backend answered, in real time.
//!
//! Each [`Call`] has two timestamps (wall-clock microseconds since the run began): when the
//! frontend (actor `app`) called and when the backend (actor `driver`) returned. The JSON-lines
//! form keeps both events with their times; the outline ([`SaneTrace::outline`]) keeps order and
//! outcome only, collapses runs of GOOD reads (their count depends on timing) and is what the
//! insta snapshots pin.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use scanemu::personality::NoteKind;
use serde::{Deserialize, Serialize};

use super::ffi::{Parameters, Status};

mod json;

pub use self::json::{LineError, TraceParseError};

/// Which frontend thread made a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Thread {
    /// The frontend's main thread.
    App,
    /// The reader thread of a `cancel-while-blocked` step.
    Reader,
    /// The thread that cancels while the reader blocks.
    Canceller,
}

impl Thread {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Thread::App => "app",
            Thread::Reader => "reader",
            Thread::Canceller => "canceller",
        }
    }
}

/// What the frontend called.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// sane_init.
    Init,
    /// sane_open(device).
    Open(String),
    /// sane_control_option(SET_VALUE) by name; the value as written in the scenario.
    SetOption(String, String),
    /// sane_get_parameters.
    GetParameters,
    /// sane_start.
    Start,
    /// sane_read(maxlen).
    Read(u32),
    /// sane_cancel.
    Cancel,
    /// sane_cancel from a SIGUSR2 handler in the reading thread (sent by the canceller).
    SignalCancel,
    /// sane_set_io_mode(non_blocking).
    SetIoMode(bool),
    /// sane_get_select_fd.
    GetSelectFd,
    /// poll(fd, POLLIN) by the frontend.
    WaitReadable(i32),
    /// The runner's check whether a select fd is still open (fcntl F_GETFD).
    FdCheck(i32),
    /// sane_close.
    Close,
    /// sane_exit.
    Exit,
}

impl Op {
    /// The event name.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Init => "init",
            Op::Open(_) => "open",
            Op::SetOption(..) => "set-option",
            Op::GetParameters => "get-parameters",
            Op::Start => "start",
            Op::Read(_) => "read",
            Op::Cancel => "cancel",
            Op::SignalCancel => "cancel-from-signal",
            Op::SetIoMode(_) => "set-io-mode",
            Op::GetSelectFd => "get-select-fd",
            Op::WaitReadable(_) => "wait-readable",
            Op::FdCheck(_) => "fd-check",
            Op::Close => "close",
            Op::Exit => "exit",
        }
    }

    fn args_text(&self) -> String {
        match self {
            Op::Open(d) => format!(" device={d:?}"),
            Op::SetOption(n, v) => format!(" {n}={v}"),
            Op::SetIoMode(nb) => format!(" non_blocking={nb}"),
            _ => String::new(),
        }
    }
}

/// What came back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// The status (None for void calls: cancel, close, exit, fd checks).
    pub status: Option<Status>,
    /// sane_read's length, as the backend left it.
    pub len: Option<i32>,
    /// A file descriptor (get-select-fd).
    pub fd: Option<i32>,
    /// poll saw the fd readable / fd-check saw it open.
    pub flag: Option<bool>,
    /// sane_get_parameters' answer.
    pub params: Option<Parameters>,
    /// The option value the backend kept, or why an option could not be set.
    pub note: Option<String>,
}

/// One call and its return.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// Call order (0-based).
    pub seq: usize,
    /// The calling thread.
    pub thread: Thread,
    /// What was called.
    pub op: Op,
    /// When it was called (µs since the run began).
    pub call_us: u64,
    /// When it returned (µs since the run began).
    pub ret_us: u64,
    /// What came back.
    pub outcome: Outcome,
}

impl Call {
    /// The status, for calls that have one.
    pub fn status(&self) -> Option<Status> {
        self.outcome.status
    }

    /// The call and what came back, in one line: `read -> CANCELLED len=0`.
    pub fn describe(&self) -> String {
        format!(
            "{}{} -> {}",
            self.op.name(),
            self.op.args_text(),
            self.outcome_text()
        )
    }

    /// A read that returned GOOD.
    pub fn is_good_read(&self) -> bool {
        matches!(self.op, Op::Read(_)) && self.outcome.status == Some(Status::GOOD)
    }

    fn outcome_text(&self) -> String {
        let o = &self.outcome;
        let mut s = String::new();
        if let Some(st) = o.status {
            s.push_str(&st.name());
        } else {
            s.push_str("returned");
        }
        if let Some(len) = o.len {
            s.push_str(&format!(" len={len}"));
        }
        if let (Some(fd), Some(Status::GOOD)) = (o.fd, o.status) {
            s.push_str(if fd >= 0 { " fd>=0" } else { " fd<0" });
        }
        if let Some(flag) = o.flag {
            s.push_str(match self.op {
                Op::FdCheck(_) => {
                    if flag {
                        " fd-open"
                    } else {
                        " fd-closed"
                    }
                }
                _ => {
                    if flag {
                        " readable"
                    } else {
                        " not-readable"
                    }
                }
            });
        }
        if let Some(p) = &o.params {
            s.push_str(&format!(
                " format={} last_frame={} bytes_per_line={} lines={} depth={}",
                frame_name(p.format),
                p.last_frame,
                p.bytes_per_line,
                p.lines,
                p.depth
            ));
        }
        if let Some(n) = &o.note {
            s.push_str(&format!(" ({n})"));
        }
        s
    }
}

/// `GRAY`, `RGB`, `RED`, `GREEN`, `BLUE` or the number.
pub fn frame_name(format: i32) -> String {
    match format {
        0 => "GRAY".into(),
        1 => "RGB".into(),
        2 => "RED".into(),
        3 => "GREEN".into(),
        4 => "BLUE".into(),
        n => n.to_string(),
    }
}

/// A note of the emulated scanner (actor `device`), on the trace's clock: what the device
/// saw and did on the wire (command, param, nak-sent, blocks-planned, block-sent, ack, can,
/// scan-abandoned, start-deferred, …) and in its engine (band-ready, motor-stopped,
/// scan-complete, fault, halted, …), typed by its [`NoteKind`]. See
/// `scanemu::personality::DeviceNote`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceEvent {
    /// When (µs since the run began).
    pub at_us: u64,
    /// What the note is.
    pub kind: NoteKind,
    /// Block number, command letter, count: depends on `kind`.
    pub value: u64,
    /// The note's detail as traces show it, possibly empty (a command's name for `command`).
    pub detail: String,
}

impl DeviceEvent {
    /// One short deterministic description: `block-sent #3`, `command FS G`, `can`, …
    pub fn label(&self) -> String {
        let name = self.kind.name();
        match self.kind {
            NoteKind::Command => format!("command {}", self.detail),
            NoteKind::Ack | NoteKind::Can => {
                if self.detail.is_empty() {
                    name.to_string()
                } else {
                    format!("{name} ({})", self.detail)
                }
            }
            NoteKind::BlockSent => format!("block-sent #{}", self.value),
            NoteKind::BlocksPlanned => format!("blocks-planned {}", self.value),
            NoteKind::Fault
            | NoteKind::NakSent
            | NoteKind::StartRefused
            | NoteKind::StartDeferred => format!("{name} ({})", self.detail),
            NoteKind::MotorStopped => format!("motor-stopped (bands discarded {})", self.value),
            _ => name.to_string(),
        }
    }

    /// Whether the event is part of the wire conversation or a state change the device
    /// reports in the same order on every run (band-ready and similar engine timing events are
    /// not: they depend on the wall clock).
    pub fn is_wire(&self) -> bool {
        matches!(
            self.kind,
            NoteKind::Command
                | NoteKind::Param
                | NoteKind::NakSent
                | NoteKind::BlocksPlanned
                | NoteKind::BlockSent
                | NoteKind::Ack
                | NoteKind::Can
                | NoteKind::ScanAbandoned
                | NoteKind::StartRefused
                | NoteKind::Fault
                | NoteKind::Halted
                | NoteKind::HaltCleared
                | NoteKind::Reset
                | NoteKind::Disconnected
        )
    }
}

/// The blocks the device sent after one frontend `sane_cancel` of an active frame, until it
/// was told to stop (or stopped by itself, or never was). Serialized (`--format json`, verdict
/// files) with the call as `cancel_call`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelLatency {
    /// The `sane_cancel` call (its seq).
    #[serde(rename = "cancel_call")]
    pub cancel_seq: usize,
    /// Blocks sent (`block-sent`) after sane_cancel was called, up to the end below.
    pub blocks: u32,
    /// How the device's scan ended: `can` (CAN on the wire), `abandoned: <command>` (a later
    /// command made the device leave the scan), `completed` (its last block went out),
    /// `halted`, `finished` (its scan had ended before sane_cancel), or `never` (still
    /// scanning when the run ended).
    pub ended_by: String,
    /// Microseconds from the sane_cancel call to that end (None for `never`).
    pub after_us: Option<u64>,
}

impl CancelLatency {
    /// `1 block, then CAN`.
    pub fn summary(&self) -> String {
        let blocks = if self.blocks == 1 {
            "1 block".to_string()
        } else {
            format!("{} blocks", self.blocks)
        };
        let end = match self.ended_by.as_str() {
            "can" => "then CAN".to_string(),
            "never" => "device never told".to_string(),
            "finished" => "the device had finished".to_string(),
            other => format!("then {other}"),
        };
        format!("{blocks}, {end}")
    }
}

/// A frame the frontend read to EOF, compared with what the emulated device scanned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameCheck {
    /// The read that returned EOF.
    pub eof_seq: usize,
    /// Bytes the frontend received in the frame.
    pub bytes: u64,
    /// bytes_per_line × lines from sane_get_parameters.
    pub expected: u64,
    /// The first byte (offset in the frame) that differs from the device's test pattern.
    pub first_mismatch: Option<u64>,
}

/// A finished trace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SaneTrace {
    /// Calls in call order.
    pub calls: Vec<Call>,
    /// The emulated device's notes, in time order (empty for backends without a device).
    pub device: Vec<DeviceEvent>,
    /// Frames read to EOF from an emulated device, checked against its pattern.
    pub frames: Vec<FrameCheck>,
}

impl SaneTrace {
    /// The order-and-outcome view, one line per call in call order, without times. Runs of
    /// GOOD reads become one `read -> GOOD…` line; when such a run ends in EOF after a
    /// `start`, it also shows the frame's byte total (which does not depend on timing).
    pub fn outline(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut run: Option<(u64, bool)> = None; // (bytes, began right after start)
        let mut after_start = false;
        for c in &self.calls {
            if c.is_good_read() {
                let len = u64::try_from(c.outcome.len.unwrap_or(0)).unwrap_or(0);
                run = Some(match run {
                    Some((b, s)) => (b + len, s),
                    None => (len, after_start),
                });
                after_start = false;
                continue;
            }
            if let Some((bytes, from_start)) = run.take() {
                let ends_frame = matches!(c.op, Op::Read(_)) && c.status() == Some(Status::EOF);
                if ends_frame && from_start {
                    lines.push(format!("read -> GOOD… frame bytes={bytes}"));
                } else {
                    lines.push("read -> GOOD…".to_string());
                }
            }
            after_start = matches!(c.op, Op::Start) && c.status() == Some(Status::GOOD);
            let who = if c.thread == Thread::App {
                String::new()
            } else {
                format!("[{}] ", c.thread.name())
            };
            lines.push(format!(
                "{who}{}{} -> {}",
                c.op.name(),
                c.op.args_text(),
                c.outcome_text()
            ));
        }
        if run.is_some() {
            lines.push("read -> GOOD…".to_string());
        }
        lines
    }

    /// The device's side for snapshots: its wire events in order ([`DeviceEvent::is_wire`]),
    /// each `block-sent` with the `ack` that follows it folded into one `blocks a..b sent,
    /// acked` line, then one `cancel-latency` line per entry of `latency` (the run's cancel
    /// latencies). Empty when the run had no emulated device.
    pub fn device_outline(&self, latency: &[CancelLatency]) -> Vec<String> {
        let mut lines = Vec::new();
        let mut run: Option<(u64, u64)> = None; // blocks sent and acked, first..=last
        let flush = |run: &mut Option<(u64, u64)>, lines: &mut Vec<String>| {
            if let Some((a, b)) = run.take() {
                lines.push(if a == b {
                    format!("block-sent #{a}, ack")
                } else {
                    format!("blocks #{a}..#{b} sent, each acked")
                });
            }
        };
        let wire: Vec<&DeviceEvent> = self.device.iter().filter(|d| d.is_wire()).collect();
        let mut i = 0;
        while i < wire.len() {
            let d = wire[i];
            let acked = d.kind == NoteKind::BlockSent
                && wire
                    .get(i + 1)
                    .is_some_and(|n| n.kind == NoteKind::Ack && n.detail.is_empty());
            if acked {
                run = Some(match run {
                    Some((a, b)) if b + 1 == d.value => (a, d.value),
                    Some(_) => {
                        flush(&mut run, &mut lines);
                        (d.value, d.value)
                    }
                    None => (d.value, d.value),
                });
                i += 2;
                continue;
            }
            flush(&mut run, &mut lines);
            lines.push(d.label());
            i += 1;
        }
        flush(&mut run, &mut lines);
        for l in latency {
            lines.push(format!(
                "cancel-latency (cancel call {}): {}",
                l.cancel_seq,
                l.summary()
            ));
        }
        lines
    }

    /// The call at `seq` with some context, for failure details: `before` calls before it.
    pub fn context(&self, seq: usize, before: usize) -> Vec<String> {
        let lo = seq.saturating_sub(before);
        self.calls
            .iter()
            .filter(|c| c.seq >= lo && c.seq <= seq)
            .map(|c| {
                format!(
                    "{:>9} us {:<9} {}{}",
                    c.call_us,
                    c.thread.name(),
                    c.describe(),
                    if c.seq == seq { "   <== here" } else { "" }
                )
            })
            .collect()
    }
}

/// Records calls from several threads; call order is the order `begin` was reached.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    calls: Arc<Mutex<(Vec<Call>, u64)>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            calls: Arc::new(Mutex::new((Vec::new(), 0))),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<Call>, u64)> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A timestamp later than every one handed out before (ties move on by 1 µs), so that
    /// time order and event order never disagree.
    fn stamp(&self, last: &mut u64) -> u64 {
        let t = self.now_us().max(*last + 1);
        *last = t;
        t
    }

    /// Notes a call about to be made; returns its sequence number.
    pub fn begin(&self, thread: Thread, op: Op) -> usize {
        let mut guard = self.lock();
        let (calls, last) = &mut *guard;
        let seq = calls.len();
        let now = self.stamp(last);
        calls.push(Call {
            seq,
            thread,
            op,
            call_us: now,
            ret_us: now,
            outcome: Outcome::default(),
        });
        seq
    }

    /// Notes that call `seq` returned with `outcome`.
    pub fn end(&self, seq: usize, outcome: Outcome) {
        let mut guard = self.lock();
        let (calls, last) = &mut *guard;
        let now = self.stamp(last);
        if let Some(c) = calls.get_mut(seq) {
            c.ret_us = now;
            c.outcome = outcome;
        }
    }

    /// The most recent call: its name, its thread and how long ago it began (µs).
    pub fn last_call(&self) -> Option<(&'static str, Thread, u64)> {
        let now = self.now_us();
        let guard = self.lock();
        guard
            .0
            .last()
            .map(|c| (c.op.name(), c.thread, now.saturating_sub(c.call_us)))
    }

    /// Microseconds since `begin` of call `seq` (0 if unknown), while it is still running.
    pub fn pending_us(&self, seq: usize) -> u64 {
        let now = self.now_us();
        let guard = self.lock();
        guard
            .0
            .get(seq)
            .map_or(0, |c| now.saturating_sub(c.call_us))
    }

    /// The trace so far.
    pub fn finish(&self) -> SaneTrace {
        SaneTrace {
            calls: self.lock().0.clone(),
            ..SaneTrace::default()
        }
    }

    /// The instant the trace's clock counts from (a device's notes are put on it).
    pub fn epoch(&self) -> Instant {
        self.start
    }
}
