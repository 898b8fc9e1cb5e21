//! The WIA trace as a timeline: lanes app, service, driver, usb, device. The device lane
//! shows each band as a block from `band-ready` to `band-sent` (orange when it was read after a
//! cancel point of its acquisition, grey and dashed when it was never sent) and the motor as a
//! bar (teal running, orange stopping after a cancel request); the driver lane shows each
//! acquisition as a span from drvAcquireItemData to its return.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{
    escape, glyph, render, Dot, Glyph, Lane, Layout, Mark, Picture, Shape, SvgOptions, RIGHT_PAD,
};
use crate::trace::{render_event, request_name, Actor, Event, Kind, Trace};
use crate::wia::{Hresult, ItMsg};

const LANE_H: f64 = 56.0;
const DEVICE_LANE_H: f64 = 62.0;

const ACTORS: [Actor; 5] = [
    Actor::App,
    Actor::Service,
    Actor::Driver,
    Actor::Usb,
    Actor::Device,
];

fn lane_of(a: Actor) -> usize {
    ACTORS.iter().position(|x| *x == a).unwrap_or(0)
}

/// One event's tooltip text: `#N` and its text rendering with runs of spaces collapsed.
pub fn event_tooltip(i: usize, e: &Event) -> String {
    let text = render_event(e);
    format!(
        "#{i} {}",
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

/// Draws one run's WIA trace as an SVG document fragment (`<svg ...>...</svg>`); a mark's
/// `event` is an index into `trace.events`.
pub fn render_svg(trace: &Trace, marks: &[Mark], opts: &SvgOptions) -> String {
    render(&WiaPicture(trace), marks, opts)
}

struct WiaPicture<'a>(&'a Trace);

impl Picture for WiaPicture<'_> {
    fn lanes(&self) -> Vec<Lane> {
        ACTORS
            .iter()
            .map(|a| Lane {
                name: a.name(),
                height: if *a == Actor::Device {
                    DEVICE_LANE_H
                } else {
                    LANE_H
                },
                dot_dy: (*a == Actor::Device).then_some(24.0),
            })
            .collect()
    }

    fn dots(&self) -> Vec<Dot> {
        self.0
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| Dot {
                at_us: e.at_us,
                lane: lane_of(e.actor),
                glyph: event_glyph(e),
                id: i.to_string(),
                tooltip: event_tooltip(i, e),
            })
            .collect()
    }

    fn spans(&self, _dots: &[Dot], layout: &Layout, lanes: &[(f64, f64)]) -> String {
        spans(&self.0.events, layout, lanes)
    }

    fn legend(&self) -> String {
        legend_group()
    }

    fn noun(&self) -> &'static str {
        "event"
    }
}

