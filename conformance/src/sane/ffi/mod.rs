//! The one place that speaks C to a SANE backend: `dlopen` through `libloading`, the SANE 1
//! ABI types, and safe wrappers around every call the runner makes. All `unsafe` code of the
//! SANE adapter lives here and in [`guard`] below it, each block with the reason it is sound.
//!
//! A backend loaded directly (not through the `dll` meta-backend) exports its entry points as
//! `sane_<backend>_init` … and usually also as plain `sane_init` …; [`Backend::load`] takes the
//! prefixed name when present and falls back to the plain one.
//!
//! Over 600 lines on purpose: every `unsafe` block of the SANE adapter stays in this one module
//! and its [`guard`] (with the `#[allow(unsafe_code)]` that the crate root denies elsewhere), so
//! that it can be reviewed as a whole; the rest of `sane/` is safe code. [`guard`] holds what
//! this program does in libc's place for a loaded backend (`sigaction`, `signal`,
//! `pthread_cancel`).

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};

/// The length the runner pre-sets before each `sane_read`, so that a backend that leaves it
/// untouched is seen (SANE-LEN-ZERO-ON-ERROR names it "left *len unset").
pub const LEN_SENTINEL: i32 = -7777;

/// A SANE status code (`SANE_Status`), kept as the raw integer so unknown values survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Status(pub i32);

impl Status {
    /// SANE_STATUS_GOOD.
    pub const GOOD: Status = Status(0);
    /// SANE_STATUS_UNSUPPORTED.
    pub const UNSUPPORTED: Status = Status(1);
    /// SANE_STATUS_CANCELLED.
    pub const CANCELLED: Status = Status(2);
    /// SANE_STATUS_DEVICE_BUSY.
    pub const DEVICE_BUSY: Status = Status(3);
    /// SANE_STATUS_INVAL.
    pub const INVAL: Status = Status(4);
    /// SANE_STATUS_EOF.
    pub const EOF: Status = Status(5);
    /// SANE_STATUS_JAMMED.
    pub const JAMMED: Status = Status(6);
    /// SANE_STATUS_NO_DOCS.
    pub const NO_DOCS: Status = Status(7);
    /// SANE_STATUS_COVER_OPEN.
    pub const COVER_OPEN: Status = Status(8);
    /// SANE_STATUS_IO_ERROR.
    pub const IO_ERROR: Status = Status(9);
    /// SANE_STATUS_NO_MEM.
    pub const NO_MEM: Status = Status(10);
    /// SANE_STATUS_ACCESS_DENIED.
    pub const ACCESS_DENIED: Status = Status(11);

    /// The name without the `SANE_STATUS_` prefix (`GOOD`, `IO_ERROR`, …), or `STATUS_<n>`.
    pub fn name(self) -> String {
        const NAMES: [&str; 12] = [
            "GOOD",
            "UNSUPPORTED",
            "CANCELLED",
            "DEVICE_BUSY",
            "INVAL",
            "EOF",
            "JAMMED",
            "NO_DOCS",
            "COVER_OPEN",
            "IO_ERROR",
            "NO_MEM",
            "ACCESS_DENIED",
        ];
        usize::try_from(self.0)
            .ok()
            .and_then(|i| NAMES.get(i))
            .map_or_else(|| format!("STATUS_{}", self.0), |s| (*s).to_string())
    }

    /// The status named `name` (with or without `SANE_STATUS_`).
    pub fn from_name(name: &str) -> Option<Status> {
        let bare = name.strip_prefix("SANE_STATUS_").unwrap_or(name);
        (0..12).map(Status).find(|s| s.name() == bare)
    }
}

/// `SANE_Value_Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    /// SANE_TYPE_BOOL.
    Bool,
    /// SANE_TYPE_INT.
    Int,
    /// SANE_TYPE_FIXED (16.16).
    Fixed,
    /// SANE_TYPE_STRING.
    String,
    /// SANE_TYPE_BUTTON.
    Button,
    /// SANE_TYPE_GROUP.
    Group,
    /// Anything else.
    Unknown(i32),
}

