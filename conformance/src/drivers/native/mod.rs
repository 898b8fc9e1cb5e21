//! The built-in drivers for the native protocol: `reference`, `legacy-xp` and the mutants.
//!
//! All of them are one transfer loop, written from `emulator/PROTOCOL.md`, with a [`Flavor`]
//! that switches exactly one behaviour. `reference` is correct and honours
//! WIA_EVENT_CANCEL_IO by aborting its pending bulk read; `legacy-xp` is correct but ignores the
//! event, as Microsoft's WIA 2.0 sample does (reference §1.8); each [`Mutation`] breaks one rule.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use async_trait::async_trait;
use scanemu::engine::ScanSource;
use scanemu::host::{Setup, TransferError, UsbHost};
use scanemu::personality::native::protocol::{
    DeviceState, DeviceStatus, ParamsReport, ScanError, ScanParams, ScanStatus, CANCEL_CODE,
    EP_DATA_IN, EP_DATA_OUT, PARAMS_REPORT_LEN, REQ_CANCEL, REQ_DEVICE_RESET,
    REQ_GET_DEVICE_STATUS, REQ_GET_PARAMS, REQ_GET_SCAN_STATUS, REQ_SET_PARAMS, REQ_START_SCAN,
    SCAN_STATUS_LEN, STATUS_BUSY, STATUS_OK, STATUS_TRANSACTION_CANCELLED,
};
use scanemu::time::Duration;

use crate::driver::{
    CallbackArgs, MiniDriver, MiniDrvCallback, PnpEvent, RunContext, TransferContext, Urb,
    UsbRequest,
};
use crate::wia::{Hresult, ItMsg, IT_STATUS_TRANSFER_FROM_DEVICE, IT_STATUS_TRANSFER_TO_CLIENT};

mod device;
mod mutation;

pub use self::mutation::{Flavor, Mutation};

/// How long one bulk read waits before the driver reports status and checks the device: at
/// least ten status callbacks a second while it waits, which meets WIA-CADENCE's "about ten
/// times, or roughly once per second during the transfer, whichever is more often" for a
/// transfer of any length (its gap limit is never below 150 ms).
const READ_SLICE: Duration = Duration::from_millis(100);
/// Extra bytes asked for at the end of a band: one packet of the largest size (SuperSpeed).
const READ_SLACK: usize = 1024;
/// Timeout of control requests.
const CONTROL_TIMEOUT: Duration = Duration::from_millis(1000);
/// Interval between Get Device Status polls while the device is busy.
const STATUS_POLL: Duration = Duration::from_millis(5);
/// How long the driver polls before it gives up on a busy device and resets it.
const CANCEL_BUDGET: Duration = Duration::from_millis(2000);

/// A driver for the native protocol. See the module documentation.
pub struct NativeDriver {
    flavor: Flavor,
    cancel_io: Cell<bool>,
    /// A band read ahead of the one being delivered ([`Mutation::StaleBand`] keeps it across scans).
    read_ahead: RefCell<Option<Vec<u8>>>,
    /// The last chunk came from `read_ahead`: its length says nothing about the device.
    served_ahead: Cell<bool>,
    interface: Cell<u16>,
    /// [`Mutation::DataAfterSFalse`]: the extra band after S_FALSE has been delivered.
    extra_sent: Cell<bool>,
    /// The run's context ([`MiniDriver::begin_run`]): [`Mutation::PendingDrain`] submits its
    /// drain read through it.
    run: RefCell<Option<Rc<dyn RunContext>>>,
    /// [`Mutation::PendingDrain`]: the drain read left in flight, cancelled when the next
    /// acquisition begins (before the device has data that it could steal).
    drain: RefCell<Option<Urb>>,
}

/// Why the transfer loop stopped early.
enum Stop {
    /// Cancelled by the application or the device: return S_FALSE.
    Cancelled,
    /// The application's callback returned this error: return it unchanged.
    AppError(Hresult),
    /// The device or the transport failed: return this error.
    Error(Hresult),
}

