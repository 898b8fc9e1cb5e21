//! The `scanemu` binary, run as a user runs it.

use std::path::PathBuf;
use std::process::{Command, Output};

fn scanemu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scanemu"))
        .args(args)
        .output()
        .expect("scanemu runs")
}

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/profiles")
        .join(name)
        .display()
        .to_string()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

#[test]
fn info_without_a_profile_describes_the_builtin_fast_flatbed() {
    let out = scanemu(&["info"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    for want in [
        "fast-flatbed (built in)",
        "VID:PID        5ca1:0001",
        "manufacturer   \"scanlab\"",
        "product        \"scanemu fast flatbed\"",
        "serial         \"FAST0001\"",
        "high speed (USB 2.0, 480 Mbit/s); bulk payload up to 53.248 MB/s",
        "EP0 max packet 64",
        "interface 0 alt 0: class 0xff (vendor specific) subclass 0x53 protocol 0x01, 3 endpoint(s)",
        "endpoint 0x81 IN  bulk      max packet 512",
        "endpoint 0x02 OUT bulk      max packet 512",
        "endpoint 0x83 IN  interrupt max packet 16, interval 4 (8 microframes, 1.000 ms)",
        "warm-up        2.000 ms",
        "line period    50 us",
        "band           16 lines (800 us per band)",
        "motor stop     500 us",
        "jitter         none",
        "device buffer  4 bands",
        "Faults\n  none",
        "the whole area at 100 dpi (256 x 256 px)",
        // 256 gray bytes x 16 lines; 4096 B at 53.248 MB/s.
        "one band     16 lines, 4096 B (4.0 KiB): produced in 800 us, on the wire 77 us",
        "one page     256 lines in 16 bands, 65536 B (64.0 KiB): produced in 14.800 ms",
        "color24 (768 bytes per line)",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(out.stderr.is_empty());
}

#[test]
fn info_of_the_a4_flatbed_profile() {
    let out = scanemu(&["info", "--profile", &fixture("a4-flatbed-300.json")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    for want in [
        "a4-flatbed-300 (",
        "VID:PID        5ca1:0300",
        "product        \"scanemu A4 flatbed 300\"",
        "serial         \"A4300001\"",
        "area           4960 x 7016 px at 600 dpi (210.0 x 297.0 mm)",
        "warm-up        800.000 ms",
        "line period    1.700 ms",
        "band           64 lines (108.800 ms per band)",
        "motor stop     40.000 ms",
        "jitter         up to 200 us per band (seed 300)",
        "the whole area at 300 dpi (2480 x 3508 px)",
        "gray8 (2480 bytes per line)",
        // The DESIGN's own figure: 158720 bytes at high speed is 2.981 ms.
        "one band     64 lines, 158720 B (155.0 KiB): produced in 108.800 ms, on the wire 2.981 ms",
        "one page     3508 lines in 55 bands, 8699840 B (8.3 MiB): produced in 6.764 s",
        "color24 (7440 bytes per line)",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn info_lists_the_profile_faults() {
    let dir = std::env::temp_dir().join(format!("scanemu-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("faulty.json");
    let base = std::fs::read_to_string(fixture("fast-flatbed.json")).unwrap();
    let faulty = base.replace(
        "\"faults\": []",
        "\"faults\": [{\"kind\": \"stall_on_cancel\"}, {\"kind\": \"paper_jam\", \"band\": 3}]",
    );
    assert_ne!(faulty, base);
    std::fs::write(&path, faulty).unwrap();
    let out = scanemu(&["info", "--profile", path.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("Faults\n  {\"kind\":\"stall_on_cancel\"}\n  {\"kind\":\"paper_jam\",\"page\":0,\"band\":3}\n"), "{text}");
}

#[test]
fn a_broken_profile_is_one_line_naming_file_line_column_and_exit_2() {
    let dir = std::env::temp_dir().join(format!("scanemu-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("broken.json");
    std::fs::write(
        &path,
        "{\n  \"name\": \"broken\",\n  \"usb\": { \"vid\": \"0x5ca1\", \"pid\": 1, \"colour\": 3 }\n}\n",
    )
    .unwrap();
    let out = scanemu(&["info", "--profile", path.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    // `scanemu: FILE:LINE:COLUMN: message`.
    let rest = err
        .strip_prefix(&format!("scanemu: {}:3:", path.display()))
        .unwrap_or_else(|| panic!("no file:line: prefix in {err:?}"));
    let column: u32 = rest.split(':').next().unwrap().parse().expect("a column");
    assert!(column > 1, "{err:?}");
    assert!(err.contains("unknown field `colour`"), "{err:?}");
    assert!(!err.contains("panicked"));
}

#[test]
fn an_invalid_value_and_a_missing_file_exit_2() {
    let dir = std::env::temp_dir().join(format!("scanemu-cli-inv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("invalid.json");
    let base = std::fs::read_to_string(fixture("fast-flatbed.json")).unwrap();
    std::fs::write(
        &path,
        base.replace("\"band_lines\": 16", "\"band_lines\": 0"),
    )
    .unwrap();
    let out = scanemu(&["info", "--profile", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!("{}:", path.display())) && err.contains("invalid timing.band_lines"),
        "{err:?}"
    );
    let line_col = err.split(':').nth(2).and_then(|l| l.parse::<u32>().ok());
    assert!(line_col.is_some_and(|l| l > 1), "{err:?}");
    let missing = dir.join("nope.json");
    let out = scanemu(&["info", "--profile", missing.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1);
    assert!(err.contains("cannot read profile"), "{err:?}");
}

#[test]
fn a_bad_flag_exits_2() {
    let out = scanemu(&["info", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn info_of_an_esci_profile_describes_the_personality() {
    let out = scanemu(&["info", "--profile", &fixture("escI-b7-flatbed.json")]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for want in [
        "VID:PID        04b8:011b",
        "class 0xff subclass 0x00",
        "Epson ESC/I level B7, model \"SCANLAB-ESCI\"",
        "FS W parameters, FS G start",
        "emulator/PROTOCOL-ESCI.md",
        "endpoint 0x81 IN  bulk",
        "endpoint 0x02 OUT bulk",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(
        !text.contains("interrupt"),
        "no interrupt endpoint:\n{text}"
    );
    let classic = stdout(&scanemu(&[
        "info",
        "--profile",
        &fixture("escI-b6-flatbed.json"),
    ]));
    assert!(classic.contains("level B6") && classic.contains("6-byte block headers"));
}

#[test]
fn pattern_writes_what_scanimage_writes_and_checks_its_input() {
    let out = scanemu(&[
        "pattern", "--mode", "gray8", "--width", "10", "--height", "3",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let header = b"P5\n# SANE data follows\n10 3\n255\n";
    assert_eq!(&out.stdout[..header.len()], header);
    assert_eq!(out.stdout.len(), header.len() + 30);
    assert_eq!(&out.stdout[header.len()..header.len() + 2], b"SL");
    let rgb = scanemu(&[
        "pattern", "--mode", "color24", "--width", "4", "--height", "2",
    ]);
    assert!(rgb.stdout.starts_with(b"P6\n"));
    assert_eq!(
        rgb.stdout.len(),
        b"P6\n# SANE data follows\n4 2\n255\n".len() + 24
    );
    let bad = scanemu(&[
        "pattern", "--mode", "gray9", "--width", "1", "--height", "1",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    let zero = scanemu(&[
        "pattern", "--mode", "gray8", "--width", "0", "--height", "1",
    ]);
    assert_eq!(zero.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&zero.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn serve_with_an_unwritable_trace_file_exits_2() {
    let out = scanemu(&[
        "serve",
        "--usbip",
        "127.0.0.1:0",
        "--trace",
        "/nonexistent-dir/trace.jsonl",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("scanemu: --trace /nonexistent-dir/trace.jsonl:"),
        "{stderr}"
    );
}

fn device_capture(name: &str, file: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/recordings/devices")
        .join(name)
        .join(file)
        .display()
        .to_string()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("scanemu-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn import_pcap_lists_the_devices_of_a_capture() {
    let out = scanemu(&[
        "import-pcap",
        "--list",
        &device_capture("holtek-keyboard", "source.pcapng"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    for want in [
        "source.pcapng: pcapng, 177 usbmon records, interfaces: usbmon1 (link type 220)\n",
        "bus:addr   vid:pid    class                        transfers  note\n",
        "1:1        1d6b:0002  hub (09)                            51  hub\n",
        "1:3        04f2:b67d  video (0e)                           5  standard requests only\n",
        "1:4        06cb:00bd  vendor (ff)                          4  standard requests only\n",
        "1:11       04d9:1603  HID (03)                            29  imported by default\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

/// Two devices on bus 1 that both moved data: bulk transfers at addresses 3 and 7.
fn two_device_capture() -> Vec<u8> {
    use scanemu::time::Instant;
    use scanemu::usb::usbmon::{EventType, PcapWriter, TransferType, UsbmonEvent};
    let mut w = PcapWriter::new(Vec::new()).unwrap();
    for (id, device) in [(1u64, 3u8), (2, 7)] {
        let submit = UsbmonEvent {
            id,
            event: EventType::Submit,
            transfer_type: TransferType::Bulk,
            endpoint: 0x02,
            device,
            bus: 1,
            setup: None,
            at: Instant::from_micros(id * 1000),
            status: -115,
            urb_len: 2,
            data: &[0xab, device],
            interval: 0,
            start_frame: 0,
            xfer_flags: 0,
            ndesc: 0,
        };
        let complete = UsbmonEvent {
            event: EventType::Complete,
            at: Instant::from_micros(id * 1000 + 10),
            status: 0,
            data: &[],
            ..submit.clone()
        };
        w.write_event(&submit).unwrap();
        w.write_event(&complete).unwrap();
    }
    w.into_inner().unwrap()
}

#[test]
fn import_pcap_refuses_to_guess_between_devices_and_names_them() {
    let dir = scratch("ambiguous");
    let capture = dir.join("two.pcap");
    std::fs::write(&capture, two_device_capture()).unwrap();
    let capture = capture.display().to_string();
    let out_dir = dir.join("rec").display().to_string();
    let out = scanemu(&["import-pcap", &capture, "--out", &out_dir]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("2 devices could be the one to import: 1:3 ????:???? ?, 1:7 ????:???? ?; pick one with --device BUS:ADDRESS"),
        "{stderr}"
    );
    assert!(!dir.join("rec").exists(), "nothing written");
    // --list shows them and says why there is no default.
    let list = scanemu(&["import-pcap", "--list", &capture]);
    assert_eq!(list.status.code(), Some(0));
    assert!(
        stdout(&list).contains("no default: 2 devices could be"),
        "{}",
        stdout(&list)
    );
    // Either one, by name.
    let out = scanemu(&[
        "import-pcap",
        &capture,
        "--out",
        &out_dir,
        "--device",
        "1:7",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = scanemu::capture::recording::Recording::load(&dir.join("rec")).unwrap();
    assert_eq!(rec.meta.device_address, Some(7));
    assert_eq!(rec.transactions.len(), 1);
    assert_eq!(rec.transactions[0].data, "ab07");
    let out = scanemu(&["import-pcap", &capture, "--out", &out_dir, "--device", "9"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("no device at address 9 in the capture; it holds 1:3"),
        "{stderr}"
    );
    let out = scanemu(&[
        "import-pcap",
        &capture,
        "--out",
        &out_dir,
        "--device",
        "1:x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_damaged_capture_is_one_error_line_and_exit_2() {
    let dir = scratch("damaged");
    let source = std::fs::read(device_capture("holtek-keyboard", "source.pcapng")).unwrap();
    let legacy = std::fs::read(device_capture("lowspeed-mouse-sigrok", "source.pcap")).unwrap();
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), Vec::new()),
        ("text".into(), b"not a capture at all\n".to_vec()),
    ];
    for cut in [3, 20, 27, 100, 500, 4001, 9000, source.len() - 1] {
        cases.push((format!("pcapng cut at {cut}"), source[..cut].to_vec()));
    }
    for cut in [10, 24 + 7, 24 + 16 + 20, legacy.len() - 3] {
        cases.push((format!("pcap cut at {cut}"), legacy[..cut].to_vec()));
    }
    // A block length that points past the end, and one that is not a multiple of 4.
    let mut long = source.clone();
    long[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    cases.push(("huge block length".into(), long));
    // The second block (the interface description) claims 13 bytes.
    let second = u32::from_le_bytes(source[4..8].try_into().unwrap()) as usize;
    let mut odd = source.clone();
    odd[second + 4..second + 8].copy_from_slice(&13u32.to_le_bytes());
    cases.push(("garbled block".into(), odd));
    for (what, bytes) in cases {
        let path = dir.join("bad.pcap");
        std::fs::write(&path, &bytes).unwrap();
        let path = path.display().to_string();
        let out_dir = dir.join("rec").display().to_string();
        for args in [
            vec!["import-pcap", &path, "--out", &out_dir],
            vec!["import-pcap", "--list", &path],
        ] {
            let out = scanemu(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
            assert!(stderr.starts_with("scanemu: "), "{what}: {stderr}");
            assert!(stderr.contains("bad.pcap: "), "{what}: {stderr}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_refuses_a_replay_it_cannot_serve_with_one_line_and_exit_2() {
    let missing = scratch("serve-missing-replay");
    let missing = missing.join("nothing-here");
    let out = scanemu(&[
        "serve",
        "--usbip",
        "127.0.0.1:0",
        "--replay",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("scanemu: --replay "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // An import of a capture that holds no configuration descriptor: no client could use it.
    let elecom = device_capture("elecom-mouse", "recording.json");
    let dir = std::path::Path::new(&elecom)
        .parent()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let out = scanemu(&["serve", "--usbip", "127.0.0.1:0", "--replay", &dir]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        "scanemu: 1-1: no configuration descriptor to export",
        "{stderr}"
    );
}
