//! Runs in parallel: worker threads each take the next job, build everything the run needs on
//! their own thread, and hand back a result; results come back in job order.
//!
//! A run's core is single-threaded and `Rc`-based (its `Sim`, host, driver and trace never
//! leave the thread that built them), so the unit of parallelism is a whole run: what crosses
//! threads is the job (what to run) and its result (the trace and verdict), both `Send`. A
//! run's result depends on the job alone, never on which thread ran it or when, so results
//! taken in job order give byte-identical output whatever the number of workers.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};

/// The number of workers `--jobs` defaults to: the CPUs this process may use (1 if unknown).
pub fn default_workers() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// Runs `work` on every job on up to `workers` threads and hands each result to `each` in job
/// order, as soon as it and every result before it are in (so output streams). `each`
/// returns `false` to stop: jobs not started yet are not run. With one worker (or one job)
/// everything runs on the calling thread, one job after the other.
pub fn in_order<J, R, W, E>(jobs: Vec<J>, workers: NonZeroUsize, work: W, mut each: E)
where
    J: Send,
    R: Send,
    W: Fn(J) -> R + Sync,
    E: FnMut(usize, R) -> bool,
{
    let n = jobs.len();
    let workers = workers.get().min(n);
    if workers <= 1 {
        for (i, job) in jobs.into_iter().enumerate() {
            if !each(i, work(job)) {
                return;
            }
        }
        return;
    }
    let queue = Mutex::new(jobs.into_iter().enumerate());
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(usize, R)>();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (tx, queue, stop, work) = (tx.clone(), &queue, &stop, &work);
            scope.spawn(move || loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                let Some((i, job)) = next else {
                    return;
                };
                if tx.send((i, work(job))).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        let mut waiting = BTreeMap::new();
        let mut next = 0;
        for (i, result) in rx {
            waiting.insert(i, result);
            while let Some(result) = waiting.remove(&next) {
                if !each(next, result) {
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
                next += 1;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    #[test]
    fn results_come_in_job_order_whatever_the_workers() {
        for w in [1, 2, 5] {
            let jobs: Vec<u64> = (0..40).collect();
            let mut seen = Vec::new();
            in_order(
                jobs,
                workers(w),
                |j| {
                    // Later jobs finish first.
                    std::thread::sleep(std::time::Duration::from_micros(40 - j));
                    j * j
                },
                |i, r| {
                    seen.push((i, r));
                    true
                },
            );
            let expected: Vec<(usize, u64)> = (0..40).map(|j| (j as usize, j * j)).collect();
            assert_eq!(seen, expected, "{w} workers");
        }
    }

    #[test]
    fn each_can_stop_the_rest() {
        let ran = std::sync::atomic::AtomicUsize::new(0);
        let released = AtomicBool::new(false);
        let mut seen = 0;
        in_order(
            (0..1000).collect::<Vec<u32>>(),
            workers(2),
            |j| {
                ran.fetch_add(1, Ordering::Relaxed);
                // Jobs after the fourth wait until the fourth result stopped the run.
                while j >= 4 && !released.load(Ordering::Relaxed) {
                    std::thread::yield_now();
                }
                j
            },
            |i, _| {
                seen += 1;
                if i == 3 {
                    released.store(true, Ordering::Relaxed);
                }
                i < 3
            },
        );
        assert_eq!(seen, 4);
        assert!(
            ran.load(Ordering::Relaxed) <= 6,
            "only the jobs under way when it stopped ran: {}",
            ran.load(Ordering::Relaxed)
        );
    }

    #[test]
    fn runs_and_their_results_cross_threads() {
        fn send<T: Send>() {}
        send::<crate::scenario::LoadedScenario>();
        send::<super::super::RunResult>();
    }
}
