//! Timeline pictures: one run's trace as an SVG with one lane per actor.
//!
//! The x axis is time, stretched where events crowd: every distinct timestamp gets at least the
//! room its events need (one slot per event of a lane at that microsecond), and otherwise time
//! runs linearly, so a cancel that takes 40 ms still looks long next to a 1 µs callback. The axis
//! labels (in ms) sit where those times really fall. Every event is one `<g data-i="N">` with a
//! `<title>` tooltip; a rule violation is a red line through the violating event with the rule ID
//! beside it, and in the footer what was wrong and the whole quote, wrapped. Event labels sit in
//! two rows per lane, clear of the next lane's, and a label that would overlap another (widths
//! estimated generously, `text_width`) is left to its tooltip. The lane names and the footer
//! are one `tl-pinned` group, which a page that scrolls the picture sideways keeps in view (the
//! report's script translates it by the scroll offset). Output is a pure function of its inputs.
//!
//! This module is the drawing engine; what is drawn comes from a `Picture` of one trace
//! model: `wia.rs` (lanes app, service, driver, usb, device: bands, motor, acquisitions) and
//! `sane.rs` (a lane per frontend thread and the device: calls as bars from call to return,
//! blocks, CAN). [`render_svg`] and [`render_sane_svg`] draw them.

mod layout;
mod sane;
mod wia;

use std::fmt::Write as _;

use self::layout::{ms_label, nice_step, wrap, LabelRows, Layout};

pub use self::sane::{legend_group as sane_legend_group, render_sane_svg};
pub use self::wia::{event_tooltip, legend_group, render_svg};

