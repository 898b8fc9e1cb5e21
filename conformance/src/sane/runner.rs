//! The frontend: loads a backend, plays a scenario's script against it in real time, and
//! records every call into a [`SaneTrace`].
//!
//! SANE backends keep process-wide state (`sane_init`/`sane_exit`), so runs in one process are
//! serialised by a lock; each run is `sane_init`, `sane_open`, options, the script, `sane_close`
//! (if still open), `sane_exit`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ffi::{
    self, Backend, Handle, OptionDescriptor, Parameters, Status, Value, ValueType, LEN_SENTINEL,
};
use super::scenario::{CancelFrom, LoadedSaneScenario, SaneScenario, Step};
use super::trace::{CancelLatency, FrameCheck, Op, Outcome, Recorder, SaneTrace, Thread};

static RUN_LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    RUN_LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// What `--driver sane:BACKEND[:DEVICE]` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The backend's name (`test`), used for `sane_<name>_*` symbols and the expected-failure
    /// list.
    pub name: String,
    /// The library to load.
    pub library: PathBuf,
    /// The device to open; `None` = the first device the backend lists.
    pub device: Option<String>,
}

/// Folders searched for `libsane-NAME.so.1`, the multiarch one first.
pub fn library_dirs() -> Vec<PathBuf> {
    let arch = std::env::consts::ARCH;
    let multiarch = match arch {
        "arm" => "arm-linux-gnueabihf".to_string(),
        "x86" => "i386-linux-gnu".to_string(),
        a => format!("{a}-linux-gnu"),
    };
    vec![
        PathBuf::from(format!("/usr/lib/{multiarch}/sane")),
        PathBuf::from("/usr/lib64/sane"),
        PathBuf::from("/usr/lib/sane"),
        PathBuf::from("/usr/local/lib/sane"),
    ]
}

