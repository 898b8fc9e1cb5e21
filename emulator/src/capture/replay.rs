//! The replay personality: a [`Recording`] served as a device, through the [`UsbHost`] API.
//!
//! [`ReplayHost`] stands where [`InProcessHost`](crate::host::inproc::InProcessHost) stands: a
//! driver, the conformance runner and every [`HostObserver`] use it the same way. It answers at
//! the level the recording has, one host transfer at a time (usbmon captures hold transfers,
//! not packets), so it does not go through the virtual bus: that keeps the in-process host and
//! the firmware untouched, and a recording of a real scanner needs no firmware model at all.
//!
//! Matching. The recording's transactions are split into streams: EP0 (control transfers and
//! clear-halts), each bulk or interrupt endpoint, and resets. Within a stream they are taken in
//! submission order. A request must equal the head of its stream: the whole SETUP packet and
//! OUT data of a control transfer, the OUT data of a bulk write, the length of an IN read (a
//! longer read is accepted where the recorded read ended with a short packet, which a longer
//! buffer would have ended the same way). A standard GET_DESCRIPTOR the recording does not hold
//! is answered from the recorded descriptors.
//!
//! Pace. A matched request completes `at_us - submitted_us` after it was submitted, with the
//! recorded result and data: an identical driver in virtual time sees identical times. An
//! interrupt IN transfer completes at its recorded `at_us` on the replay's clock (at once if
//! that has passed), because a device posts its reports at its own pace; the first transaction
//! served sets the replay's clock against the recording's. A transfer recorded as cancelled,
//! or as pending when a capture stopped, waits for the host's abort (or its own timeout). An
//! abort or timeout that comes before the recorded completion leaves the transaction in the
//! recording (the device never saw it), as on a real bus; so does a transfer whose future the
//! host drops before it finished (the process that made it ended).
//!
//! End. A request on a stream whose transactions have all been served NAKs: it waits for its
//! timeout or an abort, as on an idle device, and a device note `replay-end` says so once per
//! stream.
//!
//! Divergence. The first request that matches nothing while its stream still holds
//! transactions ends the replay: the host reports a device note `replay-divergence` naming the
//! transaction expected and the request received, answers that request with
//! [`TransferError::Io`] and every later one with [`TransferError::NoDevice`], and keeps the
//! [`Divergence`] for the caller ([`ReplayHost::divergence`]). [`ReplayConfig::strict`] makes
//! every departure a divergence: a request after the end of its stream, a GET_DESCRIPTOR or a
//! CANCEL the recording does not hold (see [`ReplayHost::missing`] for transactions never
//! asked for).
//!
//! Cancel. A CANCEL (0x64) the recording does not hold, while the recording still holds band
//! data, is answered the way the native protocol does (`emulator/PROTOCOL.md` §2): the request
//! succeeds, no further band data is sent (bulk reads wait for their timeout or abort), the
//! event endpoint posts Cancelled(host) and, `motor_stop_us` later, MotorStopped; Get Device
//! Status answers Busy until then and OK after; Get Scan Status answers Cancelling, then Idle,
//! with error host-cancel. A device note `replay-cancel` says so in the trace. Requests other
//! than these after a synthesized cancel diverge.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::task::Waker;

use async_trait::async_trait;

use crate::capture::recording::{to_hex, Recording, SetupFields, Transaction, TxKind, TxResult};
use crate::host::{
    ChangeCounter, DeviceInfo, HostObserver, Setup, TransferError, UsbHost, WaitChange,
};
use crate::personality::native::protocol::{
    self, DeviceState, DeviceStatus, Event, EventCode, ScanError, ScanStatus,
};
use crate::personality::{DeviceNote, NoteKind};
use crate::sim::Clock;
use crate::time::{Duration, Instant};
use crate::usb::hc::SetupPacket;
use crate::usb::Request as std_request;

/// The first request of a replay that the recording does not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// When the request came.
    pub at: Instant,
    /// The recorded transaction the replay expected next on that stream (`None` where the
    /// recording held nothing more).
    pub seq: Option<u64>,
    /// The expected transaction, described.
    pub expected: String,
    /// The request received, described.
    pub got: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(seq) => write!(
                f,
                "first divergence at transaction #{seq}: expected {}, got {}",
                self.expected, self.got
            ),
            None => write!(
                f,
                "first divergence after the recording's end: expected {}, got {}",
                self.expected, self.got
            ),
        }
    }
}

/// How a [`ReplayHost`] treats requests the recording does not hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayConfig {
    /// Every departure from the recording is a divergence (default false): a request after
    /// the recording's end on its stream, a GET_DESCRIPTOR or a CANCEL the recording does not
    /// hold, and (see [`ReplayHost::missing`]) a transfer left pending at the end of a capture
    /// that the driver never asks for. By default those NAK, are answered from the
    /// descriptors or by the native protocol, and are let pass.
    pub strict: bool,
}

