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

/// One deliberate defect of a WIA 2.0 driver. Each breaks exactly one rule (see
/// `fixtures/mutants-wia2.json`); most are behaviours `reference/wia2-stream.md` §6 reads in
/// Microsoft's own samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutation2 {
    /// Calls IStream::Stat on download streams to learn their size (H1).
    StatStream,
    /// Calls IStream::SetSize on an upload's source stream (H2).
    UploadSetSize,
    /// Counts the file header into lPercentComplete, which passes 100 (H3).
    PercentOver100,
    /// Reports the last chunk's size as ulTransferredBytes instead of the running count (H4).
    ChunkBytes,
    /// Writes from the stream's seek pointer without seeking to its end first (H5).
    Overwrite,
    /// Ends a feeder job that emptied the tray with WIA_ERROR_PAPER_EMPTY, the Scan Wizard
    /// convention of Microsoft's wiadriverex sample (H6).
    PaperEmptyAtEnd,
    /// Releases each stream only after the next GetNextStream (H7).
    LateRelease,
    /// Keeps the position it writes at in a process-wide variable, which every instance of the
    /// driver (one per device) shares (H18).
    SharedPosition,
    /// Asks for a new stream for every page of a TYMED_MULTIPAGE_FILE transfer (H8).
    StreamPerPageMultipage,
    /// Writes every feeder page of a TYMED_FILE transfer into the first stream (H9).
    OneStreamTymedFile,
    /// Returns S_OK after SendMessage returned S_FALSE (H10).
    SOkAfterSendMessageCancel,
    /// Stops the whole transfer when GetNextStream returns WIA_STATUS_SKIP_ITEM (H11).
    SkipStopsTransfer,
    /// Returns WIA_STATUS_SKIP_ITEM when the last item was skipped, as wiadriverex does (H12).
    SkipItemReturned,
    /// Asks for the next stream again after GetNextStream returned S_FALSE (H13).
    GnsAfterGnsCancel,
    /// After a cancel, reads the rest of the image from the device before stopping it (H14).
    DrainOnCancel,
    /// Treats a GetNextStream failure like a skipped item and ends with S_OK (H15).
    GnsErrorIgnored,
    /// Dereferences the NULL stream of an S_OK GetNextStream (wiadriverex): a crash (H16).
    NullStreamCrash,
    /// Treats a SendMessage failure as a cancel and returns S_FALSE (H17).
    SendMessageErrorAsCancel,
    /// Ignores a failed IStream::Write and goes on (H19).
    WriteErrorIgnored,
    /// Does not seek back to its position after SendMessage (H20).
    NoReseek,
    /// Assumes the device is idle when a transfer starts (H21).
    AssumesIdle,
    /// Keeps the cancel flag of a WIA_EVENT_CANCEL_IO that came while idle, cancelling the next
    /// transfer (H22).
    IdleCancelSticks,
    /// Writes one more chunk after SendMessage returned S_FALSE, WIA_STATUS_SKIP_ITEM or an
    /// error (H24).
    WriteAfterStop,
    /// Rewrites the previous stream's header after asking for the next stream (H25).
    TouchAfterNext,
    /// Sends END_OF_STREAM itself after each stream (H26).
    SendsEndOfStream,
    /// Goes on to the next page or item (calls GetNextStream) after SendMessage returned
    /// S_FALSE, as wiadriverex's feeder loop does (H27).
    GnsAfterSendMessageCancel,
    /// Retries a failed or empty Read of an upload stream until data comes (H28).
    UploadRetriesRead,
    /// Returns E_ABORT instead of S_FALSE when GetNextStream returned S_FALSE (A1).
    GnsCancelEAbort,
    /// Converts the feeder's end of media into S_OK, as the ProdScan sample does (A2).
    EndOfMediaAsSOk,
    /// Rewrites failures the callbacks return into E_UNEXPECTED, as wiadriverex does (M4).
    RewriteError,
    /// Ignores WIA_EVENT_CANCEL_IO, as both of Microsoft's samples do (N1).
    IgnoreCancelIo,
}

