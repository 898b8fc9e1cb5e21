//! The driver contract: the transfer side of a WIA 1.0 minidriver, as a small async trait.
//! The WIA 2.0 stream contract is [`wia2`], beside it.
//!
//! This is what an outside author implements to put a Rust driver under test (reference §1.5,
//! §1.6, §1.8). It is stable: it names only this module's types, [`Hresult`] and [`ItMsg`]
//! (`crate::wia`), scanemu's [`UsbHost`] and [`ScanJob`], and the time values of
//! `scanemu::time`; never the runner's executor or its trace. (Drivers in other languages speak
//! the JSON-lines protocol of `conformance/DRIVER-PROTOCOL.md`, which maps onto the same calls.)
//!
//! # What the runner calls, and when
//!
//! One run is one scenario under one service model. For each run the runner calls, in order:
//! 1. [`MiniDriver::begin_run`] once, with the run's [`RunContext`], after the device is
//!    attached and before anything else;
//! 2. [`MiniDriver::supports_async_cancel`], read once per run for the rules;
//! 3. [`MiniDriver::acquire_item_data`] (`drvAcquireItemData`) once per acquisition of the
//!    scenario, one at a time: the next begins only after the previous returned;
//! 4. [`MiniDriver::notify_pnp_event`] (`drvNotifyPnPEvent`) with [`PnpEvent::CancelIo`] at any
//!    time, also while no acquisition runs and also from inside the driver's own
//!    [`MiniDrvCallback::call`] (the application may cancel from its callback);
//! 5. [`MiniDriver::end_run`] once, when the run is over: finished, out of budget or hung.
//!
//! Everything runs on one thread. An acquisition is a future; `notify_pnp_event` runs between
//! two of its awaits (never in the middle of the driver's own code), so drivers keep their
//! cancel flag in a `Cell`. A budget that runs out drops the acquisition's future at an await.
//!
//! # What a driver may call
//!
//! - The [`UsbHost`] it is handed: transfers, `clear_halt`, `reset_device`, `sleep` only from
//!   inside `acquire_item_data`; from `notify_pnp_event` only what does not wait
//!   ([`UsbHost::abort_endpoint`], [`UsbHost::now`], [`Urb::cancel`]): it must not block.
//! - The [`MiniDrvCallback`] it is handed, only from inside the `acquire_item_data` it came with.
//! - The [`RunContext`] of `begin_run`, at any time during the run: its clock, its log and
//!   fault records for what the driver wants in the trace about itself, and
//!   [`RunContext::submit`] for transfers that run on their own (below).
//!
//! # Transfers in flight: submit now, await later
//!
//! An awaited [`UsbHost`] call is one transfer at a time. A driver that keeps reads queued
//! ahead (the way real drivers keep several URBs on the bulk pipe) submits them instead:
//! [`RunContext::submit`] starts a [`UsbRequest`] at once as a task of its own and returns an
//! [`Urb`] handle. The transfer moves while the driver does other things (calls back, polls
//! status on EP0, handles `notify_pnp_event`); the driver takes its [`Completion`] with
//! [`Urb::wait`] or, among several, with [`RunContext::first_completed`], and may end one
//! early with [`Urb::cancel`] (usable from `notify_pnp_event`: it does not block).
//! [`UsbHost::abort_endpoint`] ends submitted transfers on that endpoint too.
//!
//! - Transfers on one endpoint move and complete in submission order (EP0 is one queue for
//!   both directions), as a host controller's endpoint queue does.
//! - Each submitted transfer completes exactly once: `Ok`, an error of the transfer, or
//!   `Cancelled`. A submitted transfer still in flight when `acquire_item_data` returns counts
//!   as pending for the rules (USB-NO-PENDING), like one the driver forgot.
//! - Everything stays deterministic: submission order, completion order and completion times
//!   depend only on virtual time.
//!
//! # What the runner guarantees
//!
//! - **One clock.** [`UsbHost::now`], [`UsbHost::sleep`] and [`RunContext::now`] are the same
//!   clock as the device's: virtual time in-process (it moves only while every task waits, so a
//!   driver's code between two awaits takes no time at all), the wall clock over USB/IP and
//!   libusb.
//! - **Determinism.** In virtual time the same driver gives the same trace on every run.
//! - **A fresh start per run.** Each run has a newly attached device in its power-on state (or
//!   a recording served from its start), a new host and a new context; a driver object may be reused across runs only through
//!   `begin_run`/`end_run`.
//! - **Everything is observed.** Every transfer and every device event goes into the run's
//!   trace; the driver does not report its own I/O.

