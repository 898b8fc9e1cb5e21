//! The WIA 2.0 driver contract: the stream transfer side of a minidriver, as a small async trait.
//!
//! Since Vista a scanner minidriver transfers through `IWiaMiniDrvTransferCallback`
//! (`GetNextStream`, `SendMessage`) instead of WIA 1.0's banded `MiniDrvCallback`
//! (`reference/wia2-stream.md` §1). This module is that contract, beside [`super::MiniDriver`]
//! and in the same style: it names only its own types, [`Hresult`], [`TransferMsg`],
//! [`SeekOrigin`] (`crate::wia`), scanemu's [`UsbHost`] and [`ScanJob`], and the driver
//! [`RunContext`] and [`PnpEvent`] it shares with WIA 1.0. It is stable, for outside authors;
//! `conformance/WIA2.md` describes the model around it and the JSON-lines protocol messages that
//! map onto the same calls for drivers in other languages.
//!
//! # What the runner calls, and when
//!
//! One run is one scenario. For each driver instance the runner calls, in order:
//! 1. [`MiniDriver2::begin_run`] once, with the run's [`RunContext`];
//! 2. [`MiniDriver2::acquire_children_capable`], read when a folder is downloaded: true is
//!    `WIA_TRANSFER_ACQUIRE_CHILDREN_CAPABLE` in `WIA_IPS_TRANSFER_CAPABILITIES`, and the service
//!    then calls drvAcquireItemData once for the folder with
//!    [`WIA_MINIDRV_TRANSFER_ACQUIRE_CHILDREN`]; false makes the service walk the folder and call
//!    drvAcquireItemData once per child;
//! 3. [`MiniDriver2::acquire_item_data`] (`drvAcquireItemData`) once per download or upload (or
//!    per child of a walked folder), one at a time;
//! 4. [`MiniDriver2::notify_pnp_event`] (`drvNotifyPnPEvent`) with [`PnpEvent::CancelIo`] at any
//!    time: while no transfer runs, while the driver waits for the device, while it is blocked in
//!    a stream's `Write`, and from inside its own [`TransferCallback2`] calls (the application may
//!    call `IWiaTransfer::Cancel` from its own callbacks);
//! 5. [`MiniDriver2::end_run`] once, when the run is over.
//!
//! A scenario may restart the WIA service in the middle of a transfer (HLK H21): the runner then
//! drops the driver's `acquire_item_data` future at an await (the process died), cancels the USB
//! transfers it left pending, calls `end_run`, and builds a new driver instance that starts with
//! `begin_run`. The device keeps whatever state the dead driver left it in.
//!
//! Everything runs on one thread, as for WIA 1.0: `notify_pnp_event` runs between two awaits of
//! the transfer, so drivers keep their cancel flag in a `Cell`.
//!
//! # The transfer
//!
//! For a download the driver asks the service for one stream per item or page
//! ([`TransferCallback2::get_next_stream`]; TYMED_FILE: one per page of a feeder, one per child
//! of a folder; TYMED_MULTIPAGE_FILE: one for all pages, with [`TransferMsg::NEW_PAGE`] between
//! pages), writes the image file into it through [`AppStream`], reports progress with
//! [`TransferCallback2::send_message`], releases the stream ([`AppStream::release`]) and asks for
//! the next one. The service sends END_OF_STREAM and END_OF_TRANSFER itself. For an upload the
//! driver gets the application's source stream from `get_next_stream` and reads it.
//!
//! What the driver gets back, and what the HLK requirement `Device.Imaging.Scanner.Base.dataTransfer`
//! then asks of it (the rules `WIA2-H*` judge each):
//! - `get_next_stream`: `S_OK` with a stream; `S_OK` with no stream (a NULL pointer: fail with a
//!   standard COM error, H16); `S_FALSE`: the whole transfer is cancelled (abort every item, H13,
//!   return S_FALSE); `WIA_STATUS_SKIP_ITEM`: skip this item and go on with the next (H11) and
//!   return S_OK in the end (H12); an error: return a failure (H15).
//! - `send_message`: `S_OK`; `S_FALSE`: cancelled (return S_FALSE, H10; call nothing more, H27);
//!   `WIA_STATUS_SKIP_ITEM`: the application skips the current item (touch its stream no more,
//!   H24); an error: return a failure (H17). For a [`TransferMsg::DEVICE_STATUS`] with an error
//!   status, the error the handlers did not handle comes back: return exactly it.
//! - After a cancel every later `get_next_stream` and `send_message` returns S_FALSE (the
//!   service's "sticky" cancel, reference V2).
//!
//! # What a driver may call
//!
//! - The [`UsbHost`] it is handed, as for WIA 1.0: transfers, `clear_halt`, `reset_device`,
//!   `sleep` only from inside `acquire_item_data`; from `notify_pnp_event` only what does not
//!   wait ([`UsbHost::abort_endpoint`], [`UsbHost::now`]).
//! - The [`TransferCallback2`] it is handed, from inside the `acquire_item_data` it came with.
//! - The streams it got. Every call is recorded in the trace, also calls after `release` and
//!   after `acquire_item_data` returned (the rules judge them). Dropping an [`AppStream`] without
//!   [`AppStream::release`] is a reference never released.
//! - The [`RunContext`] of `begin_run`: its clock, and its log and fault records. A driver that
//!   models a crash (an access violation) records it with [`RunContext::fault`] and returns.

