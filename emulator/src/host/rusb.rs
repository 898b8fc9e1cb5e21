//! The rusb host: the [`UsbHost`] API over libusb, for a real scanner or an attached emulator.
//!
//! [`RusbHost::open`] creates its own libusb context with `rusb::Context::new()` (never the
//! global-context helpers, which panic where libusb has no USB support), finds the device by
//! VID:PID or by bus and address, opens it and claims interface 0. A machine without USB
//! support, a missing device or a device that cannot be opened is a [`RusbError`], never a
//! panic. Built only with the `rusb` cargo feature (it links the system libusb-1.0).
//!
//! Every transfer runs on a helper thread while the async method waits without blocking the
//! executor; concurrent transfers (an interrupt read pending while control requests go by)
//! therefore work. The helper threads are the host's own, started when no idle one is left and
//! kept until the host is dropped ([`Helpers`]): a transfer does not wait for a thread to be
//! created, and a real-time run's host-lag probe, which reads the run delay of the process's
//! threads, sees the time they waited for a CPU (a thread that ends takes its counter with it). While a transfer is in flight the session holds
//! [`Sim::external_wait`]: in a virtual-time session the clock stands still, as it does for any
//! other external party.
//!
//! Bulk and interrupt IN transfers, the ones a driver aborts, use libusb's asynchronous API
//! (`libusb_submit_transfer`, events handled on the helper thread; rusb has no asynchronous
//! cancel, so this part goes through `rusb::ffi`, in the one `async_in` module):
//! [`UsbHost::abort_endpoint`] returns [`TransferError::Cancelled`] to the caller at once and
//! `libusb_cancel_transfer`s the transfer, so it is gone from the device before the driver's
//! next request (a read left running would swallow the next scan's first band). Control and
//! OUT transfers stay synchronous rusb calls: aborting one returns at once too, but the libusb
//! call keeps running on its thread until it completes or its timeout passes, and whatever it
//! then moves is discarded.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Waker};

use async_trait::async_trait;
use rusb::UsbContext;

use super::{DeviceInfo, Setup, TransferError, UsbHost};
use crate::sim::Sim;
use crate::time::{Duration, Instant};

/// Which device [`RusbHost::open`] opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSelector {
    /// The first device with this idVendor and idProduct.
    VidPid(u16, u16),
    /// The device at this bus number and device address.
    BusAddress(u8, u8),
}

impl std::fmt::Display for DeviceSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSelector::VidPid(v, p) => write!(f, "{v:04x}:{p:04x}"),
            DeviceSelector::BusAddress(b, a) => write!(f, "bus {b:03} device {a:03}"),
        }
    }
}

/// Why [`RusbHost::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RusbError {
    /// libusb could not start (typically: no USB support in this kernel or container).
    #[error("libusb could not start: {0} (does this machine have USB support?)")]
    Backend(rusb::Error),
    /// libusb started but could not list devices.
    #[error("libusb could not list devices: {0}")]
    List(rusb::Error),
    /// No device matches the selector.
    #[error("no USB device {0} found")]
    NotFound(DeviceSelector),
    /// The device was found but could not be opened or set up.
    #[error("USB device {selector}: {what}: {error}")]
    Device {
        /// The device.
        selector: DeviceSelector,
        /// The step that failed.
        what: &'static str,
        /// libusb's error.
        error: rusb::Error,
    },
}

fn map_error(e: rusb::Error) -> TransferError {
    match e {
        rusb::Error::Pipe => TransferError::Stall,
        rusb::Error::Timeout => TransferError::Timeout { actual: 0 },
        rusb::Error::NoDevice => TransferError::NoDevice,
        rusb::Error::Overflow => TransferError::Overflow,
        rusb::Error::Interrupted => TransferError::Cancelled { actual: 0 },
        other => TransferError::Io(other.to_string()),
    }
}

