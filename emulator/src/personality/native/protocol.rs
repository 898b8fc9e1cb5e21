//! The native device protocol: request codes, payload layouts, status and event codes.
//!
//! `emulator/PROTOCOL.md` is the prose version of this module, written so that a driver can be
//! built from it alone. All multi-byte fields are little-endian, as in USB descriptors.

use crate::engine::{ScanJob, ScanMode, ScanSource};

/// bInterfaceClass of the scanner interface: vendor specific.
pub const INTERFACE_CLASS: u8 = 0xFF;
/// bInterfaceSubClass: 0x53 ('S', scanner).
pub const INTERFACE_SUBCLASS: u8 = 0x53;
/// bInterfaceProtocol: native protocol version 1.
pub const INTERFACE_PROTOCOL: u8 = 0x01;
/// Version reported by GET_CAPABILITIES (BCD 1.00).
pub const PROTOCOL_VERSION: u16 = 0x0100;

/// Bulk IN endpoint: image data.
pub const EP_DATA_IN: u8 = 0x81;
/// Bulk OUT endpoint: reserved for commands; the device accepts and discards data on it.
pub const EP_DATA_OUT: u8 = 0x02;
/// Interrupt IN endpoint: events.
pub const EP_EVENTS: u8 = 0x83;

/// Vendor request (IN): the device's capabilities, [`Capabilities`].
pub const REQ_GET_CAPABILITIES: u8 = 0x01;
/// Vendor request (OUT): scan parameters, [`ScanParams`].
pub const REQ_SET_PARAMS: u8 = 0x02;
/// Vendor request (IN): the accepted parameters and derived sizes, [`ParamsReport`].
pub const REQ_GET_PARAMS: u8 = 0x03;
/// Vendor request (OUT, no data): start scanning with the current parameters.
pub const REQ_START_SCAN: u8 = 0x04;
/// Vendor request (IN): progress of the current scan, [`ScanStatus`].
pub const REQ_GET_SCAN_STATUS: u8 = 0x05;
/// Still Image class Cancel Request (OUT; 6 optional bytes: 0x4001, transaction id).
pub const REQ_CANCEL: u8 = 0x64;
/// Still Image class Device Reset Request (OUT, no data).
pub const REQ_DEVICE_RESET: u8 = 0x66;
/// Still Image class Get Device Status (IN), [`DeviceStatus`].
pub const REQ_GET_DEVICE_STATUS: u8 = 0x67;

/// The name of a control request for people (`GET_DEVICE_STATUS`, `SET_FEATURE`): a standard
/// request (`bmRequestType` type bits 0) by USB 2.0 table 9-4, any other by this protocol's
/// table above; `None` for a request neither knows.
pub fn request_name(request_type: u8, request: u8) -> Option<&'static str> {
    use crate::usb::Request as Std;
    if request_type & 0x60 == 0 {
        return match request {
            Std::GET_STATUS => Some("GET_STATUS"),
            Std::CLEAR_FEATURE => Some("CLEAR_FEATURE"),
            Std::SET_FEATURE => Some("SET_FEATURE"),
            Std::SET_ADDRESS => Some("SET_ADDRESS"),
            Std::GET_DESCRIPTOR => Some("GET_DESCRIPTOR"),
            Std::SET_CONFIGURATION => Some("SET_CONFIGURATION"),
            _ => None,
        };
    }
    Some(match request {
        REQ_GET_CAPABILITIES => "GET_CAPABILITIES",
        REQ_SET_PARAMS => "SET_PARAMS",
        REQ_GET_PARAMS => "GET_PARAMS",
        REQ_START_SCAN => "START_SCAN",
        REQ_GET_SCAN_STATUS => "GET_SCAN_STATUS",
        REQ_CANCEL => "CANCEL",
        REQ_DEVICE_RESET => "DEVICE_RESET",
        REQ_GET_DEVICE_STATUS => "GET_DEVICE_STATUS",
        _ => return None,
    })
}

