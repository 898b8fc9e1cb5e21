//! A [`UsbHost`] over USB/IP: a user-space client of any USB/IP server.
//!
//! [`UsbIpHost::connect`] imports a bus id (`OP_REQ_IMPORT`), reads the device and configuration
//! descriptors with GET_DESCRIPTOR, and from then on turns every transfer into a
//! `USBIP_CMD_SUBMIT` whose `USBIP_RET_SUBMIT` is matched by sequence number. A reader thread
//! receives the replies and wakes the waiting task through its [`Waker`], so the host runs on
//! any executor, including [`Sim::realtime`](crate::sim::Sim::realtime), without tokio.
//!
//! - [`UsbHost::abort_endpoint`] sends `USBIP_CMD_UNLINK` for the URB and ends the transfer
//!   at once ([`TransferError::Cancelled`], 0 bytes: an aborted URB's data is not delivered).
//!   A timeout sends `USBIP_CMD_UNLINK` and waits (up to 250 ms) for the server's answer, as
//!   Linux's `usb_start_wait_urb` kills the URB and waits for it: `RET_UNLINK` ends the
//!   transfer with [`TransferError::Timeout`]; a `RET_SUBMIT` that crossed the unlink delivers
//!   its data, so a completion racing a late timeout is not lost; an abort while it waits ends
//!   it [`TransferError::Cancelled`]. The URB's slot stays until the server's
//!   `RET_UNLINK` (or its `RET_SUBMIT`, if it had already completed) arrives.
//! - [`UsbHost::clear_halt`] is CLEAR_FEATURE(ENDPOINT_HALT) over EP0.
//! - [`UsbHost::reset_device`]: USB/IP has no reset message. This host unlinks every pending
//!   URB and sends the request Linux's usbip-host stub recognises as a device reset
//!   (`bmRequestType` 0x23, SET_FEATURE, `wValue` PORT_RESET = 4; see `tweak_reset_device` in
//!   the kernel's `drivers/usb/usbip/stub_rx.c`), on which the stub calls `usb_reset_device`.
//!   This project's server does the same: kills pending URBs, resets and re-enumerates.
//! - Status codes: 0 ok, `-EPIPE` [`TransferError::Stall`], `-ESHUTDOWN`/`-ENODEV`
//!   [`TransferError::NoDevice`], `-EOVERFLOW` [`TransferError::Overflow`], `-ECONNRESET`/
//!   `-ENOENT` on a URB this host did not cancel [`TransferError::Cancelled`], anything else
//!   [`TransferError::Io`]. A closed connection is [`TransferError::NoDevice`].
//! - `now` and `sleep` come from the [`Clock`] given at connect time (real time in practice).

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;

use async_trait::async_trait;

use super::{DeviceInfo, Setup, TransferError, UsbHost};
use crate::sim::Clock;
use crate::time::{Duration, Instant};
use crate::usb::hc::{self, SetupPacket};
use crate::usbip::protocol::{
    encode_busid, errno, read_devlist, CmdSubmit, CmdUnlink, DeviceRecord, ExportedDevice,
    OpHeader, ProtocolError, Reply, RetSubmit, DIR_IN, DIR_OUT, OP_REP_DEVLIST, OP_REP_IMPORT,
    OP_REQ_DEVLIST, OP_REQ_IMPORT, URB_DIR_IN,
};

/// Why connecting to a USB/IP server failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connection or a read/write failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The server broke the protocol.
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    /// The server refused the import (`status`: 1 not available, 2 busy, 3 error, 4 no device).
    #[error("import of {busid:?} refused with status {status}")]
    Refused {
        /// The bus id asked for.
        busid: String,
        /// The operation status.
        status: u32,
    },
    /// Reading the descriptors after the import failed.
    #[error("reading descriptors: {0}")]
    Descriptors(TransferError),
}

