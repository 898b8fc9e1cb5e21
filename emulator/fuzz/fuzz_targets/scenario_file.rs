//! libFuzzer entry point for [`scanlab_fuzz::conformance_harness::scenario_file`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| scanlab_fuzz::conformance_harness::scenario_file(data));