/// Which built-in WIA 2.0 driver this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flavor2 {
    /// Correct.
    Reference,
    /// The reference with one defect.
    Mutant(Mutation2),
}

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

    /// Releases the stream being written; `done`: its page or item is complete (not a stop).
    async fn release_current(&self, cb: &dyn TransferCallback2, done: bool) {
        let Some(out) = self.current.borrow_mut().take() else {
            return;
        };
        if self.is(Mutation2::LateRelease) {
            // Released after the next GetNextStream, or before returning.
            self.release_previous();
            *self.previous.borrow_mut() = Some(out);
            return;
        }
        out.stream.release();
        if done && self.is(Mutation2::SendsEndOfStream) {
            let _ = cb
                .send_message(TransferParams {
                    msg: TransferMsg::END_OF_STREAM,
                    percent: 100,
                    bytes: out.written,
                    status: Hresult::S_OK,
                })
                .await;
        }
        if done && self.is(Mutation2::TouchAfterNext) {
            *self.previous.borrow_mut() = Some(out);
        }
    }

    /// The stream a mutant kept: [`Mutation2::LateRelease`] releases it now.
    fn release_previous(&self) {
        if let Some(out) = self.previous.borrow_mut().take() {
            if self.is(Mutation2::LateRelease) {
                out.stream.release();
            }
        }
    }

    /// [`Mutation2::TouchAfterNext`]: after the next GetNextStream gave a stream, rewrites the
    /// previous stream's header (the same bytes) through the reference it released.
    async fn touch_previous(&self) {
        let Some(out) = self.previous.borrow_mut().take() else {
            return;
        };
        let (hr, _) = out.stream.seek(out.base as i64, SeekOrigin::Set).await;
        if hr == Hresult::S_OK {
            let _ = out.stream.write(&out.header).await;
        }
    }

    /// GetNextStream: `Some` stream, `None` for a skipped item, or why to stop.
    async fn next_stream(
        &self,
        cb: &dyn TransferCallback2,
        item: &Item,
    ) -> Result<Option<Box<dyn AppStream>>, Stop> {
        let got = cb.get_next_stream(&item.name, &item.full_name).await;
        if self.is(Mutation2::LateRelease) {
            self.release_previous();
        }
        match (answer(got.hr), got.stream) {
            (Answer::Go, Some(stream)) => {
                if self.is(Mutation2::TouchAfterNext) {
                    self.touch_previous().await;
                }
                Ok(Some(stream))
            }
            (Answer::Go, None) => {
                if self.is(Mutation2::NullStreamCrash) {
                    if let Some(run) = self.run.borrow().as_ref() {
                        run.fault(
                            "crash: access violation: IStream::Seek called through the NULL stream pointer GetNextStream returned with S_OK",
                        );
                    }
                    return Err(Stop::Crashed);
                }
                Err(Stop::Failed(Hresult::E_POINTER))
            }
            (Answer::Cancel, _) => {
                if self.is(Mutation2::GnsAfterGnsCancel) {
                    let _ = cb.get_next_stream(&item.name, &item.full_name).await;
                }
                Err(Stop::Cancelled(Cause::NextStream))
            }
            (Answer::Skip, _) => Ok(None),
            (Answer::Fail(_), _) if self.is(Mutation2::GnsErrorIgnored) => Ok(None),
            (Answer::Fail(hr), _) => Err(Stop::Failed(self.callback_failure(hr))),
        }
    }

    /// Takes a download stream: its data goes after what it holds (H5).
    async fn open(&self, stream: Box<dyn AppStream>, data_total: u64) -> Result<(), Stop> {
        if self.is(Mutation2::StatStream) {
            let (hr, _) = stream.stat().await;
            if hr.failed() {
                stream.release();
                return Err(Stop::Failed(hr));
            }
        }
        let base = if self.is(Mutation2::Overwrite) {
            0
        } else {
            let (hr, end) = stream.seek(0, SeekOrigin::End).await;
            if hr.failed() {
                stream.release();
                return Err(Stop::Failed(hr));
            }
            end
        };
        if self.is(Mutation2::SharedPosition) {
            SHARED_WRITTEN.with(|w| w.set(0));
        }
        *self.current.borrow_mut() = Some(Out {
            stream,
            base,
            written: 0,
            data: 0,
            data_total,
            last_chunk: 0,
            header: Vec::new(),
        });
        Ok(())
    }

    /// Writes `bytes` at the driver's own position in the current stream (seeking there first
    /// unless it just got the stream, H20).
    async fn write(&self, bytes: &[u8], seek: bool) -> Result<(), Stop> {
        let seek = seek && !self.is(Mutation2::NoReseek);
        // Taken out while the stream works, put back after.
        let Some(mut out) = self.current.borrow_mut().take() else {
            return Ok(());
        };
        let shared = self.is(Mutation2::SharedPosition);
        let pos = if shared {
            out.base + SHARED_WRITTEN.with(Cell::get)
        } else {
            out.base + out.written
        };
        let result = async {
            if seek {
                let (hr, _) = out.stream.seek(pos as i64, SeekOrigin::Set).await;
                if hr.failed() {
                    return Err(Stop::Failed(hr));
                }
            }
            let io = out.stream.write(bytes).await;
            out.written += io.bytes;
            if shared {
                SHARED_WRITTEN.with(|w| w.set(w.get() + io.bytes));
            }
            out.last_chunk = io.bytes;
            if io.hr.failed() && !self.is(Mutation2::WriteErrorIgnored) {
                return Err(Stop::Failed(io.hr));
            }
            Ok(())
        }
        .await;
        *self.current.borrow_mut() = Some(out);
        result
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

    async fn upload(
        &self,
        ctx: &ItemContext,
        dev: &Scanner<'_>,
        cb: &dyn TransferCallback2,
    ) -> Result<Hresult, Stop> {
        dev.wait_ready()
            .await
            .map_err(|hr| Stop::Device(DeviceEnd::Error(hr)))?;
        let got = cb
            .get_next_stream(&ctx.item.name, &ctx.item.full_name)
            .await;
        let stream = match (answer(got.hr), got.stream) {
            (Answer::Go, Some(s)) => s,
            (Answer::Go, None) => return Err(Stop::Failed(Hresult::E_POINTER)),
            (Answer::Cancel, _) => return Err(Stop::Cancelled(Cause::NextStream)),
            (Answer::Skip, _) => return Ok(Hresult::S_OK),
            (Answer::Fail(hr), _) => return Err(Stop::Failed(self.callback_failure(hr))),
        };
        let result = self.upload_from(stream.as_ref(), dev, cb).await;
        stream.release();
        result
    }

    async fn upload_from(
        &self,
        stream: &dyn AppStream,
        dev: &Scanner<'_>,
        cb: &dyn TransferCallback2,
    ) -> Result<Hresult, Stop> {
        let retry = self.is(Mutation2::UploadRetriesRead);
        let (hr, size) = stream.stat().await;
        let size = match (hr.failed(), retry) {
            (false, _) => size,
            (true, true) => u64::MAX,
            (true, false) => return Err(Stop::Failed(hr)),
        };
        if self.is(Mutation2::UploadSetSize) {
            let hr = stream.set_size(size).await;
            if hr.failed() {
                return Err(Stop::Failed(hr));
            }
        }
        let (hr, _) = stream.seek(0, SeekOrigin::Set).await;
        if hr.failed() && !retry {
            return Err(Stop::Failed(hr));
        }
        let mut buf = vec![0u8; UPLOAD_CHUNK];
        let mut sent = 0u64;
        loop {
            if self.cancel_io.get() {
                return Err(Stop::Cancelled(Cause::Event));
            }
            let io = stream.read(&mut buf).await;
            let n = if io.hr.failed() {
                if !retry {
                    return Err(Stop::Failed(io.hr));
                }
                0
            } else {
                io.bytes as usize
            };
            if n == 0 {
                if retry && sent < size {
                    dev.host.sleep(RETRY_PAUSE).await;
                    continue;
                }
                break;
            }
            dev.write_out(&buf[..n])
                .await
                .map_err(|hr| Stop::Device(DeviceEnd::Error(hr)))?;
            sent += n as u64;
            let percent = if size == 0 || size == u64::MAX {
                0
            } else {
                ((sent * 100) / size).min(100) as i32
            };
            match self.send(cb, TransferParams::status(percent, sent)).await {
                Answer::Go => {}
                Answer::Cancel => return Err(Stop::Cancelled(Cause::SendMessage)),
                Answer::Skip => return Ok(Hresult::S_OK),
                Answer::Fail(hr) => return Err(self.send_message_failure(hr)),
            }
        }
        Ok(Hresult::S_OK)
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