/// How long a timed-out transfer waits for the server's answer to its unlink.
const UNLINK_GRACE: Duration = Duration::from_millis(250);
/// How long connecting and reading descriptors may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Lists the devices a USB/IP server exports (`OP_REQ_DEVLIST`).
pub fn list_devices(addr: SocketAddr) -> Result<Vec<ExportedDevice>, ConnectError> {
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    stream.write_all(&OpHeader::new(OP_REQ_DEVLIST, 0).encode())?;
    let mut r = BufReader::new(stream);
    let h = OpHeader::read(&mut r)?;
    if h.code != OP_REP_DEVLIST {
        return Err(ProtocolError::UnknownOp(h.code).into());
    }
    Ok(read_devlist(&mut r, 1024)?)
}

/// A submitted URB, as the reader thread and the waiting task share it.
struct Slot {
    ep: u8,
    /// IN buffer length (`None` for OUT), so replies cannot claim more.
    in_len: Option<u32>,
    done: Option<RetSubmit>,
    waker: Option<Waker>,
    /// The task stopped waiting (timeout, abort, drop); the slot only awaits the server's word.
    orphan: bool,
    /// Aborted by `abort_endpoint` or a reset (its CMD_UNLINK is sent).
    aborted: bool,
    /// The server answered the unlink with -ECONNRESET: no RET_SUBMIT will come.
    unlinked: bool,
    /// Timed out: its CMD_UNLINK is sent and the task waits for the server's answer.
    unlink_sent: bool,
}

#[derive(Default)]
struct State {
    urbs: HashMap<u32, Slot>,
    /// CMD_UNLINK seqnum -> URB seqnum.
    unlinks: HashMap<u32, u32>,
    closed: Option<String>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Inner {
    state: Arc<Mutex<State>>,
    stream: RefCell<TcpStream>,
    clock: Rc<dyn Clock>,
    record: DeviceRecord,
    info: DeviceInfo,
    next_seq: RefCell<u32>,
    reader: RefCell<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.stream.borrow().shutdown(Shutdown::Both);
        if let Some(t) = self.reader.borrow_mut().take() {
            let _ = t.join();
        }
    }
}

/// The USB/IP client host. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct UsbIpHost {
    inner: Rc<Inner>,
}

/// Sends one control URB and reads its reply synchronously (before the reader thread runs).
fn sync_control_in(
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    devid: u32,
    seqnum: u32,
    setup: SetupPacket,
) -> Result<Vec<u8>, TransferError> {
    let cmd = CmdSubmit {
        seqnum,
        devid,
        direction: DIR_IN,
        ep: 0,
        transfer_flags: URB_DIR_IN,
        transfer_buffer_length: u32::from(setup.length),
        start_frame: 0,
        number_of_packets: 0,
        interval: 0,
        setup: setup.to_bytes(),
        data: Vec::new(),
    };
    let mut buf = Vec::with_capacity(48);
    cmd.write(&mut buf)
        .and_then(|()| stream.write_all(&buf))
        .map_err(|e| TransferError::Io(e.to_string()))?;
    let len = u32::from(setup.length);
    match Reply::read(reader, |_| Some(len)) {
        Ok(Reply::Submit(r)) if r.seqnum == seqnum => status_result(r.status).map(|()| r.data),
        Ok(_) => Err(TransferError::Io(
            "unexpected reply to GET_DESCRIPTOR".into(),
        )),
        Err(e) => Err(TransferError::Io(e.to_string())),
    }
}

fn status_result(status: i32) -> Result<(), TransferError> {
    match -status {
        0 => Ok(()),
        errno::EPIPE => Err(TransferError::Stall),
        errno::ESHUTDOWN | errno::ENODEV => Err(TransferError::NoDevice),
        errno::EOVERFLOW => Err(TransferError::Overflow),
        errno::ECONNRESET | errno::ENOENT => Err(TransferError::Cancelled { actual: 0 }),
        other => Err(TransferError::Io(format!("URB status -{other}"))),
    }
}