impl NativeDriver {
    /// A driver of the given flavor.
    pub fn new(flavor: Flavor) -> NativeDriver {
        NativeDriver {
            flavor,
            cancel_io: Cell::new(false),
            read_ahead: RefCell::new(None),
            served_ahead: Cell::new(false),
            interface: Cell::new(0),
            extra_sent: Cell::new(false),
            run: RefCell::new(None),
            drain: RefCell::new(None),
        }
    }

    /// [`Mutation::PendingDrain`]: submits a bulk read to drain the pipe and keeps it in
    /// flight when `acquire_item_data` returns.
    fn post_and_leave(&self) {
        if let Some(run) = self.run.borrow().as_ref() {
            let urb = run.submit(UsbRequest::BulkIn {
                ep: EP_DATA_IN,
                length: 512,
                timeout: Duration::ZERO,
            });
            *self.drain.borrow_mut() = Some(urb);
        }
    }

    fn is(&self, m: Mutation) -> bool {
        self.flavor == Flavor::Mutant(m)
    }

    fn honours_cancel_io(&self) -> bool {
        matches!(self.flavor, Flavor::Reference | Flavor::Mutant(_))
            && !self.is(Mutation::ClaimsAsyncIgnores)
    }

    /// What a status or new-page callback's answer other than S_OK means.
    fn stop_for_status(&self, hr: Hresult) -> Stop {
        if self.is(Mutation::SwallowStatusError) {
            return Stop::Cancelled;
        }
        stop_for(hr)
    }

    async fn callback(
        &self,
        callback: &dyn MiniDrvCallback,
        reason: ItMsg,
        percent: i32,
        offset: i64,
        data: &[u8],
    ) -> Hresult {
        self.callback_len(callback, reason, percent, offset, data, data.len() as i64)
            .await
    }

    /// [`NativeDriver::callback`] with an lLength of the caller's choosing.
    async fn callback_len(
        &self,
        callback: &dyn MiniDrvCallback,
        reason: ItMsg,
        percent: i32,
        offset: i64,
        data: &[u8],
        length: i64,
    ) -> Hresult {
        let status = if reason == ItMsg::Data {
            IT_STATUS_TRANSFER_TO_CLIENT
        } else {
            IT_STATUS_TRANSFER_FROM_DEVICE
        };
        callback
            .call(CallbackArgs {
                reason,
                status,
                percent,
                offset,
                length,
                data,
            })
            .await
    }

    /// Reads the next chunk of band data (at most `max` bytes) into `buf`, reporting status
    /// while the device warms up or a band is late.
    async fn read_chunk(
        &self,
        host: &dyn UsbHost,
        callback: &dyn MiniDrvCallback,
        buf: &mut [u8],
        percent: i32,
    ) -> Result<usize, Stop> {
        if let Some(band) = self.read_ahead.borrow_mut().take() {
            self.served_ahead.set(true);
            let n = band.len().min(buf.len());
            buf[..n].copy_from_slice(&band[..n]);
            return Ok(n);
        }
        loop {
            if self.cancel_io.get() {
                return Err(Stop::Cancelled);
            }
            let slice = if self.is(Mutation::StatusOncePerSecond) {
                Duration::from_millis(1000)
            } else {
                READ_SLICE
            };
            match host.bulk_in(EP_DATA_IN, buf, slice).await {
                Ok(n) => return Ok(n),
                Err(TransferError::Timeout { actual }) if actual > 0 => return Ok(actual),
                Err(TransferError::Timeout { .. }) => {
                    if self.is(Mutation::SparseCallbacks) {
                        continue;
                    }
                    let hr = self
                        .callback(callback, ItMsg::Status, percent, 0, &[])
                        .await;
                    if hr != Hresult::S_OK {
                        return Err(self.stop_for_status(hr));
                    }
                    let scan = self.scan_status(host).await.map_err(Stop::Error)?;
                    if scan.state == DeviceState::Idle && scan.error != ScanError::None {
                        return Err(self.device_stop(host).await);
                    }
                }
                Err(TransferError::Cancelled { .. }) => {
                    if self.is(Mutation::AbortThenReread) {
                        // The data it gets is thrown away.
                        let _ = host.bulk_in(EP_DATA_IN, buf, slice).await;
                    }
                    return Err(Stop::Cancelled);
                }
                Err(TransferError::Stall) => return Err(self.device_stop(host).await),
                Err(TransferError::NoDevice) => {
                    return Err(Stop::Error(Hresult::WIA_ERROR_OFFLINE))
                }
                Err(_) => return Err(Stop::Error(Hresult::WIA_ERROR_DEVICE_COMMUNICATION)),
            }
        }
    }

