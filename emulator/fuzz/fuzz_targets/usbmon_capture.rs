//! libFuzzer entry point for [`scanlab_fuzz::emulator_harness::usbmon_capture`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| scanlab_fuzz::emulator_harness::usbmon_capture(data));
