//! One import, whatever serves it: the loop that reads the peer's commands, hands them to a
//! [`Backend`], writes its replies and keeps the limits, timeouts and shutdown rules, the
//! same for an emulated device ([`super::emulated`]) and a [`UrbBackend`](super::UrbBackend)
//! ([`super::backend`]); and what both share: the buffer of bytes received ([`Inbox`]), the
//! reply buffer ([`Outgoing`]), why a connection ended ([`CloseReason`]) and the capture's URB
//! ids and records. The connection picks the backend; this module knows neither.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration as StdDuration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{Capture, Shared};
use crate::time::Instant;
use crate::usb::hc::{self, SetupPacket};
use crate::usb::usbmon::{self, EventType, TransferType, UsbmonEvent, URB_DIR_IN};
use crate::usb::Request;
use crate::usbip::protocol::{CmdSubmit, Command, ProtocolError, URB_HEADER_LEN};

/// What serves the URBs of one import. [`run`] drives it: every command goes to
/// [`Backend::command`], then [`Backend::advance`] runs what is due, the replies go out,
/// [`Backend::after_write`] runs what waits for them, and the session sleeps until a command,
/// a [`Backend::event`], the idle timeout or the server's stop.
pub(super) trait Backend {
    /// Handles one command of the peer; an error closes the connection.
    fn command(&mut self, cmd: Command) -> Result<(), CloseReason>;
    /// Runs what is due now, before the replies are written.
    fn advance(&mut self);
    /// Runs what waits until the replies are on their way.
    fn after_write(&mut self) {}
    /// The replies not yet written.
    fn out(&mut self) -> &mut Outgoing;
    /// Flushes the capture records written since the last flush.
    fn flush_capture(&mut self);
    /// Whether no URB is pending: the idle timeout runs.
    fn idle(&self) -> bool;
    /// Prepares the wait (sets timers); an error closes the connection.
    fn arm(&mut self) -> Result<(), CloseReason>;
    /// Waits for something of the backend's own (a timer, an answer); cancel-safe, and never
    /// ready when there is nothing to wait for.
    async fn event(&mut self) -> Result<(), CloseReason>;
    /// The import is over: ends the backend's own work, before pending URBs are ended.
    async fn close(&mut self) {}
    /// The peer is gone: pending URBs end without replies (`-ENOENT` in the capture).
    fn drop_pending(&mut self);
    /// The server stops: pending URBs end with replies (`-ESHUTDOWN`).
    fn unlink_all(&mut self);
    /// After the connection: lets the backend finish what it scheduled.
    fn settle(&mut self) {}
}

/// A protocol error from the peer: counted, logged once, and the reason the connection closes.
pub(super) fn protocol_error(shared: &Shared, e: ProtocolError) -> CloseReason {
    match e {
        ProtocolError::Closed => CloseReason::PeerClosed,
        e => {
            shared.protocol_errors.fetch_add(1, Ordering::Relaxed);
            CloseReason::Protocol(e)
        }
    }
}

/// Bytes read from the socket at a time (more when a command needs more).
const READ_CHUNK: usize = 64 * 1024;

/// Bytes received and not yet decoded.
pub(super) struct Inbox {
    buf: Vec<u8>,
    start: usize,
}

impl Inbox {
    pub(super) fn new() -> Inbox {
        Inbox {
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
        }
    }

    pub(super) fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Reads what the socket has (at least one byte, or 0 at the end of the stream), with
    /// room for `want` bytes beyond those pending. Cancel-safe.
    pub(super) async fn fill(&mut self, stream: &mut TcpStream, want: usize) -> io::Result<usize> {
        if self.start > 0 && self.buf.capacity() - self.buf.len() < want.max(READ_CHUNK / 4) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(want.max(READ_CHUNK / 4));
        stream.read_buf(&mut self.buf).await
    }
}

