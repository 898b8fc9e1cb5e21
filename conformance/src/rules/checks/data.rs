//! The data and the progress the driver reports: contiguous and byte-exact bands whose
//! lLength is what they carry, within the transfer buffer, every page whole in a completed
//! transfer, percent, callback cadence (WIA-DATA-CONTIGUOUS, WIA-DATA-EXACT, WIA-DATA-LENGTH,
//! WIA-DATA-BUFFER, WIA-DATA-COMPLETE, WIA-PERCENT, WIA-CADENCE).

use std::collections::BTreeMap;

use super::{Ctx, Verdict};
use crate::rules::analysis::{
    callback, data_callback, first_stop_callback, ms, Acq, CADENCE_FLOOR_US,
};
use crate::rules::Judgement;
use crate::trace::{Actor, Kind};
use crate::wia::{Hresult, ItMsg};

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

pub(crate) fn data_length(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    let page_bytes = i64::try_from(c.facts.scenario.scan.job().page_bytes()).unwrap_or(i64::MAX);
    for a in &c.acqs {
        for i in a.range() {
            let Some(d) = data_callback(c.ev(i)) else {
                continue;
            };
            v.judged();
            if d.length != d.carried {
                v.fail(
                    Some(a.n),
                    i,
                    format!(
                        "acquisition {}, page {}: IT_MSG_DATA at offset {} says lLength {} but carries {} bytes",
                        a.n, d.page, d.offset, d.length, d.carried
                    ),
                );
            } else if d.offset < 0 || d.length < 0 || d.offset.saturating_add(d.length) > page_bytes
            {
                v.fail(
                    Some(a.n),
                    i,
                    format!(
                        "acquisition {}, page {}: IT_MSG_DATA at offset {} with lLength {} runs past the page's {page_bytes} bytes",
                        a.n, d.page, d.offset, d.length
                    ),
                );
            }
        }
    }
    v.done()
}

pub(crate) fn data_buffer(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    for a in &c.acqs {
        let buffer = i64::from(buffer_size(c, a));
        for i in a.range() {
            let Some(d) = data_callback(c.ev(i)) else {
                continue;
            };
            v.judged();
            let biggest = d.length.max(d.carried);
            if biggest > buffer {
                v.fail(
                    Some(a.n),
                    i,
                    format!(
                        "acquisition {}, page {}: IT_MSG_DATA at offset {} hands over {biggest} bytes, more than the {buffer}-byte transfer buffer (lBufferSize)",
                        a.n, d.page, d.offset
                    ),
                );
            }
        }
    }
    v.done()
}

/// lBufferSize of acquisition `a`: what the application's `acquire` said, else the scenario's.
fn buffer_size(c: &Ctx<'_>, a: &Acq) -> u32 {
    c.trace.events[..a.start]
        .iter()
        .rev()
        .find_map(|e| match (&e.kind, e.actor) {
            (Kind::Acquire { n, buffer, .. }, Actor::App) if *n == a.n => Some(*buffer),
            _ => None,
        })
        .unwrap_or(c.facts.scenario.buffer)
}

pub(crate) fn data_complete(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    let job = c.facts.scenario.scan.job();
    let page_bytes = job.page_bytes();
    // Flatbed: one page. ADF: the pages asked for (0 = until the feeder is empty: unknown).
    let wanted_pages = match job.source {
        scanemu::engine::ScanSource::Flatbed => Some(1u64),
        scanemu::engine::ScanSource::Adf => (job.pages > 0).then_some(u64::from(job.pages)),
    };
    for a in &c.acqs {
        let (Some(ret), Some(hr)) = (a.ret, a.hr(c.trace)) else {
            continue;
        };
        if hr != Hresult::S_OK && hr != Hresult::WIA_STATUS_END_OF_MEDIA {
            continue;
        }
        v.judged();
        // Bytes carried per page, and the last data callback.
        let mut pages: BTreeMap<u32, u64> = BTreeMap::new();
        let mut last = None;
        for i in a.range() {
            let Some(cb) = callback(c.ev(i)) else {
                continue;
            };
            let bytes = pages.entry(cb.page).or_default();
            if cb.msg == ItMsg::Data {
                *bytes += u64::try_from(cb.carried).unwrap_or(0);
                last = Some((i, cb));
            }
        }
        let delivered = pages.keys().next_back().map_or(0, |p| u64::from(*p) + 1);
        let short = (0..delivered as u32)
            .map(|p| (p, pages.get(&p).copied().unwrap_or(0)))
            .find(|(_, got)| *got != page_bytes);
        if let Some((page, got)) = short {
            v.fail(
                Some(a.n),
                ret,
                format!(
                    "acquisition {} returned {hr} but page {page} carried {got} of its {page_bytes} bytes",
                    a.n
                ),
            );
            continue;
        }
        if hr != Hresult::S_OK {
            continue;
        }
        if let Some(want) = wanted_pages.filter(|w| delivered != *w) {
            v.fail(
                Some(a.n),
                ret,
                format!(
                    "acquisition {} returned S_OK after {delivered} of the {want} page(s) asked for",
                    a.n
                ),
            );
            continue;
        }
        match last {
            Some((i, cb)) if wanted_pages.is_some() && cb.percent != 100 => v.fail(
                Some(a.n),
                i,
                format!(
                    "acquisition {} returned S_OK but its last IT_MSG_DATA reported {}%, not 100%",
                    a.n, cb.percent
                ),
            ),
            _ => {}
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
        let limit = cadence_limit_us(duration);
        let mut prev = a.start;
        for &i in &points {
            let gap = c.net_us(prev, i);
            if gap > limit {
                v.fail(
                    Some(a.n),
                    i,
                    format!(
                        "acquisition {}: no callback for {} (#{prev} to #{i}){}; the limit is {} = max(100 ms, min(1 s, transfer {} / 10)) x 1.5",
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

/// The longest gap WIA-CADENCE allows in a transfer of `duration_us`: "about ten times, or
/// roughly once per second during the transfer, whichever is more often" is the shorter of the
/// two intervals, min(1 s, duration / 10); never below [`CADENCE_FLOOR_US`]; times 1.5 for
/// "about" and "roughly".
pub(crate) fn cadence_limit_us(duration_us: u64) -> u64 {
    (duration_us / 10).clamp(CADENCE_FLOOR_US, 1_000_000) * 3 / 2
}
