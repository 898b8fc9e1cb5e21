//! Link settings for the programs of this package (the `scanconform` binaries, the tests).
//!
//! They export their own `sigaction`, `signal` and `pthread_cancel`
//! (`scanconform::sane::ffi::guard`) so that a SANE backend loaded into them binds to those
//! instead of libc's: SIGINT and SIGTERM then stay the program's while a backend's thread tries
//! to reset them, and a backend's asynchronous cancel of its own reader thread waits until that
//! thread is blocked, so that it cannot land inside `malloc`. The tests link the same way so
//! that the in-process SANE runs they check are the ones the binary makes. GNU ld 2.35 and later and lld
//! know `--export-dynamic-symbol`; other targets than Linux do not need it.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        for symbol in ["sigaction", "signal", "pthread_cancel"] {
            println!("cargo:rustc-link-arg=-Wl,--export-dynamic-symbol={symbol}");
        }
    }
}
