//! One reading of a trace shared by every rule: acquisitions, cancel points, the device's state
//! after each event, and the USB facts rules ask about.
//!
//! Everything here is derived from the trace alone (plus the run facts); no rule looks at the
//! raw events without going through these helpers when a helper exists, so that "cancel point",
//! "device busy" and "cancel on the wire" mean the same thing in every rule.

use std::ops::RangeInclusive;

use scanemu::engine::FaultKind;
use scanemu::personality::native::protocol::{
    DeviceStatus, REQ_CANCEL, REQ_DEVICE_RESET, REQ_START_SCAN, STATUS_OK,
    STATUS_TRANSACTION_CANCELLED,
};
use scanemu::personality::NoteKind;

use super::RunFacts;
use crate::trace::{Actor, ControlReply, DeviceDetail, Event, Kind, Trace, TransferOutcome};
use crate::wia::{Hresult, ItMsg};

/// Virtual-time slack for WIA_EVENT_CANCEL_IO: a cancel must be on the wire within this.
pub(crate) const CANCEL_IO_WIRE_US: u64 = 10_000;
/// Slack added to the motor stop time for the idle-after-cancel budget.
pub(crate) const IDLE_SLACK_US: u64 = 50_000;
/// Slack after the device stopped for a cancelled acquisition's return (WIA-CANCEL-RETURN).
pub(crate) const RETURN_SLACK_US: u64 = 50_000;
/// The shortest interval WIA-CADENCE asks callbacks to come at: a transfer shorter than a
/// second still needs no more than ten callbacks a second.
pub(crate) const CADENCE_FLOOR_US: u64 = 100_000;

/// One acquisition: `DrvAcquireItemData{n}` (WIA 2.0: `DrvAcquireItemData2{n}`) up to its
/// `AcquireReturn{n}` (or the `DriverFault` or WIA 2.0 `ServiceRestart` that ended it, or the
/// event before the next acquisition, or the end of the trace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Acq {
    /// 1-based acquisition number.
    pub n: u32,
    /// Index of `DrvAcquireItemData`.
    pub start: usize,
    /// Index of `AcquireReturn`, if the driver returned.
    pub ret: Option<usize>,
    /// Index of the `DriverFault` that ended it, if any.
    pub fault: Option<usize>,
    /// Last index that belongs to the acquisition (inclusive).
    pub end: usize,
}

impl Acq {
    /// Event indices inside the acquisition.
    pub fn range(&self) -> RangeInclusive<usize> {
        self.start..=self.end
    }

    /// What drvAcquireItemData returned, if it returned.
    pub fn hr(&self, trace: &Trace) -> Option<Hresult> {
        match self.ret.map(|i| &trace.events[i].kind) {
            Some(Kind::AcquireReturn { hr, .. }) => Some(*hr),
            _ => None,
        }
    }

    /// True if `i` lies inside the acquisition.
    pub fn contains(&self, i: usize) -> bool {
        self.range().contains(&i)
    }
}

/// Splits a trace into acquisitions, in order.
pub(crate) fn acquisitions(trace: &Trace) -> Vec<Acq> {
    let mut out: Vec<Acq> = Vec::new();
    let mut open: Option<Acq> = None;
    for (i, e) in trace.events.iter().enumerate() {
        match (&e.kind, e.actor) {
            (
                Kind::DrvAcquireItemData { n } | Kind::DrvAcquireItemData2 { n, .. },
                Actor::Service,
            ) => {
                if let Some(mut a) = open.take() {
                    a.end = i.saturating_sub(1).max(a.start);
                    out.push(a);
                }
                open = Some(Acq {
                    n: *n,
                    start: i,
                    ret: None,
                    fault: None,
                    end: i,
                });
            }
            (Kind::AcquireReturn { n, .. }, Actor::Driver)
                if open.as_ref().is_some_and(|a| a.n == *n) =>
            {
                if let Some(mut a) = open.take() {
                    a.ret = Some(i);
                    a.end = i;
                    out.push(a);
                }
            }
            (Kind::DriverFault { .. }, Actor::Driver)
            | (Kind::ServiceRestart {}, Actor::Service) => {
                if let Some(mut a) = open.take() {
                    a.fault = Some(i);
                    a.end = i;
                    out.push(a);
                }
            }
            _ => {}
        }
    }
    if let Some(mut a) = open.take() {
        a.end = trace.events.len().saturating_sub(1).max(a.start);
        out.push(a);
    }
    out
}

