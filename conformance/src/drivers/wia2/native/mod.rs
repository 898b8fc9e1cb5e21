//! The built-in WIA 2.0 drivers for the native protocol: `reference-wia2` and its mutants.
//!
//! All of them are one stream driver, written from `reference/wia2-stream.md` (§1-§4) and
//! `emulator/PROTOCOL.md`, with a [`Flavor2`] that switches exactly one behaviour.
//!
//! The reference, per item (a flatbed image, each child of a folder, a feeder job): makes the
//! device ready and idle, sets the parameters, starts the scan and reports the lamp's warm-up
//! as a DEVICE_STATUS; then per page (TYMED_FILE) or once (TYMED_MULTIPAGE_FILE, NEW_PAGE
//! between pages) asks for a stream, seeks to its end (a stream may hold data already, H5),
//! writes the page's file (a PNM header, then each band as it arrives), seeking back to its own
//! position before each write (the application may have moved it inside a callback, H20) and
//! reporting STATUS after each; it releases the stream before asking for the next one and
//! before returning (H7). A skipped item or page is scanned and its data discarded (G1), and the
//! transfer goes on (H11) and ends with S_OK (H12). S_FALSE from either callback, or
//! WIA_EVENT_CANCEL_IO (which aborts its pending bulk read), stops everything: Cancel Request,
//! status polled to OK, S_FALSE returned. A failure from a callback or a stream is returned
//! (H15, H17, H19); a device failure goes to the error handlers as a DEVICE_STATUS and the
//! HRESULT they give back is returned (M4). An upload reads the application's stream (Stat,
//! Seek, Read only, H2) into the bulk OUT endpoint.
//!
//! About 650 lines: the per-item scan loop (`scan_item`) and how a stop is finished, which read as
//! one; streams, uploads and the mutations are in the files beside it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use async_trait::async_trait;
use scanemu::engine::ScanSource;
use scanemu::host::UsbHost;
use scanemu::personality::native::protocol::{DeviceState, ScanError};
use scanemu::time::Duration;

use super::device::{AfterPage, DeviceEnd, Read, Scanner, READ_SLACK};
use crate::driver::wia2::{
    AppStream, Item, ItemContext, MiniDriver2, PnpEvent, RunContext, TransferCallback2,
    TransferParams, TYMED_MULTIPAGE_FILE,
};
use crate::wia::{Hresult, SeekOrigin, TransferMsg};

mod mutation;
mod stream;
mod upload;

pub use self::mutation::{Flavor2, Mutation2};

/// How long one bulk read waits before the driver reports status and checks the device.
const READ_SLICE: Duration = Duration::from_millis(500);
/// The chunk an upload reads from the application's stream.
const UPLOAD_CHUNK: usize = 4096;
/// How long [`Mutation2::UploadRetriesRead`] waits before reading again.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

thread_local! {
    /// [`Mutation2::SharedPosition`]: bytes written into "the" current stream, one variable
    /// for the whole process (a DLL global), whichever device's transfer writes.
    static SHARED_WRITTEN: Cell<u64> = const { Cell::new(0) };
}

/// Why the transfer stopped early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// Cancelled, told by this.
    Cancelled(Cause),
    /// A callback or a stream failed with this: return it.
    Failed(Hresult),
    /// The device ended the job.
    Device(DeviceEnd),
    /// The driver crashed (a fault is recorded).
    Crashed,
}

/// Who told the driver of a cancel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    SendMessage,
    NextStream,
    Event,
    /// [`Mutation2::SkipStopsTransfer`] took a skip for the end of everything.
    SkipAll,
}

/// How an item ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ItemEnd {
    Done,
    Skipped,
    EndOfMedia,
}

/// What a callback answer tells the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Go,
    Cancel,
    Skip,
    Fail(Hresult),
}

fn answer(hr: Hresult) -> Answer {
    if hr == Hresult::S_FALSE {
        Answer::Cancel
    } else if hr == Hresult::WIA_STATUS_SKIP_ITEM {
        Answer::Skip
    } else if hr.failed() {
        Answer::Fail(hr)
    } else {
        Answer::Go
    }
}

/// The stream being written.
struct Out {
    stream: Box<dyn AppStream>,
    /// Where the driver's data starts (the stream's size when it was given).
    base: u64,
    /// Bytes written so far (header included).
    written: u64,
    /// Image bytes written so far.
    data: u64,
    /// Image bytes this stream will hold (0: unknown).
    data_total: u64,
    /// Size of the last chunk written.
    last_chunk: u64,
    /// The file header written first ([`Mutation2::TouchAfterNext`] writes it again).
    header: Vec<u8>,
}

