//! The host-side API: what every driver uses to reach a scanner.
//!
//! [`UsbHost`] is one small trait for control, bulk and interrupt transfers with timeouts,
//! clearing a halt, resetting the device and aborting the transfers pending on an endpoint. It
//! also carries the session's clock (`now`, `sleep`), so a driver that polls a status every few
//! milliseconds waits in the same time as the device it talks to: virtual time in-process,
//! wall-clock time over USB/IP or against a real scanner.
//!
//! Implementations: [`inproc::InProcessHost`] drives the emulated scanner over the virtual bus in
//! the same thread; [`usbip::UsbIpHost`] reaches it (or any USB/IP server) over TCP;
//! `rusb::RusbHost` (cargo feature `rusb`) reaches a real scanner, or a replayed one, through
//! libusb; `capture::replay::ReplayHost` (a layer above) answers from a recording.
//!
//! Observation is a decorator: [`Observed`] wraps any host and reports every operation to a
//! [`HostObserver`] as a [`TransferRecord`] (traces, pcap captures and recordings are
//! observers). Hosts that own a device (in-process, replay) report its [`DeviceNote`]s to the
//! observer given to their `set_note_observer`.

pub mod inproc;
pub mod observed;
#[cfg(feature = "rusb")]
pub mod rusb;
pub mod usbip;

pub use observed::Observed;

use std::rc::Rc;

use async_trait::async_trait;

use crate::personality::DeviceNote;
use crate::time::{Duration, Instant};

pub use crate::usb::hc::SetupPacket as Setup;
use crate::usb::hc::{DIR_IN, RECIPIENT_INTERFACE, TYPE_VENDOR};

impl Setup {
    /// A vendor request to interface `index`, host to device.
    pub const fn vendor_out(request: u8, value: u16, index: u16, length: u16) -> Setup {
        Setup {
            request_type: TYPE_VENDOR | RECIPIENT_INTERFACE,
            request,
            value,
            index,
            length,
        }
    }

    /// A vendor request to interface `index`, device to host.
    pub const fn vendor_in(request: u8, value: u16, index: u16, length: u16) -> Setup {
        Setup {
            request_type: DIR_IN | TYPE_VENDOR | RECIPIENT_INTERFACE,
            request,
            value,
            index,
            length,
        }
    }
}

/// How a transfer failed, as a host controller reports it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// The endpoint answered STALL (EPIPE); clear the halt before using it again.
    #[error("endpoint stalled")]
    Stall,
    /// The timeout passed; `actual` bytes had moved before it did.
    #[error("timed out after {actual} bytes")]
    Timeout {
        /// Bytes transferred before the timeout.
        actual: usize,
    },
    /// The transfer was aborted by [`UsbHost::abort_endpoint`] or by a reset.
    #[error("cancelled after {actual} bytes")]
    Cancelled {
        /// Bytes transferred before the abort.
        actual: usize,
    },
    /// The device is gone (disconnected, or the transport closed).
    #[error("no device")]
    NoDevice,
    /// The device sent more data than the buffer holds.
    #[error("overflow")]
    Overflow,
    /// Any other transport failure, with the transport's words.
    #[error("i/o error: {0}")]
    Io(String),
}

impl TransferError {
    /// Bytes the transfer moved before it failed, as far as the error tells: the count of a
    /// timeout or an abort, 0 otherwise.
    pub fn actual(&self) -> usize {
        match self {
            TransferError::Timeout { actual } | TransferError::Cancelled { actual } => *actual,
            _ => 0,
        }
    }
}

/// Descriptors read from the device at enumeration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    /// idVendor.
    pub vendor_id: u16,
    /// idProduct.
    pub product_id: u16,
    /// The 18-byte device descriptor.
    pub device_descriptor: Vec<u8>,
    /// The full configuration descriptor (all interfaces and endpoints).
    pub config_descriptor: Vec<u8>,
}

/// The host-side API through which drivers reach a device. See the module documentation.
///
/// A `timeout` of [`Duration::ZERO`] means no timeout. Endpoint arguments are endpoint
/// addresses (`0x81` for IN endpoint 1).
///
/// Transfers may overlap (several futures polled at once): those on one endpoint complete in
/// the order they were first polled, as an endpoint's URB queue does. Dropping a transfer's
/// future before it completes cancels that one transfer (an URB unlink,
/// `libusb_cancel_transfer`); [`Observed`] reports a transfer when it finishes, so nothing
/// reports one dropped before: whoever drops it says so.
#[async_trait(?Send)]
pub trait UsbHost {
    /// The device's identity and descriptors.
    fn device_info(&self) -> DeviceInfo;

    /// The session's current time.
    fn now(&self) -> Instant;

