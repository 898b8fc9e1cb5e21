//! What the engine is built from: the optics and paper path ([`Optics`], [`Adf`]) and the timing
//! ([`Timing`]).
//!
//! These are the `optics` and `timing` objects of a device profile
//! (`profile::Profile` composes them), with their serde defaults; the engine itself
//! knows nothing of the profile file.

use serde::{Deserialize, Serialize};

use super::ScanMode;

/// What the optics and paper path can do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Optics {
    /// Optical resolution in dots per inch; the maximum area is given at this resolution.
    /// Required, non-zero.
    pub optical_dpi: u16,
    /// Resolutions a job may ask for, in dpi. Required, non-empty, each non-zero.
    pub resolutions: Vec<u16>,
    /// Width of the scan area in pixels at `optical_dpi`. Required, non-zero.
    pub max_width_px: u32,
    /// Height of the scan area (flatbed glass or ADF sheet) in pixels at `optical_dpi`.
    /// Required, non-zero.
    pub max_height_px: u32,
    /// Scan modes a job may ask for. Default: all five.
    #[serde(default = "default_modes")]
    pub modes: Vec<ScanMode>,
    /// Whether there is a flatbed glass (false for sheet-fed scanners). Default: true.
    #[serde(default = "default_true")]
    pub flatbed: bool,
    /// The automatic document feeder, if there is one. Default: none.
    #[serde(default)]
    pub adf: Option<Adf>,
}

/// An automatic document feeder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Adf {
    /// How many sheets the tray holds. Required, non-zero.
    pub capacity: u16,
    /// Sheets in the tray when the device powers up, at most `capacity`. Required.
    pub loaded_sheets: u16,
    /// Time from the end of one page to the start of the next (the sheet is fed into place).
    /// Default: 900000 us.
    #[serde(default = "default_page_feed_us")]
    pub page_feed_us: u64,
}

/// Timing of the scan engine. All durations in microseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Timing {
    /// Lamp warm-up before the first line of a job. Default: 800000.
    pub warmup_us: u64,
    /// Time to scan one line, at any resolution. Default: 1700; must be non-zero.
    pub line_period_us: u64,
    /// Lines per band (the unit the device buffers and sends). Default: 64; must be non-zero.
    pub band_lines: u32,
    /// Time from a cancel request until the motor has stopped and the device is idle.
    /// Default: 40000.
    pub motor_stop_us: u64,
    /// Each band is late by a random delay in `[0, jitter_us]`. Default: 0.
    pub jitter_us: u64,
    /// Seed of the jitter generator. Default: 1.
    pub jitter_seed: u64,
    /// How many ready bands the device can hold before it pauses. Default: 4; must be non-zero.
    pub buffer_bands: u32,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            warmup_us: 800_000,
            line_period_us: 1700,
            band_lines: 64,
            motor_stop_us: 40_000,
            jitter_us: 0,
            jitter_seed: 1,
            buffer_bands: 4,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_page_feed_us() -> u64 {
    900_000
}

fn default_modes() -> Vec<ScanMode> {
    vec![
        ScanMode::Lineart,
        ScanMode::Gray8,
        ScanMode::Gray16,
        ScanMode::Color24,
        ScanMode::Color48,
    ]
}
