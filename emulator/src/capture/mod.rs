//! Everything that records or replays a session with a device.
//!
//! [`pcap`] writes usbmon captures of a host and [`read`] reads usbmon captures (pcap and
//! pcapng, link types 220 and 189); [`recording`] keeps a session as a recording, and
//! [`import`] makes one from a capture of a real device (which device, which transfers);
//! [`replay`] serves a recording as a device, and [`serve`] exports one over USB/IP; [`playback`] makes a recording's transfers again
//! against any host and compares the answers; [`umockdev`] describes a device for umockdev and
//! drives it the way umockdev's pcap replay expects.

pub mod import;
pub mod pcap;
pub mod playback;
pub mod read;
pub mod recording;
pub mod replay;
pub mod serve;
pub mod umockdev;
