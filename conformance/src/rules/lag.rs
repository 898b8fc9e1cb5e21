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

    /// The cumulative lag at `at_us`, interpolated between samples.
    fn at(&self, at_us: u64) -> u64 {
        let s = &self.samples;
        let i = s.partition_point(|&(t, _)| t <= at_us);
        match (i.checked_sub(1).map(|j| s[j]), s.get(i)) {
            (None, _) => 0,
            (Some((_, l)), None) => l,
            (Some((t0, l0)), Some(&(t1, l1))) => {
                let span = (t1 - t0).max(1);
                l0 + (l1 - l0) * (at_us - t0) / span
            }
        }
    }

    /// Lag accumulated between `from_us` and `to_us` (never more than the interval itself).
    pub fn between(&self, from_us: u64, to_us: u64) -> u64 {
        if to_us <= from_us {
            return 0;
        }
        (self.at(to_us) - self.at(from_us).min(self.at(to_us))).min(to_us - from_us)
    }

    /// Lag over the whole run.
    pub fn total_us(&self) -> u64 {
        self.samples.last().map_or(0, |s| s.1)
    }
}

/// How often the probe samples (the resolution of [`HostLag::between`]).
const SAMPLE_PERIOD: Duration = Duration::from_millis(2);

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