use std::rc::Rc;

use async_trait::async_trait;
use scanemu::engine::{ScanJob, ScanMode};
use scanemu::host::UsbHost;

pub use super::{PnpEvent, RunContext};
use crate::wia::{Hresult, SeekOrigin, TransferMsg};

pub use crate::wia::{
    TYMED_FILE, TYMED_MULTIPAGE_FILE, WIA_MINIDRV_TRANSFER_ACQUIRE_CHILDREN,
    WIA_MINIDRV_TRANSFER_DOWNLOAD, WIA_MINIDRV_TRANSFER_UPLOAD,
};

/// The image file format of a download: what the stream holds.
///
/// `Pnm` is Netpbm's binary format, one image per page: `P4` (lineart, 1 = black, rows padded to
/// whole bytes), `P5` (gray8, gray16 big-endian) or `P6` (color24, color48 big-endian), a header
/// `P5\n<width> <height>\n<maxval>\n` (no maxval line for `P4`) and then the page's bytes as the
/// device sends them. A multi-page file is its pages' files one after the other, which Netpbm
/// tools read as a multi-image file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    /// Netpbm P4/P5/P6.
    Pnm,
}

impl ImageFormat {
    /// The name traces show (`pnm`).
    pub const fn name(self) -> &'static str {
        match self {
            ImageFormat::Pnm => "pnm",
        }
    }

    /// The header that starts one page's file, for a page of `job`: after it come the page's
    /// `job.page_bytes()` bytes as the device sends them.
    pub fn page_header(self, job: &ScanJob) -> Vec<u8> {
        let (w, h) = (job.width_px, job.lines_per_page());
        match job.mode {
            ScanMode::Lineart => format!("P4\n{w} {h}\n"),
            ScanMode::Gray8 => format!("P5\n{w} {h}\n255\n"),
            ScanMode::Gray16 => format!("P5\n{w} {h}\n65535\n"),
            ScanMode::Color24 => format!("P6\n{w} {h}\n255\n"),
            ScanMode::Color48 => format!("P6\n{w} {h}\n65535\n"),
        }
        .into_bytes()
    }

    /// Bytes of one page's file: header and image.
    pub fn page_file_len(self, job: &ScanJob) -> u64 {
        self.page_header(job).len() as u64 + job.page_bytes()
    }
}

/// One item of the device's item tree, as the driver needs it to scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// The item's name (`bstrItemName`): `Flatbed`, `Feeder`, `Region2`, ...
    pub name: String,
    /// Its full name (`bstrFullItemName`), `0000\Root\Flatbed`.
    pub full_name: String,
    /// Its scan settings (resolution, mode, area, source, pages; ADF `pages` 0 = until the
    /// feeder is empty).
    pub job: ScanJob,
}

/// What the service passes to a WIA 2.0 `drvAcquireItemData`: lFlags and the parts of the
/// item's properties a stream transfer needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemContext {
    /// lFlags: [`WIA_MINIDRV_TRANSFER_DOWNLOAD`] or [`WIA_MINIDRV_TRANSFER_UPLOAD`], with
    /// [`WIA_MINIDRV_TRANSFER_ACQUIRE_CHILDREN`] for a folder.
    pub flags: i32,
    /// WIA_IPA_TYMED: [`TYMED_FILE`] or [`TYMED_MULTIPAGE_FILE`].
    pub tymed: i32,
    /// WIA_IPA_FORMAT.
    pub format: ImageFormat,
    /// The item the application transfers (for a folder: the folder; its job is the first
    /// child's).
    pub item: Item,
    /// With ACQUIRE_CHILDREN: the folder's children, in the order to transfer them, one stream
    /// each. Otherwise empty.
    pub children: Vec<Item>,
    /// The interface number to address vendor requests to.
    pub interface: u16,
}

impl ItemContext {
    /// True for a download.
    pub const fn is_download(&self) -> bool {
        self.flags & WIA_MINIDRV_TRANSFER_DOWNLOAD != 0
    }

    /// True when the driver should transfer the folder's children.
    pub const fn acquire_children(&self) -> bool {
        self.flags & WIA_MINIDRV_TRANSFER_ACQUIRE_CHILDREN != 0
    }

