//! `scanconform run --transport libusb` does the same whether `scanconform` was built with the
//! `libusb` feature or without: it executes `scanconform-libusb` (the program built with the
//! feature) found beside itself, with the same arguments and the libusb-1.0 stand-in first on
//! `LD_LIBRARY_PATH`, or stops with one line naming the cargo command that builds it. This test
//! runs in builds without the feature too: a plain `cargo build` replacing `scanconform` must
//! not break `--transport libusb`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Held by a test while it writes a program and runs it: a child forked by another test while
/// the file is open for writing would make executing it fail with ETXTBSY ("Text file busy").
static EXECUTABLES: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A temp folder that is removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A folder holding a copy of the `scanconform` this test was built with.
fn folder_with_scanconform(tag: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!(
        "scanlab-libusb-program-{}-{tag}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::copy(env!("CARGO_BIN_EXE_scanconform"), dir.join("scanconform")).expect("copy");
    Scratch(dir)
}

fn write_executable(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(dir.join("scanconform"))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("SCANCONFORM_LIBUSB_STAND_IN")
        .output()
        .expect("scanconform runs")
}

#[test]
fn without_scanconform_libusb_beside_it_the_run_stops_with_the_build_command() {
    let _one_at_a_time = EXECUTABLES.lock().unwrap_or_else(|e| e.into_inner());
    let dir = folder_with_scanconform("missing");
    let out = run(&dir.0, &["run", "--transport", "libusb"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty(), "nothing printed before the error");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("scanconform-libusb")
            && err.contains("`cargo build -p scanconform --features libusb`"),
        "{err}"
    );
}

#[test]
fn scanconform_libusb_beside_it_runs_with_the_same_arguments_on_the_stand_in() {
    let _one_at_a_time = EXECUTABLES.lock().unwrap_or_else(|e| e.into_inner());
    let dir = folder_with_scanconform("present");
    // Stand-ins for the program built with the feature and for the libusb stand-in: the
    // program prints what it was given.
    write_executable(
        &dir.0.join("scanconform-libusb"),
        "#!/bin/sh\nprintf 'args:%s\\n' \"$*\"\nprintf 'stand-in:%s\\n' \"$SCANCONFORM_LIBUSB_STAND_IN\"\n\
         printf 'path:%s\\n' \"$LD_LIBRARY_PATH\"\nreadlink \"${LD_LIBRARY_PATH%%:*}/libusb-1.0.so.0\"\nexit 7\n",
    );
    std::fs::write(dir.0.join("libscanlab_libusb.so"), b"not really a library").expect("write");
    let args = [
        "run",
        "--driver",
        "reference",
        "--transport",
        "libusb",
        "--filter",
        "complete/*",
    ];
    let out = run(&dir.0, &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "its exit status\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let folder = std::fs::canonicalize(&dir.0)
        .expect("canonical")
        .join("libusb-stand-in");
    let canonical_dir = std::fs::canonicalize(&dir.0).expect("canonical");
    assert_eq!(lines[0], format!("args:{}", args.join(" ")), "{stdout}");
    let stand_in = lines[1].strip_prefix("stand-in:").expect("stand-in line");
    assert_eq!(
        std::fs::canonicalize(stand_in).expect("the stand-in folder exists"),
        folder,
        "{stdout}"
    );
    assert_eq!(
        lines[2],
        format!("path:{stand_in}"),
        "first and only on LD_LIBRARY_PATH"
    );
    assert_eq!(
        Path::new(lines[3]),
        canonical_dir.join("libscanlab_libusb.so"),
        "libusb-1.0.so.0 is the stand-in"
    );
}
