//! The wire messages of the external driver protocol (`conformance/DRIVER-PROTOCOL.md`), in
//! both directions, and the checks the runner makes on a driver's line before acting on it.
//!
//! The field names and `type` names here are the protocol: they must not change without a new
//! protocol version. A new version adds its messages here (a [`FromDriver`] or [`ToDriver`]
//! variant, its name in [`FromDriver::name`], the version that brings it in
//! [`FromDriver::since`]) and its number to [`PROTOCOL_VERSIONS`]; where in the exchange each
//! message may come is decided in `turns.rs`. The messages of one driver contract (WIA 1.0's
//! `callback`, WIA 2.0's `get_next_stream`, `send_message`, `stream`, `release`) say so
//! ([`FromDriver::contract`]); the runner's `hello` offers the contracts ([`CONTRACTS`]).
//!
//! About 800 lines on purpose: the wire types of every message of both contracts and both protocol
//! versions, each with the checks that parse it and the version that admits it; split by contract,
//! a message would sit apart from the rule that admits it.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use scanemu::engine::ScanJob;
use scanemu::host::{Setup, TransferError};
use scanemu::time::Duration;
use serde::{Deserialize, Serialize};

use super::ExternalConfig;
use crate::driver::{Completion, UsbRequest};
use crate::wia::{Hresult, ItMsg, SeekOrigin};

/// The protocol versions this runner speaks, oldest first: the runner's `hello` offers them
/// (`protocols`) and the driver's `hello` picks one (`protocol`). Version 1 is turn-taking
/// with every USB request run to completion; version 2 adds submitted transfers (`submit`,
/// `cancel`, `wait`).
pub const PROTOCOL_VERSIONS: &[u32] = &[1, 2];

/// The driver contracts this runner speaks, as its `hello` offers them (`contracts`): `wia`,
/// the WIA 1.0 minidriver (`acquire`, `callback`), and `wia2`, the WIA 2.0 stream minidriver
/// (`acquire_item_data`, `get_next_stream`, `send_message`, `stream`, `release`). A driver
/// names its contract in its `hello` (`contract`; none is `wia`), beside its version.
pub const CONTRACTS: &[&str] = &["wia", "wia2"];

impl std::fmt::Display for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The contract a driver implements (see [`CONTRACTS`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Contract {
    /// The WIA 1.0 minidriver: `MiniDriver`.
    #[default]
    Wia,
    /// The WIA 2.0 stream minidriver: `MiniDriver2`.
    Wia2,
}

impl Contract {
    /// Its name on the wire: `wia`, `wia2`.
    pub const fn name(self) -> &'static str {
        match self {
            Contract::Wia => "wia",
            Contract::Wia2 => "wia2",
        }
    }

    /// The contract called `name` on the wire (`wia`, `wia2`).
    pub fn from_name(name: &str) -> Option<Contract> {
        match name {
            "wia" => Some(Contract::Wia),
            "wia2" => Some(Contract::Wia2),
            _ => None,
        }
    }
}

/// Why a line a driver wrote is not a message the runner can act on. Each is one line of text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Not JSON, not an object, an unknown `type` or a missing field (serde's words, with
    /// control characters escaped).
    #[error("not a valid message: {0}")]
    NotAMessage(String),
    /// A payload that is not standard base64.
    #[error("{what} data is not base64: {error}")]
    NotBase64 {
        /// The message carrying it.
        what: &'static str,
        /// The decoder's words.
        error: base64::DecodeError,
    },
    /// A `result` whose `hr` does not fit 32 bits.
    #[error("result hr {0} is not a 32-bit HRESULT")]
    NotAnHresult(i64),
    /// A `send_message` whose `status` does not fit 32 bits.
    #[error("send_message status {0} is not a 32-bit HRESULT")]
    NotAStatus(i64),
    /// A `stream` seek whose `origin` is no STREAM_SEEK_* value.
    #[error("stream seek origin {0} is no STREAM_SEEK_* (0 SET, 1 CUR, 2 END)")]
    NotASeekOrigin(u8),
    /// A `callback` whose `reason` is no IT_MSG_* value.
    #[error("callback reason {0} is no IT_MSG_*")]
    NotAReason(i32),
    /// A `control_out` whose data does not fit a control transfer.
    #[error("control_out of {0} bytes is larger than 65535")]
    ControlTooLong(usize),
    /// A request for more bytes than the line limit.
    #[error("{what} of {length} bytes is larger than the {max}-byte limit")]
    TooLong {
        /// The message.
        what: &'static str,
        /// Bytes asked for or carried.
        length: usize,
        /// The limit ([`ExternalConfig::max_line_bytes`]).
        max: usize,
    },
}

