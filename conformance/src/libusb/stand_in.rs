//! The scanlab libusb-1.0 stand-in (`emulator/libusb-shim`) as the libusb of this process: where
//! the built library is, whether it (and only it) is loaded, and re-executing the program with
//! it first on `LD_LIBRARY_PATH`.
//!
//! Two users: `--transport libusb` (rusb links `libusb-1.0.so.0` when the process starts, so the
//! program re-executes itself, [`crate::libusb::transport`]) and `sane:epson2` (the backend is
//! loaded later, so loading the stand-in first is enough, `crate::sane::device`). Which libusb is
//! loaded is read from `/proc/self/maps`: the loader resolves the `libusb-1.0.so.0` link, so the
//! stand-in shows under its own file name.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};

/// The environment variable the stand-in reads its USB/IP server's address from, when a libusb
/// context is created.
pub const SERVER_ENV: &str = "SCANLAB_USBIP";

/// Set (to the folder put on `LD_LIBRARY_PATH`) in a re-executed process: the stand-in was
/// arranged once, so a process that still loaded another libusb stops with an error.
pub const STAND_IN_ENV: &str = "SCANCONFORM_LIBUSB_STAND_IN";

/// The stand-in's file name as cargo builds it.
pub const STAND_IN_FILE: &str = "libscanlab_libusb.so";

/// The files of every libusb mapped into this process, sorted.
pub fn mapped_libusb_files() -> Vec<String> {
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

fn is_stand_in(file: &str) -> bool {
    Path::new(file)
        .file_name()
        .is_some_and(|n| n == STAND_IN_FILE)
}

/// What libusb this process has loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Loaded {
    /// No libusb at all.
    None,
    /// The stand-in and nothing else.
    StandIn,
    /// Another libusb (these files), perhaps beside the stand-in.
    Other(Vec<String>),
}

/// What libusb this process has loaded.
pub fn loaded() -> Loaded {
    let files = mapped_libusb_files();
    if files.is_empty() {
        Loaded::None
    } else if files.iter().all(|f| is_stand_in(f)) {
        Loaded::StandIn
    } else {
        Loaded::Other(files)
    }
}

/// The stand-in built beside `exe` (`target/<profile>/libscanlab_libusb.so`; for an executable
/// in `target/<profile>/deps`, the one a level up), or one line, led by `who`, saying it is
/// missing and which cargo command builds it.
pub fn library_beside(exe: &Path, who: &str) -> Result<PathBuf, String> {
    let dir = exe.parent().unwrap_or(Path::new("."));
    if let Some(found) = [dir.to_path_buf(), dir.join("..")]
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
        "{who}: the libusb-1.0 stand-in {} is missing; build it with \
         `cargo build{flag} -p scanlab-libusb`",
        dir.join(STAND_IN_FILE).display()
    ))
}

/// The stand-in built beside the running program; see [`library_beside`].
pub fn library(who: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("{who}: cannot find the running program: {e}"))?;
    library_beside(&exe, who)
}

/// Makes `folder/libusb-1.0.so.0` a link to `library` (replaced atomically, so that processes
/// doing the same at once never see it half made).
fn link(library: &Path, folder: &Path, who: &str) -> Result<(), String> {
    let fail = |what: &str, e: std::io::Error| format!("{who}: {what} {}: {e}", folder.display());
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

/// `Ok` when this process runs on the stand-in alone; otherwise one line, led by `who`,
/// naming what was loaded instead.
pub fn check(who: &str) -> Result<(), String> {
    match loaded() {
        Loaded::StandIn => Ok(()),
        Loaded::None => Err(format!(
            "{who}: no libusb is loaded, so the libusb this process uses is not the scanlab \
             stand-in"
        )),
        Loaded::Other(files) => Err(format!(
            "{who}: the libusb this process loaded is not the scanlab stand-in ({}); the \
             stand-in ({STAND_IN_FILE} as libusb-1.0.so.0) must come first on \
             LD_LIBRARY_PATH, with no other libusb in LD_PRELOAD",
            files.join(", ")
        )),
    }
}

/// Re-executes the running program (same arguments) with the stand-in first on
/// `LD_LIBRARY_PATH` and [`STAND_IN_ENV`] set, and does not return; or returns one line, led by
/// `who`, saying why it cannot (stand-in not built, already re-executed once, exec failed).
pub fn reexec(who: &str) -> Result<(), String> {
    if std::env::var_os(STAND_IN_ENV).is_some() {
        return check(who);
    }
    let exe = std::env::current_exe()
        .map_err(|e| format!("{who}: cannot find the running program: {e}"))?;
    let library = library_beside(&exe, who)?;
    let folder = library
        .parent()
        .unwrap_or(Path::new("."))
        .join("libusb-stand-in");
    link(&library, &folder, who)?;
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
        "{who}: cannot re-execute {} with the stand-in: {error}",
        exe.display()
    ))
}