/// Acquisitions on the driver lane, motor bar and bands on the device lane.
fn spans(events: &[Event], layout: &Layout, lanes: &[(f64, f64)]) -> String {
    let dev = lane_of(Actor::Device);
    let (dev_y, _) = lanes[dev];
    let drv = lane_of(Actor::Driver);
    let (drv_y, drv_h) = lanes[drv];
    let mut acq_start: BTreeMap<u32, usize> = BTreeMap::new();
    let mut motor_from: Option<usize> = None;
    let mut stopping_from: Option<usize> = None;
    let mut bands: BTreeMap<(u32, u64), usize> = BTreeMap::new();
    let mut cancelled_acq = false;
    let mut spans = String::new();
    let end_x = layout.width - RIGHT_PAD;
    let motor_bar = |spans: &mut String, from: f64, to: f64, class: &str| {
        let _ = write!(
            spans,
            r#"<rect class="{class}" x="{from:.0}" y="{:.0}" width="{:.0}" height="5"/>"#,
            dev_y + 38.0,
            (to - from).max(2.0)
        );
    };
    for (i, e) in events.iter().enumerate() {
        let x = layout.x[i];
        if is_cancel_point(e) {
            cancelled_acq = true;
        }
        match &e.kind {
            Kind::DrvAcquireItemData { n } | Kind::DrvAcquireItemData2 { n, .. } => {
                acq_start.insert(*n, i);
                cancelled_acq = false;
            }
            Kind::AcquireReturn { n, hr, .. } => {
                if let Some(s) = acq_start.remove(n) {
                    let x0 = layout.x[s];
                    let _ = write!(
                        spans,
                        r#"<g><rect class="acq" x="{x0:.0}" y="{:.0}" width="{:.0}" height="{:.0}" rx="3"/><title>acquisition {n}: events #{s}..#{i}, drvAcquireItemData returned {hr}</title></g>"#,
                        drv_y + 9.0,
                        (x - x0).max(2.0),
                        drv_h - 18.0
                    );
                }
            }
            _ => {}
        }
        if let Some((what, page, value)) = device_what(e) {
            match what {
                "scan-started" | "resumed" | "page-feed" if motor_from.is_none() => {
                    motor_from = Some(i);
                }
                "cancel-requested" if motor_from.is_some() && stopping_from.is_none() => {
                    stopping_from = Some(i);
                }
                w if motor_ends(w) => {
                    if let Some(m) = motor_from.take() {
                        let stop = stopping_from.take();
                        let run_end = stop.map(|s| layout.x[s]).unwrap_or(x);
                        motor_bar(&mut spans, layout.x[m], run_end, "motor-run");
                        if stop.is_some() {
                            motor_bar(&mut spans, run_end, x, "motor-stop");
                        }
                    }
                }
                "band-ready" => {
                    bands.insert((page, value), i);
                }
                "band-sent" => {
                    if let Some(r) = bands.remove(&(page, value)) {
                        let x0 = layout.x[r] - 3.5;
                        let class = if cancelled_acq { "band-late" } else { "band" };
                        let _ = write!(
                            spans,
                            r#"<rect class="{class}" x="{x0:.0}" y="{:.0}" width="{:.0}" height="16" rx="2"/>"#,
                            dev_y + 16.0,
                            (x + 3.5 - x0).max(4.0),
                        );
                    }
                }
                _ => {}
            }
        }
    }
    if let Some(m) = motor_from {
        let stop = stopping_from.map(|s| layout.x[s]);
        motor_bar(&mut spans, layout.x[m], stop.unwrap_or(end_x), "motor-run");
        if let Some(s) = stop {
            motor_bar(&mut spans, s, end_x, "motor-stop");
        }
    }
    for (&(page, value), &r) in &bands {
        let x0 = layout.x[r] - 3.5;
        let _ = write!(
            spans,
            r#"<g><rect class="band-lost" x="{x0:.0}" y="{:.0}" width="18" height="16" rx="2"/><title>band {value} of page {page}: ready at #{r} ({} us), never sent</title></g>"#,
            dev_y + 16.0,
            events[r].at_us
        );
    }
    spans
}

fn hr_class(hr: Hresult) -> &'static str {
    if hr == Hresult::S_OK {
        "ok"
    } else if hr == Hresult::S_FALSE {
        "sfalse"
    } else if hr.succeeded() {
        "ok"
    } else {
        "err"
    }
}