/// Runner to driver.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum ToDriver<'a> {
    Hello {
        /// Version 1 drivers read this and expect 1: it stays the oldest version.
        protocol: u32,
        protocols: &'a [u32],
        contracts: &'a [&'a str],
        runner: &'a str,
    },
    /// WIA 2.0: drvAcquireItemData.
    AcquireItemData {
        call: u32,
        flags: i32,
        tymed: i32,
        format: &'a str,
        item: WireItem<'a>,
        children: Vec<WireItem<'a>>,
        interface: u16,
        now_us: u64,
    },
    /// WIA 2.0: what GetNextStream returned (`stream` absent: a NULL stream).
    NextStream {
        hr: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        stream: Option<u32>,
    },
    /// WIA 2.0: what SendMessage returned.
    MessageResult {
        hr: u32,
    },
    /// WIA 2.0: what a stream method returned.
    StreamResult(StreamResult),
    Acquire {
        acquisition: u32,
        tymed: i32,
        buffer_size: u32,
        interface: u16,
        job: &'a ScanJob,
        now_us: u64,
    },
    CallbackResult {
        hr: u32,
    },
    Notify {
        event: &'a str,
    },
    Done(Done),
}

/// An item of `acquire_item_data`: its names and its scan settings.
#[derive(Serialize)]
pub(super) struct WireItem<'a> {
    pub(super) name: &'a str,
    pub(super) full_name: &'a str,
    pub(super) job: &'a ScanJob,
}

/// What one `stream` call returned: `hr`, and the fields of its method.
#[derive(Default, Serialize)]
pub(super) struct StreamResult {
    pub(super) hr: u32,
    /// Write, Read: bytes written or read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) actual: Option<u64>,
    /// Read: the bytes read, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) data: Option<String>,
    /// Seek: the new seek pointer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) position: Option<u64>,
    /// Stat: the stream's size (cbSize).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) size: Option<u64>,
}

/// The completion of one USB request.
#[derive(Serialize)]
pub(super) struct Done {
    pub(super) id: u64,
    pub(super) status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) actual: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
    pub(super) now_us: u64,
}

/// Driver to runner. Unknown fields are ignored; unknown types are protocol errors.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum FromDriver {
    Hello {
        protocol: u32,
        /// The contract the driver implements; none is `wia`.
        #[serde(default)]
        contract: Option<String>,
        name: String,
        version: String,
        capabilities: Capabilities,
    },
    Callback {
        reason: i32,
        status: i32,
        percent: i32,
        offset: i64,
        length: i64,
        #[serde(default)]
        data: String,
    },
    Result {
        hr: i64,
    },
    NotifyDone {},
    ControlIn {
        id: u64,
        request_type: u8,
        request: u8,
        value: u16,
        index: u16,
        length: u16,
        timeout_us: u64,
    },
    ControlOut {
        id: u64,
        request_type: u8,
        request: u8,
        value: u16,
        index: u16,
        #[serde(default)]
        data: String,
        timeout_us: u64,
    },
    BulkIn {
        id: u64,
        ep: u8,
        length: usize,
        timeout_us: u64,
    },
    BulkOut {
        id: u64,
        ep: u8,
        data: String,
        timeout_us: u64,
    },
    InterruptIn {
        id: u64,
        ep: u8,
        length: usize,
        timeout_us: u64,
    },
    ClearHalt {
        id: u64,
        ep: u8,
    },
    ResetDevice {
        id: u64,
    },
    AbortEndpoint {
        id: u64,
        ep: u8,
    },
    Sleep {
        id: u64,
        duration_us: u64,
    },
    Now {
        id: u64,
    },
    /// Version 2: starts a transfer (or a timer) and keeps the turn.
    Submit {
        id: u64,
        #[serde(flatten)]
        request: Submitted,
    },
    /// Version 2: ends one submitted transfer now and keeps the turn.
    Cancel {
        id: u64,
    },
    /// Version 2: ends the turn until the next completion.
    Wait {},
    /// WIA 2.0: IWiaMiniDrvTransferCallback::GetNextStream; ends the turn.
    GetNextStream {
        item_name: String,
        full_item_name: String,
    },
    /// WIA 2.0: IWiaMiniDrvTransferCallback::SendMessage; ends the turn.
    SendMessage {
        msg: i32,
        percent: i32,
        bytes: u64,
        status: i64,
    },
    /// WIA 2.0: an IStream method on stream `stream`; ends the turn.
    Stream {
        stream: u32,
        #[serde(flatten)]
        op: StreamOp,
    },
    /// WIA 2.0: IUnknown::Release of stream `stream`; keeps the turn.
    Release {
        stream: u32,
    },
}

