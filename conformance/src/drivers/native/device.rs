//! The driver's requests to the device, written from `emulator/PROTOCOL.md`: status, clearing
//! halts, waiting until ready, reset, and the cancel sequence (Cancel Request, then Get Device
//! Status until OK, as the Still Image class asks).

use super::*;

impl NativeDriver {
    pub(super) fn setup_in(&self, request: u8, length: u16) -> Setup {
        Setup::vendor_in(request, 0, self.interface.get(), length)
    }

    pub(super) fn setup_out(&self, request: u8, length: u16) -> Setup {
        Setup::vendor_out(request, 0, self.interface.get(), length)
    }

    pub(super) async fn device_status(&self, host: &dyn UsbHost) -> Result<DeviceStatus, Hresult> {
        let reply = host
            .control_in(self.setup_in(REQ_GET_DEVICE_STATUS, 8), CONTROL_TIMEOUT)
            .await
            .map_err(map_transfer_error)?;
        DeviceStatus::decode(&reply).map_err(|_| Hresult::WIA_ERROR_DEVICE_COMMUNICATION)
    }

    pub(super) async fn scan_status(&self, host: &dyn UsbHost) -> Result<ScanStatus, Hresult> {
        let reply = host
            .control_in(
                self.setup_in(REQ_GET_SCAN_STATUS, SCAN_STATUS_LEN as u16),
                CONTROL_TIMEOUT,
            )
            .await
            .map_err(map_transfer_error)?;
        ScanStatus::decode(&reply).map_err(|_| Hresult::WIA_ERROR_DEVICE_COMMUNICATION)
    }

    /// Clears the endpoints a Transaction_Cancelled status lists.
    pub(super) async fn clear_halts(
        &self,
        host: &dyn UsbHost,
        halted: &[u8],
    ) -> Result<(), Hresult> {
        if self.is(Mutation::HaltUncleared) {
            return Ok(());
        }
        for ep in halted {
            host.clear_halt(*ep).await.map_err(map_transfer_error)?;
        }
        Ok(())
    }

    /// Polls Get Device Status until OK, clearing halts it reports; resets a device that stays
    /// busy past the budget.
    pub(super) async fn wait_ready(&self, host: &dyn UsbHost) -> Result<(), Hresult> {
        let deadline = host.now() + CANCEL_BUDGET;
        let mut reset_sent = false;
        loop {
            let status = self.device_status(host).await?;
            match status.code {
                STATUS_OK => return Ok(()),
                STATUS_TRANSACTION_CANCELLED if !self.is(Mutation::HangOnStall) => {
                    if self.is(Mutation::HaltUncleared) {
                        return Ok(());
                    }
                    let halted = if status.halted.is_empty() {
                        vec![EP_DATA_IN, EP_DATA_OUT]
                    } else {
                        status.halted.clone()
                    };
                    self.clear_halts(host, &halted).await?;
                }
                STATUS_BUSY | STATUS_TRANSACTION_CANCELLED => {}
                _ => return Err(Hresult::WIA_ERROR_DEVICE_COMMUNICATION),
            }
            if host.now() >= deadline && !self.is(Mutation::HangOnStall) {
                if reset_sent {
                    return Err(Hresult::WIA_ERROR_DEVICE_COMMUNICATION);
                }
                self.reset_device(host).await?;
                reset_sent = true;
            }
            // The endless poll of HangOnStall is slow, to keep its trace short.
            let pause =
                if self.is(Mutation::HangOnStall) && status.code == STATUS_TRANSACTION_CANCELLED {
                    Duration::from_millis(250)
                } else {
                    STATUS_POLL
                };
            host.sleep(pause).await;
        }
    }

    pub(super) async fn reset_device(&self, host: &dyn UsbHost) -> Result<(), Hresult> {
        host.control_out(self.setup_out(REQ_DEVICE_RESET, 0), &[], CONTROL_TIMEOUT)
            .await
            .map_err(map_transfer_error)
    }

    /// Stops the device after the application or the event cancelled: Cancel Request, status
    /// polled until OK, and a Device Reset if the device ignored the cancel.
    pub(super) async fn cancel_device(&self, host: &dyn UsbHost) -> Result<(), Hresult> {
        if self.is(Mutation::NoDeviceCancel) {
            return Ok(());
        }
        if self.is(Mutation::SlowCancel) {
            // Lets a running scan go on for up to two seconds, in case it ends by itself,
            // before it tells the device.
            let until = host.now() + Duration::from_millis(2000);
            while host.now() < until {
                let running = self.scan_status(host).await.is_ok_and(|s| {
                    matches!(
                        s.state,
                        DeviceState::WarmingUp | DeviceState::Scanning | DeviceState::FeedingPage
                    )
                });
                if !running {
                    break;
                }
                host.sleep(Duration::from_millis(25)).await;
            }
        }
        if !self.is(Mutation::StaleBand) {
            self.read_ahead.borrow_mut().take();
        }
        let mut payload = [0u8; 6];
        payload[0..2].copy_from_slice(&CANCEL_CODE.to_le_bytes());
        host.control_out(self.setup_out(REQ_CANCEL, 6), &payload, CONTROL_TIMEOUT)
            .await
            .map_err(map_transfer_error)?;
        if self.is(Mutation::NoStatusPoll) {
            return Ok(());
        }
        self.wait_ready(host).await?;
        let scan = self.scan_status(host).await?;
        let halted_left = self.is(Mutation::HaltUncleared) && scan.state == DeviceState::Halted;
        if !matches!(scan.state, DeviceState::Idle) && !halted_left {
            // The device acknowledged the cancel but kept scanning: reset it.
            self.reset_device(host).await?;
            self.wait_ready(host).await?;
        }
        Ok(())
    }

    /// What a device-side stop (stall, short read, feeder empty) means, from the scan status.
    pub(super) async fn device_stop(&self, host: &dyn UsbHost) -> Stop {
        let status = match self.device_status(host).await {
            Ok(s) => s,
            Err(hr) => return Stop::Error(hr),
        };
        if status.code == STATUS_TRANSACTION_CANCELLED {
            if let Err(hr) = self.wait_ready(host).await {
                return Stop::Error(hr);
            }
        }
        let scan = match self.scan_status(host).await {
            Ok(s) => s,
            Err(hr) => return Stop::Error(hr),
        };
        match scan.error {
            ScanError::CancelButton | ScanError::ShortBand => Stop::Cancelled,
            ScanError::PaperJam => Stop::Error(Hresult::WIA_ERROR_PAPER_JAM),
            ScanError::CoverOpen => Stop::Error(Hresult::WIA_ERROR_COVER_OPEN),
            ScanError::FeederEmpty => Stop::Error(Hresult::WIA_ERROR_PAPER_EMPTY),
            _ => Stop::Error(Hresult::WIA_ERROR_DEVICE_COMMUNICATION),
        }
    }
}
