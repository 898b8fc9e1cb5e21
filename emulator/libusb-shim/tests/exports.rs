//! The shared object is a drop-in `libusb-1.0.so.0`: the same exported functions as Debian's
//! libusb 1.0.26 plus exactly the seven of 1.0.27, the SONAME, and no symbol versions (Debian's
//! library has none and its consumers' VERNEED names no libusb version).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The functions libusb 1.0.27 added to the 1.0.26 list.
const ADDED_IN_1_0_27: [&str; 7] = [
    "libusb_free_interface_association_descriptors",
    "libusb_free_platform_descriptor",
    "libusb_get_active_interface_association_descriptors",
    "libusb_get_interface_association_descriptors",
    "libusb_get_max_alt_packet_size",
    "libusb_get_platform_descriptor",
    "libusb_init_context",
];

fn defined_symbols(path: &Path) -> BTreeSet<String> {
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(path)
        .output()
        .expect("nm runs");
    assert!(out.status.success(), "nm -D {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|s| s.starts_with("libusb_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn exports_are_debians_libusb_plus_the_1_0_27_additions() {
    let debian = Path::new("/usr/lib/x86_64-linux-gnu/libusb-1.0.so.0");
    if !common::require(common::has_program("nm"), "nm (binutils)")
        || !common::require(debian.exists(), "Debian's libusb-1.0.so.0 (libusb-1.0-0)")
    {
        return;
    }
    let reference = defined_symbols(debian);
    let ours = defined_symbols(&common::shim_so());
    let missing: Vec<_> = reference.difference(&ours).collect();
    assert!(missing.is_empty(), "not exported: {missing:?}");
    let extra: BTreeSet<&str> = ours.difference(&reference).map(String::as_str).collect();
    let allowed: BTreeSet<&str> = ADDED_IN_1_0_27
        .iter()
        .copied()
        .filter(|s| !reference.contains(*s))
        .collect();
    assert_eq!(extra, allowed, "exports beyond libusb 1.0.26 + 1.0.27");
    // Every non-libusb dynamic symbol would be a leak of the Rust runtime into the namespace.
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(common::shim_so())
        .output()
        .expect("nm runs");
    let others: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|s| !s.starts_with("libusb_"))
        .map(str::to_string)
        .collect();
    assert!(others.is_empty(), "other exported symbols: {others:?}");
}

#[test]
fn soname_is_libusb_and_there_is_no_verdef() {
    if !common::require(common::has_program("readelf"), "readelf (binutils)") {
        return;
    }
    let out = Command::new("readelf")
        .args(["-d", "-V"])
        .arg(common::shim_so())
        .output()
        .expect("readelf runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Library soname: [libusb-1.0.so.0]"),
        "no libusb SONAME:\n{text}"
    );
    assert!(!text.contains("VERDEF"), "symbol versions defined:\n{text}");
    assert!(
        !text.contains(".gnu.version_d"),
        "version definition section:\n{text}"
    );
}
