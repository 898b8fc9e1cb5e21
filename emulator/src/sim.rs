//! A deterministic single-threaded executor that runs futures in virtual time.
//!
//! [`Sim`] is the runtime of every in-process session: the scanner, the host controller, the
//! driver under test and the scenario's application all run as futures on one thread. Tasks run
//! in the order they were woken; when none can run, virtual time jumps to the earliest pending
//! timer. A 40-second scan therefore replays in milliseconds and the same program gives the same
//! schedule, and so the same trace, on every run.
//!
//! Work that happens outside the simulation (an external driver process answering on a pipe)
//! holds an [`ExternalWait`] guard: while one is held, virtual time does not move and the executor
//! sleeps until a wake arrives from another thread, so a slow process cannot change the trace.
//!
//! When no task can run, no timer is pending and nothing external is awaited, the program can
//! never finish: [`Sim::block_on`] reports that as [`SimError::Stalled`] instead of hanging.
//!
//! [`Sim::settle`] waits for the end of the current instant: it completes once no task is left
//! to run before time would move on, so a task can see everything that happens at one instant
//! (several transfers completing together, say) before it acts on any of it.

use std::cell::{Cell, RefCell};
use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use crate::time::{Duration, Instant};

/// Why [`Sim::block_on`] gave up before its future completed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// Every task is waiting and nothing can wake any of them.
    #[error("stalled at {at}: every task waits and no timer or external event is pending")]
    Stalled {
        /// Virtual time when the executor found itself stalled.
        at: Instant,
    },
    /// The next pending timer lies beyond the limit given to `block_on`.
    #[error("virtual time limit {limit} reached")]
    TimeLimit {
        /// The limit that was reached.
        limit: Instant,
    },
    /// An external wait lasted longer than the wall-clock guard.
    #[error("no external event for {guard_ms} ms of wall-clock time")]
    ExternalTimeout {
        /// The wall-clock guard in milliseconds.
        guard_ms: u64,
    },
}

type TaskId = usize;

/// Tasks woken and ready to run; shared with wakers, which may fire from other threads.
#[derive(Default)]
struct ReadyQueue {
    queue: Mutex<VecDeque<TaskId>>,
    signal: Condvar,
}

struct TaskWaker {
    id: TaskId,
    ready: Arc<ReadyQueue>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        let mut queue = self.ready.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.push_back(self.id);
        self.ready.signal.notify_one();
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct TimerKey {
    // Reversed so that BinaryHeap pops the earliest deadline, then the earliest registration.
    deadline: std::cmp::Reverse<Instant>,
    seq: std::cmp::Reverse<u64>,
}

struct Timer {
    key: TimerKey,
    waker: Waker,
}

impl PartialEq for Timer {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Timer {}
impl PartialOrd for Timer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timer {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

type LocalTask = Pin<Box<dyn Future<Output = ()>>>;

struct Inner {
    now: Cell<Instant>,
    timers: RefCell<BinaryHeap<Timer>>,
    timer_seq: Cell<u64>,
    tasks: RefCell<Vec<Option<LocalTask>>>,
    spawned: RefCell<Vec<LocalTask>>,
    ready: Arc<ReadyQueue>,
    external: Cell<usize>,
    /// Tasks waiting in [`Sim::settle`] for the ready queue to drain.
    settling: RefCell<Vec<Waker>>,
    /// Bumped each time the ready queue drained with tasks settling.
    settled: Cell<u64>,
    external_guard: Cell<std::time::Duration>,
    /// `Some(start)` in real-time mode: time is the wall clock since `start`.
    realtime: Option<std::time::Instant>,
}

/// The virtual-time executor and clock. Cloning gives another handle to the same simulation.
#[derive(Clone)]
pub struct Sim {
    inner: Rc<Inner>,
}

impl Default for Sim {
    fn default() -> Self {
        Sim::new()
    }
}

impl Sim {
    /// A new simulation at virtual time zero.
    pub fn new() -> Sim {
        Sim {
            inner: Rc::new(Inner {
                now: Cell::new(Instant::ZERO),
                timers: RefCell::new(BinaryHeap::new()),
                timer_seq: Cell::new(0),
                tasks: RefCell::new(Vec::new()),
                spawned: RefCell::new(Vec::new()),
                ready: Arc::new(ReadyQueue::default()),
                external: Cell::new(0),
                settling: RefCell::new(Vec::new()),
                settled: Cell::new(0),
                external_guard: Cell::new(std::time::Duration::from_secs(30)),
                realtime: None,
            }),
        }
    }

