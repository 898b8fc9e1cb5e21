//! Playback: a recording's host side, made again against any [`UsbHost`] and compared.
//!
//! [`play`] is the driver that does exactly what the recorded host did: it checks the device
//! and configuration descriptors the host reports against the recorded ones, then makes every
//! recorded transfer and compares each answer with the recorded one byte for byte. Transfers
//! overlap as they did on the recorded bus: before waiting for a transfer's answer, every
//! transfer submitted before that answer came is on its way (an interrupt IN pending while
//! control requests go by), submitted in the recorded order; answers are compared in
//! completion order. [`PlaybackOptions::overlap`] off makes them one at a time instead. Run against a [`ReplayHost`] it checks the
//! replay personality; against the rusb host under `umockdev-run` it checks that a recording's
//! `capture.pcap` replays into an unmodified libusb program (`rusb-play`); over USB/IP it
//! checks the served replay.
//!
//! What counts as the same answer: the same result (ok, stall, ...), and for IN transfers the
//! same bytes. A transfer recorded as never completing (pending at the end of the capture,
//! cancelled or timed out) is made with a short timeout and must not complete either. What
//! the [`UsbHost`] API cannot express is skipped and counted: aborts (the host's own act),
//! interrupt OUT transfers, control transfers whose SETUP packet the capture lacks.
//!
//! [`ReplayHost`]: crate::capture::replay::ReplayHost

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use crate::capture::recording::{to_hex, Recording, Transaction, TxKind, TxResult};
use crate::capture::replay::describe_transaction;
use crate::host::{Setup, TransferError, UsbHost};
use crate::time::Duration;

/// How [`play`] waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlaybackOptions {
    /// Added to each transfer's recorded duration (or the time left until its recorded
    /// completion, if later) to make its timeout (default 2 s).
    pub slack: Duration,
    /// How long a transfer recorded as never completing is given before its timeout
    /// (default 200 ms).
    pub no_answer_wait: Duration,
    /// Transfers overlap as on the recorded bus (default true); false makes them one at a
    /// time in completion order, which is what umockdev's replay needs: it skips a standard
    /// control request of its capture that the program has not submitted yet whenever another
    /// transfer is waiting, so a program must never have a transfer waiting in between.
    pub overlap: bool,
}

impl PlaybackOptions {
    /// The defaults, one transfer at a time (see [`PlaybackOptions::overlap`]).
    pub fn sequential() -> PlaybackOptions {
        PlaybackOptions {
            overlap: false,
            ..PlaybackOptions::default()
        }
    }
}

impl Default for PlaybackOptions {
    fn default() -> Self {
        PlaybackOptions {
            slack: Duration::from_secs(2),
            no_answer_wait: Duration::from_millis(200),
            overlap: true,
        }
    }
}

/// What [`play`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Playback {
    /// Transfers made and found equal.
    pub equal: usize,
    /// Bytes the IN transfers among them returned.
    pub bytes_in: usize,
    /// Transactions not made, with why.
    pub skipped: Vec<(u64, &'static str)>,
}

/// The first difference [`play`] found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlaybackError {
    /// The host reports other descriptors than the recording holds.
    #[error("{which} descriptor differs: recorded {recorded}, host reports {reported}")]
    Descriptor {
        /// `device` or `configuration`.
        which: &'static str,
        /// Recorded bytes, hex.
        recorded: String,
        /// Reported bytes, hex.
        reported: String,
    },
    /// A transfer's answer differs from the recorded one.
    #[error("transaction #{seq} ({transaction}): recorded {recorded}, got {got}")]
    Answer {
        /// The transaction's `seq`.
        seq: u64,
        /// The transaction, described.
        transaction: String,
        /// The recorded answer.
        recorded: String,
        /// The answer the host gave.
        got: String,
    },
}

