//! The library's state in safe Rust: contexts, devices, handles and the event core that every
//! transfer, asynchronous or synchronous, goes through.
//!
//! The event core follows libusb's model (io.c, sync.c):
//! - Submitting records the transfer as in flight and sends `USBIP_CMD_SUBMIT`; the reader
//!   thread of the device's [`Connection`] only *records* the outcome and queues it.
//! - Outcomes are *delivered* (status, data, callback) only inside `handle_events*`, by the
//!   thread holding the event lock, with no internal lock held, so callbacks may submit, cancel
//!   and free. Other threads wait on the event waiters lock and wake after each delivery.
//! - A timeout or a cancel sends `USBIP_CMD_UNLINK`; the transfer then ends TIMED_OUT or
//!   CANCELLED (keeping any data that arrived, as libusb on Linux does), when the server
//!   answers, or after [`UNLINK_GRACE`] if it never does.
//! - Synchronous calls submit an internal transfer and run the same event loop until it is
//!   done, delivering other transfers' callbacks on the way, as libusb's `sync.c` does.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use scanemu::usbip::protocol::{errno, URB_SHORT_NOT_OK, URB_ZERO_PACKET};

use crate::connection::{self, Connection, UrbOutcome, UrbRequest, UrbSink};
use scanemu::usb::descriptor::{self, Config};

/// libusb's numeric codes.
pub mod code {
    /// Success.
    pub const SUCCESS: i32 = 0;
    /// Input/output error.
    pub const ERROR_IO: i32 = -1;
    /// Invalid parameter.
    pub const ERROR_INVALID_PARAM: i32 = -2;
    /// Access denied.
    pub const ERROR_ACCESS: i32 = -3;
    /// No such device.
    pub const ERROR_NO_DEVICE: i32 = -4;
    /// Entity not found.
    pub const ERROR_NOT_FOUND: i32 = -5;
    /// Resource busy.
    pub const ERROR_BUSY: i32 = -6;
    /// Operation timed out.
    pub const ERROR_TIMEOUT: i32 = -7;
    /// Overflow.
    pub const ERROR_OVERFLOW: i32 = -8;
    /// Pipe error (stall).
    pub const ERROR_PIPE: i32 = -9;
    /// System call interrupted.
    pub const ERROR_INTERRUPTED: i32 = -10;
    /// Insufficient memory.
    pub const ERROR_NO_MEM: i32 = -11;
    /// Operation not supported.
    pub const ERROR_NOT_SUPPORTED: i32 = -12;
    /// Other error.
    pub const ERROR_OTHER: i32 = -99;

    /// Transfer completed.
    pub const TRANSFER_COMPLETED: i32 = 0;
    /// Transfer failed.
    pub const TRANSFER_ERROR: i32 = 1;
    /// Transfer timed out.
    pub const TRANSFER_TIMED_OUT: i32 = 2;
    /// Transfer was cancelled.
    pub const TRANSFER_CANCELLED: i32 = 3;
    /// Endpoint stalled (control: request not supported).
    pub const TRANSFER_STALL: i32 = 4;
    /// Device was disconnected.
    pub const TRANSFER_NO_DEVICE: i32 = 5;
    /// Device sent more data than requested.
    pub const TRANSFER_OVERFLOW: i32 = 6;

    /// Log levels.
    pub const LOG_NONE: i32 = 0;
    /// Errors.
    pub const LOG_ERROR: i32 = 1;
    /// Warnings.
    pub const LOG_WARNING: i32 = 2;
    /// Informational messages.
    pub const LOG_INFO: i32 = 3;
    /// Debug messages.
    pub const LOG_DEBUG: i32 = 4;
}

/// The environment variable naming the emulator's USB/IP address (`HOST:PORT`).
pub const SERVER_ENV: &str = "SCANLAB_USBIP";
/// The environment variable naming which of the server's devices to use: bus ids separated
/// by commas (`1-2` or `1-1,1-3`); unset or empty, every exported device is imported.
pub const BUSID_ENV: &str = "SCANLAB_USBIP_BUSID";
/// The address used when [`SERVER_ENV`] is unset: the emulator's default on loopback.
pub const DEFAULT_SERVER: &str = "127.0.0.1:3240";
/// How long a cancelled or timed-out transfer waits for the server's `RET_UNLINK` before it
/// is completed anyway (a server that never answers must not hang the caller).
pub const UNLINK_GRACE: Duration = Duration::from_millis(500);
/// Timeout of the standard requests the library sends itself (Linux usbfs uses 5 s).
const STANDARD_REQUEST_TIMEOUT_MS: u32 = 5000;
/// The longest `handle_events` blocks (libusb: 60 s).
pub const HANDLE_EVENTS_CAP: Duration = Duration::from_secs(60);

/// A [`SERVER_ENV`] value that is not an address.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{SERVER_ENV}={0:?} is not an address of the form HOST:PORT")]
pub struct BadServerAddress(pub String);

/// The server address from [`SERVER_ENV`] (`value`), or [`DEFAULT_SERVER`].
pub fn server_address(value: Option<&str>) -> Result<SocketAddr, BadServerAddress> {
    let text = value.unwrap_or(DEFAULT_SERVER);
    text.parse().map_err(|_| BadServerAddress(text.to_string()))
}

