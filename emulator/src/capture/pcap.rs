//! usbmon captures of a host: every transfer as a pcap record that Wireshark, tshark and
//! umockdev read. The format itself (records, the pcap writer, errno values) is
//! [`crate::usb::usbmon`].
//!
//! [`PcapObserver`] is a [`HostObserver`] decorator that turns
//! every [`TransferRecord`] of a host into its `S` and `C` records and passes everything on to
//! the observer it wraps. Because a record reaches observers when its transfer finishes, each
//! URB's `S` record is written right before its `C` record (in completion order) and carries
//! the submission time: transfers that overlapped in time appear one after the other, with the
//! later one's `S` timestamp earlier than the `C` before it. That is also the order umockdev's
//! in-order pcap replay handles best.

use std::cell::{Cell, RefCell};
use std::io::{self, Write};
use std::rc::Rc;

use crate::host::{DeviceInfo, HostObserver, TransferError, TransferKind, TransferRecord};
use crate::personality::DeviceNote;
use crate::usb::descriptor;
use crate::usb::descriptor_type;
use crate::usb::hc::ENUMERATION_ADDRESS;
use crate::usb::speed::Speed;
use crate::usb::usbmon::{errno, EventType, TransferType, UsbmonEvent, URB_DIR_IN};

/// The writer a [`PcapObserver`] writes with.
pub use crate::usb::usbmon::PcapWriter;

/// The status usbmon reports for a transfer that ended with `error`.
pub fn status_of(error: &TransferError) -> i32 {
    -match error {
        TransferError::Stall => errno::EPIPE,
        TransferError::Timeout { .. } => errno::ETIMEDOUT,
        TransferError::Cancelled { .. } => errno::ENOENT,
        TransferError::NoDevice => errno::ENODEV,
        TransferError::Overflow => errno::EOVERFLOW,
        TransferError::Io(_) => errno::EPROTO,
    }
}

/// Where the captured device sits, and what the captured records say about it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CaptureConfig {
    /// Bus number (default 1).
    pub bus: u16,
    /// Device address (default [`ENUMERATION_ADDRESS`], the address the in-process host
    /// assigns).
    pub device: u8,
    /// Bus speed, which fixes the unit of interrupt intervals (default high speed:
    /// microframes).
    pub speed: Speed,
    /// The first URB id (default 1); ids count up from it.
    pub first_urb_id: u64,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            bus: 1,
            device: ENUMERATION_ADDRESS,
            speed: Speed::High,
            first_urb_id: 1,
        }
    }
}

impl CaptureConfig {
    /// The default configuration at `speed`.
    pub fn with_speed(speed: Speed) -> CaptureConfig {
        CaptureConfig {
            speed,
            ..CaptureConfig::default()
        }
    }
}

/// bInterval of every endpoint address in a configuration descriptor (0 where unknown).
fn endpoint_intervals(config_descriptor: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for d in descriptor::walk(config_descriptor) {
        if d.len() >= 7 && d[1] == descriptor_type::ENDPOINT {
            let ep = d[2];
            out[usize::from(ep & 0x0f) + if ep & 0x80 != 0 { 16 } else { 0 }] = d[6];
        }
    }
    out
}

/// A [`HostObserver`] that writes every transfer of a host as usbmon records, then passes the
/// record on to the observer it wraps (if any). See the module documentation.
///
/// Control, bulk and interrupt transfers and CLEAR_FEATURE(ENDPOINT_HALT) give an `S` and a
/// `C` record each; resets and aborts are not URBs and only reach the wrapped observer (the
/// aborted transfers themselves end in `C` records with `-ENOENT`). A write error is kept and
/// returned by [`PcapObserver::finish`]; nothing more is written after it.
pub struct PcapObserver<W: Write> {
    writer: RefCell<Option<PcapWriter<W>>>,
    error: RefCell<Option<io::Error>>,
    inner: Option<Rc<dyn HostObserver>>,
    config: CaptureConfig,
    intervals: Cell<[u8; 32]>,
    next_id: Cell<u64>,
}

impl<W: Write> PcapObserver<W> {
    /// Captures to `writer`; `info` gives the endpoints' polling intervals (see
    /// [`PcapObserver::set_device_info`] when the host does not exist yet).
    pub fn new(writer: PcapWriter<W>, info: &DeviceInfo, config: CaptureConfig) -> Self {
        PcapObserver {
            writer: RefCell::new(Some(writer)),
            error: RefCell::new(None),
            inner: None,
            next_id: Cell::new(config.first_urb_id.max(1)),
            config,
            intervals: Cell::new(endpoint_intervals(&info.config_descriptor)),
        }
    }

    /// Passes every record and note on to `inner` as well.
    pub fn wrapping(mut self, inner: Rc<dyn HostObserver>) -> Self {
        self.inner = Some(inner);
        self
    }

