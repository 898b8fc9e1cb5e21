//! One reading of a WIA 2.0 trace shared by the WIA 2.0 rules: the application's transfers,
//! the service's drvAcquireItemData calls inside them, the streams each call was given, and
//! the answers that told the driver to stop.

use std::ops::RangeInclusive;

use scanemu::engine::{FaultKind, ScanSource};
use scanemu::personality::NoteKind;

use crate::rules::analysis::{aborting_fault, device};
use crate::scenario::wia2::{Scenario2, Transfer2, UploadSource};
use crate::trace::{Actor, Event, Kind, Trace};
use crate::wia::WIA_MINIDRV_TRANSFER_UPLOAD;
use crate::wia::{Hresult, StreamMethod, TransferMsg, WIA_MINIDRV_TRANSFER_ACQUIRE_CHILDREN};

/// One drvAcquireItemData: `drv-acquire-item-data2{n}` up to its `acquire-return{n}`, or the
/// `driver-fault` or `service-restart` that ended it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Call {
    /// 1-based call number of the run.
    pub n: u32,
    /// The transfer it belongs to (1-based).
    pub transfer: u32,
    /// lFlags.
    pub flags: i32,
    /// Index of `drv-acquire-item-data2`.
    pub start: usize,
    /// Index of `acquire-return`, if the driver returned.
    pub ret: Option<usize>,
    /// What it returned.
    pub hr: Option<Hresult>,
    /// Index of the `driver-fault` that ended it (a crash or a hang).
    pub fault: Option<usize>,
    /// Index of the `service-restart` that ended it.
    pub restart: Option<usize>,
    /// Last index that belongs to the call.
    pub end: usize,
}

impl Call {
    /// Event indices inside the call.
    pub fn range(&self) -> RangeInclusive<usize> {
        self.start..=self.end
    }

    /// True for an upload.
    pub fn upload(&self) -> bool {
        self.flags & WIA_MINIDRV_TRANSFER_UPLOAD != 0
    }

    /// True when the driver transfers a folder's children in this call.
    pub fn children(&self) -> bool {
        self.flags & WIA_MINIDRV_TRANSFER_ACQUIRE_CHILDREN != 0
    }

    /// True when the driver returned (no crash, hang or restart first).
    pub fn returned(&self) -> bool {
        self.ret.is_some() && self.fault.is_none() && self.restart.is_none()
    }
}

/// One application transfer: `download` / `upload` up to `transfer-done`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Xfer {
    /// 1-based.
    pub n: u32,
    /// Index of `download` / `upload`.
    pub start: usize,
    /// Index of `transfer-done`, if the application's call returned.
    pub done: Option<usize>,
    /// What Download / Upload returned.
    pub hr: Option<Hresult>,
    /// Its calls, in order.
    pub calls: Vec<Call>,
}

/// A driver's call on an application stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Op {
    pub stream: u32,
    pub op: StreamMethod,
    pub pos: u64,
    pub actual: u64,
    pub crc: u32,
    pub expect_crc: u32,
    pub result: Hresult,
}

/// The driver's stream call at `e`, if it is one.
pub(crate) fn op(e: &Event) -> Option<Op> {
    match (&e.kind, e.actor) {
        (
            Kind::Stream {
                stream,
                op,
                pos,
                actual,
                crc,
                expect_crc,
                result,
                ..
            },
            Actor::Driver,
        ) => Some(Op {
            stream: *stream,
            op: *op,
            pos: *pos,
            actual: *actual,
            crc: *crc,
            expect_crc: *expect_crc,
            result: *result,
        }),
        _ => None,
    }
}

/// A GetNextStream the driver made: `(result, stream, sticky)`.
pub(crate) fn gns(e: &Event) -> Option<(Hresult, u32, bool)> {
    match (&e.kind, e.actor) {
        (
            Kind::GetNextStream {
                result,
                stream,
                sticky,
                ..
            },
            Actor::Service,
        ) => Some((*result, *stream, *sticky)),
        _ => None,
    }
}

/// A SendMessage the driver made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Msg {
    pub msg: TransferMsg,
    pub percent: i32,
    pub bytes: u64,
    pub status: Hresult,
    pub result: Hresult,
}

/// The SendMessage at `e`, if it is one.
pub(crate) fn msg(e: &Event) -> Option<Msg> {
    match (&e.kind, e.actor) {
        (
            Kind::SendMessage {
                msg,
                percent,
                bytes,
                status,
                result,
                ..
            },
            Actor::Service,
        ) => Some(Msg {
            msg: *msg,
            percent: *percent,
            bytes: *bytes,
            status: *status,
            result: *result,
        }),
        _ => None,
    }
}

/// The service's end of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct End {
    pub stream: u32,
    pub size: u64,
    pub crc: u32,
    pub expect_size: u64,
    pub expect_crc: u32,
}

impl End {
    /// The stream holds exactly what it should.
    pub fn whole(&self) -> bool {
        self.size == self.expect_size && self.crc == self.expect_crc
    }
}