/// A WIA 2.0 driver for the native protocol. See the module documentation.
pub struct Wia2Driver {
    flavor: Flavor2,
    cancel_io: Cell<bool>,
    run: RefCell<Option<Rc<dyn RunContext>>>,
    /// The stream being written.
    current: RefCell<Option<Out>>,
    /// A stream a mutant keeps after it should be done with it ([`Mutation2::LateRelease`],
    /// [`Mutation2::TouchAfterNext`]).
    previous: RefCell<Option<Out>>,
    /// The item being transferred (its name and full name).
    item: RefCell<(String, String)>,
    /// A scan job of this call is running on the device (started, not yet over).
    job: Cell<bool>,
}

impl Wia2Driver {
    /// A driver of the given flavor.
    pub fn new(flavor: Flavor2) -> Wia2Driver {
        Wia2Driver {
            flavor,
            cancel_io: Cell::new(false),
            run: RefCell::new(None),
            current: RefCell::new(None),
            previous: RefCell::new(None),
            item: RefCell::new((String::new(), String::new())),
            job: Cell::new(false),
        }
    }

    fn is(&self, m: Mutation2) -> bool {
        self.flavor == Flavor2::Mutant(m)
    }

    /// A failure a callback returned, as this driver returns it.
    fn callback_failure(&self, hr: Hresult) -> Hresult {
        if self.is(Mutation2::RewriteError) {
            Hresult::E_UNEXPECTED
        } else {
            hr
        }
    }

    async fn send(&self, cb: &dyn TransferCallback2, params: TransferParams) -> Answer {
        answer(cb.send_message(params).await)
    }

    /// STATUS after a chunk of `n` image bytes was written.
    async fn status(&self, cb: &dyn TransferCallback2, n: u64) -> Answer {
        let params = {
            let mut cur = self.current.borrow_mut();
            let Some(out) = cur.as_mut() else {
                return Answer::Go;
            };
            out.data += n;
            let done = if self.is(Mutation2::PercentOver100) {
                out.written
            } else {
                out.data
            };
            let percent = (done * 100).checked_div(out.data_total).unwrap_or(0) as i32;
            let percent = if self.is(Mutation2::PercentOver100) {
                percent
            } else {
                percent.min(100)
            };
            let bytes = if self.is(Mutation2::ChunkBytes) {
                out.last_chunk
            } else {
                out.written
            };
            TransferParams::status(percent, bytes)
        };
        self.send(cb, params).await
    }

    /// Reads the next chunk of band data into `buf`, reporting STATUS while the device keeps
    /// the driver waiting (unless `quiet`: the data is being discarded). `Ok(None)`: the
    /// application skipped the item meanwhile.
    async fn read_chunk(
        &self,
        dev: &Scanner<'_>,
        cb: &dyn TransferCallback2,
        buf: &mut [u8],
        quiet: bool,
    ) -> Result<Option<usize>, Stop> {
        loop {
            if self.cancel_io.get() {
                return Err(Stop::Cancelled(Cause::Event));
            }
            match dev.read(buf, READ_SLICE).await {
                Read::Data(n) => return Ok(Some(n)),
                Read::Nothing => {
                    if !quiet {
                        match self.status(cb, 0).await {
                            Answer::Go => {}
                            Answer::Cancel => return Err(self.cancel_from_send_message(cb).await),
                            Answer::Skip => return Ok(None),
                            Answer::Fail(hr) => return Err(self.send_message_failure(hr)),
                        }
                    }
                    let scan = dev
                        .scan_status()
                        .await
                        .map_err(|hr| Stop::Device(DeviceEnd::Error(hr)))?;
                    if matches!(scan.state, DeviceState::Idle | DeviceState::Halted)
                        && scan.error != ScanError::None
                    {
                        return Err(Stop::Device(dev.device_end().await));
                    }
                }
                Read::Aborted => return Err(Stop::Cancelled(Cause::Event)),
                Read::Stalled => return Err(Stop::Device(dev.device_end().await)),
                Read::Gone => {
                    return Err(Stop::Device(DeviceEnd::Error(Hresult::WIA_ERROR_OFFLINE)))
                }
                Read::Failed => {
                    return Err(Stop::Device(DeviceEnd::Error(
                        Hresult::WIA_ERROR_DEVICE_COMMUNICATION,
                    )))
                }
            }
        }
    }

