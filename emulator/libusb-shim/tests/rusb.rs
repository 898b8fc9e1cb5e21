//! An rusb program (`examples/rusb_scan.rs`), linked dynamically against the system libusb by
//! libusb1-sys through pkg-config, runs against the emulator with the shim on
//! `LD_LIBRARY_PATH`.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

#[test]
fn rusb_program_reads_descriptors_scans_and_cancels() {
    // `cargo test` builds the examples next to the test binaries' directory.
    let exe = std::env::current_exe().expect("test executable");
    let example: PathBuf = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples/rusb_scan"))
        .expect("target directory");
    assert!(
        example.exists(),
        "{} not built (cargo test builds examples)",
        example.display()
    );
    // Without the dev package libusb1-sys compiles libusb in statically and the shim is
    // bypassed: that is the skip (or, under CI, the failure).
    if !common::require(
        common::has_libusb_dev(),
        "libusb-1.0-0-dev (rusb links libusb dynamically only with it)",
    ) {
        return;
    }
    common::assert_needs_libusb(&example);
    let server = common::serve(Vec::new());
    let lib = common::shim_dir("rusb");
    let r = common::run(
        Command::new(&example),
        &lib,
        &server.local_addr().to_string(),
        Duration::from_secs(60),
    );
    print!("{}", r.stdout);
    r.assert_success("rusb_scan");
    assert!(r.stdout.contains("PASSED: 0 failure(s)"));
}
