//! An imported [`UrbBackend`] device: URBs handed to the backend's session, its answers (from
//! any thread) back to the peer.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::session::{is_set_address, Backend, CaptureLog, CloseReason, Outgoing};
use super::{Shared, UrbAnswer, UrbBackend, UrbRequest, UrbSession};
use crate::usb::descriptor;
use crate::usb::descriptor_type;
use crate::usb::usbmon::{EventType, TransferType};
use crate::usbip::protocol::{errno, CmdSubmit, Command, RetSubmit, RetUnlink};

/// The transfer type of each endpoint a configuration descriptor declares.
fn endpoint_types(config: &[u8]) -> BTreeMap<u8, TransferType> {
    descriptor::walk(config)
        .filter(|d| d[1] == descriptor_type::ENDPOINT && d.len() >= 4)
        .map(|d| {
            let kind = match d[3] & 0x03 {
                0x01 => TransferType::Isochronous,
                0x03 => TransferType::Interrupt,
                _ => TransferType::Bulk,
            };
            (d[2], kind)
        })
        .collect()
}

/// An URB of a backend session, submitted and not yet answered.
struct BackendUrb {
    bytes: usize,
}

/// One import of a [`UrbBackend`] device: the connection's commands go to the backend's
/// session, its answers back to the peer (and the capture), with the limits, timeouts and
/// shutdown rules of an emulated device's session.
pub(super) struct BackendSession<'a> {
    shared: &'a Shared,
    devid: u32,
    types: BTreeMap<u8, TransferType>,
    /// The backend's session of this import, until it is closed.
    session: Option<Box<dyn UrbSession>>,
    /// The backend's answers, from any thread.
    answers: tokio::sync::mpsc::UnboundedReceiver<UrbAnswer>,
    urbs: BTreeMap<u32, BackendUrb>,
    /// CMD_UNLINK sequence numbers sent to the backend, with the URB each names.
    unlinks: BTreeMap<u32, u32>,
    pending_bytes: usize,
    out: Outgoing,
    capture: CaptureLog,
}

/// Opens `backend`'s session for export `index` and connection `conn`.
pub(super) fn open<'a>(
    shared: &'a Shared,
    index: usize,
    conn: u64,
    backend: &dyn UrbBackend,
) -> BackendSession<'a> {
    let spec = &shared.config.devices[index];
    let record = &shared.exports[index].record;
    let (tx, answers) = tokio::sync::mpsc::unbounded_channel::<UrbAnswer>();
    let session = backend.open(
        shared.epoch,
        spec.notes.clone(),
        Box::new(move |a| {
            // The session is over when nobody receives: the answer is of no use then.
            let _ = tx.send(a);
        }),
    );
    BackendSession {
        shared,
        devid: record.devid(),
        types: endpoint_types(&backend.descriptors().1),
        session: Some(session),
        answers,
        urbs: BTreeMap::new(),
        unlinks: BTreeMap::new(),
        pending_bytes: 0,
        out: Outgoing::default(),
        capture: CaptureLog::new(conn, u8::try_from(record.devnum).unwrap_or(u8::MAX)),
    }
}

impl Backend for BackendSession<'_> {
    fn command(&mut self, cmd: Command) -> Result<(), CloseReason> {
        match cmd {
            Command::Submit(s) => self.submit(s)?,
            Command::Unlink(u) => {
                let session = self.session.as_mut();
                match session.filter(|_| self.urbs.contains_key(&u.unlink_seqnum)) {
                    Some(session) => {
                        self.unlinks.insert(u.seqnum, u.unlink_seqnum);
                        session.unlink(u.seqnum, u.unlink_seqnum);
                    }
                    None => {
                        // Writing to a Vec cannot fail.
                        let _ = RetUnlink {
                            seqnum: u.seqnum,
                            status: 0,
                        }
                        .write(&mut self.out.tail);
                    }
                }
            }
        }
        Ok(())
    }

    /// Takes the answers that arrived.
    fn advance(&mut self) {
        while let Ok(a) = self.answers.try_recv() {
            self.answer(a);
        }
    }

    fn out(&mut self) -> &mut Outgoing {
        &mut self.out
    }

    fn flush_capture(&mut self) {
        self.capture.flush(self.shared);
    }

    fn idle(&self) -> bool {
        self.urbs.is_empty()
    }

    fn arm(&mut self) -> Result<(), CloseReason> {
        Ok(())
    }

    /// The backend's next answer.
    async fn event(&mut self) -> Result<(), CloseReason> {
        match self.answers.recv().await {
            Some(a) => self.answer(a),
            // Nobody answers any more: nothing to wait for.
            None => std::future::pending().await,
        }
        Ok(())
    }

    /// The backend's work ends before the session does: its notes and reports are complete
    /// when the import is over.
    async fn close(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = tokio::task::spawn_blocking(move || session.close()).await;
        }
    }

    fn drop_pending(&mut self) {
        self.end_pending(-errno::ENOENT, false);
    }

    fn unlink_all(&mut self) {
        self.end_pending(-errno::ESHUTDOWN, true);
    }
}

