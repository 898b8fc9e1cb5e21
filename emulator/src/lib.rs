//! scanemu: a software USB scanner.
#![deny(unsafe_code)]
pub mod capture;
pub mod device;
pub mod engine;
pub mod host;
pub mod personality;
pub mod profile;
pub mod sim;
pub mod time;
pub mod usb;
pub mod usbip;