    async fn transfer(
        &self,
        ctx: &TransferContext,
        host: &dyn UsbHost,
        callback: &dyn MiniDrvCallback,
    ) -> Result<Hresult, Stop> {
        // A device left halted or busy by an earlier session is made ready first.
        self.wait_ready(host).await.map_err(Stop::Error)?;
        let params = ScanParams { job: ctx.job };
        host.control_out(
            self.setup_out(REQ_SET_PARAMS, params.encode().len() as u16),
            &params.encode(),
            CONTROL_TIMEOUT,
        )
        .await
        .map_err(|e| Stop::Error(map_transfer_error(e)))?;
        let report = host
            .control_in(
                self.setup_in(REQ_GET_PARAMS, PARAMS_REPORT_LEN as u16),
                CONTROL_TIMEOUT,
            )
            .await
            .map_err(|e| Stop::Error(map_transfer_error(e)))?;
        let report = ParamsReport::decode(&report)
            .map_err(|_| Stop::Error(Hresult::WIA_ERROR_DEVICE_COMMUNICATION))?;
        if let Err(e) = host
            .control_out(self.setup_out(REQ_START_SCAN, 0), &[], CONTROL_TIMEOUT)
            .await
        {
            if e == TransferError::Stall {
                let scan = self.scan_status(host).await.map_err(Stop::Error)?;
                return Err(Stop::Error(match scan.error {
                    ScanError::FeederEmpty => Hresult::WIA_ERROR_PAPER_EMPTY,
                    _ => Hresult::WIA_ERROR_BUSY,
                }));
            }
            return Err(Stop::Error(map_transfer_error(e)));
        }
        let hr = self.callback(callback, ItMsg::Status, 0, 0, &[]).await;
        if hr != Hresult::S_OK {
            return Err(self.stop_for_status(hr));
        }

        let page_bytes = u64::from(report.bytes_per_line) * u64::from(report.lines_per_page);
        let wanted_pages = match ctx.job.source {
            ScanSource::Flatbed => 1,
            ScanSource::Adf if ctx.job.pages == 0 && self.is(Mutation::AllPagesAsOne) => 1,
            ScanSource::Adf => ctx.job.pages,
        };
        let total_bytes = page_bytes * u64::from(wanted_pages.max(1));
        let chunk_max = if self.is(Mutation::BandPerCallback) {
            usize::try_from(report.band_bytes.max(1)).unwrap_or(usize::MAX)
        } else {
            usize::try_from(ctx.buffer_size.max(1)).unwrap_or(usize::MAX)
        };
        let mut buf = vec![0u8; chunk_max + READ_SLACK];
        let mut done_bytes = 0u64;
        let mut last_percent = 0;
        let mut bands_delivered = 0u32;
        let mut page = 0u16;
        loop {
            if page > 0 {
                let hr = self
                    .callback(callback, ItMsg::NewPage, last_percent, 0, &[])
                    .await;
                if hr != Hresult::S_OK {
                    return Err(self.stop_for_status(hr));
                }
            }
            let mut offset = 0u64;
            let band_bytes = u64::from(report.band_bytes.max(1));
            while offset < page_bytes {
                if self.is(Mutation::DropShortBand)
                    && offset.is_multiple_of(band_bytes)
                    && page_bytes - offset < band_bytes
                {
                    break;
                }
                // One read never crosses a band boundary: the device ends every band with a
                // short packet or a ZLP, so a shorter read means the device cut the band.
                let band_left = band_bytes - offset % band_bytes;
                let want =
                    usize::try_from((page_bytes - offset).min(band_left).min(chunk_max as u64))
                        .unwrap_or(chunk_max);
                // Ask for one packet more than the band holds when the band ends inside this
                // read, so its terminating short packet or ZLP ends the transfer (PROTOCOL.md).
                let ask = if (want as u64) == band_left {
                    want + READ_SLACK
                } else {
                    want
                };
                let n = self
                    .read_chunk(host, callback, &mut buf[..ask], last_percent)
                    .await?;
                if n < want && !self.served_ahead.replace(false) {
                    // A device-initiated cancel by short data (reference §1.2).
                    return Err(self.device_stop(host).await);
                }
                if self.cancel_io.get() {
                    return Err(Stop::Cancelled);
                }
                done_bytes += n as u64;
                let mut percent = percent_of(done_bytes, total_bytes, wanted_pages == 0);
                bands_delivered += 1;
                if self.is(Mutation::PercentBackwards) && bands_delivered == 3 {
                    percent = (last_percent - 1).max(0);
                }
                let mut reported_offset = offset as i64;
                if self.is(Mutation::OffsetGap) && bands_delivered >= 3 {
                    reported_offset += 16;
                }
                last_percent = percent.max(last_percent);
                let full_chunk = band_bytes.min(chunk_max as u64);
                let short_last = offset + n as u64 == page_bytes && (n as u64) < full_chunk;
                let length = if self.is(Mutation::LastLengthOverrun) && short_last {
                    full_chunk as i64
                } else {
                    n as i64
                };
                let hr = self
                    .callback_len(
                        callback,
                        ItMsg::Data,
                        percent,
                        reported_offset,
                        &buf[..n],
                        length,
                    )
                    .await;
                offset += n as u64;
                if self.is(Mutation::StaleBand) && offset < page_bytes && hr != Hresult::S_OK {
                    // Reads one chunk ahead before acting on the verdict, and keeps it.
                    let ahead_len = usize::try_from(
                        (page_bytes - offset)
                            .min(band_bytes - offset % band_bytes)
                            .min(chunk_max as u64),
                    )
                    .unwrap_or(chunk_max);
                    let mut ahead = vec![0u8; ahead_len + READ_SLACK];
                    if let Ok(m) = host.bulk_in(EP_DATA_IN, &mut ahead, READ_SLICE).await {
                        ahead.truncate(m);
                        *self.read_ahead.borrow_mut() = Some(ahead);
                    }
                }
                if hr == Hresult::S_FALSE
                    && self.is(Mutation::DataAfterSFalse)
                    && !self.extra_sent.get()
                {
                    // Delivers one more band before honouring the cancel.
                    self.extra_sent.set(true);
                    continue;
                }
                if hr != Hresult::S_OK {
                    return Err(stop_for(hr));
                }
                if self.extra_sent.get() {
                    return Err(Stop::Cancelled);
                }
            }
            if self.extra_sent.get() {
                return Err(Stop::Cancelled);
            }
            page += 1;
            if ctx.job.source == ScanSource::Flatbed || (wanted_pages > 0 && page >= wanted_pages) {
                break;
            }
            // ADF: is another sheet coming?
            let scan = loop {
                let scan = self.scan_status(host).await.map_err(Stop::Error)?;
                // Draining with bands still buffered: the next page is waiting already (a
                // host that fell a page behind the device, on the wall clock).
                if scan.state != DeviceState::Draining || scan.bands_ready > 0 {
                    break scan;
                }
                host.sleep(STATUS_POLL).await;
            };
            match (scan.state, scan.error) {
                (DeviceState::Idle, ScanError::FeederEmpty)
                | (DeviceState::Idle, ScanError::None) => {
                    if wanted_pages == 0 {
                        break;
                    }
                    return Ok(Hresult::WIA_STATUS_END_OF_MEDIA);
                }
                (DeviceState::Idle, _) | (DeviceState::Halted, _) => {
                    return Err(self.device_stop(host).await)
                }
                _ => {}
            }
        }
        Ok(Hresult::S_OK)
    }
}

