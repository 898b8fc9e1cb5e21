//! The wire: a software USB bus, the host controller's transfers on it, bus speeds, the
//! standard descriptors and the usbmon capture format.
//!
//! Nothing here knows what the device is: [`bus::SimBus`] implements usb-device's `UsbBus` and
//! answers tokens like a device controller; [`hc`] turns SETUP/IN/OUT tokens into control, bulk
//! and interrupt transfers as a host controller does; [`speed`] charges wire time;
//! [`descriptor`] walks and parses standard descriptors; [`usbmon`] is the capture format
//! (usbmon records in pcap) and the Linux errno values. The standard request codes and
//! descriptor types are usb-device's, re-exported here ([`Request`], [`descriptor_type`]).

pub mod bus;
pub mod descriptor;
pub mod hc;
pub mod speed;
pub mod usbmon;

pub use usb_device::control::Request;
pub use usb_device::descriptor::descriptor_type;
