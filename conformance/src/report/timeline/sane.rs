//! The SANE trace as a timeline: one lane per frontend thread that made calls (app, reader,
//! canceller) and, with an emulated device, the device. Each call is a bar from its call to its
//! return on its thread's lane, with a mark at the return coloured by what came back (a GOOD
//! read is a blue tick, EOF green, CANCELLED orange, another status red); `sane_cancel` is a
//! purple diamond. The device lane shows the device's scan as a bar from `blocks-planned` to
//! its end, each block it sent (orange once a `sane_cancel` had been called), CAN and faults.
//! A mark's `event` is a call's seq: the calls are the picture's first dots, in call order.

use std::fmt::Write as _;

use super::{
    escape, glyph, render, Dot, Glyph, Lane, Layout, Mark, Picture, Shape, SvgOptions, RIGHT_PAD,
};
use scanemu::personality::NoteKind;

use crate::sane::analysis::{is_cancel, scan_end};
use crate::sane::ffi::Status;
use crate::sane::trace::{Call, DeviceEvent, Op, SaneTrace, Thread};

const LANE_H: f64 = 56.0;
const DEVICE_LANE_H: f64 = 62.0;
const THREADS: [Thread; 3] = [Thread::App, Thread::Reader, Thread::Canceller];

/// Draws one run's SANE trace as an SVG document fragment (`<svg ...>...</svg>`); a mark's
/// `event` is the seq of the violating call.
pub fn render_sane_svg(trace: &SaneTrace, marks: &[Mark], opts: &SvgOptions) -> String {
    render(&SanePicture::new(trace), marks, opts)
}

struct SanePicture<'a> {
    trace: &'a SaneTrace,
    /// The threads that made calls, in [`THREADS`] order: lane i is `threads[i]`.
    threads: Vec<Thread>,
}

impl<'a> SanePicture<'a> {
    fn new(trace: &'a SaneTrace) -> SanePicture<'a> {
        let threads = THREADS
            .iter()
            .copied()
            .filter(|t| *t == Thread::App || trace.calls.iter().any(|c| c.thread == *t))
            .collect();
        SanePicture { trace, threads }
    }

    fn lane_of(&self, t: Thread) -> usize {
        self.threads.iter().position(|x| *x == t).unwrap_or(0)
    }

    fn device_lane(&self) -> usize {
        self.threads.len()
    }
}

impl Picture for SanePicture<'_> {
    fn lanes(&self) -> Vec<Lane> {
        let mut lanes: Vec<Lane> = self
            .threads
            .iter()
            .map(|t| Lane {
                name: t.name(),
                height: LANE_H,
                dot_dy: None,
            })
            .collect();
        if !self.trace.device.is_empty() {
            lanes.push(Lane {
                name: "device",
                height: DEVICE_LANE_H,
                dot_dy: Some(24.0),
            });
        }
        lanes
    }

    fn dots(&self) -> Vec<Dot> {
        let calls = self.trace.calls.iter().map(|c| Dot {
            at_us: c.ret_us,
            lane: self.lane_of(c.thread),
            glyph: call_glyph(c),
            id: c.seq.to_string(),
            tooltip: format!(
                "#{} {} {} (called at {} us, returned after {} us)",
                c.seq,
                c.thread.name(),
                c.describe(),
                c.call_us,
                c.ret_us.saturating_sub(c.call_us)
            ),
        });
        let device = self.trace.device.iter().enumerate().map(|(k, d)| Dot {
            at_us: d.at_us,
            lane: self.device_lane(),
            glyph: device_glyph(d),
            id: format!("d{k}"),
            tooltip: format!("{} us device {}", d.at_us, d.label()),
        });
        calls.chain(device).collect()
    }

    fn spans(&self, _dots: &[Dot], layout: &Layout, lanes: &[(f64, f64)]) -> String {
        let mut out = String::new();
        // Each call as a bar from its call to its return.
        for c in &self.trace.calls {
            if c.ret_us <= c.call_us {
                continue;
            }
            let (y, h) = lanes[self.lane_of(c.thread)];
            let x0 = layout.x_of_time(c.call_us);
            let x1 = layout.x[c.seq];
            let _ = write!(
                out,
                r#"<g><rect class="acq" x="{x0:.0}" y="{:.0}" width="{:.0}" height="10" rx="3"/><title>#{} {}: {} us from call to return</title></g>"#,
                y + h / 2.0 - 5.0,
                (x1 - x0).max(2.0),
                c.seq,
                escape(c.op.name()),
                c.ret_us - c.call_us
            );
        }
        let device = &self.trace.device;
        let Some(&(dev_y, _)) = lanes.get(self.device_lane()) else {
            return out;
        };
        let first = self.trace.calls.len();
        let end_x = layout.width - RIGHT_PAD;
        let cancels: Vec<u64> = self
            .trace
            .calls
            .iter()
            .filter(|c| is_cancel(c))
            .map(|c| c.call_us)
            .collect();
        // The device's scans, and the blocks each sent.
        let mut scan: Option<usize> = None;
        for (k, d) in device.iter().enumerate() {
            let x = layout.x[first + k];
            if d.kind == NoteKind::BlocksPlanned {
                scan = Some(k);
            } else if let Some(s) = scan.filter(|_| scan_end(d).is_some()) {
                motor_bar(&mut out, layout.x[first + s], x, dev_y);
                scan = None;
            }
            if d.kind == NoteKind::BlockSent {
                let since = scan.map_or(0, |s| device[s].at_us);
                let late = cancels.iter().any(|t| *t >= since && *t <= d.at_us);
                let _ = write!(
                    out,
                    r#"<rect class="{}" x="{:.0}" y="{:.0}" width="7" height="16" rx="2"/>"#,
                    if late { "band-late" } else { "band" },
                    x - 3.5,
                    dev_y + 16.0
                );
            }
        }
        if let Some(s) = scan {
            motor_bar(&mut out, layout.x[first + s], end_x, dev_y);
        }
        out
    }

