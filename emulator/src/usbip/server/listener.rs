//! The accept loop: the connection cap, evictions of connections still in their handshake,
//! and the backoff when the process runs out of descriptors.

use std::io::{self};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::connection::connection;
use super::Shared;

/// A live connection as the accept loop sees it.
pub(super) struct ConnEntry {
    pub(super) imported: bool,
    /// Already told to close (it has not finished yet): not chosen again.
    pub(super) evicting: bool,
    pub(super) evict: Arc<Notify>,
}

impl ConnEntry {
    /// Tells the connection to close; false if it holds a device or was already told.
    pub(super) fn evict(&mut self) -> bool {
        if self.imported || self.evicting {
            return false;
        }
        self.evicting = true;
        self.evict.notify_one();
        true
    }
}

/// True for accept errors that mean "out of descriptors or memory": retrying at once spins.
fn is_resource_exhaustion(e: &io::Error) -> bool {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOBUFS: i32 = 105;
    const ENOMEM: i32 = 12;
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}

/// Closes the oldest connection that has not imported a device; false if there is none.
fn evict_oldest_handshake(shared: &Shared) -> bool {
    let mut conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
    // One at a time: a connection already told to close frees its descriptor shortly.
    if conns.values().any(|c| c.evicting) {
        return false;
    }
    let evicted = conns.values_mut().any(ConnEntry::evict);
    if evicted {
        shared.evicted.fetch_add(1, Ordering::Relaxed);
    }
    evicted
}

pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let mut next_id = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    let mut backoff = StdDuration::ZERO;
    let mut exhausted_since_log = 0u64;
    let mut last_exhaustion_log: Option<std::time::Instant> = None;
    loop {
        // Reap finished connection tasks so the set stays as small as the live connections.
        while tasks.try_join_next().is_some() {}
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                shared.accept_errors.fetch_add(1, Ordering::Relaxed);
                if is_resource_exhaustion(&e) {
                    exhausted_since_log += 1;
                    let due = last_exhaustion_log
                        .is_none_or(|t| t.elapsed() >= StdDuration::from_secs(5));
                    if due {
                        shared.log(&format!(
                            "accept failed: {e}; backing off ({exhausted_since_log} failures since the last line)"
                        ));
                        exhausted_since_log = 0;
                        last_exhaustion_log = Some(std::time::Instant::now());
                    }
                    evict_oldest_handshake(&shared);
                    backoff = (backoff * 2)
                        .clamp(StdDuration::from_millis(5), StdDuration::from_millis(500));
                } else {
                    shared.log_limited(&format!("accept failed: {e}"));
                    backoff = StdDuration::from_millis(1);
                }
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                continue;
            }
        };
        backoff = StdDuration::ZERO;
        next_id += 1;
        let id = next_id;
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let evict = Arc::new(Notify::new());
        {
            let mut conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
            // Connections already told to close are leaving: they do not hold a slot.
            let live = conns.values().filter(|c| !c.evicting).count();
            if live >= shared.config.max_connections.max(1) {
                match conns.values_mut().any(ConnEntry::evict) {
                    true => {
                        shared.evicted.fetch_add(1, Ordering::Relaxed);
                    }
                    false => {
                        drop(conns);
                        shared.refused.fetch_add(1, Ordering::Relaxed);
                        shared.log_limited(&format!(
                            "connection {id} from {peer} refused: {} connections hold devices",
                            shared.config.max_connections
                        ));
                        drop(stream);
                        continue;
                    }
                }
            }
            conns.insert(
                id,
                ConnEntry {
                    imported: false,
                    evicting: false,
                    evict: evict.clone(),
                },
            );
        }
        let s = shared.clone();
        tasks.spawn(async move {
            let _entry = ConnGuard { shared: &s, id };
            s.log_limited(&format!("connection {id} from {peer}"));
            let why = connection(stream, &s, id, evict).await;
            s.log_limited(&format!("connection {id} closed: {why}"));
        });
    }
    // Sessions see the stop too: wait for them to complete their URBs and close.
    while tasks.join_next().await.is_some() {}
}

/// Removes a connection from the registry when its task ends, however it ends.
struct ConnGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut c) = self.shared.conns.lock() {
            c.remove(&self.id);
        }
    }
}