/// The device descriptor in its 18-byte wire form.
fn device_descriptor_bytes(d: &rusb::DeviceDescriptor) -> Vec<u8> {
    let bcd = |v: rusb::Version| {
        u16::from(v.major()) << 8 | u16::from(v.minor()) << 4 | u16::from(v.sub_minor())
    };
    let mut b = vec![18, 1];
    b.extend_from_slice(&bcd(d.usb_version()).to_le_bytes());
    b.extend_from_slice(&[
        d.class_code(),
        d.sub_class_code(),
        d.protocol_code(),
        d.max_packet_size(),
    ]);
    b.extend_from_slice(&d.vendor_id().to_le_bytes());
    b.extend_from_slice(&d.product_id().to_le_bytes());
    b.extend_from_slice(&bcd(d.device_version()).to_le_bytes());
    b.extend_from_slice(&[
        d.manufacturer_string_index().unwrap_or(0),
        d.product_string_index().unwrap_or(0),
        d.serial_number_string_index().unwrap_or(0),
        d.num_configurations(),
    ]);
    b
}

/// The configuration descriptor with its interfaces and endpoints, in wire form (libusb keeps
/// the parsed form; class-specific descriptors come back from `extra`).
fn config_descriptor_bytes(c: &rusb::ConfigDescriptor) -> Vec<u8> {
    let mut body = Vec::new();
    for iface in c.interfaces() {
        for alt in iface.descriptors() {
            body.extend_from_slice(&[
                9,
                4,
                alt.interface_number(),
                alt.setting_number(),
                alt.num_endpoints(),
                alt.class_code(),
                alt.sub_class_code(),
                alt.protocol_code(),
                alt.description_string_index().unwrap_or(0),
            ]);
            body.extend_from_slice(alt.extra());
            for ep in alt.endpoint_descriptors() {
                let attributes = ep.transfer_type() as u8
                    | (ep.sync_type() as u8) << 2
                    | (ep.usage_type() as u8) << 4;
                body.extend_from_slice(&[7, 5, ep.address(), attributes]);
                body.extend_from_slice(&ep.max_packet_size().to_le_bytes());
                body.push(ep.interval());
                body.extend_from_slice(ep.extra().unwrap_or(&[]));
            }
        }
    }
    let total = u16::try_from(9 + c.extra().len() + body.len()).unwrap_or(u16::MAX);
    let mut b = vec![9, 2];
    b.extend_from_slice(&total.to_le_bytes());
    b.extend_from_slice(&[
        c.num_interfaces(),
        c.number(),
        c.description_string_index().unwrap_or(0),
        // bmAttributes: bit 7 is reserved and always set.
        0x80 | if c.self_powered() { 0x40 } else { 0 } | if c.remote_wakeup() { 0x20 } else { 0 },
        // bMaxPower in 2 mA units.
        u8::try_from(c.max_power() / 2).unwrap_or(u8::MAX),
    ]);
    b.extend_from_slice(c.extra());
    b.extend_from_slice(&body);
    b
}

/// One transfer in flight: its result slot, shared with its helper thread.
struct Slot<T> {
    result: Option<T>,
    aborted: bool,
    waker: Option<Waker>,
}

type SharedSlot<T> = Arc<Mutex<Slot<T>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Something [`RusbHost::abort_endpoint`] can abort.
trait Abortable {
    fn abort(&self);
}

impl<T> Abortable for Mutex<Slot<T>> {
    fn abort(&self) {
        let mut s = lock(self);
        s.aborted = true;
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }
}

/// Waits for a helper thread's result, or for an abort.
struct Completion<T> {
    slot: SharedSlot<T>,
}

enum Outcome<T> {
    Done(T),
    Aborted,
}

