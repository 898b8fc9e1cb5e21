//! `scanlab-libusb`: a shared object that stands in for `libusb-1.0.so.0` and talks USB/IP to
//! the scanner emulator, so that unmodified libusb programs (SANE backends through
//! `sanei_usb`, rusb and pyusb programs, C programs) drive the emulated scanner with no root,
//! no kernel USB and no hardware: `LD_LIBRARY_PATH=<dir holding libusb-1.0.so.0> program`.
//!
//! Layers, from the wire up:
//! - `connection`: the USB/IP client. One TCP connection per imported device, a reader thread
//!   demultiplexing replies by sequence number, built on the project's own codec
//!   (`scanemu::usbip::protocol`).
//! - descriptors: configuration descriptors parsed into libusb's nested shape, with `extra`,
//!   by the emulator's own parser (`scanemu::usb::descriptor`).
//! - `host`: contexts, devices, handles and the event core (submit, cancel, timeout,
//!   delivery inside `handle_events*`, event lock and waiters); the synchronous calls run on it.
//! - `abi`: the `#[repr(C)]` structures of `libusb.h` with their layouts asserted.
//! - `ffi`: the 97 exported `libusb_*` functions. All `unsafe` code of the crate lives there,
//!   each block with its `// SAFETY:` line; every entry point catches panics.
//!
//! The emulator's address comes from `SCANLAB_USBIP` (`HOST:PORT`, default `127.0.0.1:3240`);
//! `SCANLAB_USBIP_BUSID` (bus ids, comma-separated) picks some of a multi-device server's devices.
//! When nothing answers there, `libusb_init` still succeeds and the device list is empty, as
//! libusb behaves on a machine without USB.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod abi;
mod connection;
#[allow(unsafe_code)]
mod ffi;
mod host;
