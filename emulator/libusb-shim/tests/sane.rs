//! Debian's `sane-find-scanner` (sane-utils), unmodified, finds the emulated scanner through
//! the shim: SANE's `sanei_usb` enumerates, opens and reads descriptors with libusb.

mod common;

use std::process::Command;
use std::time::Duration;

#[test]
fn sane_find_scanner_reports_the_emulated_scanner() {
    if !common::require(
        common::has_program("sane-find-scanner"),
        "sane-find-scanner (sane-utils)",
    ) {
        return;
    }
    let server = common::serve(Vec::new());
    let record = &server.exported().record;
    let (vid, pid) = (record.id_vendor, record.id_product);
    let lib = common::shim_dir("sane");
    let mut cmd = Command::new("sane-find-scanner");
    cmd.arg("-q");
    let r = common::run(
        cmd,
        &lib,
        &server.local_addr().to_string(),
        Duration::from_secs(60),
    );
    r.assert_success("sane-find-scanner -q");
    let want = format!("vendor=0x{vid:04x}");
    let line = r
        .stdout
        .lines()
        .find(|l| l.contains("found possible USB scanner"))
        .unwrap_or_else(|| panic!("no USB scanner found:\n{}{}", r.stdout, r.stderr));
    assert!(line.contains(&want), "{line}");
    assert!(line.contains(&format!("product=0x{pid:04x}")), "{line}");
    assert!(line.contains("at libusb:001:002"), "{line}");
}
