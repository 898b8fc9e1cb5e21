//! A recording served over USB/IP: [`ServedRecording`] is the [`UrbBackend`] that lets the
//! USB/IP server export a [`Recording`] beside (or instead of) emulated devices, so that
//! every client of the server (the scanlab libusb-1.0 stand-in and the unmodified programs on
//! it, SANE backends, the kernel's vhci-hcd through `usbip attach`, scanemu's own USB/IP
//! host) reaches the recorded device.
//!
//! Each import gets a fresh [`ReplayHost`] with the replay rules of [`crate::capture::replay`]
//! (matching, NAK after the end, `strict`, recorded interrupt pacing, pending transfers),
//! running on a thread of its own on a [`Sim::realtime_since`] clock that counts from the
//! server's epoch: the replay's notes carry the server's instants, and the recorded pace is
//! kept on the wall clock. The wall clock enters here, at the serve edge; the replay itself
//! only knows the clock it is given. Each URB is one [`ReplayHost::transfer`]; an unlink
//! aborts it. When the import ends, the replay's [`ReplayReport`] goes to
//! [`ServedRecording::reports`].

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use crate::capture::pcap::status_of;
use crate::capture::recording::{Recording, TxKind};
use crate::capture::replay::{ReplayConfig, ReplayHost, ReplayReport, UrbTransfer};
use crate::host::{HostObserver, TransferError, TransferRecord};
use crate::personality::DeviceNote;
use crate::sim::Sim;
use crate::time::Instant;
use crate::usb::speed::Speed;
use crate::usb::usbmon::TransferType;
use crate::usbip::protocol::{errno, RetSubmit, RetUnlink};
use crate::usbip::server::NoteSink;
use crate::usbip::{UrbAnswer, UrbAnswerSink, UrbBackend, UrbRequest, UrbSession};

/// Receives the [`ReplayReport`] of every import of a [`ServedRecording`] when it ends.
pub type ReportSink = Arc<dyn Fn(&ReplayReport) + Send + Sync>;

/// A recording exported by the USB/IP server; see the module documentation.
#[derive(Clone)]
#[non_exhaustive]
pub struct ServedRecording {
    /// The recording.
    pub recording: Recording,
    /// The replay rules (default: not strict).
    pub config: ReplayConfig,
    /// Where each import's report goes (default: nowhere).
    pub reports: Option<ReportSink>,
}

impl ServedRecording {
    /// Serves `recording` with the default rules.
    pub fn new(recording: Recording) -> ServedRecording {
        ServedRecording {
            recording,
            config: ReplayConfig::default(),
            reports: None,
        }
    }
}

impl UrbBackend for ServedRecording {
    fn descriptors(&self) -> (Vec<u8>, Vec<u8>) {
        let info = self.recording.meta.device_info();
        (info.device_descriptor, info.config_descriptor)
    }

    fn speed(&self) -> Speed {
        self.recording.meta.speed
    }

    fn open(
        &self,
        epoch: std::time::Instant,
        notes: Option<NoteSink>,
        answer: UrbAnswerSink,
    ) -> Box<dyn UrbSession> {
        let mailbox = Arc::new(Mailbox::default());
        let worker = Worker {
            recording: self.recording.clone(),
            config: self.config,
            reports: self.reports.clone(),
            epoch,
            notes,
            answer,
            mailbox: mailbox.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("usbip-replay".into())
            .spawn(move || worker.run());
        match thread {
            Ok(t) => Box::new(Session {
                mailbox,
                thread: Some(t),
            }),
            // No thread, no answers: the client's URBs stay pending until it gives up, as
            // on a device that does not answer.
            Err(_) => Box::new(Session {
                mailbox,
                thread: None,
            }),
        }
    }
}

/// What the connection hands the replay's thread.
enum Message {
    Submit(UrbRequest),
    Unlink { seqnum: u32, target: u32 },
    Close,
}

/// Messages for the replay's thread, and the waker of the task that reads them.
#[derive(Default)]
struct Mailbox {
    inner: Mutex<(VecDeque<Message>, Option<Waker>)>,
}

impl Mailbox {
    fn send(&self, m: Message) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.0.push_back(m);
        if let Some(w) = inner.1.take() {
            w.wake();
        }
    }

    /// Every message that has arrived, once there is at least one.
    async fn recv(&self) -> Vec<Message> {
        std::future::poll_fn(|cx| {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if inner.0.is_empty() {
                inner.1 = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(inner.0.drain(..).collect())
            }
        })
        .await
    }
}

