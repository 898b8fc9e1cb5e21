//! The driver model: the transfer side of a WIA 1.0 minidriver, as a small async trait.
//!
//! This is what an outside author implements to put a Rust driver under test (reference §1.5,
//! §1.6, §1.8):
//! - [`MiniDriver::acquire_item_data`] is `drvAcquireItemData`: read the image from the device
//!   through the [`UsbHost`] and hand each band to the [`MiniDrvCallback`]; return `S_OK` when
//!   complete, **`S_FALSE` when cancelled**, or the error the callback returned.
//! - [`MiniDriver::notify_pnp_event`] is `drvNotifyPnPEvent`; the runner calls it with
//!   [`PnpEvent::CancelIo`] at any time, concurrently with a running acquisition (on the same
//!   thread, between two awaits of the acquisition), so drivers keep their cancel flag in a `Cell`.
//! - [`MiniDriver::supports_async_cancel`] says whether the driver claims to honour that event.

use async_trait::async_trait;
use scanemu::engine::ScanJob;
use scanemu::host::UsbHost;

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

/// The transfer side of a WIA minidriver. See the module documentation.
#[async_trait(?Send)]
pub trait MiniDriver {
    /// True if the driver honours WIA_EVENT_CANCEL_IO during a transfer.
    fn supports_async_cancel(&self) -> bool;

    /// `drvAcquireItemData`.
    async fn acquire_item_data(
        &self,
        ctx: &TransferContext,
        host: &dyn UsbHost,
        callback: &dyn MiniDrvCallback,
    ) -> Hresult;

    /// `drvNotifyPnPEvent`. Must not block; it may abort transfers through `host`.
    fn notify_pnp_event(&self, event: PnpEvent, host: &dyn UsbHost);

    /// Called by the runner once per run, before anything else, with the run's executor and
    /// trace: a driver that lives outside the simulation (an external process) starts here and
    /// records its own faults and log lines. In-process drivers need nothing.
    fn begin_run(&self, _sim: &scanemu::sim::Sim, _trace: &crate::trace::Recorder) {}

    /// Called by the runner once when the run is over (finished, out of budget or hung), before
    /// the trace is closed: stop what [`MiniDriver::begin_run`] started.
    fn end_run(&self) {}
}
