//! Bus speeds and the bandwidth model: how long a packet occupies the wire.
//!
//! The model follows the per-frame budgets that Linux's dummy_hcd uses: full speed carries 19
//! bulk packets of 64 bytes per 1 ms frame, high speed 13 packets of 512 bytes per 125 us
//! microframe (53.248 MB/s), SuperSpeed about 400 MB/s. `Unlimited` costs no time at all.

use serde::{Deserialize, Serialize};

use crate::time::Duration;

/// The speed a device is attached at, which fixes packet sizes and wire time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speed {
    /// USB 1.1 full speed, 12 Mbit/s; bulk packets of at most 64 bytes.
    Full,
    /// USB 2.0 high speed, 480 Mbit/s; bulk packets of at most 512 bytes.
    #[default]
    High,
    /// USB 3.x SuperSpeed, about 400 MB/s of bulk payload.
    Super,
    /// No bandwidth limit: transfers take no virtual time on the wire.
    Unlimited,
}

impl Speed {
    /// The largest bulk packet this speed allows.
    pub const fn max_bulk_packet(self) -> u16 {
        match self {
            Speed::Full => 64,
            Speed::High | Speed::Unlimited => 512,
            Speed::Super => 1024,
        }
    }

    /// Payload bytes per second that bulk transfers reach at this speed, or `None` if unlimited.
    pub const fn bulk_bytes_per_second(self) -> Option<u64> {
        match self {
            // 19 x 64 B per 1 ms frame.
            Speed::Full => Some(19 * 64 * 1000),
            // 13 x 512 B per 125 us microframe.
            Speed::High => Some(13 * 512 * 8000),
            Speed::Super => Some(400_000_000),
            Speed::Unlimited => None,
        }
    }

    /// Wire time of `bytes` of payload, rounded up to whole microseconds.
    pub fn wire_time(self, bytes: u64) -> Duration {
        match self.bulk_bytes_per_second() {
            None => Duration::ZERO,
            Some(rate) => Duration::from_micros((bytes * 1_000_000).div_ceil(rate)),
        }
    }

    /// The USB/IP and usbmon speed code (1 low, 2 full, 3 high, 5 super).
    pub const fn usbip_code(self) -> u32 {
        match self {
            Speed::Full => 2,
            Speed::High | Speed::Unlimited => 3,
            Speed::Super => 5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_speed_band_takes_realistic_wire_time() {
        // One 64-line band of 2480 gray pixels: 158720 bytes at 53.248 MB/s is about 2.98 ms.
        assert_eq!(Speed::High.wire_time(158_720).total_micros(), 2981);
        assert_eq!(Speed::Unlimited.wire_time(158_720), Duration::ZERO);
        assert_eq!(Speed::Full.wire_time(1216).total_micros(), 1000);
    }
}
