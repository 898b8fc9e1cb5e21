//! The check of each rule, and the run's metrics.

use std::collections::BTreeSet;

use super::analysis::{
    acquisitions, bulk_in_data, callback, cancel_points, completed_before, control, data_callback,
    device, device_states, first_stop_callback, first_stopped, halted_in_reply, in_flight_callback,
    is_app_cancel, is_cancel_request, is_device_reset, is_notify, is_start_scan, ms,
    status_cancelled, status_ok, transfer_failed, Acq, Cp, CpKind, Dev, CANCEL_IO_WIRE_US,
    IDLE_SLACK_US,
};
use super::{Finding, Judgement, Metrics, RunFacts};
use crate::scenario::{Outcome, ServiceModel};
use crate::trace::{Event, Kind, Trace};
use crate::wia::{Hresult, ItMsg};

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

    /// A cancel on the wire (for CANCEL_IO): Cancel Request, Device Reset, port reset or abort.
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

    /// ", host lag X subtracted" for messages of real-time runs with lag in the interval.
    fn lag_note(&self, from_us: u64, to_us: u64) -> String {
        match self.lag_between(from_us, to_us) {
            0 => String::new(),
            lag => format!(" (net of {} host lag: threads waiting for a CPU)", ms(lag)),
        }
    }

    fn wire_cancel_within(&self, notify: usize, end: usize) -> Option<usize> {
        (notify + 1..=end.min(self.trace.events.len().saturating_sub(1)))
            .take_while(|&i| self.net_us(notify, i) <= CANCEL_IO_WIRE_US)
            .find(|&i| {
                let e = self.ev(i);
                is_cancel_request(e) || is_device_reset(e) || matches!(e.kind, Kind::Abort { .. })
            })
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

    fn fail(&mut self, acq: Option<u32>, event: usize, message: String) {
        self.judged = true;
        self.findings.push(Finding {
            acquisition: acq,
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

// ---- rules ----

pub(crate) fn cb_stop(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    for a in &c.acqs {
        let Some((si, stop)) = first_stop_callback(c.trace, a) else {
            continue;
        };
        v.judged();
        for i in si + 1..=a.end {
            if let Some(d) = data_callback(c.ev(i)) {
                v.fail(
                    Some(a.n),
                    i,
                    format!(
                        "acquisition {}: IT_MSG_DATA (offset {}, {} bytes) delivered after the callback at #{si} returned {}",
                        a.n, d.offset, d.length, stop.result
                    ),
                );
            }
        }
    }
    v.done()
}

pub(crate) fn ret_sfalse(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    for a in &c.acqs {
        let (Some(ret), Some(hr)) = (a.ret, a.hr(c.trace)) else {
            continue;
        };
        let cps = cancel_points(c.trace, a);
        let first = cps.iter().find(|cp| match cp.kind {
            CpKind::Notify => c.facts.async_cancel && !completed_before(&c.facts, a, cp.idx),
            _ => true,
        });
        let Some(cp) = first else { continue };
        if !matches!(
            cp.kind,
            CpKind::SFalse | CpKind::Notify | CpKind::DeviceCancel
        ) {
            continue;
        }
        v.judged();
        // A device that left the bus during the cancel may end it with an error instead.
        let gone_after = c.gone_between(cp.idx, ret);
        if hr == Hresult::S_FALSE || (gone_after && !hr.succeeded()) {
            continue;
        }
        v.fail(
            Some(a.n),
            ret,
            format!(
                "acquisition {} was cancelled ({}) but drvAcquireItemData returned {hr}, not S_FALSE",
                a.n,
                describe_cp(cp)
            ),
        );
    }
    v.done()
}

pub(crate) fn err_propagate(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    for a in &c.acqs {
        let (Some(ret), Some(hr)) = (a.ret, a.hr(c.trace)) else {
            continue;
        };
        let Some((si, stop)) = first_stop_callback(c.trace, a) else {
            continue;
        };
        if stop.result.succeeded() {
            continue;
        }
        v.judged();
        if hr != stop.result {
            v.fail(
                Some(a.n),
                ret,
                format!(
                    "acquisition {}: the callback at #{si} returned {} but drvAcquireItemData returned {hr}",
                    a.n, stop.result
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn outcome(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    for a in &c.acqs {
        let Some(expect) = c.expect(a.n) else {
            continue;
        };
        v.judged();
        let (Some(ret), Some(hr)) = (a.ret, a.hr(c.trace)) else {
            v.fail(
                Some(a.n),
                a.fault.unwrap_or(a.end),
                format!(
                    "acquisition {} never returned (expected {})",
                    a.n,
                    outcome_name(expect)
                ),
            );
            continue;
        };
        let ok = expect.accepts(hr);
        if !ok {
            v.fail(
                Some(a.n),
                ret,
                format!(
                    "acquisition {} returned {hr}; the scenario expects {}",
                    a.n,
                    outcome_name(expect)
                ),
            );
        }
    }
    if !c.trace.events.is_empty() {
        let ran: BTreeSet<u32> = c.acqs.iter().map(|a| a.n).collect();
        for n in 1..=c.facts.scenario.acquisitions.len() as u32 {
            if !ran.contains(&n) {
                v.fail(
                    Some(n),
                    c.trace.events.len() - 1,
                    format!("acquisition {n} of the scenario never started"),
                );
            }
        }
    }
    v.done()
}

fn outcome_name(o: &Outcome) -> String {
    match o {
        Outcome::Complete => "complete (S_OK)".into(),
        Outcome::Cancelled => "cancelled (S_FALSE)".into(),
        Outcome::Hresult(h) => format!("exactly {h}"),
        Outcome::Error => "an error (FAILED(hr))".into(),
        Outcome::OneOf(all) => {
            let names: Vec<String> = all.iter().map(outcome_name).collect();
            format!("one of {}", names.join(", "))
        }
    }
}

pub(crate) fn cancel_io_asap(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    if !c.facts.async_cancel {
        return v.done();
    }
    for a in &c.acqs {
        for ni in a.range().filter(|&i| is_notify(c.ev(i))) {
            if completed_before(&c.facts, a, ni) {
                continue;
            }
            v.judged();
            let in_flight = in_flight_callback(c.trace, ni);
            if let Some(di) =
                (ni + 1..=a.end).find(|&i| Some(i) != in_flight && data_callback(c.ev(i)).is_some())
            {
                v.fail(
                    Some(a.n),
                    di,
                    format!(
                        "acquisition {}: IT_MSG_DATA delivered {} after WIA_EVENT_CANCEL_IO at #{ni}",
                        a.n,
                        ms(c.at(di) - c.at(ni))
                    ),
                );
            }
            if c.dev[ni].busy() && c.wire_cancel_within(ni, a.end).is_none() {
                let deadline = c.at(ni) + CANCEL_IO_WIRE_US;
                let late = (ni + 1..=a.end).find(|&i| {
                    let e = c.ev(i);
                    is_cancel_request(e)
                        || is_device_reset(e)
                        || matches!(e.kind, Kind::Abort { .. })
                });
                let when = match late {
                    Some(i) => format!(
                        "the first came {} later (#{i}){}",
                        ms(c.net_us(ni, i)),
                        c.lag_note(c.at(ni), c.at(i))
                    ),
                    None => "none came before the acquisition ended".into(),
                };
                v.fail(
                    Some(a.n),
                    c.first_after(ni, deadline).min(a.end.max(ni)),
                    format!(
                        "acquisition {}: WIA_EVENT_CANCEL_IO at #{ni} while the device was scanning, but no Cancel Request, Device Reset or endpoint abort within 10 ms; {when}",
                        a.n
                    ),
                );
            }
        }
    }
    v.done()
}

pub(crate) fn xp_gap(c: &Ctx<'_>) -> Judgement {
    if c.facts.service != ServiceModel::Xp || c.facts.async_cancel {
        return Judgement::NotApplicable;
    }
    let has_band_sent = c
        .trace
        .events
        .iter()
        .any(|e| matches!(device(e), Some(("band-sent", _, _))));
    let mut parts = Vec::new();
    for a in &c.acqs {
        let Some(ni) = a.range().find(|&i| is_notify(c.ev(i))) else {
            continue;
        };
        let mut bands = 0u32;
        let mut bytes = 0u64;
        for i in ni + 1..=a.end {
            let e = c.ev(i);
            if let Some((_, actual)) = bulk_in_data(e) {
                bytes += u64::from(actual);
                if !has_band_sent {
                    bands += 1;
                }
            }
            if has_band_sent && matches!(device(e), Some(("band-sent", _, _))) {
                bands += 1;
            }
        }
        let learned = (ni + 1..=a.end)
            .find(|&i| callback(c.ev(i)).is_some_and(|cb| cb.result == Hresult::S_FALSE));
        let learned = match learned {
            Some(i) => format!(
                "the driver learned of the cancel {} later, from a callback's S_FALSE at #{i}",
                ms(c.at(i) - c.at(ni))
            ),
            None => "no callback returned S_FALSE afterwards".into(),
        };
        parts.push(format!(
            "acquisition {}: {bands} band(s), {bytes} bytes read from the device after CancelPendingIO at #{ni}; {learned}",
            a.n
        ));
    }
    if parts.is_empty() {
        Judgement::NotApplicable
    } else {
        Judgement::Report(parts.join("; "))
    }
}

pub(crate) fn vista_sticky(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    if c.facts.service != ServiceModel::Vista {
        return v.done();
    }
    for a in &c.acqs {
        let cancels: Vec<usize> = a.range().filter(|&i| is_app_cancel(c.ev(i))).collect();
        let Some(&first) = cancels.first() else {
            continue;
        };
        v.judged();
        for (k, &ci) in cancels.iter().enumerate() {
            let until = cancels.get(k + 1).copied().unwrap_or(c.trace.events.len());
            if !(ci + 1..until).any(|i| is_notify(c.ev(i))) {
                v.fail(
                    Some(a.n),
                    ci,
                    format!(
                        "acquisition {}: the application cancelled at #{ci} but the service did not deliver WIA_EVENT_CANCEL_IO",
                        a.n
                    ),
                );
            }
        }
        // The callback the application cancelled from inside keeps its own answer.
        let in_flight: Vec<usize> = cancels
            .iter()
            .filter_map(|&ci| in_flight_callback(c.trace, ci))
            .collect();
        for i in first + 1..=a.end {
            if in_flight.contains(&i) {
                continue;
            }
            if let Some(cb) = callback(c.ev(i)) {
                if cb.result != Hresult::S_FALSE || !cb.sticky {
                    v.fail(
                        Some(a.n),
                        i,
                        format!(
                            "acquisition {}: {} callback after Cancel at #{first} returned {} (sticky={}), not the sticky S_FALSE",
                            a.n,
                            cb.msg.name(),
                            cb.result,
                            cb.sticky
                        ),
                    );
                }
            }
        }
    }
    v.done()
}

pub(crate) fn idle_after_cancel(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    for a in &c.acqs {
        if a.ret.is_none() {
            continue;
        }
        let Some(cp) = c.acted_cancel_point(a) else {
            continue;
        };
        let stopped = first_stopped(c.trace, &c.dev, cp.idx);
        let horizon = stopped.map_or(c.dev.len().saturating_sub(1), |(i, _)| i);
        if c.gone_between(cp.idx, horizon) {
            continue;
        }
        v.judged();
        // The device's own stop time is not the driver's: allow the longest observed
        // cancel-requested -> motor-stopped interval when it exceeds the profile's.
        let mut observed = 0u64;
        let mut requested: Option<u64> = None;
        for i in cp.idx..=horizon {
            match device(c.ev(i)) {
                Some(("cancel-requested", _, _)) => requested = Some(c.at(i)),
                Some(("motor-stopped", _, _)) => {
                    if let Some(t) = requested.take() {
                        observed = observed.max(c.at(i) - t);
                    }
                }
                _ => {}
            }
        }
        let stop_us = c.facts.motor_stop_us.max(observed);
        let budget = stop_us + IDLE_SLACK_US;
        let deadline = cp.at + budget;
        let over = match stopped {
            Some((_, t)) if c.net_between(cp.at, t) <= budget => continue,
            Some((i, t)) => format!(
                "the device was idle only at #{i}, {} after it{}",
                ms(c.net_between(cp.at, t)),
                c.lag_note(cp.at, t)
            ),
            None => "the device never became idle".into(),
        };
        v.fail(
            Some(a.n),
            c.first_after(cp.idx, deadline),
            format!(
                "acquisition {}: cancel point ({}); {over}; budget {} (motor stop {} + 50 ms)",
                a.n,
                describe_cp(&cp),
                ms(budget),
                ms(stop_us)
            ),
        );
    }
    v.done()
}

pub(crate) fn next_transfer(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    for w in c.acqs.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if a.ret.is_none() || !c.ended_badly(a) {
            continue;
        }
        if c.expect(b.n) != Some(&Outcome::Complete) {
            continue;
        }
        let (Some(ret), Some(hr)) = (b.ret, b.hr(c.trace)) else {
            continue;
        };
        v.judged();
        let refused = b.range().find(|&i| {
            let e = c.ev(i);
            matches!(device(e), Some(("start-refused", _, _)))
                || (is_start_scan(e) && control(e).is_some_and(|(_, _, r, _)| r != "ok"))
        });
        if let Some(i) = refused {
            v.fail(
                Some(b.n),
                i,
                format!(
                    "acquisition {} (after acquisition {} ended {}): the device refused the scan",
                    b.n,
                    a.n,
                    a.hr(c.trace).map_or("?".into(), |h| h.to_string())
                ),
            );
        } else if hr != Hresult::S_OK {
            v.fail(
                Some(b.n),
                ret,
                format!(
                    "acquisition {} (after acquisition {} was cancelled or failed) returned {hr}, not S_OK",
                    b.n, a.n
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn data_contiguous(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    for a in &c.acqs {
        let mut cur: Option<(u32, i64)> = None;
        for i in a.range() {
            let Some(d) = data_callback(c.ev(i)) else {
                continue;
            };
            v.judged();
            let (expected, why) = match cur {
                Some((page, next)) if page == d.page => (next, "where the previous band ended"),
                _ => (0, "the first band of a page starts at 0"),
            };
            if d.offset != expected {
                v.fail(
                    Some(a.n),
                    i,
                    format!(
                        "acquisition {}, page {}: IT_MSG_DATA at offset {} (length {}), expected offset {expected} ({why})",
                        a.n, d.page, d.offset, d.length
                    ),
                );
            }
            cur = Some((d.page, d.offset + d.length));
        }
    }
    v.done()
}

pub(crate) fn data_exact(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    for a in &c.acqs {
        for i in a.range() {
            let Some(d) = data_callback(c.ev(i)) else {
                continue;
            };
            v.judged();
            if d.crc != d.expect_crc {
                v.fail(
                    Some(a.n),
                    i,
                    format!(
                        "acquisition {}, page {}: IT_MSG_DATA (offset {}, {} bytes) has crc {:08x}, the image there has {:08x}",
                        a.n, d.page, d.offset, d.length, d.crc, d.expect_crc
                    ),
                );
            }
        }
    }
    v.done()
}

pub(crate) fn percent(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    for a in &c.acqs {
        let stop = first_stop_callback(c.trace, a).map(|(i, _)| i);
        let mut last: Option<(u32, i32)> = None;
        for i in a.range() {
            let Some(cb) = callback(c.ev(i)) else {
                continue;
            };
            v.judged();
            let p = cb.percent;
            if !(0..=100).contains(&p) {
                v.fail(
                    Some(a.n),
                    i,
                    format!(
                        "acquisition {}: {} with percent {p}, outside 0..=100",
                        a.n,
                        cb.msg.name()
                    ),
                );
            }
            if let Some((page, prev)) = last {
                if page == cb.page && cb.msg != ItMsg::NewPage && p < prev {
                    v.fail(
                        Some(a.n),
                        i,
                        format!(
                            "acquisition {}, page {}: percent went back from {prev} to {p} ({})",
                            a.n,
                            cb.page,
                            cb.msg.name()
                        ),
                    );
                }
            }
            if p == 100 {
                if let Some(si) = stop.filter(|&si| i > si) {
                    v.fail(
                        Some(a.n),
                        i,
                        format!(
                            "acquisition {}: {} reports 100% after the callback at #{si} stopped the transfer",
                            a.n,
                            cb.msg.name()
                        ),
                    );
                } else if let Some(j) = (i + 1..=a.end)
                    .find(|&j| data_callback(c.ev(j)).is_some_and(|d| d.page == cb.page))
                {
                    v.fail(
                        Some(a.n),
                        i,
                        format!(
                            "acquisition {}, page {}: 100% reported while more IT_MSG_DATA of the page followed (#{j})",
                            a.n, cb.page
                        ),
                    );
                }
            }
            last = Some((cb.page, p));
        }
    }
    v.done()
}

pub(crate) fn cadence(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    for a in &c.acqs {
        // The transfer as the application sees it: from drvAcquireItemData to the last
        // callback, or to the callback that stopped it.
        let stop = first_stop_callback(c.trace, a).map(|(i, _)| i);
        let points: Vec<usize> = a
            .range()
            .filter(|&i| callback(c.ev(i)).is_some() && stop.is_none_or(|s| i <= s))
            .collect();
        if !points.iter().any(|&i| data_callback(c.ev(i)).is_some()) {
            continue;
        }
        v.judged();
        let Some(&last) = points.last() else { continue };
        let duration = c.at(last) - c.at(a.start);
        let limit = (duration / 10).max(1_000_000) * 3 / 2;
        let mut prev = a.start;
        for &i in &points {
            let gap = c.net_us(prev, i);
            if gap > limit {
                v.fail(
                    Some(a.n),
                    i,
                    format!(
                        "acquisition {}: no callback for {} (#{prev} to #{i}){}; the limit is {} = max(1 s, transfer {} / 10) x 1.5",
                        a.n,
                        ms(gap),
                        c.lag_note(c.at(prev), c.at(i)),
                        ms(limit),
                        ms(duration)
                    ),
                );
            }
            prev = i;
        }
    }
    v.done()
}

pub(crate) fn cancel_sent(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    for a in &c.acqs {
        let (Some(ret), Some(hr)) = (a.ret, a.hr(c.trace)) else {
            continue;
        };
        let cps = cancel_points(c.trace, a);
        if cps.is_empty() && hr == Hresult::S_OK {
            continue;
        }
        let from = cps.first().map_or(a.start, |cp| cp.idx);
        let busy_at_return = c.dev[ret].busy();
        if !busy_at_return && !c.dev[from].busy() {
            continue;
        }
        v.judged();
        if !busy_at_return {
            continue;
        }
        let sent = (from..=ret).any(|i| is_cancel_request(c.ev(i)) || is_device_reset(c.ev(i)));
        if !sent {
            let why = cps
                .first()
                .map_or_else(|| format!("it returned {hr}"), describe_cp);
            v.fail(
                Some(a.n),
                ret,
                format!(
                    "acquisition {} ended with {hr} ({why}) while the device was still scanning, and no Cancel Request (0x64) or Device Reset (0x66) was sent",
                    a.n
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn status_polled(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    for a in &c.acqs {
        let Some(ret) = a.ret else { continue };
        let Some(ci) = (a.start..=ret).rev().find(|&i| is_cancel_request(c.ev(i))) else {
            continue;
        };
        let no_device = (ci..=ret).any(|i| {
            c.dev[i] == Dev::Gone || transfer_failed(c.ev(i)).is_some_and(|r| r == "no-device")
        });
        if no_device {
            continue;
        }
        v.judged();
        let resolved = (ci + 1..ret).any(|i| {
            let e = c.ev(i);
            status_ok(e)
                || status_cancelled(e)
                || (is_device_reset(e) && transfer_failed(e).is_none())
        });
        if !resolved {
            let last = (ci + 1..ret).rev().find_map(|i| {
                control(c.ev(i))
                    .filter(|(_, name, _, _)| *name == "GET_DEVICE_STATUS")
                    .map(|(_, _, result, reply)| {
                        format!(
                            "its last answer was {} at #{i}",
                            if reply.is_empty() { result } else { reply }
                        )
                    })
            });
            v.fail(
                Some(a.n),
                ret,
                format!(
                    "acquisition {}: Cancel Request at #{ci}, then drvAcquireItemData returned before Get Device Status answered OK (0x2001); {}",
                    a.n,
                    last.unwrap_or_else(|| "it was never polled".into())
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn halts_cleared(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    for a in &c.acqs {
        let Some(ret) = a.ret else { continue };
        // Last listing of each halted endpoint before the return.
        let mut listed: Vec<(u8, usize)> = Vec::new();
        for i in a.start..ret {
            let e = c.ev(i);
            if !status_cancelled(e) {
                continue;
            }
            let eps = control(e).map_or(Vec::new(), |(_, _, _, reply)| halted_in_reply(reply));
            for ep in eps {
                match listed.iter_mut().find(|(e, _)| *e == ep) {
                    Some(slot) => slot.1 = i,
                    None => listed.push((ep, i)),
                }
            }
        }
        if listed.is_empty() {
            continue;
        }
        v.judged();
        for (ep, li) in listed {
            let cleared = (li + 1..ret).any(|i| {
                let e = c.ev(i);
                match (&e.kind, device(e)) {
                    (Kind::ClearHalt { ep: x, result }, _) => *x == ep && result == "ok",
                    (_, Some(("halt-cleared", value, _))) => value == u64::from(ep),
                    (_, Some(("idle" | "reset", _, _))) => true,
                    _ => is_device_reset(e) && transfer_failed(e).is_none(),
                }
            });
            if !cleared {
                v.fail(
                    Some(a.n),
                    ret,
                    format!(
                        "acquisition {}: endpoint 0x{ep:02x}, listed halted at #{li}, was neither cleared (CLEAR_FEATURE(ENDPOINT_HALT)) nor reset before drvAcquireItemData returned",
                        a.n
                    ),
                );
            }
        }
    }
    v.done()
}

pub(crate) fn no_pending(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    for a in &c.acqs {
        let Some(ret) = a.ret else { continue };
        v.judged();
        if let Kind::AcquireReturn { pending, hr, .. } = &c.ev(ret).kind {
            if *pending > 0 {
                v.fail(
                    Some(a.n),
                    ret,
                    format!(
                        "acquisition {}: drvAcquireItemData returned {hr} with {pending} USB transfer(s) still pending",
                        a.n
                    ),
                );
            }
        }
    }
    v.done()
}

pub(crate) fn no_stale(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    for w in c.acqs.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if !c.ended_badly(a) {
            continue;
        }
        let Some((i, d)) = b
            .range()
            .find_map(|i| data_callback(c.ev(i)).map(|d| (i, d)))
        else {
            continue;
        };
        v.judged();
        if d.crc != d.expect_crc {
            v.fail(
                Some(b.n),
                i,
                format!(
                    "acquisition {}: its first IT_MSG_DATA (offset {}, {} bytes, crc {:08x}) is not the new image's first bytes (crc {:08x}); stale data after acquisition {} was cancelled or failed",
                    b.n, d.offset, d.length, d.crc, d.expect_crc, a.n
                ),
            );
        }
    }
    v.done()
}

pub(crate) fn fault_no_hang(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    if !c.acqs.is_empty() {
        v.judged();
    }
    for (i, e) in c.trace.events.iter().enumerate() {
        if let Kind::DriverFault { what } = &e.kind {
            let acq = match c.acq_of(i) {
                Some(a) => a.n,
                None => c.acqs.iter().filter(|a| a.start < i).count() as u32 + 1,
            };
            v.fail(
                Some(acq),
                i,
                format!("driver fault during acquisition {acq}: {what}"),
            );
        }
    }
    for a in &c.acqs {
        match a.ret {
            None if a.fault.is_none() => v.fail(
                Some(a.n),
                a.end,
                format!("acquisition {}: drvAcquireItemData never returned", a.n),
            ),
            Some(ret) if c.at(ret) > c.facts.scenario.budget_us => v.fail(
                Some(a.n),
                ret,
                format!(
                    "acquisition {}: drvAcquireItemData returned at {}, after the scenario budget of {}",
                    a.n,
                    ms(c.at(ret)),
                    ms(c.facts.scenario.budget_us)
                ),
            ),
            _ => {}
        }
    }
    v.done()
}

pub(crate) fn idle_cancel_harmless(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    let n_events = c.trace.events.len();
    let mut next_checked = BTreeSet::new();
    for ci in (0..n_events).filter(|&i| is_app_cancel(c.ev(i)) && c.acq_of(i).is_none()) {
        v.judged();
        let next = c.acqs.iter().find(|a| a.start > ci);
        let window_end = next.map_or(n_events, |a| a.start);
        for i in ci + 1..window_end {
            if let Some(result) = transfer_failed(c.ev(i)) {
                v.fail(
                    next.map(|a| a.n),
                    i,
                    format!(
                        "after CancelPendingIO while idle (#{ci}), a USB transfer failed: {result}"
                    ),
                );
            }
        }
        let Some(b) = next else { continue };
        if !next_checked.insert(b.n) || c.expect(b.n) != Some(&Outcome::Complete) {
            continue;
        }
        if let (Some(ret), Some(hr)) = (b.ret, b.hr(c.trace)) {
            if hr != Hresult::S_OK {
                v.fail(
                    Some(b.n),
                    ret,
                    format!(
                        "acquisition {} after CancelPendingIO while idle (#{ci}) returned {hr}, not S_OK",
                        b.n
                    ),
                );
            }
        }
    }
    for a in &c.acqs {
        // A CancelPendingIO after the acquisition already had a cancel point (an earlier
        // CancelPendingIO's event, a callback's S_FALSE or error, a device fault).
        let cps = cancel_points(c.trace, a);
        let Some(second) = a
            .range()
            .find(|&i| is_app_cancel(c.ev(i)) && cps.iter().any(|cp| cp.idx < i))
        else {
            continue;
        };
        v.judged();
        for i in second + 1..=a.end {
            if let Some(result) = transfer_failed(c.ev(i)) {
                v.fail(
                    Some(a.n),
                    i,
                    format!(
                        "acquisition {}: after CancelPendingIO on an already cancelled transfer (#{second}), a USB transfer failed: {result}",
                        a.n
                    ),
                );
            }
        }
    }
    v.done()
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
        .any(|e| matches!(device(e), Some(("band-sent", _, _))));
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
                    matches!(device(e), Some(("band-sent", _, _)))
                } else {
                    bulk_in_data(e).is_some()
                }
            })
            .count() as u32;
        *m.bands_wasted.get_or_insert(0) += wasted;
    }
    m
}
