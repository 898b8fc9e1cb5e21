//! scanconform: replays scripted cancel scenarios against scanner drivers.
#![deny(unsafe_code)]
pub mod driver;
pub mod drivers;
pub mod libusb;
pub mod record;
pub mod report;
pub mod rules;
pub mod runner;
pub mod sane;
pub mod scenario;
pub mod trace;
pub mod verdict;
pub mod wia;