    /// SendMessage answered S_FALSE.
    async fn cancel_from_send_message(&self, cb: &dyn TransferCallback2) -> Stop {
        if self.is(Mutation2::GnsAfterSendMessageCancel) {
            // Goes on to the next unit as if nothing happened: asks for its stream.
            self.release_current(cb, false).await;
            let (name, full) = self.item.borrow().clone();
            let _ = cb.get_next_stream(&name, &full).await;
        }
        Stop::Cancelled(Cause::SendMessage)
    }

    /// SendMessage failed with `hr`.
    fn send_message_failure(&self, hr: Hresult) -> Stop {
        if self.is(Mutation2::SendMessageErrorAsCancel) {
            Stop::Cancelled(Cause::SendMessage)
        } else {
            Stop::Failed(self.callback_failure(hr))
        }
    }

    /// [`Mutation2::WriteAfterStop`]: one more chunk into the stream after a stop answer.
    async fn write_one_more(&self, dev: &Scanner<'_>, buf: &mut [u8]) -> u64 {
        match dev.read(buf, READ_SLICE).await {
            Read::Data(n) => {
                let data = buf[..n].to_vec();
                let _ = self.write(&data, true).await;
                n as u64
            }
            _ => 0,
        }
    }

    /// One item: a flatbed image, one child of a folder, or a feeder job.
    async fn scan_item(
        &self,
        ctx: &ItemContext,
        item: &Item,
        dev: &Scanner<'_>,
        cb: &dyn TransferCallback2,
    ) -> Result<ItemEnd, Stop> {
        let device = |hr: Hresult| Stop::Device(DeviceEnd::Error(hr));
        *self.item.borrow_mut() = (item.name.clone(), item.full_name.clone());
        if !self.is(Mutation2::AssumesIdle) {
            dev.prepare().await.map_err(device)?;
        }
        let report = dev.set_params(&item.job).await.map_err(device)?;
        dev.start().await.map_err(device)?;
        self.job.set(true);
        if dev.warming_up().await.map_err(device)? {
            let params = TransferParams {
                msg: TransferMsg::DEVICE_STATUS,
                percent: 0,
                bytes: 0,
                status: Hresult::WIA_STATUS_WARMING_UP,
            };
            match self.send(cb, params).await {
                Answer::Go | Answer::Skip => {}
                Answer::Cancel => return Err(self.cancel_from_send_message(cb).await),
                Answer::Fail(hr) => return Err(self.send_message_failure(hr)),
            }
        }
        let adf = item.job.source == ScanSource::Adf;
        let wanted = if adf { item.job.pages } else { 1 };
        let multipage =
            ctx.tymed == TYMED_MULTIPAGE_FILE && !self.is(Mutation2::StreamPerPageMultipage);
        let one_stream = multipage || (self.is(Mutation2::OneStreamTymedFile) && adf);
        let page_bytes = u64::from(report.bytes_per_line) * u64::from(report.lines_per_page);
        let band_bytes = u64::from(report.band_bytes.max(1));
        let header = ctx.format.page_header(&item.job);
        let data_total = if multipage && wanted > 0 {
            page_bytes * u64::from(wanted)
        } else {
            page_bytes
        };
        let mut buf = vec![0u8; band_bytes as usize + READ_SLACK];
        // The whole item is skipped (a flatbed or folder item, or a multi-page file).
        let mut skip_item = false;
        let mut skipped_last;
        let mut pages_done = 0u16;
        let mut end_of_media = false;
        loop {
            let mut skip_page = skip_item;
            if !skip_item {
                if pages_done == 0 || !one_stream {
                    match self.next_stream(cb, item).await? {
                        Some(stream) => {
                            let per_page = if one_stream && !multipage {
                                page_bytes
                            } else {
                                data_total
                            };
                            self.open(stream, per_page).await?;
                        }
                        None if self.is(Mutation2::SkipStopsTransfer) => {
                            return Err(Stop::Cancelled(Cause::SkipAll));
                        }
                        None => {
                            skip_page = true;
                            skip_item = one_stream || !adf;
                        }
                    }
                } else if multipage {
                    let params = {
                        let cur = self.current.borrow();
                        let (percent, bytes) = cur.as_ref().map_or((0, 0), |o| {
                            let p = (o.data * 100).checked_div(o.data_total).unwrap_or(0) as i32;
                            (p.min(100), o.written)
                        });
                        TransferParams {
                            msg: TransferMsg::NEW_PAGE,
                            percent,
                            bytes,
                            status: Hresult::S_OK,
                        }
                    };
                    match self.send(cb, params).await {
                        Answer::Go => {}
                        Answer::Cancel => return Err(self.cancel_from_send_message(cb).await),
                        Answer::Skip => {
                            self.release_current(cb, false).await;
                            skip_page = true;
                            skip_item = true;
                        }
                        Answer::Fail(hr) => return Err(self.send_message_failure(hr)),
                    }
                }
            }
            if !skip_page {
                if multipage && pages_done > 0 && wanted > 0 {
                    // A new page of the multi-page file; percent goes on over the whole file.
                } else if let Some(out) = self.current.borrow_mut().as_mut() {
                    if !multipage || wanted == 0 {
                        out.data = 0;
                    }
                }
                if let Some(out) = self.current.borrow_mut().as_mut() {
                    if out.header.is_empty() {
                        out.header = header.clone();
                    }
                }
                self.write(&header, pages_done > 0).await?;
            }
            let mut offset = 0u64;
            while offset < page_bytes {
                let band_left = band_bytes - offset % band_bytes;
                let want = (page_bytes - offset).min(band_left) as usize;
                // Every read ends a band (a full one, or the page's last): one packet more lets
                // its short packet or ZLP end the read (PROTOCOL.md §3).
                let ask = want + READ_SLACK;
                let n = match self.read_chunk(dev, cb, &mut buf[..ask], skip_page).await? {
                    Some(n) => n,
                    None => {
                        // Skipped while waiting: discard the rest of this page (or item).
                        self.release_current(cb, false).await;
                        skip_page = true;
                        skip_item = skip_item || one_stream || !adf;
                        continue;
                    }
                };
                if n < want {
                    // A device-initiated cancel by short data (reference §1.2).
                    return Err(Stop::Device(dev.device_end().await));
                }
                offset += n as u64;
                if skip_page {
                    continue;
                }
                let chunk = buf[..n].to_vec();
                self.write(&chunk, true).await?;
                if self.cancel_io.get() {
                    return Err(Stop::Cancelled(Cause::Event));
                }
                match self.status(cb, n as u64).await {
                    Answer::Go => {}
                    Answer::Cancel => {
                        if self.is(Mutation2::WriteAfterStop) && offset < page_bytes {
                            self.write_one_more(dev, &mut buf).await;
                        }
                        return Err(self.cancel_from_send_message(cb).await);
                    }
                    Answer::Skip => {
                        if self.is(Mutation2::WriteAfterStop) && offset < page_bytes {
                            offset += self.write_one_more(dev, &mut buf).await;
                        }
                        self.release_current(cb, false).await;
                        skip_page = true;
                        skip_item = skip_item || one_stream || !adf;
                    }
                    Answer::Fail(hr) => {
                        if self.is(Mutation2::WriteAfterStop) && offset < page_bytes {
                            self.write_one_more(dev, &mut buf).await;
                        }
                        return Err(self.send_message_failure(hr));
                    }
                }
            }
            skipped_last = skip_page;
            pages_done += 1;
            if !one_stream {
                self.release_current(cb, true).await;
            }
            if !adf {
                break;
            }
            match dev.after_page(pages_done, wanted).await.map_err(device)? {
                AfterPage::Next => {}
                AfterPage::Done => break,
                AfterPage::EndOfMedia => {
                    end_of_media = true;
                    break;
                }
                AfterPage::Stopped(end) => return Err(Stop::Device(end)),
            }
        }
        // Every page was read: the device has nothing left of this job.
        self.job.set(false);
        self.release_current(cb, true).await;
        Ok(if end_of_media {
            ItemEnd::EndOfMedia
        } else if skipped_last {
            ItemEnd::Skipped
        } else {
            ItemEnd::Done
        })
    }

