//! libFuzzer entry point for [`scanlab_fuzz::conformance_harness::driver_protocol`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| scanlab_fuzz::conformance_harness::driver_protocol(data));
