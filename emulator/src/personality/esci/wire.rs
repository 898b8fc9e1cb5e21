//! The ESC/I wire, as `emulator/PROTOCOL-ESCI.md` writes it down: endpoint addresses, byte
//! values, parameter lengths, command names, the `FS W` parameter block and the device's
//! identity and status replies. Pure encode and decode, no state: the mirror of the native
//! personality's `protocol` module.

use serde::{Deserialize, Serialize};

use crate::engine::{JobError, Optics, ScanJob, ScanMode, ScanSource};

/// The ESC/I command level a device reports, which chooses the host's code path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EsciLevel {
    /// Level B7 with the extended-commands status bit: `FS W` parameters, `FS G` start and
    /// fixed-size blocks, each followed by a status byte (the extended path).
    #[default]
    B7,
    /// Level B6, classic block mode: `ESC` parameter commands, `ESC G` start, each block led
    /// by a 6-byte information header (`ESC d` limits its lines).
    B6,
}

/// Bulk IN: replies and image blocks.
pub const EP_DATA_IN: u8 = 0x81;
/// Bulk OUT: commands, parameter blocks, ACK and CAN.
pub const EP_DATA_OUT: u8 = 0x02;

/// Escape: leads the classic commands.
pub const ESC: u8 = 0x1b;
/// File separator: leads the extended commands.
pub const FS: u8 = 0x1c;
/// Start of text: first byte of every information header.
pub const STX: u8 = 0x02;
/// Acknowledge: success, or the host accepting a block.
pub const ACK: u8 = 0x06;
/// Negative acknowledge: a refused command or parameter.
pub const NAK: u8 = 0x15;
/// Cancel: the host refusing a block, which aborts the scan.
pub const CAN: u8 = 0x18;

/// Extended block status: the device asks the host to cancel (its Cancel button).
pub const BLOCK_CANCEL_REQUEST: u8 = 0x10;
/// Extended block status: fatal error.
pub const BLOCK_FATAL_ERROR: u8 = 0x80;
/// Classic header status: the last block of the area.
pub const HEADER_AREA_END: u8 = 0x20;
/// `ESC F` status: the device understands the extended (`FS`) commands.
pub const STATUS_EXT_COMMANDS: u8 = 0x02;
/// Colour byte: monochrome (gray or lineart by depth).
pub const COLOR_MONO: u8 = 0x00;
/// Colour byte: RGB, pixel-interleaved.
pub const COLOR_RGB_PIXEL: u8 = 0x13;

/// Length of the `FS W` parameter block.
pub const FS_W_LEN: usize = 64;

/// Why the device refuses a parameter (it answers NAK; the words go in the `nak-sent` note).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    /// `ESC C` with a colour byte the emulator does not scan.
    #[error("colour mode 0x{0:02x} is not emulated")]
    ColourMode(u8),
    /// `ESC D` with a depth other than 1 or 8.
    #[error("depth {0} is not emulated")]
    Depth(u8),
    /// A line count (`ESC d`, `FS W` byte 28) of 0.
    #[error("line count 0")]
    ZeroLineCount,
    /// `FS W` with different x and y resolutions.
    #[error("x and y resolution differ ({x} / {y})")]
    ResolutionsDiffer {
        /// Main-scan resolution.
        x: u32,
        /// Sub-scan resolution.
        y: u32,
    },
    /// `FS W` with a resolution beyond 16 bits.
    #[error("resolution {0} dpi")]
    Resolution(u32),
    /// `FS W` asking for an option unit (ADF, transparency unit) the device lacks.
    #[error("option unit {0} is not installed")]
    OptionUnit(u8),
    /// A colour byte and depth that make no emulated scan mode.
    #[error("colour 0x{color:02x} at depth {depth} is not emulated")]
    Mode {
        /// The colour byte.
        color: u8,
        /// The depth in bits.
        depth: u8,
    },
    /// A parameter block shorter than its command's.
    #[error("parameter block of {0} bytes is too short")]
    Short(usize),
    /// The job does not fit the optics.
    #[error(transparent)]
    Job(#[from] JobError),
}

/// The scan mode of a colour byte and a depth.
pub fn mode_of(color: u8, depth: u8) -> Result<ScanMode, ParamError> {
    match (color, depth) {
        (COLOR_MONO, 8) => Ok(ScanMode::Gray8),
        (COLOR_MONO, 1) => Ok(ScanMode::Lineart),
        (COLOR_RGB_PIXEL, 8) => Ok(ScanMode::Color24),
        (color, depth) => Err(ParamError::Mode { color, depth }),
    }
}

/// The job and line count (byte 28, not checked here) of an `FS W` block of [`FS_W_LEN`]
/// bytes; the job is not checked against the optics.
pub fn decode_fs_w(d: &[u8]) -> Result<(ScanJob, u32), ParamError> {
    if d.len() < FS_W_LEN {
        return Err(ParamError::Short(d.len()));
    }
    let le32 = |i: usize| u32::from_le_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
    let (x, y) = (le32(0), le32(4));
    if x != y {
        return Err(ParamError::ResolutionsDiffer { x, y });
    }
    let dpi = u16::try_from(x).map_err(|_| ParamError::Resolution(x))?;
    if d[26] != 0 {
        return Err(ParamError::OptionUnit(d[26]));
    }
    let mode = mode_of(d[24], d[25])?;
    let job = ScanJob {
        resolution_dpi: dpi,
        mode,
        x_px: le32(8),
        y_px: le32(12),
        width_px: le32(16),
        height_px: le32(20),
        source: ScanSource::Flatbed,
        pages: 1,
    };
    Ok((job, u32::from(d[28])))
}

