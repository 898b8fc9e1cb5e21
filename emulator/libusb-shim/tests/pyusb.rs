//! Debian's pyusb (python3-usb), unmodified, scans through the shim: `tests/pyusb_scan.py`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[test]
fn pyusb_reads_descriptors_scans_and_cancels() {
    // Debian's interpreter and its python3-usb, not whatever python3 is first on PATH.
    let python = Path::new("/usr/bin/python3");
    let has_pyusb = python.exists()
        && Command::new(python)
            .args(["-c", "import usb.backend.libusb1"])
            .status()
            .is_ok_and(|s| s.success());
    if !common::require(has_pyusb, "/usr/bin/python3 with pyusb (python3-usb)") {
        return;
    }
    let server = common::serve(Vec::new());
    let lib = common::shim_dir("pyusb");
    let mut cmd = Command::new(python);
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pyusb_scan.py"));
    let r = common::run(
        cmd,
        &lib,
        &server.local_addr().to_string(),
        Duration::from_secs(60),
    );
    print!("{}", r.stdout);
    r.assert_success("pyusb_scan.py");
    assert!(r.stdout.contains("PASSED: 0 failure(s)"));
}
