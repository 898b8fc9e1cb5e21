//! `--transport libusb`: the driver's host is scanemu's rusb host, and its libusb is the
//! scanlab stand-in (`emulator/libusb-shim`), which reaches the run's USB/IP server.
//!
//! rusb links `libusb-1.0.so.0` when the process starts, so the stand-in has to be what the
//! dynamic loader finds by then. [`ensure_stand_in`] arranges it for the `scanconform` binary:
//! if the loaded libusb is not the stand-in, it re-executes the program once with
//! `LD_LIBRARY_PATH` leading to a folder whose `libusb-1.0.so.0` is a link to the stand-in
//! built next to the executable (`target/<profile>/libscanlab_libusb.so`), and with
//! [`STAND_IN_ENV`] set so that a second miss is an error instead of a loop.
//! [`check_stand_in_loaded`] proves the loaded library is the stand-in by the `describe`
//! string of `libusb_get_version`, which no other libusb carries; a run refuses to start
//! otherwise, so a run never reaches a real scanner on the machine by accident.
//!
//! The stand-in reads the server's address from `SCANLAB_USBIP` when a libusb context is
//! created, and [`open_host`] creates one per run, so each run's server (a fresh
//! `127.0.0.1:<port>`) is set just before the context is.

use std::ffi::{CStr, OsString};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};

use scanemu::host::rusb::{DeviceSelector, RusbHost};
use scanemu::sim::Sim;
use scanemu::usbip::UsbIpServer;

/// Set (to the folder put on `LD_LIBRARY_PATH`) in the re-executed process: the stand-in was
/// arranged once, so a process that still loaded another libusb stops with an error.
pub const STAND_IN_ENV: &str = "SCANCONFORM_LIBUSB_STAND_IN";

/// The environment variable the stand-in reads its USB/IP server's address from.
const SERVER_ENV: &str = "SCANLAB_USBIP";

/// The start of the `describe` string of the stand-in's `libusb_get_version`.
const STAND_IN_DESCRIBE: &str = "scanlab-libusb:";

/// The stand-in's file name as cargo builds it.
const STAND_IN_FILE: &str = "libscanlab_libusb.so";

/// The `describe` string of the libusb this process loaded (libusb's own says
/// `http://libusb.info`).
pub fn loaded_describe() -> String {
    // SAFETY: libusb_get_version takes no argument and returns NULL or a pointer to a static
    // `libusb_version` whose `describe` is NULL or a static NUL-terminated string (libusb.h).
    unsafe {
        let version = rusb::ffi::libusb_get_version();
        match version.as_ref().map(|v| v.describe) {
            Some(describe) if !describe.is_null() => {
                CStr::from_ptr(describe).to_string_lossy().into_owned()
            }
            _ => String::new(),
        }
    }
}

/// The files of every libusb mapped into this process (`/proc/self/maps`): the stand-in shows
/// as `libscanlab_libusb.so` (the loader resolves the link), the system's as `libusb-1.0.so*`.
fn mapped_libusb_files() -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut files: Vec<String> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| {
            let name = Path::new(p)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("");
            name.starts_with("libusb-1.0") || name == STAND_IN_FILE
        })
        .map(str::to_string)
        .collect();
    files.sort();
    files.dedup();
    files
}

/// `Ok` when the libusb this process uses is the scanlab stand-in; otherwise one line naming
/// the library that was loaded instead.
pub fn check_stand_in_loaded() -> Result<(), String> {
    let describe = loaded_describe();
    if describe.starts_with(STAND_IN_DESCRIBE) {
        return Ok(());
    }
    let files = mapped_libusb_files();
    Err(format!(
        "--transport libusb: the libusb this process loaded is not the scanlab stand-in \
         ({} describes itself as {describe:?}); the stand-in ({STAND_IN_FILE} as \
         libusb-1.0.so.0) must come first on LD_LIBRARY_PATH, with no other libusb in \
         LD_PRELOAD",
        if files.is_empty() {
            "libusb".to_string()
        } else {
            files.join(", ")
        }
    ))
}

