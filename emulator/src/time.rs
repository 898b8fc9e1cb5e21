//! Virtual time: instants and durations counted in microseconds.
//!
//! Nothing below the runtime adapters reads a clock. Every state machine takes the current
//! [`Instant`] as an argument and reports, through a `poll_at()` method, when it next needs to be
//! polled. Traces therefore hold virtual microseconds, never wall-clock values.

use core::fmt;
use core::ops::{Add, AddAssign, Sub};

/// A point in virtual time, in microseconds since the start of a session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant {
    micros: u64,
}

/// A span of virtual time, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    micros: u64,
}

impl Instant {
    /// The start of the session.
    pub const ZERO: Instant = Instant { micros: 0 };

    /// An instant `micros` microseconds after the start of the session.
    pub const fn from_micros(micros: u64) -> Instant {
        Instant { micros }
    }

    /// An instant `millis` milliseconds after the start of the session.
    pub const fn from_millis(millis: u64) -> Instant {
        Instant {
            micros: millis * 1000,
        }
    }

    /// Microseconds since the start of the session.
    pub const fn total_micros(self) -> u64 {
        self.micros
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.micros.saturating_sub(earlier.micros))
    }
}

impl Duration {
    /// No time at all.
    pub const ZERO: Duration = Duration { micros: 0 };

    /// A duration of `micros` microseconds.
    pub const fn from_micros(micros: u64) -> Duration {
        Duration { micros }
    }

    /// A duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Duration {
        Duration {
            micros: millis * 1000,
        }
    }

    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Duration {
        Duration {
            micros: secs * 1_000_000,
        }
    }

    /// The length in microseconds.
    pub const fn total_micros(self) -> u64 {
        self.micros
    }

    /// The length in whole milliseconds, rounded down.
    pub const fn total_millis(self) -> u64 {
        self.micros / 1000
    }

    /// This duration multiplied by `n`, saturating at the largest representable value.
    pub const fn saturating_mul(self, n: u64) -> Duration {
        Duration {
            micros: self.micros.saturating_mul(n),
        }
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant::from_micros(self.micros.saturating_add(rhs.micros))
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturating: an earlier minus a later instant is zero.
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

impl Add for Duration {
    type Output = Duration;
    fn add(self, rhs: Duration) -> Duration {
        Duration::from_micros(self.micros.saturating_add(rhs.micros))
    }
}

impl AddAssign for Duration {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> std::time::Duration {
        std::time::Duration::from_micros(d.micros)
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Duration {
        Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
}

impl fmt::Display for Instant {
    /// `1032.322 ms`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03} ms", self.micros / 1000, self.micros % 1000)
    }
}

impl fmt::Display for Duration {
    /// `40.100 ms`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03} ms", self.micros / 1000, self.micros % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let a = Instant::from_millis(2);
        assert_eq!((a + Duration::from_micros(5)).total_micros(), 2005);
        assert_eq!(Instant::ZERO - a, Duration::ZERO);
        assert_eq!(a - Instant::from_micros(500), Duration::from_micros(1500));
        assert_eq!(
            Duration::from_micros(u64::MAX)
                .saturating_mul(2)
                .total_micros(),
            u64::MAX
        );
    }

    #[test]
    fn display_in_milliseconds() {
        assert_eq!(Instant::from_micros(1_032_322).to_string(), "1032.322 ms");
        assert_eq!(Duration::from_micros(40_100).to_string(), "40.100 ms");
    }
}
