//! Host lag: how long a real-time run's threads waited for a CPU.
//!
//! On a loaded machine a correct driver's cancel can reach the device late because the
//! runner's thread (driver, service, application) or the USB/IP server's threads sat in the
//! run queue, not because the driver was slow. Linux counts that time per thread: the second
//! field of `/proc/self/task/TID/schedstat` is the time the thread was runnable but waiting
//! for a CPU ("run delay"). [`LagProbe`] samples the sum over the process's threads (its own
//! excluded) on the run's clock; the resulting [`HostLag`] tells how much of any interval of
//! the trace was lag, and the time-based rules take it off what they measure
//! (`RunFacts::host_lag`), saying so in their messages.
//!
//! Threads that start during the run count from zero (all their run delay is the run's); one
//! that starts and ends between two samples is missed, so the transports keep the threads
//! that carry their transfers for the whole session rather than starting one per transfer.
//!
//! The sum over threads bounds the lag of the critical path from above (threads off that
//! path waiting at the same time are counted too), so it can only favour the driver by the
//! machine's own contention in that window, never by time the driver spent on its own: a
//! driver that sleeps is not runnable and accrues no lag. Where schedstat is unavailable the
//! lag is zero and rules judge the raw times, as before.
//!
//! The probe is a thread like the others: on a loaded machine it too waits for a CPU, and two
//! of its samples can lie tens of milliseconds apart, exactly when the other threads were
//! waiting. The timeline cannot say where inside such a gap the lag fell, so spreading it
//! evenly over the gap would credit an interval inside it with only a share of lag that may
//! all have been its own, and fail a correct driver on the load. An interval that begins or
//! ends inside a gap longer than [`LATE_GAP`] is therefore credited with all of the gap's lag
//! on that side ([`HostLag::between`], still never more than the interval itself); between
//! samples taken on time the lag is interpolated.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Cumulative host lag over a run: samples of `(at_us, lag_us)` on the run's clock, both
/// non-decreasing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostLag {
    samples: Vec<(u64, u64)>,
}

impl HostLag {
    /// A lag timeline from samples `(at_us, cumulative lag_us)` in time order.
    pub fn from_samples(samples: Vec<(u64, u64)>) -> HostLag {
        HostLag { samples }
    }

    /// The cumulative lag at `at_us`: interpolated between samples taken on time; inside a
    /// gap longer than [`LATE_GAP`], the lag at the gap's start if `side` is
    /// [`Side::Start`] and at its end if [`Side::End`] (see the module documentation).
    fn at(&self, at_us: u64, side: Side) -> u64 {
        let s = &self.samples;
        let i = s.partition_point(|&(t, _)| t <= at_us);
        match (i.checked_sub(1).map(|j| s[j]), s.get(i)) {
            (None, _) => 0,
            (Some((_, l)), None) => l,
            (Some((t0, l0)), Some(&(t1, l1))) if t1 - t0 > LATE_GAP_US => match side {
                Side::Start => l0,
                Side::End => l1,
            },
            (Some((t0, l0)), Some(&(t1, l1))) => {
                let span = (t1 - t0).max(1);
                l0 + (l1 - l0) * (at_us - t0) / span
            }
        }
    }

    /// Lag accumulated between `from_us` and `to_us` (never more than the interval itself);
    /// an end inside a late gap of the probe takes all of that gap's lag.
    pub fn between(&self, from_us: u64, to_us: u64) -> u64 {
        if to_us <= from_us {
            return 0;
        }
        let (from, to) = (self.at(from_us, Side::Start), self.at(to_us, Side::End));
        to.saturating_sub(from).min(to_us - from_us)
    }

    /// Lag over the whole run.
    pub fn total_us(&self) -> u64 {
        self.samples.last().map_or(0, |s| s.1)
    }
}

/// How often the probe samples (the resolution of [`HostLag::between`]).
const SAMPLE_PERIOD: Duration = Duration::from_millis(2);

/// A gap between two samples longer than this means the probe itself was kept off the CPU:
/// [`HostLag::between`] does not spread the lag of such a gap evenly over it.
pub const LATE_GAP: Duration = Duration::from_millis(5);
const LATE_GAP_US: u64 = 5_000;
const _: () = assert!(LATE_GAP.as_micros() == LATE_GAP_US as u128);
const _: () = assert!(LATE_GAP_US > 2 * SAMPLE_PERIOD.as_micros() as u64);