fn percent_of(done: u64, total: u64, unknown_total: bool) -> i32 {
    if unknown_total || total == 0 {
        return 0;
    }
    ((done * 100) / total).min(100) as i32
}

fn stop_for(hr: Hresult) -> Stop {
    if hr == Hresult::S_FALSE {
        Stop::Cancelled
    } else {
        Stop::AppError(hr)
    }
}

fn map_transfer_error(e: TransferError) -> Hresult {
    match e {
        TransferError::NoDevice => Hresult::WIA_ERROR_OFFLINE,
        _ => Hresult::WIA_ERROR_DEVICE_COMMUNICATION,
    }
}

#[async_trait(?Send)]
impl MiniDriver for NativeDriver {
    fn supports_async_cancel(&self) -> bool {
        !matches!(self.flavor, Flavor::LegacyXp)
    }

    async fn acquire_item_data(
        &self,
        ctx: &TransferContext,
        host: &dyn UsbHost,
        callback: &dyn MiniDrvCallback,
    ) -> Hresult {
        if let Some(drain) = self.drain.borrow_mut().take() {
            drain.cancel();
        }
        self.cancel_io.set(false);
        self.extra_sent.set(false);
        self.interface.set(ctx.interface);
        match self.transfer(ctx, host, callback).await {
            Ok(hr) => hr,
            Err(stop) => {
                // The late band of DataAfterSFalse was read after the cancel; whatever it met,
                // the transfer counts as cancelled.
                let stop = if self.extra_sent.get() {
                    Stop::Cancelled
                } else {
                    stop
                };
                let cleanup = self.cancel_device(host).await;
                if self.is(Mutation::SlowReturn) && matches!(stop, Stop::Cancelled) {
                    host.sleep(Duration::from_millis(3000)).await;
                }
                if self.is(Mutation::PendingDrain) && matches!(stop, Stop::Cancelled) {
                    self.post_and_leave();
                }
                match (stop, cleanup) {
                    (Stop::AppError(_), _) if self.is(Mutation::SwallowError) => Hresult::S_FALSE,
                    (Stop::AppError(hr), _) | (Stop::Error(hr), _) => hr,
                    (Stop::Cancelled, Err(hr)) => hr,
                    (Stop::Cancelled, Ok(())) if self.is(Mutation::SOkOnCancel) => Hresult::S_OK,
                    (Stop::Cancelled, Ok(())) if self.is(Mutation::EFailOnCancel) => {
                        Hresult::E_FAIL
                    }
                    (Stop::Cancelled, Ok(())) => Hresult::S_FALSE,
                }
            }
        }
    }

    fn begin_run(&self, run: Rc<dyn RunContext>) {
        *self.run.borrow_mut() = Some(run);
    }

    fn end_run(&self) {
        self.run.borrow_mut().take();
        self.drain.borrow_mut().take();
    }

    fn notify_pnp_event(&self, event: PnpEvent, host: &dyn UsbHost) {
        match event {
            PnpEvent::CancelIo if self.honours_cancel_io() => {
                self.cancel_io.set(true);
                host.abort_endpoint(EP_DATA_IN);
            }
            PnpEvent::CancelIo => {}
        }
    }
}