fn reader_loop(mut r: BufReader<TcpStream>, state: Arc<Mutex<State>>) {
    let why = loop {
        let reply = Reply::read(&mut r, |seq| {
            lock(&state).urbs.get(&seq).and_then(|s| s.in_len)
        });
        let mut st = lock(&state);
        match reply {
            Ok(Reply::Submit(ret)) => {
                let seq = ret.seqnum;
                let Some(slot) = st.urbs.get_mut(&seq) else {
                    // A reply for an URB we never sent: the stream cannot be trusted.
                    break format!("RET_SUBMIT for unknown seqnum {seq}");
                };
                if slot.orphan {
                    st.urbs.remove(&seq);
                } else {
                    slot.done = Some(ret);
                    if let Some(w) = slot.waker.take() {
                        w.wake();
                    }
                }
            }
            Ok(Reply::Unlink(u)) => {
                if let Some(urb) = st.unlinks.remove(&u.seqnum) {
                    // -ECONNRESET: cancelled, no RET_SUBMIT follows. 0: it had completed and
                    // its RET_SUBMIT already arrived.
                    if u.status != 0 {
                        match st.urbs.get_mut(&urb) {
                            Some(slot) if !slot.orphan => {
                                slot.unlinked = true;
                                if let Some(w) = slot.waker.take() {
                                    w.wake();
                                }
                            }
                            _ => {
                                st.urbs.remove(&urb);
                            }
                        }
                    }
                }
            }
            Err(ProtocolError::Closed) => break "server closed the connection".into(),
            Err(e) => break e.to_string(),
        }
    };
    let mut st = lock(&state);
    st.closed = Some(why);
    for slot in st.urbs.values_mut() {
        if let Some(w) = slot.waker.take() {
            w.wake();
        }
    }
}

/// How waiting for an URB ended.
enum Waited {
    Done(RetSubmit),
    Closed,
    Aborted,
    TimedOut,
    /// The server confirmed the unlink of a timed-out URB: no completion follows.
    Unlinked,
}

/// Marks the URB orphaned (and unlinks it) if the waiting future is dropped early.
struct UrbGuard<'a> {
    host: &'a UsbIpHost,
    seq: u32,
    finished: bool,
}

impl Drop for UrbGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.host.orphan(self.seq);
        }
    }
}

struct WaitUrb<'a> {
    state: &'a Mutex<State>,
    seq: u32,
    deadline: Option<Instant>,
    clock: &'a dyn Clock,
    sleep: Option<Pin<Box<dyn Future<Output = ()>>>>,
}

impl Future for WaitUrb<'_> {
    type Output = Waited;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Waited> {
        {
            let mut st = lock(self.state);
            let closed = st.closed.is_some();
            let Some(slot) = st.urbs.get_mut(&self.seq) else {
                return Poll::Ready(Waited::Closed);
            };
            if slot.aborted {
                // The abort wins over a completion that raced it: the driver asked to cancel.
                if slot.done.is_some() || slot.unlinked || closed {
                    st.urbs.remove(&self.seq);
                } else {
                    slot.orphan = true;
                    slot.waker = None;
                }
                return Poll::Ready(Waited::Aborted);
            }
            if let Some(done) = slot.done.take() {
                st.urbs.remove(&self.seq);
                return Poll::Ready(Waited::Done(done));
            }
            if slot.unlinked {
                st.urbs.remove(&self.seq);
                return Poll::Ready(Waited::Unlinked);
            }
            if closed {
                return Poll::Ready(Waited::Closed);
            }
            slot.waker = Some(cx.waker().clone());
        }
        if let Some(deadline) = self.deadline {
            if self.clock.now() >= deadline {
                return Poll::Ready(Waited::TimedOut);
            }
            if self.sleep.is_none() {
                self.sleep = Some(self.clock.sleep_until(deadline));
            }
            if let Some(s) = self.sleep.as_mut() {
                if s.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Waited::TimedOut);
                }
            }
        }
        Poll::Pending
    }
}

