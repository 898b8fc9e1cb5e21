//! umockdev replay: a capture the emulator wrote drives an unmodified libusb program.
//!
//! `scanemu::capture::umockdev::record` records the scripted scan on the in-process host; `rusb-scan`
//! (the same scan over rusb and the system libusb) then runs under `umockdev-run` with that
//! capture and the device description, on a machine without any USB support, and must read the
//! test pattern byte for byte. Real devices' captures (`fixtures/recordings/devices/`) go the
//! other way: imported, exported again, and replayed under umockdev into `rusb-play`, which
//! makes the recorded transfers and compares every answer byte for byte. Needs `umockdev-run`
//! (Debian package `umockdev`): the tests fail under `CI=true` if it is missing and are skipped
//! with a printed reason otherwise.
#![cfg(feature = "rusb")]

use std::path::{Path, PathBuf};
use std::process::Command;

use scanemu::engine::pattern_line;
use scanemu::personality::native::protocol::STATUS_OK;
use scanemu::profile::Profile;

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

/// False (after printing why) when umockdev-run is missing outside CI; panics in CI.
fn umockdev_available() -> bool {
    if have("umockdev-run") {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("umockdev-run is missing (apt-get install umockdev); CI must run this test");
    }
    eprintln!("skipped: umockdev-run is not installed (apt-get install umockdev)");
    false
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("scanemu-umockdev-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn replay(dir: &Path, rec: &scanemu::capture::umockdev::Recording) -> std::process::Output {
    let image = dir.join("replayed.bin");
    Command::new("umockdev-run")
        .arg("-d")
        .arg(&rec.description)
        .arg("-p")
        .arg(format!("{}={}", rec.sysfs_path, rec.capture.display()))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_rusb-scan"))
        .arg("--out")
        .arg(&image)
        .output()
        .expect("umockdev-run starts")
}

#[test]
fn rusb_program_scans_from_an_emulator_capture_under_umockdev() {
    if !umockdev_available() {
        return;
    }
    let dir = scratch("scan");
    let rec = scanemu::capture::umockdev::record(&Profile::builtin_fast(), &dir).expect("records");
    assert_eq!(rec.scan.status.code, STATUS_OK);
    assert_eq!(
        rec.scan.report.bands_per_page, 8,
        "128 lines in bands of 16"
    );
    let out = replay(&dir, &rec);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "rusb-scan under umockdev failed: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    assert!(stdout.contains("device status 0x2001"), "{stdout}");
    let replayed = std::fs::read(dir.join("replayed.bin")).expect("image written");

    let job = rec.scan.job;
    let bpl = job.bytes_per_line() as usize;
    let mut expected = vec![0u8; bpl * job.height_px as usize];
    for (i, line) in expected.chunks_mut(bpl).enumerate() {
        pattern_line(0, i as u32, line);
    }
    assert_eq!(replayed.len(), expected.len(), "image size");
    assert!(
        replayed == expected,
        "replayed image differs from the pattern"
    );
    assert_eq!(rec.scan.image, expected, "recorded image");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn recording_is_deterministic() {
    let a = scratch("det-a");
    let b = scratch("det-b");
    let profile = Profile::builtin_fast();
    scanemu::capture::umockdev::record(&profile, &a).expect("records");
    scanemu::capture::umockdev::record(&profile, &b).expect("records");
    for f in [
        scanemu::capture::umockdev::CAPTURE_FILE,
        scanemu::capture::umockdev::DESCRIPTION_FILE,
    ] {
        let x = std::fs::read(a.join(f)).unwrap();
        let y = std::fs::read(b.join(f)).unwrap();
        assert!(x == y, "{f} differs between two recordings");
    }
    let desc =
        std::fs::read_to_string(a.join(scanemu::capture::umockdev::DESCRIPTION_FILE)).unwrap();
    assert!(desc.contains("A: idVendor=5ca1\n"), "{desc}");
    assert!(
        desc.contains("A: busnum=1\nA: configuration=\nH: descriptors=1201"),
        "{desc}"
    );
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn a_device_missing_from_the_testbed_is_a_clear_error() {
    if !umockdev_available() {
        return;
    }
    // The testbed holds 5ca1:0001 only; rusb-scan asks for another device.
    let dir = scratch("missing");
    let rec = scanemu::capture::umockdev::record(&Profile::builtin_fast(), &dir).expect("records");
    let out = Command::new("umockdev-run")
        .arg("-d")
        .arg(&rec.description)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_rusb-scan"))
        .args(["--device", "1234:5678"])
        .output()
        .expect("umockdev-run starts");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("no USB device 1234:5678 found"),
        "stderr: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `scanemu import-pcap CAPTURE --out DIR` with the program built beside this test.
fn import(capture: &Path, out: &Path) {
    let run = Command::new(env!("CARGO_BIN_EXE_scanemu"))
        .arg("import-pcap")
        .arg(capture)
        .arg("--out")
        .arg(out)
        .output()
        .expect("scanemu runs");
    assert!(
        run.status.success(),
        "import-pcap: {}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// `rusb-play DIR` under `umockdev-run`, the device described by `description` and its URBs
/// answered from `capture`.
fn rusb_play(description: &Path, capture: &Path, recording: &Path) -> std::process::Output {
    let rec = scanemu::capture::recording::Recording::load(recording).expect("loads");
    let sysfs = scanemu::capture::umockdev::sysfs_path(&rec.meta.capture_config());
    Command::new("umockdev-run")
        .arg("-d")
        .arg(description)
        .arg("-p")
        .arg(format!("{sysfs}={}", capture.display()))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_rusb-play"))
        .arg(recording)
        .output()
        .expect("umockdev-run starts")
}

fn real_device(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/recordings/devices")
        .join(name)
}

/// The faithful export: a real device's capture, imported and exported again, replays under
/// umockdev into a libusb program that makes the recorded transfers and gets the recorded
/// answers byte for byte (descriptors from the description, every URB from the export).
#[test]
fn an_imported_real_capture_exports_a_capture_umockdev_replays() {
    if !umockdev_available() {
        return;
    }
    for (name, source, transfers) in [
        ("holtek-keyboard", "source.pcapng", 29),
        ("synaptics-fingerprint", "source.pcapng", 161),
    ] {
        let dir = scratch(name);
        import(&real_device(name).join(source), &dir);
        let out = rusb_play(
            &dir.join("device.umockdev"),
            &dir.join("capture.pcap"),
            &dir,
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: rusb-play under umockdev failed: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("{transfers} transfers answered as recorded")),
            "{name}: {stdout}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// umockdev reads the original capture with libpcap, so replaying it against the imported
/// recording checks the importer with an independent reader: every answer libpcap's bytes
/// give must be the recording's. (The keyboard's original replays only with its interrupt
/// transfers overlapping, which umockdev's in-order replay cannot follow one at a time.)
#[test]
fn the_original_capture_answers_as_the_import_recorded() {
    if !umockdev_available() {
        return;
    }
    let dir = real_device("synaptics-fingerprint");
    let out = rusb_play(
        &dir.join("device.umockdev"),
        &dir.join("source.pcapng"),
        &dir,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("161 transfers answered as recorded (896 bytes in)"),
        "{stdout}"
    );
}

/// A recording whose data differs from what the capture answers is caught, naming the
/// transaction.
#[test]
fn a_recording_the_capture_does_not_back_is_named_at_its_first_difference() {
    if !umockdev_available() {
        return;
    }
    let dir = scratch("tampered");
    import(&real_device("holtek-keyboard").join("source.pcapng"), &dir);
    let path = dir.join("transactions.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    // The first boot report: 'i' pressed becomes 'j' pressed.
    let tampered = text.replacen(
        "\"data\":\"00000c0000000000\"",
        "\"data\":\"00000d0000000000\"",
        1,
    );
    assert_ne!(tampered, text);
    std::fs::write(&path, tampered).unwrap();
    let out = rusb_play(
        &dir.join("device.umockdev"),
        &dir.join("capture.pcap"),
        &dir,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("rusb-play: transaction #13 (interrupt ep=0x81 length=8")
            && stderr
                .contains("recorded ok 8 bytes 00000d0000000000, got ok 8 bytes 00000c0000000000"),
        "stderr: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