    /// A simulation whose clock is the wall clock (microseconds since this call): timers wait
    /// for real, and external events never hold time still. Used against devices and drivers
    /// that keep their own time (USB/IP, libusb programs, real scanners).
    pub fn realtime() -> Sim {
        Sim::realtime_since(std::time::Instant::now())
    }

    /// A [`Sim::realtime`] simulation whose clock counts from `epoch` (the epoch of another
    /// clock, so that both give the same instants).
    pub fn realtime_since(epoch: std::time::Instant) -> Sim {
        let sim = Sim::new();
        let mut inner = Rc::try_unwrap(sim.inner).unwrap_or_else(|_| unreachable!("fresh Rc"));
        inner.realtime = Some(epoch);
        Sim {
            inner: Rc::new(inner),
        }
    }

    /// True for a [`Sim::realtime`] simulation.
    pub fn is_realtime(&self) -> bool {
        self.inner.realtime.is_some()
    }

    /// Moves `now` to the wall clock (real-time mode only).
    fn sync_wall_clock(&self) {
        if let Some(start) = self.inner.realtime {
            let wall = Instant::from_micros(
                u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
            );
            if wall > self.inner.now.get() {
                self.inner.now.set(wall);
            }
        }
    }

    /// Sets the wall-clock guard for external waits (default 30 s).
    pub fn set_external_guard(&self, guard: std::time::Duration) {
        self.inner.external_guard.set(guard);
    }

    /// The current time: virtual, or the wall clock in real-time mode.
    pub fn now(&self) -> Instant {
        self.sync_wall_clock();
        self.inner.now.get()
    }

    /// A future that completes when virtual time reaches `deadline`.
    pub fn sleep_until(&self, deadline: Instant) -> Sleep {
        Sleep {
            sim: self.clone(),
            deadline,
            registered: false,
        }
    }

    /// A future that completes `duration` from now.
    pub fn sleep(&self, duration: Duration) -> Sleep {
        self.sleep_until(self.now() + duration)
    }

    /// Runs `future` as a task of its own. It is polled first on the next scheduler turn and is
    /// dropped unfinished when the `block_on` that runs it returns.
    pub fn spawn(&self, future: impl Future<Output = ()> + 'static) {
        self.inner.spawned.borrow_mut().push(Box::pin(future));
    }

    /// A future that completes at the end of the current instant: once every task that can run
    /// now has run and is waiting, before virtual time moves on (or, in real-time mode, before
    /// the executor sleeps). Tasks woken meanwhile run first; several tasks settling at once
    /// resume in the order they began to settle.
    pub fn settle(&self) -> Settle {
        Settle {
            sim: self.clone(),
            epoch: None,
        }
    }

    /// Holds virtual time still until the returned guard is dropped; see the module docs.
    pub fn external_wait(&self) -> ExternalWait {
        self.inner.external.set(self.inner.external.get() + 1);
        ExternalWait { sim: self.clone() }
    }

    /// A waker-safe handle that other threads use to wake a task of this simulation.
    fn register_timer(&self, deadline: Instant, waker: Waker) {
        let seq = self.inner.timer_seq.get();
        self.inner.timer_seq.set(seq + 1);
        self.inner.timers.borrow_mut().push(Timer {
            key: TimerKey {
                deadline: std::cmp::Reverse(deadline),
                seq: std::cmp::Reverse(seq),
            },
            waker,
        });
    }

