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
//!   ([`UsbHost::abort_endpoint`], [`UsbHost::now`]): it must not block.
//! - The [`MiniDrvCallback`] it is handed, only from inside the `acquire_item_data` it came with.
//! - The [`RunContext`] of `begin_run`, at any time during the run: its clock, and its log and
//!   fault records for what the driver wants in the trace about itself.
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

use std::rc::Rc;

use async_trait::async_trait;
use scanemu::engine::ScanJob;
use scanemu::host::UsbHost;
use scanemu::time::Instant;

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

/// What the runner lends a driver for one run: the run's clock, and the trace records a driver
/// may write about itself. See the module documentation.
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
    /// own faults and log lines. In-process drivers need nothing.
    fn begin_run(&self, _run: Rc<dyn RunContext>) {}

    /// Called once when the run is over (finished, out of budget or hung), before the trace is
    /// closed: stop what [`MiniDriver::begin_run`] started and let go of its context.
    fn end_run(&self) {}
}