/// Get Device Status code: ready, nothing pending.
pub const STATUS_OK: u16 = 0x2001;
/// Get Device Status code: a cancel is in progress (motor stopping, buffers flushing).
pub const STATUS_BUSY: u16 = 0x2019;
/// Get Device Status code: the device cancelled the scan; the listed endpoints are halted.
pub const STATUS_TRANSACTION_CANCELLED: u16 = 0x201F;
/// The CancellationCode in a Cancel Request's data stage.
pub const CANCEL_CODE: u16 = 0x4001;

/// Length of [`Capabilities`] on the wire.
pub const CAPABILITIES_LEN: usize = 32;
/// Length of [`ScanParams`] on the wire.
pub const PARAMS_LEN: usize = 24;
/// Length of [`ParamsReport`] on the wire.
pub const PARAMS_REPORT_LEN: usize = 40;
/// Length of [`ScanStatus`] on the wire.
pub const SCAN_STATUS_LEN: usize = 28;
/// Length of one event on the interrupt endpoint.
pub const EVENT_LEN: usize = 8;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A payload that was too short or held an unknown code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what}: {why}")]
pub struct DecodeError {
    /// Which payload.
    pub what: &'static str,
    /// What was wrong with it.
    pub why: String,
}

fn need(what: &'static str, b: &[u8], len: usize) -> Result<(), DecodeError> {
    if b.len() < len {
        return Err(DecodeError {
            what,
            why: format!("{} bytes, expected {len}", b.len()),
        });
    }
    Ok(())
}

/// Wire code of a scan mode.
pub const fn mode_code(mode: ScanMode) -> u8 {
    match mode {
        ScanMode::Lineart => 0,
        ScanMode::Gray8 => 1,
        ScanMode::Gray16 => 2,
        ScanMode::Color24 => 3,
        ScanMode::Color48 => 4,
    }
}

/// The scan mode for a wire code.
pub fn mode_from_code(code: u8) -> Option<ScanMode> {
    Some(match code {
        0 => ScanMode::Lineart,
        1 => ScanMode::Gray8,
        2 => ScanMode::Gray16,
        3 => ScanMode::Color24,
        4 => ScanMode::Color48,
        _ => return None,
    })
}

/// GET_CAPABILITIES reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Protocol version, BCD.
    pub version: u16,
    /// Optical resolution in dots per inch.
    pub optical_dpi: u16,
    /// Widest scan in pixels at the optical resolution.
    pub max_width_px: u32,
    /// Longest scan in pixels at the optical resolution.
    pub max_height_px: u32,
    /// Bit `mode_code(m)` set for each supported mode.
    pub modes: u8,
    /// Bit 0: the device has an automatic document feeder.
    pub flags: u8,
    /// Lines per band.
    pub band_lines: u16,
    /// Bands the device buffers before its motor pauses.
    pub buffer_bands: u16,
    /// Supported resolutions (up to 6 on the wire; zeros are unused slots).
    pub resolutions: Vec<u16>,
}

impl Capabilities {
    /// Flag bit: an automatic document feeder is present.
    pub const FLAG_ADF: u8 = 0x01;

    /// Wire form.
    pub fn encode(&self) -> [u8; CAPABILITIES_LEN] {
        let mut b = [0u8; CAPABILITIES_LEN];
        b[0..2].copy_from_slice(&self.version.to_le_bytes());
        b[2..4].copy_from_slice(&self.optical_dpi.to_le_bytes());
        b[4..8].copy_from_slice(&self.max_width_px.to_le_bytes());
        b[8..12].copy_from_slice(&self.max_height_px.to_le_bytes());
        b[12] = self.modes;
        b[13] = self.flags;
        b[14..16].copy_from_slice(&self.band_lines.to_le_bytes());
        b[16..18].copy_from_slice(&self.buffer_bands.to_le_bytes());
        for (i, r) in self.resolutions.iter().take(6).enumerate() {
            b[20 + 2 * i..22 + 2 * i].copy_from_slice(&r.to_le_bytes());
        }
        b[18..20].copy_from_slice(&(self.resolutions.len().min(6) as u16).to_le_bytes());
        b
    }

