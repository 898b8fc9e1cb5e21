//! One connection from accept to close: its handshake (device list, import), then the session
//! of the export it imported, on the backend that export has (an emulated device or a
//! [`UrbBackend`](super::UrbBackend)).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};

use super::session::{self, protocol_error, CloseReason, Inbox};
use super::Shared;
use super::{backend, emulated};
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

/// Serves export `index` to connection `conn` until it closes; returns why it closed.
pub(super) async fn run_session(
    mut stream: TcpStream,
    mut inbox: Inbox,
    mut stop: watch::Receiver<bool>,
    shared: &Shared,
    index: usize,
    conn: u64,
) -> CloseReason {
    match &shared.config.devices[index].backend {
        Some(backend) => {
            let mut b = backend::open(shared, index, conn, backend.as_ref());
            session::run(&mut b, &mut stream, &mut inbox, &mut stop, shared).await
        }
        None => match emulated::open(shared, index, conn) {
            Ok(mut b) => session::run(&mut b, &mut stream, &mut inbox, &mut stop, shared).await,
            Err(why) => why,
        },
    }
}