/// An option's constraint, copied out of the backend.
#[derive(Clone, Debug, PartialEq)]
pub enum Constraint {
    /// No constraint.
    None,
    /// A range (words; fixed-point options hold 16.16 values).
    Range {
        /// Minimum.
        min: i32,
        /// Maximum.
        max: i32,
        /// Quantisation (0 = none).
        quant: i32,
    },
    /// Allowed words.
    WordList(Vec<i32>),
    /// Allowed strings.
    StringList(Vec<String>),
}

/// An option descriptor, copied out of the backend.
#[derive(Clone, Debug, PartialEq)]
pub struct OptionDescriptor {
    /// Option number (index for `sane_control_option`).
    pub index: i32,
    /// Its name (empty for option 0 and groups).
    pub name: String,
    /// Its type.
    pub value_type: ValueType,
    /// Size of its value in bytes.
    pub size: i32,
    /// Capability bits (`SANE_CAP_*`).
    pub cap: i32,
    /// Its constraint.
    pub constraint: Constraint,
}

impl OptionDescriptor {
    /// SANE_CAP_INACTIVE is set.
    pub fn inactive(&self) -> bool {
        self.cap & 32 != 0
    }
}

/// An option value as the runner passes it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// SANE_TYPE_BOOL.
    Bool(bool),
    /// SANE_TYPE_INT (one word).
    Int(i32),
    /// SANE_TYPE_FIXED, as a 16.16 word.
    Fixed(i32),
    /// SANE_TYPE_STRING.
    Str(String),
    /// SANE_TYPE_BUTTON (press).
    Button,
}

/// `SANE_Parameters`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Parameters {
    /// SANE_Frame: 0 GRAY, 1 RGB, 2 RED, 3 GREEN, 4 BLUE.
    pub format: i32,
    /// Last frame of the image.
    pub last_frame: bool,
    /// Bytes per scan line.
    pub bytes_per_line: i32,
    /// Pixels per line.
    pub pixels_per_line: i32,
    /// Lines (-1 = unknown).
    pub lines: i32,
    /// Bits per sample.
    pub depth: i32,
}

/// A device as `sane_get_devices` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// The name `sane_open` takes.
    pub name: String,
    /// Vendor.
    pub vendor: String,
    /// Model.
    pub model: String,
    /// Type.
    pub kind: String,
}

/// Why a backend could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `dlopen` failed.
    #[error("cannot load {path}: {message}")]
    Open {
        /// The library.
        path: PathBuf,
        /// dlerror's text.
        message: String,
    },
    /// The library lacks a SANE entry point.
    #[error(
        "{path} is not a SANE backend: it exports neither sane_{prefix}{name} nor sane_{name}"
    )]
    NotSane {
        /// The library.
        path: PathBuf,
        /// The backend prefix tried, with its trailing `_` (empty when the file name has none).
        prefix: String,
        /// The missing entry point (without `sane_`).
        name: &'static str,
    },
}

#[repr(C)]
struct RawDevice {
    name: *const c_char,
    vendor: *const c_char,
    model: *const c_char,
    kind: *const c_char,
}

#[repr(C)]
struct RawRange {
    min: i32,
    max: i32,
    quant: i32,
}

#[repr(C)]
struct RawOptionDescriptor {
    name: *const c_char,
    title: *const c_char,
    desc: *const c_char,
    value_type: i32,
    unit: i32,
    size: i32,
    cap: i32,
    constraint_type: i32,
    constraint: *const c_void,
}

#[repr(C)]
#[derive(Default)]
struct RawParameters {
    format: i32,
    last_frame: i32,
    bytes_per_line: i32,
    pixels_per_line: i32,
    lines: i32,
    depth: i32,
}

type AuthCallback = extern "C" fn(*const c_char, *mut c_char, *mut c_char);
type Handle0 = *mut c_void;