    /// Parses the wire form.
    pub fn decode(b: &[u8]) -> Result<Capabilities, DecodeError> {
        need("capabilities", b, CAPABILITIES_LEN)?;
        let n = usize::from(u16_at(b, 18)).min(6);
        Ok(Capabilities {
            version: u16_at(b, 0),
            optical_dpi: u16_at(b, 2),
            max_width_px: u32_at(b, 4),
            max_height_px: u32_at(b, 8),
            modes: b[12],
            flags: b[13],
            band_lines: u16_at(b, 14),
            buffer_bands: u16_at(b, 16),
            resolutions: (0..n).map(|i| u16_at(b, 20 + 2 * i)).collect(),
        })
    }
}

/// SET_PARAMS payload: what to scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanParams {
    /// The job, in pixels at its resolution.
    pub job: ScanJob,
}

impl ScanParams {
    /// Wire form.
    pub fn encode(&self) -> [u8; PARAMS_LEN] {
        let j = &self.job;
        let mut b = [0u8; PARAMS_LEN];
        b[0..2].copy_from_slice(&j.resolution_dpi.to_le_bytes());
        b[2] = mode_code(j.mode);
        b[3] = match j.source {
            ScanSource::Flatbed => 0,
            ScanSource::Adf => 1,
        };
        b[4..8].copy_from_slice(&j.x_px.to_le_bytes());
        b[8..12].copy_from_slice(&j.y_px.to_le_bytes());
        b[12..16].copy_from_slice(&j.width_px.to_le_bytes());
        b[16..20].copy_from_slice(&j.height_px.to_le_bytes());
        b[20..22].copy_from_slice(&j.pages.to_le_bytes());
        b
    }

    /// Parses the wire form.
    pub fn decode(b: &[u8]) -> Result<ScanParams, DecodeError> {
        need("scan parameters", b, PARAMS_LEN)?;
        let mode = mode_from_code(b[2]).ok_or_else(|| DecodeError {
            what: "scan parameters",
            why: format!("unknown mode code {}", b[2]),
        })?;
        let source = match b[3] {
            0 => ScanSource::Flatbed,
            1 => ScanSource::Adf,
            other => {
                return Err(DecodeError {
                    what: "scan parameters",
                    why: format!("unknown source code {other}"),
                })
            }
        };
        Ok(ScanParams {
            job: ScanJob {
                resolution_dpi: u16_at(b, 0),
                mode,
                source,
                x_px: u32_at(b, 4),
                y_px: u32_at(b, 8),
                width_px: u32_at(b, 12),
                height_px: u32_at(b, 16),
                pages: u16_at(b, 20),
            },
        })
    }
}

/// GET_PARAMS reply: the accepted parameters and the sizes a driver needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamsReport {
    /// The accepted parameters.
    pub params: ScanParams,
    /// Bytes in one scan line.
    pub bytes_per_line: u32,
    /// Lines in one page.
    pub lines_per_page: u32,
    /// Lines in a full band (the last band of a page may have fewer).
    pub band_lines: u32,
    /// Bytes in a full band.
    pub band_bytes: u32,
    /// Bands in one page.
    pub bands_per_page: u32,
}

impl ParamsReport {
    /// Wire form.
    pub fn encode(&self) -> [u8; PARAMS_REPORT_LEN] {
        let mut b = [0u8; PARAMS_REPORT_LEN];
        b[..PARAMS_LEN].copy_from_slice(&self.params.encode());
        b[24..28].copy_from_slice(&self.bytes_per_line.to_le_bytes());
        b[28..32].copy_from_slice(&self.lines_per_page.to_le_bytes());
        b[32..34].copy_from_slice(&(self.band_lines as u16).to_le_bytes());
        b[34..36].copy_from_slice(&(self.bands_per_page.min(0xFFFF) as u16).to_le_bytes());
        b[36..40].copy_from_slice(&self.band_bytes.to_le_bytes());
        b
    }