/// The fields of a `Callback` event that rules read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cb {
    pub msg: ItMsg,
    pub percent: i32,
    pub offset: i64,
    pub length: i64,
    /// Bytes the callback carried (`length` unless the trace says otherwise).
    pub carried: i64,
    pub page: u32,
    pub crc: u32,
    pub expect_crc: u32,
    pub result: Hresult,
    pub sticky: bool,
}

/// The callback recorded at `e`, if it is one (actor Service).
pub(crate) fn callback(e: &Event) -> Option<Cb> {
    match (&e.kind, e.actor) {
        (
            Kind::Callback {
                msg,
                percent,
                offset,
                length,
                carried,
                page,
                crc,
                expect_crc,
                result,
                sticky,
                ..
            },
            Actor::Service,
        ) => Some(Cb {
            msg: *msg,
            percent: *percent,
            offset: *offset,
            length: *length,
            carried: carried.map_or(*length, |c| i64::try_from(c).unwrap_or(i64::MAX)),
            page: *page,
            crc: *crc,
            expect_crc: *expect_crc,
            result: *result,
            sticky: *sticky,
        }),
        _ => None,
    }
}

/// What a WIA 2.0 driver got back from `GetNextStream` or `SendMessage` at `e`, if `e` is one
/// of those calls: the cancel points of a WIA 2.0 call, as callbacks are for WIA 1.0.
pub(crate) fn wia2_callback_result(e: &Event) -> Option<Hresult> {
    match (&e.kind, e.actor) {
        (Kind::GetNextStream { result, .. } | Kind::SendMessage { result, .. }, Actor::Service) => {
            Some(*result)
        }
        _ => None,
    }
}

/// The IT_MSG_DATA callback recorded at `e`, if it is one.
pub(crate) fn data_callback(e: &Event) -> Option<Cb> {
    callback(e).filter(|c| c.msg == ItMsg::Data)
}

/// True when a callback result tells the driver to stop: S_FALSE or a failure code.
pub(crate) fn stops(result: Hresult) -> bool {
    result == Hresult::S_FALSE || !result.succeeded()
}

/// The service delivered WIA_EVENT_CANCEL_IO.
pub(crate) fn is_notify(e: &Event) -> bool {
    matches!(e.kind, Kind::NotifyCancelIo {}) && e.actor == Actor::Service
}

/// The application called CancelPendingIO.
pub(crate) fn is_app_cancel(e: &Event) -> bool {
    matches!(e.kind, Kind::CancelPendingIo { .. }) && e.actor == Actor::App
}

/// A device event: `(what, value, detail)`.
pub(crate) fn device(e: &Event) -> Option<(NoteKind, u64, &DeviceDetail)> {
    match &e.kind {
        Kind::Device {
            what,
            value,
            detail,
            ..
        } => Some((*what, *value, detail)),
        _ => None,
    }
}

/// The kind of device note `e` is, if it is one.
pub(crate) fn note(e: &Event) -> Option<NoteKind> {
    device(e).map(|(what, _, _)| what)
}

/// A `fault` note whose fault ends the device's job: all but a late band, a slow ACK and the
/// cancel-handling faults (`slow-cancel`, `ignore-cancel`), which leave the job running. A fault
/// the trace does not name (a hand-written trace) counts as aborting.
pub(crate) fn aborting_fault(detail: &DeviceDetail) -> bool {
    !matches!(
        detail.fault(),
        Some(
            FaultKind::LateBand
                | FaultKind::SlowAck
                | FaultKind::SlowCancel
                | FaultKind::IgnoreCancel
        )
    )
}

/// What a cancel point is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CpKind {
    /// A callback returned S_FALSE (the application's, or vista's sticky one).
    SFalse,
    /// A callback returned this failure code.
    Error(Hresult),
    /// The service delivered WIA_EVENT_CANCEL_IO.
    Notify,
    /// A device-initiated cancel: the Cancel button or a short band.
    DeviceCancel,
    /// Another aborting device fault (its detail, as the trace shows it).
    DeviceFault(String),
}

/// A cancel point inside an acquisition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cp {
    pub idx: usize,
    pub at: u64,
    pub kind: CpKind,
}

