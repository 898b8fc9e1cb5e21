//! The check of each WIA 2.0 rule, over the reading of a run the rules share ([`Ctx2`]),
//! one file per family of obligations (as `wia2-stream.md` groups them).

mod cancel;
mod release;
mod returns;
mod service;
mod stream;

pub(crate) use self::cancel::*;
pub(crate) use self::release::*;
pub(crate) use self::returns::*;
pub(crate) use self::service::*;
pub(crate) use self::stream::*;

use std::collections::{BTreeMap, BTreeSet};

use scanemu::engine::{FaultKind, ScanSource};
use scanemu::personality::NoteKind;

use super::analysis::{
    bad_upload, device_fault_in, expect_size, first_stop, given, gns, is_app_cancel, is_notify,
    msg, notify_in_callback, op, pages_scanned, prefill, spec, stream_end, transfers, undisturbed,
    units, Call, Xfer,
};
use super::RunFacts2;
use crate::rules::analysis::{
    device, device_states, is_cancel_request, is_device_reset, transfer_failed, Dev,
    CANCEL_IO_WIRE_US,
};
use crate::rules::Judgement;
pub(super) use crate::rules::Verdict;
use crate::scenario::wia2::{StreamSpec, Tymed};
use crate::scenario::Outcome;
use crate::trace::{Actor, Event, Kind, Trace};
use crate::wia::{Hresult, StreamMethod, TransferMsg};

/// A WIA 2.0 run read once for all rules.
pub(crate) struct Ctx2<'a> {
    pub facts: RunFacts2<'a>,
    pub trace: &'a Trace,
    pub xfers: Vec<Xfer>,
    pub dev: Vec<Dev>,
}

impl<'a> Ctx2<'a> {
    pub fn new(facts: &RunFacts2<'a>) -> Ctx2<'a> {
        Ctx2 {
            facts: *facts,
            trace: facts.trace,
            xfers: transfers(facts.trace),
            dev: device_states(facts.trace),
        }
    }

    fn ev(&self, i: usize) -> &Event {
        &self.trace.events[i]
    }

    /// `to_us - from_us`, net of host lag in real-time runs.
    fn net(&self, from_us: u64, to_us: u64) -> u64 {
        let lag = self.facts.host_lag.map_or(0, |l| l.between(from_us, to_us));
        to_us.saturating_sub(from_us).saturating_sub(lag)
    }

    fn at(&self, i: usize) -> u64 {
        self.trace.events[i].at_us
    }

    fn calls(&self) -> impl Iterator<Item = &Call> {
        self.xfers.iter().flat_map(|x| x.calls.iter())
    }

    /// The scenario leaves transfer `n` alone: no steps, a stream that is empty and never fails
    /// (a slow one is fine), a readable upload, no device faults.
    fn left_alone(&self, n: u32) -> bool {
        let sc = self.facts.scenario;
        spec(sc, n).is_some_and(|t| {
            let stream = StreamSpec {
                write_us: 0,
                ..t.stream.clone()
            };
            t.steps.is_empty() && stream == StreamSpec::default() && !bad_upload(t)
        }) && sc.faults.is_empty()
    }

    /// The scenario's expectation for transfer `n`.
    fn expect(&self, n: u32) -> Option<&Outcome> {
        spec(self.facts.scenario, n).map(|t| &t.expect)
    }

    /// True when the device left the bus between `from` and `to`.
    fn gone_between(&self, from: usize, to: usize) -> bool {
        (from..=to.min(self.dev.len().saturating_sub(1))).any(|i| self.dev[i] == Dev::Gone)
    }
}

fn hr_of(c: &Call) -> String {
    c.hr.map_or_else(|| "nothing".into(), |h| h.to_string())
}

/// Bytes the driver wrote into the application's streams, over the run.
pub(crate) fn bytes_written(c: &Ctx2<'_>) -> u64 {
    c.trace
        .events
        .iter()
        .filter_map(op)
        .filter(|o| o.op == StreamMethod::Write)
        .map(|o| o.actual)
        .sum()
}

/// The ends of the streams `call` was given.
pub(super) fn stream_ends(c: &Ctx2<'_>, call: &Call) -> Vec<(usize, super::analysis::End)> {
    let streams: BTreeSet<u32> = given(c.trace, call).into_iter().map(|(_, s)| s).collect();
    (call.start..c.trace.events.len())
        .filter_map(|i| {
            stream_end(c.ev(i))
                .filter(|e| streams.contains(&e.stream))
                .map(|e| (i, e))
        })
        .collect()
}

/// Streams of `call` that ended (stream-end) not holding what they should.
pub(super) fn bad_stream_ends(c: &Ctx2<'_>, call: &Call) -> Vec<(usize, u32)> {
    stream_ends(c, call)
        .into_iter()
        .filter(|(_, e)| !e.whole())
        .map(|(i, e)| (i, e.stream))
        .collect()
}
