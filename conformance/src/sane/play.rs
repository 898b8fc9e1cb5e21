//! The frontend's script: plays a SANE scenario's options and steps against an opened backend
//! (one thread, or a reader and a canceller for a cancel during a blocked read) and records every
//! call into the run's [`Recorder`].
//!
//! About 600 lines: one step interpreter (`Play::step`), the read loop and the two-thread
//! cancel during a blocked read, which share the player's state and belong together.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::ffi::{
    self, Backend, Handle, OptionDescriptor, Parameters, Status, Value, ValueType, LEN_SENTINEL,
};
use super::scenario::{CancelFrom, LoadedSaneScenario, SaneScenario, Step};
use super::trace::{FrameCheck, Op, Outcome, Recorder, Thread};

/// Why a script could not be played to its end: a problem of the run, never an expected
/// finding (the run fails). `Display` is the line the run reports.
#[derive(Debug, thiserror::Error)]
enum Problem {
    /// A step needs the handle after `close`.
    #[error("the script calls the backend after close; add an open step")]
    AfterClose,
    /// `wait-readable` before `get-select-fd` gave a descriptor.
    #[error("wait-readable without a select fd (get-select-fd did not return one)")]
    WaitWithoutFd,
    /// `open` while the device is open.
    #[error("open step while the device is open")]
    OpenWhileOpen,
    /// `open` again failed.
    #[error("re-open returned {}", .0.name())]
    Reopen(Status),
    /// A `set-option` step the backend refuses or lacks.
    #[error("{0}")]
    Option(String),
    /// A read loop outlived the scenario's `timeout_ms`.
    #[error("reads did not end within {ms} ms (timeout_ms)")]
    ReadTimeout {
        /// The scenario's timeout.
        ms: u64,
    },
    /// `cancel-while-blocked` found no read blocked long enough.
    #[error("no read blocked for {blocked_ms} ms, so the cancel was never sent; slow the backend down (read-delay) or lower blocked_ms")]
    NeverBlocked {
        /// The step's `blocked_ms`.
        blocked_ms: u64,
    },
    /// The reader of `cancel-while-blocked` went on past the timeout.
    #[error("the reader did not stop within {ms} ms")]
    ReaderDidNotStop {
        /// The scenario's timeout.
        ms: u128,
    },
}

/// sane_init, sane_open `device`, the options, the script, sane_close, sane_exit on
/// `backend`, recorded into `rec`; with `frames`, the frames read to EOF are checked against
/// the emulated device's pattern.
pub(super) fn play(
    backend: &Backend,
    device: &str,
    s: &LoadedSaneScenario,
    rec: &Recorder,
    problems: &mut Vec<String>,
    skipped: &mut Option<String>,
    frames: Option<&mut Vec<FrameCheck>>,
) {
    let (st, _) = call(rec, Thread::App, Op::Init, || {
        let (st, _) = backend.init();
        (st, Outcome::status(st))
    });
    if st == Status::GOOD {
        let opened = {
            let seq = rec.begin(Thread::App, Op::Open(device.to_string()));
            let r = backend.open(device);
            rec.end(
                seq,
                Outcome::status(r.as_ref().err().copied().unwrap_or(Status::GOOD)),
            );
            r
        };
        match opened {
            Ok(h) => {
                let check_frames = frames.is_some();
                let mut play = Play {
                    backend,
                    device,
                    scenario: &s.scenario,
                    rec,
                    handle: Some(h),
                    non_blocking: false,
                    select_fd: None,
                    deadline: Instant::now(),
                    frame: None,
                    check_frames,
                    frames: Vec::new(),
                };
                match play.options(&s.scenario.options) {
                    Err(Skip(why)) => *skipped = Some(why),
                    Ok(()) => {
                        if let Err(p) = play.steps(&s.scenario.steps) {
                            problems.push(p.to_string());
                        }
                    }
                }
                play.close_if_open();
                if let Some(out) = frames {
                    *out = std::mem::take(&mut play.frames);
                }
            }
            Err(st) => problems.push(format!("sane_open returned {}", st.name())),
        }
        call(rec, Thread::App, Op::Exit, || {
            backend.exit();
            (Status::GOOD, Outcome::default())
        });
    } else {
        problems.push(format!("sane_init returned {}", st.name()));
    }
}