/// The IStream method of a `stream` message: the field `op` names it.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum StreamOp {
    Write { data: String },
    Read { length: usize },
    Seek { offset: i64, origin: u8 },
    SetSize { size: u64 },
    Stat {},
}

impl StreamOp {
    /// `write`, `read`, ... as fault texts name the call.
    pub(super) fn name(&self) -> &'static str {
        match self {
            StreamOp::Write { .. } => "write",
            StreamOp::Read { .. } => "read",
            StreamOp::Seek { .. } => "seek",
            StreamOp::SetSize { .. } => "set_size",
            StreamOp::Stat {} => "stat",
        }
    }

    /// The checks on its fields: base64 data within the line limit `max`, a read within it,
    /// a STREAM_SEEK_* origin.
    pub(super) fn check(&self, max: usize) -> Result<(), ProtocolError> {
        match self {
            StreamOp::Write { data } => {
                payload("stream write", data)?;
            }
            StreamOp::Read { length } => within("stream read", *length, max)?,
            StreamOp::Seek { origin, .. } => {
                seek_origin(*origin)?;
            }
            StreamOp::SetSize { .. } | StreamOp::Stat {} => {}
        }
        Ok(())
    }
}

/// A seek origin from the wire (STREAM_SEEK_SET 0, _CUR 1, _END 2).
pub(super) fn seek_origin(origin: u8) -> Result<SeekOrigin, ProtocolError> {
    match origin {
        0 => Ok(SeekOrigin::Set),
        1 => Ok(SeekOrigin::Cur),
        2 => Ok(SeekOrigin::End),
        other => Err(ProtocolError::NotASeekOrigin(other)),
    }
}

/// What a `submit` starts: the field `transfer` names it; the other fields are those of the
/// blocking request of the same name.
#[derive(Deserialize)]
#[serde(tag = "transfer", rename_all = "snake_case")]
pub(super) enum Submitted {
    ControlIn {
        request_type: u8,
        request: u8,
        value: u16,
        index: u16,
        length: u16,
        timeout_us: u64,
    },
    ControlOut {
        request_type: u8,
        request: u8,
        value: u16,
        index: u16,
        #[serde(default)]
        data: String,
        timeout_us: u64,
    },
    BulkIn {
        ep: u8,
        length: usize,
        timeout_us: u64,
    },
    BulkOut {
        ep: u8,
        data: String,
        timeout_us: u64,
    },
    InterruptIn {
        ep: u8,
        length: usize,
        timeout_us: u64,
    },
    Sleep {
        duration_us: u64,
    },
}

