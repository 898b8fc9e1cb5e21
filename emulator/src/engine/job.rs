//! What the host asks for: scan mode, source, area and page count, and how big the result is.

use serde::{Deserialize, Serialize};

use super::Optics;

/// Pixel format of a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanMode {
    /// 1 bit per pixel, 1 = black (as in SANE), most significant bit first, lines padded to
    /// whole bytes.
    Lineart,
    /// 8-bit gray.
    Gray8,
    /// 16-bit gray, big-endian samples.
    Gray16,
    /// 8 bits per channel RGB.
    Color24,
    /// 16 bits per channel RGB, big-endian samples.
    Color48,
}

impl ScanMode {
    /// Bits per pixel: 1, 8, 16, 24 or 48.
    pub const fn bits_per_pixel(self) -> u32 {
        match self {
            ScanMode::Lineart => 1,
            ScanMode::Gray8 => 8,
            ScanMode::Gray16 => 16,
            ScanMode::Color24 => 24,
            ScanMode::Color48 => 48,
        }
    }
}

/// Where the paper is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanSource {
    /// The glass: always exactly one page.
    Flatbed,
    /// The automatic document feeder: one page per loaded sheet.
    Adf,
}

/// One scan request. Positions and sizes are in pixels at `resolution_dpi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanJob {
    /// Resolution in dots per inch; must be listed in the profile.
    pub resolution_dpi: u16,
    /// Pixel format; must be listed in the profile.
    pub mode: ScanMode,
    /// Left edge of the area.
    pub x_px: u32,
    /// Top edge of the area.
    pub y_px: u32,
    /// Width of the area, non-zero.
    pub width_px: u32,
    /// Height of the area (lines per page), non-zero.
    pub height_px: u32,
    /// Flatbed or feeder.
    pub source: ScanSource,
    /// ADF: pages to scan, 0 = until the feeder is empty. Flatbed: 0 or 1, both mean one page.
    pub pages: u16,
}

/// Why a [`ScanJob`] does not fit a profile.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// The resolution is not in the profile's list.
    #[error("resolution {dpi} dpi is not supported (supported: {supported:?})")]
    Resolution {
        /// The requested resolution.
        dpi: u16,
        /// The profile's resolutions.
        supported: Vec<u16>,
    },
    /// The mode is not in the profile's list.
    #[error("mode {mode:?} is not supported")]
    Mode {
        /// The requested mode.
        mode: ScanMode,
    },
    /// Width or height is zero.
    #[error("scan area is empty ({width_px} x {height_px} px)")]
    EmptyArea {
        /// Requested width.
        width_px: u32,
        /// Requested height.
        height_px: u32,
    },
    /// The area reaches beyond the glass (or sheet) at this resolution.
    #[error("scan area {x_px}+{width_px} x {y_px}+{height_px} px exceeds the maximum {max_width_px} x {max_height_px} px at {dpi} dpi")]
    OutOfArea {
        /// Requested left edge.
        x_px: u32,
        /// Requested top edge.
        y_px: u32,
        /// Requested width.
        width_px: u32,
        /// Requested height.
        height_px: u32,
        /// Maximum width at the requested resolution.
        max_width_px: u32,
        /// Maximum height at the requested resolution.
        max_height_px: u32,
        /// The requested resolution.
        dpi: u16,
    },
    /// The source is the ADF but the profile has none.
    #[error("the device has no document feeder")]
    NoAdf,
    /// The source is the flatbed but the device is sheet-fed.
    #[error("the device has no flatbed")]
    NoFlatbed,
    /// A flatbed job asked for more than one page.
    #[error("a flatbed scan has exactly one page, not {pages}")]
    FlatbedPages {
        /// Requested pages.
        pages: u16,
    },
}

impl ScanJob {
    /// A flatbed job of `width_px` x `height_px` at the top-left corner.
    pub const fn flatbed(
        resolution_dpi: u16,
        mode: ScanMode,
        width_px: u32,
        height_px: u32,
    ) -> ScanJob {
        ScanJob {
            resolution_dpi,
            mode,
            x_px: 0,
            y_px: 0,
            width_px,
            height_px,
            source: ScanSource::Flatbed,
            pages: 1,
        }
    }

    /// An ADF job of `pages` pages (0 = until the feeder is empty).
    pub const fn adf(
        resolution_dpi: u16,
        mode: ScanMode,
        width_px: u32,
        height_px: u32,
        pages: u16,
    ) -> ScanJob {
        ScanJob {
            source: ScanSource::Adf,
            pages,
            ..ScanJob::flatbed(resolution_dpi, mode, width_px, height_px)
        }
    }

    /// Bytes per line: `ceil(width / 8)` for lineart, `width * bits_per_pixel / 8` otherwise.
    pub const fn bytes_per_line(&self) -> u64 {
        (self.width_px as u64 * self.mode.bits_per_pixel() as u64).div_ceil(8)
    }

    /// Lines per page (the height).
    pub const fn lines_per_page(&self) -> u32 {
        self.height_px
    }

    /// Bands per page for bands of `band_lines` lines (the last band may be shorter).
    pub const fn bands_per_page(&self, band_lines: u32) -> u32 {
        self.height_px.div_ceil(band_lines)
    }

    /// Bytes per page.
    pub const fn page_bytes(&self) -> u64 {
        // Saturates: a profile may describe an area whose full page does not fit in u64.
        self.bytes_per_line().saturating_mul(self.height_px as u64)
    }

    /// Checks this job against what the optics can do.
    pub fn validate(&self, optics: &Optics) -> Result<(), JobError> {
        if !optics.resolutions.contains(&self.resolution_dpi) {
            return Err(JobError::Resolution {
                dpi: self.resolution_dpi,
                supported: optics.resolutions.clone(),
            });
        }
        if !optics.modes.contains(&self.mode) {
            return Err(JobError::Mode { mode: self.mode });
        }
        if self.width_px == 0 || self.height_px == 0 {
            return Err(JobError::EmptyArea {
                width_px: self.width_px,
                height_px: self.height_px,
            });
        }
        let scale = |px: u32| {
            let v = u64::from(px) * u64::from(self.resolution_dpi) / u64::from(optics.optical_dpi);
            u32::try_from(v).unwrap_or(u32::MAX)
        };
        let (max_w, max_h) = (scale(optics.max_width_px), scale(optics.max_height_px));
        let right = u64::from(self.x_px) + u64::from(self.width_px);
        let bottom = u64::from(self.y_px) + u64::from(self.height_px);
        if right > u64::from(max_w) || bottom > u64::from(max_h) {
            return Err(JobError::OutOfArea {
                x_px: self.x_px,
                y_px: self.y_px,
                width_px: self.width_px,
                height_px: self.height_px,
                max_width_px: max_w,
                max_height_px: max_h,
                dpi: self.resolution_dpi,
            });
        }
        match self.source {
            ScanSource::Adf if optics.adf.is_none() => Err(JobError::NoAdf),
            ScanSource::Flatbed if !optics.flatbed => Err(JobError::NoFlatbed),
            ScanSource::Flatbed if self.pages > 1 => {
                Err(JobError::FlatbedPages { pages: self.pages })
            }
            _ => Ok(()),
        }
    }
}
