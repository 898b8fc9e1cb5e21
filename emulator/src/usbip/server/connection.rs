//! One connection from accept to close: its handshake (device list, import), the buffer of
//! bytes received ([`Inbox`]), and why it ended ([`CloseReason`]).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};

use super::session::run_session;
use super::Shared;
use crate::usb::hc::{self};
use crate::usbip::protocol::{
    encode_devlist, read_busid, OpHeader, ProtocolError, BUSID_LEN, OP_HEADER_LEN, OP_REP_IMPORT,
    OP_REQ_DEVLIST, OP_REQ_IMPORT, ST_DEV_BUSY, ST_DEV_ERR, ST_NODEV, ST_OK,
};

/// Releases the importer slot of a device when the session ends, however it ends.
struct ImportGuard<'a>(&'a AtomicBool);

impl Drop for ImportGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

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

/// Why reading a message failed.
enum ReadEnd {
    Closed(CloseReason),
    Stopped,
    Evicted,
    TimedOut,
}

/// Fills `inbox` until it holds `n` bytes, within `deadline`, giving up on stop or eviction.
async fn read_at_least(
    stream: &mut TcpStream,
    inbox: &mut Inbox,
    n: usize,
    deadline: tokio::time::Instant,
    stop: &mut watch::Receiver<bool>,
    evict: &Notify,
    what: &'static str,
) -> Result<(), ReadEnd> {
    while inbox.pending().len() < n {
        let want = n - inbox.pending().len();
        let r = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return Err(ReadEnd::Stopped),
            _ = evict.notified() => return Err(ReadEnd::Evicted),
            _ = tokio::time::sleep_until(deadline) => return Err(ReadEnd::TimedOut),
            r = inbox.fill(stream, want) => r,
        };
        match r {
            Ok(0) if inbox.pending().is_empty() => {
                return Err(ReadEnd::Closed(CloseReason::PeerClosed))
            }
            Ok(0) => return Err(ReadEnd::Closed(CloseReason::PeerClosedIn(what))),
            Ok(_) => {}
            Err(e) => return Err(ReadEnd::Closed(CloseReason::Read(e))),
        }
    }
    Ok(())
}

async fn write_within(
    stream: &mut TcpStream,
    bytes: &[u8],
    limit: StdDuration,
) -> Result<(), CloseReason> {
    match tokio::time::timeout(limit, stream.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(CloseReason::Write(e)),
        Err(_) => Err(CloseReason::Unread {
            bytes: bytes.len(),
            ms: limit.as_millis(),
        }),
    }
}

/// Serves one connection until it closes; returns why it closed.
pub(super) async fn connection(
    mut stream: TcpStream,
    shared: &Shared,
    id: u64,
    evict: Arc<Notify>,
) -> CloseReason {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(StdDuration::from_secs(30))
        .with_interval(StdDuration::from_secs(10))
        .with_retries(3);
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    let mut stop = shared.stop.subscribe();
    let mut inbox = Inbox::new();
    let config = &shared.config;
    loop {
        let deadline = tokio::time::Instant::now() + config.handshake_timeout;
        let r = read_at_least(
            &mut stream,
            &mut inbox,
            OP_HEADER_LEN,
            deadline,
            &mut stop,
            &evict,
            "an operation",
        )
        .await;
        if let Err(end) = r {
            return handshake_end(shared, end);
        }
        let mut b = [0u8; OP_HEADER_LEN];
        b.copy_from_slice(&inbox.pending()[..OP_HEADER_LEN]);
        let header = match OpHeader::decode(&b) {
            Ok(h) => h,
            Err(e) => return protocol_error(shared, e),
        };
        match header.code {
            OP_REQ_DEVLIST => {
                inbox.consume(OP_HEADER_LEN);
                let reply = match encode_devlist(&shared.exports) {
                    Ok(r) => r,
                    Err(e) => return CloseReason::DeviceList(e),
                };
                if let Err(e) = write_within(&mut stream, &reply, config.handshake_timeout).await {
                    return e;
                }
            }
            OP_REQ_IMPORT => {
                let r = read_at_least(
                    &mut stream,
                    &mut inbox,
                    OP_HEADER_LEN + BUSID_LEN,
                    deadline,
                    &mut stop,
                    &evict,
                    "an import request",
                )
                .await;
                if let Err(end) = r {
                    return handshake_end(shared, end);
                }
                let busid = match read_busid(&mut &inbox.pending()[OP_HEADER_LEN..]) {
                    Ok(b) => b,
                    Err(e) => return protocol_error(shared, e),
                };
                inbox.consume(OP_HEADER_LEN + BUSID_LEN);
                let index = shared.exports.iter().position(|e| e.record.busid == busid);
                let status = match index {
                    None => ST_NODEV,
                    Some(i) => match shared.taken[i].compare_exchange(
                        false,
                        true,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    ) {
                        Ok(_) => ST_OK,
                        Err(_) => ST_DEV_BUSY,
                    },
                };
                let mut reply = OpHeader::new(OP_REP_IMPORT, status).encode().to_vec();
                let Some(index) = index.filter(|_| status == ST_OK) else {
                    let _ = write_within(&mut stream, &reply, config.handshake_timeout).await;
                    return CloseReason::ImportRefused { busid, status };
                };
                let guard = ImportGuard(&shared.taken[index]);
                let export = &shared.exports[index];
                let Ok(record) = export.record.encode() else {
                    let refused = OpHeader::new(OP_REP_IMPORT, ST_DEV_ERR).encode();
                    let _ = write_within(&mut stream, &refused, config.handshake_timeout).await;
                    return CloseReason::DeviceRecord;
                };
                reply.extend_from_slice(&record);
                // An importer from now on, before the peer can read the reply: a connection it
                // opens next must not find this one still evictable at the cap.
                if let Ok(mut conns) = shared.conns.lock() {
                    if let Some(c) = conns.get_mut(&id) {
                        c.imported = true;
                    }
                }
                if let Err(e) = write_within(&mut stream, &reply, config.handshake_timeout).await {
                    return e;
                }
                shared.imports.fetch_add(1, Ordering::Relaxed);
                shared.log_limited(&format!("connection {id}: device {busid} imported"));
                let why = run_session(stream, inbox, stop, shared, index, id).await;
                drop(guard);
                return why;
            }
            other => return protocol_error(shared, ProtocolError::UnknownOp(other)),
        }
    }
}

fn handshake_end(shared: &Shared, end: ReadEnd) -> CloseReason {
    match end {
        ReadEnd::Closed(why) => why,
        ReadEnd::Stopped => CloseReason::Shutdown,
        ReadEnd::Evicted => CloseReason::Evicted,
        ReadEnd::TimedOut => {
            shared.timed_out.fetch_add(1, Ordering::Relaxed);
            CloseReason::HandshakeTimeout(shared.config.handshake_timeout.as_millis())
        }
    }
}
