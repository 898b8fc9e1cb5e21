//! The scanlab libusb-1.0 stand-in (`emulator/libusb-shim`) as the libusb of this process: where
//! the built library is, whether it (and only it) is loaded, and re-executing the program with
//! it first on `LD_LIBRARY_PATH`.
//!
//! Two users: `--transport libusb` (rusb links `libusb-1.0.so.0` when the process starts, so the
//! program is executed with the stand-in on `LD_LIBRARY_PATH`, `crate::libusb::transport`) and
//! `sane:epson2` (the backend is loaded later, so loading the stand-in first is enough,
//! `crate::sane::device`).
//!
//! `--transport libusb` needs the rusb host, which only a build with the `libusb` feature has.
//! So that features never change what a binary at a given path does, the feature has a binary
//! of its own, [`LIBUSB_PROGRAM`] (`scanconform-libusb`, the same program built with the
//! feature): `scanconform`, however it was built, runs `--transport libusb` by executing the
//! `scanconform-libusb` beside it ([`exec_libusb_program`]), and a plain `cargo build` or
//! `cargo run` rebuilding `scanconform` leaves it in place. Which libusb is
//! loaded is read from `/proc/self/maps`: the loader resolves the `libusb-1.0.so.0` link, so the
//! stand-in shows under its own file name.
//!
//! Every failure is a [`StandInError`], one line led by who asked (`sane`, `--transport
//! libusb`).

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

/// The program that runs `--transport libusb`: `scanconform` built with the `libusb` feature
/// (`cargo build -p scanconform --features libusb` builds it beside `scanconform`).
pub const LIBUSB_PROGRAM: &str = "scanconform-libusb";

/// Why the stand-in cannot be the libusb of this process; `Display` is one line led by the
/// feature that needed it.
#[derive(Debug, thiserror::Error)]
pub enum StandInError {
    /// The stand-in is not built beside the program.
    #[error("{who}: the libusb-1.0 stand-in {} is missing; build it with `cargo build{flag} -p scanlab-libusb`", .path.display())]
    Missing {
        /// Who needed it.
        who: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// The cargo flag of the build profile (` --release`, or empty for debug).
        flag: String,
    },
    /// The program built with the `libusb` feature is not beside the running one.
    #[error("{who}: needs {}, scanconform built with the libusb feature, which is not built; build it with `cargo build{flag} -p scanconform --features libusb` (needs libusb-1.0-0-dev)", .path.display())]
    ProgramMissing {
        /// Who needed it.
        who: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// The cargo flag of the build profile (` --release`, or empty for debug).
        flag: String,
    },
    /// The running program's path is unknown.
    #[error("{who}: cannot find the running program: {source}")]
    CurrentExe {
        /// Who needed it.
        who: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The folder with the `libusb-1.0.so.0` link could not be made.
    #[error("{who}: {what} {}: {source}", .folder.display())]
    Link {
        /// Who needed it.
        who: &'static str,
        /// What failed (`cannot create`, `cannot link in`, ...).
        what: &'static str,
        /// The folder.
        folder: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No libusb is mapped at all.
    #[error(
        "{who}: no libusb is loaded, so the libusb this process uses is not the scanlab stand-in"
    )]
    NotLoaded {
        /// Who needed it.
        who: &'static str,
    },
    /// Another libusb is mapped.
    #[error("{who}: the libusb this process loaded is not the scanlab stand-in ({}); the stand-in ({STAND_IN_FILE} as libusb-1.0.so.0) must come first on LD_LIBRARY_PATH, with no other libusb in LD_PRELOAD", .files.join(", "))]
    Other {
        /// Who needed it.
        who: &'static str,
        /// The libusb files mapped.
        files: Vec<String>,
    },
    /// Re-executing the program failed.
    #[error("{who}: cannot re-execute {} with the stand-in: {source}", .exe.display())]
    Reexec {
        /// Who needed it.
        who: &'static str,
        /// The program.
        exe: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

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
/// in `target/<profile>/deps`, the one a level up), or [`StandInError::Missing`], led by `who`,
/// naming the cargo command that builds it.
pub fn library_beside(exe: &Path, who: &'static str) -> Result<PathBuf, StandInError> {
    let dir = exe.parent().unwrap_or(Path::new("."));
    if let Some(found) = [dir.to_path_buf(), dir.join("..")]
        .iter()
        .map(|d| d.join(STAND_IN_FILE))
        .find(|p| p.is_file())
    {
        return Ok(found);
    }
    Err(StandInError::Missing {
        who,
        path: dir.join(STAND_IN_FILE),
        flag: profile_flag(dir),
    })
}

/// The cargo flag that builds into `dir` (`target/<profile>`): empty for debug, ` --release`,
/// or ` --profile NAME`.
fn profile_flag(dir: &Path) -> String {
    let dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    let in_target = dir
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|n| n == "target");
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("release") => " --release".to_string(),
        Some(other) if in_target && other != "debug" => format!(" --profile {other}"),
        _ => String::new(),
    }
}