#[derive(Clone, Copy)]
struct Entry {
    init: unsafe extern "C" fn(*mut i32, Option<AuthCallback>) -> i32,
    exit: unsafe extern "C" fn(),
    get_devices: unsafe extern "C" fn(*mut *const *const RawDevice, i32) -> i32,
    open: unsafe extern "C" fn(*const c_char, *mut Handle0) -> i32,
    close: unsafe extern "C" fn(Handle0),
    get_option_descriptor: unsafe extern "C" fn(Handle0, i32) -> *const RawOptionDescriptor,
    control_option: unsafe extern "C" fn(Handle0, i32, i32, *mut c_void, *mut i32) -> i32,
    get_parameters: unsafe extern "C" fn(Handle0, *mut RawParameters) -> i32,
    start: unsafe extern "C" fn(Handle0) -> i32,
    read: unsafe extern "C" fn(Handle0, *mut u8, i32, *mut i32) -> i32,
    cancel: unsafe extern "C" fn(Handle0),
    set_io_mode: unsafe extern "C" fn(Handle0, i32) -> i32,
    get_select_fd: unsafe extern "C" fn(Handle0, *mut i32) -> i32,
}

/// The process's SIGINT and SIGTERM dispositions as they were when a backend was loaded.
///
/// A backend may change them from a thread of ours: the test backend's reader task, written to
/// run in a forked process, sets SIGTERM to its default action (and unblocks it in its thread),
/// so that a SIGTERM meant to let the runner finish its run would kill it outright.
///
/// Where this program exports its own `sigaction` and `signal` ([`guard`]; the `scanconform`
/// binaries do, conformance/build.rs), a backend's calls bind to them and a change to SIGINT or
/// SIGTERM made while a backend is loaded is refused: no window at all. Elsewhere (a program
/// that links this library without the export) the calls after which a reader has started or
/// been fed ([`Handle::start`], [`Handle::read`], [`Handle::cancel`], [`Handle::close`]) put
/// them back, and from `sane_start` until the handle is closed (and during every `sane_read`)
/// a keeper thread puts them back every millisecond ([`Keeper`]): the window left is a
/// millisecond, plus whatever the scheduler adds, after a reader's reset.
struct Dispositions([(libc::c_int, libc::sigaction); 2]);

/// The thread that restores the [`Dispositions`] while a `sane_read` is in progress or a
/// scan has been started on a handle that is still open.
struct Keeper {
    shared: std::sync::Arc<KeeperShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct KeeperShared {
    dispositions: Dispositions,
    reads: std::sync::atomic::AtomicUsize,
    stop: std::sync::atomic::AtomicBool,
    /// False where the backend's changes are refused at the source ([`guard`]).
    active: bool,
}

impl Keeper {
    /// A keeper with a thread, or none where [`guard::interposed`] (nothing to restore then).
    fn start() -> Keeper {
        use std::sync::atomic::Ordering;
        let shared = std::sync::Arc::new(KeeperShared {
            dispositions: Dispositions::save(),
            reads: std::sync::atomic::AtomicUsize::new(0),
            stop: std::sync::atomic::AtomicBool::new(false),
            active: !guard::interposed(),
        });
        if !shared.active {
            return Keeper {
                shared,
                thread: None,
            };
        }
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sane-signals".into())
            .spawn(move || {
                while !s.stop.load(Ordering::SeqCst) {
                    if s.reads.load(Ordering::SeqCst) > 0 {
                        s.dispositions.restore();
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    } else {
                        std::thread::park_timeout(std::time::Duration::from_millis(200));
                    }
                }
            })
            .ok();
        Keeper { shared, thread }
    }

    fn restore(&self) {
        if self.shared.active {
            self.shared.dispositions.restore();
        }
    }

