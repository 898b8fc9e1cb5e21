//! Helpers of the shim's integration tests: the shim laid out as `libusb-1.0.so.0`, the
//! emulator served in-process, system tools that must exist under `CI=true` (and are skipped
//! with a printed reason otherwise), and child processes run with a hard time limit.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use scanemu::engine::Fault;
use scanemu::profile::Profile;
use scanemu::usbip::{ServerConfig, UsbIpServer};

/// The shared object this package builds (cargo builds the cdylib before the tests).
pub fn shim_so() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps directory");
    let so = deps.join("libscanlab_libusb.so");
    assert!(
        so.exists(),
        "{} was not built: run `cargo build -p scanlab-libusb` first (scripts/test does)",
        so.display()
    );
    so
}

/// A file or directory in the temp dir, removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    /// `name` in the temp dir (nothing is created), removed when dropped.
    pub fn temp(name: &str) -> Scratch {
        Scratch(std::env::temp_dir().join(name))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for Scratch {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

/// A fresh directory holding `libusb-1.0.so.0` and `libusb-1.0.so`, both the shim: what
/// `LD_LIBRARY_PATH` should name.
pub fn shim_dir(tag: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("scanlab-libusb-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let so = shim_so();
    for name in ["libusb-1.0.so.0", "libusb-1.0.so"] {
        std::os::unix::fs::symlink(&so, dir.join(name)).expect("symlink");
    }
    Scratch(dir)
}

/// True if `what` is available. Missing under `CI=true` is a failure; otherwise the test is
/// skipped with the reason printed.
pub fn require(present: bool, what: &str) -> bool {
    if present {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} is missing (CI=true: .ci/run installs it)");
    }
    eprintln!("skipped: {what} is missing (install it, or run .ci/run)");
    false
}

/// True if `program` runs (`program --version` or similar exits at all).
pub fn has_program(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when Debian's libusb-1.0-0-dev is installed: the header and the linker name.
pub fn has_libusb_dev() -> bool {
    Path::new("/usr/include/libusb-1.0/libusb.h").exists()
        && [
            "/usr/lib/x86_64-linux-gnu/libusb-1.0.so",
            "/usr/lib/libusb-1.0.so",
        ]
        .iter()
        .any(|p| Path::new(p).exists())
}

/// Compiles `tests/c/<name>.c` with gcc against the system libusb.h and libusb-1.0 (as any C
/// program would be built); None (skipped) when gcc or the dev package is missing.
pub fn compile_c(name: &str) -> Option<Scratch> {
    if !require(has_program("gcc"), "gcc") || !require(has_libusb_dev(), "libusb-1.0-0-dev") {
        return None;
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/c")
        .join(format!("{name}.c"));
    // One binary per call: tests of one file run in parallel and must not share it.
    static BUILDS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out =
        std::env::temp_dir().join(format!("scanlab-libusb-{}-{name}-{n}", std::process::id()));
    let out = Scratch(out);
    let status = Command::new("gcc")
        .args([
            "-std=c11",
            "-D_GNU_SOURCE",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-O1",
            "-o",
        ])
        .arg(&*out)
        .arg(&src)
        .arg("-lusb-1.0")
        .status()
        .expect("gcc runs");
    assert!(status.success(), "gcc failed on {}", src.display());
    assert_needs_libusb(&out);
    Some(out)
}

/// Asserts that `binary` links libusb dynamically (NEEDED libusb-1.0.so.0), so the shim is
/// what it loads under `LD_LIBRARY_PATH`.
pub fn assert_needs_libusb(binary: &Path) {
    if !require(has_program("readelf"), "readelf (binutils)") {
        return;
    }
    let out = Command::new("readelf")
        .arg("-d")
        .arg(binary)
        .output()
        .expect("readelf runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Shared library: [libusb-1.0.so.0]"),
        "{} does not NEED libusb-1.0.so.0:\n{text}",
        binary.display()
    );
}

/// The emulated fast flatbed served on a loopback port the system picks.
pub fn serve(faults: Vec<Fault>) -> UsbIpServer {
    let mut config = ServerConfig::new(Profile::builtin_fast());
    config.device_mut().faults = Some(faults);
    UsbIpServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config).expect("binds loopback")
}

/// What a child printed and how it ended.
pub struct Ran {
    /// Exit status (None: killed at the time limit).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall time.
    pub elapsed: Duration,
}

impl Ran {
    /// The value of the `key value` line `key`.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.stdout.lines().find_map(|l| {
            l.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(str::trim)
        })
    }

    /// Panics with the whole output unless the child exited 0.
    pub fn assert_success(&self, what: &str) {
        assert_eq!(
            self.code,
            Some(0),
            "{what} failed\n--- stdout\n{}--- stderr\n{}",
            self.stdout,
            self.stderr
        );
    }
}

/// Runs `cmd` with the shim on `LD_LIBRARY_PATH` and `SCANLAB_USBIP=addr`, killing it after
/// `limit`.
pub fn run(cmd: Command, lib: &Path, addr: &str, limit: Duration) -> Ran {
    finish(spawn(cmd, lib, addr), limit)
}

/// A child started by [`spawn`], its output collected by threads.
pub struct Running {
    child: std::process::Child,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
    t0: Instant,
}

impl Running {
    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

/// Starts `cmd` with the shim on `LD_LIBRARY_PATH` and `SCANLAB_USBIP=addr`.
pub fn spawn(mut cmd: Command, lib: &Path, addr: &str) -> Running {
    cmd.env("LD_LIBRARY_PATH", lib)
        .env("SCANLAB_USBIP", addr)
        .env_remove("LIBUSB_DEBUG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd.spawn().expect("child starts");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    Running {
        child,
        out,
        err,
        t0,
    }
}

/// Waits for a child started by [`spawn`], killing it once `limit` has passed since it started.
pub fn finish(mut r: Running, limit: Duration) -> Ran {
    let code = loop {
        if let Some(status) = r.child.try_wait().expect("wait") {
            break status.code();
        }
        if r.t0.elapsed() > limit {
            let _ = r.child.kill();
            let _ = r.child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ran {
        code,
        stdout: r.out.join().unwrap_or_default(),
        stderr: r.err.join().unwrap_or_default(),
        elapsed: r.t0.elapsed(),
    }
}
