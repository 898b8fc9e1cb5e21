//! Everything that records or replays a session with a device.
//!
//! [`pcap`] writes usbmon captures; [`recording`] keeps a session as a recording and imports
//! captures; [`replay`] serves a recording as a device; [`umockdev`] describes the device and
//! drives it the way umockdev's pcap replay expects.

pub mod pcap;
pub mod read;
pub mod recording;
pub mod replay;
pub mod umockdev;