impl Outcome {
    fn status(st: Status) -> Outcome {
        Outcome {
            status: Some(st),
            ..Outcome::default()
        }
    }
}

fn call<T>(rec: &Recorder, thread: Thread, op: Op, f: impl FnOnce() -> (T, Outcome)) -> (T, Op) {
    let seq = rec.begin(thread, op.clone());
    let (t, outcome) = f();
    rec.end(seq, outcome);
    (t, op)
}

struct Skip(String);

struct Play<'a, 'b> {
    backend: &'b Backend,
    device: &'b str,
    scenario: &'a SaneScenario,
    rec: &'a Recorder,
    handle: Option<Handle<'b>>,
    non_blocking: bool,
    /// The select fd of the current frame, if the frontend asked for it.
    select_fd: Option<i32>,
    deadline: Instant,
    /// The frame being read by the frontend's own thread (emulated device only): its
    /// parameters and bytes.
    frame: Option<(Option<Parameters>, Vec<u8>)>,
    check_frames: bool,
    frames: Vec<FrameCheck>,
}

/// Compares a frame read to EOF with the emulator's test pattern.
fn check_frame(eof_seq: usize, params: Option<Parameters>, data: &[u8]) -> Option<FrameCheck> {
    let p = params?;
    let bpl = usize::try_from(p.bytes_per_line).ok()?;
    let lines = usize::try_from(p.lines).ok()?;
    let mut line = vec![0u8; bpl];
    let mut first_mismatch = None;
    for (i, got) in data.chunks(bpl.max(1)).enumerate().take(lines) {
        scanemu::engine::pattern_line(0, u32::try_from(i).unwrap_or(u32::MAX), &mut line);
        if let Some(k) = got.iter().zip(&line).position(|(a, b)| a != b) {
            first_mismatch = Some((i * bpl + k) as u64);
            break;
        }
    }
    Some(FrameCheck {
        eof_seq,
        bytes: data.len() as u64,
        expected: (bpl * lines) as u64,
        first_mismatch,
    })
}