/// Resolves `BACKEND[:DEVICE]` (the part after `sane:`). BACKEND is a name looked up in
/// [`library_dirs`] or a path to a `libsane-*.so*` file.
pub fn resolve(spec: &str) -> Result<Target, String> {
    let (backend, device) = match spec.split_once(':') {
        Some((b, d)) if !d.is_empty() => (b, Some(d.to_string())),
        Some((b, _)) => (b, None),
        None => (spec, None),
    };
    if backend.is_empty() {
        return Err("--driver sane: needs a backend name or library path (sane:test)".into());
    }
    let is_path = backend.contains('/') || backend.contains(".so");
    if is_path {
        let path = PathBuf::from(backend);
        if !path.is_file() {
            return Err(format!("SANE backend library {backend} does not exist"));
        }
        let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
        let name = file
            .strip_prefix("libsane-")
            .and_then(|r| r.split(".so").next())
            .unwrap_or("")
            .to_string();
        return Ok(Target {
            name,
            library: path,
            device,
        });
    }
    if !backend
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!("SANE backend name {backend:?} is not a plain name"));
    }
    let dirs = library_dirs();
    for dir in &dirs {
        for file in [
            format!("libsane-{backend}.so.1"),
            format!("libsane-{backend}.so"),
        ] {
            let p = dir.join(file);
            if p.is_file() {
                return Ok(Target {
                    name: backend.to_string(),
                    library: p,
                    device,
                });
            }
        }
    }
    Err(format!(
        "SANE backend {backend:?} not found: no libsane-{backend}.so.1 in {} (install Debian's libsane1, or pass a library path)",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// A loaded backend and the device the runs open.
pub struct Session {
    /// The backend loaded once for every run; `None` for a backend driving an emulated device,
    /// which is loaded afresh for each run (see [`super::device`]).
    backend: Option<Backend>,
    /// What was asked for.
    pub target: Target,
    /// The device name passed to `sane_open`.
    pub device: String,
    /// The SANE_CONFIG_DIR in effect, if the runner set one.
    pub config_dir: Option<PathBuf>,
    /// For a backend driving an emulated device: the folder of device profiles.
    pub profiles: Option<PathBuf>,
}

/// How long the emulated device must be quiet after a run before its server stops, and the
/// longest the runner waits for that.
const SETTLE_QUIET: Duration = Duration::from_millis(60);
const SETTLE_CAP: Duration = Duration::from_millis(600);

/// The SANE_CONFIG_DIR and the device name a freshly loaded backend opens.
fn pick_device(backend: &Backend, target: &Target) -> Result<String, String> {
    let (st, _) = backend.init();
    if st != Status::GOOD {
        return Err(format!(
            "{}: sane_init returned {}",
            target.library.display(),
            st.name()
        ));
    }
    let devices = backend.devices().unwrap_or_default();
    let device = match &target.device {
        None => devices.first().map(|d| d.name.clone()).unwrap_or_default(),
        Some(d) if devices.iter().any(|x| &x.name == d) => d.clone(),
        // `sane:test:0` for the device `test:0`.
        Some(d)
            if devices
                .iter()
                .any(|x| x.name == format!("{}:{d}", target.name)) =>
        {
            format!("{}:{d}", target.name)
        }
        Some(d) => d.clone(),
    };
    let opened = backend.open(&device).map(|h| h.close());
    backend.exit();
    if let Err(st) = opened {
        let known = devices
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(format!(
            "SANE device {device:?} of backend {} does not open: sane_open returned {} (devices listed: {})",
            target.name,
            st.name(),
            if known.is_empty() { "none" } else { &known }
        ));
    }
    Ok(device)
}

impl Session {
    /// Loads the backend, checks it initialises and that the device opens. `config_dir`, when
    /// given, becomes SANE_CONFIG_DIR (set before the library is loaded, as backends read it
    /// once). Errors are one line.
    pub fn prepare(target: Target, config_dir: Option<&Path>) -> Result<Session, String> {
        let _guard = lock();
        if let Some(dir) = config_dir {
            // Only this folder: no trailing ':' so the system's /etc/sane.d is not appended.
            std::env::set_var("SANE_CONFIG_DIR", dir);
        }
        let backend = Backend::load(&target.library, &target.name).map_err(|e| e.to_string())?;
        let device = pick_device(&backend, &target)?;
        Ok(Session {
            backend: Some(backend),
            target,
            device,
            config_dir: config_dir.map(Path::to_path_buf),
            profiles: None,
        })
    }

    /// As [`Session::prepare`] for a backend that drives an emulated device
    /// ([`super::device::needs_device`]): makes the libusb stand-in the process's libusb, serves
    /// the default device (`escI-b7-flatbed` from `profiles`) to find the device name, and
    /// unloads the backend again: each run loads it afresh against its own device.
    pub fn prepare_with_device(
        target: Target,
        config_dir: Option<&Path>,
        profiles: &Path,
    ) -> Result<Session, String> {
        let _guard = lock();
        if let Some(dir) = config_dir {
            std::env::set_var("SANE_CONFIG_DIR", dir);
        }
        super::device::provide_stand_in().map_err(|e| format!("sane:{}: {e}", target.name))?;
        let emulator = super::device::Emulator::start(
            profiles,
            &super::scenario::DeviceSpec::default(),
            Instant::now(),
        )?;
        let backend = Backend::load(&target.library, &target.name).map_err(|e| e.to_string())?;
        super::device::check_only_stand_in().map_err(|e| format!("sane:{}: {e}", target.name))?;
        let device = pick_device(&backend, &target);
        backend.call_void_if_exported("sanei_usb_exit");
        drop(backend);
        emulator.finish();
        Ok(Session {
            backend: None,
            target,
            device: device?,
            config_dir: config_dir.map(Path::to_path_buf),
            profiles: Some(profiles.to_path_buf()),
        })
    }

    /// Plays one scenario.
    ///
    /// A backend call that never returns (a deadlock inside the library) cannot be recovered
    /// from in this process: a watchdog then prints one line naming the scenario and the call,
    /// and exits with status 1 instead of hanging.
    pub fn run(&self, s: &LoadedSaneScenario) -> SaneRun {
        let _guard = lock();
        let rec = Recorder::new();
        let _watchdog = Watchdog::start(s, &rec);
        let mut problems = Vec::new();
        let mut skipped = None;
        let mut frames = Vec::new();
        let mut device_events = Vec::new();
        match (&self.backend, &self.profiles) {
            (Some(backend), _) => {
                self.play(backend, s, &rec, &mut problems, &mut skipped, None);
            }
            (None, Some(profiles)) => {
                let spec = s.scenario.device.clone().unwrap_or_default();
                match super::device::Emulator::start(profiles, &spec, rec.epoch()) {
                    Err(e) => problems.push(e),
                    Ok(emulator) => {
                        match Backend::load(&self.target.library, &self.target.name) {
                            Err(e) => problems.push(e.to_string()),
                            Ok(backend) => {
                                self.play(
                                    &backend,
                                    s,
                                    &rec,
                                    &mut problems,
                                    &mut skipped,
                                    Some(&mut frames),
                                );
                                emulator.settle(SETTLE_QUIET, SETTLE_CAP);
                                // Closes the backend's libusb context (and its connection).
                                backend.call_void_if_exported("sanei_usb_exit");
                            }
                        }
                        device_events = emulator.finish();
                    }
                }
            }
            (None, None) => problems.push("the session has no backend".into()),
        }
        let mut trace = rec.finish();
        trace.device = device_events;
        trace.frames = frames;
        let results = if skipped.is_some() {
            Vec::new()
        } else {
            super::rules::check_all(&trace, &s.scenario)
        };
        if skipped.is_none() {
            for id in &s.scenario.rules {
                let judged = results
                    .iter()
                    .find(|r| r.id == id)
                    .is_some_and(|r| r.status != crate::verdict::RuleStatus::NotApplicable);
                if !judged {
                    problems.push(format!(
                        "the scenario lists {id} but the run gave it nothing to judge"
                    ));
                }
            }
        }
        let latency = super::analysis::cancel_latencies(&trace);
        SaneRun {
            id: s.id.clone(),
            trace,
            results,
            problems,
            skipped,
            latency,
        }
    }

    /// sane_init, sane_open, the options, the script, sane_close, sane_exit on `backend`.
    fn play(
        &self,
        backend: &Backend,
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
                let seq = rec.begin(Thread::App, Op::Open(self.device.clone()));
                let r = backend.open(&self.device);
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
                        device: &self.device,
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
                                problems.push(p);
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
}

/// One scenario's run.
#[derive(Clone, Debug)]
pub struct SaneRun {
    /// `sane/<name>`.
    pub id: String,
    /// What happened.
    pub trace: SaneTrace,
    /// One result per SANE rule (empty when skipped).
    pub results: Vec<crate::verdict::RuleResult>,
    /// Problems of the run itself (a read loop that timed out, a read that never blocked, a
    /// listed rule with nothing to judge). Never expected: they always fail the run.
    pub problems: Vec<String>,
    /// Why the scenario did not run against this backend (an option it lacks or refuses).
    pub skipped: Option<String>,
    /// Cancel latency in blocks of every frontend cancel of a device scan (emulated device
    /// only).
    pub latency: Vec<CancelLatency>,
}

impl SaneRun {
    /// The rules that failed, with their call index and message.
    pub fn failures(&self) -> Vec<(&'static str, usize, &str)> {
        self.results
            .iter()
            .filter_map(|r| match &r.status {
                crate::verdict::RuleStatus::Fail { event, message } => {
                    Some((r.id, *event, message.as_str()))
                }
                _ => None,
            })
            .collect()
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
    fn h(&self) -> Result<&Handle<'b>, String> {
        self.handle
            .as_ref()
            .ok_or_else(|| "the script calls the backend after close; add an open step".into())
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

    fn steps(&mut self, steps: &[Step]) -> Result<(), String> {
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

    fn step(&mut self, step: &Step) -> Result<(), String> {
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
                let fd = self.select_fd.ok_or_else(|| {
                    "wait-readable without a select fd (get-select-fd did not return one)"
                        .to_string()
                })?;
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
                self.set_option(name, value).map_err(|Skip(why)| why)?;
            }
            Step::Close {} => self.close_if_open(),
            Step::Open {} => {
                if self.handle.is_some() {
                    return Err("open step while the device is open".into());
                }
                let dev = self.device.to_string();
                let seq = rec.begin(Thread::App, Op::Open(dev.clone()));
                let r = self.backend.open(&dev);
                rec.end(
                    seq,
                    Outcome::status(r.as_ref().err().copied().unwrap_or(Status::GOOD)),
                );
                self.handle = Some(r.map_err(|st| format!("re-open returned {}", st.name()))?);
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
    ) -> Result<Status, String> {
        // A borrow of the handle field only, so that the frame being collected can change.
        let h = self.handle.as_ref().ok_or_else(|| {
            "the script calls the backend after close; add an open step".to_string()
        })?;
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
                return Err(format!(
                    "reads did not end within {} ms (timeout_ms)",
                    self.scenario.timeout_ms
                ));
            }
        }
    }

    fn cancel_while_blocked(
        &mut self,
        max: u32,
        blocked_ms: u64,
        from: CancelFrom,
    ) -> Result<(), String> {
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
            return Err(format!(
                "no read blocked for {blocked_ms} ms, so the cancel was never sent; slow the backend down (read-delay) or lower blocked_ms"
            ));
        }
        reader
            .map(|_| ())
            .map_err(|()| format!("the reader did not stop within {} ms", timeout.as_millis()))
    }
}

/// Beyond the scenario's own limits, how long a run may take before the watchdog gives up.
const WATCHDOG_SLACK: Duration = Duration::from_secs(60);

/// Ends the process with one line if a scenario run outlives its limits (see [`Session::run`]);
/// dropping it (the run finished) stops it.
struct Watchdog {
    done: Option<std::sync::mpsc::Sender<()>>,
}

impl Watchdog {
    fn start(s: &LoadedSaneScenario, rec: &Recorder) -> Watchdog {
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let limit = Duration::from_millis(
            s.scenario
                .timeout_ms
                .saturating_add(s.scenario.cancel_budget_ms),
        ) + WATCHDOG_SLACK;
        let id = s.id.clone();
        let rec = rec.clone();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(limit) {
                let call = rec.last_call().map_or_else(
                    || "none".to_string(),
                    |(name, thread, age_us)| {
                        format!(
                            "{name} (thread {}, called {:.1} s ago)",
                            thread.name(),
                            age_us as f64 / 1e6
                        )
                    },
                );
                eprintln!(
                    "scanconform: {id}: the run passed {} s without finishing (last backend call: {call}); stopping: a call stuck inside the backend cannot be recovered in this process",
                    limit.as_secs()
                );
                std::process::exit(1);
            }
        });
        Watchdog { done: Some(done) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}