impl Submitted {
    /// The request as the runner runs it; `max` is the longest payload a request may ask for.
    pub(super) fn to_request(&self, max: usize) -> Result<UsbRequest, ProtocolError> {
        let timeout = |us: &u64| Duration::from_micros(*us);
        Ok(match self {
            Submitted::ControlIn {
                request_type,
                request,
                value,
                index,
                length,
                timeout_us,
            } => UsbRequest::ControlIn {
                setup: Setup {
                    request_type: *request_type,
                    request: *request,
                    value: *value,
                    index: *index,
                    length: *length,
                },
                timeout: timeout(timeout_us),
            },
            Submitted::ControlOut {
                request_type,
                request,
                value,
                index,
                data,
                timeout_us,
            } => {
                let data = payload("control_out", data)?;
                let length = u16::try_from(data.len())
                    .map_err(|_| ProtocolError::ControlTooLong(data.len()))?;
                UsbRequest::ControlOut {
                    setup: Setup {
                        request_type: *request_type,
                        request: *request,
                        value: *value,
                        index: *index,
                        length,
                    },
                    data,
                    timeout: timeout(timeout_us),
                }
            }
            Submitted::BulkIn {
                ep,
                length,
                timeout_us,
            } => {
                within("bulk_in", *length, max)?;
                UsbRequest::BulkIn {
                    ep: *ep,
                    length: *length,
                    timeout: timeout(timeout_us),
                }
            }
            Submitted::BulkOut {
                ep,
                data,
                timeout_us,
            } => UsbRequest::BulkOut {
                ep: *ep,
                data: payload("bulk_out", data)?,
                timeout: timeout(timeout_us),
            },
            Submitted::InterruptIn {
                ep,
                length,
                timeout_us,
            } => {
                within("interrupt_in", *length, max)?;
                UsbRequest::InterruptIn {
                    ep: *ep,
                    length: *length,
                    timeout: timeout(timeout_us),
                }
            }
            Submitted::Sleep { duration_us } => UsbRequest::Sleep {
                duration: Duration::from_micros(*duration_us),
            },
        })
    }
}

#[derive(Deserialize)]
pub(super) struct Capabilities {
    /// WIA 1.0: the driver honours WIA_EVENT_CANCEL_IO during a transfer.
    #[serde(default)]
    pub(super) async_cancel: bool,
    /// WIA 2.0: WIA_TRANSFER_ACQUIRE_CHILDREN_CAPABLE.
    #[serde(default)]
    pub(super) acquire_children: bool,
}

impl FromDriver {
    pub(super) fn name(&self) -> &'static str {
        match self {
            FromDriver::Hello { .. } => "hello",
            FromDriver::Callback { .. } => "callback",
            FromDriver::Result { .. } => "result",
            FromDriver::NotifyDone {} => "notify_done",
            FromDriver::ControlIn { .. } => "control_in",
            FromDriver::ControlOut { .. } => "control_out",
            FromDriver::BulkIn { .. } => "bulk_in",
            FromDriver::BulkOut { .. } => "bulk_out",
            FromDriver::InterruptIn { .. } => "interrupt_in",
            FromDriver::ClearHalt { .. } => "clear_halt",
            FromDriver::ResetDevice { .. } => "reset_device",
            FromDriver::AbortEndpoint { .. } => "abort_endpoint",
            FromDriver::Sleep { .. } => "sleep",
            FromDriver::Now { .. } => "now",
            FromDriver::Submit { .. } => "submit",
            FromDriver::Cancel { .. } => "cancel",
            FromDriver::Wait {} => "wait",
            FromDriver::GetNextStream { .. } => "get_next_stream",
            FromDriver::SendMessage { .. } => "send_message",
            FromDriver::Stream { .. } => "stream",
            FromDriver::Release { .. } => "release",
        }
    }

    /// The contract the message belongs to; `None` for the messages of every contract (the
    /// USB requests, `result`, `notify_done`, the version 2 messages).
    pub(super) fn contract(&self) -> Option<Contract> {
        match self {
            FromDriver::Callback { .. } => Some(Contract::Wia),
            FromDriver::GetNextStream { .. }
            | FromDriver::SendMessage { .. }
            | FromDriver::Stream { .. }
            | FromDriver::Release { .. } => Some(Contract::Wia2),
            _ => None,
        }
    }

    /// The protocol version that brought the message in.
    pub(super) fn since(&self) -> u32 {
        match self {
            FromDriver::Submit { .. } | FromDriver::Cancel { .. } | FromDriver::Wait {} => 2,
            _ => 1,
        }
    }

    /// The id of a USB request (blocking or submitted) or of a `cancel`.
    pub(super) fn id(&self) -> Option<u64> {
        match self {
            FromDriver::ControlIn { id, .. }
            | FromDriver::ControlOut { id, .. }
            | FromDriver::BulkIn { id, .. }
            | FromDriver::BulkOut { id, .. }
            | FromDriver::InterruptIn { id, .. }
            | FromDriver::ClearHalt { id, .. }
            | FromDriver::ResetDevice { id }
            | FromDriver::AbortEndpoint { id, .. }
            | FromDriver::Sleep { id, .. }
            | FromDriver::Now { id }
            | FromDriver::Submit { id, .. }
            | FromDriver::Cancel { id } => Some(*id),
            _ => None,
        }
    }

    /// The endpoint queue a blocking transfer waits in: 0 for control transfers and
    /// `clear_halt` (EP0), the endpoint of bulk and interrupt transfers; `None` for what does
    /// not wait in one.
    pub(super) fn queue(&self) -> Option<u8> {
        match self {
            FromDriver::ControlIn { .. }
            | FromDriver::ControlOut { .. }
            | FromDriver::ClearHalt { .. } => Some(0),
            FromDriver::BulkIn { ep, .. }
            | FromDriver::BulkOut { ep, .. }
            | FromDriver::InterruptIn { ep, .. } => Some(*ep),
            _ => None,
        }
    }
}