    fn adopt_spawned(&self) {
        let spawned: Vec<LocalTask> = self.inner.spawned.borrow_mut().drain(..).collect();
        for task in spawned {
            let id = {
                let mut tasks = self.inner.tasks.borrow_mut();
                tasks.push(Some(task));
                tasks.len() - 1
            };
            self.wake_id(id);
        }
    }

    fn wake_id(&self, id: TaskId) {
        let mut queue = self
            .inner
            .ready
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        queue.push_back(id);
    }

    fn pop_ready(&self) -> Option<TaskId> {
        let mut queue = self
            .inner
            .ready
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        queue.pop_front()
    }

    fn run_task(&self, id: TaskId) {
        let task = self
            .inner
            .tasks
            .borrow_mut()
            .get_mut(id)
            .and_then(Option::take);
        let Some(mut task) = task else { return };
        let waker = Waker::from(Arc::new(TaskWaker {
            id,
            ready: self.inner.ready.clone(),
        }));
        let mut cx = Context::from_waker(&waker);
        if task.as_mut().poll(&mut cx).is_pending() {
            self.inner.tasks.borrow_mut()[id] = Some(task);
        }
    }

    /// Fires every timer due at the earliest pending deadline, moving virtual time there.
    fn advance(&self, limit: Instant) -> Result<bool, SimError> {
        let mut timers = self.inner.timers.borrow_mut();
        let Some(first) = timers.peek() else {
            return Ok(false);
        };
        let deadline = first.key.deadline.0;
        if deadline > limit {
            return Err(SimError::TimeLimit { limit });
        }
        if deadline > self.inner.now.get() {
            self.inner.now.set(deadline);
        }
        while timers
            .peek()
            .is_some_and(|t| t.key.deadline.0 <= self.inner.now.get())
        {
            if let Some(timer) = timers.pop() {
                timer.waker.wake();
            }
        }
        Ok(true)
    }

    /// Runs `future` and every spawned task until `future` completes, virtual time passes `limit`,
    /// or nothing can make progress. Spawned tasks still pending afterwards are dropped.
    pub fn block_on<F: Future + 'static>(
        &self,
        future: F,
        limit: Instant,
    ) -> Result<F::Output, SimError> {
        let result: Rc<RefCell<Option<F::Output>>> = Rc::new(RefCell::new(None));
        let slot = result.clone();
        self.spawn(async move {
            let out = future.await;
            *slot.borrow_mut() = Some(out);
        });
        let outcome = self.run_until(|| result.borrow().is_some(), limit);
        self.inner.tasks.borrow_mut().clear();
        self.inner.spawned.borrow_mut().clear();
        self.inner.timers.borrow_mut().clear();
        self.inner.settling.borrow_mut().clear();
        self.inner
            .ready
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        outcome?;
        let out = result.borrow_mut().take();
        out.ok_or(SimError::Stalled { at: self.now() })
    }

    fn run_until(&self, done: impl Fn() -> bool, limit: Instant) -> Result<(), SimError> {
        loop {
            self.adopt_spawned();
            while let Some(id) = self.pop_ready() {
                self.run_task(id);
                self.adopt_spawned();
                if done() {
                    return Ok(());
                }
            }
            if done() {
                return Ok(());
            }
            let settling: Vec<Waker> = self.inner.settling.borrow_mut().drain(..).collect();
            if !settling.is_empty() {
                self.inner.settled.set(self.inner.settled.get() + 1);
                for waker in settling {
                    waker.wake();
                }
                continue;
            }
            if self.inner.realtime.is_some() {
                self.wait_realtime(limit)?;
                continue;
            }
            if self.inner.external.get() > 0 {
                self.wait_external()?;
                continue;
            }
            if !self.advance(limit)? {
                return Err(SimError::Stalled { at: self.now() });
            }
        }
    }