impl<T> Future for Completion<T> {
    type Output = Outcome<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<T>> {
        let mut s = lock(&self.slot);
        if s.aborted {
            return Poll::Ready(Outcome::Aborted);
        }
        if let Some(r) = s.result.take() {
            return Poll::Ready(Outcome::Done(r));
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

struct Pending {
    id: u64,
    ep: u8,
    slot: Arc<dyn Abortable + Send + Sync>,
    /// Cancels the libusb transfer itself (asynchronous IN transfers only).
    cancel: Option<Arc<async_in::Canceller>>,
}

/// A job for a helper thread.
type Job = Box<dyn FnOnce() + Send>;

/// The helper threads of one host: as many as transfers were ever in flight at once, each
/// waiting for the next job when idle, all ending when the host is dropped (a thread in the
/// middle of a libusb call ends when the call returns).
struct Helpers {
    shared: Arc<HelperQueue>,
}

struct HelperQueue {
    state: Mutex<HelperState>,
    ready: Condvar,
}

#[derive(Default)]
struct HelperState {
    jobs: VecDeque<Job>,
    /// Threads waiting for a job (woken or not yet).
    idle: usize,
    threads: usize,
    closed: bool,
}

impl Helpers {
    fn new() -> Helpers {
        Helpers {
            shared: Arc::new(HelperQueue {
                state: Mutex::new(HelperState::default()),
                ready: Condvar::new(),
            }),
        }
    }

    /// Runs `job` on an idle helper thread, or on a new one if none is idle. `Err` if no
    /// thread is left to run it and none can be started (the job is dropped).
    fn run(&self, job: Job) -> std::io::Result<()> {
        let mut s = lock(&self.shared.state);
        s.jobs.push_back(job);
        if s.idle >= s.jobs.len() {
            self.shared.ready.notify_one();
            return Ok(());
        }
        s.threads += 1;
        drop(s);
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("rusb-transfer".into())
            .spawn(move || helper(&shared));
        if let Err(e) = spawned {
            let mut s = lock(&self.shared.state);
            s.threads -= 1;
            // The other threads take the job when they are done, unless there are none.
            if s.threads == 0 {
                s.jobs.clear();
                return Err(e);
            }
        }
        Ok(())
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.ready.notify_all();
    }
}

/// A helper thread: runs jobs until the host closes the queue.
fn helper(queue: &HelperQueue) {
    loop {
        let job = {
            let mut s = lock(&queue.state);
            loop {
                if let Some(job) = s.jobs.pop_front() {
                    break job;
                }
                if s.closed {
                    s.threads -= 1;
                    return;
                }
                s.idle += 1;
                s = queue.ready.wait(s).unwrap_or_else(|e| e.into_inner());
                s.idle -= 1;
            }
        };
        job();
    }
}

/// The rusb host. See the module documentation.
pub struct RusbHost {
    handle: Arc<rusb::DeviceHandle<rusb::Context>>,
    info: DeviceInfo,
    sim: Sim,
    pending: RefCell<Vec<Pending>>,
    next_id: std::cell::Cell<u64>,
    helpers: Helpers,
}

impl RusbHost {
    /// Opens the device `selector` names, claims interface 0 and reads its descriptors; the
    /// session's time is `sim`'s (normally [`Sim::realtime`]).
    pub fn open(sim: &Sim, selector: DeviceSelector) -> Result<RusbHost, RusbError> {
        let context = rusb::Context::new().map_err(RusbError::Backend)?;
        let devices = context.devices().map_err(RusbError::List)?;
        let device = devices
            .iter()
            .find(|d| match selector {
                DeviceSelector::BusAddress(bus, addr) => {
                    d.bus_number() == bus && d.address() == addr
                }
                DeviceSelector::VidPid(vid, pid) => d
                    .device_descriptor()
                    .is_ok_and(|dd| dd.vendor_id() == vid && dd.product_id() == pid),
            })
            .ok_or(RusbError::NotFound(selector))?;
        let step = |what: &'static str| {
            move |error| RusbError::Device {
                selector,
                what,
                error,
            }
        };
        let dd = device
            .device_descriptor()
            .map_err(step("reading the device descriptor"))?;
        let cd = device
            .active_config_descriptor()
            .map_err(step("reading the configuration descriptor"))?;
        let handle = device.open().map_err(step("opening"))?;
        handle
            .claim_interface(0)
            .map_err(step("claiming interface 0"))?;
        Ok(RusbHost {
            handle: Arc::new(handle),
            info: DeviceInfo {
                vendor_id: dd.vendor_id(),
                product_id: dd.product_id(),
                device_descriptor: device_descriptor_bytes(&dd),
                config_descriptor: config_descriptor_bytes(&cd),
            },
            sim: sim.clone(),
            pending: RefCell::new(Vec::new()),
            next_id: std::cell::Cell::new(0),
            helpers: Helpers::new(),
        })
    }

    /// Runs `op` on one of the host's helper threads and waits for it (or for an abort of
    /// `ep`, which also fires `cancel`).
    async fn blocking<T: Send + 'static>(
        &self,
        ep: u8,
        cancel: Option<Arc<async_in::Canceller>>,
        op: impl FnOnce(&rusb::DeviceHandle<rusb::Context>) -> T + Send + 'static,
    ) -> Option<T> {
        let slot: SharedSlot<T> = Arc::new(Mutex::new(Slot {
            result: None,
            aborted: false,
            waker: None,
        }));
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.pending.borrow_mut().push(Pending {
            id,
            ep,
            slot: slot.clone(),
            cancel,
        });
        let handle = self.handle.clone();
        let theirs = slot.clone();
        let _frozen = self.sim.external_wait();
        let spawned = self.helpers.run(Box::new(move || {
            let r = op(&handle);
            let mut s = lock(&theirs);
            s.result = Some(r);
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }));
        let outcome = match spawned {
            Ok(_) => Completion { slot }.await,
            Err(_) => Outcome::Aborted,
        };
        self.pending.borrow_mut().retain(|p| p.id != id);
        match outcome {
            Outcome::Done(r) => Some(r),
            Outcome::Aborted => None,
        }
    }
}

fn timeout_of(timeout: Duration) -> std::time::Duration {
    // libusb reads a zero timeout as "none", as UsbHost does.
    timeout.into()
}

#[async_trait(?Send)]
impl UsbHost for RusbHost {
    fn device_info(&self) -> DeviceInfo {
        self.info.clone()
    }

