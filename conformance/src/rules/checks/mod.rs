//! The check of each rule, by family, and the run's metrics; here the reading of a run they
//! share ([`Ctx`]) and how a check collects its findings.

mod callbacks;
mod cancel;
mod data;
mod faults;
mod usb;

pub(crate) use self::callbacks::{cb_stop, err_propagate, outcome, ret_sfalse};
pub(crate) use self::cancel::{
    cancel_io_asap, cancel_return, idle_after_cancel, next_transfer, vista_sticky, xp_gap,
};
pub(crate) use self::data::{
    cadence, data_buffer, data_complete, data_contiguous, data_exact, data_length, percent,
};
pub(crate) use self::faults::{fault_no_hang, idle_cancel_harmless};
pub(crate) use self::usb::{cancel_sent, halts_cleared, no_pending, no_stale, status_polled};

use scanemu::personality::NoteKind;

use super::analysis::{
    acquisitions, bulk_in_data, cancel_points, data_callback, device_states, first_stop_callback,
    first_stopped, is_cancel_request, is_device_reset, ms, note, Acq, Cp, CpKind, Dev,
    CANCEL_IO_WIRE_US,
};
use super::{Metrics, RunFacts};
pub(super) use crate::rules::Verdict;
use crate::scenario::Outcome;
use crate::trace::{Event, Kind, Trace, TransferOutcome};
use crate::wia::Hresult;

/// A run read once for all rules.
pub(crate) struct Ctx<'a> {
    pub facts: RunFacts<'a>,
    pub trace: &'a Trace,
    pub acqs: Vec<Acq>,
    pub dev: Vec<Dev>,
}