pub mod wia2;

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::task::{Poll, Waker};

use async_trait::async_trait;
use scanemu::engine::ScanJob;
use scanemu::host::{Setup, TransferError, UsbHost};
use scanemu::time::{Duration, Instant};

use crate::wia::{Hresult, ItMsg};

/// What the service passes to `drvAcquireItemData` (the parts of MINIDRV_TRANSFER_CONTEXT that a
/// banded transfer needs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferContext {
    /// TYMED_CALLBACK or TYMED_MULTIPAGE_CALLBACK.
    pub tymed: i32,
    /// lBufferSize: the most bytes one IT_MSG_DATA callback may carry.
    pub buffer_size: u32,
    /// The item's scan settings (resolution, mode, area, source, pages).
    pub job: ScanJob,
    /// The interface number to address vendor requests to.
    pub interface: u16,
}

/// One call of `MiniDrvCallback`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallbackArgs<'a> {
    /// lReason: IT_MSG_STATUS, IT_MSG_DATA, IT_MSG_NEW_PAGE, ...
    pub reason: ItMsg,
    /// lStatus: IT_STATUS_* bits.
    pub status: i32,
    /// lPercentComplete: 0..=100.
    pub percent: i32,
    /// lOffset: byte offset of this band from the start of the page's buffer.
    pub offset: i64,
    /// lLength: bytes in this band.
    pub length: i64,
    /// The band's bytes (`length` of them) for IT_MSG_DATA; empty otherwise.
    pub data: &'a [u8],
}

/// `IWiaMiniDrvCallBack::MiniDrvCallback`, provided by the service to the driver.
#[async_trait(?Send)]
pub trait MiniDrvCallback {
    /// Reports progress or hands over a band. `S_OK` to go on, `S_FALSE` when the application
    /// cancelled, or the application's error.
    async fn call(&self, args: CallbackArgs<'_>) -> Hresult;
}

/// Events the service delivers through `drvNotifyPnPEvent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PnpEvent {
    /// WIA_EVENT_CANCEL_IO: "cancel all current I/O operations as soon as possible".
    CancelIo,
}

/// A request a driver submits to run on its own ([`RunContext::submit`]): one of the
/// [`UsbHost`] transfers, or a timer. A `timeout` of [`Duration::ZERO`] means none.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsbRequest {
    /// [`UsbHost::control_in`]: completes with the reply bytes.
    ControlIn {
        /// The SETUP packet (device-to-host).
        setup: Setup,
        /// The transfer's timeout.
        timeout: Duration,
    },
    /// [`UsbHost::control_out`] of `data` (`setup.length` is taken from it).
    ControlOut {
        /// The SETUP packet.
        setup: Setup,
        /// The data stage.
        data: Vec<u8>,
        /// The transfer's timeout.
        timeout: Duration,
    },
    /// [`UsbHost::bulk_in`] of up to `length` bytes: completes with the bytes read.
    BulkIn {
        /// The endpoint address (`0x81`).
        ep: u8,
        /// The most bytes to read.
        length: usize,
        /// The transfer's timeout.
        timeout: Duration,
    },
    /// [`UsbHost::bulk_out`] of `data`.
    BulkOut {
        /// The endpoint address.
        ep: u8,
        /// The bytes to write.
        data: Vec<u8>,
        /// The transfer's timeout.
        timeout: Duration,
    },
    /// [`UsbHost::interrupt_in`] of up to `length` bytes: completes with the bytes read.
    InterruptIn {
        /// The endpoint address.
        ep: u8,
        /// The most bytes to read.
        length: usize,
        /// The transfer's timeout.
        timeout: Duration,
    },
    /// A timer of the run's clock: completes `Ok(0)` after `duration`, so that "a transfer or
    /// a timeout, whichever comes first" is one [`RunContext::first_completed`].
    Sleep {
        /// How long.
        duration: Duration,
    },
}