    fn legend(&self) -> String {
        legend_group()
    }

    fn noun(&self) -> &'static str {
        "call"
    }
}

fn motor_bar(out: &mut String, from: f64, to: f64, dev_y: f64) {
    let _ = write!(
        out,
        r#"<rect class="motor-run" x="{from:.0}" y="{:.0}" width="{:.0}" height="5"/>"#,
        dev_y + 38.0,
        (to - from).max(2.0)
    );
}

/// `neutral` for GOOD or no status, `err` otherwise.
fn status_class(c: &Call) -> &'static str {
    match c.status() {
        None | Some(Status::GOOD) => "neutral",
        Some(_) => "err",
    }
}

fn call_glyph(c: &Call) -> Glyph {
    let status = c.status().map(Status::name).unwrap_or_default();
    match &c.op {
        Op::Read(_) => match c.status() {
            Some(Status::GOOD) => glyph(Shape::TallBar, "bulk", None, 0),
            Some(Status::EOF) => glyph(Shape::EndBar, "ok", Some("EOF".into()), 1),
            Some(Status::CANCELLED) => glyph(Shape::EndBar, "sfalse", Some(status), 2),
            _ => glyph(Shape::EndBar, "err", Some(format!("read {status}")), 2),
        },
        Op::Start => match c.status() {
            Some(Status::GOOD) => glyph(Shape::StartTri, "neutral", Some("start".into()), 2),
            _ => glyph(Shape::StartTri, "err", Some(format!("start {status}")), 2),
        },
        Op::Cancel => glyph(Shape::Diamond, "cancel", Some("sane_cancel".into()), 2),
        Op::SignalCancel => glyph(
            Shape::Diamond,
            "cancel",
            Some("sane_cancel (signal)".into()),
            2,
        ),
        Op::Open(_) => glyph(Shape::StartTri, status_class(c), Some("open".into()), 1),
        Op::Close => glyph(Shape::EndBar, "neutral", Some("close".into()), 1),
        Op::FdCheck(_) => {
            let open = c.outcome.flag == Some(true);
            let label = if open { "fd open" } else { "fd closed" };
            glyph(Shape::Circle, "halt", Some(label.into()), 1)
        }
        Op::SetIoMode(_) | Op::GetSelectFd => {
            glyph(Shape::Circle, status_class(c), Some(c.op.name().into()), 1)
        }
        Op::WaitReadable(_) => {
            let class = if c.outcome.flag == Some(true) {
                "ok"
            } else {
                "err"
            };
            glyph(Shape::Circle, class, None, 0)
        }
        Op::Init | Op::Exit | Op::SetOption(..) | Op::GetParameters => {
            glyph(Shape::Circle, status_class(c), None, 0)
        }
    }
}

fn device_glyph(d: &DeviceEvent) -> Glyph {
    match d.kind {
        NoteKind::BlockSent => glyph(Shape::Tick, "neutral", None, 0),
        NoteKind::Can => glyph(Shape::Diamond, "wire-cancel", Some("CAN".into()), 2),
        NoteKind::BlocksPlanned => glyph(Shape::StartTri, "motor-run", Some("scan".into()), 1),
        NoteKind::ScanAbandoned => glyph(Shape::Square, "sfalse", Some("scan abandoned".into()), 2),
        NoteKind::Fault | NoteKind::Halted | NoteKind::Disconnected | NoteKind::StartRefused => {
            glyph(Shape::Cross, "err", Some(d.label()), 2)
        }
        NoteKind::Command => glyph(Shape::Circle, "neutral", Some(d.detail.clone()), 0),
        NoteKind::Idle | NoteKind::MotorStopped | NoteKind::ScanComplete => {
            glyph(Shape::Circle, "ok", Some(d.kind.name().into()), 1)
        }
        _ => glyph(Shape::Circle, "neutral", None, 0),
    }
}

/// The legend of SANE timelines as a `<g id="tl-legend-sane">` group, the size of the WIA one,
/// origin at its top left.
pub fn legend_group() -> String {
    let items: [(&str, &str); 13] = [
        ("acq", "call → return"),
        ("bulk", "read GOOD"),
        ("ok", "read EOF"),
        ("sfalse", "read CANCELLED"),
        ("err", "error status / fault"),
        ("cancel", "sane_cancel"),
        ("neutral", "other call"),
        ("halt", "select fd check"),
        ("motor-run", "device scanning"),
        ("band", "block sent"),
        ("band-late", "block sent after sane_cancel"),
        ("wire-cancel", "CAN on the wire"),
        ("vline", "first rule violation"),
    ];
    let mut out =
        String::from(r#"<g id="tl-legend-sane"><text class="tl-lane" x="0" y="12">Legend</text>"#);
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
            "motor-run" => write!(
                out,
                r#"<rect class="{class}" x="{x:.0}" y="{:.0}" width="16" height="5"/>"#,
                y + 6.0
            ),
            "band" | "band-late" | "acq" => write!(
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
        let _ = write!(
            out,
            r#"<text class="tl-label" x="{:.0}" y="{:.0}">{}</text>"#,
            x + 22.0,
            y + 12.0,
            escape(text)
        );
    }
    out.push_str("</g>");
    out
}