/// Why the server ended a connection: the reason its log line gives.
#[derive(Debug, thiserror::Error)]
pub(super) enum CloseReason {
    /// The peer closed its end between messages.
    #[error("peer closed the connection")]
    PeerClosed,
    /// The peer closed its end inside a message.
    #[error("peer closed the connection in the middle of {0}")]
    PeerClosedIn(&'static str),
    /// A malformed, truncated or unknown message.
    #[error("protocol error: {0}")]
    Protocol(ProtocolError),
    /// Reading from the socket failed.
    #[error("read failed: {0}")]
    Read(io::Error),
    /// Writing to the socket failed.
    #[error("write failed: {0}")]
    Write(io::Error),
    /// The peer did not read what the server wrote in time.
    #[error("the peer left {bytes} bytes unread for {ms} ms")]
    Unread { bytes: usize, ms: u128 },
    /// The device list could not be encoded.
    #[error("cannot encode the device list: {0}")]
    DeviceList(ProtocolError),
    /// The device record of an import could not be encoded.
    #[error("cannot encode the device record")]
    DeviceRecord,
    /// The import was answered with a refusal.
    #[error("import of {busid:?} refused with status {status}")]
    ImportRefused { busid: String, status: u32 },
    /// The device did not enumerate on the server's side.
    #[error("device failed to enumerate: {0}")]
    Enumeration(hc::WireError),
    /// The session's timer could not be created, armed or read.
    #[error("timer failed: {0}")]
    Timer(io::Error),
    /// Too many URBs or buffer bytes outstanding.
    #[error("limit: {urbs} URBs / {bytes} bytes outstanding (at most {max_urbs} / {max_bytes})")]
    Limit {
        urbs: usize,
        bytes: usize,
        max_urbs: usize,
        max_bytes: usize,
    },
    /// No complete operation before the handshake timeout.
    #[error("handshake timeout: no complete operation within {0} ms")]
    HandshakeTimeout(u128),
    /// Nothing pending and nothing received for the idle timeout.
    #[error("idle timeout: nothing pending and nothing received for {0} s")]
    IdleTimeout(u64),
    /// The server is shutting down.
    #[error("server shutting down")]
    Shutdown,
    /// The connection cap needed the slot.
    #[error("closed to make room for a new connection")]
    Evicted,
}

/// How a session's loop ended.
enum End {
    /// The peer went away or broke the protocol: pending URBs are killed.
    Peer(CloseReason),
    /// The server is shutting down: pending URBs complete as unlinked.
    Shutdown,
}

/// The session's loop; see [`Backend`].
pub(super) async fn run<B: Backend>(
    b: &mut B,
    stream: &mut TcpStream,
    inbox: &mut Inbox,
    stop: &mut watch::Receiver<bool>,
    shared: &Shared,
) -> CloseReason {
    let idle = shared.config.idle_timeout;
    let mut last_heard = tokio::time::Instant::now();
    // Commands that arrived with the import reply are decoded before the first read.
    let mut need = URB_HEADER_LEN;
    let end = loop {
        if let Err(why) = decode(b, inbox, &mut need, shared) {
            break End::Peer(why);
        }
        b.advance();
        if !b.out().is_empty() {
            if let Err(why) = b.out().write(stream, shared.config.write_timeout).await {
                if matches!(why, CloseReason::Unread { .. }) {
                    shared.timed_out.fetch_add(1, Ordering::Relaxed);
                }
                break End::Peer(why);
            }
        }
        b.after_write();
        b.flush_capture();
        if let Err(why) = b.arm() {
            break End::Peer(why);
        }
        let idle_at = match idle {
            Some(t) if b.idle() => Some(last_heard + t),
            _ => None,
        };
        let want = need.saturating_sub(inbox.pending().len()).max(1);
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break End::Shutdown,
            r = inbox.fill(stream, want) => match r {
                Ok(0) if inbox.pending().is_empty() => break End::Peer(CloseReason::PeerClosed),
                Ok(0) => break End::Peer(protocol_error(shared, ProtocolError::Truncated {
                    what: "URB command",
                    source: io::ErrorKind::UnexpectedEof.into(),
                })),
                Ok(_) => last_heard = tokio::time::Instant::now(),
                Err(e) => break End::Peer(CloseReason::Read(e)),
            },
            r = b.event() => if let Err(why) = r {
                break End::Peer(why);
            },
            _ = sleep_until_opt(idle_at), if idle_at.is_some() => {
                shared.timed_out.fetch_add(1, Ordering::Relaxed);
                break End::Peer(CloseReason::IdleTimeout(idle.map_or(0, |t| t.as_secs())));
            }
        }
    };
    b.close().await;
    let why = match end {
        End::Peer(why) => {
            b.drop_pending();
            why
        }
        End::Shutdown => {
            b.unlink_all();
            let limit = shared.config.write_timeout.min(StdDuration::from_secs(1));
            let _ = b.out().write(stream, limit).await;
            CloseReason::Shutdown
        }
    };
    b.settle();
    b.flush_capture();
    let _ = stream.shutdown().await;
    why
}

