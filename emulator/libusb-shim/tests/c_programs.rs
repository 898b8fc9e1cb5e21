//! C programs built with gcc against Debian's `libusb.h` (with `_Static_assert(offsetof)` on
//! the public structures) and linked to `-lusb-1.0`, run with the shim on `LD_LIBRARY_PATH`.

mod common;

use std::process::Command;
use std::time::Duration;

#[test]
fn options_names_and_version_through_the_c_abi() {
    let Some(probe) = common::compile_c("probe") else {
        return;
    };
    let lib = common::shim_dir("abi");
    let mut cmd = Command::new(&probe);
    cmd.arg("abi");
    // Nothing listens on port 9 of loopback: the list is empty, the log callback hears why.
    let r = common::run(cmd, &lib, "127.0.0.1:9", Duration::from_secs(30));
    r.assert_success("probe abi");
    let expect = [
        ("set_option_log_level_3", "0"),
        ("set_option_log_level_9", "-2"),
        ("set_option_log_level_neg", "-2"),
        ("set_option_usbdk", "-12"),
        ("set_option_unknown", "-2"),
        ("set_option_dirty_upper_half", "0"),
        ("set_option_log_cb", "0"),
        ("devices", "0"),
        ("log_cb_called", "1"),
        ("version", "1.0.27"),
        ("cap_has_capability", "1"),
        ("cap_hotplug", "0"),
        ("error_name_-4", "LIBUSB_ERROR_NO_DEVICE"),
        ("error_name_3", "LIBUSB_TRANSFER_CANCELLED"),
        ("error_name_77", "**UNKNOWN**"),
        ("strerror_-7", "Operation timed out"),
        ("setlocale_en", "0"),
        ("setlocale_xx", "-5"),
        ("hotplug_register", "-12"),
        ("iso_packets", "2"),
        ("stream_id", "7"),
    ];
    for (key, want) in expect {
        assert_eq!(r.value(key), Some(want), "{key}\n{}", r.stdout);
    }
}

#[test]
fn async_api_queued_reads_cancel_timeout_and_resubmitted_interrupt() {
    let Some(prog) = common::compile_c("async_scan") else {
        return;
    };
    let server = common::serve(Vec::new());
    let lib = common::shim_dir("async");
    let r = common::run(
        Command::new(&prog),
        &lib,
        &server.local_addr().to_string(),
        Duration::from_secs(60),
    );
    print!("{}", r.stdout);
    r.assert_success("async_scan");
    assert!(r.stdout.contains("PASSED: 0 failure(s)"));
}