/// Whether the device exported as `busid` is one this process uses, given the value of
/// [`BUSID_ENV`]: every device when unset or empty, else only those named.
pub fn wanted_busid(filter: Option<&str>, busid: &str) -> bool {
    match filter.map(str::trim).filter(|f| !f.is_empty()) {
        None => true,
        Some(f) => f.split(',').any(|b| b.trim() == busid),
    }
}

/// What finishing a transfer produces for the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Done {
    /// The transfer's identity for the FFI layer (its `libusb_transfer` address).
    pub token: usize,
    /// A `LIBUSB_TRANSFER_*` status.
    pub status: i32,
    /// Bytes moved (data stage only, for control transfers).
    pub actual: usize,
    /// IN data to copy into the caller's buffer.
    pub data: Vec<u8>,
}

/// Who is told when a transfer ends.
#[derive(Clone)]
pub enum Target {
    /// A caller's `libusb_transfer`, by address: delivered to the FFI dispatcher.
    Token(usize),
    /// A synchronous call of this library waiting on the slot.
    Sync(Arc<Mutex<Option<Done>>>),
}

/// Raised when completions wait to be handled, cleared when they are: the pollable fd.
pub trait Wakeup: Send + Sync {
    /// Completions are pending.
    fn raise(&self);
    /// No completion is pending.
    fn clear(&self);
}

struct InFlight {
    target: Target,
    conn: Arc<Connection>,
    seqnum: u32,
    endpoint: u8,
    is_in: bool,
    is_control: bool,
    in_len: usize,
    out_len: usize,
    short_not_ok: bool,
    deadline: Option<Instant>,
    /// TIMED_OUT or CANCELLED once the library asked for an unlink.
    cancel: Option<i32>,
    unlink_deadline: Option<Instant>,
    outcome: Option<UrbOutcome>,
    queued: bool,
}

#[derive(Default)]
struct EvState {
    next_id: u64,
    inflight: HashMap<u64, InFlight>,
    by_token: HashMap<usize, u64>,
    ready: VecDeque<u64>,
    events_locked: bool,
    waiters_locked: bool,
    /// The delivery generation when the waiters lock was last taken: `wait_for_event` waits
    /// for a delivery after that moment, as libusb's waiter holds its lock from
    /// `libusb_lock_event_waiters` to the wait and a handler signals under that lock.
    waiters_seen: u64,
    generation: u64,
    interrupted: bool,
}

impl EvState {
    fn next_deadline(&self) -> Option<Instant> {
        self.inflight
            .values()
            .filter(|f| f.outcome.is_none())
            .filter_map(|f| f.deadline.or(f.unlink_deadline))
            .min()
    }
}

/// An unlink to send once the state lock is released.
struct Unlink {
    conn: Arc<Connection>,
    sink: Arc<dyn UrbSink>,
    id: u64,
    seqnum: u32,
    endpoint: u8,
}

/// The event core of one context; see the module documentation.
pub struct Events {
    state: Mutex<EvState>,
    cond: Condvar,
    wakeup: Mutex<Option<Box<dyn Wakeup>>>,
    /// Itself, so that URBs can name it as their sink.
    me: std::sync::Weak<Events>,
}

/// Maps a USB/IP URB status (0 or a negated Linux errno) to a libusb transfer status.
pub fn transfer_status(status: i32) -> i32 {
    match status.checked_neg().unwrap_or(i32::MAX) {
        0 => code::TRANSFER_COMPLETED,
        errno::EPIPE => code::TRANSFER_STALL,
        errno::ENODEV | errno::ESHUTDOWN => code::TRANSFER_NO_DEVICE,
        errno::EOVERFLOW => code::TRANSFER_OVERFLOW,
        errno::ECONNRESET | errno::ENOENT => code::TRANSFER_CANCELLED,
        errno::ETIMEDOUT => code::TRANSFER_TIMED_OUT,
        _ => code::TRANSFER_ERROR,
    }
}

/// The error a synchronous call returns for a transfer status (libusb `sync.c`).
pub fn sync_error(status: i32) -> i32 {
    match status {
        code::TRANSFER_COMPLETED => code::SUCCESS,
        code::TRANSFER_TIMED_OUT => code::ERROR_TIMEOUT,
        code::TRANSFER_STALL => code::ERROR_PIPE,
        code::TRANSFER_NO_DEVICE => code::ERROR_NO_DEVICE,
        code::TRANSFER_OVERFLOW => code::ERROR_OVERFLOW,
        _ => code::ERROR_IO,
    }
}

fn finish(f: InFlight) -> (Target, Done) {
    let token = match f.target {
        Target::Token(t) => t,
        Target::Sync(_) => 0,
    };
    let (status, mut data, actual) = match f.outcome {
        Some(UrbOutcome::Done {
            status,
            actual,
            data,
        }) => (transfer_status(status), data, actual as usize),
        Some(UrbOutcome::Unlinked) => (code::TRANSFER_CANCELLED, Vec::new(), 0),
        Some(UrbOutcome::Closed) | None => (code::TRANSFER_NO_DEVICE, Vec::new(), 0),
    };
    let actual = if f.is_in {
        data.truncate(f.in_len);
        data.len()
    } else {
        actual.min(f.out_len)
    };
    let status = match f.cancel {
        Some(reason) => reason,
        None if status == code::TRANSFER_COMPLETED
            && f.short_not_ok
            && f.is_in
            && !f.is_control
            && actual < f.in_len =>
        {
            code::TRANSFER_ERROR
        }
        None => status,
    };
    (
        f.target,
        Done {
            token,
            status,
            actual,
            data,
        },
    )
}

