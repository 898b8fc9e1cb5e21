//! The in-process host: the [`UsbHost`] API over the virtual bus, in the caller's thread.
//!
//! Each transfer is stepped packet by packet on the device's [`BusPort`](crate::usb::bus::BusPort),
//! running the firmware between packets. When the device NAKs, the transfer waits until the
//! scan engine's next event, its own deadline, an abort, or any other transfer changing the
//! device, whichever comes first. Payload bytes are charged on the wire at the profile's bus
//! speed (`Speed::wire_time`), with one bus shared by all endpoints. The device's notes go to a
//! [`HostObserver`] ([`InProcessHost::set_note_observer`]); wrap the host in
//! [`Observed`](super::Observed) to see its transfers too.
//!
//! Several transfers may be in flight at once (a driver that queues reads ahead, or polls
//! interrupt IN while a bulk read waits). Each endpoint keeps a queue, as a host controller
//! does: a transfer moves data only once every transfer submitted before it on the same
//! endpoint has ended, so reads queued on one endpoint complete in submission order. EP0 is
//! one queue for both directions. Timeouts and aborts apply to queued transfers too.
//! Dropping a transfer's future before it ends cancels it, as unlinking an URB does: it leaves
//! its queue and the pending count, and the transfer behind it moves up. Nothing reports a
//! dropped transfer ([`Observed`](super::Observed) reports a transfer when its future
//! completes): whoever drops it says so.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::Waker;

use async_trait::async_trait;

use super::{ChangeCounter, DeviceInfo, HostObserver, Setup, TransferError, UsbHost, WaitChange};
use crate::device::Device;
use crate::sim::Clock;
use crate::time::{Duration, Instant};
use crate::usb::descriptor::DeviceDescriptor;
use crate::usb::hc::{self, ControlTransfer, InTransfer, OutTransfer, StepResult, Transfer};
use crate::usb::speed::Speed;

struct State {
    device: Device,
    info: DeviceInfo,
    speed: Speed,
    /// Bumped whenever a transfer moved data or changed the device; waiters re-step.
    change: u64,
    waiters: Vec<Waker>,
    abort_gen: [u64; 32],
    pending: u32,
    /// Per endpoint (see [`queue_slot`]): the tickets of its transfers in flight, oldest first.
    queues: [VecDeque<u64>; 32],
    next_ticket: u64,
    bus_free_at: Instant,
    observer: Option<Rc<dyn HostObserver>>,
}

impl State {
    fn changed(&mut self) {
        self.change += 1;
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }

    fn report_notes(&mut self) {
        let notes = self.device.take_notes();
        if let Some(obs) = &self.observer {
            for note in &notes {
                obs.device(note);
            }
        }
    }
}

fn ep_slot(ep: u8) -> usize {
    usize::from(ep & 0x0f) + if ep & 0x80 != 0 { 16 } else { 0 }
}

/// The queue a transfer on `ep` waits in: the endpoint's own, with EP0 one queue for both
/// directions (a control transfer's stages use both).
fn queue_slot(ep: u8) -> usize {
    if ep & 0x0f == 0 {
        0
    } else {
        ep_slot(ep)
    }
}

/// A transfer's place in its endpoint's queue and in the pending count, from its first step
/// until it ends; dropping it early (the transfer's future was dropped) cancels the transfer.
struct InFlight<'a> {
    state: &'a RefCell<State>,
    slot: usize,
    ticket: u64,
    done: bool,
}