/// A rule violation to mark on the timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// The rule ID (`USB-STATUS-POLLED`).
    pub rule: String,
    /// The violating event: an index into the trace's events (WIA), the call's seq (SANE).
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
.tl-pin{fill:#eef1f5;opacity:.94}
";

const LEFT: f64 = 76.0;
const SLOT: f64 = 9.0;
const TARGET_WIDTH: f64 = 1100.0;
const RIGHT_PAD: f64 = 40.0;
/// Characters per footer line (11 px text: about 900 px).
const FOOTER_CHARS: usize = 140;
const LEGEND_W: f64 = 1260.0;
const LEGEND_H: f64 = 70.0;
/// A generous estimate of the width of `text` at `px` pixels in a sans-serif face (DejaVu
/// Sans, the widest common one): capitals and wide glyphs 0.78 em, digits 0.64 em, lower case
/// 0.62 em, narrow letters and punctuation less. Layout decisions use it so that labels never
/// overlap in a browser.
pub(super) fn text_width(text: &str, px: f64) -> f64 {
    let em: f64 = text
        .chars()
        .map(|c| match c {
            'i' | 'j' | 'l' | '.' | ',' | ':' | ';' | '\'' | '|' | '!' => 0.32,
            'f' | 't' | 'r' | ' ' | '(' | ')' | '[' | ']' | '-' => 0.42,
            'm' | 'w' => 0.92,
            'M' | 'W' => 0.98,
            '0'..='9' => 0.64,
            'a'..='z' => 0.62,
            'A'..='Z' | '_' | '#' | '&' | '%' | '@' => 0.78,
            c if c.is_ascii() => 0.62,
            _ => 1.0,
        })
        .sum();
    em * px
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

/// How an event is drawn.
struct Glyph {
    shape: Shape,
    class: &'static str,
    extra: &'static str,
    label: Option<String>,
    /// Labels of priority 2 are placed before those of priority 1.
    priority: u8,
}

/// A glyph with no extra class.
fn glyph(shape: Shape, class: &'static str, label: Option<String>, priority: u8) -> Glyph {
    Glyph {
        shape,
        class,
        extra: "",
        label,
        priority,
    }
}

/// One lane, top to bottom.
struct Lane {
    /// Its label.
    name: &'static str,
    /// Its height.
    height: f64,
    /// Where its events sit below its top (`None`: in the middle).
    dot_dy: Option<f64>,
}

/// One drawn event: when, on which lane, how, and its tooltip.
struct Dot {
    at_us: u64,
    lane: usize,
    glyph: Glyph,
    /// The `data-i` attribute: the index a verdict's marks use for it.
    id: String,
    tooltip: String,
}

/// One trace model's drawing: its lanes, its events as dots (a mark's `event` is an index into
/// them), the spans drawn under them, and the legend of its standalone pictures.
trait Picture {
    fn lanes(&self) -> Vec<Lane>;
    fn dots(&self) -> Vec<Dot>;
    /// Bars and blocks under the dots, drawn once the layout is known; `lanes` holds each
    /// lane's top and height.
    fn spans(&self, dots: &[Dot], layout: &Layout, lanes: &[(f64, f64)]) -> String;
    /// The legend as a group ([`legend_group`], [`sane_legend_group`]).
    fn legend(&self) -> String;
    /// What a mark's `event` counts (`event`, `call`).
    fn noun(&self) -> &'static str;
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

/// Draws `picture` with `marks` as an SVG document fragment (`<svg ...>...</svg>`).
fn render(picture: &dyn Picture, marks: &[Mark], opts: &SvgOptions) -> String {
    let events = picture.dots();
    let lane_specs = picture.lanes();
    let layout = Layout::new(&events, lane_specs.len());
    let title_h = if opts.title.is_empty() { 6.0 } else { 22.0 };
    let top = title_h + 8.0 + 16.0 * marks.len() as f64;
    let mut lanes = Vec::with_capacity(lane_specs.len());
    let mut y = top;
    for lane in &lane_specs {
        lanes.push((y, lane.height));
        y += lane.height;
    }
    let lanes_bottom = y;
    let dot_y = |lane: usize| {
        let (y, h) = lanes[lane];
        y + lane_specs[lane].dot_dy.unwrap_or(h / 2.0)
    };
    let axis_y = lanes_bottom;
    // Footer: per mark, what was wrong and the quote, each wrapped whole.
    let footer: Vec<(Vec<String>, Vec<String>)> = marks
        .iter()
        .map(|m| {
            let at = events.get(m.event).map(|e| e.at_us).unwrap_or(0);
            (
                wrap(
                    &format!(
                        "{} — first violation at {} #{} ({}): {}",
                        m.rule,
                        picture.noun(),
                        m.event,
                        ms_label(at, 1),
                        m.message
                    ),
                    FOOTER_CHARS - 14,
                ),
                wrap(&format!("“{}”", m.quote), FOOTER_CHARS),
            )
        })
        .collect();
    let footer_lines: usize = footer.iter().map(|(h, q)| h.len() + q.len()).sum();
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
            e.glyph
                .label
                .as_ref()
                .map(|l| layout.x[i] + text_width(l, 10.0))
        })
        .fold(0.0, f64::max);
    // The footer, pinned at the left of what is in view, must fit inside the picture.
    let footer_end = footer
        .iter()
        .flat_map(|(h, q)| {
            h.iter()
                .map(|l| 8.0 + text_width(l, 11.0) * 1.1)
                .chain(q.iter().map(|l| 24.0 + text_width(l, 11.0)))
        })
        .fold(0.0, f64::max);
    let width = layout
        .width
        .max(label_end + 12.0)
        .max(footer_end + 12.0)
        .max(if opts.standalone {
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
    // Lanes (their names are drawn last, pinned).
    for (i, _) in lane_specs.iter().enumerate() {
        let (y, h) = lanes[i];
        let _ = write!(
            out,
            r#"<rect class="tl-bg{}" x="0" y="{y:.0}" width="{width:.0}" height="{h:.0}"/>"#,
            i % 2,
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

    out.push_str(&picture.spans(&events, &layout, &lanes));

    // Events, then labels (important ones first so they win the space).
    let mut labels: Vec<(u8, usize, String)> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let cy = dot_y(e.lane);
        let gl = &e.glyph;
        let _ = write!(out, r#"<g data-i="{}">"#, e.id);
        let class = format!("{}{}", gl.class, gl.extra);
        shape_svg(&mut out, gl.shape, layout.x[i], cy, &class);
        let _ = write!(out, "<title>{}</title></g>", escape(&e.tooltip));
        if let Some(l) = &gl.label {
            labels.push((gl.priority, i, l.clone()));
        }
    }
    labels.sort_by_key(|(p, i, _)| (std::cmp::Reverse(*p), *i));
    let mut rows = LabelRows::default();
    let mut placed: Vec<(usize, usize, String)> = Vec::new();
    for (_, i, text) in labels {
        let lane = events[i].lane;
        if let Some(row) = rows.place(lane, layout.x[i], &text) {
            placed.push((i, row, text));
        }
    }
    placed.sort();
    for (i, row, text) in placed {
        let lane = events[i].lane;
        let (y, h) = lanes[lane];
        let ty = if row == 0 { y + 12.0 } else { y + h - 5.0 };
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
        let cy = dot_y(e.lane);
        let fy = title_h + 8.0 + 16.0 * k as f64 + 4.0;
        let flag = format!("✖ {} at #{}", m.rule, m.event);
        let right_side = x + 6.0 + text_width(&flag, 11.0) < width;
        let (anchor, tx) = if right_side {
            ("start", x + 6.0)
        } else {
            ("end", x - 6.0)
        };
        let _ = write!(
            out,
            r#"<g class="violation" data-rule="{}" data-event="{}" data-x="{x:.0}"><line class="vline" x1="{x:.0}" y1="{:.0}" x2="{x:.0}" y2="{lanes_bottom:.0}"/><circle class="vring" cx="{x:.0}" cy="{cy:.0}" r="9"/><text class="vflag" x="{tx:.0}" y="{:.0}" text-anchor="{anchor}">{}</text><title>{}</title></g>"#,
            escape(&m.rule),
            m.event,
            fy - 8.0,
            fy + 4.0,
            escape(&flag),
            escape(&format!("{}: {}", m.rule, m.message))
        );
    }
    // Pinned: the lane names on a backing, and the footer.
    out.push_str(r#"<g class="tl-pinned">"#);
    for (i, lane) in lane_specs.iter().enumerate() {
        let (y, h) = lanes[i];
        let _ = write!(
            out,
            r#"<rect class="tl-pin" x="0" y="{y:.0}" width="{:.0}" height="{h:.0}"/><text class="tl-lane" x="8" y="{:.0}">{}</text>"#,
            LEFT - 6.0,
            y + h / 2.0 + 4.0,
            lane.name
        );
    }
    let _ = write!(
        out,
        r#"<text class="tl-note" x="{LEFT:.0}" y="{:.0}">time (ms); crowded instants are stretched so every event shows, and long gaps keep their proportion</text>"#,
        axis_y + 29.0
    );
    let mut fy = footer_top;
    for (head, quote) in &footer {
        for (k, line) in head.iter().enumerate() {
            let _ = write!(
                out,
                r#"<text class="vflag" x="{}" y="{fy:.0}">{}</text>"#,
                if k == 0 { 8 } else { 24 },
                escape(line)
            );
            fy += 15.0;
        }
        for line in quote {
            let _ = write!(
                out,
                r#"<text class="vquote" x="24" y="{fy:.0}">{}</text>"#,
                escape(line)
            );
            fy += 15.0;
        }
    }
    out.push_str("</g>");
    if opts.standalone {
        let _ = write!(
            out,
            r#"<g transform="translate(8 {legend_top:.0})">{}</g>"#,
            picture.legend()
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
