//! What a backend's threads may do to the process they are loaded into: `sigaction`, `signal`
//! and `pthread_cancel` defined here, which a backend's calls bind to where the program exports
//! them.
//!
//! # SIGINT and SIGTERM stay this program's
//!
//! A program's exported symbols come first in the dynamic loader's global scope, before libc,
//! so a library loaded later that calls `sigaction` calls the program's. The `scanconform`
//! binaries export these two (`-Wl,--export-dynamic-symbol`, set by conformance/build.rs);
//! [`interposed`] says whether the running program does. Where it does, from the load of the
//! first backend until the last is dropped, a call that would change the action of SIGINT or
//! SIGTERM reports the current action and changes nothing; every other call, and every call in
//! a forked child (a backend's reader process, which the backend then ends with SIGTERM), goes
//! to libc's function unchanged. Everything else in the program also calls these (Rust's own
//! calls to `sigaction` bind to the program's definition); before a backend is loaded, or where
//! the program does not export them, they pass straight through.
//!
//! A backend cannot tell: its `sigaction` returns 0 as if it had succeeded, which is what a
//! frontend that owns its signal handling needs (the SANE standard leaves signals to the
//! frontend; the test backend's reader resets SIGTERM only because it was written to run in a
//! process of its own).
//!
//! # A backend's cancel of its own thread waits until that thread is blocked
//!
//! Debian's backends built on sanei_thread stop their reader thread with `pthread_cancel` (from
//! `sane_cancel`, from `sane_close`, and from the `sane_read` that receives a frame's last
//! bytes), and sanei_thread makes the thread's cancel type *asynchronous*: the cancel acts
//! wherever the thread is. A reader cancelled inside `malloc` or `free` (freeing its buffer
//! after its last write, or its thread cache as it exits) leaves a malloc arena locked, and the
//! `pthread_join` that follows never returns: the process hangs. That is a hazard of the
//! backend, not a cancel behaviour the SANE standard speaks of, and nothing a frontend does can
//! avoid it (the `sane_read` that frees the reader's last write is the one that cancels it);
//! measured: one hang in about 300 runs of the `test` backend's catalogue on a loaded 2-core
//! machine. So, while a backend is loaded, this program's `pthread_cancel` first waits (at most
//! [`CANCEL_SETTLE_LIMIT`]) until no thread that a `sane_start` created ([`around_start`]) is
//! running: each is blocked in the kernel (in `write` on a full pipe, in `usleep`: places where
//! an asynchronous cancel is harmless) or gone. Then it calls libc's. What the backend does and
//! returns is unchanged; only the moment the cancel lands moves, by microseconds. It is written
//! to be async-signal-safe (no allocation, no lock): `sane_cancel` may run in a signal handler.

use std::ffi::CStr;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};

/// Backends loaded while [`interposed`]; the refusal applies while it is above zero.
static ENGAGED: AtomicUsize = AtomicUsize::new(0);
/// The process that engaged the guard (a forked child's calls pass through).
static OWNER: AtomicI32 = AtomicI32::new(0);
/// Changes refused so far ([`refused_so_far`]).
static REFUSED: AtomicUsize = AtomicUsize::new(0);

type SigactionFn =
    unsafe extern "C" fn(libc::c_int, *const libc::sigaction, *mut libc::sigaction) -> libc::c_int;
type SignalFn = unsafe extern "C" fn(libc::c_int, libc::sighandler_t) -> libc::sighandler_t;

static REAL_SIGACTION: AtomicUsize = AtomicUsize::new(0);
static REAL_SIGNAL: AtomicUsize = AtomicUsize::new(0);

/// libc's definition of `name` (the next one after this program's), cached in `slot`.
fn next(slot: &AtomicUsize, name: &CStr) -> usize {
    let cached = slot.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    // SAFETY: `name` is NUL-terminated; RTLD_NEXT asks for the definition after the object
    // this code is in, which for a symbol this program defines is libc's.
    let found = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    slot.store(found, Ordering::Relaxed);
    found
}