/// Every cancel point of an acquisition, in trace order.
pub(crate) fn cancel_points(trace: &Trace, acq: &Acq) -> Vec<Cp> {
    let mut out = Vec::new();
    for i in acq.range() {
        let e = &trace.events[i];
        let kind = if let Some(result) = wia2_callback_result(e) {
            if result == Hresult::S_FALSE {
                Some(CpKind::SFalse)
            } else if !result.succeeded() {
                Some(CpKind::Error(result))
            } else {
                None
            }
        } else if let Some(cb) = callback(e) {
            if cb.result == Hresult::S_FALSE {
                Some(CpKind::SFalse)
            } else if !cb.result.succeeded() {
                Some(CpKind::Error(cb.result))
            } else {
                None
            }
        } else if is_notify(e) {
            Some(CpKind::Notify)
        } else {
            match device(e) {
                Some((NoteKind::Fault, _, detail)) if aborting_fault(detail) => {
                    // The Cancel button, or a short band: "the device is allowed to cancel an
                    // operation at any time by returning less data than the host is expecting"
                    // (reference §1.2, canceling-a-data-transfer-by-a-device).
                    match detail.fault() {
                        Some(FaultKind::CancelButton | FaultKind::ShortBand) => {
                            Some(CpKind::DeviceCancel)
                        }
                        _ => Some(CpKind::DeviceFault(detail.to_string())),
                    }
                }
                _ => None,
            }
        };
        if let Some(kind) = kind {
            out.push(Cp {
                idx: i,
                at: e.at_us,
                kind,
            });
        }
    }
    out
}

/// The callback that was in progress when the application cancelled from inside it: the runner
/// records CancelPendingIO and notify-cancel-io before the callback event they happened in, at
/// the same time and with no driver I/O in between. Returns that callback's index.
pub(crate) fn in_flight_callback(trace: &Trace, notify: usize) -> Option<usize> {
    let t = trace.events.get(notify)?.at_us;
    for (i, e) in trace.events.iter().enumerate().skip(notify + 1) {
        if e.at_us != t {
            return None;
        }
        match &e.kind {
            Kind::Callback { .. } if e.actor == Actor::Service => return Some(i),
            Kind::NotifyCancelIo {}
            | Kind::CancelPendingIo { .. }
            | Kind::Abort { .. }
            | Kind::BandedCallback { .. }
            | Kind::Device { .. }
            | Kind::Log { .. }
            | Kind::Note { .. } => {}
            _ => return None,
        }
    }
    None
}

/// The first callback of the acquisition whose result told the driver to stop.
pub(crate) fn first_stop_callback(trace: &Trace, acq: &Acq) -> Option<(usize, Cb)> {
    acq.range().find_map(|i| {
        callback(&trace.events[i])
            .filter(|c| stops(c.result))
            .map(|c| (i, c))
    })
}

/// True if the transfer had visibly delivered everything before event `idx`: an
/// IT_MSG_TERMINATION callback, the device's `drained`, or (single page) a data callback at 100%.
pub(crate) fn completed_before(facts: &RunFacts, acq: &Acq, idx: usize) -> bool {
    let single_page = facts.scenario.scan.pages == 1;
    (acq.start..idx).any(|i| {
        let e = &facts.trace.events[i];
        if let Some(cb) = callback(e) {
            return cb.msg == ItMsg::Termination
                || (single_page && cb.msg == ItMsg::Data && cb.percent >= 100);
        }
        note(e) == Some(NoteKind::Drained)
    })
}

/// The device's state, as the device's own events tell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dev {
    /// No job: motor stopped, status OK.
    Idle,
    /// Warming up, scanning or feeding a page.
    Running,
    /// Every band produced; the host has not taken them all.
    Draining,
    /// A host cancel was accepted; the motor is stopping.
    Cancelling,
    /// A device fault ended the job (motor stopped).
    Aborted,
    /// Bulk endpoints halted after a device-initiated cancel (motor stopped).
    Halted,
    /// The device left the bus.
    Gone,
}

impl Dev {
    /// Still producing or holding image data for the current job.
    pub fn busy(self) -> bool {
        matches!(self, Dev::Running | Dev::Draining)
    }

    /// The motor is not running and no job is being produced.
    pub fn stopped(self) -> bool {
        matches!(self, Dev::Idle | Dev::Aborted | Dev::Halted)
    }
}