/// The stand-in built beside the running program; see [`library_beside`].
pub fn library(who: &'static str) -> Result<PathBuf, StandInError> {
    let exe = std::env::current_exe().map_err(|source| StandInError::CurrentExe { who, source })?;
    library_beside(&exe, who)
}

/// Makes `folder/libusb-1.0.so.0` a link to `library` (replaced atomically, so that processes
/// doing the same at once never see it half made).
fn link(library: &Path, folder: &Path, who: &'static str) -> Result<(), StandInError> {
    let fail = |what: &'static str| {
        move |source: std::io::Error| StandInError::Link {
            who,
            what,
            folder: folder.to_path_buf(),
            source,
        }
    };
    std::fs::create_dir_all(folder).map_err(fail("cannot create"))?;
    let target = std::fs::canonicalize(library).map_err(fail("cannot resolve the stand-in for"))?;
    let link = folder.join("libusb-1.0.so.0");
    if std::fs::read_link(&link).is_ok_and(|t| t == target) {
        return Ok(());
    }
    let temporary = folder.join(format!(".libusb-1.0.so.0.{}", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    std::os::unix::fs::symlink(&target, &temporary).map_err(fail("cannot link in"))?;
    std::fs::rename(&temporary, &link).map_err(fail("cannot link in"))
}

/// `Ok` when this process runs on the stand-in alone; otherwise what was loaded instead
/// ([`StandInError::NotLoaded`], [`StandInError::Other`]), led by `who`.
pub fn check(who: &'static str) -> Result<(), StandInError> {
    match loaded() {
        Loaded::StandIn => Ok(()),
        Loaded::None => Err(StandInError::NotLoaded { who }),
        Loaded::Other(files) => Err(StandInError::Other { who, files }),
    }
}

/// Re-executes the running program (same arguments) with the stand-in first on
/// `LD_LIBRARY_PATH` and [`STAND_IN_ENV`] set, and does not return; or returns why it cannot
/// (stand-in not built, already re-executed once, exec failed), led by `who`.
pub fn reexec(who: &'static str) -> Result<(), StandInError> {
    if std::env::var_os(STAND_IN_ENV).is_some() {
        return check(who);
    }
    let exe = std::env::current_exe().map_err(|source| StandInError::CurrentExe { who, source })?;
    Err(exec_with_stand_in(&exe, who))
}

/// Executes [`LIBUSB_PROGRAM`], found beside the running program, with the same arguments, the
/// stand-in first on `LD_LIBRARY_PATH` and [`STAND_IN_ENV`] set, and does not return; or
/// returns why it cannot ([`StandInError::ProgramMissing`] naming the cargo command that builds
/// it, stand-in not built, exec failed), led by `who`.
pub fn exec_libusb_program(who: &'static str) -> StandInError {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(source) => return StandInError::CurrentExe { who, source },
    };
    let dir = exe.parent().unwrap_or(Path::new("."));
    let program = dir.join(LIBUSB_PROGRAM);
    if !program.is_file() {
        return StandInError::ProgramMissing {
            who,
            flag: profile_flag(dir),
            path: program,
        };
    }
    exec_with_stand_in(&program, who)
}

/// Executes `exe` with this process's arguments, the stand-in built beside it first on
/// `LD_LIBRARY_PATH` and [`STAND_IN_ENV`] set; returns only why that failed.
fn exec_with_stand_in(exe: &Path, who: &'static str) -> StandInError {
    let library = match library_beside(exe, who) {
        Ok(library) => library,
        Err(e) => return e,
    };
    let folder = library
        .parent()
        .unwrap_or(Path::new("."))
        .join("libusb-stand-in");
    if let Err(e) = link(&library, &folder, who) {
        return e;
    }
    let mut path = OsString::from(&folder);
    if let Some(rest) = std::env::var_os("LD_LIBRARY_PATH").filter(|v| !v.is_empty()) {
        path.push(":");
        path.push(rest);
    }
    let source = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("LD_LIBRARY_PATH", path)
        .env(STAND_IN_ENV, &folder)
        .exec();
    StandInError::Reexec {
        who,
        exe: exe.to_path_buf(),
        source,
    }
}
