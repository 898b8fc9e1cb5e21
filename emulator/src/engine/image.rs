//! Image content: a self-describing test pattern, or a PNM file tiled over the scan area.
//!
//! Lines are rendered on demand, one at a time, so serving a scan needs constant memory
//! whatever its size.

use std::path::Path;

use super::job::{ScanJob, ScanMode};

/// Writes line `line` of page `page` of the test pattern into `out` (one whole line).
///
/// Bytes 0..2 are `b"SL"`, 2..4 the page (u16 big-endian), 4..8 the line within the page
/// (u32 big-endian); the header is truncated when the line is shorter than 8 bytes. Byte `i >= 8`
/// is `(line * 7 + page * 131 + i * 13) % 251`. A misplaced, duplicated or missing band is
/// therefore visible byte-exactly. The pattern is the same for every scan mode.
pub fn pattern_line(page: u16, line: u32, out: &mut [u8]) {
    let mut header = [0u8; 8];
    header[0..2].copy_from_slice(b"SL");
    header[2..4].copy_from_slice(&page.to_be_bytes());
    header[4..8].copy_from_slice(&line.to_be_bytes());
    let n = out.len().min(8);
    out[..n].copy_from_slice(&header[..n]);
    if out.len() <= 8 {
        return;
    }
    // The body repeats every 251 bytes: compute one period incrementally, then copy it.
    let mut v = ((u64::from(line) * 7 + u64::from(page) * 131 + 8 * 13) % 251) as u32;
    let period_end = out.len().min(8 + 251);
    for b in &mut out[8..period_end] {
        *b = v as u8;
        v += 13;
        if v >= 251 {
            v -= 251;
        }
    }
    let mut filled = period_end;
    while filled < out.len() {
        let n = (filled - 8).min(out.len() - filled);
        out.copy_within(8..8 + n, filled);
        filled += n;
    }
}

/// Where band bytes come from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ImageSource {
    /// The test pattern of [`pattern_line`] (the default).
    #[default]
    Pattern,
    /// A decoded PNM image, tiled from the top-left of the glass; one image pixel per scan
    /// pixel at the job's resolution; every page shows the same image.
    Pnm(PnmImage),
}

impl ImageSource {
    /// Loads a PNM file (see [`PnmImage::load`]).
    pub fn load_pnm(path: &Path) -> Result<ImageSource, ImageError> {
        PnmImage::load(path).map(ImageSource::Pnm)
    }

    /// Renders line `line` of page `page` of `job` into `out` (exactly one line long).
    pub fn render_line(&self, job: &ScanJob, page: u16, line: u32, out: &mut [u8]) {
        match self {
            ImageSource::Pattern => pattern_line(page, line, out),
            ImageSource::Pnm(image) => image.render_line(job, line, out),
        }
    }
}

/// Why an image could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be read.
    #[error("{path}: cannot read image: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a PNM image this loader understands.
    #[error("{path}: bad pnm image: {message}")]
    Format {
        /// The file (or other origin).
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// A decoded binary PNM image (P4, P5 or P6), samples scaled to 16 bits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PnmImage {
    width: u32,
    height: u32,
    channels: usize,
    samples: Vec<u16>,
}