    /// Parses the wire form.
    pub fn decode(b: &[u8]) -> Result<ParamsReport, DecodeError> {
        need("parameter report", b, PARAMS_REPORT_LEN)?;
        Ok(ParamsReport {
            params: ScanParams::decode(&b[..PARAMS_LEN])?,
            bytes_per_line: u32_at(b, 24),
            lines_per_page: u32_at(b, 28),
            band_lines: u32::from(u16_at(b, 32)),
            bands_per_page: u32::from(u16_at(b, 34)),
            band_bytes: u32_at(b, 36),
        })
    }
}

/// The device's state as GET_SCAN_STATUS reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DeviceState {
    /// No scan; ready for SET_PARAMS and START_SCAN.
    Idle = 0,
    /// Lamp warming up after START_SCAN.
    WarmingUp = 1,
    /// Producing bands.
    Scanning = 2,
    /// ADF: feeding the next sheet.
    FeedingPage = 3,
    /// Host cancel accepted; the motor is stopping. Device status answers Busy.
    Cancelling = 4,
    /// The device cancelled the scan itself; bulk endpoints halted until cleared.
    Halted = 5,
    /// All bands produced; the host is still reading the last ones.
    Draining = 6,
}

impl DeviceState {
    /// The state for a wire code.
    pub fn from_code(code: u8) -> Option<DeviceState> {
        Some(match code {
            0 => DeviceState::Idle,
            1 => DeviceState::WarmingUp,
            2 => DeviceState::Scanning,
            3 => DeviceState::FeedingPage,
            4 => DeviceState::Cancelling,
            5 => DeviceState::Halted,
            6 => DeviceState::Draining,
            _ => return None,
        })
    }

    /// Lowercase name used in traces.
    pub const fn name(self) -> &'static str {
        match self {
            DeviceState::Idle => "idle",
            DeviceState::WarmingUp => "warming-up",
            DeviceState::Scanning => "scanning",
            DeviceState::FeedingPage => "feeding-page",
            DeviceState::Cancelling => "cancelling",
            DeviceState::Halted => "halted",
            DeviceState::Draining => "draining",
        }
    }
}

/// Why the last scan ended early, as GET_SCAN_STATUS reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ScanError {
    /// No error.
    None = 0,
    /// The host cancelled (Cancel Request).
    HostCancel = 1,
    /// The Cancel button on the device was pressed.
    CancelButton = 2,
    /// Paper jam.
    PaperJam = 3,
    /// Cover (or ADF lid) open.
    CoverOpen = 4,
    /// The device stalled its data endpoint.
    DataStall = 5,
    /// The device ended a band early (a short band).
    ShortBand = 6,
    /// The ADF ran out of paper before the requested pages.
    FeederEmpty = 7,
    /// SET_PARAMS or START_SCAN was refused (bad parameters, or not idle).
    BadRequest = 8,
    /// The device was reset by Device Reset.
    Reset = 9,
    /// The feeder pulled more than one sheet at once.
    MultiFeed = 10,
}

impl ScanError {
    /// The error for a wire code.
    pub fn from_code(code: u8) -> Option<ScanError> {
        Some(match code {
            0 => ScanError::None,
            1 => ScanError::HostCancel,
            2 => ScanError::CancelButton,
            3 => ScanError::PaperJam,
            4 => ScanError::CoverOpen,
            5 => ScanError::DataStall,
            6 => ScanError::ShortBand,
            7 => ScanError::FeederEmpty,
            8 => ScanError::BadRequest,
            9 => ScanError::Reset,
            10 => ScanError::MultiFeed,
            _ => return None,
        })
    }

    /// Lowercase name used in traces.
    pub const fn name(self) -> &'static str {
        match self {
            ScanError::None => "none",
            ScanError::HostCancel => "host-cancel",
            ScanError::CancelButton => "cancel-button",
            ScanError::PaperJam => "paper-jam",
            ScanError::CoverOpen => "cover-open",
            ScanError::DataStall => "data-stall",
            ScanError::ShortBand => "short-band",
            ScanError::FeederEmpty => "feeder-empty",
            ScanError::BadRequest => "bad-request",
            ScanError::Reset => "reset",
            ScanError::MultiFeed => "multi-feed",
        }
    }
}

