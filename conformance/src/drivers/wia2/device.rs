//! The native protocol from a driver's side (`emulator/PROTOCOL.md` §10, "Recommended driver
//! sequences"): open, scan, read a band, stop after a cancel, recover from a device-initiated
//! cancel. Written from the protocol document; the WIA 2.0 drivers use it.

use scanemu::engine::ScanJob;
use scanemu::host::{Setup, TransferError, UsbHost};
use scanemu::personality::native::protocol::{
    DeviceState, DeviceStatus, ParamsReport, ScanError, ScanParams, ScanStatus, CANCEL_CODE,
    EP_DATA_IN, EP_DATA_OUT, PARAMS_REPORT_LEN, REQ_CANCEL, REQ_DEVICE_RESET,
    REQ_GET_DEVICE_STATUS, REQ_GET_PARAMS, REQ_GET_SCAN_STATUS, REQ_SET_PARAMS, REQ_START_SCAN,
    SCAN_STATUS_LEN, STATUS_BUSY, STATUS_OK, STATUS_TRANSACTION_CANCELLED,
};
use scanemu::time::Duration;

use crate::wia::Hresult;

/// Timeout of control requests.
const CONTROL_TIMEOUT: Duration = Duration::from_millis(1000);
/// Interval between Get Device Status polls while the device is busy.
pub(crate) const STATUS_POLL: Duration = Duration::from_millis(5);
/// How long a driver polls a busy device before it resets it.
const CANCEL_BUDGET: Duration = Duration::from_millis(2000);
/// Extra bytes asked for at the end of a band: one packet of the largest size, so the band's
/// short packet or ZLP ends the read (PROTOCOL.md §3).
pub(crate) const READ_SLACK: usize = 1024;

/// How a job ended early, from the device's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeviceEnd {
    /// The device cancelled: its Cancel button, or a short band (reference §1.2).
    Cancelled,
    /// The device failed with this WIA error.
    Error(Hresult),
}

/// What a bulk read of band data gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// This many bytes.
    Data(usize),
    /// Nothing yet: the read timed out with no byte.
    Nothing,
    /// The read was aborted (drvNotifyPnPEvent aborted the endpoint).
    Aborted,
    /// The device stopped the job (a stall).
    Stalled,
    /// The device is gone.
    Gone,
    /// Another transport failure.
    Failed,
}

/// What follows the last band of an ADF page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AfterPage {
    /// Another sheet is coming.
    Next,
    /// The job is over: every page asked for, or the feeder emptied on a `pages = 0` job.
    Done,
    /// The feeder emptied before the pages asked for.
    EndOfMedia,
    /// The device ended the job otherwise.
    Stopped(DeviceEnd),
}

/// The native scanner behind a host. See the module documentation.
pub(crate) struct Scanner<'a> {
    pub host: &'a dyn UsbHost,
    pub interface: u16,
}

/// A transfer failure as a WIA error: the device gone, or a communication error.
pub(crate) fn transfer_error(e: TransferError) -> Hresult {
    match e {
        TransferError::NoDevice => Hresult::WIA_ERROR_OFFLINE,
        _ => Hresult::WIA_ERROR_DEVICE_COMMUNICATION,
    }
}

/// The WIA error for a scan error the device reports.
pub(crate) fn scan_error(e: ScanError) -> DeviceEnd {
    match e {
        ScanError::CancelButton | ScanError::ShortBand => DeviceEnd::Cancelled,
        ScanError::PaperJam => DeviceEnd::Error(Hresult::WIA_ERROR_PAPER_JAM),
        ScanError::CoverOpen => DeviceEnd::Error(Hresult::WIA_ERROR_COVER_OPEN),
        ScanError::FeederEmpty => DeviceEnd::Error(Hresult::WIA_ERROR_PAPER_EMPTY),
        ScanError::MultiFeed => DeviceEnd::Error(Hresult::WIA_ERROR_MULTI_FEED),
        _ => DeviceEnd::Error(Hresult::WIA_ERROR_DEVICE_COMMUNICATION),
    }
}

