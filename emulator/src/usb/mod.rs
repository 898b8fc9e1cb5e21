//! The wire: a software USB bus, the host controller's transfers on it, and bus speeds.
//!
//! Nothing here knows what the device is: [`bus::SimBus`] implements usb-device's `UsbBus` and
//! answers tokens like a device controller; [`hc`] turns SETUP/IN/OUT tokens into control, bulk
//! and interrupt transfers as a host controller does; [`speed`] charges wire time.

pub mod bus;
pub mod hc;
pub mod speed;
