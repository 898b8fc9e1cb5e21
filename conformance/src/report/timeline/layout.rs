//! Where things go on a timeline: the time axis that stretches crowded instants ([`Layout`]),
//! its tick steps and labels, and the greedy placement of event labels in two rows per lane.

use super::{text_width, Dot, LEFT, RIGHT_PAD, SLOT, TARGET_WIDTH};

/// Microseconds as a millisecond label with as many decimals as `step_us` needs.
pub(super) fn ms_label(t_us: u64, step_us: u64) -> String {
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
pub(super) fn nice_step(span_us: u64) -> u64 {
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
pub(super) struct Layout {
    /// (time, x of slot 0) of each distinct timestamp.
    pub(super) points: Vec<(u64, f64)>,
    /// x of each event, by its index among the picture's dots.
    pub(super) x: Vec<f64>,
    /// Right end of the drawing.
    pub(super) width: f64,
}

impl Layout {
    pub(super) fn new(dots: &[Dot], lanes: usize) -> Layout {
        let mut order: Vec<usize> = (0..dots.len()).collect();
        order.sort_by_key(|&i| dots[i].at_us);
        let first = order.first().map(|&i| dots[i].at_us).unwrap_or(0);
        let last = order.last().map(|&i| dots[i].at_us).unwrap_or(0);
        let span = (last - first).max(1) as f64;
        let scale = TARGET_WIDTH / span;
        // Group the events by timestamp; within a group, count slots per lane.
        let mut groups: Vec<(u64, Vec<usize>)> = Vec::new();
        for &i in &order {
            match groups.last_mut() {
                Some((t, v)) if *t == dots[i].at_us => v.push(i),
                _ => groups.push((dots[i].at_us, vec![i])),
            }
        }
        let mut x = vec![0.0; dots.len()];
        let mut points = Vec::with_capacity(groups.len());
        let mut gx = LEFT + 14.0;
        for (k, (t, members)) in groups.iter().enumerate() {
            let mut used = vec![0usize; lanes.max(1)];
            for &i in members {
                let lane = dots[i].lane.min(used.len() - 1);
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
    pub(super) fn x_of_time(&self, t: u64) -> f64 {
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

/// Greedy label placement in two rows per lane, avoiding overlaps.
#[derive(Default)]
pub(super) struct LabelRows {
    taken: Vec<Vec<(f64, f64)>>,
}

impl LabelRows {
    pub(super) fn place(&mut self, lane: usize, x: f64, text: &str) -> Option<usize> {
        if self.taken.len() < lane * 2 + 2 {
            self.taken.resize(lane * 2 + 2, Vec::new());
        }
        let (a, b) = (x - 3.0, x - 3.0 + text_width(text, 10.0));
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
pub(super) fn wrap(text: &str, width: usize) -> Vec<String> {
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
