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
    // sanei_usb asks for the strings in language 0; a device that stalls that makes
    // sane-find-scanner print "could not fetch string descriptor: Pipe error".
    let out = format!("{}{}", r.stdout, r.stderr);
    assert!(!out.contains("could not fetch string descriptor"), "{out}");
}

/// With two devices served, `SCANLAB_USBIP_BUSID` makes the stand-in import only the one
/// named, so several programs can share one multi-device server.
#[test]
fn sane_find_scanner_sees_only_the_bus_id_it_is_given() {
    use scanemu::profile::Profile;
    use scanemu::usbip::{DeviceSpec, ServerConfig, UsbIpServer};
    if !common::require(
        common::has_program("sane-find-scanner"),
        "sane-find-scanner (sane-utils)",
    ) {
        return;
    }
    let other = Profile::load(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/profiles/a4-flatbed-1200.json"),
    )
    .expect("profile");
    let config = ServerConfig::with_devices(vec![
        DeviceSpec::new(Profile::builtin_fast(), "1-1"),
        DeviceSpec::new(other, "1-2"),
    ]);
    let server = UsbIpServer::bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)), config)
        .expect("binds loopback");
    let second = &server.exports()[1].record;
    let first = &server.exports()[0].record;
    assert_ne!(first.id_product, second.id_product, "two tellable devices");
    let lib = common::shim_dir("sane-busid");
    let mut cmd = Command::new("sane-find-scanner");
    cmd.arg("-q").env("SCANLAB_USBIP_BUSID", "1-2");
    let r = common::run(
        cmd,
        &lib,
        &server.local_addr().to_string(),
        Duration::from_secs(60),
    );
    r.assert_success("sane-find-scanner -q");
    let found: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.contains("found possible USB scanner"))
        .collect();
    assert_eq!(found.len(), 1, "{}{}", r.stdout, r.stderr);
    assert!(
        found[0].contains(&format!("product=0x{:04x}", second.id_product)),
        "{}",
        found[0]
    );
    assert!(found[0].contains("at libusb:001:003"), "{}", found[0]);
    assert_eq!(server.stats().imports, 1, "only 1-2 was imported");
}