/// The device state after each event (same length as the trace).
pub(crate) fn device_states(trace: &Trace) -> Vec<Dev> {
    let mut state = Dev::Idle;
    let mut out = Vec::with_capacity(trace.events.len());
    for e in &trace.events {
        if let Some((what, _, detail)) = device(e) {
            state = match what {
                NoteKind::ScanStarted
                | NoteKind::WarmupDone
                | NoteKind::BandReady
                | NoteKind::PageFeed
                | NoteKind::CancelIgnored => Dev::Running,
                // The device notes `scan-complete` when the host has taken the last band.
                NoteKind::FeederEmpty => Dev::Draining,
                NoteKind::CancelRequested => Dev::Cancelling,
                NoteKind::ScanComplete
                | NoteKind::MotorStopped
                | NoteKind::Drained
                | NoteKind::Idle
                | NoteKind::Reset => Dev::Idle,
                NoteKind::Fault
                    if matches!(
                        detail.fault(),
                        Some(FaultKind::Disconnect | FaultKind::DisconnectOnCancel)
                    ) =>
                {
                    Dev::Gone
                }
                NoteKind::Fault if aborting_fault(detail) => Dev::Aborted,
                NoteKind::Halted => Dev::Halted,
                NoteKind::Disconnected => Dev::Gone,
                _ => state,
            };
        }
        out.push(state);
    }
    out
}

/// First index at or after `from` where the device is stopped, with its time.
pub(crate) fn first_stopped(trace: &Trace, states: &[Dev], from: usize) -> Option<(usize, u64)> {
    (from..states.len())
        .find(|&i| states[i].stopped())
        .map(|i| (i, trace.events[i].at_us))
}

/// A control transfer: `(request_type, request, result, reply)`.
pub(crate) fn control(e: &Event) -> Option<(u8, u8, TransferOutcome, &ControlReply)> {
    match &e.kind {
        Kind::Control {
            request_type,
            request,
            result,
            reply,
            ..
        } => Some((*request_type, *request, *result, reply)),
        _ => None,
    }
}

/// Cancel Request (0x64).
pub(crate) fn is_cancel_request(e: &Event) -> bool {
    control(e).is_some_and(|(_, req, _, _)| req == REQ_CANCEL)
}

/// Device Reset Request (0x66), or a port reset.
pub(crate) fn is_device_reset(e: &Event) -> bool {
    control(e).is_some_and(|(_, req, _, _)| req == REQ_DEVICE_RESET)
        || matches!(e.kind, Kind::ResetDevice { .. })
}

/// START_SCAN (a vendor request, not the standard request with the same number).
pub(crate) fn is_start_scan(e: &Event) -> bool {
    control(e)
        .is_some_and(|(request_type, req, _, _)| request_type & 0x60 != 0 && req == REQ_START_SCAN)
}

/// The reply of a Get Device Status that answered, if `e` is one.
pub(crate) fn device_status(e: &Event) -> Option<&DeviceStatus> {
    control(e).and_then(|(_, _, _, reply)| reply.device_status())
}

/// Get Device Status answered OK (0x2001).
pub(crate) fn status_ok(e: &Event) -> bool {
    device_status(e).is_some_and(|st| st.code == STATUS_OK)
}

/// Get Device Status answered Transaction_Cancelled (0x201F).
pub(crate) fn status_cancelled(e: &Event) -> bool {
    device_status(e).is_some_and(|st| st.code == STATUS_TRANSACTION_CANCELLED)
}

/// How a USB operation failed, if it did (not ok, not a deliberate abort, not a poll that simply
/// timed out).
pub(crate) fn transfer_failed(e: &Event) -> Option<TransferOutcome> {
    match &e.kind {
        Kind::Control { result, .. }
        | Kind::ClearHalt { result, .. }
        | Kind::ResetDevice { result } => (!result.is_ok()).then_some(*result),
        Kind::Bulk { result, .. } | Kind::Interrupt { result, .. } => (!matches!(
            result,
            TransferOutcome::Ok | TransferOutcome::Cancelled | TransferOutcome::Timeout
        ))
        .then_some(*result),
        _ => None,
    }
}

/// A bulk IN read that moved bytes: `(ep, actual)`.
pub(crate) fn bulk_in_data(e: &Event) -> Option<(u8, u32)> {
    match &e.kind {
        Kind::Bulk {
            ep, actual, result, ..
        } if ep & 0x80 != 0 && *actual > 0 && result.is_ok() => Some((*ep, *actual)),
        _ => None,
    }
}

/// Formats microseconds as milliseconds with one decimal.
pub(crate) fn ms(us: u64) -> String {
    format!("{}.{} ms", us / 1000, (us % 1000) / 100)
}