impl UsbRequest {
    /// The endpoint queue the request waits in: 0 for control transfers (EP0 is one queue),
    /// the endpoint address for bulk and interrupt transfers, `None` for a timer.
    pub fn queue(&self) -> Option<u8> {
        match self {
            UsbRequest::ControlIn { .. } | UsbRequest::ControlOut { .. } => Some(0),
            UsbRequest::BulkIn { ep, .. }
            | UsbRequest::BulkOut { ep, .. }
            | UsbRequest::InterruptIn { ep, .. } => Some(*ep),
            UsbRequest::Sleep { .. } => None,
        }
    }
}

/// How a submitted request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The bytes moved (read, written, or the reply's length; 0 for a timer), or how the
    /// transfer failed. A transfer ended by [`Urb::cancel`] is `Cancelled { actual: 0 }`.
    pub result: Result<usize, TransferError>,
    /// The bytes read, for an IN transfer that succeeded; empty otherwise.
    pub data: Vec<u8>,
    /// When it completed, on the run's clock.
    pub at: Instant,
}

/// A submitted request ([`RunContext::submit`]). Clones name the same request. Dropping the
/// handles does not cancel it: it runs to its end (or the run's) like a forgotten URB.
#[derive(Clone)]
pub struct Urb {
    inner: Rc<UrbInner>,
}

struct UrbInner {
    seq: u64,
    queue: Option<u8>,
    state: RefCell<UrbState>,
}

/// Ends an [`Urb`] early: set by whoever runs it.
type Canceller = Box<dyn FnOnce(&Urb)>;

#[derive(Default)]
struct UrbState {
    completion: Option<Completion>,
    waiters: Vec<Waker>,
    canceller: Option<Canceller>,
}

impl Urb {
    /// A request in flight, the `seq`-th submitted in the run, waiting in `queue`
    /// ([`UsbRequest::queue`]). Drivers get theirs from [`RunContext::submit`].
    pub(crate) fn new(seq: u64, queue: Option<u8>) -> Urb {
        Urb {
            inner: Rc::new(UrbInner {
                seq,
                queue,
                state: RefCell::default(),
            }),
        }
    }

    /// Its place in the run's submission order, from 1.
    pub fn seq(&self) -> u64 {
        self.inner.seq
    }

    /// The endpoint queue it waits in ([`UsbRequest::queue`]).
    pub fn queue(&self) -> Option<u8> {
        self.inner.queue
    }

    /// True once it completed (or was cancelled).
    pub fn is_complete(&self) -> bool {
        self.inner.state.borrow().completion.is_some()
    }

    /// Its completion, once there is one.
    pub fn completion(&self) -> Option<Completion> {
        self.inner.state.borrow().completion.clone()
    }

