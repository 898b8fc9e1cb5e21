//! Debian's unmodified `scanimage` and `epson2` backend scan from the emulated ESC/I scanner
//! through the libusb stand-in: gray and colour images byte-identical to the engine's pattern,
//! and a SIGINT mid-scan that epson2 turns into CAN after the block in flight.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use scanemu::engine::{pattern_line, Fault};
use scanemu::personality::DeviceNote;
use scanemu::profile::Profile;
use scanemu::usbip::{ServerConfig, UsbIpServer};

const EPSON2: &str = "/usr/lib/x86_64-linux-gnu/sane/libsane-epson2.so.1";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// The ESC/I profile served in-process with `faults`, its device notes collected.
fn serve_with(profile: &str, faults: Vec<Fault>) -> (UsbIpServer, Arc<Mutex<Vec<DeviceNote>>>) {
    let profile = Profile::load(&fixtures().join("profiles").join(profile)).expect("profile");
    let notes = Arc::new(Mutex::new(Vec::new()));
    let sink = notes.clone();
    let mut config = ServerConfig::new(profile);
    config.device_mut().faults = Some(faults);
    config.device_mut().notes = Some(Arc::new(move |n: &DeviceNote| {
        sink.lock().unwrap().push(n.clone())
    }));
    let server =
        UsbIpServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config).expect("binds loopback");
    (server, notes)
}

/// The ESC/I profile served in-process, its device notes collected.
fn serve(profile: &str) -> (UsbIpServer, Arc<Mutex<Vec<DeviceNote>>>) {
    serve_with(profile, Vec::new())
}

fn available() -> bool {
    common::require(common::has_program("scanimage"), "scanimage (sane-utils)")
        && common::require(Path::new(EPSON2).exists(), "libsane-epson2 (libsane1)")
}

fn scanimage(args: &[&str]) -> Command {
    let mut cmd = Command::new("scanimage");
    cmd.env("SANE_CONFIG_DIR", fixtures().join("sane"))
        .args(["-d", "epson2:libusb:001:002", "--format=pnm"])
        .args(args);
    cmd
}

/// What `scanimage --format=pnm` writes for the engine's pattern at this size.
fn expected_pnm(magic: &str, width: usize, height: usize, bytes_per_pixel: usize) -> Vec<u8> {
    let mut out = format!("{magic}\n# SANE data follows\n{width} {height}\n255\n").into_bytes();
    let mut line = vec![0u8; width * bytes_per_pixel];
    for l in 0..height {
        pattern_line(0, l as u32, &mut line);
        out.extend_from_slice(&line);
    }
    out
}

fn scan_to_file(
    profile: &str,
    tag: &str,
    args: &[&str],
) -> (Vec<u8>, Vec<DeviceNote>, common::Ran) {
    let (server, notes) = serve(profile);
    let lib = common::shim_dir(tag);
    let out = std::env::temp_dir().join(format!("scanlab-epson2-{}-{tag}.pnm", std::process::id()));
    let mut cmd = scanimage(args);
    cmd.arg("-o").arg(&out);
    let r = common::run(
        cmd,
        &lib,
        &server.local_addr().to_string(),
        Duration::from_secs(120),
    );
    r.assert_success(&format!("scanimage {args:?}"));
    let image = std::fs::read(&out).expect("scanimage wrote its output");
    let _ = std::fs::remove_file(&out);
    let notes = notes.lock().unwrap().clone();
    (image, notes, r)
}

fn count(notes: &[DeviceNote], what: &str) -> usize {
    notes.iter().filter(|n| n.kind.name() == what).count()
}

#[test]
fn epson2_scans_gray_byte_exact_on_the_extended_path() {
    if !available() {
        return;
    }
    // 25.4 mm at 75 dpi: epson2 rounds the width down to 72 px and truncates to 74 lines.
    let args = [
        "--mode",
        "Gray",
        "--resolution",
        "75",
        "-x",
        "25.4",
        "-y",
        "25.4",
    ];
    let (image, notes, _) = scan_to_file("escI-b7-flatbed.json", "gray", &args);
    assert!(
        image == expected_pnm("P5", 72, 74, 1),
        "gray image differs from the pattern"
    );
    // 74 lines in 16-line blocks: 5 blocks, ACK after each but the last.
    assert_eq!(count(&notes, "block-sent"), 5);
    assert_eq!(count(&notes, "ack"), 4);
    assert_eq!(count(&notes, "can"), 0);
    assert_eq!(count(&notes, "scan-complete"), 1);
    let commands: Vec<String> = notes
        .iter()
        .filter(|n| n.kind.name() == "command")
        .map(|n| n.detail.to_string())
        .collect();
    assert!(
        commands.iter().any(|c| c == "FS W") && commands.iter().any(|c| c == "FS G"),
        "{commands:?}"
    );
}