    /// Real-time mode: sleeps until the next timer is due or a wake arrives, then fires due
    /// timers. With nothing pending at all, the program is stalled.
    fn wait_realtime(&self, limit: Instant) -> Result<(), SimError> {
        let next = self.inner.timers.borrow().peek().map(|t| t.key.deadline.0);
        let now = self.now();
        if next.is_none() && self.inner.external.get() == 0 {
            // Without an external event source nothing can wake a task: a wake from another
            // thread is still possible (I/O threads), so wait for it within the guard.
            return self
                .wait_external()
                .map_err(|_| SimError::Stalled { at: now });
        }
        if now >= limit {
            return Err(SimError::TimeLimit { limit });
        }
        let until = next.unwrap_or(limit).min(limit);
        let wait = std::time::Duration::from_micros((until - now).total_micros());
        {
            let ready = &self.inner.ready;
            let queue = ready.queue.lock().unwrap_or_else(|e| e.into_inner());
            let _unused = ready
                .signal
                .wait_timeout_while(queue, wait, |q| q.is_empty())
                .unwrap_or_else(|e| e.into_inner());
        }
        let now = self.now();
        let mut timers = self.inner.timers.borrow_mut();
        while timers.peek().is_some_and(|t| t.key.deadline.0 <= now) {
            if let Some(timer) = timers.pop() {
                timer.waker.wake();
            }
        }
        Ok(())
    }