/// The service's end of a stream at `e`, if it is one.
pub(crate) fn stream_end(e: &Event) -> Option<End> {
    match (&e.kind, e.actor) {
        (
            Kind::StreamEnd {
                stream,
                size,
                crc,
                expect_size,
                expect_crc,
            },
            Actor::Service,
        ) => Some(End {
            stream: *stream,
            size: *size,
            crc: *crc,
            expect_size: *expect_size,
            expect_crc: *expect_crc,
        }),
        _ => None,
    }
}

/// The size the stream handed out at `e` should end with (0: unknown), if `e` handed one out.
pub(crate) fn expect_size(e: &Event) -> Option<(u32, u64)> {
    match (&e.kind, e.actor) {
        (
            Kind::GetNextStream {
                stream,
                expect_size,
                ..
            },
            Actor::Service,
        ) if *stream != 0 => Some((*stream, *expect_size)),
        _ => None,
    }
}

/// The application's `cancel`.
pub(crate) fn is_app_cancel(e: &Event) -> bool {
    matches!(e.kind, Kind::Cancel { .. }) && e.actor == Actor::App
}

/// The service's `notify-cancel-io`.
pub(crate) fn is_notify(e: &Event) -> bool {
    matches!(e.kind, Kind::NotifyCancelIo {}) && e.actor == Actor::Service
}

/// An event the application records inside one of its callbacks.
fn is_app_callback(e: &Event) -> bool {
    e.actor == Actor::App
        && matches!(
            e.kind,
            Kind::TransferCallback { .. }
                | Kind::AppGetNextStream { .. }
                | Kind::ReportStatus { .. }
        )
}

/// True when the notify at `notify` comes from a Cancel the application made inside one of its
/// callbacks (the driver is inside GetNextStream or SendMessage and learns of it by the S_FALSE
/// that call returns), rather than from its second thread.
pub(crate) fn notify_in_callback(trace: &Trace, notify: usize) -> bool {
    let t = trace.events[notify].at_us;
    (0..notify)
        .rev()
        .take_while(|&i| trace.events[i].at_us == t)
        .map(|i| &trace.events[i])
        .find(|e| !is_app_cancel(e) && !matches!(e.kind, Kind::AppSeek { .. }))
        .is_some_and(is_app_callback)
}

/// Splits a trace into the application's transfers and their calls.
pub(crate) fn transfers(trace: &Trace) -> Vec<Xfer> {
    let mut out: Vec<Xfer> = Vec::new();
    let mut open_call: Option<Call> = None;
    let close = |c: Call, out: &mut Vec<Xfer>| {
        if let Some(x) = out.iter_mut().rev().find(|x| x.n == c.transfer) {
            x.calls.push(c);
        }
    };
    for (i, e) in trace.events.iter().enumerate() {
        match (&e.kind, e.actor) {
            (Kind::Download { n, .. } | Kind::Upload { n, .. }, Actor::App) => {
                out.push(Xfer {
                    n: *n,
                    start: i,
                    done: None,
                    hr: None,
                    calls: Vec::new(),
                });
            }
            (Kind::DrvAcquireItemData2 { n, flags, .. }, Actor::Service) => {
                if let Some(mut c) = open_call.take() {
                    c.end = i.saturating_sub(1).max(c.start);
                    close(c, &mut out);
                }
                open_call = Some(Call {
                    n: *n,
                    transfer: out.last().map_or(0, |x| x.n),
                    flags: *flags,
                    start: i,
                    ret: None,
                    hr: None,
                    fault: None,
                    restart: None,
                    end: i,
                });
            }
            (Kind::AcquireReturn { n, hr, .. }, Actor::Driver)
                if open_call.as_ref().is_some_and(|c| c.n == *n) =>
            {
                if let Some(mut c) = open_call.take() {
                    c.ret = Some(i);
                    c.hr = Some(*hr);
                    c.end = i;
                    close(c, &mut out);
                }
            }
            (Kind::DriverFault { .. }, Actor::Driver) => {
                if let Some(mut c) = open_call.take() {
                    c.fault = Some(i);
                    c.end = i;
                    close(c, &mut out);
                }
            }
            (Kind::ServiceRestart {}, Actor::Service) => {
                if let Some(mut c) = open_call.take() {
                    c.restart = Some(i);
                    c.end = i;
                    close(c, &mut out);
                }
            }
            (Kind::TransferDone { n, hr, .. }, Actor::App) => {
                if let Some(mut c) = open_call.take() {
                    c.end = i.saturating_sub(1).max(c.start);
                    close(c, &mut out);
                }
                if let Some(x) = out.iter_mut().rev().find(|x| x.n == *n) {
                    x.done = Some(i);
                    x.hr = Some(*hr);
                }
            }
            _ => {}
        }
    }
    if let Some(mut c) = open_call.take() {
        c.end = trace.events.len().saturating_sub(1).max(c.start);
        close(c, &mut out);
    }
    out
}