impl ReplayConfig {
    /// The strict configuration.
    pub fn strict() -> ReplayConfig {
        ReplayConfig { strict: true }
    }
}

/// How a replay went: what [`ReplayHost::report`] gives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// The first divergence, if the driver departed from the recording.
    pub divergence: Option<Divergence>,
    /// True once a cancel the recording did not hold was answered by the protocol's rules.
    pub synthesized_cancel: bool,
    /// The recorded transactions whose absence is a departure ([`ReplayHost::missing`]).
    pub missing: Vec<Transaction>,
}

/// One transfer as an URB names it ([`ReplayHost::transfer`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrbTransfer {
    /// Control, bulk or interrupt.
    pub kind: TxKind,
    /// The endpoint address with its direction bit (ignored for control transfers, whose
    /// direction is the SETUP packet's).
    pub ep: u8,
    /// The SETUP packet of a control transfer.
    pub setup: Option<SetupFields>,
    /// The buffer length: bytes asked for (IN) or sent (OUT).
    pub length: u32,
    /// OUT data.
    pub out: Vec<u8>,
}

/// A stream of transactions that keep their order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stream {
    Control,
    Endpoint(u8),
    Reset,
}

fn stream_of(kind: TxKind, ep: u8) -> Option<Stream> {
    match kind {
        TxKind::Control | TxKind::ClearHalt => Some(Stream::Control),
        TxKind::Bulk | TxKind::Interrupt => Some(Stream::Endpoint(ep)),
        TxKind::Reset => Some(Stream::Reset),
        TxKind::Abort => None,
    }
}

/// One request from the driver.
#[derive(Clone, Debug)]
struct Request {
    kind: TxKind,
    ep: u8,
    setup: Option<SetupFields>,
    requested: u32,
    out: Vec<u8>,
}

impl Request {
    fn is_in(&self) -> bool {
        match self.kind {
            TxKind::Control => self.setup.is_some_and(|s| s.request_type & 0x80 != 0),
            TxKind::Bulk | TxKind::Interrupt => self.ep & 0x80 != 0,
            _ => false,
        }
    }

    fn describe(&self) -> String {
        describe(
            self.kind,
            self.ep,
            self.setup,
            self.requested,
            (!self.is_in()).then_some(&self.out[..]),
        )
    }

    fn matches(&self, t: &Transaction) -> bool {
        if self.kind != t.kind || self.setup != t.setup {
            return false;
        }
        match self.kind {
            TxKind::Control => self.is_in() || self.out == t.bytes(),
            TxKind::ClearHalt => self.ep == t.ep,
            TxKind::Reset | TxKind::Abort => true,
            TxKind::Bulk | TxKind::Interrupt if self.ep != t.ep => false,
            TxKind::Bulk | TxKind::Interrupt if !self.is_in() => self.out == t.bytes(),
            TxKind::Bulk | TxKind::Interrupt => {
                let got = t.data.len() as u32 / 2;
                self.requested == t.requested
                    || (got < t.requested && self.requested >= got && t.result == TxResult::Ok)
            }
        }
    }
}

fn describe(
    kind: TxKind,
    ep: u8,
    setup: Option<SetupFields>,
    requested: u32,
    out: Option<&[u8]>,
) -> String {
    let mut s = match (kind, setup) {
        (TxKind::Control, Some(st)) => format!(
            "control-{} {} (bmRequestType={:#04x} wValue={:#06x} wIndex={} wLength={})",
            if st.request_type & 0x80 != 0 {
                "in"
            } else {
                "out"
            },
            request_name(st.request_type, st.request),
            st.request_type,
            st.value,
            st.index,
            st.length
        ),
        (TxKind::ClearHalt, _) => format!("clear-halt ep={ep:#04x}"),
        (TxKind::Reset, _) => "reset".into(),
        (TxKind::Abort, _) => format!("abort ep={ep:#04x}"),
        (TxKind::Bulk, _) => format!("bulk ep={ep:#04x} length={requested}"),
        (TxKind::Interrupt, _) => format!("interrupt ep={ep:#04x} length={requested}"),
        (TxKind::Control, None) => "control without SETUP".into(),
    };
    if let Some(data) = out.filter(|d| !d.is_empty()) {
        let shown = &data[..data.len().min(16)];
        s.push_str(&format!(
            " data={}{}",
            to_hex(shown),
            if data.len() > 16 { "…" } else { "" }
        ));
    }
    s
}

/// A recorded transaction in one line, as divergence messages name it.
pub fn describe_transaction(t: &Transaction) -> String {
    let out = t.bytes();
    format!(
        "{} at {} us",
        describe(
            t.kind,
            t.ep,
            t.setup,
            t.requested,
            (!t.is_in()).then_some(&out[..])
        ),
        t.submitted_us
    )
}

