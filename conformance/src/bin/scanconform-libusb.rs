//! `scanconform-libusb`: `scanconform` built with the `libusb` feature (the rusb host), under
//! its own name. `scanconform run --transport libusb` executes it, found beside itself, with
//! the libusb-1.0 stand-in on `LD_LIBRARY_PATH`; see `scanconform::libusb::stand_in` for why
//! it is a program of its own.

#[path = "scanconform/main.rs"]
mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