fn event_glyph(e: &Event) -> Glyph {
    let g = glyph;
    match &e.kind {
        Kind::Acquire { n, .. } => g(Shape::StartTri, "neutral", Some(format!("acquire {n}")), 2),
        Kind::BandedCallback { result, .. } => {
            let label = (*result != Hresult::S_OK).then(|| format!("→ {result}"));
            g(Shape::Square, hr_class(*result), label, 2)
        }
        Kind::CancelPendingIo { .. } => {
            g(Shape::Diamond, "cancel", Some("CancelPendingIO".into()), 2)
        }
        Kind::AcquireDone { hr, .. } => g(Shape::EndBar, hr_class(*hr), Some(format!("{hr}")), 1),
        Kind::DrvAcquireItemData { .. } => g(
            Shape::StartTri,
            "neutral",
            Some("drvAcquireItemData".into()),
            1,
        ),
        Kind::Callback {
            msg,
            result,
            sticky,
            ..
        } => {
            let shape = if *msg == ItMsg::Data {
                Shape::Square
            } else {
                Shape::Circle
            };
            let label = (*result != Hresult::S_OK).then(|| {
                if *sticky {
                    format!("{result} (sticky)")
                } else {
                    format!("{result}")
                }
            });
            Glyph {
                shape,
                class: hr_class(*result),
                extra: if *sticky { " sticky" } else { "" },
                label,
                priority: 2,
            }
        }
        Kind::NotifyCancelIo {} => g(Shape::Diamond, "cancel", Some("notify CANCEL_IO".into()), 2),
        Kind::AcquireReturn { hr, pending, .. } => Glyph {
            shape: Shape::EndBar,
            class: hr_class(*hr),
            extra: if *pending > 0 { " bad" } else { "" },
            label: Some(format!("return {hr}")),
            priority: 2,
        },
        Kind::Log { .. } => g(Shape::Circle, "neutral", None, 0),
        Kind::DriverFault { .. } => g(Shape::Cross, "err", Some("driver fault".into()), 2),
        Kind::Control {
            request_type,
            request,
            result,
            reply,
            ..
        } => {
            let (name, reply) = (request_name(*request_type, *request), reply.to_string());
            let extra = if !result.is_ok() { " bad" } else { "" };
            let (class, label, priority) = match name.as_str() {
                "CANCEL" => ("wire-cancel", Some("CANCEL".to_string()), 2),
                "DEVICE_RESET" => ("wire-cancel", Some("DEVICE_RESET".to_string()), 2),
                "GET_DEVICE_STATUS" if reply.contains("busy") => {
                    ("busy", Some("status busy".to_string()), 1)
                }
                "GET_DEVICE_STATUS" if reply.contains("ok") => {
                    ("ok", Some("status ok".to_string()), 1)
                }
                "GET_DEVICE_STATUS" => ("err", Some(format!("status {reply}")), 1),
                "START_SCAN" => ("neutral", Some("START_SCAN".to_string()), 1),
                _ => ("neutral", None, 0),
            };
            Glyph {
                shape: Shape::Circle,
                class,
                extra,
                label: if !result.is_ok() {
                    Some(format!("{name} {result}"))
                } else {
                    label
                },
                priority,
            }
        }
        Kind::Bulk { result, .. } => {
            if result.is_ok() {
                g(Shape::TallBar, "bulk", None, 0)
            } else {
                g(
                    Shape::TallBar,
                    "bulk-bad",
                    Some(format!("bulk {result}")),
                    1,
                )
            }
        }
        Kind::Interrupt { .. } => g(Shape::Circle, "neutral", None, 0),
        Kind::ClearHalt { ep, .. } => g(
            Shape::Square,
            "halt",
            Some(format!("clear-halt {ep:#04x}")),
            2,
        ),
        Kind::ResetDevice { .. } => g(Shape::Square, "wire-cancel", Some("port reset".into()), 2),
        Kind::Abort { ep } => g(Shape::Square, "halt", Some(format!("abort {ep:#04x}")), 1),
        Kind::Device { what, .. } => match what.name() {
            "band-ready" | "band-sent" => g(Shape::Tick, "neutral", None, 0),
            "cancel-requested" => g(
                Shape::Diamond,
                "wire-cancel",
                Some("cancel requested".into()),
                2,
            ),
            "motor-stopped" => g(Shape::EndBar, "motor-stop", Some("motor stopped".into()), 2),
            "idle" | "drained" => g(Shape::Circle, "ok", Some(what.name().into()), 1),
            "fault" | "halted" | "disconnected" | "start-refused" | "cancel-ignored" => {
                g(Shape::Cross, "err", Some(what.name().into()), 2)
            }
            "scan-started" => g(Shape::StartTri, "motor-run", Some("scan started".into()), 1),
            "scan-complete" => g(Shape::EndBar, "ok", Some("scan complete".into()), 1),
            _ => g(Shape::Circle, "neutral", None, 0),
        },
        Kind::Note { .. } => g(Shape::Circle, "neutral", None, 0),
        Kind::Download { n, item, .. } => g(
            Shape::StartTri,
            "neutral",
            Some(format!("download {n} {item}")),
            2,
        ),
        Kind::Upload { n, item, .. } => g(
            Shape::StartTri,
            "neutral",
            Some(format!("upload {n} {item}")),
            2,
        ),
        Kind::TransferCallback { msg, result, .. } => {
            let label =
                (*result != Hresult::S_OK).then(|| format!("{} → {result}", short_msg(*msg)));
            g(Shape::Circle, hr_class(*result), label, 2)
        }
        Kind::AppGetNextStream { result, stream, .. } => {
            let label = if *result == Hresult::S_OK && *stream == 0 {
                Some("NULL stream".to_string())
            } else if *result != Hresult::S_OK {
                Some(format!("stream → {result}"))
            } else {
                Some(format!("stream {stream}"))
            };
            g(Shape::Square, hr_class(*result), label, 2)
        }
        Kind::Cancel { .. } => g(Shape::Diamond, "cancel", Some("Cancel".into()), 2),
        Kind::ReportStatus { status, result } => g(
            Shape::Circle,
            hr_class(*result),
            Some(format!("ReportStatus {status}")),
            1,
        ),
        Kind::AppSeek { stream, pos } => g(
            Shape::Circle,
            "neutral",
            Some(format!("app seeks stream {stream} to {pos}")),
            1,
        ),
        Kind::TransferDone { hr, .. } => g(Shape::EndBar, hr_class(*hr), Some(format!("{hr}")), 1),
        Kind::DrvAcquireItemData2 { .. } => g(
            Shape::StartTri,
            "neutral",
            Some("drvAcquireItemData".into()),
            1,
        ),
        Kind::GetNextStream {
            result,
            stream,
            sticky,
            ..
        } => Glyph {
            shape: Shape::Square,
            class: hr_class(*result),
            extra: if *sticky { " sticky" } else { "" },
            label: Some(if *result == Hresult::S_OK {
                format!("GetNextStream → {stream}")
            } else {
                format!("GetNextStream → {result}")
            }),
            priority: 2,
        },
        Kind::SendMessage {
            msg,
            result,
            sticky,
            ..
        } => Glyph {
            shape: Shape::Circle,
            class: hr_class(*result),
            extra: if *sticky { " sticky" } else { "" },
            label: (*result != Hresult::S_OK || *msg != crate::wia::TransferMsg::STATUS)
                .then(|| format!("{} → {result}", short_msg(*msg))),
            priority: 2,
        },
        Kind::StreamEnd {
            stream,
            crc,
            expect_crc,
            ..
        } => g(
            Shape::EndBar,
            if crc == expect_crc { "ok" } else { "neutral" },
            Some(format!("stream {stream} ends")),
            1,
        ),
        Kind::ServiceRestart {} => g(Shape::Cross, "err", Some("service restart".into()), 2),
        Kind::PeerTransfer { n, hr, whole, .. } => g(
            Shape::EndBar,
            if *whole && !hr.failed() { "ok" } else { "err" },
            Some(format!("identical device: transfer {n} {hr}")),
            1,
        ),
        Kind::Stream {
            op,
            result,
            crc,
            expect_crc,
            ..
        } => {
            let bad =
                result.failed() || (*op == crate::wia::StreamMethod::Write && crc != expect_crc);
            let class = if bad { "bulk-bad" } else { "bulk" };
            let label = bad.then(|| format!("{} {result}", op.name()));
            g(Shape::TallBar, class, label, if bad { 1 } else { 0 })
        }
    }
}