    async fn download(
        &self,
        ctx: &ItemContext,
        dev: &Scanner<'_>,
        cb: &dyn TransferCallback2,
    ) -> Result<Hresult, Stop> {
        let mut last = ItemEnd::Done;
        let mut end_of_media = false;
        for item in ctx.items() {
            last = self.scan_item(ctx, item, dev, cb).await?;
            end_of_media |= last == ItemEnd::EndOfMedia;
        }
        let feeder = ctx.item.job.source == ScanSource::Adf;
        Ok(if end_of_media && !self.is(Mutation2::EndOfMediaAsSOk) {
            Hresult::WIA_STATUS_END_OF_MEDIA
        } else if last == ItemEnd::Skipped && self.is(Mutation2::SkipItemReturned) {
            Hresult::WIA_STATUS_SKIP_ITEM
        } else if feeder && ctx.item.job.pages == 0 && self.is(Mutation2::PaperEmptyAtEnd) {
            Hresult::WIA_ERROR_PAPER_EMPTY
        } else {
            Hresult::S_OK
        })
    }

    /// [`Mutation2::DrainOnCancel`]: reads whatever the device still sends until it is idle.
    async fn drain(&self, dev: &Scanner<'_>) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match dev.read(&mut buf, READ_SLICE).await {
                Read::Data(_) | Read::Aborted => {}
                Read::Nothing => match dev.scan_status().await {
                    Ok(s) if s.state == DeviceState::Idle || s.state == DeviceState::Halted => {
                        return
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
                _ => return,
            }
        }
    }

