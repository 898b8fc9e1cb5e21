//! libFuzzer entry point for [`scanlab_fuzz::emulator_harness::usbip_messages`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| scanlab_fuzz::emulator_harness::usbip_messages(data));
