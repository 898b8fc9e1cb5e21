//! The `usb` actor's facts, typed: how a transfer ended, what a control reply said, which event
//! the interrupt endpoint carried.
//!
//! The trace keeps what it renders and nothing more: a transfer's outcome without its byte
//! count, a Get Scan Status reply without the counters the text leaves out. So each value here
//! turns into its text ([`fmt::Display`]) and back ([`ControlReply::parse`], ...) without loss,
//! which keeps trace files written before these types readable, and the JSON-lines format
//! unchanged.

use std::fmt;

use scanemu::host::TransferError;
use scanemu::personality::native::protocol::{
    self, DecodeError, DeviceState, DeviceStatus, Event as InterruptEvent, EventCode, ScanError,
    ScanStatus,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The direction of a control transfer's data stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Device to host.
    In,
    /// Host to device.
    Out,
}

impl Direction {
    /// `in` or `out`.
    pub const fn name(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

macro_rules! outcomes {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)*) => {
        /// How a USB operation ended, as the trace keeps it: the kind of scanemu's
        /// [`TransferError`], without its byte count or words.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum TransferOutcome {
            $($(#[doc = $doc])* $variant,)*
        }

        impl TransferOutcome {
            /// Every outcome, in declaration order.
            pub const ALL: &'static [TransferOutcome] = &[$(TransferOutcome::$variant,)*];

            /// The name traces spell it with (`no-device`).
            pub const fn name(self) -> &'static str {
                match self {
                    $(TransferOutcome::$variant => $name,)*
                }
            }
        }
    };
}

outcomes! {
    /// It completed.
    Ok = "ok",
    /// The endpoint answered STALL.
    Stall = "stall",
    /// Its timeout passed.
    Timeout = "timeout",
    /// It was aborted (`abort_endpoint`, a reset).
    Cancelled = "cancelled",
    /// The device is gone.
    NoDevice = "no-device",
    /// The device sent more than the buffer holds.
    Overflow = "overflow",
    /// Another transport failure.
    IoError = "io-error",
}

impl TransferOutcome {
    /// The outcome of a host operation.
    pub fn of(result: &Result<(), TransferError>) -> TransferOutcome {
        match result {
            Ok(()) => TransferOutcome::Ok,
            Err(TransferError::Stall) => TransferOutcome::Stall,
            Err(TransferError::Timeout { .. }) => TransferOutcome::Timeout,
            Err(TransferError::Cancelled { .. }) => TransferOutcome::Cancelled,
            Err(TransferError::NoDevice) => TransferOutcome::NoDevice,
            Err(TransferError::Overflow) => TransferOutcome::Overflow,
            Err(TransferError::Io(_)) => TransferOutcome::IoError,
        }
    }

    /// The outcome named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<TransferOutcome> {
        TransferOutcome::ALL
            .iter()
            .copied()
            .find(|o| o.name() == name)
    }

    /// True for [`TransferOutcome::Ok`].
    pub const fn is_ok(self) -> bool {
        matches!(self, TransferOutcome::Ok)
    }
}

impl fmt::Display for TransferOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for TransferOutcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for TransferOutcome {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TransferOutcome, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        TransferOutcome::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown transfer result `{name}`")))
    }
}

/// Symbolic name of a control request: the standard request's name, the native protocol's
/// vendor request name, `STANDARD` or `0xNN` for others.
pub fn request_name(request_type: u8, request: u8) -> String {
    match protocol::request_name(request_type, request) {
        Some(name) => name.into(),
        None if request_type & 0x60 == 0 => "STANDARD".into(),
        None => format!("0x{request:02X}"),
    }
}

/// The fields of a Get Scan Status reply the trace keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ScanStatusFields {
    /// The device's state.
    pub state: DeviceState,
    /// Why the last scan ended early.
    pub error: ScanError,
    /// Bands sent completely in this job.
    pub bands_sent: u32,
}

impl From<&ScanStatus> for ScanStatusFields {
    fn from(st: &ScanStatus) -> ScanStatusFields {
        ScanStatusFields {
            state: st.state,
            error: st.error,
            bands_sent: st.bands_sent,
        }
    }
}

/// A control transfer's reply, decoded (the native protocol's status requests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlReply {
    /// Nothing decoded: an OUT transfer, a failed one, or a request without a decoder.
    None,
    /// Get Device Status: the status code and the halted endpoints.
    DeviceStatus(DeviceStatus),
    /// Get Scan Status.
    ScanStatus(ScanStatusFields),
    /// A status reply the decoder refused.
    Malformed(DecodeError),
}

impl ControlReply {
    /// The reply of a control IN request `request` that moved `data`.
    pub fn decode(request: u8, data: &[u8]) -> ControlReply {
        let decoded = match request {
            protocol::REQ_GET_DEVICE_STATUS => DeviceStatus::decode(data).map(Self::DeviceStatus),
            protocol::REQ_GET_SCAN_STATUS => {
                ScanStatus::decode(data).map(|st| Self::ScanStatus((&st).into()))
            }
            _ => return ControlReply::None,
        };
        decoded.unwrap_or_else(ControlReply::Malformed)
    }

