//! USB/IP: the emulated scanner exported over TCP, as Linux's usbip-host exports a real one.
//!
//! - [`protocol`]: the wire format (protocol 1.1.1), encode and decode with strict validation.
//! - [`server`]: [`UsbIpServer`], which serves one or more devices ([`DeviceSpec`]) on tokio,
//!   each a [`Device`](crate::device::Device) stepped through the same host-controller
//!   transfers ([`crate::usb::hc`]) the in-process host uses, on the wall clock.
//!
//! The client side, a `UsbHost` over USB/IP, is `host::usbip::UsbIpHost` (a layer above this
//! one). A Linux machine with `vhci-hcd` can also attach an exported device with
//! `usbip attach -r HOST -b 1-1`; Debian's `usbip list -r HOST` lists every exported device.

pub mod protocol;
pub mod server;

pub use server::{
    default_busid, DeviceSpec, ServerConfig, ServerStats, StopSignal, UrbAnswer, UrbAnswerSink,
    UrbBackend, UrbRequest, UrbSession, UsbIpServer,
};
