//! The rusb host without a device: a missing device or a machine without USB support is one
//! clear error, never a panic (this CI machine's kernel has no USB at all).
#![cfg(feature = "rusb")]

use std::process::Command;

use scanemu::host::rusb::{DeviceSelector, RusbError, RusbHost};
use scanemu::sim::Sim;

#[test]
fn a_missing_device_is_a_clear_error() {
    let sim = Sim::realtime();
    // No device has this identity here (and on a machine with USB, none should).
    let selector = DeviceSelector::VidPid(0x5ca1, 0xfffe);
    match RusbHost::open(&sim, selector) {
        Ok(_) => panic!("found a device 5ca1:fffe"),
        Err(e @ RusbError::NotFound(_)) => {
            assert_eq!(e.to_string(), "no USB device 5ca1:fffe found");
        }
        Err(e @ RusbError::Backend(_)) => {
            assert!(e.to_string().starts_with("libusb could not start: "), "{e}");
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[test]
fn a_missing_bus_address_is_a_clear_error() {
    let sim = Sim::realtime();
    match RusbHost::open(&sim, DeviceSelector::BusAddress(250, 127)) {
        Ok(_) => panic!("found a device at bus 250 address 127"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg == "no USB device bus 250 device 127 found"
                    || msg.starts_with("libusb could not start: "),
                "{msg}"
            );
        }
    }
}

#[test]
fn rusb_scan_without_a_device_exits_1_with_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_rusb-scan"))
        .args(["--device", "5ca1:fffe"])
        .output()
        .expect("rusb-scan starts");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr}");
    assert!(stderr.starts_with("rusb-scan: "), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

#[test]
fn rusb_scan_rejects_a_bad_flag_with_status_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_rusb-scan"))
        .args(["--device", "zz:1"])
        .output()
        .expect("rusb-scan starts");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--device"), "stderr: {stderr}");
}