    /// Keeps the keeper awake (`awake`) or lets it sleep again, for one handle's scan.
    fn scanning(&self, awake: bool) {
        use std::sync::atomic::Ordering;
        if !self.shared.active {
            return;
        }
        if awake {
            self.shared.reads.fetch_add(1, Ordering::SeqCst);
            if let Some(t) = &self.thread {
                t.thread().unpark();
            }
        } else {
            self.shared.reads.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Runs `call` (a `sane_read`) with the keeper awake.
    fn reading<T>(&self, call: impl FnOnce() -> T) -> T {
        use std::sync::atomic::Ordering;
        if !self.shared.active {
            return call();
        }
        self.shared.reads.fetch_add(1, Ordering::SeqCst);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
        let out = call();
        self.shared.reads.fetch_sub(1, Ordering::SeqCst);
        self.restore();
        out
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.shared
            .stop
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Dispositions {
    fn save() -> Dispositions {
        let get = |sig| {
            // SAFETY: a zeroed sigaction is a valid out-value; a null `act` only queries.
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                guard::real_sigaction(sig, std::ptr::null(), &mut old);
                (sig, old)
            }
        };
        Dispositions([get(libc::SIGINT), get(libc::SIGTERM)])
    }

    fn restore(&self) {
        for (sig, saved) in &self.0 {
            // SAFETY: as in `save`; `saved` is a disposition the process had, so putting it back
            // installs a handler that was valid then and still is (handlers are never unloaded).
            unsafe {
                let mut now: libc::sigaction = std::mem::zeroed();
                guard::real_sigaction(*sig, std::ptr::null(), &mut now);
                if now.sa_sigaction != saved.sa_sigaction {
                    guard::real_sigaction(*sig, saved, std::ptr::null_mut());
                }
            }
        }
    }
}

pub mod guard;

/// A loaded SANE backend library.
pub struct Backend {
    entry: Entry,
    path: PathBuf,
    _guard: guard::Engaged,
    dispositions: Keeper,
    /// Always `Some` until the drop, which unloads it only when no thread the backend started
    /// still runs (see `Drop for Backend`).
    lib: Option<libloading::Library>,
}

impl Drop for Backend {
    /// Unloads the library (`dlclose`), unless a thread that a `sane_start` created is still
    /// alive 100 ms after the last call: the test backend's reader outlives a `sane_close` that
    /// does not cancel it (blocked writing to its pipe until `sane_exit` closes it), and a
    /// thread that returns into unmapped code crashes the process (seen: SIGSEGV in the reader's
    /// code after a session ended). Such a library stays loaded for the life of the process.
    fn drop(&mut self) {
        if let Some(lib) = self.lib.take() {
            if guard::started_threads_gone(std::time::Duration::from_millis(100)) {
                drop(lib);
            } else {
                std::mem::forget(lib);
            }
        }
    }
}

fn copy_str(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: SANE strings are NUL-terminated and stay valid while the backend holds them;
    // we copy them out at once.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

impl Backend {
    /// Loads the backend at `path`; `prefix` is its name (`test` for `libsane-test.so.1`),
    /// used for the `sane_<prefix>_*` entry points.
    pub fn load(path: &Path, prefix: &str) -> Result<Backend, LoadError> {
        // SAFETY: loading runs the library's initialisers; a SANE backend's are plain C
        // constructors. Loading an arbitrary library is the point of this adapter.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|e| LoadError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        macro_rules! sym {
            ($name:literal) => {{
                let prefixed = format!("sane_{}_{}\0", prefix, $name);
                let plain = concat!("sane_", $name, "\0");
                // SAFETY: the symbol types are those of the SANE 1 API (sane.h); the pointers
                // are copied out and used only while `lib` keeps the library loaded.
                let found = unsafe {
                    lib.get(prefixed.as_bytes())
                        .or_else(|_| lib.get(plain.as_bytes()))
                        .map(|s: libloading::Symbol<'_, _>| *s)
                };
                found.map_err(|_| LoadError::NotSane {
                    path: path.to_path_buf(),
                    prefix: if prefix.is_empty() {
                        "NAME_".to_string()
                    } else {
                        format!("{prefix}_")
                    },
                    name: $name,
                })?
            }};
        }
        let entry = Entry {
            init: sym!("init"),
            exit: sym!("exit"),
            get_devices: sym!("get_devices"),
            open: sym!("open"),
            close: sym!("close"),
            get_option_descriptor: sym!("get_option_descriptor"),
            control_option: sym!("control_option"),
            get_parameters: sym!("get_parameters"),
            start: sym!("start"),
            read: sym!("read"),
            cancel: sym!("cancel"),
            set_io_mode: sym!("set_io_mode"),
            get_select_fd: sym!("get_select_fd"),
        };
        Ok(Backend {
            entry,
            path: path.to_path_buf(),
            _guard: guard::Engaged::new(),
            dispositions: Keeper::start(),
            lib: Some(lib),
        })
    }

    /// The library's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Calls the exported `void NAME(void)` function of the library, if it exports one;
    /// returns whether it did. The runner uses it for `sanei_usb_exit`, which backends
    /// that link `sanei_usb` statically export but (epson2 among them) never call from
    /// `sane_exit`, so their libusb context would outlive the run.
    pub fn call_void_if_exported(&self, name: &str) -> bool {
        let Ok(symbol) = CString::new(name) else {
            return false;
        };
        // SAFETY: the caller names a function of type `void (void)`; the pointer is used only
        // while `lib` keeps the library loaded.
        let Some(lib) = &self.lib else {
            return false;
        };
        let f = unsafe {
            lib.get::<unsafe extern "C" fn()>(symbol.as_bytes_with_nul())
                .map(|s| *s)
        };
        match f {
            Ok(f) => {
                // SAFETY: as above; the function takes no argument.
                unsafe { f() };
                true
            }
            Err(_) => false,
        }
    }

    /// `sane_init` without an authorisation callback; returns the status and version code.
    pub fn init(&self) -> (Status, i32) {
        let mut version = 0i32;
        // SAFETY: `version` is a valid out-pointer; a NULL callback is allowed by the standard.
        let st = unsafe { (self.entry.init)(&mut version, None) };
        (Status(st), version)
    }

    /// `sane_exit`.
    pub fn exit(&self) {
        // SAFETY: no handle of this backend is open when the runner calls it (Handle borrows
        // the Backend, so every Handle is closed or dropped first).
        unsafe { (self.entry.exit)() }
    }

    /// `sane_get_devices(local_only = true)`, copied.
    pub fn devices(&self) -> Result<Vec<Device>, Status> {
        let mut list: *const *const RawDevice = std::ptr::null();
        // SAFETY: `list` is a valid out-pointer.
        let st = Status(unsafe { (self.entry.get_devices)(&mut list, 1) });
        if st != Status::GOOD {
            return Err(st);
        }
        let mut out = Vec::new();
        let mut i = 0;
        while !list.is_null() {
            // SAFETY: the list is NULL-terminated and valid until the next get_devices/exit.
            let dev = unsafe { *list.add(i) };
            if dev.is_null() {
                break;
            }
            // SAFETY: non-NULL entries point to SANE_Device records owned by the backend.
            let d = unsafe { &*dev };
            out.push(Device {
                name: copy_str(d.name),
                vendor: copy_str(d.vendor),
                model: copy_str(d.model),
                kind: copy_str(d.kind),
            });
            i += 1;
        }
        Ok(out)
    }

    /// `sane_open(name)`.
    pub fn open(&self, name: &str) -> Result<Handle<'_>, Status> {
        let c = CString::new(name).map_err(|_| Status::INVAL)?;
        let mut h: Handle0 = std::ptr::null_mut();
        // SAFETY: `c` is NUL-terminated, `h` a valid out-pointer.
        let st = Status(unsafe { (self.entry.open)(c.as_ptr(), &mut h) });
        if st != Status::GOOD {
            return Err(st);
        }
        if h.is_null() {
            return Err(Status::IO_ERROR);
        }
        Ok(Handle {
            backend: self,
            raw: h,
            open: std::sync::atomic::AtomicBool::new(true),
            scanning: std::sync::atomic::AtomicBool::new(false),
        })
    }
}

/// An open device handle. All methods take `&self` so that [`Handle::cancel`] can be called from
/// another thread while [`Handle::read`] blocks; the runner otherwise calls one operation at a
/// time, as the standard requires.
pub struct Handle<'b> {
    backend: &'b Backend,
    raw: Handle0,
    open: std::sync::atomic::AtomicBool,
    /// A scan was started and the handle is not closed yet: the keeper is awake.
    scanning: std::sync::atomic::AtomicBool,
}

// SAFETY: the handle is an opaque token the backend owns; SANE allows sane_cancel at any time
// from any context, and the runner never issues two other operations on it concurrently.
unsafe impl Send for Handle<'_> {}
// SAFETY: as above: shared access only ever overlaps a call with sane_cancel.
unsafe impl Sync for Handle<'_> {}

impl Handle<'_> {
    /// The option count (option 0's value), or 0 when it cannot be read.
    pub fn option_count(&self) -> i32 {
        let mut n = 0i32;
        // SAFETY: option 0 is an SANE_Int; `n` has room for it.
        let st = unsafe {
            (self.backend.entry.control_option)(
                self.raw,
                0,
                0,
                (&mut n as *mut i32).cast(),
                std::ptr::null_mut(),
            )
        };
        if st == 0 {
            n
        } else {
            0
        }
    }

    /// `sane_get_option_descriptor(i)`, copied.
    pub fn descriptor(&self, index: i32) -> Option<OptionDescriptor> {
        // SAFETY: valid handle; the backend returns NULL for an out-of-range index.
        let p = unsafe { (self.backend.entry.get_option_descriptor)(self.raw, index) };
        if p.is_null() {
            return None;
        }
        // SAFETY: non-NULL descriptors stay valid until options are reloaded; copied at once.
        let d = unsafe { &*p };
        let value_type = match d.value_type {
            0 => ValueType::Bool,
            1 => ValueType::Int,
            2 => ValueType::Fixed,
            3 => ValueType::String,
            4 => ValueType::Button,
            5 => ValueType::Group,
            n => ValueType::Unknown(n),
        };
        let constraint = if d.constraint.is_null() {
            Constraint::None
        } else {
            match d.constraint_type {
                1 => {
                    // SAFETY: constraint_type RANGE means the union holds a SANE_Range pointer.
                    let r = unsafe { &*d.constraint.cast::<RawRange>() };
                    Constraint::Range {
                        min: r.min,
                        max: r.max,
                        quant: r.quant,
                    }
                }
                2 => {
                    let w = d.constraint.cast::<i32>();
                    // SAFETY: WORD_LIST: the first word is the count, the words follow.
                    let n = unsafe { *w }.max(0) as usize;
                    // SAFETY: the backend guarantees `n` words after the count.
                    Constraint::WordList((1..=n).map(|i| unsafe { *w.add(i) }).collect())
                }
                3 => {
                    let l = d.constraint.cast::<*const c_char>();
                    let mut v = Vec::new();
                    let mut i = 0;
                    loop {
                        // SAFETY: STRING_LIST is a NULL-terminated array of C strings.
                        let s = unsafe { *l.add(i) };
                        if s.is_null() {
                            break;
                        }
                        v.push(copy_str(s));
                        i += 1;
                    }
                    Constraint::StringList(v)
                }
                _ => Constraint::None,
            }
        };
        Some(OptionDescriptor {
            index,
            name: copy_str(d.name),
            value_type,
            size: d.size,
            cap: d.cap,
            constraint,
        })
    }

    /// `sane_control_option(SET_VALUE)` on a scalar option; returns the value the backend kept
    /// and the info bits.
    pub fn set_option(
        &self,
        desc: &OptionDescriptor,
        value: &Value,
    ) -> Result<(Value, i32), Status> {
        let size = usize::try_from(desc.size).unwrap_or(0).max(4);
        let mut bytes = vec![0u8; size.div_ceil(4) * 4 + 4];
        match value {
            Value::Bool(b) => bytes[..4].copy_from_slice(&i32::from(*b).to_ne_bytes()),
            Value::Int(w) | Value::Fixed(w) => bytes[..4].copy_from_slice(&w.to_ne_bytes()),
            Value::Str(s) => {
                if s.len() >= size {
                    return Err(Status::INVAL);
                }
                bytes[..s.len()].copy_from_slice(s.as_bytes());
            }
            Value::Button => {}
        }
        // Words, so that the backend's SANE_Word accesses are aligned.
        let mut words: Vec<i32> = bytes
            .chunks_exact(4)
            .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut info = 0i32;
        let ptr: *mut c_void = if matches!(value, Value::Button) {
            std::ptr::null_mut()
        } else {
            words.as_mut_ptr().cast()
        };
        // SAFETY: `words` holds at least `desc.size` bytes, is word-aligned and outlives the
        // call; `info` is a valid out-pointer.
        let st = Status(unsafe {
            (self.backend.entry.control_option)(self.raw, desc.index, 1, ptr, &mut info)
        });
        if st != Status::GOOD {
            return Err(st);
        }
        let buf: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let word = words[0];
        let kept = match value {
            Value::Bool(_) => Value::Bool(word != 0),
            Value::Int(_) => Value::Int(word),
            Value::Fixed(_) => Value::Fixed(word),
            Value::Str(_) => {
                let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                Value::Str(String::from_utf8_lossy(&buf[..end]).into_owned())
            }
            Value::Button => Value::Button,
        };
        Ok((kept, info))
    }

    /// `sane_get_parameters`.
    pub fn parameters(&self) -> Result<Parameters, Status> {
        let mut p = RawParameters::default();
        // SAFETY: `p` is a valid out-pointer of the right layout.
        let st = Status(unsafe { (self.backend.entry.get_parameters)(self.raw, &mut p) });
        if st != Status::GOOD {
            return Err(st);
        }
        Ok(Parameters {
            format: p.format,
            last_frame: p.last_frame != 0,
            bytes_per_line: p.bytes_per_line,
            pixels_per_line: p.pixels_per_line,
            lines: p.lines,
            depth: p.depth,
        })
    }

    /// `sane_start`.
    pub fn start(&self) -> Status {
        // SAFETY: valid open handle.
        let st = Status(guard::around_start(|| unsafe {
            (self.backend.entry.start)(self.raw)
        }));
        if !self
            .scanning
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            self.backend.dispositions.scanning(true);
        }
        self.backend.dispositions.restore();
        st
    }