/// The name of a native or standard request, for divergence messages.
fn request_name(request_type: u8, request: u8) -> String {
    match protocol::request_name(request_type, request) {
        Some(name) => name.into(),
        None if request_type & 0x60 == 0 => "standard request".into(),
        None => format!("request {request:#04x}"),
    }
}

/// A host cancel the recording did not hold, answered by the native protocol's rules.
struct SyntheticCancel {
    /// When the motor has stopped and the device is idle again.
    idle_at: Instant,
    /// Events not yet read from the event endpoint, each with the time it is posted.
    events: VecDeque<(Instant, [u8; protocol::EVENT_LEN])>,
}

struct State {
    recording: Recording,
    info: DeviceInfo,
    streams: BTreeMap<Stream, VecDeque<usize>>,
    divergence: Option<Divergence>,
    cancel: Option<SyntheticCancel>,
    /// The last GET_SCAN_STATUS reply served, the base of synthesized ones.
    last_scan_status: Option<ScanStatus>,
    /// Bulk reads of band data served, counted for synthesized scan status replies.
    bands_served: u32,
    abort_gen: [u64; 32],
    change: u64,
    waiters: Vec<Waker>,
    pending: u32,
    observer: Option<Rc<dyn HostObserver>>,
    config: ReplayConfig,
    /// The replay's time minus the recording's, fixed by the first transaction served: the
    /// recorded completion of an interrupt IN transfer is due at `at_us + offset`.
    offset_us: Option<i64>,
    /// Streams whose end a `replay-end` note has announced.
    ended: Vec<Stream>,
    /// Transfers of [`ReplayHost::transfer`] unlinked by their submitter, by id.
    unlinked: std::collections::BTreeSet<u64>,
}

impl State {
    fn changed(&mut self) {
        self.change += 1;
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }

    fn note(&self, at: Instant, kind: NoteKind, detail: String) {
        if let Some(obs) = &self.observer {
            obs.device(&DeviceNote {
                detail: detail.into(),
                ..DeviceNote::new(at, kind)
            });
        }
    }

    /// True while the recording still holds band data the driver has not read.
    fn band_data_left(&self) -> bool {
        self.streams
            .get(&Stream::Endpoint(protocol::EP_DATA_IN))
            .is_some_and(|q| {
                q.iter()
                    .any(|&i| !self.recording.transactions[i].data.is_empty())
            })
    }

    /// The earliest-submitted transaction not yet served, on any stream.
    fn next_expected(&self) -> Option<&Transaction> {
        self.streams
            .values()
            .filter_map(|q| q.front())
            .map(|&i| &self.recording.transactions[i])
            .min_by_key(|t| (t.submitted_us, t.seq))
    }

    fn diverge(&mut self, at: Instant, expected: Option<&Transaction>, got: &Request) {
        let mut got_text = got.describe();
        if let Some(t) = expected.filter(|t| t.kind == got.kind && !got.is_in()) {
            let want = t.bytes();
            if let Some(at) =
                (0..want.len().max(got.out.len())).find(|&i| want.get(i) != got.out.get(i))
            {
                let window = |b: &[u8]| to_hex(&b[at.min(b.len())..(at + 8).min(b.len())]);
                got_text.push_str(&format!(
                    "; data differs from byte {at}: expected {}, got {}",
                    window(&want),
                    window(&got.out)
                ));
            }
        }
        let d = Divergence {
            at,
            seq: expected.map(|t| t.seq),
            expected: expected.map_or_else(|| "nothing more".to_string(), describe_transaction),
            got: got_text,
        };
        self.note(at, NoteKind::ReplayDivergence, d.to_string());
        self.divergence = Some(d);
        self.changed();
    }
}

fn ep_slot(ep: u8) -> usize {
    usize::from(ep & 0x0f) + if ep & 0x80 != 0 { 16 } else { 0 }
}

/// How [`ReplayHost::serve`] answers one request.
enum Plan {
    /// The recorded transaction `index`, completing at `done_at` (`None`: only an abort or
    /// the request's timeout ends it).
    Recorded {
        index: usize,
        done_at: Option<Instant>,
    },
    /// A synthesized answer at `done_at` (`None`: never, as for band data after a cancel).
    Synthetic {
        done_at: Option<Instant>,
        result: Result<Vec<u8>, TransferError>,
    },
    /// An answer at once.
    Now(Result<Vec<u8>, TransferError>),
}

/// A [`UsbHost`] serving a [`Recording`]. See the module documentation. Cheap to clone:
/// clones share the replay.
#[derive(Clone)]
pub struct ReplayHost {
    state: Rc<RefCell<State>>,
    clock: Rc<dyn Clock>,
}

impl ReplayHost {
    /// Serves `recording` on `clock` with the default [`ReplayConfig`].
    pub fn new(recording: Recording, clock: Rc<dyn Clock>) -> ReplayHost {
        ReplayHost::with_config(recording, clock, ReplayConfig::default())
    }

