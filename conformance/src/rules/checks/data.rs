//! The data and the progress the driver reports: contiguous and byte-exact bands, percent,
//! callback cadence (WIA-DATA-CONTIGUOUS, WIA-DATA-EXACT, WIA-PERCENT, WIA-CADENCE).

use super::{Ctx, Verdict};
use crate::rules::analysis::{callback, data_callback, first_stop_callback, ms};
use crate::rules::Judgement;
use crate::wia::ItMsg;

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