/// What a submitted request's `done` carries besides its status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Shape {
    /// An IN transfer: `actual` and `data`.
    In,
    /// An OUT transfer: `actual`.
    Out,
    /// A timer: neither.
    Timer,
}

impl Shape {
    pub(super) fn of(request: &UsbRequest) -> Shape {
        match request {
            UsbRequest::ControlIn { .. }
            | UsbRequest::BulkIn { .. }
            | UsbRequest::InterruptIn { .. } => Shape::In,
            UsbRequest::Sleep { .. } => Shape::Timer,
            _ => Shape::Out,
        }
    }
}

impl Done {
    /// The `done` of submitted request `id` of `shape`, delivered at `now_us`: the same fields
    /// as the `done` of the blocking request of the same kind.
    pub(super) fn of_completion(id: u64, shape: Shape, c: Completion, now_us: u64) -> Done {
        match (c.result, shape) {
            (Ok(_), Shape::In) => Done::of(id, Ok(Some(c.data)), now_us),
            (Ok(n), Shape::Out) => {
                let mut done = Done::of(id, Ok(None), now_us);
                done.actual = Some(n);
                done
            }
            (Ok(_), Shape::Timer) => Done::of(id, Ok(None), now_us),
            (Err(e), _) => Done::of(id, Err(e), now_us),
        }
    }

    /// The completion of request `id` that ended with `r` (the bytes read, if the request
    /// reads), at `now_us`.
    pub(super) fn of(id: u64, r: Result<Option<Vec<u8>>, TransferError>, now_us: u64) -> Done {
        match r {
            Ok(data) => Done {
                id,
                status: "ok",
                actual: data.as_ref().map(Vec::len),
                data: data.map(|d| BASE64.encode(d)),
                error: None,
                now_us,
            },
            Err(e) => Done {
                id,
                status: status_name(&e),
                actual: match e {
                    TransferError::Timeout { actual } | TransferError::Cancelled { actual } => {
                        Some(actual)
                    }
                    _ => None,
                },
                data: None,
                error: match &e {
                    TransferError::Io(text) => Some(text.clone()),
                    _ => None,
                },
                now_us,
            },
        }
    }
}

/// An HRESULT from the wire: a signed or unsigned 32-bit integer.
pub(super) fn hresult_from_wire(v: i64) -> Result<Hresult, ProtocolError> {
    if (i64::from(i32::MIN)..=i64::from(u32::MAX)).contains(&v) {
        Ok(Hresult(v as u32 as i32))
    } else {
        Err(ProtocolError::NotAnHresult(v))
    }
}

/// A `send_message` status (hrErrorStatus) from the wire: a signed or unsigned 32-bit integer.
pub(super) fn status_from_wire(v: i64) -> Result<Hresult, ProtocolError> {
    hresult_from_wire(v).map_err(|_| ProtocolError::NotAStatus(v))
}