impl Events {
    /// An idle event core.
    pub fn new() -> Arc<Events> {
        Arc::new_cyclic(|me| Events {
            state: Mutex::new(EvState {
                next_id: 1,
                ..EvState::default()
            }),
            cond: Condvar::new(),
            wakeup: Mutex::new(None),
            me: me.clone(),
        })
    }

    fn sink(&self) -> Arc<dyn UrbSink> {
        // `self` is alive, so is the Arc that owns it.
        let me: Arc<Events> = self.me.upgrade().unwrap_or_else(Events::new);
        me
    }

    fn lock(&self) -> MutexGuard<'_, EvState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Installs the pollable wake-up (an eventfd in the FFI layer).
    pub fn set_wakeup(&self, w: Box<dyn Wakeup>) {
        *self.wakeup.lock().unwrap_or_else(|e| e.into_inner()) = Some(w);
    }

    fn raise(&self) {
        if let Some(w) = &*self.wakeup.lock().unwrap_or_else(|e| e.into_inner()) {
            w.raise();
        }
    }

    fn clear(&self) {
        if let Some(w) = &*self.wakeup.lock().unwrap_or_else(|e| e.into_inner()) {
            w.clear();
        }
    }

    fn queue(&self, st: &mut EvState, id: u64) {
        if let Some(f) = st.inflight.get_mut(&id) {
            if !f.queued {
                f.queued = true;
                st.ready.push_back(id);
                self.raise();
            }
        }
    }

    /// Submits an URB on `conn` for `target`, with a timeout in ms (0: none).
    pub fn submit(
        &self,
        target: Target,
        conn: &Arc<Connection>,
        req: &UrbRequest,
        timeout_ms: u32,
    ) -> Result<(), i32> {
        if !conn.is_open() {
            return Err(code::ERROR_NO_DEVICE);
        }
        let seqnum = conn.alloc_seq();
        let id = {
            let mut st = self.lock();
            if let Target::Token(t) = target {
                if st.by_token.contains_key(&t) {
                    return Err(code::ERROR_BUSY);
                }
            }
            let id = st.next_id;
            st.next_id += 1;
            if let Target::Token(t) = target {
                st.by_token.insert(t, id);
            }
            st.inflight.insert(
                id,
                InFlight {
                    target: target.clone(),
                    conn: conn.clone(),
                    seqnum,
                    endpoint: req.setup.map_or(req.endpoint, |_| 0),
                    is_in: req.is_in(),
                    is_control: req.setup.is_some(),
                    in_len: req.in_len as usize,
                    out_len: req.out_data.len(),
                    short_not_ok: req.flags & URB_SHORT_NOT_OK != 0,
                    deadline: (timeout_ms > 0)
                        .then(|| Instant::now() + Duration::from_millis(u64::from(timeout_ms))),
                    cancel: None,
                    unlink_deadline: None,
                    outcome: None,
                    queued: false,
                },
            );
            id
        };
        match conn.submit(id, seqnum, req, self.sink()) {
            Ok(()) => {
                // Wake an event handler so it takes the new deadline into account.
                self.cond.notify_all();
                Ok(())
            }
            Err(_) => {
                let mut st = self.lock();
                st.inflight.remove(&id);
                if let Target::Token(t) = target {
                    st.by_token.remove(&t);
                }
                Err(code::ERROR_NO_DEVICE)
            }
        }
    }

    /// `libusb_cancel_transfer`: NOT_FOUND unless in flight and not already being cancelled.
    pub fn cancel(&self, token: usize) -> Result<(), i32> {
        let unlink = {
            let mut st = self.lock();
            let id = *st.by_token.get(&token).ok_or(code::ERROR_NOT_FOUND)?;
            let f = st.inflight.get_mut(&id).ok_or(code::ERROR_NOT_FOUND)?;
            if f.cancel.is_some() {
                return Err(code::ERROR_NOT_FOUND);
            }
            f.cancel = Some(code::TRANSFER_CANCELLED);
            f.deadline = None;
            if f.outcome.is_some() {
                None
            } else {
                f.unlink_deadline = Some(Instant::now() + UNLINK_GRACE);
                Some(Unlink {
                    conn: f.conn.clone(),
                    sink: self.sink(),
                    id,
                    seqnum: f.seqnum,
                    endpoint: f.endpoint,
                })
            }
        };
        if let Some(u) = unlink {
            let _ = u.conn.unlink(u.id, u.seqnum, u.endpoint, u.sink);
            self.cond.notify_all();
        }
        Ok(())
    }

    /// Marks expired transfers timed out and returns the unlinks to send; completes those
    /// whose unlink was never answered.
    fn expire(&self, st: &mut EvState, now: Instant) -> Vec<Unlink> {
        let mut unlinks = Vec::new();
        let mut give_up = Vec::new();
        for (&id, f) in st.inflight.iter_mut() {
            if f.outcome.is_some() {
                f.deadline = None;
                continue;
            }
            if f.deadline.is_some_and(|d| d <= now) {
                f.deadline = None;
                f.cancel = Some(code::TRANSFER_TIMED_OUT);
                f.unlink_deadline = Some(now + UNLINK_GRACE);
                unlinks.push(Unlink {
                    conn: f.conn.clone(),
                    sink: self.sink(),
                    id,
                    seqnum: f.seqnum,
                    endpoint: f.endpoint,
                });
            } else if f.unlink_deadline.is_some_and(|d| d <= now) {
                f.outcome = Some(UrbOutcome::Unlinked);
                give_up.push(id);
            }
        }
        for id in give_up {
            self.queue(st, id);
        }
        unlinks
    }