    /// The Get Device Status reply, if this is one.
    pub fn device_status(&self) -> Option<&DeviceStatus> {
        match self {
            ControlReply::DeviceStatus(st) => Some(st),
            _ => None,
        }
    }

    /// Reads the text [`fmt::Display`] gives for a reply to `request`.
    pub fn parse(request: u8, text: &str) -> Option<ControlReply> {
        if text.is_empty() {
            return Some(ControlReply::None);
        }
        if let Some(e) = parse_decode_error(text) {
            return Some(ControlReply::Malformed(e));
        }
        match request {
            protocol::REQ_GET_DEVICE_STATUS => parse_device_status(text).map(Self::DeviceStatus),
            protocol::REQ_GET_SCAN_STATUS => parse_scan_status(text).map(Self::ScanStatus),
            _ => None,
        }
    }
}

/// The word traces add to a device status code.
fn status_word(code: u16) -> &'static str {
    match code {
        protocol::STATUS_OK => "ok",
        protocol::STATUS_BUSY => "busy",
        protocol::STATUS_TRANSACTION_CANCELLED => "cancelled",
        _ => "unknown",
    }
}

impl fmt::Display for ControlReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlReply::None => Ok(()),
            ControlReply::DeviceStatus(st) => {
                write!(f, "0x{:04x} {}", st.code, status_word(st.code))?;
                for (i, ep) in st.halted.iter().enumerate() {
                    f.write_str(if i == 0 { " halted=" } else { "," })?;
                    write!(f, "0x{ep:02x}")?;
                }
                Ok(())
            }
            ControlReply::ScanStatus(st) => write!(
                f,
                "state={} error={} bands_sent={}",
                st.state.name(),
                st.error.name(),
                st.bands_sent
            ),
            ControlReply::Malformed(e) => write!(f, "{e}"),
        }
    }
}

/// `0x2019 busy halted=0x81,0x02`.
fn parse_device_status(text: &str) -> Option<DeviceStatus> {
    let mut words = text.split(' ');
    let code = u16::from_str_radix(words.next()?.strip_prefix("0x")?, 16).ok()?;
    let word = words.next()?;
    if word != status_word(code) {
        return None;
    }
    let halted = match words.next() {
        None => Vec::new(),
        Some(list) => list
            .strip_prefix("halted=")?
            .split(',')
            .map(|ep| u8::from_str_radix(ep.strip_prefix("0x")?, 16).ok())
            .collect::<Option<Vec<u8>>>()?,
    };
    if words.next().is_some() {
        return None;
    }
    Some(DeviceStatus { code, halted })
}

/// `state=scanning error=none bands_sent=3`.
fn parse_scan_status(text: &str) -> Option<ScanStatusFields> {
    let mut words = text.split(' ');
    let mut field = |key: &str| words.next()?.strip_prefix(key)?.strip_prefix('=');
    let state = field("state")?;
    let error = field("error")?;
    let bands_sent = field("bands_sent")?.parse().ok()?;
    if words.next().is_some() {
        return None;
    }
    Some(ScanStatusFields {
        state: (0..=u8::MAX)
            .filter_map(DeviceState::from_code)
            .find(|s| s.name() == state)?,
        error: (0..=u8::MAX)
            .filter_map(ScanError::from_code)
            .find(|e| e.name() == error)?,
        bands_sent,
    })
}

/// `malformed device status: 2 bytes, expected 4` (the decoders' words).
fn parse_decode_error(text: &str) -> Option<DecodeError> {
    let rest = text.strip_prefix("malformed ")?;
    ["device status", "scan status"]
        .into_iter()
        .find_map(|what| {
            let why = rest.strip_prefix(what)?.strip_prefix(": ")?;
            Some(DecodeError {
                what,
                why: why.to_string(),
            })
        })
}

/// Every event code of the interrupt endpoint.
const EVENT_CODES: [EventCode; 9] = [
    EventCode::ScanStarted,
    EventCode::BandReady,
    EventCode::PageEnd,
    EventCode::ScanComplete,
    EventCode::Cancelled,
    EventCode::Fault,
    EventCode::FeederEmpty,
    EventCode::MotorStopped,
    EventCode::PageFeed,
];

/// An interrupt event as traces show it: `BandReady arg=0 page=0 value=3`.
pub(crate) fn event_text(e: &InterruptEvent) -> String {
    format!(
        "{:?} arg={} page={} value={}",
        e.code, e.arg, e.page, e.value
    )
}

