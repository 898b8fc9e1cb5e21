//! Fuzz harnesses for scanlab: one function per parser or state machine that takes outside
//! bytes. Each takes arbitrary bytes and must neither panic nor hang.
//!
//! The harness modules depend only on `scanemu` and `scanconform`, so the crates' regression
//! tests include the same files (`#[path]`) and replay saved inputs under plain `cargo test`.
#![forbid(unsafe_code)]

pub mod conformance_harness;
pub mod emulator_harness;