/// Which end of an interval [`HostLag::at`] is asked about.
#[derive(Clone, Copy)]
enum Side {
    Start,
    End,
}

/// A thread sampling the process's run delay until [`LagProbe::finish`].
pub struct LagProbe {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<HostLag>>,
}

impl LagProbe {
    /// Starts sampling; times are microseconds since `epoch` (the run's clock).
    pub fn start(epoch: std::time::Instant) -> LagProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("host-lag-probe".into())
            .spawn(move || sample(epoch, &s))
            .ok();
        LagProbe { stop, thread }
    }

    /// Stops sampling and returns the timeline (empty if the probe could not run).
    pub fn finish(mut self) -> HostLag {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for LagProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The run delay (ns) of every thread of the process but `skip`.
fn run_delays(skip: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let tid = entry.file_name().to_string_lossy().into_owned();
        if tid == skip {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        if let Some(ns) = text.split_whitespace().nth(1).and_then(|v| v.parse().ok()) {
            out.insert(tid, ns);
        }
    }
    out
}

fn sample(epoch: std::time::Instant, stop: &AtomicBool) -> HostLag {
    let me = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let mut last = run_delays(&me);
    let mut lag_ns = 0u64;
    let mut samples = Vec::new();
    let now_us = || u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
    samples.push((now_us(), 0));
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let current = run_delays(&me);
        // Only growth counts: a thread that ended takes its counter with it. A thread that
        // was not there at the last sample started since, so all of its run delay is new.
        for (tid, ns) in &current {
            let before = last.get(tid).copied().unwrap_or(0);
            lag_ns += ns.saturating_sub(before);
        }
        last = current;
        let at = now_us();
        let prev = samples.last().map_or(0, |s: &(u64, u64)| s.0);
        samples.push((at.max(prev), lag_ns / 1000));
        if stopping {
            break;
        }
        std::thread::sleep(SAMPLE_PERIOD);
    }
    HostLag::from_samples(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_between_interpolates_and_never_exceeds_the_interval() {
        let lag = HostLag::from_samples(vec![(0, 0), (1000, 0), (2000, 500), (4000, 500)]);
        assert_eq!(lag.between(0, 1000), 0);
        assert_eq!(lag.between(1000, 2000), 500);
        assert_eq!(lag.between(1500, 2000), 250);
        assert_eq!(lag.between(0, 10_000), 500);
        assert_eq!(lag.between(2000, 1000), 0);
        assert_eq!(lag.between(1900, 1910), 5);
        assert_eq!(lag.total_us(), 500);
        assert_eq!(HostLag::default().between(0, 1000), 0);
    }

    #[test]
    fn an_interval_inside_a_late_gap_of_the_probe_gets_all_of_its_lag() {
        // The probe slept 2 ms and woke 100 ms later: 60 ms of lag accrued in that gap.
        let lag = HostLag::from_samples(vec![
            (0, 0),
            (1000, 0),
            (101_000, 60_000),
            (103_000, 60_000),
        ]);
        // Evenly spread, the 60 ms from 40 ms to 100 ms would get 36 ms; it gets all 60.
        assert_eq!(lag.between(40_000, 100_000), 60_000);
        // Still never more than the interval, and nothing of the gap outside it.
        assert_eq!(lag.between(50_000, 60_000), 10_000);
        assert_eq!(lag.between(101_000, 103_000), 0);
        // An interval that spans the gap with both ends on time gets exactly the gap's lag.
        assert_eq!(lag.between(500, 102_000), 60_000);
        // A slow driver is still slow: 2 s with 60 ms of lag nets 1.94 s.
        assert_eq!(2_000_000 - lag.between(1000, 2_001_000), 1_940_000);
    }

    #[test]
    fn the_probe_sees_a_thread_waiting_for_a_cpu() {
        // Not a timing assertion: a probe that runs yields a timeline that starts at 0 and
        // never decreases.
        let probe = LagProbe::start(std::time::Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        let lag = probe.finish();
        assert!(lag.samples.len() >= 2, "{lag:?}");
        assert_eq!(lag.samples[0].1, 0);
        assert!(lag.samples.windows(2).all(|w| w[0] <= w[1]), "{lag:?}");
    }
}