/// Calls libc's `sigaction` itself, past the refusal: for this module's own restores.
pub(super) fn real_sigaction(
    sig: libc::c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> libc::c_int {
    let f = next(&REAL_SIGACTION, c"sigaction");
    if f == 0 {
        // SAFETY: errno is this thread's; setting it is how a libc call reports failure.
        unsafe { *libc::__errno_location() = libc::ENOSYS };
        return -1;
    }
    // SAFETY: `f` is libc's `sigaction`, of exactly this type; the pointers are the
    // caller's, passed on as libc's contract wants them (null or valid).
    unsafe { std::mem::transmute::<usize, SigactionFn>(f)(sig, act, old) }
}

fn refused(sig: libc::c_int) -> bool {
    (sig == libc::SIGINT || sig == libc::SIGTERM)
        && ENGAGED.load(Ordering::SeqCst) > 0
        // SAFETY: getpid has no preconditions and is async-signal-safe.
        && OWNER.load(Ordering::SeqCst) == unsafe { libc::getpid() }
}

/// This program's `sigaction`: libc's, except that it refuses (see the module doc).
#[export_name = "sigaction"]
pub extern "C" fn interposed_sigaction(
    sig: libc::c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> libc::c_int {
    if !act.is_null() && refused(sig) {
        REFUSED.fetch_add(1, Ordering::Relaxed);
        return real_sigaction(sig, std::ptr::null(), old);
    }
    real_sigaction(sig, act, old)
}

/// This program's `signal`: libc's, except that it refuses (see the module doc); a refused
/// call returns the current handler, as a successful one returns the previous.
#[export_name = "signal"]
pub extern "C" fn interposed_signal(
    sig: libc::c_int,
    handler: libc::sighandler_t,
) -> libc::sighandler_t {
    if refused(sig) {
        REFUSED.fetch_add(1, Ordering::Relaxed);
        // SAFETY: a zeroed sigaction is a valid out-value; a null `act` only queries.
        let mut now: libc::sigaction = unsafe { std::mem::zeroed() };
        if real_sigaction(sig, std::ptr::null(), &mut now) != 0 {
            return libc::SIG_ERR;
        }
        return now.sa_sigaction;
    }
    let f = next(&REAL_SIGNAL, c"signal");
    if f == 0 {
        return libc::SIG_ERR;
    }
    // SAFETY: `f` is libc's `signal`, of exactly this type.
    unsafe { std::mem::transmute::<usize, SignalFn>(f)(sig, handler) }
}

type CancelFn = unsafe extern "C" fn(libc::pthread_t) -> libc::c_int;
static REAL_CANCEL: AtomicUsize = AtomicUsize::new(0);

/// How long a backend's `pthread_cancel` waits at most for the threads to block.
pub const CANCEL_SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_millis(200);

/// The ids of the threads `sane_start` calls created that may still exist (0: a free slot).
static STARTED: [AtomicU32; 64] = [const { AtomicU32::new(0) }; 64];

/// The thread ids of this process (empty where `/proc` cannot be read).
fn tasks() -> std::collections::HashSet<u32> {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `call` (a `sane_start`) and remembers the threads it created, for
/// [`interposed_pthread_cancel`]; returns what `call` returned.
pub fn around_start<T>(call: impl FnOnce() -> T) -> T {
    let before = tasks();
    let out = call();
    for tid in tasks().into_iter().filter(|t| !before.contains(t)) {
        // A full table forgets the thread: its cancel then lands without waiting.
        let _ = STARTED.iter().find(|slot| {
            slot.compare_exchange(0, tid, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        });
    }
    out
}

/// Thread `tid`'s state letter from `/proc/self/task/<tid>/stat` (`R` running, `S`
/// sleeping, ...), or `None` when it is gone. No allocation: callable in a signal handler.
fn task_state(tid: u32) -> Option<u8> {
    let mut path = [0u8; 48];
    let prefix = b"/proc/self/task/";
    path[..prefix.len()].copy_from_slice(prefix);
    let mut at = prefix.len();
    let mut digits = [0u8; 10];
    let mut n = 0;
    let mut v = tid;
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for d in digits[..n].iter().rev() {
        path[at] = *d;
        at += 1;
    }
    path[at..at + 5].copy_from_slice(b"/stat");
    // path[at + 5] stays 0: the terminating NUL.
    let mut buf = [0u8; 512];
    // SAFETY: `path` is NUL-terminated; open, read into a stack buffer of the length given,
    // and close are async-signal-safe system calls on a descriptor only this call uses.
    let got = unsafe {
        let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let got = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        got
    };
    let stat = &buf[..usize::try_from(got).ok()?];
    // "tid (comm) S ...": the state follows the last ')', since comm may hold one.
    let close = stat.iter().rposition(|&b| b == b')')?;
    stat.get(close + 2).copied()
}

/// Waits (at most [`CANCEL_SETTLE_LIMIT`]) until no remembered thread other than the calling
/// one is running, and forgets those that are gone. Async-signal-safe.
fn settle() {
    let began = std::time::Instant::now();
    // SAFETY: gettid has no preconditions and is async-signal-safe.
    let me = u32::try_from(unsafe { libc::gettid() }).unwrap_or(0);
    loop {
        let mut running = false;
        for slot in &STARTED {
            let tid = slot.load(Ordering::SeqCst);
            if tid == 0 || tid == me {
                continue;
            }
            match task_state(tid) {
                None => {
                    let _ = slot.compare_exchange(tid, 0, Ordering::SeqCst, Ordering::SeqCst);
                }
                Some(b'R') => running = true,
                Some(_) => {}
            }
        }
        if !running || began.elapsed() >= CANCEL_SETTLE_LIMIT {
            return;
        }
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}

/// Waits up to `limit` for every thread that a `sane_start` created to end; returns whether
/// none is left (forgetting those that ended).
pub fn started_threads_gone(limit: std::time::Duration) -> bool {
    let began = std::time::Instant::now();
    loop {
        let mut alive = false;
        for slot in &STARTED {
            let tid = slot.load(Ordering::SeqCst);
            if tid == 0 {
                continue;
            }
            if task_state(tid).is_none() {
                let _ = slot.compare_exchange(tid, 0, Ordering::SeqCst, Ordering::SeqCst);
            } else {
                alive = true;
            }
        }
        if !alive {
            return true;
        }
        if began.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// This program's `pthread_cancel`: libc's, after waiting for the threads `sane_start`
/// created to block while a backend is loaded (see the module doc).
#[export_name = "pthread_cancel"]
pub extern "C" fn interposed_pthread_cancel(thread: libc::pthread_t) -> libc::c_int {
    if ENGAGED.load(Ordering::SeqCst) > 0 {
        settle();
    }
    let f = next(&REAL_CANCEL, c"pthread_cancel");
    if f == 0 {
        return libc::ENOSYS;
    }
    // SAFETY: `f` is libc's `pthread_cancel`, of exactly this type; `thread` is the
    // caller's, passed on unchanged.
    unsafe { std::mem::transmute::<usize, CancelFn>(f)(thread) }
}

/// Whether the backends this program loads bind to [`interposed_sigaction`]: the global
/// scope's `sigaction` is this module's.
pub fn interposed() -> bool {
    // SAFETY: the name is NUL-terminated; RTLD_DEFAULT looks the symbol up as a library
    // loaded now would bind it.
    let global = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"sigaction".as_ptr()) };
    std::ptr::eq(global as *const (), interposed_sigaction as *const ())
}

/// How many changes to SIGINT or SIGTERM have been refused in this process.
pub fn refused_so_far() -> usize {
    REFUSED.load(Ordering::Relaxed)
}

/// The refusal, engaged for as long as one loaded backend holds it (where [`interposed`]).
pub struct Engaged(bool);

impl Engaged {
    /// Engages the refusal if this program is interposed.
    pub fn new() -> Engaged {
        if !interposed() {
            return Engaged(false);
        }
        // SAFETY: getpid has no preconditions.
        OWNER.store(unsafe { libc::getpid() }, Ordering::SeqCst);
        ENGAGED.fetch_add(1, Ordering::SeqCst);
        Engaged(true)
    }
}

impl Default for Engaged {
    fn default() -> Engaged {
        Engaged::new()
    }
}

impl Drop for Engaged {
    fn drop(&mut self) {
        if self.0 {
            ENGAGED.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// The tests share [`STARTED`]: one at a time.
    fn serial() -> std::sync::MutexGuard<'static, ()> {
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        LOCK.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The calling thread's id.
    fn gettid() -> u32 {
        // SAFETY: gettid has no preconditions.
        u32::try_from(unsafe { libc::gettid() }).unwrap_or(0)
    }

    /// Forgets every registered thread but `tid`: [`around_start`] also registers threads
    /// that other tests of this binary started meanwhile, which these tests are not about.
    /// Returns whether `tid` was registered.
    fn keep_only(tid: u32) -> bool {
        let mut found = false;
        for slot in &STARTED {
            match slot.load(Ordering::SeqCst) {
                0 => {}
                t if t == tid => found = true,
                t => {
                    let _ = slot.compare_exchange(t, 0, Ordering::SeqCst, Ordering::SeqCst);
                }
            }
        }
        found
    }

    /// Starts `body` on a thread inside [`around_start`], as a backend's `sane_start` starts
    /// its reader, and returns the thread and its id once it runs, registered alone.
    fn start_registered<T: Send + 'static>(
        body: impl FnOnce() -> T + Send + 'static,
    ) -> (std::thread::JoinHandle<T>, u32) {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel::<u32>();
        let (handle, tid) = around_start(|| {
            let t = std::thread::spawn(move || {
                tid_tx.send(gettid()).unwrap();
                body()
            });
            // around_start sees the thread once it exists: wait for it to run.
            (t, tid_rx.recv().unwrap())
        });
        assert!(keep_only(tid), "thread {tid} not registered");
        (handle, tid)
    }

    #[test]
    fn a_started_thread_that_cancels_does_not_wait_for_itself() {
        let _g = serial();
        let (go, wait_for_go) = std::sync::mpsc::channel::<()>();
        let (handle, _) = start_registered(move || {
            wait_for_go.recv().unwrap();
            let t = Instant::now();
            settle();
            t.elapsed()
        });
        // It runs while it settles: only itself is running, so it does not wait.
        go.send(()).unwrap();
        let waited = handle.join().unwrap();
        assert!(waited < CANCEL_SETTLE_LIMIT, "{waited:?}");
        assert!(started_threads_gone(Duration::from_secs(5)));
    }

    #[test]
    fn a_thread_started_by_sane_start_is_waited_for_until_it_blocks_then_forgotten() {
        let _g = serial();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (handle, tid) = start_registered(move || {
            // Running for 20 ms of its own clock, then blocked until told to end.
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(20) {
                std::hint::spin_loop();
            }
            let _ = rx.recv();
        });
        let began = Instant::now();
        settle();
        let waited = began.elapsed();
        // It waited while the thread spun ...
        assert!(waited >= Duration::from_millis(10), "{waited:?}");
        // ... and returned before its limit only because the thread had blocked.
        assert!(
            waited >= CANCEL_SETTLE_LIMIT || task_state(tid) != Some(b'R'),
            "{waited:?}"
        );
        drop(tx);
        handle.join().unwrap();
        assert_eq!(task_state(tid), None, "gone after the join");
        settle();
        assert!(STARTED.iter().all(|s| s.load(Ordering::SeqCst) == 0));
    }

    #[test]
    fn the_state_of_this_thread_reads_as_running() {
        let tid = std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|p| p.file_name()?.to_str()?.parse::<u32>().ok())
            .expect("/proc/thread-self names this thread");
        assert_eq!(task_state(tid), Some(b'R'));
        assert_eq!(task_state(u32::MAX), None);
    }
}
