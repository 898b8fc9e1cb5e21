//! [`Observed`]: any [`UsbHost`], with every operation reported to a [`HostObserver`].
//!
//! The one place that builds [`TransferRecord`]s, in the manner of smoltcp's `Tracer`: a
//! decorator around a host (`new`, `get_ref`, `get_mut`, `into_inner`) that passes every call
//! through and tells the observer what the operation was, when it was submitted and finished
//! (the host's own clock), the bytes it moved and how it ended. Hosts themselves report only
//! their device's notes (those that own a device: the in-process host and the replay).
//!
//! What a record holds:
//!
//! - control IN: the reply, nothing if the transfer failed;
//! - control OUT: the data stage offered, whatever the result (the device took it before it
//!   answered the status stage); the SETUP's length is the data's;
//! - bulk and interrupt: the bytes moved, for a failure the count its error carries
//!   ([`TransferError::actual`]: a timeout or an abort), endpoint addresses with their direction
//!   bit set as the method implies;
//! - clear halt, reset, abort: no data (abort: an instant, never a failure).

use std::rc::Rc;

use async_trait::async_trait;

use super::{
    DeviceInfo, HostObserver, Setup, TransferError, TransferKind, TransferRecord, UsbHost,
};
use crate::time::{Duration, Instant};

/// A host whose every operation is reported to an observer. See the module documentation.
#[derive(Clone)]
pub struct Observed<H> {
    inner: H,
    observer: Rc<dyn HostObserver>,
}

impl<H: UsbHost> Observed<H> {
    /// Wraps `inner`, reporting its operations to `observer`.
    pub fn new(inner: H, observer: Rc<dyn HostObserver>) -> Observed<H> {
        Observed { inner, observer }
    }

    /// The wrapped host.
    pub fn get_ref(&self) -> &H {
        &self.inner
    }

    /// The wrapped host, mutably.
    pub fn get_mut(&mut self) -> &mut H {
        &mut self.inner
    }

    /// The wrapped host, unwrapped.
    pub fn into_inner(self) -> H {
        self.inner
    }

    /// The observer the operations go to.
    pub fn observer(&self) -> &Rc<dyn HostObserver> {
        &self.observer
    }

    fn report(&self, record: &TransferRecord<'_>) {
        self.observer.transfer(record);
    }

    /// A bulk or interrupt IN transfer, reported.
    async fn read_in(
        &self,
        kind: TransferKind,
        ep: u8,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, TransferError> {
        let submitted = self.inner.now();
        let r = match kind {
            TransferKind::Interrupt => self.inner.interrupt_in(ep, buf, timeout).await,
            _ => self.inner.bulk_in(ep, buf, timeout).await,
        };
        let moved = moved(&r).min(buf.len());
        self.report(&TransferRecord {
            submitted,
            at: self.inner.now(),
            kind,
            ep: ep | 0x80,
            setup: None,
            requested: buf.len(),
            data: &buf[..moved],
            result: outcome(&r),
        });
        r
    }
}

/// Bytes a data transfer moved: its count, or what its error says moved.
fn moved(r: &Result<usize, TransferError>) -> usize {
    match r {
        Ok(n) => *n,
        Err(e) => e.actual(),
    }
}

/// How a transfer ended, without its payload.
fn outcome<T>(r: &Result<T, TransferError>) -> Result<(), TransferError> {
    r.as_ref().map(|_| ()).map_err(Clone::clone)
}

#[async_trait(?Send)]
impl<H: UsbHost> UsbHost for Observed<H> {
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
        let submitted = self.inner.now();
        let r = self.inner.control_in(setup, timeout).await;
        let mut setup = setup;
        setup.request_type |= crate::usb::hc::DIR_IN;
        self.report(&TransferRecord {
            submitted,
            at: self.inner.now(),
            kind: TransferKind::Control,
            ep: 0x80,
            setup: Some(setup),
            requested: usize::from(setup.length),
            data: r.as_deref().unwrap_or(&[]),
            result: outcome(&r),
        });
        r
    }

    async fn control_out(
        &self,
        setup: Setup,
        data: &[u8],
        timeout: Duration,
    ) -> Result<(), TransferError> {
        let submitted = self.inner.now();
        let r = self.inner.control_out(setup, data, timeout).await;
        let mut setup = setup;
        setup.request_type &= !crate::usb::hc::DIR_IN;
        setup.length = u16::try_from(data.len()).unwrap_or(u16::MAX);
        self.report(&TransferRecord {
            submitted,
            at: self.inner.now(),
            kind: TransferKind::Control,
            ep: 0x00,
            setup: Some(setup),
            requested: data.len(),
            data,
            result: outcome(&r),
        });
        r
    }

    async fn bulk_in(
        &self,
        ep: u8,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, TransferError> {
        self.read_in(TransferKind::Bulk, ep, buf, timeout).await
    }

    async fn bulk_out(
        &self,
        ep: u8,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, TransferError> {
        let submitted = self.inner.now();
        let r = self.inner.bulk_out(ep, data, timeout).await;
        self.report(&TransferRecord {
            submitted,
            at: self.inner.now(),
            kind: TransferKind::Bulk,
            ep: ep & 0x7f,
            setup: None,
            requested: data.len(),
            data: &data[..moved(&r).min(data.len())],
            result: outcome(&r),
        });
        r
    }

    async fn interrupt_in(
        &self,
        ep: u8,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, TransferError> {
        self.read_in(TransferKind::Interrupt, ep, buf, timeout)
            .await
    }

    async fn clear_halt(&self, ep: u8) -> Result<(), TransferError> {
        let submitted = self.inner.now();
        let r = self.inner.clear_halt(ep).await;
        self.report(&TransferRecord {
            submitted,
            at: self.inner.now(),
            kind: TransferKind::ClearHalt,
            ep,
            setup: Some(Setup::clear_halt(ep)),
            requested: 0,
            data: &[],
            result: r.clone(),
        });
        r
    }

    async fn reset_device(&self) -> Result<(), TransferError> {
        let submitted = self.inner.now();
        let r = self.inner.reset_device().await;
        self.report(&TransferRecord {
            submitted,
            at: self.inner.now(),
            kind: TransferKind::Reset,
            ep: 0,
            setup: None,
            requested: 0,
            data: &[],
            result: r.clone(),
        });
        r
    }

    fn abort_endpoint(&self, ep: u8) {
        let submitted = self.inner.now();
        self.inner.abort_endpoint(ep);
        self.report(&TransferRecord {
            submitted,
            at: self.inner.now(),
            kind: TransferKind::Abort,
            ep,
            setup: None,
            requested: 0,
            data: &[],
            result: Ok(()),
        });
    }

    fn pending_transfers(&self) -> u32 {
        self.inner.pending_transfers()
    }
}