impl<'a> Ctx<'a> {
    pub fn new(facts: &RunFacts<'a>) -> Ctx<'a> {
        Ctx {
            facts: *facts,
            trace: facts.trace,
            acqs: acquisitions(facts.trace),
            dev: device_states(facts.trace),
        }
    }

    fn ev(&self, i: usize) -> &Event {
        &self.trace.events[i]
    }

    fn at(&self, i: usize) -> u64 {
        self.trace.events[i].at_us
    }

    fn expect(&self, n: u32) -> Option<&Outcome> {
        let i = usize::try_from(n).ok()?.checked_sub(1)?;
        self.facts.scenario.acquisitions.get(i).map(|a| &a.expect)
    }

    /// The acquisition that contains event `i`.
    fn acq_of(&self, i: usize) -> Option<&Acq> {
        self.acqs.iter().find(|a| a.contains(i))
    }

    /// First event after `from` later than `deadline`, or the last event.
    fn first_after(&self, from: usize, deadline: u64) -> usize {
        (from..self.trace.events.len())
            .find(|&i| self.at(i) > deadline)
            .unwrap_or(self.trace.events.len().saturating_sub(1))
    }

    /// True if the acquisition ended cancelled or failed: a cancel point, a non-S_OK return,
    /// or no return at all.
    fn ended_badly(&self, a: &Acq) -> bool {
        a.hr(self.trace) != Some(Hresult::S_OK) || !cancel_points(self.trace, a).is_empty()
    }

    /// Microseconds from event `from` to event `to`, net of host lag in real-time runs.
    fn net_us(&self, from: usize, to: usize) -> u64 {
        self.net_between(self.at(from), self.at(to))
    }

    /// `to_us - from_us`, net of host lag in real-time runs.
    fn net_between(&self, from_us: u64, to_us: u64) -> u64 {
        let lag = self.lag_between(from_us, to_us);
        to_us.saturating_sub(from_us).saturating_sub(lag)
    }

    /// Host lag inside `[from_us, to_us]` (0 in virtual time).
    fn lag_between(&self, from_us: u64, to_us: u64) -> u64 {
        self.facts.host_lag.map_or(0, |l| l.between(from_us, to_us))
    }

    /// " (net of X host lag ...)" for messages of real-time runs with lag in the interval.
    fn lag_note(&self, from_us: u64, to_us: u64) -> String {
        match self.lag_between(from_us, to_us) {
            0 => String::new(),
            lag => format!(" (net of {} host lag: threads waiting for a CPU)", ms(lag)),
        }
    }

    /// A cancel on the wire (for CANCEL_IO): Cancel Request, Device Reset, port reset, or an
    /// endpoint abort the driver did not undo by reading from that endpoint again.
    fn wire_cancel_within(&self, notify: usize, end: usize) -> Option<usize> {
        (notify + 1..=end.min(self.trace.events.len().saturating_sub(1)))
            .take_while(|&i| self.net_us(notify, i) <= CANCEL_IO_WIRE_US)
            .find(|&i| {
                let e = self.ev(i);
                is_cancel_request(e)
                    || is_device_reset(e)
                    || (matches!(e.kind, Kind::Abort { .. })
                        && self.read_after_abort(i, end).is_none())
            })
    }

    /// A bulk transfer on the endpoint aborted at `abort` that the driver submitted after the
    /// abort, before any Cancel Request or Device Reset (up to `end`): the read it resubmitted.
    ///
    /// The abort ends every transfer pending on the endpoint: they complete `cancelled` at its
    /// instant, or `ok` a little later when their data had moved before it (its wire time).
    /// A later completion is a new read when it ends without data (a timeout, a later abort),
    /// or carries data while the device produced or handed over a band since the abort
    /// (`band-ready`, `band-sent`), unless it can be the one transfer still on the wire: the
    /// first `ok` completion when nothing ended at the abort's instant.
    fn read_after_abort(&self, abort: usize, end: usize) -> Option<usize> {
        let Kind::Abort { ep } = self.ev(abort).kind else {
            return None;
        };
        let at = self.at(abort);
        let mut ended_at_abort = false;
        let mut new_band = false;
        let mut ok_seen = false;
        for i in abort + 1..=end.min(self.trace.events.len().saturating_sub(1)) {
            let e = self.ev(i);
            if is_cancel_request(e) || is_device_reset(e) {
                return None;
            }
            new_band |= matches!(note(e), Some(NoteKind::BandReady | NoteKind::BandSent));
            let Kind::Bulk {
                ep: x,
                result,
                actual,
                ..
            } = e.kind
            else {
                continue;
            };
            if x != ep {
                continue;
            }
            match result {
                // Ended by the abort: at its instant, the first one cancelled after it (over a
                // real-time transport the completion comes a little later, with what moved
                // before the abort), or any that moved nothing (reads queued behind the one
                // on the wire, reaped later): none of these is I/O restarted.
                TransferOutcome::Cancelled if e.at_us == at || !ended_at_abort || actual == 0 => {
                    ended_at_abort = true
                }
                TransferOutcome::Ok if !new_band || !(ended_at_abort || ok_seen) => {
                    ok_seen = true;
                }
                _ => return Some(i),
            }
        }
        None
    }

    /// CANCEL_IO counts as honoured: the device was not busy, or a cancel was on the wire in time.
    fn notify_honoured(&self, a: &Acq, notify: usize) -> bool {
        !self.dev[notify].busy() || self.wire_cancel_within(notify, a.end).is_some()
    }

    /// The cancel point the driver is expected to act on: the first stopping callback or
    /// aborting device fault, or CANCEL_IO when the driver claims async cancel and honoured it.
    fn acted_cancel_point(&self, a: &Acq) -> Option<Cp> {
        cancel_points(self.trace, a)
            .into_iter()
            .find(|cp| match cp.kind {
                CpKind::Notify => self.facts.async_cancel && self.notify_honoured(a, cp.idx),
                _ => true,
            })
    }

    fn gone_between(&self, from: usize, to: usize) -> bool {
        (from..=to.min(self.dev.len().saturating_sub(1))).any(|i| self.dev[i] == Dev::Gone)
    }
}

fn describe_cp(cp: &Cp) -> String {
    match &cp.kind {
        CpKind::SFalse => format!("a callback returned S_FALSE at #{}", cp.idx),
        CpKind::Error(hr) => format!("a callback returned {hr} at #{}", cp.idx),
        CpKind::Notify => format!("WIA_EVENT_CANCEL_IO at #{}", cp.idx),
        CpKind::DeviceCancel => format!(
            "a device-initiated cancel (Cancel button or short band) at #{}",
            cp.idx
        ),
        CpKind::DeviceFault(d) => format!("device fault {d} at #{}", cp.idx),
    }
}

// ---- metrics ----

pub(crate) fn metrics(c: &Ctx<'_>) -> Metrics {
    let mut m = Metrics {
        host_lag_us: c.facts.host_lag.map(|l| l.total_us()),
        ..Metrics::default()
    };
    for e in &c.trace.events {
        if let Some(d) = data_callback(e) {
            m.data_callbacks += 1;
            m.data_bytes += u64::try_from(d.length).unwrap_or(0);
        }
    }
    let has_band_sent = c
        .trace
        .events
        .iter()
        .any(|e| note(e) == Some(NoteKind::BandSent));
    for a in &c.acqs {
        if let Some((si, _)) = first_stop_callback(c.trace, a) {
            for i in si + 1..=a.end {
                if let Some(d) = data_callback(c.ev(i)) {
                    m.bytes_after_sfalse += u64::try_from(d.length).unwrap_or(0);
                }
            }
        }
        let Some(cp) = cancel_points(c.trace, a).into_iter().next() else {
            continue;
        };
        if m.cancel_to_idle_us.is_none() {
            let stopped = first_stopped(c.trace, &c.dev, cp.idx);
            m.cancel_to_idle_us = stopped.map(|(_, t)| t - cp.at);
            if c.facts.host_lag.is_some() {
                m.cancel_to_idle_lag_us = stopped.map(|(_, t)| c.lag_between(cp.at, t));
            }
        }
        let wasted = (cp.idx + 1..=a.end)
            .filter(|&i| {
                let e = c.ev(i);
                if has_band_sent {
                    note(e) == Some(NoteKind::BandSent)
                } else {
                    bulk_in_data(e).is_some()
                }
            })
            .count() as u32;
        *m.bands_wasted.get_or_insert(0) += wasted;
    }
    m
}