    /// Serves `recording` on `clock`, as `config` says.
    pub fn with_config(
        recording: Recording,
        clock: Rc<dyn Clock>,
        config: ReplayConfig,
    ) -> ReplayHost {
        let mut streams: BTreeMap<Stream, VecDeque<usize>> = BTreeMap::new();
        let mut order: Vec<usize> = (0..recording.transactions.len()).collect();
        order.sort_by_key(|&i| {
            let t = &recording.transactions[i];
            (t.submitted_us, t.seq)
        });
        for i in order {
            let t = &recording.transactions[i];
            if let Some(s) = stream_of(t.kind, t.ep) {
                streams.entry(s).or_default().push_back(i);
            }
        }
        let info = recording.meta.device_info();
        ReplayHost {
            state: Rc::new(RefCell::new(State {
                recording,
                info,
                streams,
                divergence: None,
                cancel: None,
                last_scan_status: None,
                bands_served: 0,
                abort_gen: [0; 32],
                change: 0,
                waiters: Vec::new(),
                pending: 0,
                observer: None,
                config,
                offset_us: None,
                ended: Vec::new(),
                unlinked: std::collections::BTreeSet::new(),
            })),
            clock,
        }
    }

    /// Reports the replay's notes (`replay-divergence`, `replay-cancel`) to `observer` from now
    /// on; wrap the host in [`Observed`](crate::host::Observed) to see its transfers.
    pub fn set_note_observer(&self, observer: Rc<dyn HostObserver>) {
        self.state.borrow_mut().observer = Some(observer);
    }

    /// The first divergence, if the driver departed from the recording.
    pub fn divergence(&self) -> Option<Divergence> {
        self.state.borrow().divergence.clone()
    }

    /// True once a cancel the recording did not hold was answered by the protocol's rules.
    pub fn synthesized_cancel(&self) -> bool {
        self.state.borrow().cancel.is_some()
    }

    /// The recorded transactions (aborts aside) the driver has not asked for, in submission
    /// order.
    pub fn unserved(&self) -> Vec<Transaction> {
        let st = self.state.borrow();
        let mut left: Vec<Transaction> = st
            .streams
            .values()
            .flatten()
            .map(|&i| st.recording.transactions[i].clone())
            .collect();
        left.sort_by_key(|t| (t.submitted_us, t.seq));
        left
    }

    /// The recorded transactions whose absence is a departure: in strict mode every one not
    /// asked for ([`ReplayHost::unserved`]); otherwise those that completed in the recording
    /// (a transfer still pending when a capture stopped may well never come again).
    pub fn missing(&self) -> Vec<Transaction> {
        let strict = self.state.borrow().config.strict;
        self.unserved()
            .into_iter()
            .filter(|t| strict || t.result != TxResult::Pending)
            .collect()
    }

    /// The replay's configuration.
    pub fn config(&self) -> ReplayConfig {
        self.state.borrow().config
    }

    /// How the replay went so far, in one value that crosses threads (a replay served over
    /// USB/IP reports it to its server's caller).
    pub fn report(&self) -> ReplayReport {
        ReplayReport {
            divergence: self.divergence(),
            synthesized_cancel: self.synthesized_cancel(),
            missing: self.missing(),
        }
    }

    /// Makes one transfer as a USB/IP or usbdevfs URB names it, with no timeout: it ends with
    /// its recorded answer, or when [`ReplayHost::unlink`] names `id` (then
    /// [`TransferError::Cancelled`]). The result carries the IN data (of a failed transfer:
    /// what it moved). A CLEAR_FEATURE(ENDPOINT_HALT) control transfer is the recording's
    /// clear-halt of that endpoint.
    pub async fn transfer(
        &self,
        id: u64,
        urb: UrbTransfer,
    ) -> (Result<(), TransferError>, Vec<u8>) {
        let clear_halt = urb.kind == TxKind::Control
            && urb.setup.is_some_and(|s| {
                s.request_type == 0x02 && s.request == std_request::CLEAR_FEATURE && s.value == 0
            });
        let req = match (clear_halt, urb.setup) {
            (true, Some(s)) => Request {
                kind: TxKind::ClearHalt,
                ep: s.index as u8,
                setup: Some(SetupPacket::clear_halt(s.index as u8).into()),
                requested: 0,
                out: Vec::new(),
            },
            _ => Request {
                kind: self.recorded_kind(urb.kind, urb.ep),
                ep: match urb.kind {
                    TxKind::Control => urb.setup.map_or(0, |s| s.request_type & 0x80),
                    _ => urb.ep,
                },
                requested: match (urb.kind, urb.setup) {
                    (TxKind::Control, Some(s)) => u32::from(s.length),
                    _ => urb.length,
                },
                setup: urb.setup,
                out: urb.out,
            },
        };
        let is_in = req.is_in();
        let served = self.serve_with(req, Duration::ZERO, Some(id)).await;
        self.state.borrow_mut().unlinked.remove(&id);
        match served.result {
            Ok(data) if is_in => (Ok(()), data),
            Ok(_) => (Ok(()), Vec::new()),
            Err(e) => (Err(e), served.partial),
        }
    }