impl<'a> InFlight<'a> {
    fn enter(state: &'a RefCell<State>, ep: u8) -> InFlight<'a> {
        let slot = queue_slot(ep);
        let mut st = state.borrow_mut();
        st.next_ticket += 1;
        let ticket = st.next_ticket;
        st.queues[slot].push_back(ticket);
        st.pending += 1;
        InFlight {
            state,
            slot,
            ticket,
            done: false,
        }
    }

    /// True while an earlier transfer on the same endpoint is still in flight.
    fn queued(st: &State, slot: usize, ticket: u64) -> bool {
        st.queues[slot].front() != Some(&ticket)
    }

    /// Leaves the queue and the pending count; wakes the transfer behind, if any.
    fn leave(st: &mut State, slot: usize, ticket: u64) {
        let queue = &mut st.queues[slot];
        let was_first = queue.front() == Some(&ticket);
        queue.retain(|t| *t != ticket);
        st.pending -= 1;
        if was_first && !st.queues[slot].is_empty() {
            st.changed();
        }
    }

    /// The transfer ended (`st` is the host's state, borrowed by the caller).
    fn finish(&mut self, st: &mut State) {
        if !self.done {
            self.done = true;
            InFlight::leave(st, self.slot, self.ticket);
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            let mut st = self.state.borrow_mut();
            InFlight::leave(&mut st, self.slot, self.ticket);
        }
    }
}

fn map_error(e: hc::WireError) -> TransferError {
    match e {
        hc::WireError::Stall => TransferError::Stall,
        hc::WireError::Disconnected => TransferError::NoDevice,
        hc::WireError::Babble => TransferError::Overflow,
        other => TransferError::Io(other.to_string()),
    }
}

/// The in-process host. Cheap to clone: clones share the device.
#[derive(Clone)]
pub struct InProcessHost {
    state: Rc<RefCell<State>>,
    clock: Rc<dyn Clock>,
}

impl InProcessHost {
    /// Attaches `device` and enumerates it (bus reset, descriptors, address, configuration) at
    /// the clock's current time.
    pub fn new(device: Device, clock: Rc<dyn Clock>) -> Result<InProcessHost, TransferError> {
        let speed = device.profile().usb.speed;
        let host = InProcessHost {
            state: Rc::new(RefCell::new(State {
                device,
                info: DeviceInfo::default(),
                speed,
                change: 0,
                waiters: Vec::new(),
                abort_gen: [0; 32],
                pending: 0,
                queues: std::array::from_fn(|_| VecDeque::new()),
                next_ticket: 0,
                bus_free_at: Instant::ZERO,
                observer: None,
            })),
            clock,
        };
        host.enumerate()?;
        Ok(host)
    }

    fn enumerate(&self) -> Result<(), TransferError> {
        let now = self.clock.now();
        let mut st = self.state.borrow_mut();
        let e = {
            let (port, mut poller) = st.device.port_and_poller(now);
            hc::enumerate(&port, &mut poller).map_err(map_error)?
        };
        let d = DeviceDescriptor::read(&e.device_descriptor);
        st.info = DeviceInfo {
            vendor_id: d.vendor_id,
            product_id: d.product_id,
            device_descriptor: e.device_descriptor.clone(),
            config_descriptor: e.config_descriptor,
        };
        st.report_notes();
        Ok(())
    }

    /// Reports the device's notes to `observer` from now on.
    pub fn set_note_observer(&self, observer: Rc<dyn HostObserver>) {
        self.state.borrow_mut().observer = Some(observer);
    }

    /// Runs `f` with the device (to set faults or an image source, or to inspect it).
    pub fn with_device<R>(&self, f: impl FnOnce(&mut Device) -> R) -> R {
        f(&mut self.state.borrow_mut().device)
    }

    /// Keeps the device running on its own schedule: polls it whenever its engine has an event
    /// due, so device notes reach the observer in time even while no transfer is pending. Spawn
    /// it beside the driver; it never returns.
    pub async fn run_device(&self) {
        loop {
            let (at, seen) = {
                let mut st = self.state.borrow_mut();
                let now = self.clock.now();
                st.device.poll(now);
                st.report_notes();
                (st.device.poll_at(), st.change)
            };
            let sleep = at.map(|t| self.clock.sleep_until(t));
            WaitChange {
                counter: &*self.state,
                seen,
                sleep,
            }
            .await;
        }
    }