struct Session {
    mailbox: Arc<Mailbox>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UrbSession for Session {
    fn submit(&mut self, urb: UrbRequest) {
        self.mailbox.send(Message::Submit(urb));
    }

    fn unlink(&mut self, seqnum: u32, target: u32) {
        self.mailbox.send(Message::Unlink { seqnum, target });
    }

    fn close(mut self: Box<Self>) {
        self.mailbox.send(Message::Close);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Hands the replay's device notes to the server's note sink.
struct NoteForward(NoteSink);

impl HostObserver for NoteForward {
    fn transfer(&self, _: &TransferRecord<'_>) {}

    fn device(&self, note: &DeviceNote) {
        (self.0)(note)
    }
}

/// The replay's thread: one [`ReplayHost`] on a real-time [`Sim`].
struct Worker {
    recording: Recording,
    config: ReplayConfig,
    reports: Option<ReportSink>,
    epoch: std::time::Instant,
    notes: Option<NoteSink>,
    answer: UrbAnswerSink,
    mailbox: Arc<Mailbox>,
}

impl Worker {
    fn run(self) {
        let Worker {
            recording,
            config,
            reports,
            epoch,
            notes,
            answer,
            mailbox,
        } = self;
        let sim = Sim::realtime_since(epoch);
        let host = ReplayHost::with_config(recording, Rc::new(sim.clone()), config);
        if let Some(sink) = notes {
            host.set_note_observer(Rc::new(NoteForward(sink)));
        }
        // Messages come from another thread: time never stands still waiting for them, and a
        // quiet client is no stall.
        let _external = sim.external_wait();
        let answer: Rc<UrbAnswerSink> = Rc::new(answer);
        let main = {
            let (sim, host) = (sim.clone(), host.clone());
            async move {
                // URBs in flight, and the CMD_UNLINK that names each one unlinked.
                let live: Rc<RefCell<BTreeSet<u32>>> = Rc::default();
                let unlinked: Rc<RefCell<BTreeMap<u32, u32>>> = Rc::default();
                loop {
                    for m in mailbox.recv().await {
                        match m {
                            Message::Submit(urb) => {
                                live.borrow_mut().insert(urb.seqnum);
                                let (host, answer) = (host.clone(), answer.clone());
                                let (live, unlinked) = (live.clone(), unlinked.clone());
                                sim.spawn(async move {
                                    let seqnum = urb.seqnum;
                                    let ret = transfer(&host, urb).await;
                                    live.borrow_mut().remove(&seqnum);
                                    let unlink = unlinked.borrow_mut().remove(&seqnum);
                                    match unlink {
                                        // The unlink stopped it: no RET_SUBMIT.
                                        Some(unlink) if ret.status == -errno::ESHUTDOWN => {
                                            answer(UrbAnswer::Unlink(RetUnlink {
                                                seqnum: unlink,
                                                status: -errno::ECONNRESET,
                                            }))
                                        }
                                        // It completed before the unlink could stop it.
                                        Some(unlink) => {
                                            answer(UrbAnswer::Submit(ret));
                                            answer(UrbAnswer::Unlink(RetUnlink {
                                                seqnum: unlink,
                                                status: 0,
                                            }));
                                        }
                                        None => answer(UrbAnswer::Submit(ret)),
                                    }
                                });
                            }
                            Message::Unlink { seqnum, target } => {
                                if live.borrow().contains(&target) {
                                    unlinked.borrow_mut().insert(target, seqnum);
                                    host.unlink(u64::from(target));
                                } else {
                                    answer(UrbAnswer::Unlink(RetUnlink { seqnum, status: 0 }));
                                }
                            }
                            Message::Close => return,
                        }
                    }
                }
            }
        };
        // The replay lasts as long as the import: no time limit of its own.
        let _ = sim.block_on(main, Instant::from_micros(u64::MAX / 4));
        if let Some(r) = reports {
            r(&host.report());
        }
    }
}

/// Makes `urb` on the replay and says how it ended, as the Linux stub would.
async fn transfer(host: &ReplayHost, urb: UrbRequest) -> RetSubmit {
    let seqnum = urb.seqnum;
    let is_in = urb.endpoint & 0x80 != 0;
    let out_len = urb.data.len() as u32;
    let port_reset = urb
        .setup
        .is_some_and(|s| s.request_type == 0x23 && s.request == 3 && s.value == 4);
    let (result, data) = if port_reset {
        use crate::host::UsbHost;
        (host.reset_device().await, Vec::new())
    } else {
        let kind = match urb.transfer_type {
            TransferType::Control => TxKind::Control,
            TransferType::Interrupt => TxKind::Interrupt,
            TransferType::Bulk | TransferType::Isochronous => TxKind::Bulk,
        };
        let length = urb.length;
        let transfer = UrbTransfer {
            kind,
            ep: urb.endpoint,
            setup: urb.setup.map(Into::into),
            length,
            out: urb.data,
        };
        host.transfer(u64::from(seqnum), transfer).await
    };
    let status = match &result {
        Ok(()) => 0,
        // Aborted by a device reset, not by the client: the stub says the device went away.
        Err(TransferError::Cancelled { .. }) => -errno::ESHUTDOWN,
        Err(e) => status_of(e),
    };
    let actual = match (is_in, &result) {
        (true, _) => data.len() as u32,
        (false, Ok(())) => out_len,
        (false, Err(_)) => 0,
    };
    RetSubmit {
        seqnum,
        status,
        actual_length: actual,
        data: if is_in { data } else { Vec::new() },
    }
}