    /// The kind of the transfers the recording holds on `ep`, for a bulk or interrupt
    /// transfer of `kind` an URB names by its endpoint's descriptor: a capture made by other
    /// means than usbmon may tag an interrupt endpoint's transfers as bulk, and the URB's
    /// kind then follows the recording.
    fn recorded_kind(&self, kind: TxKind, ep: u8) -> TxKind {
        if !matches!(kind, TxKind::Bulk | TxKind::Interrupt) {
            return kind;
        }
        let st = self.state.borrow();
        st.recording
            .transactions
            .iter()
            .find(|t| t.ep == ep && matches!(t.kind, TxKind::Bulk | TxKind::Interrupt))
            .map_or(kind, |t| t.kind)
    }

    /// Unlinks the transfer `id` of [`ReplayHost::transfer`] (nothing if it has ended).
    pub fn unlink(&self, id: u64) {
        let mut st = self.state.borrow_mut();
        st.unlinked.insert(id);
        st.changed();
    }

    /// Decides how to answer `req` at `now`, taking its transaction off the recording.
    fn plan(&self, req: &Request, now: Instant) -> Plan {
        let mut st = self.state.borrow_mut();
        if st.divergence.is_some() {
            return Plan::Now(Err(TransferError::NoDevice));
        }
        let Some(stream) = stream_of(req.kind, req.ep) else {
            return Plan::Now(Ok(Vec::new()));
        };
        let head = st.streams.get(&stream).and_then(|q| q.front().copied());
        let setup = req.setup;
        let is_request =
            |code: u8| setup.is_some_and(|s| s.request_type & 0x60 == 0x40 && s.request == code);
        if st.cancel.is_some() {
            if let Some(plan) = synthesize(&mut st, req, now) {
                return plan;
            }
            let expected = head.map(|i| st.recording.transactions[i].clone());
            st.diverge(now, expected.as_ref(), req);
            return Plan::Now(Err(TransferError::Io(
                "replay: the recording holds no answer after the synthesized cancel".into(),
            )));
        }
        if let Some(i) = head {
            if req.matches(&st.recording.transactions[i]) {
                return take(&mut st, stream, i, now);
            }
        }
        // Concurrent submissions at one instant may reach the host in either order.
        if let Some(i) = head {
            let tied = st.recording.transactions[i].submitted_us;
            let alt = st.streams[&stream].iter().copied().find(|&j| {
                let t = &st.recording.transactions[j];
                t.submitted_us == tied && req.matches(t)
            });
            if let Some(j) = alt {
                return take(&mut st, stream, j, now);
            }
        }
        let strict = st.config.strict;
        if is_request(protocol::REQ_CANCEL) && !req.is_in() && !strict {
            if st.band_data_left() {
                let idle_at = now + Duration::from_micros(st.recording.meta.motor_stop_us);
                let mut events = VecDeque::new();
                let event = |code, arg| {
                    Event {
                        code,
                        arg,
                        page: 0,
                        value: 0,
                    }
                    .encode()
                };
                events.push_back((
                    now,
                    event(EventCode::Cancelled, ScanError::HostCancel as u8),
                ));
                events.push_back((idle_at, event(EventCode::MotorStopped, 0)));
                st.cancel = Some(SyntheticCancel { idle_at, events });
                st.note(
                    now,
                    NoteKind::ReplayCancel,
                    format!(
                        "the recording holds no CANCEL here: answered by the native protocol \
                         (no more band data, Busy until {} us, then OK)",
                        idle_at.total_micros()
                    ),
                );
                st.changed();
            } else {
                st.note(
                    now,
                    NoteKind::ReplayCancel,
                    "the recording holds no CANCEL here and no band data is left: \
                     acknowledged with no effect, as an idle device does"
                        .into(),
                );
            }
            return Plan::Now(Ok(Vec::new()));
        }
        if let Some(plan) = descriptor(&st, req).filter(|_| !strict) {
            return plan;
        }
        if head.is_none() && !strict && matches!(req.kind, TxKind::Reset | TxKind::ClearHalt) {
            // A device resets, and clears a halt, whatever the recording holds.
            return Plan::Now(Ok(Vec::new()));
        }
        if head.is_none() && !strict {
            // The recording holds nothing more here: an idle device NAKs.
            if !st.ended.contains(&stream) {
                st.ended.push(stream);
                st.note(
                    now,
                    NoteKind::ReplayEnd,
                    format!(
                        "the recording holds nothing more on {}: {} NAKs until its timeout or \
                         abort",
                        stream_name(stream),
                        req.describe()
                    ),
                );
            }
            return Plan::Synthetic {
                done_at: None,
                result: Ok(Vec::new()),
            };
        }
        let expected = match head {
            Some(i) => Some(st.recording.transactions[i].clone()),
            None => st.next_expected().cloned(),
        };
        st.diverge(now, expected.as_ref(), req);
        Plan::Now(Err(TransferError::Io(
            "replay: the request departs from the recording".into(),
        )))
    }

