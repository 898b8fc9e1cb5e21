//! `--pcap`: a conformance run writes one usbmon capture per scenario and service, which
//! tshark reads cleanly and which shows the cancel on the wire.
//!
//! tshark (Debian package `tshark`) is required under `CI=true`; elsewhere the tshark checks
//! are skipped with a printed reason (the file checks still run).

use std::path::{Path, PathBuf};
use std::process::Command;

use scanconform::scenario::{self, ServiceModel};
use scanconform::{drivers, run};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn tshark_available() -> bool {
    if Command::new("tshark").arg("--version").output().is_ok() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("tshark is missing (apt-get install tshark); CI must run this test");
    }
    eprintln!("skipped: tshark is not installed (apt-get install tshark)");
    false
}

fn tshark_fields(file: &Path, filter: &str, field: &str) -> Vec<String> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-Y", filter, "-T", "fields", "-e", field])
        .output()
        .expect("tshark runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_run_with_pcap_writes_a_capture_of_the_cancel() {
    let catalog = scenario::discover(&fixtures().join("scenarios")).unwrap();
    let s = catalog
        .iter()
        .find(|s| s.id == "callback/s-false-at-50-percent")
        .expect("scenario exists");
    let dir = std::env::temp_dir().join(format!("scanconform-pcap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut options = run::RunOptions::default();
    options.pcap = Some(dir.clone());
    let d = drivers::instantiate("reference").unwrap();
    let r = run::run_with(
        s,
        ServiceModel::Xp,
        "reference",
        d,
        &fixtures().join("profiles"),
        &options,
    )
    .unwrap();
    assert!(r.passed());
    let name = run::pcap_file_name(&s.id, ServiceModel::Xp);
    assert_eq!(name, "callback.s-false-at-50-percent.xp.pcap");
    let file = dir.join(&name);
    let bytes = std::fs::read(&file).expect("capture written");
    assert_eq!(&bytes[..4], &0xa1b2_c3d4u32.to_le_bytes());
    assert_eq!(&bytes[20..24], &220u32.to_le_bytes());

    // The capture does not change the trace.
    let plain = run::run(
        s,
        ServiceModel::Xp,
        "reference",
        drivers::instantiate("reference").unwrap(),
        &fixtures().join("profiles"),
    )
    .unwrap();
    assert_eq!(plain.trace.to_json_lines(), r.trace.to_json_lines());

    if tshark_available() {
        assert!(tshark_fields(&file, "_ws.malformed || _ws.expert", "frame.number").is_empty());
        let requests = tshark_fields(&file, "usb.setup.bRequest", "usb.setup.bRequest");
        for req in ["2", "4", "100", "103"] {
            assert!(
                requests.iter().any(|r| r == req),
                "bRequest {req} in {requests:?}"
            );
        }
        let bulk = tshark_fields(
            &file,
            "usb.transfer_type == 0x03 && usb.urb_type == 'C' && usb.data_len > 0",
            "usb.data_len",
        );
        assert!(!bulk.is_empty(), "bulk band data");
        // (The reference driver never reads the interrupt endpoint; emulator/tests/pcap.rs
        // checks interrupt events in a capture.)
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unwritable_pcap_folder_is_an_input_error() {
    let catalog = scenario::discover(&fixtures().join("scenarios")).unwrap();
    let s = &catalog[0];
    let blocker =
        std::env::temp_dir().join(format!("scanconform-pcap-file-{}", std::process::id()));
    std::fs::write(&blocker, b"not a folder").unwrap();
    let mut options = run::RunOptions::default();
    options.pcap = Some(blocker.clone());
    let err = run::run_with(
        s,
        s.scenario.services[0],
        "reference",
        drivers::instantiate("reference").unwrap(),
        &fixtures().join("profiles"),
        &options,
    )
    .expect_err("a file is not a folder");
    assert!(
        matches!(err, run::RunError::Pcap { .. }) && err.to_string().starts_with("--pcap "),
        "{err}"
    );
    let _ = std::fs::remove_file(&blocker);
}
