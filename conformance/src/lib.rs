//! scanconform: replays scripted cancel scenarios against scanner drivers.
#![deny(unsafe_code)]
pub mod driver;
pub mod drivers;
pub mod html_report;
#[cfg(feature = "libusb")]
pub mod libusb_transport;
pub mod record;
pub mod report;
pub mod rules;
pub mod runner;
pub mod sane;
pub mod scenario;
pub mod stand_in;
pub mod timeline;
pub mod trace;
pub mod wia;