    /// Answers `req` from the recording, waiting the recorded time.
    async fn serve(&self, req: Request, timeout: Duration) -> Served {
        self.serve_with(req, timeout, None).await
    }

    /// [`ReplayHost::serve`] of a transfer that [`ReplayHost::unlink`] of `id` aborts.
    async fn serve_with(&self, req: Request, timeout: Duration, id: Option<u64>) -> Served {
        let start = self.clock.now();
        let deadline = (timeout != Duration::ZERO).then(|| start + timeout);
        let gen = self.state.borrow().abort_gen[ep_slot(req.ep)];
        self.state.borrow_mut().pending += 1;
        let mut plan = self.plan(&req, start);
        let mut unlink = Unlink {
            state: &self.state,
            req: &req,
            index: match &plan {
                Plan::Recorded { index, .. } => Some(*index),
                _ => None,
            },
        };
        let mut partial = Vec::new();
        let result = loop {
            let now = self.clock.now();
            let (aborted, seen, cancelled_since) = {
                let st = self.state.borrow();
                (
                    st.abort_gen[ep_slot(req.ep)] != gen
                        || id.is_some_and(|id| st.unlinked.contains(&id)),
                    st.change,
                    st.cancel.is_some(),
                )
            };
            let (done_at, ready) = match &plan {
                Plan::Now(r) => break r.clone(),
                Plan::Recorded { index, done_at } => {
                    // A synthesized cancel stops band data and events still in flight.
                    if cancelled_since && req.kind != TxKind::Control {
                        let mut st = self.state.borrow_mut();
                        give_back(&mut st, &req, *index);
                        unlink.index = None;
                        plan = synthesize(&mut st, &req, now).unwrap_or(Plan::Synthetic {
                            done_at: None,
                            result: Ok(Vec::new()),
                        });
                        continue;
                    }
                    (*done_at, None)
                }
                Plan::Synthetic { done_at, result } => (*done_at, Some(result.clone())),
            };
            if done_at.is_some_and(|d| now >= d) {
                match (&plan, ready) {
                    (_, Some(r)) => break r,
                    (Plan::Recorded { index, .. }, None) => {
                        let st = self.state.borrow();
                        let t = &st.recording.transactions[*index];
                        let data = t.bytes();
                        break match t.result.error(data.len()) {
                            None => Ok(data),
                            Some(e) => {
                                partial = data;
                                Err(e)
                            }
                        };
                    }
                    _ => break Err(TransferError::Io("replay: no answer".into())),
                }
            }
            if aborted || deadline.is_some_and(|d| now >= d) {
                let mut actual = 0;
                if let Plan::Recorded { index, .. } = &plan {
                    let mut st = self.state.borrow_mut();
                    let t = st.recording.transactions[*index].clone();
                    if matches!(
                        t.result,
                        TxResult::Cancelled | TxResult::Timeout | TxResult::Pending
                    ) {
                        partial = t.bytes();
                        actual = partial.len();
                    } else {
                        give_back(&mut st, &req, *index);
                    }
                }
                break Err(if aborted {
                    TransferError::Cancelled { actual }
                } else {
                    TransferError::Timeout { actual }
                });
            }
            let wake = match (done_at, deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sleep = wake.map(|t| self.clock.sleep_until(t.max(now)));
            WaitChange {
                counter: &*self.state,
                seen,
                sleep,
            }
            .await;
        };
        std::mem::forget(unlink);
        {
            let mut st = self.state.borrow_mut();
            st.pending -= 1;
            if matches!(&result, Ok(d) if !d.is_empty())
                && req.kind == TxKind::Bulk
                && req.ep == protocol::EP_DATA_IN
            {
                st.bands_served += 1;
            }
            if let (Ok(data), Some(s)) = (&result, req.setup) {
                if s.request == protocol::REQ_GET_SCAN_STATUS && s.request_type & 0x60 == 0x40 {
                    if let Ok(status) = ScanStatus::decode(data) {
                        st.last_scan_status = Some(status);
                    }
                }
            }
            st.changed();
        }
        Served { result, partial }
    }
}

/// What [`ReplayHost::serve`] answered: the result, and the bytes a failed transfer moved.
struct Served {
    result: Result<Vec<u8>, TransferError>,
    partial: Vec<u8>,
}

/// The stream in words, for notes.
fn stream_name(stream: Stream) -> String {
    match stream {
        Stream::Control => "EP0".into(),
        Stream::Endpoint(ep) => format!("endpoint {ep:#04x}"),
        Stream::Reset => "resets".into(),
    }
}

/// Takes transaction `index` off `stream` and plans its recorded answer: `at_us -
/// submitted_us` after `now`, except that an interrupt IN transfer completes at its recorded
/// time on the replay's clock (or at once, if that has passed): a device posts its reports at
/// its own pace, whenever the host polls.
fn take(st: &mut State, stream: Stream, index: usize, now: Instant) -> Plan {
    if let Some(q) = st.streams.get_mut(&stream) {
        q.retain(|&j| j != index);
    }
    let t = &st.recording.transactions[index];
    let offset = *st
        .offset_us
        .get_or_insert(now.total_micros() as i64 - t.submitted_us as i64);
    let done_at = match t.result {
        TxResult::Cancelled | TxResult::Pending => None,
        _ if t.kind == TxKind::Interrupt && t.ep & 0x80 != 0 => {
            let due = (t.at_us as i64).saturating_add(offset).max(0) as u64;
            Some(now.max(Instant::from_micros(due)))
        }
        _ => Some(now + Duration::from_micros(t.duration_us())),
    };
    Plan::Recorded { index, done_at }
}

/// A transfer in flight, for the case where its future is dropped before it finished (the
/// host let go of it: an unlink, or the end of the process that made it). Dropped, it does
/// what an abort does: the transaction it was served from goes back to the recording unless it
/// was recorded as never finishing, and the transfer is no longer pending.
struct Unlink<'a> {
    state: &'a RefCell<State>,
    req: &'a Request,
    /// The recorded transaction it holds.
    index: Option<usize>,
}