/// Reads [`event_text`]'s text.
pub(crate) fn parse_event(text: &str) -> Option<InterruptEvent> {
    let mut words = text.split(' ');
    let name = words.next()?;
    let code = EVENT_CODES.into_iter().find(|c| format!("{c:?}") == name)?;
    let mut field = |key: &str| words.next()?.strip_prefix(key)?.strip_prefix('=');
    let arg = field("arg")?.parse().ok()?;
    let page = field("page")?.parse().ok()?;
    let value = field("value")?.parse().ok()?;
    if words.next().is_some() {
        return None;
    }
    Some(InterruptEvent {
        code,
        arg,
        page,
        value,
    })
}

/// A control event as JSON writes it: the request's name added, the reply as text.
#[derive(Serialize, Deserialize)]
struct ControlWire {
    dir: Direction,
    request_type: u8,
    request: u8,
    name: String,
    value: u16,
    length: u32,
    result: TransferOutcome,
    reply: String,
}

/// The fields of [`super::Kind::Control`], in order.
type ControlFields = (Direction, u8, u8, u16, u32, TransferOutcome, ControlReply);

#[allow(clippy::too_many_arguments)] // serde hands a struct variant's fields one by one
pub(super) fn ser_control<S: Serializer>(
    dir: &Direction,
    request_type: &u8,
    request: &u8,
    value: &u16,
    length: &u32,
    result: &TransferOutcome,
    reply: &ControlReply,
    s: S,
) -> Result<S::Ok, S::Error> {
    ControlWire {
        dir: *dir,
        request_type: *request_type,
        request: *request,
        name: request_name(*request_type, *request),
        value: *value,
        length: *length,
        result: *result,
        reply: reply.to_string(),
    }
    .serialize(s)
}

pub(super) fn de_control<'de, D: Deserializer<'de>>(d: D) -> Result<ControlFields, D::Error> {
    let w = ControlWire::deserialize(d)?;
    let reply = ControlReply::parse(w.request, &w.reply).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "reply `{}` is no reply to request {}",
            w.reply, w.request
        ))
    })?;
    Ok((
        w.dir,
        w.request_type,
        w.request,
        w.value,
        w.length,
        w.result,
        reply,
    ))
}

/// An interrupt transfer's event as its text (empty when it carried none).
pub(super) mod interrupt_event {
    use super::*;

    pub(in crate::trace) fn serialize<S: Serializer>(
        e: &Option<InterruptEvent>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&e.as_ref().map(event_text).unwrap_or_default())
    }

    pub(in crate::trace) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<InterruptEvent>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if text.is_empty() {
            return Ok(None);
        }
        parse_event(&text)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is no interrupt event")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_read_back_what_they_render() {
        let replies = [
            ControlReply::None,
            ControlReply::DeviceStatus(DeviceStatus {
                code: protocol::STATUS_BUSY,
                halted: vec![],
            }),
            ControlReply::DeviceStatus(DeviceStatus {
                code: protocol::STATUS_TRANSACTION_CANCELLED,
                halted: vec![0x81, 0x02],
            }),
            ControlReply::DeviceStatus(DeviceStatus {
                code: 0x1234,
                halted: vec![],
            }),
            ControlReply::decode(protocol::REQ_GET_DEVICE_STATUS, &[2, 0]),
            ControlReply::decode(protocol::REQ_GET_SCAN_STATUS, &[1]),
            ControlReply::ScanStatus(ScanStatusFields {
                state: DeviceState::WarmingUp,
                error: ScanError::CancelButton,
                bands_sent: 7,
            }),
        ];
        for reply in replies {
            let request = match reply {
                ControlReply::ScanStatus(_) => protocol::REQ_GET_SCAN_STATUS,
                ControlReply::Malformed(ref e) if e.what == "scan status" => {
                    protocol::REQ_GET_SCAN_STATUS
                }
                _ => protocol::REQ_GET_DEVICE_STATUS,
            };
            let text = reply.to_string();
            assert_eq!(ControlReply::parse(request, &text), Some(reply), "{text}");
        }
        assert_eq!(
            ControlReply::DeviceStatus(DeviceStatus {
                code: 0x201f,
                halted: vec![0x81, 0x02]
            })
            .to_string(),
            "0x201f cancelled halted=0x81,0x02"
        );
        assert_eq!(ControlReply::parse(0x67, "0x2001 busy"), None);
    }

    #[test]
    fn interrupt_events_read_back_what_they_render() {
        for code in EVENT_CODES {
            let e = InterruptEvent {
                code,
                arg: 2,
                page: 1,
                value: 70_000,
            };
            assert_eq!(parse_event(&event_text(&e)), Some(e));
        }
    }

    #[test]
    fn outcomes_have_one_name_each() {
        for o in TransferOutcome::ALL {
            assert_eq!(TransferOutcome::from_name(o.name()), Some(*o));
        }
        let io = TransferOutcome::of(&Err(TransferError::Io("x".into())));
        assert_eq!(io.name(), "io-error");
    }
}