    /// The observer records and notes are passed on to, if any.
    pub fn inner(&self) -> Option<&Rc<dyn HostObserver>> {
        self.inner.as_ref()
    }

    /// Takes the endpoints' polling intervals from `info` (the descriptors the host read).
    pub fn set_device_info(&self, info: &DeviceInfo) {
        self.intervals
            .set(endpoint_intervals(&info.config_descriptor));
    }

    /// The capture settings.
    pub fn config(&self) -> &CaptureConfig {
        &self.config
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.writer.borrow().as_ref().map_or(0, PcapWriter::records)
    }

    /// Flushes and returns the writer, or the first write error.
    pub fn finish(&self) -> io::Result<W> {
        if let Some(e) = self.error.borrow_mut().take() {
            return Err(e);
        }
        match self.writer.borrow_mut().take() {
            Some(w) => w.into_inner(),
            None => Err(io::Error::other("capture already finished")),
        }
    }

    /// usbmon's `interval` for URBs on `ep`.
    fn interval(&self, ep: u8) -> i32 {
        let b = self.intervals.get()[usize::from(ep & 0x0f) + if ep & 0x80 != 0 { 16 } else { 0 }];
        if b == 0 {
            return 0;
        }
        match self.config.speed {
            Speed::Full => i32::from(b),
            _ => 1 << (b.clamp(1, 16) - 1),
        }
    }

    fn write(&self, events: &[UsbmonEvent<'_>]) {
        if self.error.borrow().is_some() {
            return;
        }
        let mut guard = self.writer.borrow_mut();
        let Some(w) = guard.as_mut() else { return };
        for e in events {
            if let Err(err) = w.write_event(e) {
                *self.error.borrow_mut() = Some(err);
                return;
            }
        }
    }

    /// Writes the `S` record of a transfer that never completed (a recording's transfer still
    /// pending when its capture stopped); `record.at` and `record.result` are not used. Resets
    /// and aborts write nothing. Nothing is passed on to the wrapped observer.
    pub fn pending(&self, record: &TransferRecord<'_>) {
        if let Some(submit) = self.submission(record) {
            self.write(&[submit]);
        }
    }

    /// The `S` record of `r`, with a fresh URB id (`None` for resets and aborts).
    fn submission<'r>(&self, r: &TransferRecord<'r>) -> Option<UsbmonEvent<'r>> {
        let (transfer_type, endpoint) = match r.kind {
            TransferKind::Control => (TransferType::Control, r.ep & 0x80),
            TransferKind::ClearHalt => (TransferType::Control, 0x00),
            TransferKind::Bulk => (TransferType::Bulk, r.ep),
            TransferKind::Interrupt => (TransferType::Interrupt, r.ep),
            TransferKind::Reset | TransferKind::Abort => return None,
        };
        let is_in = endpoint & 0x80 != 0;
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1).max(1));
        let interval = if transfer_type == TransferType::Interrupt {
            self.interval(endpoint)
        } else {
            0
        };
        let requested = u32::try_from(r.requested).unwrap_or(u32::MAX);
        Some(UsbmonEvent {
            id,
            event: EventType::Submit,
            transfer_type,
            endpoint,
            device: self.config.device,
            bus: self.config.bus,
            setup: r.setup.map(|s| s.to_bytes()),
            at: r.submitted,
            status: -errno::EINPROGRESS,
            urb_len: requested,
            data: if is_in {
                &[]
            } else {
                &r.data[..r.data.len().min(r.requested)]
            },
            interval,
            start_frame: 0,
            xfer_flags: if is_in { URB_DIR_IN } else { 0 },
            ndesc: 0,
        })
    }

    fn capture(&self, r: &TransferRecord<'_>) {
        let Some(submit) = self.submission(r) else {
            return;
        };
        let is_in = submit.endpoint & 0x80 != 0;
        // IN: the bytes that arrived (partial data of a failed transfer included); OUT: the
        // bytes the device took.
        let actual = match (&r.result, is_in) {
            (_, true) => r.data.len(),
            (Ok(()), false) => r.requested,
            (Err(_), false) => r.data.len().min(r.requested),
        };
        let complete = UsbmonEvent {
            event: EventType::Complete,
            setup: None,
            at: r.at,
            status: r.result.as_ref().map_or_else(status_of, |()| 0),
            urb_len: u32::try_from(actual).unwrap_or(u32::MAX),
            data: if is_in { r.data } else { &[] },
            ..submit.clone()
        };
        self.write(&[submit, complete]);
    }
}

impl<W: Write> HostObserver for PcapObserver<W> {
    fn transfer(&self, record: &TransferRecord<'_>) {
        self.capture(record);
        if let Some(inner) = &self.inner {
            inner.transfer(record);
        }
    }

    fn device(&self, note: &DeviceNote) {
        if let Some(inner) = &self.inner {
            inner.device(note);
        }
    }
}
