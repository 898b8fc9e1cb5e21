//! scanemu: a software USB scanner.
#![deny(unsafe_code)]
pub mod bus;
pub mod device;
pub mod engine;
pub mod esci;
pub mod function;
pub mod hc;
pub mod host;
pub mod pcap;
pub mod profile;
pub mod protocol;
pub mod recording;
pub mod replay;
pub mod sim;
pub mod speed;
pub mod time;
pub mod umockdev;
pub mod usbip;