    /// Waits for its completion.
    pub fn wait(&self) -> impl Future<Output = Completion> + '_ {
        std::future::poll_fn(move |cx| {
            let mut st = self.inner.state.borrow_mut();
            match &st.completion {
                Some(c) => Poll::Ready(c.clone()),
                None => {
                    st.waiters.push(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
    }

    /// Cancels it if it is still in flight: it completes at once, now, with
    /// `Cancelled { actual: 0 }` (whatever had reached it is dropped with it), the transfer
    /// behind it on its endpoint moves up, and the trace records the transfer as cancelled.
    /// Does nothing to a request that already completed. Never blocks.
    pub fn cancel(&self) {
        let canceller = {
            let mut st = self.inner.state.borrow_mut();
            if st.completion.is_some() {
                return;
            }
            st.canceller.take()
        };
        if let Some(cancel) = canceller {
            cancel(self);
        }
    }

    /// What [`Urb::cancel`] runs (once, while the request is in flight).
    pub(crate) fn set_canceller(&self, cancel: Box<dyn FnOnce(&Urb)>) {
        self.inner.state.borrow_mut().canceller = Some(cancel);
    }

    /// The request ended with `completion` (the first completion counts; later ones are
    /// ignored). Wakes whoever waits for it.
    pub(crate) fn complete(&self, completion: Completion) {
        let waiters = {
            let mut st = self.inner.state.borrow_mut();
            if st.completion.is_some() {
                return;
            }
            st.completion = Some(completion);
            st.canceller = None;
            std::mem::take(&mut st.waiters)
        };
        for w in waiters {
            w.wake();
        }
    }
}

impl std::fmt::Debug for Urb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Urb")
            .field("seq", &self.inner.seq)
            .field("queue", &self.inner.queue)
            .field("completion", &self.inner.state.borrow().completion)
            .finish()
    }
}

/// What the runner lends a driver for one run: the run's clock, the trace records a driver may
/// write about itself, and transfers submitted to run on their own. See the module
/// documentation.
#[async_trait(?Send)]
pub trait RunContext {
    /// The run's current time: the same clock as [`UsbHost::now`].
    fn now(&self) -> Instant;

    /// Records a line the driver logged (an external driver's stderr): a `log` event of the
    /// driver at [`RunContext::now`].
    fn log(&self, text: &str);

    /// Records that the driver failed in a way its adapter detected (a crashed or silent
    /// process, a broken protocol): a `driver-fault` event at [`RunContext::now`], which ends
    /// the acquisition in progress for the rules.
    fn fault(&self, what: &str);

    /// Starts `request` now, as a task of its own, on the run's host, and returns its handle
    /// at once. It waits behind the transfers submitted before it on the same endpoint
    /// ([`UsbRequest::queue`]), and moves while the driver does anything else. It is
    /// recorded in the trace when it completes, as an awaited transfer is.
    fn submit(&self, request: UsbRequest) -> Urb;

    /// Waits until one of `urbs` has completed and returns the index of the one that completed
    /// first: the earliest [`Completion::at`], then the earliest [`Urb::seq`]. When that
    /// completion happened at the current instant, it first lets the instant finish (every
    /// task that can still run now runs), so that requests completing together are ordered by
    /// submission and never by the order the simulation happened to finish them. Returns at
    /// once if one of them completed earlier; `None` at once if `urbs` is empty.
    async fn first_completed(&self, urbs: &[Urb]) -> Option<usize>;
}

/// The transfer side of a WIA minidriver. See the module documentation.
#[async_trait(?Send)]
pub trait MiniDriver {
    /// True if the driver honours WIA_EVENT_CANCEL_IO during a transfer.
    fn supports_async_cancel(&self) -> bool;

    /// `drvAcquireItemData`: read the image from the device through `host` and hand each band
    /// to `callback`; return `S_OK` when complete, **`S_FALSE` when cancelled**, or the error
    /// the callback returned.
    async fn acquire_item_data(
        &self,
        ctx: &TransferContext,
        host: &dyn UsbHost,
        callback: &dyn MiniDrvCallback,
    ) -> Hresult;

    /// `drvNotifyPnPEvent`. Must not block; it may abort transfers through `host`.
    fn notify_pnp_event(&self, event: PnpEvent, host: &dyn UsbHost);

    /// Called once per run, before anything else, with the run's context: a driver that lives
    /// outside the simulation (an external process) starts here and keeps `run` to record its
    /// own faults and log lines; a driver that submits transfers keeps it for
    /// [`RunContext::submit`]. Other in-process drivers need nothing.
    fn begin_run(&self, _run: Rc<dyn RunContext>) {}

    /// Called once when the run is over (finished, out of budget or hung), before the trace is
    /// closed: stop what [`MiniDriver::begin_run`] started and let go of its context.
    fn end_run(&self) {}
}
