//! The check of each WIA 2.0 rule, over the reading of a run the rules share ([`Ctx2`]).

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
use crate::rules::{Finding, Judgement};
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

/// Collects findings and whether anything was judged.
#[derive(Default)]
struct Verdict {
    judged: bool,
    findings: Vec<Finding>,
}

impl Verdict {
    fn judged(&mut self) {
        self.judged = true;
    }

    fn fail(&mut self, call: Option<u32>, event: usize, message: String) {
        self.judged = true;
        self.findings.push(Finding {
            acquisition: call,
            event,
            message,
        });
    }

    fn done(mut self) -> Judgement {
        let mut seen = BTreeSet::new();
        self.findings
            .retain(|f| seen.insert((f.event, f.message.clone())));
        self.findings.sort_by_key(|f| f.event);
        if !self.findings.is_empty() {
            Judgement::Fail(self.findings)
        } else if self.judged {
            Judgement::Pass
        } else {
            Judgement::NotApplicable
        }
    }
}

fn hr_of(c: &Call) -> String {
    c.hr.map_or_else(|| "nothing".into(), |h| h.to_string())
}

// ---- stream methods ----

fn stream_methods(c: &Ctx2<'_>, upload: bool, forbidden: &[StreamMethod], what: &str) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls().filter(|k| k.upload() == upload) {
        for i in call.range() {
            let Some(o) = op(c.ev(i)) else { continue };
            v.judged();
            if forbidden.contains(&o.op) {
                v.fail(
                    Some(call.n),
                    i,
                    format!(
                        "call {}: the driver called IStream::{} on stream {} during {what}",
                        call.n,
                        o.op.name(),
                        o.stream
                    ),
                );
            }
        }
    }
    v.done()
}

pub(crate) fn h1_download_methods(c: &Ctx2<'_>) -> Judgement {
    stream_methods(
        c,
        false,
        &[StreamMethod::Read, StreamMethod::Stat],
        "a download",
    )
}

pub(crate) fn h2_upload_methods(c: &Ctx2<'_>) -> Judgement {
    stream_methods(
        c,
        true,
        &[StreamMethod::Write, StreamMethod::SetSize],
        "an upload",
    )
}

// ---- progress ----

pub(crate) fn h3_percent(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls() {
        for i in call.range() {
            let Some(m) = msg(c.ev(i)) else { continue };
            v.judged();
            if !(0..=100).contains(&m.percent) {
                v.fail(
                    Some(call.n),
                    i,
                    format!(
                        "call {}: SendMessage({}) with lPercentComplete {}",
                        call.n, m.msg, m.percent
                    ),
                );
            }
        }
    }
    v.done()
}

pub(crate) fn h4_transferred_bytes(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls() {
        let mut per_stream: BTreeMap<u32, u64> = BTreeMap::new();
        let mut current: Option<u32> = None;
        let mut read = 0u64;
        for i in call.range() {
            let e = c.ev(i);
            if let Some((r, s, _)) = gns(e) {
                if r == Hresult::S_OK && s != 0 {
                    current = Some(s);
                }
                continue;
            }
            if let Some(o) = op(e) {
                match o.op {
                    StreamMethod::Write => *per_stream.entry(o.stream).or_insert(0) += o.actual,
                    StreamMethod::Read => read += o.actual,
                    _ => {}
                }
                continue;
            }
            let Some(m) = msg(e) else { continue };
            if m.msg != TransferMsg::STATUS && m.msg != TransferMsg::NEW_PAGE {
                continue;
            }
            v.judged();
            let ok = if call.upload() {
                m.bytes == read
            } else {
                let in_stream = current.map_or(0, |s| per_stream.get(&s).copied().unwrap_or(0));
                let total: u64 = per_stream.values().sum();
                m.bytes == in_stream || m.bytes == total
            };
            if !ok {
                let moved = if call.upload() {
                    format!("{read} bytes read from the source stream")
                } else {
                    let in_stream = current.map_or(0, |s| per_stream.get(&s).copied().unwrap_or(0));
                    format!(
                        "{in_stream} bytes written to the current stream, {} in the call",
                        per_stream.values().sum::<u64>()
                    )
                };
                v.fail(
                    Some(call.n),
                    i,
                    format!(
                        "call {}: SendMessage({}) reports ulTransferredBytes {} after {moved}",
                        call.n, m.msg, m.bytes
                    ),
                );
            }
        }
    }
    v.done()
}

// ---- where the data goes ----

pub(crate) fn h5_append(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls().filter(|k| !k.upload()) {
        for (_, s) in given(c.trace, call) {
            let size = prefill(c.trace, s);
            if size == 0 {
                continue;
            }
            v.judged();
            for i in call.start..c.trace.events.len() {
                let Some(o) = op(c.ev(i)) else { continue };
                if o.stream == s && o.op == StreamMethod::Write && o.pos < size {
                    v.fail(
                        Some(call.n),
                        i,
                        format!(
                            "call {}: stream {s} held {size} bytes when it was given; the driver wrote at offset {}, over them",
                            call.n, o.pos
                        ),
                    );
                }
            }
        }
    }
    v.done()
}

