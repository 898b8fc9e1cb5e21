//! `scripts/test` tells what it did: `--list` names each step it would run and each it skips
//! with the reason, and a run ends with a summary (what ran, what was skipped and why, what
//! failed). Run here with a fake `cargo` on a PATH that lacks the optional system tools, so
//! nothing is built and the skips are known.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

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

/// A PATH folder with the few programs scripts/test needs besides the optional tools, and a
/// `cargo` that exits with `cargo_status` when its arguments contain `fail_on` (0 otherwise).
fn fake_path(tag: &str, fail_on: &str, cargo_status: i32) -> Scratch {
    let dir = std::env::temp_dir().join(format!("scanlab-scripts-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    for tool in ["bash", "sh", "env", "dirname", "python3"] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} is not in /usr/bin or /bin"));
        std::os::unix::fs::symlink(found, dir.join(tool)).expect("symlink");
    }
    let cargo = dir.join("cargo");
    std::fs::write(
        &cargo,
        format!("#!/bin/sh\ncase \"$*\" in *'{fail_on}'*) exit {cargo_status} ;; esac\nexit 0\n"),
    )
    .expect("fake cargo");
    std::fs::set_permissions(&cargo, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    Scratch(dir)
}

fn scripts_test(path: &Scratch, args: &[&str]) -> Output {
    Command::new(path.0.join("bash"))
        .arg(repo().join("scripts/test"))
        .args(args)
        .env_clear()
        .env("PATH", &path.0)
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("scripts/test runs")
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn list_names_every_step_and_every_skip_with_its_reason() {
    let _one_at_a_time = EXECUTABLES.lock().unwrap_or_else(|e| e.into_inner());
    let path = fake_path("list", "never", 0);
    let out = scripts_test(&path, &["--list"]);
    let stdout = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    for want in [
        "run   cargo fmt --check",
        "run   cargo test --workspace",
        "run   run --driver reference (release)",
        "skip  the rusb host and --transport libusb tests: libusb-1.0 not found (apt-get install libusb-1.0-0-dev)",
        "skip  tests needing tshark (emulator/tests/pcap.rs, conformance/tests/pcap.rs, usbip captures): not installed (apt-get install tshark)",
        "skip  tests needing chromium (conformance/tests/browser.rs): not installed (apt-get install chromium)",
    ] {
        assert!(stdout.lines().any(|l| l == want), "missing {want:?} in\n{stdout}");
    }
    assert!(
        stdout
            .lines()
            .all(|l| l.starts_with("run   ") || l.starts_with("skip  ")),
        "{stdout}"
    );
}

#[test]
fn a_run_ends_with_what_ran_what_was_skipped_and_what_failed() {
    let _one_at_a_time = EXECUTABLES.lock().unwrap_or_else(|e| e.into_inner());
    let path = fake_path("fail", "test --workspace", 3);
    let out = scripts_test(&path, &[]);
    let stdout = text(&out);
    assert_eq!(
        out.status.code(),
        Some(3),
        "the failing step's status\n{stdout}"
    );
    let summary = stdout
        .split("scripts/test summary:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary in\n{stdout}"));
    let lines: Vec<&str> = summary.lines().collect();
    let ran: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("  ran      "))
        .collect();
    assert_eq!(ran.len(), 5, "{summary}");
    assert!(ran[0].starts_with("cargo fmt --check ("), "{summary}");
    assert!(
        ran[3].starts_with("cargo doc (warnings are errors) ("),
        "{summary}"
    );
    assert!(ran[4].starts_with("cargo build --workspace ("), "{summary}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  skipped  tests needing tshark")),
        "{summary}"
    );
    assert!(
        lines.contains(&"  FAILED   cargo test --workspace (exit status 3)"),
        "{summary}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.starts_with("scripts/test: 5 step(s) ran, ")
                && l.ends_with(" skipped, failed")),
        "{summary}"
    );
}

#[test]
fn a_passing_run_says_so_last() {
    let _one_at_a_time = EXECUTABLES.lock().unwrap_or_else(|e| e.into_inner());
    let path = fake_path("pass", "never", 0);
    let out = scripts_test(&path, &[]);
    let stdout = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("scripts/test: ") && last.ends_with(" skipped, all passed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  ran      run --driver legacy-xp (release) ("),
        "{stdout}"
    );
    assert!(!stdout.contains("FAILED"), "{stdout}");
}

/// `scripts/readme-check` on a README of known commands: exported variables carry over,
/// promised exit statuses, "quoted" output and paths are checked, a missing one fails, `[root]` and
/// `[long]` lines are skipped and listed, and a `[background]` server serves the lines after
/// it and is stopped.
#[test]
fn readme_check_runs_blocks_in_order_and_checks_what_they_promise() {
    let _one_at_a_time = EXECUTABLES.lock().unwrap_or_else(|e| e.into_inner());
    let scratch =
        Scratch(std::env::temp_dir().join(format!("scanlab-readme-check-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).expect("scratch");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let readme = scratch.0.join("README.md");
    std::fs::write(
        &readme,
        format!(
            "# A README\n\n```sh\nexport GREETING=hello\necho \"$GREETING\" \\\n  world   # prints \"hello world\"\n\
             false                     # exit 1\nmkdir -p out && touch out/file.txt   # writes out/file.txt\necho something            # prints \"not there\"\n\
             sudo reboot               # [root]\nsleep 1000                # forever [long]\n```\n\n\
             Text between blocks.\n\n```sh\npython3 -m http.server {port} --bind 127.0.0.1   # serves 127.0.0.1:{port} [background]\n\
             bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' && echo served   # \"served\"\n```\n"
        ),
    )
    .expect("README");
    let out = Command::new(repo().join("scripts/readme-check"))
        .arg("--readme")
        .arg(&readme)
        .arg("--scratch")
        .arg(scratch.0.join("work"))
        .output()
        .expect("scripts/readme-check runs");
    let stdout = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "FAIL  README.md:9: its output lacks \"not there\"",
        "skip  README.md:10: sudo reboot  (needs root)",
        "skipped  README.md:11: sleep 1000  (long (run with --long))",
        "start README.md:17: python3 -m http.server",
        "ok    README.md:17: stopped by SIGINT, exit 0",
        "readme-check: 7 commands ran, 2 skipped, 1 failed",
    ] {
        assert!(stdout.contains(want), "missing {want:?} in\n{stdout}");
    }
    assert!(stdout.contains(" s; exit 0, \"hello world\")"), "{stdout}");
    assert!(
        stdout.contains("exit 1)"),
        "false keeps its promise: {stdout}"
    );
    assert!(
        stdout.contains("\"served\")"),
        "the server served: {stdout}"
    );
}