impl<'b> Play<'_, 'b> {
    fn h(&self) -> Result<&Handle<'b>, Problem> {
        self.handle.as_ref().ok_or(Problem::AfterClose)
    }

    fn find_option(&self, name: &str) -> Option<OptionDescriptor> {
        let h = self.handle.as_ref()?;
        (1..h.option_count())
            .filter_map(|i| h.descriptor(i))
            .find(|d| d.name == name)
    }

    fn options(&mut self, opts: &serde_json::Map<String, serde_json::Value>) -> Result<(), Skip> {
        for (name, value) in opts {
            self.set_option(name, value)?;
        }
        Ok(())
    }

    fn set_option(&mut self, name: &str, value: &serde_json::Value) -> Result<(), Skip> {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let seq = self
            .rec
            .begin(Thread::App, Op::SetOption(name.to_string(), text));
        let Some(desc) = self.find_option(name) else {
            let why = format!("backend has no option {name:?}");
            self.rec.end(
                seq,
                Outcome {
                    note: Some(why.clone()),
                    ..Outcome::default()
                },
            );
            return Err(Skip(why));
        };
        let typed = match (desc.value_type, value) {
            (ValueType::Bool, serde_json::Value::Bool(b)) => Some(Value::Bool(*b)),
            (ValueType::Int, serde_json::Value::Number(n)) => n
                .as_i64()
                .and_then(|v| i32::try_from(v).ok())
                .map(Value::Int),
            (ValueType::Fixed, serde_json::Value::Number(n)) => n
                .as_f64()
                .map(|v| Value::Fixed((v * 65536.0).round() as i32)),
            (ValueType::String, serde_json::Value::String(s)) => Some(Value::Str(s.clone())),
            (ValueType::Button, _) => Some(Value::Button),
            _ => None,
        };
        let Some(typed) = typed else {
            let why = format!(
                "option {name:?} is {:?}; the scenario's value {value} does not fit",
                desc.value_type
            );
            self.rec.end(
                seq,
                Outcome {
                    note: Some(why.clone()),
                    ..Outcome::default()
                },
            );
            return Err(Skip(why));
        };
        let h = self
            .handle
            .as_ref()
            .ok_or_else(|| Skip("no handle".into()))?;
        let r = if desc.inactive() {
            Err(Status::INVAL)
        } else {
            h.set_option(&desc, &typed)
        };
        match r {
            Ok((kept, _info)) => {
                let note = match kept {
                    Value::Bool(b) => b.to_string(),
                    Value::Int(i) => i.to_string(),
                    Value::Fixed(f) => format!("{}", f64::from(f) / 65536.0),
                    Value::Str(s) => s,
                    Value::Button => "pressed".into(),
                };
                self.rec.end(
                    seq,
                    Outcome {
                        status: Some(Status::GOOD),
                        note: Some(format!("kept {note}")),
                        ..Outcome::default()
                    },
                );
                Ok(())
            }
            Err(st) => {
                let why = format!(
                    "backend refuses option {name:?} = {value}: {}{}",
                    st.name(),
                    if desc.inactive() { " (inactive)" } else { "" }
                );
                self.rec.end(
                    seq,
                    Outcome {
                        status: Some(st),
                        note: Some(why.clone()),
                        ..Outcome::default()
                    },
                );
                Err(Skip(why))
            }
        }
    }

    fn steps(&mut self, steps: &[Step]) -> Result<(), Problem> {
        for step in steps {
            self.step(step)?;
        }
        Ok(())
    }

    fn fd_check(&mut self, thread: Thread) {
        if let Some(fd) = self.select_fd.take() {
            call(self.rec, thread, Op::FdCheck(fd), || {
                (
                    (),
                    Outcome {
                        flag: Some(ffi::fd_is_open(fd)),
                        ..Outcome::default()
                    },
                )
            });
        }
    }

    fn close_if_open(&mut self) {
        if let Some(h) = self.handle.take() {
            call(self.rec, Thread::App, Op::Close, || {
                h.close();
                ((), Outcome::default())
            });
            self.fd_check(Thread::App);
        }
    }

    fn step(&mut self, step: &Step) -> Result<(), Problem> {
        let rec = self.rec;
        match step {
            Step::Start {} => {
                let h = self.h()?;
                let (st, _) = call(rec, Thread::App, Op::Start, || {
                    let st = h.start();
                    (st, Outcome::status(st))
                });
                self.select_fd = None;
                self.non_blocking = false;
                self.frame = (self.check_frames && st == Status::GOOD).then(|| (None, Vec::new()));
            }
            Step::GetParameters {} => {
                let h = self.h()?;
                let (params, _) = call(rec, Thread::App, Op::GetParameters, || {
                    match h.parameters() {
                        Ok(p) => (
                            Some(p),
                            Outcome {
                                status: Some(Status::GOOD),
                                params: Some(p),
                                ..Outcome::default()
                            },
                        ),
                        Err(st) => (None, Outcome::status(st)),
                    }
                });
                if let Some((kept @ None, _)) = self.frame.as_mut() {
                    *kept = params;
                }
            }
            Step::Read { max } => {
                self.deadline = Instant::now() + Duration::from_millis(self.scenario.timeout_ms);
                self.read_loop(Thread::App, *max, Some(1), true)?;
            }
            Step::ReadBytes { bytes, max } => {
                self.deadline = Instant::now() + Duration::from_millis(self.scenario.timeout_ms);
                self.read_loop(Thread::App, *max, Some(*bytes), false)?;
            }
            Step::ReadToEnd { max } => {
                self.deadline = Instant::now() + Duration::from_millis(self.scenario.timeout_ms);
                self.read_loop(Thread::App, *max, None, false)?;
            }
            Step::CancelWhileBlocked {
                max,
                blocked_ms,
                from,
            } => {
                self.cancel_while_blocked(*max, *blocked_ms, *from)?;
            }
            Step::Cancel {} => {
                let h = self.h()?;
                call(rec, Thread::App, Op::Cancel, || {
                    h.cancel();
                    ((), Outcome::default())
                });
                self.select_fd = None;
                self.frame = None;
            }
            Step::SetIoMode { non_blocking } => {
                let h = self.h()?;
                let (st, _) = call(rec, Thread::App, Op::SetIoMode(*non_blocking), || {
                    let st = h.set_io_mode(*non_blocking);
                    (st, Outcome::status(st))
                });
                if st == Status::GOOD {
                    self.non_blocking = *non_blocking;
                }
            }
            Step::GetSelectFd {} => {
                let h = self.h()?;
                let ((st, fd), _) = call(rec, Thread::App, Op::GetSelectFd, || {
                    let (st, fd) = h.select_fd();
                    (
                        (st, fd),
                        Outcome {
                            status: Some(st),
                            fd: Some(fd),
                            ..Outcome::default()
                        },
                    )
                });
                if st == Status::GOOD && fd >= 0 {
                    self.select_fd = Some(fd);
                }
            }
            Step::WaitReadable { timeout_ms } => {
                let fd = self.select_fd.ok_or(Problem::WaitWithoutFd)?;
                let ms = i32::try_from(*timeout_ms).unwrap_or(i32::MAX);
                call(rec, Thread::App, Op::WaitReadable(fd), || {
                    (
                        (),
                        Outcome {
                            flag: ffi::poll_readable(fd, ms),
                            ..Outcome::default()
                        },
                    )
                });
            }
            Step::SetOption { name, value } => {
                self.set_option(name, value)
                    .map_err(|Skip(why)| Problem::Option(why))?;
            }
            Step::Close {} => self.close_if_open(),
            Step::Open {} => {
                if self.handle.is_some() {
                    return Err(Problem::OpenWhileOpen);
                }
                let dev = self.device.to_string();
                let seq = rec.begin(Thread::App, Op::Open(dev.clone()));
                let r = self.backend.open(&dev);
                rec.end(
                    seq,
                    Outcome::status(r.as_ref().err().copied().unwrap_or(Status::GOOD)),
                );
                self.handle = Some(r.map_err(Problem::Reopen)?);
            }
            Step::Sleep { ms } => std::thread::sleep(Duration::from_millis(*ms)),
            Step::Repeat { times, steps } => {
                for _ in 0..*times {
                    self.steps(steps)?;
                }
            }
        }
        Ok(())
    }

    /// Reads until `until` bytes arrived (or one read, with `once`), or a status other than
    /// GOOD. In non-blocking mode an empty GOOD read waits on the select fd (or 2 ms).
    fn read_loop(
        &mut self,
        thread: Thread,
        max: u32,
        until: Option<u64>,
        once: bool,
    ) -> Result<Status, Problem> {
        // A borrow of the handle field only, so that the frame being collected can change.
        let h = self.handle.as_ref().ok_or(Problem::AfterClose)?;
        let mut buf = vec![0u8; max as usize];
        let mut got = 0u64;
        loop {
            let seq = self.rec.begin(thread, Op::Read(max));
            let (st, len) = h.read(&mut buf, LEN_SENTINEL);
            self.rec.end(
                seq,
                Outcome {
                    status: Some(st),
                    len: Some(len),
                    ..Outcome::default()
                },
            );
            if st != Status::GOOD {
                if st == Status::EOF {
                    self.fd_check(thread);
                    if let Some((params, data)) = self.frame.take() {
                        self.frames.extend(check_frame(seq, params, &data));
                    }
                } else {
                    self.frame = None;
                }
                return Ok(st);
            }
            if let Some((_, data)) = self.frame.as_mut() {
                let n = usize::try_from(len).unwrap_or(0).min(buf.len());
                data.extend_from_slice(&buf[..n]);
            }
            got += u64::try_from(len).unwrap_or(0);
            if once || until.is_some_and(|u| got >= u) {
                return Ok(st);
            }
            if len <= 0 && self.non_blocking {
                match self.select_fd {
                    Some(fd) => {
                        ffi::poll_readable(fd, 50);
                    }
                    None => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            if Instant::now() > self.deadline {
                return Err(Problem::ReadTimeout {
                    ms: self.scenario.timeout_ms,
                });
            }
        }
    }

    fn cancel_while_blocked(
        &mut self,
        max: u32,
        blocked_ms: u64,
        from: CancelFrom,
    ) -> Result<(), Problem> {
        let h = self.h()?;
        let reader_thread = std::sync::atomic::AtomicU64::new(0);
        if from == CancelFrom::Signal {
            ffi::signal::arm(h);
        }
        let rec = self.rec;
        let timeout = Duration::from_millis(self.scenario.timeout_ms);
        let current = AtomicUsize::new(usize::MAX);
        let done = AtomicBool::new(false);
        let (reader, fired) = std::thread::scope(|sc| {
            let reader = sc.spawn(|| {
                let mut buf = vec![0u8; max as usize];
                let started = Instant::now();
                reader_thread.store(ffi::signal::current_thread(), Ordering::SeqCst);
                loop {
                    let seq = rec.begin(Thread::Reader, Op::Read(max));
                    current.store(seq, Ordering::SeqCst);
                    let (st, len) = h.read(&mut buf, LEN_SENTINEL);
                    current.store(usize::MAX, Ordering::SeqCst);
                    rec.end(
                        seq,
                        Outcome {
                            status: Some(st),
                            len: Some(len),
                            ..Outcome::default()
                        },
                    );
                    if st != Status::GOOD {
                        done.store(true, Ordering::SeqCst);
                        return Ok(st);
                    }
                    if started.elapsed() > timeout {
                        done.store(true, Ordering::SeqCst);
                        return Err(());
                    }
                }
            });
            let canceller = sc.spawn(|| {
                let started = Instant::now();
                while !done.load(Ordering::SeqCst) && started.elapsed() < timeout {
                    let seq = current.load(Ordering::SeqCst);
                    if seq != usize::MAX && rec.pending_us(seq) >= blocked_ms * 1000 {
                        match from {
                            CancelFrom::Thread => {
                                call(rec, Thread::Canceller, Op::Cancel, || {
                                    h.cancel();
                                    ((), Outcome::default())
                                });
                            }
                            CancelFrom::Signal => {
                                call(rec, Thread::Canceller, Op::SignalCancel, || {
                                    let sent =
                                        ffi::signal::send(reader_thread.load(Ordering::SeqCst));
                                    while sent
                                        && !ffi::signal::handled()
                                        && started.elapsed() < timeout
                                    {
                                        std::thread::sleep(Duration::from_millis(1));
                                    }
                                    let note = (!sent).then(|| "pthread_kill failed".to_string());
                                    (
                                        (),
                                        Outcome {
                                            note,
                                            ..Outcome::default()
                                        },
                                    )
                                });
                            }
                        }
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                false
            });
            (
                reader.join().unwrap_or(Err(())),
                canceller.join().unwrap_or(false),
            )
        });
        if from == CancelFrom::Signal {
            ffi::signal::disarm();
        }
        self.select_fd = None;
        if !fired {
            return Err(Problem::NeverBlocked { blocked_ms });
        }
        reader.map(|_| ()).map_err(|()| Problem::ReaderDidNotStop {
            ms: timeout.as_millis(),
        })
    }
}
