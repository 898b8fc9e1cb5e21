//! Timeline pictures: one run's trace as an SVG with one lane per actor.
//!
//! The x axis is time, stretched where events crowd: every distinct timestamp gets at least the
//! room its events need (one slot per event of a lane at that microsecond), and otherwise time
//! runs linearly, so a cancel that takes 40 ms still looks long next to a 1 µs callback. The axis
//! labels (in ms) sit where those times really fall. Lanes, top to bottom: app, service, driver,
//! usb, device. The device lane shows each band as a block from `band-ready` to `band-sent`
//! (orange when it was read after a cancel point of its acquisition, grey and dashed when it was
//! never sent) and the motor as a bar (teal running, orange stopping after a cancel request).
//! Every event is one `<g class="ev" data-i="N">` with a `<title>` tooltip (its text rendering);
//! a rule violation is a red line through the violating event with the rule ID and its quote
//! beside it, and the full quote in the footer. Output is a pure function of its inputs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::trace::{render_event, request_name, Actor, Event, Kind, Trace};
use crate::wia::{Hresult, ItMsg};

/// A rule violation to mark on the timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// The rule ID (`USB-STATUS-POLLED`).
    pub rule: String,
    /// Index into the trace's events of the first violation.
    pub event: usize,
    /// What was wrong.
    pub message: String,
    /// The sentence the rule enforces.
    pub quote: String,
}

/// How to draw a timeline.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct SvgOptions {
    /// A title line drawn above the lanes (default: none).
    pub title: String,
    /// A standalone picture: embeds its own `<style>` and legend (default: false, for pages that
    /// carry [`TIMELINE_CSS`] and one legend themselves).
    pub standalone: bool,
}

impl SvgOptions {
    /// Options for a standalone `.svg` file with this title.
    pub fn standalone(title: impl Into<String>) -> SvgOptions {
        SvgOptions {
            title: title.into(),
            standalone: true,
        }
    }

    /// Options for a timeline embedded in a page that carries [`TIMELINE_CSS`].
    pub fn embedded() -> SvgOptions {
        SvgOptions::default()
    }
}