impl UsbIpHost {
    /// Connects to `addr`, imports `busid` and reads the device's descriptors. `clock` is the
    /// session's clock (use a real-time one: the server runs on the wall clock).
    pub fn connect(
        addr: SocketAddr,
        busid: &str,
        clock: Rc<dyn Clock>,
    ) -> Result<UsbIpHost, ConnectError> {
        let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
        let mut req = OpHeader::new(OP_REQ_IMPORT, 0).encode().to_vec();
        req.extend_from_slice(&encode_busid(busid)?);
        stream.write_all(&req)?;
        let mut reader = BufReader::with_capacity(256 * 1024, stream.try_clone()?);
        let h = OpHeader::read(&mut reader)?;
        if h.code != OP_REP_IMPORT {
            return Err(ProtocolError::UnknownOp(h.code).into());
        }
        if h.status != 0 {
            return Err(ConnectError::Refused {
                busid: busid.into(),
                status: h.status,
            });
        }
        let record = DeviceRecord::read(&mut reader)?;
        let devid = record.devid();
        let device_descriptor = sync_control_in(
            &mut stream,
            &mut reader,
            devid,
            1,
            SetupPacket::get_device_descriptor(18),
        )
        .map_err(ConnectError::Descriptors)?;
        let head = sync_control_in(
            &mut stream,
            &mut reader,
            devid,
            2,
            SetupPacket::get_config_descriptor(0, 9),
        )
        .map_err(ConnectError::Descriptors)?;
        let total = head
            .get(2..4)
            .map_or(9, |b| u16::from_le_bytes([b[0], b[1]]));
        let config_descriptor = sync_control_in(
            &mut stream,
            &mut reader,
            devid,
            3,
            SetupPacket::get_config_descriptor(0, total),
        )
        .map_err(ConnectError::Descriptors)?;
        stream.set_read_timeout(None)?;
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let reader = std::thread::Builder::new()
            .name("usbip-client-reader".into())
            .spawn(move || reader_loop(reader, st))?;
        let info = DeviceInfo {
            vendor_id: record.id_vendor,
            product_id: record.id_product,
            device_descriptor,
            config_descriptor,
        };
        Ok(UsbIpHost {
            inner: Rc::new(Inner {
                state,
                stream: RefCell::new(stream),
                clock,
                record,
                info,
                next_seq: RefCell::new(4),
                reader: RefCell::new(Some(reader)),
            }),
        })
    }

    /// The device record the server sent in its import reply.
    pub fn record(&self) -> &DeviceRecord {
        &self.inner.record
    }

    fn next_seq(&self) -> u32 {
        let mut n = self.inner.next_seq.borrow_mut();
        let seq = *n;
        *n = n.wrapping_add(1).max(1);
        seq
    }

    fn write(&self, bytes: &[u8]) -> io::Result<()> {
        self.inner.stream.borrow_mut().write_all(bytes)
    }

    fn send_unlink(&self, urb_seq: u32, ep: u8) {
        let seq = self.next_seq();
        lock(&self.inner.state).unlinks.insert(seq, urb_seq);
        let mut buf = Vec::with_capacity(48);
        let cmd = CmdUnlink {
            seqnum: seq,
            devid: self.inner.record.devid(),
            direction: if ep & 0x80 != 0 { DIR_IN } else { DIR_OUT },
            ep: u32::from(ep & 0x0f),
            unlink_seqnum: urb_seq,
        };
        if cmd.write(&mut buf).and_then(|()| self.write(&buf)).is_err() {
            lock(&self.inner.state).unlinks.remove(&seq);
        }
    }

    /// Stops waiting for `seq`: unlinks it unless its reply is already here.
    fn orphan(&self, seq: u32) {
        let ep = {
            let mut st = lock(&self.inner.state);
            let closed = st.closed.is_some();
            let Some(slot) = st.urbs.get_mut(&seq) else {
                return;
            };
            if slot.done.is_some() || slot.unlinked {
                st.urbs.remove(&seq);
                return;
            }
            let already_unlinked = slot.aborted || slot.unlink_sent;
            slot.orphan = true;
            slot.waker = None;
            let ep = slot.ep;
            if closed {
                st.urbs.remove(&seq);
                return;
            }
            if already_unlinked {
                return;
            }
            ep
        };
        self.send_unlink(seq, ep);
    }

