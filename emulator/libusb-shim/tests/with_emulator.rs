//! `scripts/with-emulator` as a user runs it: the emulator it starts keeps its log out of the
//! program's output, a USB/IP server already on the port is used as it is, and a port it
//! cannot use (held by something that is not USB/IP, or by a server while `--profile` asks for
//! another device) is refused with one line and exit status 2, never a silent exit 0.

mod common;

use std::io::Read as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn with_emulator(args: &[&str]) -> Output {
    Command::new(repo().join("scripts/with-emulator"))
        .args(args)
        .current_dir(repo())
        .env_remove("SCANLAB_PORT")
        .env_remove("SCANLAB_USBIP_BUSID")
        .output()
        .expect("scripts/with-emulator runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A loopback port nothing listens on (the system picked it a moment ago).
fn free_port() -> u16 {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("binds")
        .local_addr()
        .expect("address")
        .port()
}

/// Asserts a refusal: exit 2, nothing on stdout, one line on stderr containing `want`.
fn assert_refused(out: &Output, want: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("with-emulator: ") && err.contains(want),
        "{err}"
    );
}

#[test]
fn a_port_held_by_something_that_is_not_usbip_is_refused() {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("binds");
    let port = listener.local_addr().expect("address").port();
    // Answers every connection with text, as a web server or anything else on the port would.
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = std::io::Write::write_all(&mut stream, b"HTTP/1.0 400 Bad Request\r\n\r\n");
            let mut sink = [0u8; 64];
            let _ = stream.read(&mut sink);
        }
    });
    let out = with_emulator(&["--port", &port.to_string(), "--", "true"]);
    assert_refused(&out, "does not answer USB/IP");
}

#[test]
fn a_profile_is_refused_when_a_server_already_holds_the_port() {
    let server = common::serve(Vec::new());
    let port = server.local_addr().port().to_string();
    let out = with_emulator(&[
        "--port",
        &port,
        "--profile",
        "fixtures/profiles/a4-flatbed-300.json",
        "--",
        "true",
    ]);
    assert_refused(&out, "--profile/--devices cannot apply");
    let out = with_emulator(&["--port", &port, "--devices", "2", "--", "true"]);
    assert_refused(&out, "--profile/--devices cannot apply");
}

#[test]
fn a_server_already_on_the_port_is_used_as_it_is() {
    if !common::require(
        common::has_program("sane-find-scanner"),
        "sane-find-scanner (sane-utils)",
    ) {
        return;
    }
    let server = common::serve(Vec::new());
    let port = server.local_addr().port().to_string();
    let out = with_emulator(&["--port", &port, "--", "sane-find-scanner", "-q"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("found possible USB scanner (vendor=0x5ca1"),
        "{stdout}{stderr}"
    );
    assert!(
        stderr.contains("using the USB/IP server already listening"),
        "{stderr}"
    );
    assert!(server.stats().imports >= 1, "{:?}", server.stats());
}

#[test]
fn the_emulators_log_goes_to_its_file_not_into_the_programs_output() {
    if !common::require(
        common::has_program("sane-find-scanner"),
        "sane-find-scanner (sane-utils)",
    ) {
        return;
    }
    let log = common::Scratch::temp(&format!("scanlab-with-emulator-{}.log", std::process::id()));
    let port = free_port().to_string();
    let log_arg = log.to_str().expect("utf-8 temp path");
    let out = with_emulator(&[
        "--port",
        &port,
        "--log",
        log_arg,
        "--",
        "sane-find-scanner",
        "-q",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    // Exactly what sane-find-scanner prints: the scanner, and no emulator line or string error.
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert!(
        lines[0].starts_with(
            "found possible USB scanner (vendor=0x5ca1 [scanlab], product=0x0001 [scanemu fast flatbed])"
        ),
        "{stdout}"
    );
    assert!(stderr.is_empty(), "{stderr}");
    let logged = std::fs::read_to_string(&*log).expect("the log file is written");
    assert!(
        logged.contains("USB/IP server listening on 127.0.0.1:"),
        "{logged}"
    );
    assert!(logged.contains("imported"), "{logged}");
}
