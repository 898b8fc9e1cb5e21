//! `scripts/with-emulator` under SIGINT and SIGTERM, sent to its PID: the program it runs gets
//! the signal and is waited for, the emulator it started is stopped (its port closes), one line
//! on stderr says so, and the exit status is 130 (SIGINT) or 143 (SIGTERM), also when the
//! program itself cancels cleanly and exits 0. Waits are bounded only to fail, not to time.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Runs `with-emulator -- sh -c PROGRAM`, sends `sig` once PROGRAM said `started`, and
/// returns the exit code and stderr.
fn interrupted(sig: &str, program: &str) -> (Option<i32>, String, u16) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let port = free_port();
    let err = std::env::temp_dir().join(format!("with-emulator-{}-{sig}.err", std::process::id()));
    let mut child = Command::new(root.join("scripts/with-emulator"))
        .current_dir(&root)
        .args(["--port", &port.to_string(), "--", "sh", "-c", program])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("with-emulator starts");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("the program's first line");
    assert_eq!(
        line.trim(),
        "started",
        "{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "the emulator listens"
    );
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(ok.success());
    let start = Instant::now();
    let code = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s.code();
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("with-emulator did not end within 30 s of {sig}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    let _ = std::fs::remove_file(&err);
    (code, stderr, port)
}

fn check(sig: &str, name: &str, status: i32, program: &str, program_status: i32) {
    let (code, stderr, port) = interrupted(sig, program);
    assert_eq!(code, Some(status), "{stderr}");
    let last = stderr.lines().last().unwrap_or("");
    assert_eq!(
        last,
        format!(
            "with-emulator: {name}: sh ended with status {program_status}; the emulator it started was stopped"
        ),
        "{stderr}"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the emulator still listens on {port}"
    );
}

#[test]
fn sigint_reaches_the_program_stops_the_emulator_and_exits_130() {
    check("-INT", "SIGINT", 130, "echo started; exec sleep 60", 130);
}

#[test]
fn sigterm_exits_143_even_when_the_program_cancels_cleanly() {
    // A program that handles the signal (as scanimage cancels a scan) and exits 0.
    check(
        "-TERM",
        "SIGTERM",
        143,
        "trap 'exit 0' TERM; echo started; while :; do sleep 0.05; done",
        0,
    );
}

/// `--replay DIR` beside `--devices 1`: the emulator serves the emulated scanner and the
/// recorded device, and a USB/IP client run as PROGRAM lists both (Debian's `usbip list -r`
/// when installed, else a check that the port answers).
#[test]
fn replay_exports_the_recording_beside_the_emulated_scanner() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let port = free_port();
    let usbip = ["/usr/sbin/usbip", "/usr/bin/usbip"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let program = match usbip {
        Some(u) => format!("{u} --tcp-port {port} list -r 127.0.0.1"),
        None => "true".into(),
    };
    let out = Command::new(root.join("scripts/with-emulator"))
        .current_dir(&root)
        .args(["--port", &port.to_string(), "--devices", "1", "--replay"])
        .arg("fixtures/recordings/devices/holtek-keyboard")
        .args(["--", "sh", "-c", &program])
        .stdin(Stdio::null())
        .output()
        .expect("with-emulator runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains("exporting bus id 1-1 = 5ca1:0001, bus id 1-2 = 04d9:1603"),
        "{stderr}"
    );
    if usbip.is_some() {
        assert!(stdout.contains("1-1: "), "{stdout}");
        assert!(stdout.contains("1-2: "), "{stdout}");
        assert!(stdout.contains("04d9:1603"), "{stdout}");
    }
}