    /// `sane_read` into `buf`; returns the status and the length exactly as the backend left
    /// it (pre-set to `len_sentinel`, so a backend that never writes it shows).
    pub fn read(&self, buf: &mut [u8], len_sentinel: i32) -> (Status, i32) {
        let max = i32::try_from(buf.len()).unwrap_or(i32::MAX);
        let mut len = len_sentinel;
        // SAFETY: `buf` is writable for `max` bytes and `len` is a valid out-pointer.
        let st = self.backend.dispositions.reading(|| unsafe {
            (self.backend.entry.read)(self.raw, buf.as_mut_ptr(), max, &mut len)
        });
        (Status(st), len)
    }

    /// `sane_cancel`; callable from any thread while another call blocks.
    pub fn cancel(&self) {
        // SAFETY: valid handle; the standard allows sane_cancel at any time.
        unsafe { (self.backend.entry.cancel)(self.raw) };
        self.backend.dispositions.restore();
    }

    /// `sane_set_io_mode`.
    pub fn set_io_mode(&self, non_blocking: bool) -> Status {
        // SAFETY: valid open handle.
        Status(unsafe { (self.backend.entry.set_io_mode)(self.raw, i32::from(non_blocking)) })
    }

    /// `sane_get_select_fd`: the status and the fd (-1 when not set).
    pub fn select_fd(&self) -> (Status, i32) {
        let mut fd = -1i32;
        // SAFETY: `fd` is a valid out-pointer.
        let st = Status(unsafe { (self.backend.entry.get_select_fd)(self.raw, &mut fd) });
        (st, fd)
    }