    fn now(&self) -> Instant {
        self.sim.now()
    }

    async fn sleep(&self, duration: Duration) {
        self.sim.sleep(duration).await;
    }

    async fn control_in(&self, setup: Setup, timeout: Duration) -> Result<Vec<u8>, TransferError> {
        let t = timeout_of(timeout);
        self.blocking(0x80, None, move |h| {
            let mut buf = vec![0u8; usize::from(setup.length)];
            h.read_control(
                setup.request_type | 0x80,
                setup.request,
                setup.value,
                setup.index,
                &mut buf,
                t,
            )
            .map(|n| {
                buf.truncate(n);
                buf
            })
        })
        .await
        .map_or(Err(TransferError::Cancelled { actual: 0 }), |r| {
            r.map_err(map_error)
        })
    }

    async fn control_out(
        &self,
        setup: Setup,
        data: &[u8],
        timeout: Duration,
    ) -> Result<(), TransferError> {
        let mut setup = setup;
        setup.request_type &= !0x80;
        setup.length = u16::try_from(data.len()).map_err(|_| TransferError::Overflow)?;
        let t = timeout_of(timeout);
        let payload = data.to_vec();
        self.blocking(0x00, None, move |h| {
            h.write_control(
                setup.request_type,
                setup.request,
                setup.value,
                setup.index,
                &payload,
                t,
            )
        })
        .await
        .map_or(Err(TransferError::Cancelled { actual: 0 }), |r| {
            r.map(|_| ()).map_err(map_error)
        })
    }

