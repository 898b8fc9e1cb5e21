//! The WIA service process as the USB stack sees it: the host a driver instance uses, whose
//! transfers the operating system cancels when the process ends.
//!
//! [`ProcessHost`] passes every call to the run's host and counts the transfers this process
//! has pending, per endpoint. When the service is restarted mid-transfer (HLK H21) the runner
//! drops the driver's future, which abandons its transfers; [`ProcessHost::end`] then aborts
//! the endpoints they were pending on, as the system does for a process that dies, so the
//! device is left in whatever state the transfer had brought it to and the next instance's
//! pending count starts from zero.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use async_trait::async_trait;
use scanemu::host::{DeviceInfo, Setup, TransferError, UsbHost};
use scanemu::time::{Duration, Instant};

/// The host of one service process. See the module documentation.
pub(crate) struct ProcessHost {
    inner: Rc<dyn UsbHost>,
    /// Transfers pending, per endpoint address (0 for control transfers).
    pending: Rc<RefCell<BTreeMap<u8, u32>>>,
}

/// Counts one transfer as pending for as long as it lives (also when its future is dropped).
struct Pending {
    map: Rc<RefCell<BTreeMap<u8, u32>>>,
    ep: u8,
}

impl Pending {
    fn new(map: &Rc<RefCell<BTreeMap<u8, u32>>>, ep: u8) -> Pending {
        *map.borrow_mut().entry(ep).or_insert(0) += 1;
        Pending {
            map: map.clone(),
            ep,
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(n) = self.map.borrow_mut().get_mut(&self.ep) {
            *n = n.saturating_sub(1);
        }
    }
}

impl ProcessHost {
    /// A process reaching the device through `inner`.
    pub(crate) fn new(inner: Rc<dyn UsbHost>) -> ProcessHost {
        ProcessHost {
            inner,
            pending: Rc::new(RefCell::new(BTreeMap::new())),
        }
    }

    /// The process ended: aborts every endpoint it still had transfers pending on.
    pub(crate) fn end(&self) {
        let eps: Vec<u8> = self
            .pending
            .borrow()
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(ep, _)| *ep)
            .collect();
        for ep in eps {
            self.inner.abort_endpoint(ep);
        }
        self.pending.borrow_mut().clear();
    }

    fn track(&self, ep: u8) -> Pending {
        Pending::new(&self.pending, ep)
    }
}

#[async_trait(?Send)]
impl UsbHost for ProcessHost {
    fn device_info(&self) -> DeviceInfo {
        self.inner.device_info()
    }

    fn now(&self) -> Instant {
        self.inner.now()
    }

    async fn sleep(&self, duration: Duration) {
        self.inner.sleep(duration).await;
    }

    async fn control_in(&self, setup: Setup, timeout: Duration) -> Result<Vec<u8>, TransferError> {
        let _p = self.track(0);
        self.inner.control_in(setup, timeout).await
    }

    async fn control_out(
        &self,
        setup: Setup,
        data: &[u8],
        timeout: Duration,
    ) -> Result<(), TransferError> {
        let _p = self.track(0);
        self.inner.control_out(setup, data, timeout).await
    }

    async fn bulk_in(
        &self,
        ep: u8,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, TransferError> {
        let _p = self.track(ep);
        self.inner.bulk_in(ep, buf, timeout).await
    }

    async fn bulk_out(
        &self,
        ep: u8,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, TransferError> {
        let _p = self.track(ep);
        self.inner.bulk_out(ep, data, timeout).await
    }

    async fn interrupt_in(
        &self,
        ep: u8,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, TransferError> {
        let _p = self.track(ep);
        self.inner.interrupt_in(ep, buf, timeout).await
    }

    async fn clear_halt(&self, ep: u8) -> Result<(), TransferError> {
        let _p = self.track(0);
        self.inner.clear_halt(ep).await
    }

    async fn reset_device(&self) -> Result<(), TransferError> {
        let _p = self.track(0);
        self.inner.reset_device().await
    }

    fn abort_endpoint(&self, ep: u8) {
        self.inner.abort_endpoint(ep);
    }

    fn pending_transfers(&self) -> u32 {
        self.pending.borrow().values().sum()
    }
}