/// A callback reason from the wire.
pub(super) fn it_msg(value: i32) -> Result<ItMsg, ProtocolError> {
    [
        ItMsg::DataHeader,
        ItMsg::Data,
        ItMsg::Status,
        ItMsg::Termination,
        ItMsg::NewPage,
        ItMsg::DeviceStatus,
    ]
    .into_iter()
    .find(|m| m.value() == value)
    .ok_or(ProtocolError::NotAReason(value))
}

/// A base64 payload of message `what`.
pub(super) fn payload(what: &'static str, s: &str) -> Result<Vec<u8>, ProtocolError> {
    BASE64
        .decode(s)
        .map_err(|error| ProtocolError::NotBase64 { what, error })
}

/// A request for `length` bytes, within `max`.
pub(super) fn within(what: &'static str, length: usize, max: usize) -> Result<(), ProtocolError> {
    if length > max {
        return Err(ProtocolError::TooLong { what, length, max });
    }
    Ok(())
}

/// Parses one line a driver wrote on its stdout (without the `\n`) as the runner reads it: the
/// JSON message, then the checks the runner makes before acting on it (base64 data, a 32-bit
/// HRESULT, an IT_MSG_* callback reason, request lengths within [`ExternalConfig::default`]'s
/// line limit). Returns the message's type (`"bulk_in"`, ...) or the one-line protocol error
/// the run would record as a `driver-fault`. Public so the parser can be tested and fuzzed.
pub fn parse_driver_message(line: &[u8]) -> Result<&'static str, ProtocolError> {
    let msg: FromDriver = serde_json::from_slice(line)
        .map_err(|e| ProtocolError::NotAMessage(one_line(&e.to_string())))?;
    let max = ExternalConfig::default().max_line_bytes;
    match &msg {
        FromDriver::Result { hr } => {
            hresult_from_wire(*hr)?;
        }
        FromDriver::Callback { reason, data, .. } => {
            it_msg(*reason)?;
            payload("callback", data)?;
        }
        FromDriver::ControlOut { data, .. } => {
            let n = payload("control_out", data)?.len();
            if n > usize::from(u16::MAX) {
                return Err(ProtocolError::ControlTooLong(n));
            }
        }
        FromDriver::BulkOut { data, .. } => {
            payload("bulk_out", data)?;
        }
        FromDriver::BulkIn { length, .. } | FromDriver::InterruptIn { length, .. } => {
            within(msg.name(), *length, max)?;
        }
        FromDriver::Submit { request, .. } => {
            request.to_request(max)?;
        }
        FromDriver::SendMessage { status, .. } => {
            status_from_wire(*status)?;
        }
        FromDriver::Stream { op, .. } => op.check(max)?,
        _ => {}
    }
    Ok(msg.name())
}

/// `text` with control characters escaped: serde's messages quote the driver's strings (an
/// unknown `type`, say), which may hold line breaks, and a fault is one line.
pub(super) fn one_line(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// The `status` of a failed request.
fn status_name(e: &TransferError) -> &'static str {
    match e {
        TransferError::Stall => "stall",
        TransferError::Timeout { .. } => "timeout",
        TransferError::Cancelled { .. } => "cancelled",
        TransferError::NoDevice => "no_device",
        TransferError::Overflow => "overflow",
        TransferError::Io(_) => "io_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hresults_are_read_signed_or_unsigned() {
        assert_eq!(hresult_from_wire(1), Ok(Hresult::S_FALSE));
        assert_eq!(hresult_from_wire(0x8000_4005), Ok(Hresult::E_FAIL));
        assert_eq!(hresult_from_wire(-2_147_467_259), Ok(Hresult::E_FAIL));
        assert!(hresult_from_wire(1 << 40).is_err());
    }

    #[test]
    fn driver_messages_parse_to_their_type_or_one_line_of_error() {
        assert_eq!(parse_driver_message(br#"{"type":"now","id":1}"#), Ok("now"));
        let e = parse_driver_message(br#"{"type":"a\nb"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a\\nb") && !e.contains('\n'), "{e}");
        let e = parse_driver_message(br#"{"type":"result","hr":1099511627776}"#).unwrap_err();
        assert_eq!(e, ProtocolError::NotAnHresult(1_099_511_627_776));
        assert!(e.to_string().contains("not a 32-bit HRESULT"), "{e}");
    }
}