/// GET_SCAN_STATUS reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanStatus {
    /// Current state.
    pub state: DeviceState,
    /// Why the last scan ended early, if it did.
    pub error: ScanError,
    /// Page being scanned (0-based).
    pub page: u16,
    /// Lines produced in this job.
    pub lines_produced: u32,
    /// Bands ready in the device's buffer, not yet sent.
    pub bands_ready: u32,
    /// Bands sent completely in this job.
    pub bands_sent: u32,
    /// Pages completed in this job.
    pub pages_done: u16,
    /// Counter of START_SCAN requests accepted since power-on.
    pub job_id: u32,
}

impl ScanStatus {
    /// Wire form.
    pub fn encode(&self) -> [u8; SCAN_STATUS_LEN] {
        let mut b = [0u8; SCAN_STATUS_LEN];
        b[0] = self.state as u8;
        b[1] = self.error as u8;
        b[2..4].copy_from_slice(&self.page.to_le_bytes());
        b[4..8].copy_from_slice(&self.lines_produced.to_le_bytes());
        b[8..12].copy_from_slice(&self.bands_ready.to_le_bytes());
        b[12..16].copy_from_slice(&self.bands_sent.to_le_bytes());
        b[16..18].copy_from_slice(&self.pages_done.to_le_bytes());
        b[20..24].copy_from_slice(&self.job_id.to_le_bytes());
        b
    }

    /// Parses the wire form.
    pub fn decode(b: &[u8]) -> Result<ScanStatus, DecodeError> {
        need("scan status", b, SCAN_STATUS_LEN)?;
        let bad = |why: String| DecodeError {
            what: "scan status",
            why,
        };
        Ok(ScanStatus {
            state: DeviceState::from_code(b[0]).ok_or_else(|| bad(format!("state {}", b[0])))?,
            error: ScanError::from_code(b[1]).ok_or_else(|| bad(format!("error {}", b[1])))?,
            page: u16_at(b, 2),
            lines_produced: u32_at(b, 4),
            bands_ready: u32_at(b, 8),
            bands_sent: u32_at(b, 12),
            pages_done: u16_at(b, 16),
            job_id: u32_at(b, 20),
        })
    }
}

/// Get Device Status reply (Still Image class layout: wLength, code, halted endpoints).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceStatus {
    /// [`STATUS_OK`], [`STATUS_BUSY`] or [`STATUS_TRANSACTION_CANCELLED`].
    pub code: u16,
    /// Addresses of the bulk endpoints still halted.
    pub halted: Vec<u8>,
}

impl DeviceStatus {
    /// Wire form: `u16 wLength, u16 code`, then one `u16` per halted endpoint address.
    pub fn encode(&self) -> Vec<u8> {
        let len = 4 + 2 * self.halted.len();
        let mut b = Vec::with_capacity(len);
        b.extend_from_slice(&(len as u16).to_le_bytes());
        b.extend_from_slice(&self.code.to_le_bytes());
        for ep in &self.halted {
            b.extend_from_slice(&u16::from(*ep).to_le_bytes());
        }
        b
    }

    /// Parses the wire form.
    pub fn decode(b: &[u8]) -> Result<DeviceStatus, DecodeError> {
        need("device status", b, 4)?;
        let len = usize::from(u16_at(b, 0)).min(b.len());
        if len < 4 || len % 2 != 0 {
            return Err(DecodeError {
                what: "device status",
                why: format!("wLength {len}"),
            });
        }
        Ok(DeviceStatus {
            code: u16_at(b, 2),
            halted: (4..len).step_by(2).map(|at| b[at]).collect(),
        })
    }
}

/// Event codes on the interrupt endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EventCode {
    /// START_SCAN accepted; `value` = job id.
    ScanStarted = 1,
    /// A band is ready on the bulk IN endpoint; `value` = band sequence number in the job.
    BandReady = 2,
    /// The last band of `page` has been produced.
    PageEnd = 3,
    /// All pages produced; `value` = pages.
    ScanComplete = 4,
    /// The scan was cancelled; `arg` = a [`ScanError`] code saying by whom.
    Cancelled = 5,
    /// A fault stopped the scan; `arg` = a [`ScanError`] code.
    Fault = 6,
    /// The ADF ran out of paper; `value` = pages scanned.
    FeederEmpty = 7,
    /// The motor stopped after a cancel; `value` = bands discarded.
    MotorStopped = 8,
    /// The ADF started feeding `page`.
    PageFeed = 9,
}