    /// Handles events with the event lock held by the caller: waits up to `timeout` for
    /// completions (processing timeouts meanwhile), then delivers every ready one.
    pub fn handle_locked(&self, timeout: Duration, dispatch: &mut dyn FnMut(Done)) -> i32 {
        let limit = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            let unlinks = self.expire(&mut st, now);
            if !unlinks.is_empty() {
                drop(st);
                for u in unlinks {
                    let _ = u.conn.unlink(u.id, u.seqnum, u.endpoint, u.sink);
                }
                st = self.lock();
                continue;
            }
            if !st.ready.is_empty() || st.interrupted || now >= limit {
                break;
            }
            let wake = st.next_deadline().map_or(limit, |d| d.min(limit));
            st = self
                .cond
                .wait_timeout(st, wake.saturating_duration_since(now))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        st.interrupted = false;
        let ids: Vec<u64> = st.ready.drain(..).collect();
        let mut finished = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(f) = st.inflight.remove(&id) {
                if let Target::Token(t) = f.target {
                    st.by_token.remove(&t);
                }
                finished.push(finish(f));
            }
        }
        self.clear();
        drop(st);
        for (target, done) in finished {
            match target {
                Target::Token(_) => dispatch(done),
                Target::Sync(slot) => *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(done),
            }
            self.lock().generation += 1;
            self.cond.notify_all();
        }
        code::SUCCESS
    }

    /// `libusb_try_lock_events`: true if this call took the event lock.
    pub fn try_lock_events(&self) -> bool {
        let mut st = self.lock();
        if st.events_locked {
            false
        } else {
            st.events_locked = true;
            true
        }
    }

    /// `libusb_lock_events`.
    pub fn lock_events(&self) {
        let mut st = self.lock();
        while st.events_locked {
            st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.events_locked = true;
    }

    /// `libusb_unlock_events`: also wakes the event waiters.
    pub fn unlock_events(&self) {
        let mut st = self.lock();
        st.events_locked = false;
        st.generation += 1;
        drop(st);
        self.cond.notify_all();
    }

    /// `libusb_event_handler_active`.
    pub fn handler_active(&self) -> bool {
        self.lock().events_locked
    }

    /// `libusb_lock_event_waiters`.
    pub fn lock_waiters(&self) {
        let mut st = self.lock();
        while st.waiters_locked {
            st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.waiters_locked = true;
        st.waiters_seen = st.generation;
    }

    /// `libusb_unlock_event_waiters`.
    pub fn unlock_waiters(&self) {
        self.lock().waiters_locked = false;
        self.cond.notify_all();
    }

    /// `libusb_wait_for_event`, with the waiters lock held: releases it, waits for a delivery
    /// or unlock of the event lock since the lock was taken (or `timeout`), takes it back.
    /// True on timeout. A delivery between the caller's checks and this call counts, so a
    /// transfer that completed there cannot leave the caller waiting for the next event.
    pub fn wait_for_event(&self, timeout: Option<Duration>) -> bool {
        let limit = timeout.map(|t| Instant::now() + t);
        let mut st = self.lock();
        let seen = st.waiters_seen;
        st.waiters_locked = false;
        self.cond.notify_all();
        let mut timed_out = false;
        while st.generation == seen {
            match limit {
                Some(l) => {
                    let now = Instant::now();
                    if now >= l {
                        timed_out = true;
                        break;
                    }
                    st = self
                        .cond
                        .wait_timeout(st, l - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                None => st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner()),
            }
        }
        while st.waiters_locked {
            st = self.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.waiters_locked = true;
        st.waiters_seen = st.generation;
        timed_out
    }

    /// `libusb_interrupt_event_handler`: makes a blocked handler return.
    pub fn interrupt(&self) {
        let mut st = self.lock();
        st.interrupted = true;
        st.generation += 1;
        drop(st);
        self.cond.notify_all();
    }

    /// `libusb_get_next_timeout`: how long until the next transfer timeout, if any.
    pub fn next_timeout(&self) -> Option<Duration> {
        let st = self.lock();
        let ready = !st.ready.is_empty();
        st.next_deadline().map(|d| {
            if ready {
                Duration::ZERO
            } else {
                d.saturating_duration_since(Instant::now())
            }
        })
    }

    /// `libusb_handle_events_timeout_completed`: handles events if the event lock is free,
    /// else waits for the handler's next delivery; returns at once if `completed()`.
    pub fn handle_completed(
        &self,
        timeout: Duration,
        completed: &dyn Fn() -> bool,
        dispatch: &mut dyn FnMut(Done),
    ) -> i32 {
        loop {
            if self.try_lock_events() {
                let r = if completed() {
                    code::SUCCESS
                } else {
                    self.handle_locked(timeout, dispatch)
                };
                self.unlock_events();
                return r;
            }
            self.lock_waiters();
            if completed() {
                self.unlock_waiters();
                return code::SUCCESS;
            }
            if !self.handler_active() {
                self.unlock_waiters();
                continue;
            }
            self.wait_for_event(Some(timeout));
            self.unlock_waiters();
            return code::SUCCESS;
        }
    }

    /// Runs a transfer synchronously on the event loop (libusb `sync.c`).
    pub fn run_sync(
        &self,
        conn: &Arc<Connection>,
        req: &UrbRequest,
        timeout_ms: u32,
        dispatch: &mut dyn FnMut(Done),
    ) -> Result<Done, i32> {
        let slot = Arc::new(Mutex::new(None));
        self.submit(Target::Sync(slot.clone()), conn, req, timeout_ms)?;
        let taken = |s: &Mutex<Option<Done>>| s.lock().unwrap_or_else(|e| e.into_inner()).take();
        let is_done = || slot.lock().unwrap_or_else(|e| e.into_inner()).is_some();
        loop {
            if let Some(d) = taken(&slot) {
                return Ok(d);
            }
            self.handle_completed(HANDLE_EVENTS_CAP, &is_done, dispatch);
        }
    }
}

impl UrbSink for Events {
    fn urb_finished(&self, id: u64, outcome: UrbOutcome) {
        let mut st = self.lock();
        if let Some(f) = st.inflight.get_mut(&id) {
            if f.outcome.is_none() {
                f.outcome = Some(outcome);
            }
            self.queue(&mut st, id);
        }
        drop(st);
        self.cond.notify_all();
    }

    fn unlink_answered(&self, id: u64) {
        // The URB had completed, so its RET_SUBMIT came first (TCP keeps order). A server
        // that skipped it still must not leave the transfer hanging.
        self.urb_finished(id, UrbOutcome::Unlinked);
    }
}

/// Where a context's log lines go instead of stderr: `(level, message)`.
pub type LogHook = Box<dyn Fn(i32, &str) + Send + Sync>;

/// A libusb context: the server address, the devices found so far, options, event core.
pub struct Context {
    /// The event core.
    pub events: Arc<Events>,
    server: Result<SocketAddr, BadServerAddress>,
    devices: Mutex<Vec<Arc<Device>>>,
    /// LIBUSB_OPTION_LOG_LEVEL.
    pub log_level: AtomicI32,
    /// LIBUSB_OPTION_NO_DEVICE_DISCOVERY: get_device_list returns no device.
    pub no_discovery: AtomicBool,
    log_hook: Mutex<Option<LogHook>>,
}

static NEXT_HANDLE: AtomicU64 = AtomicU64::new(1);

/// Connections of this process by server and bus id: every context that lists a device uses
/// the one import (SANE's `sane-find-scanner` runs two contexts at once, and the server lets
/// one client import a device at a time).
static CONNECTIONS: Mutex<Vec<(SocketAddr, String, Weak<Connection>)>> = Mutex::new(Vec::new());

fn shared_connection(
    addr: SocketAddr,
    busid: &str,
) -> Result<Arc<Connection>, connection::ClientError> {
    let mut all = CONNECTIONS.lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|(_, _, c)| c.upgrade().is_some_and(|c| c.is_open()));
    if let Some(c) = all
        .iter()
        .find(|(a, b, _)| *a == addr && b == busid)
        .and_then(|(_, _, c)| c.upgrade())
    {
        return Ok(c);
    }
    let conn = Arc::new(Connection::import(addr, busid)?);
    all.push((addr, busid.to_string(), Arc::downgrade(&conn)));
    Ok(conn)
}

impl Context {
    /// A context for the server at `server` (an error text if the address was unusable:
    /// the context then has no devices), logging at `log_level`.
    pub fn new(server: Result<SocketAddr, BadServerAddress>, log_level: i32) -> Context {
        Context {
            events: Events::new(),
            server,
            devices: Mutex::new(Vec::new()),
            log_level: AtomicI32::new(log_level),
            no_discovery: AtomicBool::new(false),
            log_hook: Mutex::new(None),
        }
    }

    /// Sends log lines to `hook` instead of stderr.
    pub fn set_log_hook(&self, hook: Option<LogHook>) {
        *self.log_hook.lock().unwrap_or_else(|e| e.into_inner()) = hook;
    }

    /// Logs `msg` if `level` is enabled.
    pub fn log(&self, level: i32, msg: &str) {
        if level > self.log_level.load(Ordering::Relaxed) || level <= code::LOG_NONE {
            return;
        }
        let hook = self.log_hook.lock().unwrap_or_else(|e| e.into_inner());
        match &*hook {
            Some(h) => h(level, msg),
            None => {
                let name = match level {
                    code::LOG_ERROR => "error",
                    code::LOG_WARNING => "warning",
                    code::LOG_INFO => "info",
                    _ => "debug",
                };
                eprintln!("libusb: {name} [scanlab-libusb] {msg}");
            }
        }
    }

    /// `libusb_get_device_list`: lists the server's exports, importing each new one.
    pub fn device_list(&self) -> Vec<Arc<Device>> {
        if self.no_discovery.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let addr = match &self.server {
            Ok(a) => *a,
            Err(e) => {
                self.log(code::LOG_WARNING, &e.to_string());
                return Vec::new();
            }
        };
        let mut devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        devices.retain(|d| d.conn.is_open());
        let exports = match connection::list_devices(addr) {
            Ok(e) => e,
            Err(e) => {
                self.log(
                    code::LOG_INFO,
                    &format!("no USB/IP server at {addr} ({e}): no devices"),
                );
                return devices.clone();
            }
        };
        let mut listed = Vec::new();
        let filter = std::env::var(BUSID_ENV).ok();
        for export in exports {
            let busid = export.record.busid;
            // Several programs share one multi-device server, each importing its own.
            if !wanted_busid(filter.as_deref(), &busid) {
                continue;
            }
            if let Some(d) = devices.iter().find(|d| d.busid == busid) {
                listed.push(d.clone());
                continue;
            }
            match shared_connection(addr, &busid) {
                Ok(conn) => {
                    let dev = Arc::new(Device::new(busid, conn, self.events.clone()));
                    listed.push(dev);
                }
                Err(e) => self.log(
                    code::LOG_WARNING,
                    &format!("import of {busid} from {addr} failed: {e}"),
                ),
            }
        }
        *devices = listed.clone();
        listed
    }

    /// Forgets every device (`libusb_exit`); devices the caller still references live on.
    pub fn close(&self) {
        self.devices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// An imported device.
pub struct Device {
    /// The USB/IP bus id (`1-1`).
    pub busid: String,
    /// Its connection.
    pub conn: Arc<Connection>,
    /// The owning context's event core.
    pub events: Arc<Events>,
    configs: Vec<Result<Config, descriptor::DescriptorError>>,
}

impl Device {
    fn new(busid: String, conn: Arc<Connection>, events: Arc<Events>) -> Device {
        let configs = conn
            .configs()
            .iter()
            .map(|c| descriptor::parse_config(c))
            .collect();
        Device {
            busid,
            conn,
            events,
            configs,
        }
    }

    /// The bus number.
    pub fn bus_number(&self) -> u8 {
        u8::try_from(self.conn.record().busnum).unwrap_or(u8::MAX)
    }

    /// The device address.
    pub fn address(&self) -> u8 {
        u8::try_from(self.conn.record().devnum).unwrap_or(u8::MAX)
    }

    /// `LIBUSB_SPEED_*` from the USB/IP speed code.
    pub fn speed(&self) -> i32 {
        match self.conn.record().speed {
            1 => 1,
            2 => 2,
            3 => 3,
            5 => 4,
            6 => 5,
            _ => 0,
        }
    }

    /// Port numbers from the root, from the bus id (`1-1.4` → [1, 4]).
    pub fn port_numbers(&self) -> Vec<u8> {
        self.busid
            .split_once('-')
            .map(|(_, ports)| ports.split('.').filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default()
    }

    /// The raw 18-byte device descriptor.
    pub fn device_descriptor(&self) -> &[u8] {
        self.conn.device_descriptor()
    }

    /// Configuration by index.
    pub fn config(&self, index: usize) -> Result<&Config, i32> {
        match self.configs.get(index) {
            Some(Ok(c)) => Ok(c),
            Some(Err(_)) => Err(code::ERROR_IO),
            None => Err(code::ERROR_NOT_FOUND),
        }
    }

    /// Configuration by bConfigurationValue.
    pub fn config_by_value(&self, value: u8) -> Result<&Config, i32> {
        self.configs
            .iter()
            .flatten()
            .find(|c| c.value == value)
            .ok_or(code::ERROR_NOT_FOUND)
    }

    /// The active configuration's value (0: unconfigured).
    pub fn configuration(&self) -> u8 {
        *self
            .conn
            .active_config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The active configuration (NOT_FOUND when unconfigured).
    pub fn active_config(&self) -> Result<&Config, i32> {
        match self.configuration() {
            0 => Err(code::ERROR_NOT_FOUND),
            v => self.config_by_value(v),
        }
    }

    /// False once the connection to the server ended.
    pub fn attached(&self) -> bool {
        self.conn.is_open()
    }
}

/// An open device (`libusb_device_handle`).
pub struct Handle {
    /// Distinguishes handles of the same device (interface claims).
    pub id: u64,
    /// The device.
    pub dev: Arc<Device>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.dev
            .conn
            .claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, h| *h != self.id);
    }
}

/// The outcome of a synchronous bulk or interrupt transfer: the libusb error code and the
/// bytes moved (always valid, also after a timeout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResult {
    /// 0 or a `LIBUSB_ERROR_*` code.
    pub error: i32,
    /// Bytes moved.
    pub transferred: usize,
    /// IN data.
    pub data: Vec<u8>,
}

impl Handle {
    /// `libusb_open`.
    pub fn open(dev: Arc<Device>) -> Result<Handle, i32> {
        if !dev.attached() {
            return Err(code::ERROR_NO_DEVICE);
        }
        Ok(Handle {
            id: NEXT_HANDLE.fetch_add(1, Ordering::Relaxed),
            dev,
        })
    }

    fn check_attached(&self) -> Result<(), i32> {
        if self.dev.attached() {
            Ok(())
        } else {
            Err(code::ERROR_NO_DEVICE)
        }
    }

    fn claims(&self) -> MutexGuard<'_, HashMap<u8, u64>> {
        self.dev
            .conn
            .claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// True if this handle claimed `iface`.
    pub fn has_claimed(&self, iface: u8) -> bool {
        self.claims().get(&iface) == Some(&self.id)
    }

    /// `libusb_claim_interface`.
    pub fn claim(&self, iface: i32) -> Result<(), i32> {
        let iface = u8::try_from(iface).map_err(|_| code::ERROR_INVALID_PARAM)?;
        if iface >= 32 {
            return Err(code::ERROR_INVALID_PARAM);
        }
        self.check_attached()?;
        let config = self.dev.active_config()?;
        if config.altsetting(iface, 0).is_none() {
            return Err(code::ERROR_NOT_FOUND);
        }
        let mut claims = self.claims();
        match claims.get(&iface) {
            Some(h) if *h != self.id => Err(code::ERROR_BUSY),
            _ => {
                claims.insert(iface, self.id);
                Ok(())
            }
        }
    }

    /// `libusb_release_interface`.
    pub fn release(&self, iface: i32) -> Result<(), i32> {
        let iface = u8::try_from(iface).map_err(|_| code::ERROR_INVALID_PARAM)?;
        if iface >= 32 {
            return Err(code::ERROR_INVALID_PARAM);
        }
        let mut claims = self.claims();
        if claims.get(&iface) != Some(&self.id) {
            return Err(code::ERROR_NOT_FOUND);
        }
        claims.remove(&iface);
        drop(claims);
        self.check_attached()
    }

    /// A control transfer: the data stage moved (IN data returned), or an error code.
    pub fn control(
        &self,
        setup: [u8; 8],
        out: &[u8],
        timeout_ms: u32,
        dispatch: &mut dyn FnMut(Done),
    ) -> Result<Done, i32> {
        self.check_attached()?;
        let w_length = u16::from_le_bytes([setup[6], setup[7]]);
        let is_in = setup[0] & 0x80 != 0;
        let req = UrbRequest {
            endpoint: if is_in { 0x80 } else { 0 },
            setup: Some(setup),
            in_len: if is_in { u32::from(w_length) } else { 0 },
            out_data: if is_in {
                Vec::new()
            } else {
                out[..usize::from(w_length).min(out.len())].to_vec()
            },
            flags: 0,
            interval: 0,
        };
        let done = self
            .dev
            .events
            .run_sync(&self.dev.conn, &req, timeout_ms, dispatch)?;
        match sync_error(done.status) {
            code::SUCCESS => Ok(done),
            e => Err(e),
        }
    }

    /// A bulk or interrupt transfer on `endpoint` (bit 7 = IN).
    pub fn bulk_or_interrupt(
        &self,
        endpoint: u8,
        in_len: usize,
        out: &[u8],
        timeout_ms: u32,
        interval: u32,
        dispatch: &mut dyn FnMut(Done),
    ) -> SyncResult {
        let fail = |error| SyncResult {
            error,
            transferred: 0,
            data: Vec::new(),
        };
        if let Err(e) = self.check_attached() {
            return fail(e);
        }
        let req = UrbRequest {
            endpoint,
            setup: None,
            in_len: u32::try_from(in_len).unwrap_or(u32::MAX),
            out_data: out.to_vec(),
            flags: 0,
            interval,
        };
        match self
            .dev
            .events
            .run_sync(&self.dev.conn, &req, timeout_ms, dispatch)
        {
            Ok(done) => SyncResult {
                error: sync_error(done.status),
                transferred: done.actual,
                data: done.data,
            },
            Err(e) => fail(e),
        }
    }

    fn standard(&self, setup: [u8; 8], dispatch: &mut dyn FnMut(Done)) -> Result<(), i32> {
        self.control(setup, &[], STANDARD_REQUEST_TIMEOUT_MS, dispatch)
            .map(|_| ())
    }

    /// `libusb_set_configuration` (-1: unconfigured).
    pub fn set_configuration(&self, value: i32, dispatch: &mut dyn FnMut(Done)) -> Result<(), i32> {
        self.check_attached()?;
        let value = if value == -1 {
            0
        } else {
            u8::try_from(value).map_err(|_| code::ERROR_INVALID_PARAM)?
        };
        if value != 0 && self.dev.config_by_value(value).is_err() {
            return Err(code::ERROR_NOT_FOUND);
        }
        if !self.claims().is_empty() {
            return Err(code::ERROR_BUSY);
        }
        self.standard([0x00, 9, value, 0, 0, 0, 0, 0], dispatch)?;
        *self
            .dev
            .conn
            .active_config
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = value;
        Ok(())
    }

    /// `libusb_set_interface_alt_setting`.
    pub fn set_alt_setting(
        &self,
        iface: i32,
        alt: i32,
        dispatch: &mut dyn FnMut(Done),
    ) -> Result<(), i32> {
        let iface = u8::try_from(iface).map_err(|_| code::ERROR_INVALID_PARAM)?;
        let alt = u8::try_from(alt).map_err(|_| code::ERROR_INVALID_PARAM)?;
        if !self.has_claimed(iface) {
            return Err(code::ERROR_NOT_FOUND);
        }
        self.check_attached()?;
        if self.dev.active_config()?.altsetting(iface, alt).is_none() {
            return Err(code::ERROR_NOT_FOUND);
        }
        self.standard([0x01, 11, alt, 0, iface, 0, 0, 0], dispatch)
    }

    /// `libusb_clear_halt`: CLEAR_FEATURE(ENDPOINT_HALT).
    pub fn clear_halt(&self, endpoint: u8, dispatch: &mut dyn FnMut(Done)) -> Result<(), i32> {
        self.check_attached()?;
        if self.dev.active_config()?.endpoint(endpoint).is_none() {
            return Err(code::ERROR_NOT_FOUND);
        }
        self.standard([0x02, 1, 0, 0, endpoint, 0, 0, 0], dispatch)
    }

    /// `libusb_reset_device`: the request Linux's usbip-host treats as a port reset.
    pub fn reset(&self, dispatch: &mut dyn FnMut(Done)) -> Result<(), i32> {
        self.check_attached()?;
        let port = self.dev.port_numbers().last().copied().unwrap_or(1);
        self.standard([0x23, 3, 4, 0, port, 0, 0, 0], dispatch)?;
        *self
            .dev
            .conn
            .active_config
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = self.dev.conn.record().configuration_value;
        Ok(())
    }

    /// The request flags of an asynchronous transfer from libusb's transfer flags.
    pub fn urb_flags(libusb_flags: u8) -> u32 {
        let mut f = 0;
        if libusb_flags & 1 != 0 {
            f |= URB_SHORT_NOT_OK;
        }
        if libusb_flags & 8 != 0 {
            f |= URB_ZERO_PACKET;
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urb_statuses_map_as_linux_libusb_reports_them() {
        assert_eq!(transfer_status(0), code::TRANSFER_COMPLETED);
        assert_eq!(transfer_status(-32), code::TRANSFER_STALL);
        assert_eq!(transfer_status(-108), code::TRANSFER_NO_DEVICE);
        assert_eq!(transfer_status(-19), code::TRANSFER_NO_DEVICE);
        assert_eq!(transfer_status(-75), code::TRANSFER_OVERFLOW);
        assert_eq!(transfer_status(-104), code::TRANSFER_CANCELLED);
        assert_eq!(transfer_status(-71), code::TRANSFER_ERROR);
        assert_eq!(transfer_status(i32::MIN), code::TRANSFER_ERROR);
        assert_eq!(sync_error(code::TRANSFER_STALL), code::ERROR_PIPE);
        assert_eq!(sync_error(code::TRANSFER_CANCELLED), code::ERROR_IO);
        assert_eq!(sync_error(code::TRANSFER_TIMED_OUT), code::ERROR_TIMEOUT);
    }

    #[test]
    fn busid_filter_names_devices_or_takes_all() {
        assert!(wanted_busid(None, "1-3"));
        assert!(wanted_busid(Some(" "), "1-3"));
        assert!(wanted_busid(Some("1-2"), "1-2"));
        assert!(!wanted_busid(Some("1-2"), "1-1"));
        assert!(wanted_busid(Some("1-1, 1-3"), "1-3"));
        assert!(!wanted_busid(Some("1-1,1-3"), "1-2"));
    }

    #[test]
    fn server_address_defaults_to_loopback_and_rejects_junk() {
        assert_eq!(
            server_address(None).unwrap(),
            "127.0.0.1:3240".parse().unwrap()
        );
        assert!(server_address(Some("localhost")).is_err());
    }

    #[test]
    fn event_lock_and_waiters_hand_over() {
        let ev = Events::new();
        assert!(ev.try_lock_events());
        assert!(!ev.try_lock_events());
        assert!(ev.handler_active());
        let e2 = ev.clone();
        let waiter = std::thread::spawn(move || {
            e2.lock_waiters();
            let timed_out = e2.wait_for_event(Some(Duration::from_secs(5)));
            e2.unlock_waiters();
            timed_out
        });
        std::thread::sleep(Duration::from_millis(50));
        ev.unlock_events();
        assert!(!waiter.join().unwrap(), "unlock_events wakes the waiter");
        ev.lock_waiters();
        assert!(ev.wait_for_event(Some(Duration::from_millis(10))));
        ev.unlock_waiters();
    }

    #[test]
    fn a_delivery_between_the_waiters_checks_and_the_wait_is_not_lost() {
        // The waiter took the waiters lock and found its transfer not yet complete; the
        // handler then delivered it and released the event lock before the waiter reached
        // wait_for_event. That wait must return at once, not wait for an event that may never
        // come (libusb's handler signals under the waiters lock, so it cannot slip in between).
        let ev = Events::new();
        ev.lock_waiters();
        assert!(ev.try_lock_events());
        ev.unlock_events();
        assert!(
            !ev.wait_for_event(Some(Duration::from_secs(30))),
            "the delivery after lock_waiters wakes the wait"
        );
        // Re-taken by the wait: only a later delivery counts now.
        assert!(ev.wait_for_event(Some(Duration::from_millis(10))));
        ev.unlock_waiters();
    }

    #[test]
    fn handle_events_returns_after_its_timeout_and_on_interrupt() {
        let ev = Events::new();
        let t0 = Instant::now();
        ev.handle_completed(Duration::from_millis(30), &|| false, &mut |_| {});
        assert!(t0.elapsed() >= Duration::from_millis(30));
        let e2 = ev.clone();
        let h = std::thread::spawn(move || {
            let t0 = Instant::now();
            e2.handle_completed(Duration::from_secs(10), &|| false, &mut |_| {});
            t0.elapsed()
        });
        std::thread::sleep(Duration::from_millis(50));
        ev.interrupt();
        assert!(h.join().unwrap() < Duration::from_secs(5));
        assert_eq!(ev.next_timeout(), None);
    }
}