#[test]
fn epson2_scans_colour_byte_exact_on_both_paths() {
    if !available() {
        return;
    }
    let args = [
        "--mode",
        "Color",
        "--resolution",
        "150",
        "-x",
        "50",
        "-y",
        "40",
    ];
    for (profile, tag) in [
        ("escI-b7-flatbed.json", "rgb-b7"),
        ("escI-b6-flatbed.json", "rgb-b6"),
    ] {
        let (image, notes, _) = scan_to_file(profile, tag, &args);
        assert!(
            image == expected_pnm("P6", 288, 236, 3),
            "{profile}: colour image differs from the pattern"
        );
        assert_eq!(
            count(&notes, "block-sent"),
            15,
            "{profile}: 236 lines in 16-line blocks"
        );
        let start = if tag == "rgb-b7" { "FS G" } else { "ESC G" };
        assert!(
            notes
                .iter()
                .any(|n| n.kind.name() == "command" && n.detail.to_string() == start),
            "{profile}: no {start}"
        );
    }
}

#[test]
fn sigint_mid_scan_ends_with_can_after_the_block_in_flight() {
    if !available() {
        return;
    }
    // Block 3 comes half a second late, so the signal below lands while scanimage waits for
    // it. (Sent at an arbitrary moment, SIGINT can also land between epson2's check of its
    // cancel flag and the ACK it then sends for the block it just read: sane_read returns
    // CANCELLED with no CAN and the device keeps scanning. That race is real; this test is
    // about the usual case.)
    let late = Fault::LateBand {
        page: 0,
        band: 3,
        delay_us: 500_000,
    };
    let (server, notes) = serve_with("escI-b7-flatbed.json", vec![late]);
    let lib = common::shim_dir("sigint");
    // An A4 page at 150 dpi: 1754 lines, 110 blocks, about 3.6 s of scanning.
    let mut cmd = scanimage(&["--mode", "Gray", "--resolution", "150"]);
    // A scratch file, never /dev/null: scanimage writes `<output>.part` and renames it over
    // the output, which as root would replace the device node with a regular file.
    let out =
        std::env::temp_dir().join(format!("scanlab-epson2-{}-sigint.pnm", std::process::id()));
    cmd.arg("-o").arg(&out);
    let running = common::spawn(cmd, &lib, &server.local_addr().to_string());
    let pid = running.id();
    let t0 = Instant::now();
    // The ACK of block 2: scanimage has block 2 and is about to wait for block 3.
    while count(&notes.lock().unwrap(), "ack") < 3 {
        assert!(t0.elapsed() < Duration::from_secs(60), "no third ACK");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(100));
    let sent_at_signal = count(&notes.lock().unwrap(), "block-sent");
    assert_eq!(sent_at_signal, 3, "block 3 is still being scanned");
    // The shell's built-in kill: no dependency on procps.
    let kill = Command::new("sh")
        .args(["-c", &format!("kill -INT {pid}")])
        .status()
        .expect("sh runs");
    assert!(kill.success());
    let r = common::finish(running, Duration::from_secs(90));
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(out.with_extension("pnm.part"));
    assert_eq!(r.code, Some(2), "exit status\n{}", r.stderr);
    assert!(
        r.stderr.contains("Operation was canceled"),
        "stderr: {}",
        r.stderr
    );
    // The server thread may still be writing the last notes.
    std::thread::sleep(Duration::from_millis(300));
    let notes = notes.lock().unwrap().clone();
    let can = notes
        .iter()
        .position(|n| n.kind.name() == "can")
        .unwrap_or_else(|| panic!("no CAN on the wire: {notes:?}"));
    let blocks_before_can = notes[..can]
        .iter()
        .filter(|n| n.kind.name() == "block-sent")
        .count();
    assert_eq!(
        blocks_before_can,
        sent_at_signal + 1,
        "CAN answers the block in flight when the signal came (block 3): {notes:?}"
    );
    let last_block = notes[..can]
        .iter()
        .rposition(|n| n.kind.name() == "block-sent")
        .expect("a block before CAN");
    assert!(
        !notes[last_block..can]
            .iter()
            .any(|n| n.kind.name() == "ack"),
        "CAN answers the block in flight, not a later one"
    );
    assert!(
        notes[can..]
            .iter()
            .any(|n| n.kind.name() == "motor-stopped"),
        "the motor stops after CAN"
    );
    assert_eq!(count(&notes, "scan-complete"), 0);
}
