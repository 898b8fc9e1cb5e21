//! The WIA 2.0 checks of H1, H2 (stream methods), H3, H4 (progress), H5, H20, H8, H9 (where the data goes).

use super::*;

pub(super) fn stream_methods(
    c: &Ctx2<'_>,
    upload: bool,
    forbidden: &[StreamMethod],
    what: &str,
) -> Judgement {
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

/// An undisturbed download call that returned success.
pub(super) fn clean(c: &Ctx2<'_>, call: &Call) -> bool {
    !call.upload()
        && call.returned()
        && call.hr.is_some_and(Hresult::succeeded)
        && call.hr != Some(Hresult::S_FALSE)
        && undisturbed(c.trace, call)
}

/// The number of items a download call transfers: folder children, else one.
pub(super) fn items(c: &Ctx2<'_>, call: &Call) -> u32 {
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