    /// Waits for `duration` in the session's time.
    async fn sleep(&self, duration: Duration);

    /// A control transfer with an IN data stage of up to `setup.length` bytes.
    async fn control_in(&self, setup: Setup, timeout: Duration) -> Result<Vec<u8>, TransferError>;

    /// A control transfer with an OUT data stage (`data.len()` must equal `setup.length`).
    async fn control_out(
        &self,
        setup: Setup,
        data: &[u8],
        timeout: Duration,
    ) -> Result<(), TransferError>;

    /// Reads up to `buf.len()` bytes from a bulk IN endpoint; ends at a short packet or ZLP.
    async fn bulk_in(
        &self,
        ep: u8,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, TransferError>;

    /// Writes `data` to a bulk OUT endpoint.
    async fn bulk_out(
        &self,
        ep: u8,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, TransferError>;

    /// Reads one interrupt transfer of up to `buf.len()` bytes.
    async fn interrupt_in(
        &self,
        ep: u8,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, TransferError>;

    /// CLEAR_FEATURE(ENDPOINT_HALT) on `ep`, resetting its data toggle.
    async fn clear_halt(&self, ep: u8) -> Result<(), TransferError>;

    /// Resets the port and enumerates the device again.
    async fn reset_device(&self) -> Result<(), TransferError>;

    /// Aborts every transfer pending on `ep` (they end with [`TransferError::Cancelled`]), as
    /// usbscan's IOCTL_CANCEL_IO or libusb_cancel_transfer do. Takes effect at once.
    fn abort_endpoint(&self, ep: u8);

    /// Transfers submitted and not yet completed (0 if the transport cannot tell).
    fn pending_transfers(&self) -> u32 {
        0
    }
}

/// What a [`TransferRecord`] describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransferKind {
    /// A control transfer on EP0 (`ep` is 0x80 for IN, 0x00 for OUT).
    Control,
    /// A bulk transfer.
    Bulk,
    /// An interrupt transfer.
    Interrupt,
    /// CLEAR_FEATURE(ENDPOINT_HALT) on `ep`.
    ClearHalt,
    /// A port reset and re-enumeration.
    Reset,
    /// The host aborted the transfers pending on `ep`.
    Abort,
}

/// One finished host operation, as an observer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferRecord<'a> {
    /// When it was submitted (equal to `at` for operations that take no time).
    pub submitted: Instant,
    /// When it finished.
    pub at: Instant,
    /// What it was.
    pub kind: TransferKind,
    /// Endpoint address.
    pub ep: u8,
    /// The SETUP packet of control transfers.
    pub setup: Option<Setup>,
    /// Bytes requested (IN) or offered (OUT).
    pub requested: usize,
    /// Bytes moved.
    pub data: &'a [u8],
    /// How it ended.
    pub result: Result<(), TransferError>,
}

/// Receives every transfer and device note of a host: the hook traces and captures use.
pub trait HostObserver {
    /// A host operation finished (reported by [`Observed`]).
    fn transfer(&self, record: &TransferRecord<'_>);
    /// The device did something (reported by a host that owns a device).
    fn device(&self, note: &DeviceNote);
}

/// Several observers as one: each gets every record and note, in order.
#[derive(Clone, Default)]
pub struct Tee(pub Vec<Rc<dyn HostObserver>>);

impl HostObserver for Tee {
    fn transfer(&self, record: &TransferRecord<'_>) {
        for o in &self.0 {
            o.transfer(record);
        }
    }

    fn device(&self, note: &DeviceNote) {
        for o in &self.0 {
            o.device(note);
        }
    }
}

/// A host's count of device changes, with the tasks waiting for the next one.
///
/// Hosts that step a device model bump the count whenever a transfer moved data or changed the
/// device; transfers waiting on a NAK re-step when it moves.
pub(crate) trait ChangeCounter {
    /// The current count.
    fn change(&self) -> u64;
    /// Wakes `waker` at the next change.
    fn wake_on_change(&self, waker: std::task::Waker);
}

/// Waits until `counter` moves past `seen`, or `sleep` (if any) completes.
pub(crate) struct WaitChange<'a, C: ChangeCounter> {
    /// The host's counter.
    pub counter: &'a C,
    /// The count the waiter last saw.
    pub seen: u64,
    /// A deadline, if the wait has one.
    pub sleep: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>>,
}

impl<C: ChangeCounter> std::future::Future for WaitChange<'_, C> {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.counter.change() != self.seen {
            return std::task::Poll::Ready(());
        }
        if let Some(sleep) = self.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        self.counter.wake_on_change(cx.waker().clone());
        std::task::Poll::Pending
    }
}