/// A transfer message without its `WIA_TRANSFER_MSG_` prefix, for labels.
fn short_msg(msg: crate::wia::TransferMsg) -> String {
    let s = msg.to_string();
    s.strip_prefix("WIA_TRANSFER_MSG_")
        .unwrap_or(&s)
        .to_string()
}

/// Is this event a cancel point (app cancel, refused callback, CANCEL_IO delivered)?
fn is_cancel_point(e: &Event) -> bool {
    match &e.kind {
        Kind::CancelPendingIo { .. } | Kind::NotifyCancelIo {} | Kind::Cancel { .. } => true,
        Kind::Callback { result, .. }
        | Kind::BandedCallback { result, .. }
        | Kind::GetNextStream { result, .. }
        | Kind::SendMessage { result, .. } => {
            *result != Hresult::S_OK && *result != Hresult::WIA_STATUS_SKIP_ITEM
        }
        _ => false,
    }
}

fn device_what(e: &Event) -> Option<(&str, u32, u64)> {
    match &e.kind {
        Kind::Device {
            what, page, value, ..
        } => Some((what.name(), *page, *value)),
        _ => None,
    }
}

fn motor_ends(what: &str) -> bool {
    matches!(
        what,
        "motor-stopped" | "scan-complete" | "idle" | "reset" | "disconnected" | "halted" | "fault"
    )
}