    /// The items to transfer, in order: the children with ACQUIRE_CHILDREN, else the item.
    pub fn items(&self) -> Vec<&Item> {
        if self.acquire_children() {
            self.children.iter().collect()
        } else {
            vec![&self.item]
        }
    }
}

/// `WiaTransferParams`, as a driver passes it to `SendMessage`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferParams {
    /// lMessage: [`TransferMsg::STATUS`], [`TransferMsg::NEW_PAGE`],
    /// [`TransferMsg::DEVICE_STATUS`]. (END_OF_STREAM and END_OF_TRANSFER are the service's.)
    pub msg: TransferMsg,
    /// lPercentComplete: 0..=100.
    pub percent: i32,
    /// ulTransferredBytes: the bytes written to the current stream so far.
    pub bytes: u64,
    /// hrErrorStatus: the device status of a DEVICE_STATUS message; S_OK otherwise.
    pub status: Hresult,
}

impl TransferParams {
    /// A STATUS message.
    pub const fn status(percent: i32, bytes: u64) -> TransferParams {
        TransferParams {
            msg: TransferMsg::STATUS,
            percent,
            bytes,
            status: Hresult::S_OK,
        }
    }
}

/// What `GetNextStream` gave: its HRESULT and the stream, if any (`S_OK` without a stream is a
/// NULL pointer).
pub struct NextStream {
    /// What GetNextStream returned.
    pub hr: Hresult,
    /// The destination (download) or source (upload) stream.
    pub stream: Option<Box<dyn AppStream>>,
}

impl std::fmt::Debug for NextStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NextStream")
            .field("hr", &self.hr)
            .field("stream", &self.stream.as_ref().map(|s| s.id()))
            .finish()
    }
}

/// What `IStream::Write` or `Read` moved, and what it returned (a failed write may have moved
/// some bytes: a disk that filled up mid-write).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamIo {
    /// The HRESULT.
    pub hr: Hresult,
    /// Bytes written or read (`*pcbWritten`, `*pcbRead`).
    pub bytes: u64,
}

/// An application's `IStream`, as a driver sees it. Every call is recorded.
#[async_trait(?Send)]
pub trait AppStream {
    /// The stream's id in the trace.
    fn id(&self) -> u32;

    /// `IStream::Write` at the seek pointer, which moves past the bytes written. It may take
    /// time (a slow disk), and the application may cancel meanwhile.
    async fn write(&self, data: &[u8]) -> StreamIo;

    /// `IStream::Read` at the seek pointer into `buf`.
    async fn read(&self, buf: &mut [u8]) -> StreamIo;

    /// `IStream::Seek`: moves the seek pointer; returns the HRESULT and the new position.
    async fn seek(&self, offset: i64, origin: SeekOrigin) -> (Hresult, u64);

    /// `IStream::SetSize`.
    async fn set_size(&self, size: u64) -> Hresult;

    /// `IStream::Stat`: returns the HRESULT and `cbSize`.
    async fn stat(&self) -> (Hresult, u64);

    /// `IUnknown::Release` of the reference the driver got from GetNextStream.
    fn release(&self);
}

/// `IWiaMiniDrvTransferCallback`, provided by the service to the driver.
#[async_trait(?Send)]
pub trait TransferCallback2 {
    /// `GetNextStream(0, bstrItemName, bstrFullItemName, &pStream)`. The service first sends
    /// END_OF_STREAM for the previous stream, then asks the application (or, for an upload,
    /// hands over the application's source stream).
    async fn get_next_stream(&self, item_name: &str, full_item_name: &str) -> NextStream;

    /// `SendMessage(0, &params)`.
    async fn send_message(&self, params: TransferParams) -> Hresult;
}

/// The stream transfer side of a WIA 2.0 minidriver. See the module documentation.
#[async_trait(?Send)]
pub trait MiniDriver2 {
    /// True if the driver transfers a folder's children in one drvAcquireItemData
    /// (`WIA_TRANSFER_ACQUIRE_CHILDREN_CAPABLE`).
    fn acquire_children_capable(&self) -> bool;

    /// `drvAcquireItemData` for a stream download or upload: return `S_OK` when done (also
    /// after skipped items), **`S_FALSE` when cancelled**, `WIA_STATUS_END_OF_MEDIA` when a
    /// feeder ran out before the pages asked for, or a failure code.
    async fn acquire_item_data(
        &self,
        ctx: &ItemContext,
        host: &dyn UsbHost,
        callback: &dyn TransferCallback2,
    ) -> Hresult;

    /// `drvNotifyPnPEvent`. Must not block; it may abort transfers through `host`.
    fn notify_pnp_event(&self, event: PnpEvent, host: &dyn UsbHost);

    /// Called once per driver instance, before anything else, with the run's context.
    fn begin_run(&self, _run: Rc<dyn RunContext>) {}

    /// Called once when the run (or, on a service restart, this instance) is over.
    fn end_run(&self) {}
}