    /// `sane_close`; later calls on this handle do nothing.
    pub fn close(&self) {
        if self.open.swap(false, std::sync::atomic::Ordering::SeqCst) {
            // SAFETY: the handle is open and closed exactly once (the flag above).
            unsafe { (self.backend.entry.close)(self.raw) };
            self.backend.dispositions.restore();
            if self
                .scanning
                .swap(false, std::sync::atomic::Ordering::SeqCst)
            {
                self.backend.dispositions.scanning(false);
            }
        }
    }
}

impl Drop for Handle<'_> {
    fn drop(&mut self) {
        self.close();
    }
}

/// Loads the shared object at `path` for the rest of the process (never unloaded), so that
/// libraries loaded later whose NEEDED entry equals its SONAME bind to it: the dynamic loader
/// matches a NEEDED name against the SONAMEs of the objects already loaded before it searches
/// the library path. That is how a backend's `libusb-1.0.so.0` becomes the scanlab stand-in.
pub fn load_for_process(path: &Path) -> Result<(), LoadError> {
    // SAFETY: loading runs the library's initialisers; the stand-in's are Rust statics only.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| LoadError::Open {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    // Kept loaded for the life of the process: backends loaded later call into it.
    std::mem::forget(lib);
    Ok(())
}

/// Whether `fd` is an open file descriptor of this process (`fcntl(F_GETFD)`).
pub fn fd_is_open(fd: i32) -> bool {
    if fd < 0 {
        return false;
    }
    // SAFETY: F_GETFD only queries the descriptor table; an invalid fd yields EBADF.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Waits up to `timeout_ms` for `fd` to become readable (or hung up); `None` if `poll` failed.
pub fn poll_readable(fd: i32, timeout_ms: i32) -> Option<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; poll does not keep the pointer.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if n < 0 {
        return None;
    }
    Some(
        n > 0 && p.revents & (libc::POLLIN | libc::POLLHUP) != 0 && p.revents & libc::POLLNVAL == 0,
    )
}