/// The streams handed to the driver in `call`, in order, with the index of the GetNextStream
/// that gave each.
pub(crate) fn given(trace: &Trace, call: &Call) -> Vec<(usize, u32)> {
    call.range()
        .filter_map(|i| {
            gns(&trace.events[i])
                .filter(|(r, s, _)| *r == Hresult::S_OK && *s != 0)
                .map(|(_, s, _)| (i, s))
        })
        .collect()
}

/// The size a stream held when the application gave it.
pub(crate) fn prefill(trace: &Trace, stream: u32) -> u64 {
    trace
        .events
        .iter()
        .find_map(|e| match (&e.kind, e.actor) {
            (
                Kind::AppGetNextStream {
                    stream: s, size, ..
                },
                Actor::App,
            ) if *s == stream => Some(*size),
            _ => None,
        })
        .unwrap_or(0)
}

/// The first answer in `call` that told the driver to stop: a GetNextStream or SendMessage
/// result of S_FALSE or a failure, `(index, result, from SendMessage)`.
pub(crate) fn first_stop(trace: &Trace, call: &Call) -> Option<(usize, Hresult, bool)> {
    call.range().find_map(|i| {
        let e = &trace.events[i];
        if let Some((r, _, _)) = gns(e) {
            return (r == Hresult::S_FALSE || r.failed()).then_some((i, r, false));
        }
        msg(e)
            .filter(|m| m.result == Hresult::S_FALSE || m.result.failed())
            .map(|m| (i, m.result, true))
    })
}

/// True when nothing in `call` interrupted the transfer: no stop, skip or failed answer, no
/// failed stream call, no cancel, no device fault.
pub(crate) fn undisturbed(trace: &Trace, call: &Call) -> bool {
    call.range().all(|i| {
        let e = &trace.events[i];
        if let Some((r, _, _)) = gns(e) {
            return r == Hresult::S_OK;
        }
        if let Some(m) = msg(e) {
            return m.result == Hresult::S_OK;
        }
        if let Some(o) = op(e) {
            return !o.result.failed();
        }
        if is_notify(e) {
            return false;
        }
        !matches!(device(e), Some((NoteKind::Fault, _, d)) if aborting_fault(d))
    })
}

/// A device fault of this kind fired inside `call`.
pub(crate) fn device_fault_in(trace: &Trace, call: &Call, kind: FaultKind) -> Option<usize> {
    call.range().find(|&i| {
        matches!(device(&trace.events[i]), Some((NoteKind::Fault, _, d)) if d.fault() == Some(kind))
    })
}

/// The number of device pages whose last band was produced inside `call`.
pub(crate) fn pages_scanned(trace: &Trace, call: &Call) -> u32 {
    call.range()
        .filter(|&i| matches!(device(&trace.events[i]), Some((NoteKind::PageEnd, _, _))))
        .count() as u32
}

/// How many images (streams, when nothing is skipped) a download call is for: folder children,
/// or feeder pages, or one.
pub(crate) fn units(trace: &Trace, call: &Call, scenario: &Scenario2) -> u32 {
    if call.children() {
        scenario.children.len() as u32
    } else if scenario.scan.source == ScanSource::Adf {
        pages_scanned(trace, call)
    } else {
        1
    }
}

/// The scenario's transfer `n`.
pub(crate) fn spec(scenario: &Scenario2, n: u32) -> Option<&Transfer2> {
    usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| scenario.transfers.get(i))
}

/// True for an upload from an empty or invalid stream.
pub(crate) fn bad_upload(t: &Transfer2) -> bool {
    matches!(t.upload, Some(UploadSource::Empty | UploadSource::Invalid))
}

/// What one transfer of a trace came to, for the H18 summary of an identical device's run:
/// `(n, what Download returned, bytes written, whole)` per transfer, with the time it ended.
pub(crate) fn transfer_summaries(trace: &Trace) -> Vec<(u64, u32, Hresult, u64, bool)> {
    let xfers = transfers(trace);
    xfers
        .iter()
        .map(|x| {
            let end = x.done.unwrap_or(trace.events.len().saturating_sub(1));
            let at = trace.events.get(end).map_or(0, |e| e.at_us);
            let bytes = match x.done.map(|d| &trace.events[d].kind) {
                Some(Kind::TransferDone { bytes, .. }) => *bytes,
                _ => 0,
            };
            let mut whole = x.done.is_some();
            for call in &x.calls {
                whole &= call.returned();
                let streams: Vec<u32> = given(trace, call).into_iter().map(|(_, s)| s).collect();
                let ends: Vec<End> = (call.start..trace.events.len())
                    .filter_map(|i| stream_end(&trace.events[i]))
                    .filter(|e| streams.contains(&e.stream))
                    .collect();
                whole &= ends.len() == streams.len() && ends.iter().all(End::whole);
            }
            (at, x.n, x.hr.unwrap_or(Hresult::E_FAIL), bytes, whole)
        })
        .collect()
}