/// Decodes every complete command in `inbox` and hands it to `b`; `need` becomes the length
/// the next command needs. An error closes the connection.
fn decode<B: Backend>(
    b: &mut B,
    inbox: &mut Inbox,
    need: &mut usize,
    shared: &Shared,
) -> Result<(), CloseReason> {
    let limits = shared.config.limits;
    loop {
        let avail = inbox.pending();
        if avail.len() < URB_HEADER_LEN {
            *need = URB_HEADER_LEN;
            return Ok(());
        }
        let mut header = [0u8; URB_HEADER_LEN];
        header.copy_from_slice(&avail[..URB_HEADER_LEN]);
        let len = Command::wire_len(&header, &limits).map_err(|e| protocol_error(shared, e))?;
        if avail.len() < len {
            *need = len;
            return Ok(());
        }
        let cmd =
            Command::read(&mut &avail[..len], &limits).map_err(|e| protocol_error(shared, e))?;
        inbox.consume(len);
        b.command(cmd)?;
    }
}

/// IN data at least this long is written from its own buffer instead of being copied.
pub(super) const VECTORED_MIN: usize = 4096;

/// Data buffers of written replies kept for the next IN transfers, at most.
const SPARE_BUFFERS: usize = 4;
/// A data buffer larger than this is not kept.
const SPARE_MAX_BYTES: usize = 1 << 20;
/// Most buffers one vectored write hands the kernel.
const MAX_IOVECS: usize = 64;

/// Replies encoded and not yet written: small replies back to back in `tail`, large IN data
/// in buffers of their own (each written after `tail[..at]`), so that data is never copied
/// into the reply stream. Data buffers that went out are kept for the next transfers: a
/// buffer reused while warm costs less to fill and to write than a fresh one.
#[derive(Default)]
pub(super) struct Outgoing {
    pub(super) tail: Vec<u8>,
    /// `(at, data)`: `data` goes out after the first `at` bytes of `tail`.
    data: Vec<(usize, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
}

impl Outgoing {
    pub(super) fn is_empty(&self) -> bool {
        self.data.is_empty() && self.tail.is_empty()
    }

    /// Appends a data buffer after what `tail` holds now.
    pub(super) fn push_data(&mut self, data: Vec<u8>) {
        self.data.push((self.tail.len(), data));
    }

    /// A buffer for the next IN transfer: a spare one if there is one.
    pub(super) fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    fn len(&self) -> usize {
        self.tail.len() + self.data.iter().map(|(_, d)| d.len()).sum::<usize>()
    }

    /// Everything to write, in order.
    fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        let mut from = 0;
        let last = self.data.last().map_or(0, |(at, _)| *at);
        self.data
            .iter()
            .flat_map(move |(at, d)| {
                let head = &self.tail[from..*at];
                from = *at;
                [head, d.as_slice()]
            })
            .chain(std::iter::once(&self.tail[last..]))
    }

    /// The bytes from `skip` on, as at most [`MAX_IOVECS`] slices.
    fn slices(&self, mut skip: usize) -> Vec<io::IoSlice<'_>> {
        let mut out = Vec::with_capacity((2 * self.data.len() + 1).min(MAX_IOVECS));
        for piece in self.pieces() {
            if skip >= piece.len() {
                skip -= piece.len();
                continue;
            }
            out.push(io::IoSlice::new(&piece[skip..]));
            skip = 0;
            if out.len() == MAX_IOVECS {
                break;
            }
        }
        out
    }

    /// Forgets what was written, keeping data buffers for reuse.
    fn clear(&mut self) {
        self.tail.clear();
        for (_, mut d) in self.data.drain(..) {
            if self.spare.len() < SPARE_BUFFERS && d.capacity() <= SPARE_MAX_BYTES {
                d.clear();
                self.spare.push(d);
            }
        }
    }

    /// Writes everything with vectored writes within `limit`, and empties itself. What the
    /// socket takes at once goes without a timer; the rest waits for the peer to read, up to
    /// `limit`.
    pub(super) async fn write(
        &mut self,
        stream: &mut TcpStream,
        limit: StdDuration,
    ) -> Result<(), CloseReason> {
        let total = self.len();
        let mut done = 0;
        let r = loop {
            if done == total {
                break Ok(());
            }
            match stream.try_write_vectored(&self.slices(done)) {
                Ok(0) => break Err(CloseReason::Write(io::ErrorKind::WriteZero.into())),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let this = &*self;
                    let rest = async {
                        while done < total {
                            let n = stream.write_vectored(&this.slices(done)).await?;
                            if n == 0 {
                                return Err(io::Error::from(io::ErrorKind::WriteZero));
                            }
                            done += n;
                        }
                        Ok(())
                    };
                    break match tokio::time::timeout(limit, rest).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(CloseReason::Write(e)),
                        Err(_) => Err(CloseReason::Unread {
                            bytes: total,
                            ms: limit.as_millis(),
                        }),
                    };
                }
                Err(e) => break Err(CloseReason::Write(e)),
            }
        };
        self.clear();
        r
    }
}

