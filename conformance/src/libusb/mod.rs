//! The libusb-1.0 stand-in from the runner's side: finding and loading it, and the
//! `--transport libusb` host on it.
//!
//! [`stand_in`] finds `libscanlab_libusb.so`, re-executes the program with it first on
//! `LD_LIBRARY_PATH` and checks that no other libusb is mapped; `transport` (cargo feature
//! `libusb`) opens scanemu's rusb host through it.

pub mod stand_in;
#[cfg(feature = "libusb")]
pub mod transport;