/// The stylesheet the timeline's classes use (embedded in standalone SVGs; pages include it).
pub const TIMELINE_CSS: &str = "\
svg.timeline{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;font-size:10px}
.tl-bg0{fill:#f7f8fa}.tl-bg1{fill:#eef1f5}
.tl-lane{font-size:12px;font-weight:600;fill:#333}
.tl-grid{stroke:#d5d9e0;stroke-width:1}
.tl-axis{stroke:#666;stroke-width:1}
.tl-tick{font-size:10px;fill:#444;text-anchor:middle}
.tl-title{font-size:13px;font-weight:600;fill:#222}
.tl-label{fill:#222}
.tl-note{fill:#555;font-size:11px}
.ok{fill:#2e9d4a}.sfalse{fill:#e08a00}.err{fill:#d62d20}
.cancel{fill:#8e44ad}.wire-cancel{fill:#b03060}
.busy{fill:#e6b800}.neutral{fill:#8a8f98}
.bulk{fill:#2f6fdb}.bulk-bad{fill:#fff;stroke:#d62d20;stroke-width:2}
.halt{fill:#17a2b8}.cross{fill:none;stroke:#d62d20;stroke-width:2.5}
.sticky{stroke:#222;stroke-width:1.5;stroke-dasharray:2 1}
.bad{stroke:#d62d20;stroke-width:2}
.band{fill:#8fb3f0;stroke:#2f6fdb;stroke-width:1}
.band-late{fill:#f6c177;stroke:#d07b00;stroke-width:1}
.band-lost{fill:#e3e3e3;stroke:#888;stroke-width:1;stroke-dasharray:3 2}
.motor-run{fill:#16a085}.motor-stop{fill:#e67e22}
.acq{fill:#d9e2ee;stroke:#9fb0c6;stroke-width:1}
.vline{stroke:#e0004d;stroke-width:2;stroke-dasharray:5 3}
.vring{fill:none;stroke:#e0004d;stroke-width:2.5}
.vflag{fill:#e0004d;font-weight:700;font-size:11px}
.vquote{fill:#7a0029;font-style:italic;font-size:11px}
";

const LEFT: f64 = 76.0;
const SLOT: f64 = 9.0;
const TARGET_WIDTH: f64 = 1100.0;
const RIGHT_PAD: f64 = 40.0;
const LANE_H: f64 = 46.0;
const DEVICE_LANE_H: f64 = 62.0;
const CHAR_W: f64 = 5.8;
const LEGEND_W: f64 = 1260.0;
const LEGEND_H: f64 = 70.0;
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

/// Escapes text for XML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// One event's tooltip text: `#N` and its text rendering with runs of spaces collapsed.
pub fn event_tooltip(i: usize, e: &Event) -> String {
    let text = render_event(e);
    format!(
        "#{i} {}",
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

/// Microseconds as a millisecond label with as many decimals as `step_us` needs.
fn ms_label(t_us: u64, step_us: u64) -> String {
    let decimals = if step_us >= 1000 {
        0
    } else if step_us >= 100 {
        1
    } else if step_us >= 10 {
        2
    } else {
        3
    };
    format!("{:.*} ms", decimals, t_us as f64 / 1000.0)
}

/// A 1-2-5 step near `span / 8`, in microseconds.
fn nice_step(span_us: u64) -> u64 {
    let raw = (span_us / 8).max(1);
    let mut p = 1u64;
    while p.saturating_mul(10) <= raw {
        p *= 10;
    }
    for m in [1, 2, 5, 10] {
        if p * m >= raw {
            return p * m;
        }
    }
    p * 10
}

/// The horizontal layout: x of every event and a time→x mapping.
struct Layout {
    /// (time, x of slot 0) of each distinct timestamp.
    points: Vec<(u64, f64)>,
    /// x of each event, by trace index.
    x: Vec<f64>,
    /// Right end of the drawing.
    width: f64,
}

impl Layout {
    fn new(events: &[Event]) -> Layout {
        let mut order: Vec<usize> = (0..events.len()).collect();
        order.sort_by_key(|&i| events[i].at_us);
        let first = order.first().map(|&i| events[i].at_us).unwrap_or(0);
        let last = order.last().map(|&i| events[i].at_us).unwrap_or(0);
        let span = (last - first).max(1) as f64;
        let scale = TARGET_WIDTH / span;
        // Group the events by timestamp; within a group, count slots per lane.
        let mut groups: Vec<(u64, Vec<usize>)> = Vec::new();
        for &i in &order {
            match groups.last_mut() {
                Some((t, v)) if *t == events[i].at_us => v.push(i),
                _ => groups.push((events[i].at_us, vec![i])),
            }
        }
        let mut x = vec![0.0; events.len()];
        let mut points = Vec::with_capacity(groups.len());
        let mut gx = LEFT + 14.0;
        for (k, (t, members)) in groups.iter().enumerate() {
            let mut used = [0usize; 5];
            for &i in members {
                let lane = lane_of(events[i].actor);
                x[i] = gx + used[lane] as f64 * SLOT + SLOT / 2.0;
                used[lane] += 1;
            }
            points.push((*t, gx + SLOT / 2.0));
            let need = used.iter().copied().max().unwrap_or(1) as f64 * SLOT + 2.0;
            let dt = groups.get(k + 1).map(|(n, _)| n - t).unwrap_or(0) as f64;
            gx += need.max(dt * scale);
        }
        Layout {
            points,
            x,
            width: gx + RIGHT_PAD,
        }
    }

    /// x of time `t` (linear between the neighbouring timestamps).
    fn x_of_time(&self, t: u64) -> f64 {
        let idx = self.points.partition_point(|(pt, _)| *pt <= t);
        match (
            idx.checked_sub(1).and_then(|i| self.points.get(i)),
            self.points.get(idx),
        ) {
            (Some(&(t0, x0)), Some(&(t1, x1))) => {
                x0 + (t - t0) as f64 / (t1 - t0).max(1) as f64 * (x1 - x0)
            }
            (Some(&(_, x0)), None) => x0,
            (None, Some(&(_, x1))) => x1,
            (None, None) => LEFT,
        }
    }
}

/// How an event is drawn.
struct Glyph {
    shape: Shape,
    class: &'static str,
    extra: &'static str,
    label: Option<String>,
    /// Labels of priority 2 are placed before those of priority 1.
    priority: u8,
}

#[derive(Clone, Copy)]
enum Shape {
    Square,
    Circle,
    Diamond,
    StartTri,
    EndBar,
    TallBar,
    Tick,
    Cross,
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

fn glyph(e: &Event) -> Glyph {
    let g = |shape, class, label: Option<String>, priority| Glyph {
        shape,
        class,
        extra: "",
        label,
        priority,
    };
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

fn shape_svg(out: &mut String, shape: Shape, x: f64, y: f64, class: &str) {
    let _ = match shape {
        Shape::Square => write!(
            out,
            r#"<rect class="{class}" x="{:.0}" y="{:.0}" width="7" height="7"/>"#,
            x - 3.5,
            y - 3.5
        ),
        Shape::Circle => write!(
            out,
            r#"<circle class="{class}" cx="{x:.0}" cy="{y:.0}" r="3.8"/>"#
        ),
        Shape::Diamond => write!(
            out,
            r#"<path class="{class}" d="M{x:.0} {:.0}l5.5 5.5l-5.5 5.5l-5.5 -5.5z"/>"#,
            y - 5.5
        ),
        Shape::StartTri => write!(
            out,
            r#"<path class="{class}" d="M{:.0} {:.0}l8 5l-8 5z"/>"#,
            x - 3.0,
            y - 5.0
        ),
        Shape::EndBar => write!(
            out,
            r#"<rect class="{class}" x="{:.0}" y="{:.0}" width="4" height="14"/>"#,
            x - 2.0,
            y - 7.0
        ),
        Shape::TallBar => write!(
            out,
            r#"<rect class="{class}" x="{:.0}" y="{:.0}" width="4" height="12"/>"#,
            x - 2.0,
            y - 6.0
        ),
        Shape::Tick => write!(
            out,
            r#"<rect class="{class}" x="{:.0}" y="{:.0}" width="7" height="16" opacity="0"/>"#,
            x - 3.5,
            y - 8.0
        ),
        Shape::Cross => write!(
            out,
            r#"<path class="cross" d="M{:.0} {:.0}l10 10m0 -10l-10 10"/>"#,
            x - 5.0,
            y - 5.0
        ),
    };
}

/// Lane geometry: top y and height of each lane.
fn lanes(top: f64) -> [(f64, f64); 5] {
    let mut out = [(0.0, 0.0); 5];
    let mut y = top;
    for (i, a) in ACTORS.iter().enumerate() {
        let h = if *a == Actor::Device {
            DEVICE_LANE_H
        } else {
            LANE_H
        };
        out[i] = (y, h);
        y += h;
    }
    out
}

/// Greedy label placement in two rows per lane, avoiding overlaps.
#[derive(Default)]
struct LabelRows {
    taken: Vec<Vec<(f64, f64)>>,
}

impl LabelRows {
    fn place(&mut self, lane: usize, x: f64, text: &str) -> Option<usize> {
        if self.taken.is_empty() {
            self.taken = vec![Vec::new(); 10];
        }
        let (a, b) = (x - 3.0, x - 3.0 + text.chars().count() as f64 * CHAR_W);
        for row in 0..2 {
            let spans = &mut self.taken[lane * 2 + row];
            if spans.iter().all(|&(s, e)| b + 4.0 < s || a > e + 4.0) {
                spans.push((a, b));
                return Some(row);
            }
        }
        None
    }
}

/// Wraps `text` into lines of at most `width` characters, breaking at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// Is this event a cancel point (app cancel, refused callback, CANCEL_IO delivered)?
fn is_cancel_point(e: &Event) -> bool {
    match &e.kind {
        Kind::CancelPendingIo { .. } | Kind::NotifyCancelIo {} => true,
        Kind::Callback { result, .. } | Kind::BandedCallback { result, .. } => {
            *result != Hresult::S_OK
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

/// Draws one run's timeline as an SVG document fragment (`<svg ...>...</svg>`).
pub fn render_svg(trace: &Trace, marks: &[Mark], opts: &SvgOptions) -> String {
    let events = &trace.events;
    let layout = Layout::new(events);
    let title_h = if opts.title.is_empty() { 6.0 } else { 22.0 };
    let top = title_h + 8.0 + 16.0 * marks.len() as f64;
    let lanes = lanes(top);
    let lanes_bottom = lanes[4].0 + lanes[4].1;
    let axis_y = lanes_bottom;
    // Footer: per mark, a heading line and the wrapped quote.
    let footer: Vec<(String, Vec<String>)> = marks
        .iter()
        .map(|m| {
            let at = events.get(m.event).map(|e| e.at_us).unwrap_or(0);
            (
                format!(
                    "{} — first violation at event #{} ({}): {}",
                    m.rule,
                    m.event,
                    ms_label(at, 1),
                    m.message
                ),
                wrap(&format!("“{}”", m.quote), 170),
            )
        })
        .collect();
    let footer_lines: usize = footer.iter().map(|(_, q)| 1 + q.len()).sum();
    let footer_top = axis_y + 52.0;
    let mut height = footer_top + footer_lines as f64 * 15.0 + 6.0;
    let legend_top = height + 4.0;
    if opts.standalone {
        height = legend_top + LEGEND_H;
    }
    let label_end = events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            glyph(e)
                .label
                .map(|l| layout.x[i] + l.chars().count() as f64 * CHAR_W)
        })
        .fold(0.0, f64::max);
    let width = layout.width.max(label_end + 12.0).max(if opts.standalone {
        LEGEND_W + 10.0
    } else {
        600.0
    });

    let mut out = String::with_capacity(200 * events.len() + 4096);
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" role="img">"#,
        w = width,
        h = height
    );
    if opts.standalone {
        let _ = write!(
            out,
            "<style><![CDATA[\n{TIMELINE_CSS}]]></style><rect x=\"0\" y=\"0\" width=\"{width:.0}\" height=\"{height:.0}\" fill=\"#fff\"/>"
        );
    }
    if !opts.title.is_empty() {
        let _ = write!(
            out,
            r#"<text class="tl-title" x="8" y="16">{}</text>"#,
            escape(&opts.title)
        );
    }
    // Lanes.
    for (i, a) in ACTORS.iter().enumerate() {
        let (y, h) = lanes[i];
        let _ = write!(
            out,
            r#"<rect class="tl-bg{}" x="0" y="{y:.0}" width="{width:.0}" height="{h:.0}"/><text class="tl-lane" x="8" y="{:.0}">{}</text>"#,
            i % 2,
            y + h / 2.0 + 4.0,
            a.name()
        );
    }
    // Axis, ticks and grid.
    let first = events.iter().map(|e| e.at_us).min().unwrap_or(0);
    let last = events.iter().map(|e| e.at_us).max().unwrap_or(0);
    let step = nice_step(last - first);
    let _ = write!(
        out,
        r#"<line class="tl-axis" x1="{LEFT:.0}" y1="{axis_y:.0}" x2="{:.0}" y2="{axis_y:.0}"/>"#,
        layout.width - RIGHT_PAD / 2.0
    );
    let mut t = first.div_ceil(step) * step;
    let mut last_label = f64::MIN;
    while t <= last {
        let x = layout.x_of_time(t);
        if x - last_label >= 64.0 {
            let _ = write!(
                out,
                r#"<line class="tl-grid" x1="{x:.0}" y1="{top:.0}" x2="{x:.0}" y2="{:.0}"/><text class="tl-tick" x="{x:.0}" y="{:.0}">{}</text>"#,
                axis_y + 4.0,
                axis_y + 16.0,
                ms_label(t, step)
            );
            last_label = x;
        }
        t += step;
    }
    let _ = write!(
        out,
        r#"<text class="tl-note" x="{LEFT:.0}" y="{:.0}">time (ms); crowded instants are stretched so every event shows, and long gaps keep their proportion</text>"#,
        axis_y + 29.0
    );

    // Spans: acquisitions on the driver lane, motor bar and bands on the device lane.
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
            Kind::DrvAcquireItemData { n } => {
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
    out.push_str(&spans);

    // Events, then labels (important ones first so they win the space).
    let mut labels: Vec<(u8, usize, String)> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let lane = lane_of(e.actor);
        let (y, h) = lanes[lane];
        let cy = if lane == dev { y + 24.0 } else { y + h / 2.0 };
        let gl = glyph(e);
        let _ = write!(out, r#"<g data-i="{i}">"#);
        let class = format!("{}{}", gl.class, gl.extra);
        shape_svg(&mut out, gl.shape, layout.x[i], cy, &class);
        let _ = write!(out, "<title>{}</title></g>", escape(&event_tooltip(i, e)));
        if let Some(l) = gl.label {
            labels.push((gl.priority, i, l));
        }
    }
    labels.sort_by_key(|(p, i, _)| (std::cmp::Reverse(*p), *i));
    let mut rows = LabelRows::default();
    let mut placed: Vec<(usize, usize, String)> = Vec::new();
    for (_, i, text) in labels {
        let lane = lane_of(events[i].actor);
        if let Some(row) = rows.place(lane, layout.x[i], &text) {
            placed.push((i, row, text));
        }
    }
    placed.sort();
    for (i, row, text) in placed {
        let lane = lane_of(events[i].actor);
        let (y, h) = lanes[lane];
        let ty = if row == 0 { y + 11.0 } else { y + h - 3.0 };
        let _ = write!(
            out,
            r#"<text class="tl-label" x="{:.0}" y="{ty:.0}">{}</text>"#,
            layout.x[i] - 3.0,
            escape(&text)
        );
    }

    // Violations: a line through the event, a ring on it, the rule and its quote beside it.
    for (k, m) in marks.iter().enumerate() {
        let Some(e) = events.get(m.event) else {
            continue;
        };
        let x = layout.x[m.event];
        let lane = lane_of(e.actor);
        let (y, h) = lanes[lane];
        let cy = if lane == dev { y + 24.0 } else { y + h / 2.0 };
        let fy = title_h + 8.0 + 16.0 * k as f64 + 4.0;
        let flag = format!("✖ {} at #{}", m.rule, m.event);
        let quote = truncate(&format!("“{}”", m.quote), 110);
        let right_side = x + (flag.chars().count() + quote.chars().count()) as f64 * CHAR_W < width;
        let (anchor, tx) = if right_side {
            ("start", x + 6.0)
        } else {
            ("end", x - 6.0)
        };
        let _ = write!(
            out,
            r#"<g class="violation" data-rule="{}" data-event="{}" data-x="{x:.0}"><line class="vline" x1="{x:.0}" y1="{:.0}" x2="{x:.0}" y2="{lanes_bottom:.0}"/><circle class="vring" cx="{x:.0}" cy="{cy:.0}" r="9"/><text x="{tx:.0}" y="{:.0}" text-anchor="{anchor}"><tspan class="vflag">{}</tspan><tspan class="vquote" dx="8">{}</tspan></text><title>{}</title></g>"#,
            escape(&m.rule),
            m.event,
            fy - 8.0,
            fy + 4.0,
            escape(&flag),
            escape(&quote),
            escape(&format!("{}: {}", m.rule, m.message))
        );
    }
    let mut fy = footer_top;
    for (head, quote) in &footer {
        let _ = write!(
            out,
            r#"<text class="vflag" x="8" y="{fy:.0}">{}</text>"#,
            escape(head)
        );
        fy += 15.0;
        for line in quote {
            let _ = write!(
                out,
                r#"<text class="vquote" x="24" y="{fy:.0}">{}</text>"#,
                escape(line)
            );
            fy += 15.0;
        }
    }
    if opts.standalone {
        let _ = write!(
            out,
            r#"<g transform="translate(8 {legend_top:.0})">{}</g>"#,
            legend_group()
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps_are_1_2_5() {
        assert_eq!(nice_step(8), 1);
        assert_eq!(nice_step(80), 10);
        assert_eq!(nice_step(120), 20);
        assert_eq!(nice_step(5243), 1000);
        assert_eq!(nice_step(40_000_000), 5_000_000);
    }

    #[test]
    fn labels_use_the_decimals_the_step_needs() {
        assert_eq!(ms_label(5243, 1000), "5 ms");
        assert_eq!(ms_label(5200, 100), "5.2 ms");
        assert_eq!(ms_label(5243, 1), "5.243 ms");
    }

    #[test]
    fn wrap_keeps_words_whole() {
        assert_eq!(wrap("aa bb cc", 5), vec!["aa bb", "cc"]);
    }

    #[test]
    fn escape_covers_markup() {
        assert_eq!(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