/// Cancelling from a signal handler, as `scanimage` does on SIGINT: a SIGUSR2 handler (installed
/// without SA_RESTART) calls `sane_cancel` on the armed handle in whichever thread it interrupts.
pub mod signal {
    use std::ffi::c_void;
    use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

    use super::Handle;

    static HANDLE: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
    static CANCEL_FN: AtomicUsize = AtomicUsize::new(0);
    static DONE: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_signal(_sig: libc::c_int) {
        let h = HANDLE.load(Ordering::SeqCst);
        let f = CANCEL_FN.load(Ordering::SeqCst);
        if !h.is_null() && f != 0 {
            // SAFETY: CANCEL_FN holds the backend's sane_cancel pointer, stored by `arm` from a
            // value of exactly this type; the handle stays open while armed.
            let cancel: unsafe extern "C" fn(*mut c_void) = unsafe { std::mem::transmute(f) };
            // SAFETY: the standard allows sane_cancel from a signal handler.
            unsafe { cancel(h) };
        }
        DONE.store(true, Ordering::SeqCst);
    }

    /// The calling thread's id, for [`send`].
    pub fn current_thread() -> u64 {
        // SAFETY: pthread_self has no preconditions.
        unsafe { libc::pthread_self() as u64 }
    }

    /// Arms the handler for `handle` (one at a time per process; the runner's lock ensures it).
    pub fn arm(handle: &Handle<'_>) {
        HANDLE.store(handle.raw, Ordering::SeqCst);
        CANCEL_FN.store(handle.backend.entry.cancel as usize, Ordering::SeqCst);
        DONE.store(false, Ordering::SeqCst);
        // SAFETY: a zeroed sigaction is a valid starting value; the handler only touches
        // atomics and calls sane_cancel. No SA_RESTART: the interrupted read sees EINTR, as in
        // scanimage.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut act.sa_mask);
            act.sa_flags = 0;
            libc::sigaction(libc::SIGUSR2, &act, std::ptr::null_mut());
        }
    }

    /// Sends SIGUSR2 to `thread` (from [`current_thread`], still running).
    pub fn send(thread: u64) -> bool {
        // SAFETY: `thread` is a live thread of this process (the caller joins it later).
        unsafe { libc::pthread_kill(thread as libc::pthread_t, libc::SIGUSR2) == 0 }
    }

    /// Whether the handler has run since [`arm`].
    pub fn handled() -> bool {
        DONE.load(Ordering::SeqCst)
    }

    /// Restores the default disposition and forgets the handle.
    pub fn disarm() {
        HANDLE.store(std::ptr::null_mut(), Ordering::SeqCst);
        CANCEL_FN.store(0, Ordering::SeqCst);
        // SAFETY: a zeroed sigaction with SIG_DFL (0) restores the default action.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(libc::SIGUSR2, &act, std::ptr::null_mut());
        }
    }
}