pub(crate) fn h20_seek_position(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls().filter(|k| !k.upload()) {
        let sizes: BTreeMap<u32, u64> = call.range().filter_map(|i| expect_size(c.ev(i))).collect();
        for i in call.start..c.trace.events.len() {
            let Some(o) = op(c.ev(i)) else { continue };
            let Some(&size) = sizes.get(&o.stream) else {
                continue;
            };
            if o.op != StreamMethod::Write || o.actual == 0 {
                continue;
            }
            // Bytes past the file's end are one stream holding more than its item (H8, H9).
            if size > 0 && o.pos >= size {
                continue;
            }
            v.judged();
            if o.crc != o.expect_crc {
                v.fail(
                    Some(call.n),
                    i,
                    format!(
                        "call {}: {} bytes written at offset {} of stream {} are not what belongs there (crc {:#010x}, expected {:#010x})",
                        call.n, o.actual, o.pos, o.stream, o.crc, o.expect_crc
                    ),
                );
            }
        }
        if !clean(c, call) {
            continue;
        }
        for (i, end) in stream_ends(c, call) {
            v.judged();
            if !end.whole() {
                v.fail(
                    Some(call.n),
                    i,
                    format!(
                        "call {}: stream {} ended holding {} bytes (crc {:#010x}); it should hold {} (crc {:#010x})",
                        call.n, end.stream, end.size, end.crc, end.expect_size, end.expect_crc
                    ),
                );
            }
        }
    }
    v.done()
}