/// Length of the parameter block of classic command `ESC letter`, if it takes one.
pub fn param_len(letter: u8) -> Option<usize> {
    match letter {
        b'C' | b'D' | b'B' | b'L' | b'Z' | b'M' | b'Q' | b'g' | b'K' | b'd' | b's' | b't'
        | b'N' | b'e' => Some(1),
        b'R' => Some(4),
        b'A' => Some(8),
        b'm' => Some(9),
        b'z' => Some(257),
        _ => None,
    }
}

/// `ESC I`, `FS W`, or `ESC 0x05` for a byte that is not a printable letter.
pub fn command_name(fs: bool, letter: u8) -> String {
    let lead = if fs { "FS" } else { "ESC" };
    if letter.is_ascii_graphic() {
        format!("{lead} {}", letter as char)
    } else {
        format!("{lead} 0x{letter:02x}")
    }
}

/// The `FS G` reply: STX, status 0, the bytes of a full block, the number of full blocks and
/// the bytes of the last, short block (0 if none), for a scan of `height` lines of
/// `bytes_per_line` in blocks of `lines`.
pub fn start_reply(lines: u32, height: u32, bytes_per_line: u64) -> Vec<u8> {
    let full = height / lines;
    let last = u64::from(height % lines) * bytes_per_line;
    let block = u64::from(lines) * bytes_per_line;
    let mut r = vec![STX, 0];
    r.extend_from_slice(&le32(block).to_le_bytes());
    r.extend_from_slice(&full.to_le_bytes());
    r.extend_from_slice(&le32(last).to_le_bytes());
    r
}

/// The `FS G` reply of a refused start: STX, fatal error, no layout.
pub fn start_refused_reply() -> Vec<u8> {
    let mut r = vec![STX, BLOCK_FATAL_ERROR];
    r.extend_from_slice(&[0; 12]);
    r
}

/// The `ESC I` payload: level, resolutions, area at the highest resolution.
pub fn identity(optics: &Optics, level: EsciLevel) -> Vec<u8> {
    let mut p = level_bytes(level).to_vec();
    let mut res = optics.resolutions.clone();
    res.sort_unstable();
    res.dedup();
    for r in res {
        p.push(b'R');
        p.extend_from_slice(&r.to_le_bytes());
    }
    let (x, y) = area_at_max(optics);
    p.push(b'A');
    p.extend_from_slice(&x.to_le_bytes());
    p.extend_from_slice(&y.to_le_bytes());
    p
}

/// The `ESC f` payload: 42 bytes of extended status.
pub fn extended_status(optics: &Optics, model: &str) -> Vec<u8> {
    let mut p = vec![0u8; 42];
    p[0] = 0x40; // flatbed
    let (x, y) = area_at_max(optics);
    p[12..14].copy_from_slice(&x.to_le_bytes());
    p[14..16].copy_from_slice(&y.to_le_bytes());
    p[26..42].copy_from_slice(&model_field(model));
    p
}

/// The `FS I` payload: 80 bytes of extended identity, no header.
pub fn extended_identity(optics: &Optics, level: EsciLevel, model: &str) -> Vec<u8> {
    let o = optics;
    let mut p = vec![0u8; 80];
    p[0..2].copy_from_slice(&level_bytes(level));
    let min = o.resolutions.iter().copied().min().unwrap_or(1);
    p[4..8].copy_from_slice(&u32::from(o.optical_dpi).to_le_bytes());
    p[8..12].copy_from_slice(&u32::from(min).to_le_bytes());
    p[12..16].copy_from_slice(&u32::from(max_dpi(o)).to_le_bytes());
    p[16..20].copy_from_slice(&o.max_width_px.to_le_bytes());
    p[20..24].copy_from_slice(&o.max_width_px.to_le_bytes());
    p[24..28].copy_from_slice(&o.max_height_px.to_le_bytes());
    p[46..62].copy_from_slice(&model_field(model));
    p[62..66].copy_from_slice(b"1.00");
    p[66] = 8;
    p[67] = 8;
    p
}

fn max_dpi(optics: &Optics) -> u16 {
    optics.resolutions.iter().copied().max().unwrap_or(1)
}

/// The flatbed at the highest resolution, in pixels.
fn area_at_max(optics: &Optics) -> (u16, u16) {
    let scale = |px: u32| {
        let v = u64::from(px) * u64::from(max_dpi(optics)) / u64::from(optics.optical_dpi);
        u16::try_from(v).unwrap_or(u16::MAX)
    };
    (scale(optics.max_width_px), scale(optics.max_height_px))
}

fn level_bytes(level: EsciLevel) -> [u8; 2] {
    match level {
        EsciLevel::B7 => *b"B7",
        EsciLevel::B6 => *b"B6",
    }
}

/// The model name, space-padded to 16 bytes.
fn model_field(model: &str) -> [u8; 16] {
    let mut m = [b' '; 16];
    let name = model.as_bytes();
    m[..name.len().min(16)].copy_from_slice(&name[..name.len().min(16)]);
    m
}

fn le32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}