impl Drop for Unlink<'_> {
    fn drop(&mut self) {
        let mut st = self.state.borrow_mut();
        st.pending -= 1;
        if let Some(index) = self.index {
            let unfinished = matches!(
                st.recording.transactions[index].result,
                TxResult::Cancelled | TxResult::Timeout | TxResult::Pending
            );
            if !unfinished {
                give_back(&mut st, self.req, index);
            }
        }
        st.changed();
    }
}

/// Puts transaction `index` back at the head of its stream: the device never answered it.
fn give_back(st: &mut State, req: &Request, index: usize) {
    if let Some(stream) = stream_of(req.kind, req.ep) {
        st.streams.entry(stream).or_default().push_front(index);
    }
}

/// A standard GET_DESCRIPTOR for the device or configuration descriptor, answered from the
/// recorded descriptors.
fn descriptor(st: &State, req: &Request) -> Option<Plan> {
    let s = req.setup?;
    if s.request_type != 0x80 || s.request != std_request::GET_DESCRIPTOR {
        return None;
    }
    let bytes = match s.value >> 8 {
        1 => &st.info.device_descriptor,
        2 => &st.info.config_descriptor,
        _ => return None,
    };
    if bytes.is_empty() {
        return None;
    }
    Some(Plan::Now(Ok(bytes
        [..bytes.len().min(usize::from(s.length))]
        .to_vec())))
}

/// The native protocol's answer to `req` after a synthesized cancel, or `None` if the protocol
/// gives none the replay can know.
fn synthesize(st: &mut State, req: &Request, now: Instant) -> Option<Plan> {
    let idle_at = st.cancel.as_ref()?.idle_at;
    let idle = now >= idle_at;
    let reply = |bytes: Vec<u8>, length: u16| {
        Some(Plan::Now(Ok(
            bytes[..bytes.len().min(usize::from(length))].to_vec()
        )))
    };
    match (req.kind, req.setup) {
        (TxKind::Control, Some(s)) if s.request_type & 0x60 == 0x40 => match s.request {
            protocol::REQ_CANCEL | protocol::REQ_DEVICE_RESET => Some(Plan::Now(Ok(Vec::new()))),
            protocol::REQ_GET_DEVICE_STATUS => {
                let code = if idle {
                    protocol::STATUS_OK
                } else {
                    protocol::STATUS_BUSY
                };
                reply(
                    DeviceStatus {
                        code,
                        halted: Vec::new(),
                    }
                    .encode(),
                    s.length,
                )
            }
            protocol::REQ_GET_SCAN_STATUS => {
                // Without a recorded reply to start from, the job is counted from the bands
                // the replay served (job id 1, page 0).
                let base = st.last_scan_status.clone().unwrap_or(ScanStatus {
                    state: DeviceState::Idle,
                    error: ScanError::None,
                    page: 0,
                    lines_produced: 0,
                    bands_ready: 0,
                    bands_sent: st.bands_served,
                    pages_done: 0,
                    job_id: 1,
                });
                let status = ScanStatus {
                    state: if idle {
                        DeviceState::Idle
                    } else {
                        DeviceState::Cancelling
                    },
                    error: ScanError::HostCancel,
                    bands_ready: 0,
                    ..base
                };
                reply(status.encode().to_vec(), s.length)
            }
            _ => None,
        },
        (TxKind::Control, _) => descriptor(st, req),
        (TxKind::ClearHalt, _) | (TxKind::Reset, _) => Some(Plan::Now(Ok(Vec::new()))),
        (TxKind::Bulk, _) if req.is_in() => Some(Plan::Synthetic {
            done_at: None,
            result: Ok(Vec::new()),
        }),
        (TxKind::Interrupt, _) if req.ep == protocol::EP_EVENTS => {
            let cancel = st.cancel.as_mut()?;
            match cancel.events.pop_front() {
                Some((at, event)) => Some(Plan::Synthetic {
                    done_at: Some(at.max(now)),
                    result: Ok(event[..event.len().min(req.requested as usize)].to_vec()),
                }),
                None => Some(Plan::Synthetic {
                    done_at: None,
                    result: Ok(Vec::new()),
                }),
            }
        }
        _ => None,
    }
}

