//! SANE backends as drivers under test: `scanconform run --driver sane:BACKEND[:DEVICE]`.
//!
//! On Linux a scanner driver is a SANE backend, a shared library with a small C API whose
//! cancel contract has the shape of WIA's. The runner plays the frontend against a real,
//! unmodified backend:
//! - [`ffi`]: the only unsafe code: `dlopen` (libloading), the SANE 1 ABI, safe wrappers;
//! - [`target`]: what `sane:BACKEND[:DEVICE]` names (the library, the device);
//! - [`scenario`]: scenario files under `fixtures/scenarios/sane/` (`"kind": "sane"`);
//! - [`runner`]: the session with one backend: loads it, plays each scenario's script in real
//!   time (`play.rs`: a reader thread and a canceller thread for cancels during a blocked
//!   read), records a [`trace::SaneTrace`] and judges it;
//! - [`device`]: the emulated scanner (over USB/IP, through the libusb stand-in) behind a
//!   backend that drives hardware, such as `sane:epson2`;
//! - [`analysis`]: what a trace says about frames and the device's scans (active frames,
//!   cancel latency), knowing no rule;
//! - [`rules`]: the SANE rule catalogue, each rule quoting the SANE standard, judged into the
//!   shared [`crate::verdict`] types (never the WIA rules);
//! - [`expected`]: the findings against a backend as data, checked both ways.
//!
//! The results go through the same verdict and report path as WIA runs: the CLI turns each
//! [`runner::SaneRun`] into a `report::RunRecord` (table, JSON, JUnit, traces, HTML). Nothing
//! in this module prints, except the watchdog's last line before it ends a process whose
//! backend hangs. `conformance/SANE.md` documents the schema, the rules and how to run another
//! backend.

pub mod analysis;
pub mod device;
pub mod expected;
#[allow(unsafe_code)]
pub mod ffi;
mod play;
pub mod rules;
pub mod runner;
pub mod scenario;
pub mod target;
pub mod trace;

use std::path::{Path, PathBuf};

/// The config folder for `backend`: `<fixtures>/sane` when it holds `<backend>.conf`.
pub fn config_dir(fixtures: &Path, backend: &str) -> Option<PathBuf> {
    let dir = fixtures.join("sane");
    dir.join(format!("{backend}.conf")).is_file().then_some(dir)
}

/// The SANE scenarios of `backend`: `<fixtures>/scenarios/sane/<backend>/` when that folder
/// exists (the scenarios written for that backend and its emulated device), otherwise the
/// shared `<fixtures>/scenarios/sane/`.
pub fn scenario_root(fixtures: &Path, backend: &str) -> PathBuf {
    let shared = fixtures.join("scenarios").join("sane");
    let own = shared.join(backend);
    if !backend.is_empty() && own.is_dir() {
        own
    } else {
        shared
    }
}

/// The expected-failure list of `backend`.
pub fn expected_path(fixtures: &Path, backend: &str) -> PathBuf {
    fixtures
        .join("sane-expected")
        .join(format!("{backend}.json"))
}
