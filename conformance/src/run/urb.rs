//! Submitted transfers ([`RunContext::submit`](crate::driver::RunContext::submit)): each
//! [`UsbRequest`] runs as a task of its own on the run's [`Sim`] against the run's host, and
//! completes its [`Urb`].
//!
//! A request's host future lives in a slot that its task polls. [`Urb::cancel`] takes the
//! future out of the slot and drops it at once (the host lets go of the transfer: an unlink),
//! reports the transfer to the run's observer chain as cancelled, since a host does not report
//! a transfer it never finished, and completes the `Urb`. A request that its task has not
//! polled yet has not reached the host: [`Submitter::unstarted`] counts those, so that a
//! driver that returns right after submitting still has them counted as pending.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};

use scanemu::host::{HostObserver, TransferError, TransferKind, TransferRecord, UsbHost};
use scanemu::sim::Sim;
use scanemu::time::Instant;

use crate::driver::{Completion, Urb, UsbRequest};

type Transfer = Pin<Box<dyn Future<Output = Completion>>>;

/// A request's host future, polled by its task.
struct Slot {
    future: Option<Transfer>,
    /// Its task has polled it (it reached the host).
    started: bool,
}

/// Runs the submitted requests of one run.
pub(crate) struct Submitter {
    sim: Sim,
    host: Rc<dyn UsbHost>,
    observer: Option<Rc<dyn HostObserver>>,
    next_seq: Cell<u64>,
    /// Transfers submitted whose task has not polled them yet.
    unstarted: Rc<Cell<u32>>,
    /// Bumped at every completion; tasks in `first_completed` wait for it to move.
    completions: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Submitter {
    /// Runs requests on `host`, as tasks of `sim`; transfers cancelled early are reported to
    /// `observer` (the chain the host reports to).
    pub(crate) fn new(
        sim: Sim,
        host: Rc<dyn UsbHost>,
        observer: Option<Rc<dyn HostObserver>>,
    ) -> Rc<Submitter> {
        Rc::new(Submitter {
            sim,
            host,
            observer,
            next_seq: Cell::new(0),
            unstarted: Rc::new(Cell::new(0)),
            completions: Cell::new(0),
            waiters: RefCell::new(Vec::new()),
        })
    }

    /// The count of submitted transfers that have not reached the host yet: pending as much
    /// as the host's own count.
    pub(crate) fn unstarted(&self) -> Rc<Cell<u32>> {
        self.unstarted.clone()
    }

    /// Starts `request` as a task of its own; see the module documentation.
    pub(crate) fn submit(self: &Rc<Self>, request: UsbRequest) -> Urb {
        let seq = self.next_seq.get() + 1;
        self.next_seq.set(seq);
        let urb = Urb::new(seq, request.queue());
        let is_transfer = request.queue().is_some();
        if is_transfer {
            self.unstarted.set(self.unstarted.get() + 1);
        }
        let submitted = self.sim.now();
        let slot = Rc::new(RefCell::new(Slot {
            future: Some(Box::pin(perform(self.host.clone(), request.clone()))),
            started: false,
        }));
        let (weak_slot, weak_self) = (Rc::downgrade(&slot), Rc::downgrade(self));
        urb.set_canceller(Box::new(move |urb: &Urb| {
            if let Some(me) = weak_self.upgrade() {
                me.cancel(urb, &weak_slot, &request, submitted);
            }
        }));
        let (me, handle) = (self.clone(), urb.clone());
        self.sim.spawn(async move {
            let completion = std::future::poll_fn(|cx| {
                let future = {
                    let mut s = slot.borrow_mut();
                    if !s.started {
                        s.started = true;
                        if is_transfer {
                            me.unstarted.set(me.unstarted.get() - 1);
                        }
                    }
                    s.future.take()
                };
                let Some(mut future) = future else {
                    return Poll::Ready(None);
                };
                match future.as_mut().poll(cx) {
                    Poll::Ready(c) => Poll::Ready(Some(c)),
                    // Cancelled while polled: the future is dropped here.
                    Poll::Pending if handle.is_complete() => Poll::Ready(None),
                    Poll::Pending => {
                        slot.borrow_mut().future = Some(future);
                        Poll::Pending
                    }
                }
            })
            .await;
            if let Some(c) = completion {
                handle.complete(c);
                me.completed();
            }
        });
        urb
    }

    /// Ends `urb` now: drops its host future, reports it cancelled, completes it.
    fn cancel(&self, urb: &Urb, slot: &Weak<RefCell<Slot>>, request: &UsbRequest, at0: Instant) {
        let future = slot.upgrade().and_then(|slot| {
            let mut s = slot.borrow_mut();
            if !s.started {
                s.started = true;
                if request.queue().is_some() {
                    self.unstarted.set(self.unstarted.get() - 1);
                }
            }
            s.future.take()
        });
        drop(future);
        let at = self.sim.now();
        let result = Err(TransferError::Cancelled { actual: 0 });
        if let Some(obs) = &self.observer {
            if let Some(record) = cancelled_record(request, at0, at, &result) {
                obs.transfer(&record);
            }
        }
        urb.complete(Completion {
            result: result.map(|()| 0),
            data: Vec::new(),
            at,
        });
        self.completed();
    }

    fn completed(&self) {
        self.completions.set(self.completions.get() + 1);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// [`RunContext::first_completed`](crate::driver::RunContext::first_completed).
    pub(crate) async fn first_completed(&self, urbs: &[Urb]) -> Option<usize> {
        if urbs.is_empty() {
            return None;
        }
        loop {
            if let Some((_, at)) = earliest(urbs) {
                if at == self.sim.now() {
                    self.sim.settle().await;
                }
                return earliest(urbs).map(|(i, _)| i);
            }
            let seen = self.completions.get();
            std::future::poll_fn(|cx| {
                if self.completions.get() != seen {
                    return Poll::Ready(());
                }
                self.waiters.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            })
            .await;
        }
    }
}

/// The index and completion time of the completed request that completed first (time, then
/// submission order).
fn earliest(urbs: &[Urb]) -> Option<(usize, Instant)> {
    urbs.iter()
        .enumerate()
        .filter_map(|(i, u)| u.completion().map(|c| (i, c.at, u.seq())))
        .min_by_key(|&(_, at, seq)| (at, seq))
        .map(|(i, at, _)| (i, at))
}

/// Runs `request` on `host`.
async fn perform(host: Rc<dyn UsbHost>, request: UsbRequest) -> Completion {
    let read = |r: Result<usize, TransferError>, mut buf: Vec<u8>| match r {
        Ok(n) => {
            buf.truncate(n);
            (Ok(n), buf)
        }
        Err(e) => (Err(e), Vec::new()),
    };
    let (result, data) = match request {
        UsbRequest::ControlIn { setup, timeout } => match host.control_in(setup, timeout).await {
            Ok(reply) => (Ok(reply.len()), reply),
            Err(e) => (Err(e), Vec::new()),
        },
        UsbRequest::ControlOut {
            setup,
            data,
            timeout,
        } => (
            host.control_out(setup, &data, timeout)
                .await
                .map(|()| data.len()),
            Vec::new(),
        ),
        UsbRequest::BulkIn {
            ep,
            length,
            timeout,
        } => {
            let mut buf = vec![0u8; length];
            let r = host.bulk_in(ep, &mut buf, timeout).await;
            read(r, buf)
        }
        UsbRequest::BulkOut { ep, data, timeout } => {
            (host.bulk_out(ep, &data, timeout).await, Vec::new())
        }
        UsbRequest::InterruptIn {
            ep,
            length,
            timeout,
        } => {
            let mut buf = vec![0u8; length];
            let r = host.interrupt_in(ep, &mut buf, timeout).await;
            read(r, buf)
        }
        UsbRequest::Sleep { duration } => {
            host.sleep(duration).await;
            (Ok(0), Vec::new())
        }
    };
    Completion {
        result,
        data,
        at: host.now(),
    }
}

/// The record of a transfer cancelled before it completed, as its host would have made it; a
/// timer has none.
fn cancelled_record<'a>(
    request: &'a UsbRequest,
    submitted: Instant,
    at: Instant,
    result: &Result<(), TransferError>,
) -> Option<TransferRecord<'a>> {
    let record = |kind, ep, setup, requested| TransferRecord {
        submitted,
        at,
        kind,
        ep,
        setup,
        requested,
        data: &[],
        result: result.clone(),
    };
    // The conventions of scanemu's `Observed`: IN endpoints and control IN requests carry
    // their direction bit.
    Some(match request {
        UsbRequest::ControlIn { setup, .. } => {
            let mut setup = *setup;
            setup.request_type |= 0x80;
            record(
                TransferKind::Control,
                0x80,
                Some(setup),
                usize::from(setup.length),
            )
        }
        UsbRequest::ControlOut { setup, data, .. } => {
            let mut setup = *setup;
            setup.request_type &= !0x80;
            setup.length = u16::try_from(data.len()).unwrap_or(u16::MAX);
            record(TransferKind::Control, 0x00, Some(setup), data.len())
        }
        UsbRequest::BulkIn { ep, length, .. } => {
            record(TransferKind::Bulk, ep | 0x80, None, *length)
        }
        UsbRequest::BulkOut { ep, data, .. } => record(TransferKind::Bulk, *ep, None, data.len()),
        UsbRequest::InterruptIn { ep, length, .. } => {
            record(TransferKind::Interrupt, ep | 0x80, None, *length)
        }
        UsbRequest::Sleep { .. } => return None,
    })
}