    fn wait_external(&self) -> Result<(), SimError> {
        let guard = self.inner.external_guard.get();
        let ready = &self.inner.ready;
        let queue = ready.queue.lock().unwrap_or_else(|e| e.into_inner());
        let (queue, timeout) = ready
            .signal
            .wait_timeout_while(queue, guard, |q| q.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        if timeout.timed_out() && queue.is_empty() {
            return Err(SimError::ExternalTimeout {
                guard_ms: u64::try_from(guard.as_millis()).unwrap_or(u64::MAX),
            });
        }
        Ok(())
    }
}

/// A source of time for hosts and drivers: the simulation's virtual clock, or a wall clock.
pub trait Clock {
    /// The current time.
    fn now(&self) -> Instant;
    /// A future that completes at `deadline`.
    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Future<Output = ()>>>;
}

impl Clock for Sim {
    fn now(&self) -> Instant {
        Sim::now(self)
    }
    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(Sim::sleep_until(self, deadline))
    }
}

/// While alive, virtual time stands still; see [`Sim::external_wait`].
pub struct ExternalWait {
    sim: Sim,
}

impl Drop for ExternalWait {
    fn drop(&mut self) {
        let n = self.sim.inner.external.get();
        self.sim.inner.external.set(n.saturating_sub(1));
    }
}

/// The end of the current instant; see [`Sim::settle`].
pub struct Settle {
    sim: Sim,
    /// The settle count when this future first waited.
    epoch: Option<u64>,
}

impl Future for Settle {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let settled = self.sim.inner.settled.get();
        match self.epoch {
            Some(epoch) if settled != epoch => Poll::Ready(()),
            _ => {
                self.epoch = Some(settled);
                self.sim
                    .inner
                    .settling
                    .borrow_mut()
                    .push(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// A timer future of the simulation; see [`Sim::sleep_until`].
pub struct Sleep {
    sim: Sim,
    deadline: Instant,
    registered: bool,
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.sim.now() >= self.deadline {
            return Poll::Ready(());
        }
        if !self.registered {
            self.registered = true;
            let deadline = self.deadline;
            self.sim.register_timer(deadline, cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_deadline_order_and_time_jumps() {
        let sim = Sim::new();
        let log = Rc::new(RefCell::new(Vec::new()));
        for (name, at) in [("b", 300u64), ("a", 100), ("c", 300)] {
            let (sim2, log2) = (sim.clone(), log.clone());
            sim.spawn(async move {
                sim2.sleep_until(Instant::from_micros(at)).await;
                log2.borrow_mut().push((name, sim2.now().total_micros()));
            });
        }
        let s = sim.clone();
        sim.block_on(
            async move { s.sleep_until(Instant::from_millis(40_000)).await },
            Instant::from_micros(u64::MAX),
        )
        .unwrap();
        assert_eq!(*log.borrow(), vec![("a", 100), ("b", 300), ("c", 300)]);
        assert_eq!(sim.now().total_micros(), 40_000_000);
    }

    #[test]
    fn settle_waits_for_every_task_of_the_instant_before_time_moves() {
        let sim = Sim::new();
        let log = Rc::new(RefCell::new(Vec::new()));
        let (s, l) = (sim.clone(), log.clone());
        sim.spawn(async move {
            s.settle().await;
            l.borrow_mut().push(("settled", s.now().total_micros()));
        });
        for name in ["a", "b"] {
            let (s, l) = (sim.clone(), log.clone());
            sim.spawn(async move {
                l.borrow_mut().push((name, s.now().total_micros()));
                s.sleep(Duration::from_micros(10)).await;
                l.borrow_mut().push((name, s.now().total_micros()));
            });
        }
        let s = sim.clone();
        sim.block_on(
            async move { s.sleep(Duration::from_micros(20)).await },
            Instant::from_micros(u64::MAX),
        )
        .unwrap();
        assert_eq!(
            *log.borrow(),
            vec![("a", 0), ("b", 0), ("settled", 0), ("a", 10), ("b", 10)]
        );
    }

    #[test]
    fn a_future_that_can_never_finish_is_reported_not_hung() {
        let sim = Sim::new();
        let err = sim
            .block_on(std::future::pending::<()>(), Instant::from_micros(u64::MAX))
            .unwrap_err();
        assert_eq!(err, SimError::Stalled { at: Instant::ZERO });
    }

    #[test]
    fn time_limit_stops_a_runaway_loop() {
        let sim = Sim::new();
        let s = sim.clone();
        let err = sim
            .block_on(
                async move {
                    loop {
                        s.sleep(Duration::from_millis(10)).await;
                    }
                },
                Instant::from_millis(1000),
            )
            .unwrap_err();
        assert_eq!(
            err,
            SimError::TimeLimit {
                limit: Instant::from_millis(1000)
            }
        );
        assert_eq!(sim.now(), Instant::from_millis(1000));
    }

    #[test]
    fn external_wait_holds_time_until_another_thread_wakes() {
        let sim = Sim::new();
        let s = sim.clone();
        let out = sim
            .block_on(
                async move {
                    let (tx, rx) = std::sync::mpsc::channel::<u32>();
                    let guard = s.external_wait();
                    let value = ExternalRecv { rx, tx: Some(tx) }.await;
                    drop(guard);
                    (value, s.now())
                },
                Instant::from_micros(u64::MAX),
            )
            .unwrap();
        assert_eq!(out, (7, Instant::ZERO));
    }

    #[test]
    fn realtime_mode_waits_for_real() {
        let sim = Sim::realtime();
        let s = sim.clone();
        let wall = std::time::Instant::now();
        let at = sim
            .block_on(
                async move {
                    s.sleep(Duration::from_millis(30)).await;
                    s.now()
                },
                Instant::from_millis(10_000),
            )
            .unwrap();
        assert!(wall.elapsed() >= std::time::Duration::from_millis(30));
        assert!(at >= Instant::from_millis(30));
    }

    /// Receives one value that a helper thread sends after the first poll.
    struct ExternalRecv {
        rx: std::sync::mpsc::Receiver<u32>,
        tx: Option<std::sync::mpsc::Sender<u32>>,
    }

    impl Future for ExternalRecv {
        type Output = u32;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            if let Ok(v) = self.rx.try_recv() {
                return Poll::Ready(v);
            }
            if let Some(tx) = self.tx.take() {
                let waker = cx.waker().clone();
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    tx.send(7).unwrap();
                    waker.wake();
                });
            }
            Poll::Pending
        }
    }
}