impl ChangeCounter for RefCell<State> {
    fn change(&self) -> u64 {
        self.borrow().change
    }
    fn wake_on_change(&self, waker: Waker) {
        self.borrow_mut().waiters.push(waker);
    }
}

#[async_trait(?Send)]
impl UsbHost for ReplayHost {
    fn device_info(&self) -> DeviceInfo {
        self.state.borrow().info.clone()
    }

    fn now(&self) -> Instant {
        self.clock.now()
    }

    async fn sleep(&self, duration: Duration) {
        let until = self.clock.now() + duration;
        self.clock.sleep_until(until).await;
    }

    async fn control_in(&self, setup: Setup, timeout: Duration) -> Result<Vec<u8>, TransferError> {
        if !setup.is_in() {
            return Err(TransferError::Io(format!(
                "control_in with a host-to-device request type {:#04x}",
                setup.request_type
            )));
        }
        let req = Request {
            kind: TxKind::Control,
            ep: 0x80,
            setup: Some(setup.into()),
            requested: u32::from(setup.length),
            out: Vec::new(),
        };
        self.serve(req, timeout).await.result
    }

    async fn control_out(
        &self,
        setup: Setup,
        data: &[u8],
        timeout: Duration,
    ) -> Result<(), TransferError> {
        let mut setup = setup;
        setup.length = u16::try_from(data.len()).map_err(|_| TransferError::Overflow)?;
        let req = Request {
            kind: TxKind::Control,
            ep: 0x00,
            setup: Some(setup.into()),
            requested: data.len() as u32,
            out: data.to_vec(),
        };
        self.serve(req, timeout).await.result.map(|_| ())
    }

    async fn bulk_in(
        &self,
        ep: u8,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, TransferError> {
        self.read_in(TxKind::Bulk, ep, buf, timeout).await
    }

    async fn bulk_out(
        &self,
        ep: u8,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, TransferError> {
        let req = Request {
            kind: TxKind::Bulk,
            ep,
            setup: None,
            requested: data.len() as u32,
            out: data.to_vec(),
        };
        self.serve(req, timeout).await.result.map(|_| data.len())
    }

    async fn interrupt_in(
        &self,
        ep: u8,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, TransferError> {
        self.read_in(TxKind::Interrupt, ep, buf, timeout).await
    }

    async fn clear_halt(&self, ep: u8) -> Result<(), TransferError> {
        let setup = SetupPacket::clear_halt(ep);
        let req = Request {
            kind: TxKind::ClearHalt,
            ep,
            setup: Some(setup.into()),
            requested: 0,
            out: Vec::new(),
        };
        self.serve(req, Duration::from_secs(1))
            .await
            .result
            .map(|_| ())
    }

    async fn reset_device(&self) -> Result<(), TransferError> {
        {
            let mut st = self.state.borrow_mut();
            for g in st.abort_gen.iter_mut() {
                *g += 1;
            }
            st.changed();
        }
        let req = Request {
            kind: TxKind::Reset,
            ep: 0,
            setup: None,
            requested: 0,
            out: Vec::new(),
        };
        self.serve(req, Duration::ZERO).await.result.map(|_| ())
    }

    fn abort_endpoint(&self, ep: u8) {
        let mut st = self.state.borrow_mut();
        st.abort_gen[ep_slot(ep)] += 1;
        st.changed();
    }

    fn pending_transfers(&self) -> u32 {
        self.state.borrow().pending
    }
}

impl ReplayHost {
    /// A bulk or interrupt IN read into `buf`; a failed read leaves the bytes it moved there.
    async fn read_in(
        &self,
        kind: TxKind,
        ep: u8,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, TransferError> {
        let req = Request {
            kind,
            ep,
            setup: None,
            requested: buf.len() as u32,
            out: Vec::new(),
        };
        let served = self.serve(req, timeout).await;
        match served.result {
            Ok(data) if data.len() > buf.len() => Err(TransferError::Overflow),
            Ok(data) => {
                buf[..data.len()].copy_from_slice(&data);
                Ok(data.len())
            }
            Err(e) => {
                let n = served.partial.len().min(buf.len());
                buf[..n].copy_from_slice(&served.partial[..n]);
                Err(e)
            }
        }
    }
}