impl Scanner<'_> {
    fn setup_in(&self, request: u8, length: u16) -> Setup {
        Setup::vendor_in(request, 0, self.interface, length)
    }

    fn setup_out(&self, request: u8, length: u16) -> Setup {
        Setup::vendor_out(request, 0, self.interface, length)
    }

    /// GET_DEVICE_STATUS.
    pub(crate) async fn device_status(&self) -> Result<DeviceStatus, Hresult> {
        let reply = self
            .host
            .control_in(self.setup_in(REQ_GET_DEVICE_STATUS, 8), CONTROL_TIMEOUT)
            .await
            .map_err(transfer_error)?;
        DeviceStatus::decode(&reply).map_err(|_| Hresult::WIA_ERROR_DEVICE_COMMUNICATION)
    }

    /// GET_SCAN_STATUS.
    pub(crate) async fn scan_status(&self) -> Result<ScanStatus, Hresult> {
        let reply = self
            .host
            .control_in(
                self.setup_in(REQ_GET_SCAN_STATUS, SCAN_STATUS_LEN as u16),
                CONTROL_TIMEOUT,
            )
            .await
            .map_err(transfer_error)?;
        ScanStatus::decode(&reply).map_err(|_| Hresult::WIA_ERROR_DEVICE_COMMUNICATION)
    }

    /// DEVICE_RESET.
    pub(crate) async fn reset(&self) -> Result<(), Hresult> {
        self.host
            .control_out(self.setup_out(REQ_DEVICE_RESET, 0), &[], CONTROL_TIMEOUT)
            .await
            .map_err(transfer_error)
    }

    /// Polls GET_DEVICE_STATUS until OK, clearing the halts it lists; resets a device that stays
    /// busy past the budget.
    pub(crate) async fn wait_ready(&self) -> Result<(), Hresult> {
        let deadline = self.host.now() + CANCEL_BUDGET;
        let mut reset_sent = false;
        loop {
            let status = self.device_status().await?;
            match status.code {
                STATUS_OK => return Ok(()),
                STATUS_TRANSACTION_CANCELLED => {
                    let halted = if status.halted.is_empty() {
                        vec![EP_DATA_IN, EP_DATA_OUT]
                    } else {
                        status.halted.clone()
                    };
                    for ep in halted {
                        self.host.clear_halt(ep).await.map_err(transfer_error)?;
                    }
                }
                STATUS_BUSY => {}
                _ => return Err(Hresult::WIA_ERROR_DEVICE_COMMUNICATION),
            }
            if self.host.now() >= deadline {
                if reset_sent {
                    return Err(Hresult::WIA_ERROR_DEVICE_COMMUNICATION);
                }
                self.reset().await?;
                reset_sent = true;
            }
            self.host.sleep(STATUS_POLL).await;
        }
    }

    /// The open sequence before a job: the device ready, and idle (a job some earlier session
    /// left running is reset).
    pub(crate) async fn prepare(&self) -> Result<(), Hresult> {
        self.wait_ready().await?;
        let scan = self.scan_status().await?;
        if scan.state != DeviceState::Idle {
            self.reset().await?;
            self.wait_ready().await?;
        }
        Ok(())
    }

    /// SET_PARAMS then GET_PARAMS: the sizes of the job.
    pub(crate) async fn set_params(&self, job: &ScanJob) -> Result<ParamsReport, Hresult> {
        let params = ScanParams { job: *job }.encode();
        self.host
            .control_out(
                self.setup_out(REQ_SET_PARAMS, params.len() as u16),
                &params,
                CONTROL_TIMEOUT,
            )
            .await
            .map_err(|e| match e {
                TransferError::Stall => Hresult::WIA_ERROR_BUSY,
                e => transfer_error(e),
            })?;
        let report = self
            .host
            .control_in(
                self.setup_in(REQ_GET_PARAMS, PARAMS_REPORT_LEN as u16),
                CONTROL_TIMEOUT,
            )
            .await
            .map_err(transfer_error)?;
        ParamsReport::decode(&report).map_err(|_| Hresult::WIA_ERROR_DEVICE_COMMUNICATION)
    }

    /// START_SCAN; a refused start is the feeder's empty tray or a busy device.
    pub(crate) async fn start(&self) -> Result<(), Hresult> {
        match self
            .host
            .control_out(self.setup_out(REQ_START_SCAN, 0), &[], CONTROL_TIMEOUT)
            .await
        {
            Ok(()) => Ok(()),
            Err(TransferError::Stall) => {
                let scan = self.scan_status().await?;
                Err(match scan.error {
                    ScanError::FeederEmpty => Hresult::WIA_ERROR_PAPER_EMPTY,
                    _ => Hresult::WIA_ERROR_BUSY,
                })
            }
            Err(e) => Err(transfer_error(e)),
        }
    }

    /// True while the lamp warms up.
    pub(crate) async fn warming_up(&self) -> Result<bool, Hresult> {
        Ok(self.scan_status().await?.state == DeviceState::WarmingUp)
    }

    /// One bulk read of band data into `buf`.
    pub(crate) async fn read(&self, buf: &mut [u8], timeout: Duration) -> Read {
        match self.host.bulk_in(EP_DATA_IN, buf, timeout).await {
            Ok(n) => Read::Data(n),
            Err(TransferError::Timeout { actual }) if actual > 0 => Read::Data(actual),
            Err(TransferError::Timeout { .. }) => Read::Nothing,
            Err(TransferError::Cancelled { actual }) if actual > 0 => Read::Data(actual),
            Err(TransferError::Cancelled { .. }) => Read::Aborted,
            Err(TransferError::Stall) => Read::Stalled,
            Err(TransferError::NoDevice) => Read::Gone,
            Err(_) => Read::Failed,
        }
    }

    /// Why the device ended the job (after a stall, a short read, or an idle state while data
    /// was expected): its halts cleared, its scan error read.
    pub(crate) async fn device_end(&self) -> DeviceEnd {
        let status = match self.device_status().await {
            Ok(s) => s,
            Err(hr) => return DeviceEnd::Error(hr),
        };
        if status.code == STATUS_TRANSACTION_CANCELLED {
            if let Err(hr) = self.wait_ready().await {
                return DeviceEnd::Error(hr);
            }
        }
        match self.scan_status().await {
            Ok(scan) => scan_error(scan.error),
            Err(hr) => DeviceEnd::Error(hr),
        }
    }

    /// After the last band of an ADF page: is another sheet coming (polling while the device
    /// drains)? `pages_done` of `wanted` (0: until the feeder is empty).
    pub(crate) async fn after_page(
        &self,
        pages_done: u16,
        wanted: u16,
    ) -> Result<AfterPage, Hresult> {
        if wanted > 0 && pages_done >= wanted {
            return Ok(AfterPage::Done);
        }
        let scan = loop {
            let scan = self.scan_status().await?;
            // Draining with bands still buffered: the next page is waiting already (a host
            // that fell a page behind the device, as on the wall clock over libusb).
            if scan.state != DeviceState::Draining || scan.bands_ready > 0 {
                break scan;
            }
            self.host.sleep(STATUS_POLL).await;
        };
        Ok(match (scan.state, scan.error) {
            (DeviceState::Idle, ScanError::FeederEmpty | ScanError::None) if wanted == 0 => {
                AfterPage::Done
            }
            (DeviceState::Idle, ScanError::FeederEmpty | ScanError::None) => AfterPage::EndOfMedia,
            (DeviceState::Idle | DeviceState::Halted, _) => {
                AfterPage::Stopped(self.device_end().await)
            }
            _ => AfterPage::Next,
        })
    }

    /// Stops the job after a cancel or a failure: Cancel Request, status polled until OK, and a
    /// Device Reset if the device ignored the cancel.
    pub(crate) async fn cancel(&self) -> Result<(), Hresult> {
        let mut payload = [0u8; 6];
        payload[0..2].copy_from_slice(&CANCEL_CODE.to_le_bytes());
        self.host
            .control_out(self.setup_out(REQ_CANCEL, 6), &payload, CONTROL_TIMEOUT)
            .await
            .map_err(transfer_error)?;
        self.wait_ready().await?;
        let scan = self.scan_status().await?;
        if scan.state != DeviceState::Idle {
            self.reset().await?;
            self.wait_ready().await?;
        }
        Ok(())
    }

    /// Writes `data` to the bulk OUT endpoint (an upload; the native device discards it).
    pub(crate) async fn write_out(&self, data: &[u8]) -> Result<(), Hresult> {
        self.host
            .bulk_out(EP_DATA_OUT, data, CONTROL_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(transfer_error)
    }

    /// Aborts a pending bulk read (from drvNotifyPnPEvent; does not wait).
    pub(crate) fn abort_read(host: &dyn UsbHost) {
        host.abort_endpoint(EP_DATA_IN);
    }
}