/// The ends of the streams `call` was given.
fn stream_ends(c: &Ctx2<'_>, call: &Call) -> Vec<(usize, super::analysis::End)> {
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
fn bad_stream_ends(c: &Ctx2<'_>, call: &Call) -> Vec<(usize, u32)> {
    stream_ends(c, call)
        .into_iter()
        .filter(|(_, e)| !e.whole())
        .map(|(i, e)| (i, e.stream))
        .collect()
}

/// An undisturbed download call that returned success.
fn clean(c: &Ctx2<'_>, call: &Call) -> bool {
    !call.upload()
        && call.returned()
        && call.hr.is_some_and(Hresult::succeeded)
        && call.hr != Some(Hresult::S_FALSE)
        && undisturbed(c.trace, call)
}

/// The number of items a download call transfers: folder children, else one.
fn items(c: &Ctx2<'_>, call: &Call) -> u32 {
    if call.children() {
        c.facts.scenario.children.len() as u32
    } else {
        1
    }
}

pub(crate) fn h8_multipage(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    if c.facts.scenario.tymed != Tymed::MultipageFile {
        return v.done();
    }
    for call in c.calls().filter(|k| !k.upload()) {
        v.judged();
        // Streams asked for before anything told the driver to stop (asking after is
        // WIA2-H13's and WIA2-H27's business).
        let stop = first_stop(c.trace, call).map_or(call.end, |(i, _, _)| i);
        let asks: Vec<usize> = (call.start..=stop)
            .filter(|&i| gns(c.ev(i)).is_some())
            .collect();
        let items = items(c, call);
        if asks.len() as u32 > items {
            v.fail(
                Some(call.n),
                asks[items as usize],
                format!(
                    "call {}: another stream asked for ({} for {items} item(s)) in a TYMED_MULTIPAGE_FILE download; every page of an item belongs in one stream",
                    call.n,
                    asks.len()
                ),
            );
            continue;
        }
        if !clean(c, call) {
            continue;
        }
        let ret = call.ret.unwrap_or(call.end);
        if (asks.len() as u32) < items {
            v.fail(
                Some(call.n),
                ret,
                format!(
                    "call {}: {} stream(s) asked for {items} item(s) of a TYMED_MULTIPAGE_FILE download",
                    call.n,
                    asks.len()
                ),
            );
        }
        let pages = pages_scanned(c.trace, call);
        let new_pages = call
            .range()
            .filter(|&i| msg(c.ev(i)).is_some_and(|m| m.msg == TransferMsg::NEW_PAGE))
            .count() as u32;
        let want = pages.saturating_sub(items);
        if new_pages != want {
            v.fail(
                Some(call.n),
                ret,
                format!(
                    "call {}: {pages} page(s) in {items} multi-page file(s), but {new_pages} NEW_PAGE message(s) ({want} expected)",
                    call.n
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn h9_stream_per_item(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    if c.facts.scenario.tymed != Tymed::File {
        return v.done();
    }
    for call in c.calls().filter(|k| !k.upload()) {
        let writes = call
            .range()
            .any(|i| op(c.ev(i)).is_some_and(|o| o.op == StreamMethod::Write));
        if writes || clean(c, call) {
            v.judged();
        }
        // A stream that receives more than its item's file.
        let sizes: BTreeMap<u32, u64> = call.range().filter_map(|i| expect_size(c.ev(i))).collect();
        if let Some((i, o, size)) = (call.start..=call.end).find_map(|i| {
            op(c.ev(i))
                .filter(|o| o.op == StreamMethod::Write && o.actual > 0)
                .and_then(|o| {
                    let size = *sizes.get(&o.stream)?;
                    (size > 0 && o.pos + o.actual > size).then_some((i, o, size))
                })
        }) {
            v.fail(
                Some(call.n),
                i,
                format!(
                    "call {}: stream {} gets bytes past {size}, the end of its item's file: one stream holds more than one item",
                    call.n, o.stream
                ),
            );
            continue;
        }
        if !clean(c, call) {
            continue;
        }
        let asked = call.range().filter(|&i| gns(c.ev(i)).is_some()).count() as u32;
        let want = units(c.trace, call, c.facts.scenario);
        if asked != want {
            v.fail(
                Some(call.n),
                call.ret.unwrap_or(call.end),
                format!(
                    "call {}: {asked} streams asked for {want} image(s) of a TYMED_FILE download; each item (page) gets a stream of its own",
                    call.n
                ),
            );
        }
    }
    v.done()
}

// ---- what drvAcquireItemData returns ----

/// Calls that returned whose first stop answer satisfies `pick`, with it.
fn first_stops<'c>(
    c: &'c Ctx2<'_>,
    pick: impl Fn(Hresult, bool) -> bool + 'c,
) -> impl Iterator<Item = (&'c Call, usize, Hresult)> + 'c {
    c.calls().filter(|k| k.returned()).filter_map(move |call| {
        first_stop(c.trace, call)
            .filter(|(_, r, from_msg)| pick(*r, *from_msg))
            .map(|(i, r, _)| (call, i, r))
    })
}

pub(crate) fn h10_sendmessage_sfalse(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for (call, i, _) in first_stops(c, |r, from_msg| from_msg && r == Hresult::S_FALSE) {
        v.judged();
        let ok = call.hr == Some(Hresult::S_FALSE)
            || (call.hr.is_some_and(Hresult::failed) && c.gone_between(i, call.end));
        if !ok {
            v.fail(
                Some(call.n),
                call.ret.unwrap_or(call.end),
                format!(
                    "call {}: SendMessage returned S_FALSE at #{i}, then drvAcquireItemData returned {}",
                    call.n,
                    hr_of(call)
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn h17_sendmessage_failure(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for (call, i, r) in first_stops(c, |r, from_msg| from_msg && r.failed()) {
        v.judged();
        if !call.hr.is_some_and(Hresult::failed) {
            v.fail(
                Some(call.n),
                call.ret.unwrap_or(call.end),
                format!(
                    "call {}: SendMessage failed with {r} at #{i}, then drvAcquireItemData returned {}",
                    call.n,
                    hr_of(call)
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn h15_gns_failure(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls().filter(|k| k.returned()) {
        let Some((i, r)) = call.range().find_map(|i| {
            gns(c.ev(i))
                .filter(|(r, _, _)| r.failed())
                .map(|(r, _, _)| (i, r))
        }) else {
            continue;
        };
        if first_stop(c.trace, call).is_some_and(|(j, _, _)| j < i) {
            continue;
        }
        v.judged();
        if !call.hr.is_some_and(Hresult::failed) {
            v.fail(
                Some(call.n),
                call.ret.unwrap_or(call.end),
                format!(
                    "call {}: GetNextStream failed with {r} at #{i}, then drvAcquireItemData returned {}",
                    call.n,
                    hr_of(call)
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn h16_null_stream(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls().filter(|k| k.restart.is_none()) {
        let Some(i) = call
            .range()
            .find(|&i| gns(c.ev(i)).is_some_and(|(r, s, _)| r == Hresult::S_OK && s == 0))
        else {
            continue;
        };
        v.judged();
        if let Some(f) = call.fault {
            v.fail(
                Some(call.n),
                f,
                format!(
                    "call {}: GetNextStream returned S_OK with a NULL stream at #{i}, and the driver crashed instead of returning a COM failure code",
                    call.n
                ),
            );
        } else if !call.hr.is_some_and(Hresult::failed) {
            v.fail(
                Some(call.n),
                call.ret.unwrap_or(call.end),
                format!(
                    "call {}: GetNextStream returned S_OK with a NULL stream at #{i}, then drvAcquireItemData returned {}",
                    call.n,
                    hr_of(call)
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn h19_stream_failure(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls().filter(|k| k.returned()) {
        let Some((i, o)) = call
            .range()
            .find_map(|i| op(c.ev(i)).filter(|o| o.result.failed()).map(|o| (i, o)))
        else {
            continue;
        };
        if first_stop(c.trace, call).is_some_and(|(j, r, _)| j < i && r == Hresult::S_FALSE) {
            continue;
        }
        v.judged();
        if !call.hr.is_some_and(Hresult::failed) {
            v.fail(
                Some(call.n),
                call.ret.unwrap_or(call.end),
                format!(
                    "call {}: IStream::{} failed with {} at #{i}, then drvAcquireItemData returned {}",
                    call.n,
                    o.op.name(),
                    o.result,
                    hr_of(call)
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn h6_success(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for x in &c.xfers {
        if !c.left_alone(x.n) {
            continue;
        }
        let Some(expect) = c.expect(x.n) else {
            continue;
        };
        let success_expected = [Hresult::S_OK, Hresult::WIA_STATUS_END_OF_MEDIA]
            .iter()
            .any(|h| expect.accepts(*h))
            && !expect.accepts(Hresult::E_FAIL);
        if !success_expected {
            continue;
        }
        for call in x.calls.iter().filter(|k| k.returned()) {
            v.judged();
            if !call.hr.is_some_and(Hresult::succeeded) {
                v.fail(
                    Some(call.n),
                    call.ret.unwrap_or(call.end),
                    format!(
                        "call {}: a transfer with good parameters where nothing went wrong returned {}",
                        call.n,
                        hr_of(call)
                    ),
                );
            }
        }
    }
    v.done()
}

// ---- releasing streams ----

pub(crate) fn h7_release(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls().filter(|k| k.returned()) {
        let streams = given(c.trace, call);
        for (k, &(from, s)) in streams.iter().enumerate() {
            v.judged();
            let ret = call.ret.unwrap_or(call.end);
            let next_gns = (from + 1..=ret).find(|&i| gns(c.ev(i)).is_some());
            let deadline = next_gns.unwrap_or(ret);
            let released = (from + 1..deadline).any(|i| {
                op(c.ev(i)).is_some_and(|o| o.stream == s && o.op == StreamMethod::Release)
            });
            if !released {
                let when = if next_gns.is_some() {
                    format!("asked for the next stream at #{deadline}")
                } else {
                    "drvAcquireItemData returned".into()
                };
                let _ = k;
                v.fail(
                    Some(call.n),
                    deadline,
                    format!(
                        "call {}: the driver had not released stream {s} when it {when}",
                        call.n
                    ),
                );
            }
        }
    }
    v.done()
}

pub(crate) fn h25_no_stream_call_after_next(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls() {
        let streams = given(c.trace, call);
        for &(from, s) in &streams {
            let next_gns = (from + 1..=call.end).find(|&i| gns(c.ev(i)).is_some());
            let Some(after) = next_gns.or(call.ret) else {
                continue;
            };
            v.judged();
            for i in after + 1..c.trace.events.len() {
                let Some(o) = op(c.ev(i)) else { continue };
                if o.stream == s && o.op != StreamMethod::Release {
                    let when = if next_gns.is_some() {
                        format!("after it asked for the next stream at #{after}")
                    } else {
                        format!("after drvAcquireItemData returned at #{after}")
                    };
                    v.fail(
                        Some(call.n),
                        i,
                        format!(
                            "call {}: IStream::{} on stream {s} {when}",
                            call.n,
                            o.op.name()
                        ),
                    );
                }
            }
        }
    }
    v.done()
}

pub(crate) fn h24_no_stream_call_after_stop(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls() {
        let streams = given(c.trace, call);
        for i in call.range() {
            let Some(m) = msg(c.ev(i)) else { continue };
            let stops = m.result == Hresult::S_FALSE
                || m.result == Hresult::WIA_STATUS_SKIP_ITEM
                || m.result.failed();
            if !stops {
                continue;
            }
            v.judged();
            // The streams the answer was about: for a skip the item's (the last one given),
            // otherwise every stream given so far.
            let held: Vec<u32> = if m.result == Hresult::WIA_STATUS_SKIP_ITEM {
                streams
                    .iter()
                    .rev()
                    .find(|(g, _)| *g < i)
                    .map(|(_, s)| *s)
                    .into_iter()
                    .collect()
            } else {
                streams
                    .iter()
                    .filter(|(g, _)| *g < i)
                    .map(|(_, s)| *s)
                    .collect()
            };
            for j in i + 1..=call.end {
                let Some(o) = op(c.ev(j)) else { continue };
                if held.contains(&o.stream) && o.op != StreamMethod::Release {
                    v.fail(
                        Some(call.n),
                        j,
                        format!(
                            "call {}: IStream::{} on stream {} after SendMessage({}) returned {} at #{i}",
                            call.n,
                            o.op.name(),
                            o.stream,
                            m.msg,
                            m.result
                        ),
                    );
                }
            }
        }
    }
    v.done()
}

// ---- skip, cancel, abort ----

pub(crate) fn h11_skip_continues(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    let sc = c.facts.scenario;
    for call in c.calls().filter(|k| !k.upload()) {
        let asks: Vec<(usize, Hresult)> = call
            .range()
            .filter_map(|i| gns(c.ev(i)).map(|(r, _, _)| (i, r)))
            .collect();
        for (k, &(i, r)) in asks.iter().enumerate() {
            if r != Hresult::WIA_STATUS_SKIP_ITEM {
                continue;
            }
            let more = match (call.children(), sc.scan.source) {
                (true, _) => (k + 1) < sc.children.len(),
                (false, ScanSource::Adf) => {
                    sc.tymed == Tymed::File && (k as u32 + 1) < c.feeder_pages()
                }
                _ => false,
            };
            if !more {
                continue;
            }
            // Something else that stops the call after the skip excuses it.
            let stopped = (i + 1..=call.end).any(|j| {
                let e = c.ev(j);
                is_notify(e)
                    || msg(e).is_some_and(|m| m.result == Hresult::S_FALSE || m.result.failed())
                    || matches!(device(e), Some((NoteKind::Fault, _, _)))
            });
            if stopped {
                continue;
            }
            v.judged();
            let went_on = asks.get(k + 1).is_some();
            if !went_on {
                v.fail(
                    Some(call.n),
                    call.ret.unwrap_or(call.end),
                    format!(
                        "call {}: GetNextStream returned WIA_STATUS_SKIP_ITEM for image {} of a multi-item download at #{i}, and the driver transferred none of the images after it",
                        call.n,
                        k + 1
                    ),
                );
            }
        }
    }
    v.done()
}

impl Ctx2<'_> {
    /// Pages a feeder job of this scenario yields: the pages asked for, at most the sheets
    /// loaded (unknown here: the pages the device scanned in the first call), 0 = every sheet.
    fn feeder_pages(&self) -> u32 {
        let asked = u32::from(self.facts.scenario.scan.pages);
        let scanned = self
            .calls()
            .map(|k| pages_scanned(self.trace, k))
            .max()
            .unwrap_or(0);
        if asked == 0 {
            scanned.max(1)
        } else {
            asked
        }
    }
}

pub(crate) fn h12_skip_sok(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls().filter(|k| k.returned() && !k.upload()) {
        let Some(i) = call
            .range()
            .find(|&i| gns(c.ev(i)).is_some_and(|(r, _, _)| r == Hresult::WIA_STATUS_SKIP_ITEM))
        else {
            continue;
        };
        let disturbed = call.range().any(|j| {
            let e = c.ev(j);
            is_notify(e)
                || gns(e).is_some_and(|(r, _, _)| r == Hresult::S_FALSE || r.failed())
                || msg(e).is_some_and(|m| m.result != Hresult::S_OK)
                || op(e).is_some_and(|o| o.result.failed())
                || matches!(device(e), Some((NoteKind::Fault, _, _)))
        });
        if disturbed {
            continue;
        }
        v.judged();
        let ok =
            call.hr == Some(Hresult::S_OK) || call.hr == Some(Hresult::WIA_STATUS_END_OF_MEDIA);
        if !ok {
            v.fail(
                Some(call.n),
                call.ret.unwrap_or(call.end),
                format!(
                    "call {}: an item was skipped at #{i} and nothing else went wrong, but drvAcquireItemData returned {}",
                    call.n,
                    hr_of(call)
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn h13_gns_sfalse_aborts(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls() {
        let Some(i) = call
            .range()
            .find(|&i| gns(c.ev(i)).is_some_and(|(r, _, _)| r == Hresult::S_FALSE))
        else {
            continue;
        };
        v.judged();
        for j in i + 1..=call.end {
            let e = c.ev(j);
            if gns(e).is_some() {
                v.fail(
                    Some(call.n),
                    j,
                    format!(
                        "call {}: GetNextStream returned S_FALSE at #{i}, and the driver asked for another stream",
                        call.n
                    ),
                );
            } else if op(e).is_some_and(|o| o.op == StreamMethod::Write) {
                v.fail(
                    Some(call.n),
                    j,
                    format!(
                        "call {}: GetNextStream returned S_FALSE at #{i}, and the driver still wrote data",
                        call.n
                    ),
                );
            }
        }
    }
    v.done()
}

pub(crate) fn h27_no_call_after_sfalse(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls() {
        let Some((i, r)) = call.range().find_map(|i| {
            msg(c.ev(i))
                .filter(|m| m.result == Hresult::S_FALSE || m.result.failed())
                .map(|m| (i, m.result))
        }) else {
            continue;
        };
        v.judged();
        for j in i + 1..=call.end {
            let e = c.ev(j);
            let what = if gns(e).is_some() {
                "GetNextStream"
            } else if msg(e).is_some() {
                "SendMessage"
            } else {
                continue;
            };
            v.fail(
                Some(call.n),
                j,
                format!(
                    "call {}: SendMessage returned {r} at #{i}, and the driver called {what} again",
                    call.n
                ),
            );
        }
    }
    v.done()
}

/// Duration of a call from drv-acquire-item-data2 to acquire-return (net of host lag in
/// real-time runs).
fn took(c: &Ctx2<'_>, call: &Call) -> Option<u64> {
    call.ret.map(|r| c.net(c.at(call.start), c.at(r)))
}

pub(crate) fn h14_cancel_faster(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    let completed = c
        .calls()
        .filter(|k| {
            !k.upload() && k.returned() && k.hr == Some(Hresult::S_OK) && undisturbed(c.trace, k)
        })
        .filter_map(|k| took(c, k))
        .min();
    let Some(completed) = completed else {
        return v.done();
    };
    for call in c.calls().filter(|k| !k.upload() && k.returned()) {
        let cancel_at = call.range().find(|&i| {
            let e = c.ev(i);
            is_notify(e)
                || gns(e).is_some_and(|(r, _, _)| r == Hresult::S_FALSE)
                || msg(e).is_some_and(|m| m.result == Hresult::S_FALSE)
        });
        let Some(cp) = cancel_at else { continue };
        if c.at(cp) - c.at(call.start) >= completed / 2 {
            continue;
        }
        let Some(t) = took(c, call) else { continue };
        if c.facts.host_lag.is_some() {
            // Two calls' wall-clock durations differ by the transport's latency and the
            // machine's scheduling more than by what the driver does: H14 is a virtual-time rule.
            return Judgement::Report(format!(
                "real-time run: call {} (cancelled) took {t} us, a completed one {completed} us; H14 is judged in virtual time only",
                call.n
            ));
        }
        v.judged();
        if t >= completed {
            v.fail(
                Some(call.n),
                call.ret.unwrap_or(call.end),
                format!(
                    "call {}: cancelled at #{cp} ({} us in), it returned after {t} us; a completed transfer of the same item took {completed} us",
                    call.n,
                    c.at(cp) - c.at(call.start)
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn a1_cancelled_sfalse(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls().filter(|k| k.returned()) {
        // The first thing that stopped the call.
        let first = call.range().find_map(|i| {
            let e = c.ev(i);
            if let Some((r, _, _)) = gns(e) {
                if r == Hresult::S_FALSE {
                    return Some((i, "GetNextStream returned S_FALSE"));
                }
                return r.failed().then_some((i, ""));
            }
            if let Some(m) = msg(e) {
                return (m.result == Hresult::S_FALSE || m.result.failed()).then_some((i, ""));
            }
            if is_notify(e) && !notify_in_callback(c.trace, i) {
                return Some((i, "WIA_EVENT_CANCEL_IO"));
            }
            match device(e) {
                Some((NoteKind::Fault, _, d))
                    if matches!(
                        d.fault(),
                        Some(FaultKind::CancelButton | FaultKind::ShortBand)
                    ) =>
                {
                    Some((i, "a device-initiated cancel"))
                }
                Some((NoteKind::Fault, _, d)) if crate::rules::analysis::aborting_fault(d) => {
                    Some((i, ""))
                }
                _ => None,
            }
        });
        let Some((i, what)) = first else { continue };
        if what.is_empty() {
            continue;
        }
        v.judged();
        let hr = call.hr.unwrap_or(Hresult::S_OK);
        let finished = what == "WIA_EVENT_CANCEL_IO"
            && hr == Hresult::S_OK
            && bad_stream_ends(c, call).is_empty()
            && given(c.trace, call).len() as u32 >= units(c.trace, call, c.facts.scenario).max(1);
        let ok = hr == Hresult::S_FALSE || finished || (hr.failed() && c.gone_between(i, call.end));
        if !ok {
            v.fail(
                Some(call.n),
                call.ret.unwrap_or(call.end),
                format!(
                    "call {}: cancelled ({what} at #{i}), drvAcquireItemData returned {hr}",
                    call.n
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn n1_cancel_io(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls().filter(|k| k.ret.is_some()) {
        for i in call.range() {
            if !is_notify(c.ev(i)) || notify_in_callback(c.trace, i) {
                continue;
            }
            v.judged();
            if let Some(j) = (i + 1..=call.end)
                .find(|&j| op(c.ev(j)).is_some_and(|o| o.op == StreamMethod::Write))
            {
                v.fail(
                    Some(call.n),
                    j,
                    format!(
                        "call {}: WIA_EVENT_CANCEL_IO at #{i}, and the driver went on writing",
                        call.n
                    ),
                );
                continue;
            }
            if !c.dev[i].busy() {
                continue;
            }
            // Within 10 ms, net of host lag in real-time runs.
            let wire = (i + 1..=call.end)
                .take_while(|&j| c.net(c.at(i), c.at(j)) <= CANCEL_IO_WIRE_US)
                .any(|j| {
                    let e = c.ev(j);
                    is_cancel_request(e)
                        || is_device_reset(e)
                        || matches!(e.kind, Kind::Abort { .. })
                });
            if !wire {
                v.fail(
                    Some(call.n),
                    c.trace.events.len().min(i + 1).saturating_sub(1).max(i),
                    format!(
                        "call {}: WIA_EVENT_CANCEL_IO at #{i} while the device was scanning, and no Cancel Request, Device Reset or endpoint abort within 10 ms",
                        call.n
                    ),
                );
            }
        }
    }
    v.done()
}

pub(crate) fn m4_device_status_error(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls().filter(|k| k.returned()) {
        let Some((i, r)) = call.range().find_map(|i| {
            msg(c.ev(i))
                .filter(|m| m.msg == TransferMsg::DEVICE_STATUS && m.result.failed())
                .map(|m| (i, m.result))
        }) else {
            continue;
        };
        v.judged();
        for j in i + 1..=call.end {
            let e = c.ev(j);
            let went_on = op(e).is_some_and(|o| o.op == StreamMethod::Write)
                || msg(e).is_some_and(|m| m.msg == TransferMsg::STATUS);
            if went_on {
                v.fail(
                    Some(call.n),
                    j,
                    format!(
                        "call {}: the error handlers gave {r} back at #{i}, and the driver went on transferring",
                        call.n
                    ),
                );
                break;
            }
        }
        if call.hr != Some(r) {
            v.fail(
                Some(call.n),
                call.ret.unwrap_or(call.end),
                format!(
                    "call {}: the error handlers gave {r} back at #{i}, and drvAcquireItemData returned {}",
                    call.n,
                    hr_of(call)
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn a2_adf_result(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    let sc = c.facts.scenario;
    if sc.scan.source != ScanSource::Adf {
        return v.done();
    }
    let asked = u32::from(sc.scan.pages);
    for call in c.calls().filter(|k| k.returned() && !k.upload()) {
        let disturbed = call.range().any(|j| {
            let e = c.ev(j);
            is_notify(e)
                || gns(e).is_some_and(|(r, _, _)| r != Hresult::S_OK)
                || msg(e).is_some_and(|m| {
                    m.msg != TransferMsg::DEVICE_STATUS && m.result != Hresult::S_OK
                })
                || op(e).is_some_and(|o| o.result.failed())
        });
        if disturbed {
            continue;
        }
        let hr = call.hr.unwrap_or(Hresult::S_OK);
        let refused = call
            .range()
            .any(|j| matches!(device(c.ev(j)), Some((NoteKind::StartRefused, _, _))));
        let scanned = pages_scanned(c.trace, call);
        let emptied = call
            .range()
            .any(|j| matches!(device(c.ev(j)), Some((NoteKind::FeederEmpty, _, _))));
        let (want, row): (Box<dyn Fn(Hresult) -> bool>, &str) =
            if device_fault_in(c.trace, call, FaultKind::MultiFeed).is_some() {
                (
                    Box::new(|h| h == Hresult::WIA_ERROR_MULTI_FEED),
                    "a multi-feed was detected: WIA_ERROR_MULTI_FEED",
                )
            } else if device_fault_in(c.trace, call, FaultKind::PaperJam).is_some() {
                (
                    Box::new(Hresult::failed),
                    "the paper jammed: a failure code",
                )
            } else if refused || (scanned == 0 && emptied) {
                (
                    Box::new(Hresult::failed),
                    "the feeder was empty at the first scan: a failure code",
                )
            } else if device_end_fault(c, call).is_some() {
                continue;
            } else if asked > 0 && scanned < asked && emptied {
                (
                    Box::new(|h| h == Hresult::WIA_STATUS_END_OF_MEDIA),
                    "the feeder ran out after at least one page: WIA_STATUS_END_OF_MEDIA",
                )
            } else {
                (
                    Box::new(|h| h == Hresult::S_OK),
                    "every page asked for was scanned (or the feeder emptied on pages = 0): S_OK",
                )
            };
        v.judged();
        if !want(hr) {
            v.fail(
                Some(call.n),
                call.ret.unwrap_or(call.end),
                format!(
                    "call {}: {scanned} page(s) scanned of {}; {row}, but drvAcquireItemData returned {hr}",
                    call.n,
                    if asked == 0 { "all".to_string() } else { asked.to_string() }
                ),
            );
        }
    }
    v.done()
}

/// Another aborting device fault in the call (not judged by the ADF table).
fn device_end_fault(c: &Ctx2<'_>, call: &Call) -> Option<usize> {
    call.range().find(|&i| {
        matches!(device(c.ev(i)), Some((NoteKind::Fault, _, d)) if crate::rules::analysis::aborting_fault(d))
    })
}

// ---- the service, restarts, idle cancels, hangs ----

pub(crate) fn v2_sticky(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for (i, e) in c.trace.events.iter().enumerate() {
        if !is_app_cancel(e) {
            continue;
        }
        v.judged();
        let notified = c
            .trace
            .events
            .get(i + 1)
            .is_some_and(|n| is_notify(n) && n.at_us == e.at_us);
        if !notified {
            v.fail(
                None,
                i,
                "the application called IWiaTransfer::Cancel, and the service did not deliver WIA_EVENT_CANCEL_IO".into(),
            );
        }
        let Some(x) = c
            .xfers
            .iter()
            .find(|x| x.start < i && x.done.is_none_or(|d| d > i))
        else {
            continue;
        };
        let end = x.done.unwrap_or(c.trace.events.len() - 1);
        for j in i + 1..=end {
            let r = gns(c.ev(j))
                .map(|(r, _, _)| r)
                .or_else(|| msg(c.ev(j)).map(|m| m.result));
            if let Some(r) = r {
                if r != Hresult::S_FALSE {
                    v.fail(
                        Some(x.calls.first().map_or(0, |k| k.n)),
                        j,
                        format!(
                            "after IWiaTransfer::Cancel at #{i} the service answered the driver {r}"
                        ),
                    );
                }
            }
        }
    }
    v.done()
}

pub(crate) fn h21_service_restart(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for (i, e) in c.trace.events.iter().enumerate() {
        if !matches!(e.kind, Kind::ServiceRestart {}) {
            continue;
        }
        let Some(next) = c.xfers.iter().find(|x| x.start > i) else {
            continue;
        };
        let Some(expect) = c.expect(next.n) else {
            continue;
        };
        if !expect.accepts(Hresult::S_OK) && !expect.accepts(Hresult::WIA_STATUS_END_OF_MEDIA) {
            continue;
        }
        v.judged();
        for call in &next.calls {
            let succeeded = call
                .hr
                .is_some_and(|h| h.succeeded() && h != Hresult::S_FALSE);
            if !succeeded {
                v.fail(
                    Some(call.n),
                    call.ret.or(call.fault).unwrap_or(call.end),
                    format!(
                        "the service restarted at #{i}; the next transfer's drvAcquireItemData returned {}",
                        hr_of(call)
                    ),
                );
            }
            for (j, s) in bad_stream_ends(c, call) {
                v.fail(
                    Some(call.n),
                    j,
                    format!(
                        "the service restarted at #{i}; stream {s} of the next transfer does not hold its image"
                    ),
                );
            }
        }
        if next.calls.is_empty() {
            v.fail(
                None,
                next.start,
                format!(
                    "the service restarted at #{i}; the next transfer never reached the driver"
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn h18_identical_device(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    let peers: Vec<(usize, u32, Hresult, bool)> = c
        .trace
        .events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match (&e.kind, e.actor) {
            (Kind::PeerTransfer { n, hr, whole, .. }, Actor::Service) => Some((i, *n, *hr, *whole)),
            _ => None,
        })
        .collect();
    if peers.is_empty() {
        return v.done();
    }
    for (i, n, hr, whole) in peers {
        v.judged();
        if hr.failed() || hr == Hresult::S_FALSE || !whole {
            v.fail(
                None,
                i,
                format!(
                    "the identical device's transfer {n}, made at the same time by another instance of the driver, returned {hr}{}",
                    if whole { "" } else { " and its streams do not hold their images" }
                ),
            );
        }
    }
    for x in &c.xfers {
        if c.expect(x.n) != Some(&Outcome::Complete) {
            continue;
        }
        for call in &x.calls {
            v.judged();
            if call.hr != Some(Hresult::S_OK) {
                v.fail(
                    Some(call.n),
                    call.ret.or(call.fault).unwrap_or(call.end),
                    format!(
                        "call {} returned {} while an identical device transferred at the same time",
                        call.n,
                        hr_of(call)
                    ),
                );
            }
            for (j, s) in bad_stream_ends(c, call) {
                v.fail(
                    Some(call.n),
                    j,
                    format!(
                        "call {}: stream {s} does not hold its image; an identical device transferred at the same time",
                        call.n
                    ),
                );
            }
        }
    }
    v.done()
}

pub(crate) fn h22_idle_cancel_io(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for (i, e) in c.trace.events.iter().enumerate() {
        if !is_notify(e) {
            continue;
        }
        let inside = c.calls().any(|k| k.start < i && i <= k.end);
        let in_xfer = c
            .xfers
            .iter()
            .any(|x| x.start < i && x.done.is_none_or(|d| d > i));
        if inside || in_xfer {
            continue;
        }
        v.judged();
        let next = c.xfers.iter().find(|x| x.start > i);
        let until = next.map_or(c.trace.events.len(), |x| x.start);
        for j in i + 1..until {
            let e = c.ev(j);
            if matches!(e.kind, Kind::DriverFault { .. }) {
                v.fail(
                    None,
                    j,
                    format!("after WIA_EVENT_CANCEL_IO while idle at #{i} the driver failed"),
                );
            } else if let Some(r) = transfer_failed(e) {
                v.fail(
                    None,
                    j,
                    format!(
                        "after WIA_EVENT_CANCEL_IO while idle at #{i} a USB transfer ended {r}"
                    ),
                );
            }
        }
        let Some(x) = next else { continue };
        if !c.left_alone(x.n) || c.expect(x.n) != Some(&Outcome::Complete) {
            continue;
        }
        for call in &x.calls {
            if call.hr != Some(Hresult::S_OK) {
                v.fail(
                    Some(call.n),
                    call.ret.or(call.fault).unwrap_or(call.end),
                    format!(
                        "after WIA_EVENT_CANCEL_IO while idle at #{i}, the next transfer's drvAcquireItemData returned {}",
                        hr_of(call)
                    ),
                );
            }
        }
    }
    v.done()
}

pub(crate) fn h26_no_eos_eot(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for call in c.calls() {
        for i in call.range() {
            let Some(m) = msg(c.ev(i)) else { continue };
            v.judged();
            if m.msg == TransferMsg::END_OF_STREAM || m.msg == TransferMsg::END_OF_TRANSFER {
                v.fail(
                    Some(call.n),
                    i,
                    format!("call {}: the driver sent {} itself", call.n, m.msg),
                );
            }
        }
    }
    v.done()
}

pub(crate) fn h28_upload_bad_stream(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for x in &c.xfers {
        let Some(t) = spec(c.facts.scenario, x.n) else {
            continue;
        };
        if !bad_upload(t) {
            continue;
        }
        for call in x.calls.iter().filter(|k| k.restart.is_none()) {
            v.judged();
            if let Some(f) = call.fault {
                v.fail(
                    Some(call.n),
                    f,
                    format!(
                        "call {}: an upload from an {} stream: the driver crashed or hung",
                        call.n,
                        upload_kind(t)
                    ),
                );
            } else if call.ret.is_none() {
                v.fail(
                    Some(call.n),
                    call.end,
                    format!(
                        "call {}: an upload from an {} stream never returned",
                        call.n,
                        upload_kind(t)
                    ),
                );
            }
        }
    }
    v.done()
}

fn upload_kind(t: &crate::scenario::wia2::Transfer2) -> &'static str {
    match t.upload {
        Some(crate::scenario::wia2::UploadSource::Empty) => "empty",
        _ => "invalid",
    }
}

pub(crate) fn no_hang(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    let budget = c.facts.scenario.budget_us;
    for call in c.calls() {
        v.judged();
        if let Some(f) = call.fault {
            let what = match &c.ev(f).kind {
                Kind::DriverFault { what } => what.clone(),
                _ => String::new(),
            };
            v.fail(Some(call.n), f, format!("call {}: {what}", call.n));
        } else if call.ret.is_none() && call.restart.is_none() {
            v.fail(
                Some(call.n),
                call.end,
                format!("call {}: drvAcquireItemData never returned", call.n),
            );
        } else if call.ret.is_some_and(|r| c.at(r) > budget) {
            v.fail(
                Some(call.n),
                call.ret.unwrap_or(call.end),
                format!("call {}: returned after the scenario's budget", call.n),
            );
        }
    }
    for (i, e) in c.trace.events.iter().enumerate() {
        if e.actor == Actor::Driver
            && matches!(e.kind, Kind::DriverFault { .. })
            && !c.calls().any(|k| k.fault == Some(i))
        {
            v.fail(
                None,
                i,
                "a driver fault outside any drvAcquireItemData".into(),
            );
        }
    }
    v.done()
}

pub(crate) fn outcome(c: &Ctx2<'_>) -> Judgement {
    let mut v = Verdict::default();
    for (k, t) in c.facts.scenario.transfers.iter().enumerate() {
        let n = k as u32 + 1;
        v.judged();
        let Some(x) = c.xfers.iter().find(|x| x.n == n) else {
            v.fail(
                None,
                c.trace.events.len().saturating_sub(1),
                format!("transfer {n} of the scenario never started"),
            );
            continue;
        };
        let restarted = x.calls.iter().any(|k| k.restart.is_some());
        let (got, at, call_n) = if restarted {
            (x.hr, x.done.unwrap_or(x.start), None)
        } else {
            match x.calls.last() {
                Some(call) => (call.hr, call.ret.unwrap_or(call.end), Some(call.n)),
                None => (None, x.done.unwrap_or(x.start), None),
            }
        };
        match got {
            Some(hr) if t.expect.accepts(hr) => {}
            Some(hr) => v.fail(
                call_n,
                at,
                format!(
                    "transfer {n} returned {hr}; the scenario expects {}",
                    serde_json::to_string(&t.expect).unwrap_or_default()
                ),
            ),
            None => v.fail(call_n, at, format!("transfer {n} never returned")),
        }
    }
    v.done()
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
