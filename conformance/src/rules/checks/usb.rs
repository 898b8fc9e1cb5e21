//! USB hygiene around a cancel: the Cancel Request sent, status polled to OK, halts cleared,
//! nothing left pending, no stale band (USB-CANCEL-SENT, USB-STATUS-POLLED, USB-HALTS-CLEARED,
//! USB-NO-PENDING, USB-NO-STALE).

use scanemu::personality::native::protocol::REQ_GET_DEVICE_STATUS;
use scanemu::personality::NoteKind;

use super::{describe_cp, Ctx, Verdict};
use crate::rules::analysis::{
    cancel_points, control, data_callback, device, device_status, is_cancel_request,
    is_device_reset, status_cancelled, status_ok, transfer_failed, Dev,
};
use crate::rules::Judgement;
use crate::trace::{ControlReply, Kind, TransferOutcome};

pub(crate) fn cancel_sent(c: &Ctx<'_>) -> Judgement {
    let mut v = Verdict::default();
    for a in &c.acqs {
        let (Some(ret), Some(hr)) = (a.ret, a.hr(c.trace)) else {
            continue;
        };
        let cps = cancel_points(c.trace, a);
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
            let state = if c.dev[ret] == Dev::Draining {
                "still held image data"
            } else {
                "was still scanning"
            };
            v.fail(
                Some(a.n),
                ret,
                format!(
                    "acquisition {} ended with {hr} ({why}) while the device {state}, and no Cancel Request (0x64) or Device Reset (0x66) was sent",
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
            c.dev[i] == Dev::Gone || transfer_failed(c.ev(i)) == Some(TransferOutcome::NoDevice)
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
                    .filter(|(request_type, req, _, _)| {
                        request_type & 0x60 != 0 && *req == REQ_GET_DEVICE_STATUS
                    })
                    .map(|(_, _, result, reply)| {
                        let answer = match reply {
                            ControlReply::None => result.to_string(),
                            reply => reply.to_string(),
                        };
                        format!("its last answer was {answer} at #{i}")
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
            let eps = device_status(e).map_or(&[][..], |st| &st.halted);
            for &ep in eps {
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
                    (Kind::ClearHalt { ep: x, result }, _) => *x == ep && result.is_ok(),
                    (_, Some((NoteKind::HaltCleared, value, _))) => value == u64::from(ep),
                    (_, Some((NoteKind::Idle | NoteKind::Reset, _, _))) => true,
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