/// The legend as a `<g id="tl-legend">` group, `LEGEND_W` × `LEGEND_H`, origin at its top left.
pub fn legend_group() -> String {
    let items: [(&str, &str); 20] = [
        ("band", "band ready→sent"),
        ("band-late", "band read after cancel"),
        ("band-lost", "band never sent"),
        ("motor-run", "motor running"),
        ("motor-stop", "motor stopping"),
        ("acq", "acquisition (driver)"),
        ("ok", "callback / status S_OK"),
        ("sfalse", "S_FALSE"),
        ("err", "error HRESULT / fault"),
        ("sfalse sticky", "vista sticky S_FALSE"),
        ("cancel", "CancelPendingIO / CANCEL_IO"),
        ("wire-cancel", "CANCEL / DEVICE_RESET"),
        ("busy", "GET_DEVICE_STATUS busy"),
        ("bulk", "bulk IN read"),
        ("bulk-bad", "bulk stall/timeout"),
        ("halt", "clear-halt / abort"),
        ("neutral", "other request / event"),
        ("vline", "first rule violation"),
        ("sq", "■ IT_MSG_DATA  ● other msg"),
        ("tri", "▶ start  ▮ end"),
    ];
    let mut out =
        String::from(r#"<g id="tl-legend"><text class="tl-lane" x="0" y="12">Legend</text>"#);
    for (k, (class, text)) in items.iter().enumerate() {
        let col = (k % 7) as f64;
        let row = (k / 7) as f64;
        let x = 70.0 + col * 170.0;
        let y = 4.0 + row * 22.0;
        let _ = match *class {
            "vline" => write!(
                out,
                r#"<line class="vline" x1="{:.0}" y1="{y:.0}" x2="{:.0}" y2="{:.0}"/>"#,
                x + 7.0,
                x + 7.0,
                y + 16.0
            ),
            "sq" | "tri" => Ok(()),
            "motor-run" | "motor-stop" => write!(
                out,
                r#"<rect class="{class}" x="{x:.0}" y="{:.0}" width="16" height="5"/>"#,
                y + 6.0
            ),
            "band" | "band-late" | "band-lost" | "acq" => write!(
                out,
                r#"<rect class="{class}" x="{x:.0}" y="{:.0}" width="16" height="12"/>"#,
                y + 2.0
            ),
            _ => write!(
                out,
                r#"<rect class="{class}" x="{:.0}" y="{:.0}" width="8" height="8"/>"#,
                x + 4.0,
                y + 4.0
            ),
        };
        let tx = if matches!(*class, "sq" | "tri") {
            x
        } else {
            x + 22.0
        };
        let _ = write!(
            out,
            r#"<text class="tl-label" x="{tx:.0}" y="{:.0}">{}</text>"#,
            y + 12.0,
            escape(text)
        );
    }
    out.push_str("</g>");
    out
}