    /// Steps `t` until it completes, fails, times out or is aborted; then charges its bytes on
    /// the wire. Returns the result and the transfer (for partial data). While an earlier
    /// transfer on `ep` is in flight, `t` waits its turn without moving data.
    async fn drive<T: Transfer>(
        &self,
        mut t: T,
        ep: u8,
        timeout: Duration,
        actual: impl Fn(&T) -> usize,
    ) -> (Result<T::Output, TransferError>, T) {
        let start = self.clock.now();
        let deadline = if timeout == Duration::ZERO {
            None
        } else {
            Some(start + timeout)
        };
        let gen = self.state.borrow().abort_gen[ep_slot(ep)];
        let mut flight = InFlight::enter(&self.state, ep);
        let mut wire = 0u64;
        let result = loop {
            let now = self.clock.now();
            let (step, seen, next) = {
                let mut st = self.state.borrow_mut();
                if InFlight::queued(&st, flight.slot, flight.ticket) {
                    (StepResult::Pending, st.change, None)
                } else {
                    st.device.poll(now);
                    let step = {
                        let (port, mut poller) = st.device.port_and_poller(now);
                        t.step(&port, &mut poller)
                    };
                    let moved = t.take_wire_bytes();
                    wire += moved;
                    st.report_notes();
                    if matches!(step, StepResult::Done(_)) {
                        flight.finish(&mut st);
                    }
                    if moved > 0 || matches!(step, StepResult::Done(_)) {
                        st.changed();
                    }
                    (step, st.change, st.device.poll_at())
                }
            };
            if let StepResult::Done(r) = step {
                break r.map_err(map_error);
            }
            if self.state.borrow().abort_gen[ep_slot(ep)] != gen {
                break Err(TransferError::Cancelled { actual: actual(&t) });
            }
            if deadline.is_some_and(|d| now >= d) {
                break Err(TransferError::Timeout { actual: actual(&t) });
            }
            let wake = match (next, deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sleep = wake.map(|t| self.clock.sleep_until(t.max(now)));
            WaitChange {
                counter: &*self.state,
                seen,
                sleep,
            }
            .await;
        };
        let done_at = {
            let mut st = self.state.borrow_mut();
            flight.finish(&mut st);
            let now = self.clock.now();
            let begin = st.bus_free_at.max(now);
            let done_at = begin + st.speed.wire_time(wire);
            st.bus_free_at = done_at;
            done_at
        };
        drop(flight);
        if done_at > self.clock.now() {
            self.clock.sleep_until(done_at).await;
        }
        (result, t)
    }
}

impl InProcessHost {
    /// A bulk or interrupt IN transfer into `buf` (the data of a failed one stays there).
    async fn read_in(
        &self,
        ep: u8,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, TransferError> {
        let (r, _) = self
            .drive(
                InTransfer::into_slice(ep, buf),
                ep,
                timeout,
                |t: &InTransfer<&mut [u8]>| t.data().len(),
            )
            .await;
        r
    }
}

impl ChangeCounter for RefCell<State> {
    fn change(&self) -> u64 {
        self.borrow().change
    }
    fn wake_on_change(&self, waker: Waker) {
        self.borrow_mut().waiters.push(waker);
    }
}

#[async_trait(?Send)]
impl UsbHost for InProcessHost {
    fn device_info(&self) -> DeviceInfo {
        self.state.borrow().info.clone()
    }

    fn now(&self) -> Instant {
        self.clock.now()
    }

    async fn sleep(&self, duration: Duration) {
        let until = self.clock.now() + duration;
        self.clock.sleep_until(until).await;
    }

    async fn control_in(&self, setup: Setup, timeout: Duration) -> Result<Vec<u8>, TransferError> {
        // A host-to-device request type has no IN data stage: the caller's mistake, reported
        // as an error (drivers in other processes send any bmRequestType), never a panic.
        if !setup.is_in() {
            return Err(TransferError::Io(format!(
                "control_in with a host-to-device request type {:#04x}",
                setup.request_type
            )));
        }
        let (r, _) = self
            .drive(ControlTransfer::new_in(setup), 0x80, timeout, |_| 0)
            .await;
        r
    }

    async fn control_out(
        &self,
        setup: Setup,
        data: &[u8],
        timeout: Duration,
    ) -> Result<(), TransferError> {
        let mut setup = setup;
        setup.length = u16::try_from(data.len()).map_err(|_| TransferError::Overflow)?;
        let (r, _) = self
            .drive(
                ControlTransfer::new_out(setup, data.to_vec()),
                0x00,
                timeout,
                |_| 0,
            )
            .await;
        r.map(|_| ())
    }

    async fn bulk_in(
        &self,
        ep: u8,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, TransferError> {
        self.read_in(ep, buf, timeout).await
    }

    async fn bulk_out(
        &self,
        ep: u8,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, TransferError> {
        let zlp = false;
        let (r, t) = self
            .drive(
                OutTransfer::new(ep, data.to_vec(), zlp),
                ep,
                timeout,
                |t: &OutTransfer| t.sent(),
            )
            .await;
        r.map(|_| t.sent())
    }

    async fn interrupt_in(
        &self,
        ep: u8,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, TransferError> {
        self.read_in(ep, buf, timeout).await
    }

    async fn clear_halt(&self, ep: u8) -> Result<(), TransferError> {
        let setup = hc::SetupPacket::clear_halt(ep);
        let (r, _) = self
            .drive(
                ControlTransfer::new_out(setup, Vec::new()),
                0x00,
                Duration::from_secs(1),
                |_| 0,
            )
            .await;
        r.map(|_| ())
    }

    async fn reset_device(&self) -> Result<(), TransferError> {
        {
            let mut st = self.state.borrow_mut();
            for g in st.abort_gen.iter_mut() {
                *g += 1;
            }
            st.changed();
        }
        self.enumerate()
    }

    fn pending_transfers(&self) -> u32 {
        self.state.borrow().pending
    }

    fn abort_endpoint(&self, ep: u8) {
        let mut st = self.state.borrow_mut();
        st.abort_gen[ep_slot(ep)] += 1;
        st.changed();
    }
}