impl BackendSession<'_> {
    fn submit(&mut self, cmd: CmdSubmit) -> Result<(), CloseReason> {
        let (max_urbs, max_bytes) = (
            self.shared.config.max_pending_urbs,
            self.shared.config.max_pending_bytes,
        );
        let bytes = cmd.transfer_buffer_length as usize;
        if self.urbs.len() + 1 > max_urbs || self.pending_bytes + bytes > max_bytes {
            self.shared.protocol_errors.fetch_add(1, Ordering::Relaxed);
            return Err(CloseReason::Limit {
                urbs: self.urbs.len() + 1,
                bytes: self.pending_bytes + bytes,
                max_urbs,
                max_bytes,
            });
        }
        let now = self.shared.now();
        let setup = (cmd.ep == 0).then(|| cmd.setup_packet());
        let endpoint = match setup {
            Some(s) => s.request_type & 0x80,
            None if cmd.is_in() => 0x80 | cmd.ep as u8,
            None => cmd.ep as u8,
        };
        let transfer_type = match setup {
            Some(_) => TransferType::Control,
            None => self
                .types
                .get(&endpoint)
                .copied()
                .unwrap_or(TransferType::Bulk),
        };
        self.capture
            .submit(self.shared, &cmd, transfer_type, endpoint, now);
        self.urbs.insert(cmd.seqnum, BackendUrb { bytes });
        self.pending_bytes += bytes;
        if cmd.devid != self.devid {
            self.capture.end(
                self.shared,
                cmd.seqnum,
                EventType::Error,
                -errno::ENODEV,
                &[],
                0,
                now,
            );
            self.finish(RetSubmit {
                seqnum: cmd.seqnum,
                status: -errno::ENODEV,
                actual_length: 0,
                data: Vec::new(),
            });
            return Ok(());
        }
        if setup.is_some_and(|s| is_set_address(&s)) {
            // vhci-hcd never forwards it; the device keeps its address.
            self.capture
                .end(self.shared, cmd.seqnum, EventType::Complete, 0, &[], 0, now);
            self.finish(RetSubmit {
                seqnum: cmd.seqnum,
                status: 0,
                actual_length: 0,
                data: Vec::new(),
            });
            return Ok(());
        }
        let Some(session) = self.session.as_mut() else {
            return Ok(());
        };
        session.submit(UrbRequest {
            seqnum: cmd.seqnum,
            transfer_type,
            endpoint,
            setup,
            length: cmd.transfer_buffer_length,
            data: cmd.data,
        });
        Ok(())
    }

    /// An answer of the backend: the URB's reply to the peer, and its `C` record.
    fn answer(&mut self, a: UrbAnswer) {
        let now = self.shared.now();
        match a {
            UrbAnswer::Submit(ret) => {
                if !self.urbs.contains_key(&ret.seqnum) {
                    return;
                }
                self.capture.end(
                    self.shared,
                    ret.seqnum,
                    EventType::Complete,
                    ret.status,
                    &ret.data,
                    ret.actual_length,
                    now,
                );
                self.finish(ret);
            }
            UrbAnswer::Unlink(ret) => {
                let target = self.unlinks.remove(&ret.seqnum);
                if let Some(target) = target.filter(|_| ret.status != 0) {
                    if let Some(urb) = self.urbs.remove(&target) {
                        self.pending_bytes = self.pending_bytes.saturating_sub(urb.bytes);
                    }
                    self.capture.end(
                        self.shared,
                        target,
                        EventType::Complete,
                        ret.status,
                        &[],
                        0,
                        now,
                    );
                }
                // Writing to a Vec cannot fail.
                let _ = ret.write(&mut self.out.tail);
            }
        }
    }

    /// Sends `ret` and forgets its URB.
    fn finish(&mut self, ret: RetSubmit) {
        if let Some(urb) = self.urbs.remove(&ret.seqnum) {
            self.pending_bytes = self.pending_bytes.saturating_sub(urb.bytes);
        }
        // Writing to a Vec cannot fail.
        let _ = ret.write(&mut self.out.tail);
    }

    /// The import is over: every URB still pending ends with `status` in the capture, and
    /// (`send`) in a reply to the peer.
    fn end_pending(&mut self, status: i32, send: bool) {
        let now = self.shared.now();
        for seqnum in std::mem::take(&mut self.urbs).into_keys() {
            self.capture.end(
                self.shared,
                seqnum,
                EventType::Complete,
                status,
                &[],
                0,
                now,
            );
            if send {
                let _ = RetSubmit {
                    seqnum,
                    status,
                    actual_length: 0,
                    data: Vec::new(),
                }
                .write(&mut self.out.tail);
            }
        }
        self.pending_bytes = 0;
    }
}