impl PnmImage {
    /// Reads and decodes a P4 (bitmap), P5 (gray) or P6 (RGB) file; any maxval up to 65535
    /// (two-byte big-endian samples above 255). The whole image is decoded into memory.
    pub fn load(path: &Path) -> Result<PnmImage, ImageError> {
        let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
            path: path.display().to_string(),
            source,
        })?;
        PnmImage::parse(&bytes, &path.display().to_string())
    }

    /// Decodes PNM bytes; `origin` names them in errors.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<PnmImage, ImageError> {
        let fail = |message: String| ImageError::Format {
            path: origin.to_string(),
            message,
        };
        let mut pos = 0usize;
        let magic = next_token(bytes, &mut pos).ok_or_else(|| fail("empty file".into()))?;
        let (channels, bitmap) = match magic {
            b"P4" => (1, true),
            b"P5" => (1, false),
            b"P6" => (3, false),
            other => {
                return Err(fail(format!(
                    "magic {:?} is not P4, P5 or P6",
                    String::from_utf8_lossy(other)
                )))
            }
        };
        let mut number = |what: &str| -> Result<u32, ImageError> {
            let tok = next_token(bytes, &mut pos).ok_or_else(|| fail(format!("missing {what}")))?;
            std::str::from_utf8(tok)
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or_else(|| {
                    fail(format!(
                        "{what} {:?} is not a number",
                        String::from_utf8_lossy(tok)
                    ))
                })
        };
        let width = number("width")?;
        let height = number("height")?;
        let maxval = if bitmap { 1 } else { number("maxval")? };
        if width == 0 || height == 0 {
            return Err(fail(format!("empty image {width} x {height}")));
        }
        if maxval == 0 || maxval > 65535 {
            return Err(fail(format!("maxval {maxval} is not in 1..=65535")));
        }
        // Exactly one whitespace byte separates the header from the raster.
        pos += 1;
        let raster = bytes.get(pos..).unwrap_or(&[]);
        let (w, h) = (width as usize, height as usize);
        let mut samples = Vec::with_capacity(w * h * channels);
        if bitmap {
            let row_bytes = w.div_ceil(8);
            if raster.len() < row_bytes * h {
                return Err(fail(format!(
                    "raster has {} bytes, expected {}",
                    raster.len(),
                    row_bytes * h
                )));
            }
            for y in 0..h {
                let row = &raster[y * row_bytes..][..row_bytes];
                for x in 0..w {
                    let black = row[x / 8] & (0x80 >> (x % 8)) != 0;
                    samples.push(if black { 0 } else { 65535 });
                }
            }
        } else {
            let wide = maxval > 255;
            let sample_bytes = if wide { 2 } else { 1 };
            let need = w * h * channels * sample_bytes;
            if raster.len() < need {
                return Err(fail(format!(
                    "raster has {} bytes, expected {need}",
                    raster.len()
                )));
            }
            for chunk in raster[..need].chunks_exact(sample_bytes) {
                let v = if wide {
                    u32::from(u16::from_be_bytes([chunk[0], chunk[1]]))
                } else {
                    u32::from(chunk[0])
                };
                samples.push((v.min(maxval) * 65535 / maxval) as u16);
            }
        }
        Ok(PnmImage {
            width,
            height,
            channels,
            samples,
        })
    }

    /// Width in pixels.
    pub const fn width_px(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub const fn height_px(&self) -> u32 {
        self.height
    }

    /// The pixel at `(x, y)` (wrapped into the image) as 16-bit RGB.
    fn rgb16(&self, x: u32, y: u32) -> [u16; 3] {
        let (x, y) = ((x % self.width) as usize, (y % self.height) as usize);
        let i = (y * self.width as usize + x) * self.channels;
        if self.channels == 1 {
            [self.samples[i]; 3]
        } else {
            [self.samples[i], self.samples[i + 1], self.samples[i + 2]]
        }
    }

    /// Renders one line of `job` (tiling the image) in the job's mode.
    fn render_line(&self, job: &ScanJob, line: u32, out: &mut [u8]) {
        let y = job.y_px.wrapping_add(line);
        let gray16 =
            |p: [u16; 3]| ((u32::from(p[0]) + u32::from(p[1]) + u32::from(p[2])) / 3) as u16;
        if job.mode == ScanMode::Lineart {
            out.fill(0);
        }
        for xi in 0..job.width_px {
            let p = self.rgb16(job.x_px.wrapping_add(xi), y);
            let i = xi as usize;
            match job.mode {
                ScanMode::Lineart => {
                    if gray16(p) >> 8 < 128 {
                        out[i / 8] |= 0x80 >> (i % 8);
                    }
                }
                ScanMode::Gray8 => out[i] = (gray16(p) >> 8) as u8,
                ScanMode::Gray16 => out[i * 2..i * 2 + 2].copy_from_slice(&gray16(p).to_be_bytes()),
                ScanMode::Color24 => {
                    for c in 0..3 {
                        out[i * 3 + c] = (p[c] >> 8) as u8;
                    }
                }
                ScanMode::Color48 => {
                    for c in 0..3 {
                        out[i * 6 + c * 2..i * 6 + c * 2 + 2].copy_from_slice(&p[c].to_be_bytes());
                    }
                }
            }
        }
    }
}

/// The next whitespace-separated header token, skipping `#` comments.
fn next_token<'a>(bytes: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    loop {
        while *pos < bytes.len() && bytes[*pos].is_ascii_whitespace() {
            *pos += 1;
        }
        if *pos < bytes.len() && bytes[*pos] == b'#' {
            while *pos < bytes.len() && bytes[*pos] != b'\n' {
                *pos += 1;
            }
            continue;
        }
        break;
    }
    let start = *pos;
    while *pos < bytes.len() && !bytes[*pos].is_ascii_whitespace() && bytes[*pos] != b'#' {
        *pos += 1;
    }
    (*pos > start).then(|| &bytes[start..*pos])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_matches_formula() {
        let mut line = [0u8; 1000];
        pattern_line(3, 70_000, &mut line);
        assert_eq!(&line[..2], b"SL");
        assert_eq!(&line[2..4], &3u16.to_be_bytes());
        assert_eq!(&line[4..8], &70_000u32.to_be_bytes());
        for (i, b) in line.iter().enumerate().skip(8) {
            assert_eq!(
                u64::from(*b),
                (70_000u64 * 7 + 3 * 131 + i as u64 * 13) % 251
            );
        }
        let mut short = [0u8; 3];
        pattern_line(1, 2, &mut short);
        assert_eq!(&short, b"SL\0");
    }

    #[test]
    fn pnm_header_with_comment_and_p4() {
        let img = PnmImage::parse(b"P5\n# hi\n2 1\n255\n\x00\xff", "t").unwrap();
        assert_eq!(img.rgb16(1, 0), [65535; 3]);
        assert_eq!(img.rgb16(2, 0), [0; 3]);
        let img = PnmImage::parse(b"P4 9 1\n\x80\x80", "t").unwrap();
        assert_eq!(img.rgb16(0, 0), [0; 3]);
        assert_eq!(img.rgb16(1, 0), [65535; 3]);
        assert_eq!(img.rgb16(8, 0), [0; 3]);
        let err = PnmImage::parse(b"P3 1 1 255 0 0 0", "x.ppm")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("x.ppm: bad pnm image"), "{err}");
        assert!(PnmImage::parse(b"P5 2 2 255\n\x00", "t").is_err());
    }
}