    /// Submits one URB and waits for it.
    async fn urb(
        &self,
        ep: u8,
        setup: Option<SetupPacket>,
        in_len: Option<u32>,
        out: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, TransferError> {
        let seq = self.next_seq();
        let is_in = in_len.is_some();
        let len = in_len.unwrap_or(u32::try_from(out.len()).map_err(|_| TransferError::Overflow)?);
        let cmd = CmdSubmit {
            seqnum: seq,
            devid: self.inner.record.devid(),
            direction: if is_in { DIR_IN } else { DIR_OUT },
            ep: u32::from(ep & 0x0f),
            transfer_flags: if is_in { URB_DIR_IN } else { 0 },
            transfer_buffer_length: len,
            start_frame: 0,
            number_of_packets: 0,
            interval: 0,
            setup: setup.map_or([0; 8], |s| s.to_bytes()),
            data: Vec::new(),
        };
        {
            let mut st = lock(&self.inner.state);
            if st.closed.is_some() {
                return Err(TransferError::NoDevice);
            }
            st.urbs.insert(
                seq,
                Slot {
                    ep,
                    in_len,
                    done: None,
                    waker: None,
                    orphan: false,
                    aborted: false,
                    unlinked: false,
                    unlink_sent: false,
                },
            );
        }
        let mut buf = Vec::with_capacity(48 + out.len());
        let written = cmd.write(&mut buf).and_then(|()| {
            if !is_in {
                buf.extend_from_slice(out);
            }
            self.write(&buf)
        });
        if written.is_err() {
            lock(&self.inner.state).urbs.remove(&seq);
            return Err(TransferError::NoDevice);
        }
        let mut guard = UrbGuard {
            host: self,
            seq,
            finished: false,
        };
        let deadline = (timeout != Duration::ZERO).then(|| self.inner.clock.now() + timeout);
        let waited = WaitUrb {
            state: &self.inner.state,
            seq,
            deadline,
            clock: self.inner.clock.as_ref(),
            sleep: None,
        }
        .await;
        match waited {
            Waited::Done(ret) => {
                guard.finished = true;
                status_result(ret.status)?;
                Ok(ret.data)
            }
            Waited::Closed => {
                guard.finished = true;
                lock(&self.inner.state).urbs.remove(&seq);
                Err(TransferError::NoDevice)
            }
            Waited::Aborted => {
                // abort_endpoint already unlinked it.
                guard.finished = true;
                Err(TransferError::Cancelled { actual: 0 })
            }
            Waited::TimedOut | Waited::Unlinked => {
                // As Linux's usb_start_wait_urb kills a timed-out URB and waits for it: unlink
                // it and wait (briefly) for the server's answer, so a completion that crossed
                // the unlink delivers its data instead of losing it.
                {
                    let mut st = lock(&self.inner.state);
                    match st.urbs.get_mut(&seq) {
                        Some(slot) if slot.done.is_none() => slot.unlink_sent = true,
                        _ => {}
                    }
                }
                self.send_unlink(seq, ep);
                let answer = WaitUrb {
                    state: &self.inner.state,
                    seq,
                    deadline: Some(self.inner.clock.now() + UNLINK_GRACE),
                    clock: self.inner.clock.as_ref(),
                    sleep: None,
                }
                .await;
                match answer {
                    Waited::Done(ret) => {
                        guard.finished = true;
                        status_result(ret.status)?;
                        Ok(ret.data)
                    }
                    Waited::Unlinked | Waited::Closed => {
                        guard.finished = true;
                        Err(TransferError::Timeout { actual: 0 })
                    }
                    // Aborted while waiting for the answer: the abort wins, as it does before
                    // the timeout (the driver asked to cancel, and a read that ends as timed out
                    // after its abort looks like a read submitted again). The guard orphans
                    // the slot.
                    Waited::Aborted => Err(TransferError::Cancelled { actual: 0 }),
                    // No answer in time: the guard orphans the slot.
                    Waited::TimedOut => Err(TransferError::Timeout { actual: 0 }),
                }
            }
        }
    }

    /// Unlinks every pending URB on `ep` (all endpoints if `None`); returns how many.
    fn abort(&self, ep: Option<u8>) -> usize {
        let victims: Vec<(u32, u8)> = {
            let mut st = lock(&self.inner.state);
            st.urbs
                .iter_mut()
                .filter(|(_, s)| !s.orphan && !s.aborted && s.done.is_none())
                .filter(|(_, s)| ep.is_none_or(|e| s.ep == e))
                .map(|(seq, s)| {
                    s.aborted = true;
                    if let Some(w) = s.waker.take() {
                        w.wake();
                    }
                    (*seq, s.ep)
                })
                .collect()
        };
        for &(seq, ep) in &victims {
            self.send_unlink(seq, ep);
        }
        victims.len()
    }

    async fn data_in(
        &self,
        ep: u8,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, TransferError> {
        let len = u32::try_from(buf.len()).map_err(|_| TransferError::Overflow)?;
        let data = self.urb(ep | 0x80, None, Some(len), &[], timeout).await?;
        buf[..data.len()].copy_from_slice(&data);
        Ok(data.len())
    }
}

#[async_trait(?Send)]
impl UsbHost for UsbIpHost {
    fn device_info(&self) -> DeviceInfo {
        self.inner.info.clone()
    }

    fn now(&self) -> Instant {
        self.inner.clock.now()
    }

    async fn sleep(&self, duration: Duration) {
        let until = self.inner.clock.now() + duration;
        self.inner.clock.sleep_until(until).await;
    }

    async fn control_in(&self, setup: Setup, timeout: Duration) -> Result<Vec<u8>, TransferError> {
        let mut setup = setup;
        setup.request_type |= hc::DIR_IN;
        self.urb(
            0x80,
            Some(setup),
            Some(u32::from(setup.length)),
            &[],
            timeout,
        )
        .await
    }

    async fn control_out(
        &self,
        setup: Setup,
        data: &[u8],
        timeout: Duration,
    ) -> Result<(), TransferError> {
        let mut setup = setup;
        setup.request_type &= !hc::DIR_IN;
        setup.length = u16::try_from(data.len()).map_err(|_| TransferError::Overflow)?;
        self.urb(0x00, Some(setup), None, data, timeout)
            .await
            .map(|_| ())
    }

    async fn bulk_in(
        &self,
        ep: u8,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, TransferError> {
        self.data_in(ep, buf, timeout).await
    }

    async fn bulk_out(
        &self,
        ep: u8,
        data: &[u8],
        timeout: Duration,
    ) -> Result<usize, TransferError> {
        self.urb(ep & 0x7f, None, None, data, timeout)
            .await
            .map(|_| data.len())
    }

    async fn interrupt_in(
        &self,
        ep: u8,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, TransferError> {
        self.data_in(ep, buf, timeout).await
    }

    async fn clear_halt(&self, ep: u8) -> Result<(), TransferError> {
        let setup = SetupPacket::clear_halt(ep);
        self.urb(0x00, Some(setup), None, &[], Duration::from_secs(1))
            .await
            .map(|_| ())
    }

    async fn reset_device(&self) -> Result<(), TransferError> {
        self.abort(None);
        let setup = SetupPacket {
            request_type: 0x23,
            request: crate::usb::Request::SET_FEATURE,
            value: 4,
            index: 0,
            length: 0,
        };
        self.urb(0x00, Some(setup), None, &[], Duration::from_secs(5))
            .await
            .map(|_| ())
    }

    fn abort_endpoint(&self, ep: u8) {
        self.abort(Some(ep));
    }

    fn pending_transfers(&self) -> u32 {
        let st = lock(&self.inner.state);
        st.urbs.values().filter(|s| !s.orphan).count() as u32
    }
}

/// Reads exactly `n` bytes (a helper for tests of raw peers).
#[doc(hidden)]
pub fn read_n(r: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    r.read_exact(&mut v)?;
    Ok(v)
}