    /// Ends a transfer that stopped early: the stream released, the device stopped, the
    /// HRESULT to return.
    async fn finish(&self, stop: Stop, dev: &Scanner<'_>, cb: &dyn TransferCallback2) -> Hresult {
        self.release_current(cb, false).await;
        self.release_previous();
        match stop {
            Stop::Crashed => Hresult::E_FAIL,
            Stop::Cancelled(cause) => {
                if self.is(Mutation2::DrainOnCancel) {
                    self.drain(dev).await;
                }
                if cause == Cause::SkipAll {
                    return match dev.cancel().await {
                        Ok(()) => Hresult::S_OK,
                        Err(hr) => hr,
                    };
                }
                if self.job.get() {
                    if let Err(hr) = dev.cancel().await {
                        return hr;
                    }
                }
                match cause {
                    Cause::SendMessage if self.is(Mutation2::SOkAfterSendMessageCancel) => {
                        Hresult::S_OK
                    }
                    Cause::NextStream if self.is(Mutation2::GnsCancelEAbort) => Hresult::E_ABORT,
                    _ => Hresult::S_FALSE,
                }
            }
            Stop::Failed(hr) => {
                if self.job.get() {
                    let _ = dev.cancel().await;
                }
                hr
            }
            Stop::Device(DeviceEnd::Cancelled) => match dev.wait_ready().await {
                Ok(()) => Hresult::S_FALSE,
                Err(hr) => hr,
            },
            Stop::Device(DeviceEnd::Error(hr)) => {
                let params = TransferParams {
                    msg: TransferMsg::DEVICE_STATUS,
                    percent: 0,
                    bytes: 0,
                    status: hr,
                };
                let back = cb.send_message(params).await;
                // A job the failure left running (the device still scanning) is stopped; a
                // device that stopped by itself or left the bus has nothing to cancel.
                if hr != Hresult::WIA_ERROR_OFFLINE {
                    let running = dev
                        .scan_status()
                        .await
                        .is_ok_and(|s| !matches!(s.state, DeviceState::Idle));
                    if running {
                        let _ = dev.cancel().await;
                    }
                }
                if back == Hresult::S_FALSE {
                    Hresult::S_FALSE
                } else if back.failed() {
                    self.callback_failure(back)
                } else {
                    hr
                }
            }
        }
    }
}

#[async_trait(?Send)]
impl MiniDriver2 for Wia2Driver {
    fn acquire_children_capable(&self) -> bool {
        true
    }

    async fn acquire_item_data(
        &self,
        ctx: &ItemContext,
        host: &dyn UsbHost,
        callback: &dyn TransferCallback2,
    ) -> Hresult {
        if !self.is(Mutation2::IdleCancelSticks) {
            self.cancel_io.set(false);
        }
        self.job.set(false);
        let dev = Scanner {
            host,
            interface: ctx.interface,
        };
        let result = if ctx.is_download() {
            self.download(ctx, &dev, callback).await
        } else {
            self.upload(ctx, &dev, callback).await
        };
        let hr = match result {
            Ok(hr) => hr,
            Err(stop) => self.finish(stop, &dev, callback).await,
        };
        self.release_previous();
        self.previous.borrow_mut().take();
        if self.is(Mutation2::IdleCancelSticks) {
            // Clears its flag when a transfer ends, not when one starts: a cancel that comes
            // while idle is still set when the next transfer begins.
            self.cancel_io.set(false);
        }
        hr
    }

    fn notify_pnp_event(&self, event: PnpEvent, host: &dyn UsbHost) {
        match event {
            PnpEvent::CancelIo if self.is(Mutation2::IgnoreCancelIo) => {}
            PnpEvent::CancelIo => {
                self.cancel_io.set(true);
                Scanner::abort_read(host);
            }
        }
    }

    fn begin_run(&self, run: Rc<dyn RunContext>) {
        if self.is(Mutation2::SharedPosition) {
            SHARED_WRITTEN.with(|w| w.set(0));
        }
        *self.run.borrow_mut() = Some(run);
    }

    fn end_run(&self) {
        self.run.borrow_mut().take();
    }
}