/// The stand-in library built beside `exe` (`target/<profile>/libscanlab_libusb.so`; for an
/// executable in `target/<profile>/deps`, the one a level up), or one line saying it is missing
/// and which cargo command builds it.
pub fn stand_in_library(exe: &Path) -> Result<PathBuf, String> {
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [dir.to_path_buf(), dir.join("..")];
    if let Some(found) = candidates
        .iter()
        .map(|d| d.join(STAND_IN_FILE))
        .find(|p| p.is_file())
    {
        return Ok(found);
    }
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| *n != "deps")
        .unwrap_or("debug");
    let flag = match profile {
        "debug" => String::new(),
        "release" => " --release".to_string(),
        other => format!(" --profile {other}"),
    };
    Err(format!(
        "--transport libusb: the libusb-1.0 stand-in {} is missing; build it with \
         `cargo build{flag} -p scanlab-libusb`",
        dir.join(STAND_IN_FILE).display()
    ))
}

/// Makes `folder/libusb-1.0.so.0` a link to `library` (replaced atomically, so that processes
/// doing the same at once never see it half made).
fn link_stand_in(library: &Path, folder: &Path) -> Result<(), String> {
    let fail = |what: &str, e: std::io::Error| {
        format!("--transport libusb: {what} {}: {e}", folder.display())
    };
    std::fs::create_dir_all(folder).map_err(|e| fail("cannot create", e))?;
    let target =
        std::fs::canonicalize(library).map_err(|e| fail("cannot resolve the stand-in for", e))?;
    let link = folder.join("libusb-1.0.so.0");
    if std::fs::read_link(&link).is_ok_and(|t| t == target) {
        return Ok(());
    }
    let temporary = folder.join(format!(".libusb-1.0.so.0.{}", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    std::os::unix::fs::symlink(&target, &temporary).map_err(|e| fail("cannot link in", e))?;
    std::fs::rename(&temporary, &link).map_err(|e| fail("cannot link in", e))
}

/// Returns when this process runs on the stand-in. Otherwise re-executes the running program
/// (same arguments) with the stand-in first on `LD_LIBRARY_PATH` and does not return, or
/// returns one line saying why it cannot (stand-in not built, already re-executed once and
/// still not on it, exec failed).
pub fn ensure_stand_in() -> Result<(), String> {
    if check_stand_in_loaded().is_ok() {
        return Ok(());
    }
    if std::env::var_os(STAND_IN_ENV).is_some() {
        return check_stand_in_loaded();
    }
    let exe = std::env::current_exe()
        .map_err(|e| format!("--transport libusb: cannot find the running program: {e}"))?;
    let library = stand_in_library(&exe)?;
    let folder = library
        .parent()
        .unwrap_or(Path::new("."))
        .join("libusb-stand-in");
    link_stand_in(&library, &folder)?;
    let mut path = OsString::from(&folder);
    if let Some(rest) = std::env::var_os("LD_LIBRARY_PATH").filter(|v| !v.is_empty()) {
        path.push(":");
        path.push(rest);
    }
    let error = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .env("LD_LIBRARY_PATH", path)
        .env(STAND_IN_ENV, &folder)
        .exec();
    Err(format!(
        "--transport libusb: cannot re-execute {} with the stand-in: {error}",
        exe.display()
    ))
}

/// Opens the device `server` exports through libusb (the stand-in, pointed at `server`) as a
/// [`RusbHost`] on `sim`'s clock.
pub fn open_host(server: &UsbIpServer, sim: &Sim) -> Result<RusbHost, String> {
    // The stand-in reads the address when the context is created, which RusbHost::open does.
    // Runs happen one after another on this thread, and nothing else in the process reads the
    // environment meanwhile.
    std::env::set_var(SERVER_ENV, server.local_addr().to_string());
    let record = &server.exported().record;
    RusbHost::open(
        sim,
        DeviceSelector::VidPid(record.id_vendor, record.id_product),
    )
    .map_err(|e| format!("libusb: {e}"))
}