/// The usbmon URB id of USB/IP URB `seqnum` of connection `conn`: unique within a capture of
/// many devices and clients (as long as fewer than 65536 connections overlap), and never 0,
/// which umockdev reads as "not submitted".
pub(super) fn urb_id(conn: u64, seqnum: u32) -> u64 {
    0x5ca1_0000_0000_0000 | (conn & 0xffff) << 32 | u64::from(seqnum)
}

pub(super) fn is_set_address(s: &SetupPacket) -> bool {
    s.request_type == 0 && s.request == Request::SET_ADDRESS
}

/// What a URB's `C` record repeats from its `S` record.
#[derive(Clone, Copy)]
pub(super) struct Captured {
    pub(super) transfer_type: TransferType,
    pub(super) endpoint: u8,
    pub(super) interval: i32,
    pub(super) flags: u32,
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes one record; a capture that cannot be written is reported in the log (rate
/// limited) and never stops the server.
pub(super) fn write_capture(capture: &Capture, event: &UsbmonEvent<'_>, shared: &Shared) {
    let mut w = capture.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = w.write_event(event) {
        shared.log_limited(&format!("capture write failed: {e}"));
    }
}

/// The capture records of one import: an URB's `S` record when it arrives, its `C` (or `E`)
/// record when it ends, repeating what the `S` record said of it.
pub(super) struct CaptureLog {
    /// The connection's number, part of every URB id.
    conn: u64,
    /// The device number the records carry.
    devnum: u8,
    /// What the `C` record of each URB submitted and not yet ended repeats, by seqnum.
    captured: BTreeMap<u32, Captured>,
    /// Records written since the last flush.
    dirty: bool,
}

impl CaptureLog {
    pub(super) fn new(conn: u64, devnum: u8) -> CaptureLog {
        CaptureLog {
            conn,
            devnum,
            captured: BTreeMap::new(),
            dirty: false,
        }
    }

    /// Writes the `S` record of `cmd`, an URB of `transfer_type` on `endpoint` (with its
    /// direction bit), if there is a capture.
    pub(super) fn submit(
        &mut self,
        shared: &Shared,
        cmd: &CmdSubmit,
        transfer_type: TransferType,
        endpoint: u8,
        now: Instant,
    ) {
        let Some(capture) = &shared.config.capture else {
            return;
        };
        let flags = cmd.transfer_flags | if endpoint & 0x80 != 0 { URB_DIR_IN } else { 0 };
        let ctx = Captured {
            transfer_type,
            endpoint,
            interval: cmd.interval as i32,
            flags,
        };
        self.captured.insert(cmd.seqnum, ctx);
        let event = UsbmonEvent {
            id: urb_id(self.conn, cmd.seqnum),
            event: EventType::Submit,
            transfer_type,
            endpoint,
            device: self.devnum,
            bus: 1,
            setup: (cmd.ep == 0).then_some(cmd.setup),
            at: now,
            status: -usbmon::errno::EINPROGRESS,
            urb_len: cmd.transfer_buffer_length,
            data: &cmd.data,
            interval: ctx.interval,
            start_frame: 0,
            xfer_flags: flags,
            ndesc: 0,
        };
        write_capture(capture, &event, shared);
        self.dirty = true;
    }

    /// Writes the `C` (or `E`) record of URB `seqnum`, if there is a capture and it has the
    /// URB's `S` record.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn end(
        &mut self,
        shared: &Shared,
        seqnum: u32,
        kind: EventType,
        status: i32,
        data: &[u8],
        actual: u32,
        now: Instant,
    ) {
        let Some(capture) = &shared.config.capture else {
            return;
        };
        let Some(ctx) = self.captured.remove(&seqnum) else {
            return;
        };
        let event = UsbmonEvent {
            id: urb_id(self.conn, seqnum),
            event: kind,
            transfer_type: ctx.transfer_type,
            endpoint: ctx.endpoint,
            device: self.devnum,
            bus: 1,
            setup: None,
            at: now,
            status,
            urb_len: actual,
            data: if ctx.endpoint & 0x80 != 0 && kind == EventType::Complete {
                data
            } else {
                &[]
            },
            interval: ctx.interval,
            start_frame: 0,
            xfer_flags: ctx.flags,
            ndesc: 0,
        };
        write_capture(capture, &event, shared);
        self.dirty = true;
    }

    /// Flushes the records written since the last flush.
    pub(super) fn flush(&mut self, shared: &Shared) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        if let Some(capture) = &shared.config.capture {
            let mut w = capture.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = w.flush() {
                shared.log_limited(&format!("capture write failed: {e}"));
            }
        }
    }
}