    async fn bulk_in(
        &self,
        ep: u8,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, TransferError> {
        self.read_in(false, ep | 0x80, buf, timeout).await
    }

    async fn bulk_out(
        &self,
        ep: u8,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, TransferError> {
        let ep = ep & 0x7f;
        let t = timeout_of(timeout);
        let payload = data.to_vec();
        self.blocking(ep, None, move |h| h.write_bulk(ep, &payload, t))
            .await
            .map_or(Err(TransferError::Cancelled { actual: 0 }), |r| {
                r.map_err(map_error)
            })
    }

    async fn interrupt_in(
        &self,
        ep: u8,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, TransferError> {
        self.read_in(true, ep | 0x80, buf, timeout).await
    }

    async fn clear_halt(&self, ep: u8) -> Result<(), TransferError> {
        self.blocking(0x00, None, move |h| h.clear_halt(ep))
            .await
            .map_or(Err(TransferError::Cancelled { actual: 0 }), |r| {
                r.map_err(map_error)
            })
    }

    async fn reset_device(&self) -> Result<(), TransferError> {
        self.abort_pending(|_| true);
        self.blocking(0x00, None, |h| h.reset())
            .await
            .map_or(Err(TransferError::Cancelled { actual: 0 }), |r| {
                r.map_err(map_error)
            })
    }

    fn abort_endpoint(&self, ep: u8) {
        self.abort_pending(|p| p.ep == ep);
    }

    fn pending_transfers(&self) -> u32 {
        u32::try_from(self.pending.borrow().len()).unwrap_or(u32::MAX)
    }
}

impl RusbHost {
    /// Aborts the pending transfers `which` selects.
    fn abort_pending(&self, which: impl Fn(&Pending) -> bool) {
        for p in self.pending.borrow().iter().filter(|p| which(p)) {
            p.slot.abort();
            if let Some(c) = &p.cancel {
                c.cancel();
            }
        }
    }

    async fn read_in(
        &self,
        interrupt: bool,
        ep: u8,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, TransferError> {
        let t = timeout_of(timeout);
        let len = buf.len();
        let canceller = Arc::new(async_in::Canceller::default());
        // Submitted here, on the executor's thread, so that the read is on the device before
        // anything the driver does next; only the wait runs on the helper thread.
        let r = match async_in::submit(&self.handle, interrupt, ep, len, t, canceller.clone()) {
            Ok(submitted) => self
                .blocking(ep, Some(canceller), move |_| submitted.wait())
                .await
                .map_or(Err(TransferError::Cancelled { actual: 0 }), |r| {
                    r.map_err(map_error)
                }),
            Err(e) => Err(map_error(e)),
        };
        r.map(|data| {
            buf[..data.len()].copy_from_slice(&data);
            data.len()
        })
    }
}

/// Bulk and interrupt IN transfers through libusb's asynchronous API, so that an abort cancels
/// the transfer on the device (`libusb_cancel_transfer`). All `unsafe` code of the rusb host is
/// here.
#[allow(unsafe_code)]
mod async_in {
    use std::ffi::{c_int, c_void};
    use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
    use std::sync::{Arc, Mutex};

    use rusb::ffi as sys;
    use rusb::ffi::constants as c;
    use rusb::UsbContext as _;

    use super::lock;

    /// How many failed event-handling rounds a transfer gets before it is given up (and
    /// leaked, since libusb may still write into it).
    const EVENT_ERRORS_MAX: u32 = 100;

    /// The transfer in flight, for [`Canceller::cancel`].
    struct InFlight(*mut sys::libusb_transfer);

    // SAFETY: the pointer is only used for libusb_cancel_transfer, which libusb allows from any
    // thread, and only while the owning thread keeps the transfer allocated (under the lock).
    unsafe impl Send for InFlight {}

    /// Cancels one transfer from another thread: before it is submitted (it then never is) or
    /// while it is in flight.
    #[derive(Default)]
    pub(super) struct Canceller {
        requested: AtomicBool,
        in_flight: Mutex<Option<InFlight>>,
    }

    impl Canceller {
        /// Cancels the transfer (once it completes as cancelled, its data is dropped).
        pub(super) fn cancel(&self) {
            let g = lock(&self.in_flight);
            self.requested.store(true, Ordering::SeqCst);
            if let Some(t) = g.as_ref() {
                // SAFETY: the transfer stays allocated while it is in `in_flight`, and we hold
                // the lock its owner takes before freeing it. NOT_FOUND (already completing)
                // is harmless.
                unsafe {
                    sys::libusb_cancel_transfer(t.0);
                }
            }
        }
    }

    extern "system" fn on_complete(transfer: *mut sys::libusb_transfer) {
        // SAFETY: libusb passes the transfer `read` submitted; its user_data is that call's
        // completion flag, which lives until the transfer is freed or leaked.
        unsafe {
            let done = (*transfer).user_data as *const AtomicI32;
            (*done).store(1, Ordering::SeqCst);
        }
    }

    /// An IN transfer handed to libusb; [`Submitted::wait`] (on a helper thread) waits for it
    /// and frees it. Dropped unwaited, it is cancelled and waited for, since libusb writes into
    /// its buffer until it completes.
    pub(super) struct Submitted {
        transfer: *mut sys::libusb_transfer,
        context: *mut sys::libusb_context,
        data: Vec<u8>,
        done: Box<AtomicI32>,
        canceller: Arc<Canceller>,
        finished: bool,
    }

    // SAFETY: libusb transfers and contexts may be used from any thread; the transfer is only
    // touched by the owner of this value (once libusb has completed it) and by
    // `Canceller::cancel` under the lock the owner takes before freeing it.
    unsafe impl Send for Submitted {}

    /// Submits a read of up to `len` bytes from IN endpoint `ep` (bulk, or interrupt if
    /// `interrupt`) on the caller's thread, so that it reaches the device at once.
    pub(super) fn submit(
        handle: &rusb::DeviceHandle<rusb::Context>,
        interrupt: bool,
        ep: u8,
        len: usize,
        timeout: std::time::Duration,
        canceller: Arc<Canceller>,
    ) -> rusb::Result<Submitted> {
        let length = c_int::try_from(len).map_err(|_| rusb::Error::InvalidParam)?;
        // libusb reads a zero timeout as "none"; a timeout under 1 ms must not become none.
        let timeout_ms = match (timeout.as_millis(), timeout.is_zero()) {
            (_, true) => 0,
            (0, false) => 1,
            (ms, false) => u32::try_from(ms).unwrap_or(u32::MAX),
        };
        let mut data = vec![0u8; len];
        let done = Box::new(AtomicI32::new(0));
        // SAFETY: plain allocation; NULL is checked.
        let transfer = unsafe { sys::libusb_alloc_transfer(0) };
        if transfer.is_null() {
            return Err(rusb::Error::NoMem);
        }
        // SAFETY: `transfer` is a fresh allocation with no iso packets; the buffer and the
        // flag it points to are heap memory owned by the `Submitted` that outlives it.
        unsafe {
            (*transfer).dev_handle = handle.as_raw();
            (*transfer).flags = 0;
            (*transfer).endpoint = ep;
            (*transfer).transfer_type = if interrupt {
                c::LIBUSB_TRANSFER_TYPE_INTERRUPT
            } else {
                c::LIBUSB_TRANSFER_TYPE_BULK
            };
            (*transfer).timeout = timeout_ms;
            (*transfer).length = length;
            (*transfer).callback = on_complete;
            (*transfer).user_data = &*done as *const AtomicI32 as *mut c_void;
            (*transfer).buffer = data.as_mut_ptr();
            (*transfer).num_iso_packets = 0;
        }
        let mut g = lock(&canceller.in_flight);
        let rc = if canceller.requested.load(Ordering::SeqCst) {
            c::LIBUSB_ERROR_INTERRUPTED
        } else {
            // SAFETY: the transfer is filled in above.
            unsafe { sys::libusb_submit_transfer(transfer) }
        };
        if rc != 0 {
            // SAFETY: not submitted, so libusb holds no reference to it.
            unsafe { sys::libusb_free_transfer(transfer) };
            return Err(from_libusb(rc));
        }
        *g = Some(InFlight(transfer));
        drop(g);
        Ok(Submitted {
            transfer,
            context: handle.context().as_raw(),
            data,
            done,
            canceller,
            finished: false,
        })
    }

    impl Submitted {
        /// Handles libusb events until the transfer completes, then frees it. Returns rusb's
        /// results: a timeout with data is `Ok`, a cancel is `Err(Interrupted)`.
        pub(super) fn wait(mut self) -> rusb::Result<Vec<u8>> {
            self.complete()?;
            // SAFETY: completed, so libusb is done with it; read its results, then free it.
            let (status, actual) = unsafe {
                let r = ((*self.transfer).status, (*self.transfer).actual_length);
                sys::libusb_free_transfer(self.transfer);
                r
            };
            self.finished = true;
            let mut data = std::mem::take(&mut self.data);
            let len = data.len();
            data.truncate(usize::try_from(actual).unwrap_or(0).min(len));
            match status {
                c::LIBUSB_TRANSFER_COMPLETED => Ok(data),
                c::LIBUSB_TRANSFER_TIMED_OUT if !data.is_empty() => Ok(data),
                c::LIBUSB_TRANSFER_TIMED_OUT => Err(rusb::Error::Timeout),
                c::LIBUSB_TRANSFER_CANCELLED => Err(rusb::Error::Interrupted),
                c::LIBUSB_TRANSFER_STALL => Err(rusb::Error::Pipe),
                c::LIBUSB_TRANSFER_NO_DEVICE => Err(rusb::Error::NoDevice),
                c::LIBUSB_TRANSFER_OVERFLOW => Err(rusb::Error::Overflow),
                _ => Err(rusb::Error::Io),
            }
        }

        /// Handles events until the callback ran. If event handling keeps failing, the
        /// transfer is cancelled and at last given up: then it and its buffer are leaked
        /// (libusb may still write into them) and the error is returned.
        fn complete(&mut self) -> rusb::Result<()> {
            let mut errors = 0;
            while self.done.load(Ordering::SeqCst) == 0 {
                // SAFETY: the context outlives the device handle the host keeps open while
                // this runs; `done` is the flag the callback sets (an AtomicI32 has the layout
                // of a C int).
                let rc = unsafe {
                    sys::libusb_handle_events_completed(self.context, self.done.as_ptr())
                };
                if rc < 0 && rc != c::LIBUSB_ERROR_INTERRUPTED {
                    errors += 1;
                    if errors == 1 {
                        self.canceller.cancel();
                    }
                    if errors >= EVENT_ERRORS_MAX {
                        *lock(&self.canceller.in_flight) = None;
                        std::mem::forget(std::mem::take(&mut self.data));
                        let done = std::mem::replace(&mut self.done, Box::new(AtomicI32::new(1)));
                        std::mem::forget(done);
                        self.finished = true;
                        return Err(from_libusb(rc));
                    }
                }
            }
            *lock(&self.canceller.in_flight) = None;
            Ok(())
        }
    }

    impl Drop for Submitted {
        fn drop(&mut self) {
            if self.finished {
                return;
            }
            self.canceller.cancel();
            if self.complete().is_ok() {
                // SAFETY: completed, so libusb is done with it.
                unsafe { sys::libusb_free_transfer(self.transfer) };
            }
            self.finished = true;
        }
    }

    /// rusb's error for a libusb error code.
    fn from_libusb(rc: c_int) -> rusb::Error {
        match rc {
            c::LIBUSB_ERROR_IO => rusb::Error::Io,
            c::LIBUSB_ERROR_INVALID_PARAM => rusb::Error::InvalidParam,
            c::LIBUSB_ERROR_ACCESS => rusb::Error::Access,
            c::LIBUSB_ERROR_NO_DEVICE => rusb::Error::NoDevice,
            c::LIBUSB_ERROR_NOT_FOUND => rusb::Error::NotFound,
            c::LIBUSB_ERROR_BUSY => rusb::Error::Busy,
            c::LIBUSB_ERROR_TIMEOUT => rusb::Error::Timeout,
            c::LIBUSB_ERROR_OVERFLOW => rusb::Error::Overflow,
            c::LIBUSB_ERROR_PIPE => rusb::Error::Pipe,
            c::LIBUSB_ERROR_INTERRUPTED => rusb::Error::Interrupted,
            c::LIBUSB_ERROR_NO_MEM => rusb::Error::NoMem,
            c::LIBUSB_ERROR_NOT_SUPPORTED => rusb::Error::NotSupported,
            _ => rusb::Error::Other,
        }
    }
}