/// An answer in words: `ok 8 bytes 0001…`, `stall`, `no answer (timeout)`.
fn answer_text(result: TxResult, data: &[u8]) -> String {
    let shown = to_hex(&data[..data.len().min(16)]);
    let more = if data.len() > 16 { "…" } else { "" };
    match result {
        TxResult::Ok if data.is_empty() => "ok".into(),
        TxResult::Ok => format!("ok {} bytes {shown}{more}", data.len()),
        TxResult::Pending => "no answer".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// True for results that mean the device never answered.
fn no_answer(result: TxResult) -> bool {
    matches!(
        result,
        TxResult::Pending | TxResult::Cancelled | TxResult::Timeout
    )
}

/// Makes the recorded transfers against `host` and compares the answers. See the module
/// documentation.
pub async fn play(
    host: &dyn UsbHost,
    recording: &Recording,
    options: PlaybackOptions,
) -> Result<Playback, PlaybackError> {
    let recorded = recording.meta.device_info();
    let reported = host.device_info();
    for (which, want, got) in [
        (
            "device",
            &recorded.device_descriptor,
            &reported.device_descriptor,
        ),
        (
            "configuration",
            &recorded.config_descriptor,
            &reported.config_descriptor,
        ),
    ] {
        if !want.is_empty() && want != got {
            return Err(PlaybackError::Descriptor {
                which,
                recorded: to_hex(want),
                reported: to_hex(got),
            });
        }
    }
    let txs = &recording.transactions;
    let mut done = Playback::default();
    let mut by_submission: Vec<usize> = (0..txs.len()).collect();
    by_submission.sort_by_key(|&i| (txs[i].submitted_us, txs[i].seq));
    let mut next = 0;
    let mut transfers = Transfers::default();
    for (i, t) in txs.iter().enumerate() {
        if !can_make(t) {
            done.skipped.push((t.seq, skip_reason(t)));
            continue;
        }
        // Everything submitted before this transfer completed is on its way first, as on the
        // recorded bus: an interrupt IN pending while control requests go by.
        while let Some(&j) = by_submission.get(next).filter(|_| options.overlap) {
            if txs[j].submitted_us >= t.at_us && j != i {
                break;
            }
            transfers.start(j, host, &txs[j], options);
            next += 1;
        }
        transfers.start(i, host, t, options);
        let got = transfers.finish(i).await;
        let (result, data) = match got {
            Ok(data) => (TxResult::Ok, data),
            Err(e) => (TxResult::of(&Err(e)), Vec::new()),
        };
        let want = t.bytes();
        let same = match t.result {
            r if no_answer(r) => no_answer(result),
            TxResult::Ok => result == TxResult::Ok && (!t.is_in() || data == want),
            r => r == result,
        };
        if !same {
            return Err(PlaybackError::Answer {
                seq: t.seq,
                transaction: describe_transaction(t),
                recorded: answer_text(t.result, if t.is_in() { &want } else { &[] }),
                got: answer_text(result, &data),
            });
        }
        done.equal += 1;
        if t.is_in() {
            done.bytes_in += data.len();
        }
    }
    Ok(done)
}

type Answer = Result<Vec<u8>, TransferError>;
/// A transfer on its way.
type Running<'a> = Pin<Box<dyn Future<Output = Answer> + 'a>>;

/// Transfers on their way, polled together, and the answers of those that finished.
#[derive(Default)]
struct Transfers<'a> {
    running: Vec<(usize, Running<'a>)>,
    answers: BTreeMap<usize, Answer>,
    started: BTreeSet<usize>,
    /// The host's time minus the recording's, fixed by the first transfer started.
    offset_us: Option<i64>,
}

impl<'a> Transfers<'a> {
    /// Starts transaction `i` (once; nothing for what the host API cannot make).
    fn start(
        &mut self,
        i: usize,
        host: &'a dyn UsbHost,
        t: &'a Transaction,
        options: PlaybackOptions,
    ) {
        if !can_make(t) || !self.started.insert(i) {
            return;
        }
        let now = host.now().total_micros() as i64;
        let offset = *self.offset_us.get_or_insert(now - t.submitted_us as i64);
        // A device may answer at its own pace (interrupt reports): give the transfer until
        // its recorded completion on the host's clock, or its recorded duration, whichever
        // is later.
        let due = (t.at_us as i64 + offset - now).max(0) as u64;
        let timeout = if no_answer(t.result) {
            options.no_answer_wait
        } else {
            Duration::from_micros(t.duration_us().max(due)) + options.slack
        };
        self.running.push((i, Box::pin(make(host, t, timeout))));
    }

    /// Waits for transaction `i`'s answer, the others running meanwhile.
    async fn finish(&mut self, i: usize) -> Answer {
        std::future::poll_fn(|cx| {
            // In start order, so that submissions reach the host in the recorded order.
            let mut k = 0;
            while k < self.running.len() {
                if let Poll::Ready(answer) = self.running[k].1.as_mut().poll(cx) {
                    let (j, _) = self.running.remove(k);
                    self.answers.insert(j, answer);
                } else {
                    k += 1;
                }
            }
            match self.answers.remove(&i) {
                Some(answer) => Poll::Ready(answer),
                None => Poll::Pending,
            }
        })
        .await
    }
}

/// True when the host API can make `t`.
fn can_make(t: &Transaction) -> bool {
    match t.kind {
        TxKind::Control => t.setup.is_some(),
        TxKind::Interrupt => t.is_in(),
        TxKind::Abort => false,
        TxKind::Bulk | TxKind::ClearHalt | TxKind::Reset => true,
    }
}

/// Why [`make`] skips `t`.
fn skip_reason(t: &Transaction) -> &'static str {
    match t.kind {
        TxKind::Abort => "an abort is the host's act, not a request",
        TxKind::Interrupt => "interrupt OUT: the host API has none",
        _ => "the capture holds no SETUP packet",
    }
}

/// Makes the transfer `t` recorded (never called for what [`can_make`] refuses, which would
/// get an empty reply).
async fn make(host: &dyn UsbHost, t: &Transaction, timeout: Duration) -> Answer {
    let mut buf = vec![0u8; t.requested as usize];
    let read = |r: Result<usize, TransferError>, buf: &[u8]| r.map(|n| buf[..n].to_vec());
    match (t.kind, t.setup) {
        (TxKind::Control, Some(s)) => {
            let setup = Setup::from(s);
            if t.is_in() {
                host.control_in(setup, timeout).await
            } else {
                host.control_out(setup, &t.bytes(), timeout)
                    .await
                    .map(|()| Vec::new())
            }
        }
        (TxKind::Bulk, _) if t.is_in() => {
            let r = host.bulk_in(t.ep, &mut buf, timeout).await;
            read(r, &buf)
        }
        (TxKind::Bulk, _) => host
            .bulk_out(t.ep, &t.bytes(), timeout)
            .await
            .map(|_| Vec::new()),
        (TxKind::Interrupt, _) if t.is_in() => {
            let r = host.interrupt_in(t.ep, &mut buf, timeout).await;
            read(r, &buf)
        }
        (TxKind::ClearHalt, _) => host.clear_halt(t.ep).await.map(|()| Vec::new()),
        (TxKind::Reset, _) => host.reset_device().await.map(|()| Vec::new()),
        (TxKind::Control, None) | (TxKind::Abort, _) | (TxKind::Interrupt, _) => Ok(Vec::new()),
    }
}