/// One event from the interrupt endpoint: `u8 code, u8 arg, u16 page, u32 value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub code: EventCode,
    /// Code-specific byte.
    pub arg: u8,
    /// Page it concerns.
    pub page: u16,
    /// Code-specific value.
    pub value: u32,
}

impl Event {
    /// Wire form.
    pub fn encode(&self) -> [u8; EVENT_LEN] {
        let mut b = [0u8; EVENT_LEN];
        b[0] = self.code as u8;
        b[1] = self.arg;
        b[2..4].copy_from_slice(&self.page.to_le_bytes());
        b[4..8].copy_from_slice(&self.value.to_le_bytes());
        b
    }

    /// Parses the wire form.
    pub fn decode(b: &[u8]) -> Result<Event, DecodeError> {
        need("event", b, EVENT_LEN)?;
        let code = match b[0] {
            1 => EventCode::ScanStarted,
            2 => EventCode::BandReady,
            3 => EventCode::PageEnd,
            4 => EventCode::ScanComplete,
            5 => EventCode::Cancelled,
            6 => EventCode::Fault,
            7 => EventCode::FeederEmpty,
            8 => EventCode::MotorStopped,
            9 => EventCode::PageFeed,
            other => {
                return Err(DecodeError {
                    what: "event",
                    why: format!("unknown code {other}"),
                })
            }
        };
        Ok(Event {
            code,
            arg: b[1],
            page: u16_at(b, 2),
            value: u32_at(b, 4),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_names_by_type() {
        assert_eq!(
            request_name(0xc1, REQ_GET_DEVICE_STATUS),
            Some("GET_DEVICE_STATUS")
        );
        assert_eq!(request_name(0x21, REQ_CANCEL), Some("CANCEL"));
        assert_eq!(request_name(0x02, 1), Some("CLEAR_FEATURE"));
        assert_eq!(request_name(0x00, 5), Some("SET_ADDRESS"));
        // The same code means another request in another type.
        assert_eq!(
            request_name(0x80, REQ_GET_CAPABILITIES),
            Some("CLEAR_FEATURE")
        );
        assert_eq!(request_name(0x40, 0x42), None);
        assert_eq!(request_name(0x80, 12), None);
    }

    #[test]
    fn payloads_round_trip() {
        let caps = Capabilities {
            version: PROTOCOL_VERSION,
            optical_dpi: 600,
            max_width_px: 5100,
            max_height_px: 7020,
            modes: 0x1f,
            flags: Capabilities::FLAG_ADF,
            band_lines: 64,
            buffer_bands: 4,
            resolutions: vec![75, 150, 300, 600],
        };
        assert_eq!(Capabilities::decode(&caps.encode()).unwrap(), caps);
        let status = DeviceStatus {
            code: STATUS_TRANSACTION_CANCELLED,
            halted: vec![EP_DATA_IN, EP_DATA_OUT],
        };
        let wire = status.encode();
        assert_eq!(wire, vec![8, 0, 0x1f, 0x20, 0x81, 0, 0x02, 0]);
        assert_eq!(DeviceStatus::decode(&wire).unwrap(), status);
        let ev = Event {
            code: EventCode::MotorStopped,
            arg: 0,
            page: 1,
            value: 3,
        };
        assert_eq!(Event::decode(&ev.encode()).unwrap(), ev);
    }

    #[test]
    fn short_payloads_are_errors_not_panics() {
        assert!(Capabilities::decode(&[0; 5]).is_err());
        assert!(ScanParams::decode(&[]).is_err());
        assert!(DeviceStatus::decode(&[2, 0, 1, 0x20]).is_err());
        assert!(Event::decode(&[99, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
