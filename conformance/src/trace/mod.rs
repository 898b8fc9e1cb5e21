//! The trace: one list of typed events from every role, in virtual microseconds.
//!
//! Every role (application, service, driver, USB host, device) appends [`Event`]s to one
//! [`Trace`]. A trace serializes to JSON lines (`{"at_us":..,"actor":..,"event":..,"fields":{..}}`),
//! renders as aligned text for people, and is pinned by an insta YAML snapshot. Fields hold
//! integers and short strings only: payloads appear as a length and a CRC-32, never as bytes.
//!
//! Events are typed to the leaves: a transfer's result is a [`TransferOutcome`], a control
//! reply a [`ControlReply`] (the device status code and halted endpoints, the scan status), a
//! device note a scanemu [`NoteKind`] with a [`DeviceDetail`]. Rules match on these types.
//! Strings appear only where a trace is written out: the JSON lines and the text lines, whose
//! format the private `usb` and `device` modules keep as it always was, so trace
//! files written before still read. `conformance/TRACE.md` lists every event with its fields;
//! a test keeps that list and [`Kind`] equal.

mod device;
#[cfg(test)]
mod tests;
mod usb;

use std::cell::RefCell;
use std::fmt::Write as _;
use std::rc::Rc;

use scanemu::personality::native::protocol::Event as InterruptEvent;
use scanemu::personality::NoteKind;
use serde::{Deserialize, Serialize};

use crate::wia::{Hresult, ItMsg, SeekOrigin, StreamMethod, TransferMsg};

pub use self::device::DeviceDetail;
pub use self::usb::{request_name, ControlReply, Direction, ScanStatusFields, TransferOutcome};

/// Who did something.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Actor {
    /// The WIA application (IWiaDataCallback, CancelPendingIO).
    App,
    /// The WIA service (MiniDrvCallback relay, drvNotifyPnPEvent).
    Service,
    /// The driver under test.
    Driver,
    /// The host controller: transfers as seen on the wire.
    Usb,
    /// The emulated scanner.
    Device,
}

impl Actor {
    /// Lowercase name.
    pub const fn name(self) -> &'static str {
        match self {
            Actor::App => "app",
            Actor::Service => "service",
            Actor::Driver => "driver",
            Actor::Usb => "usb",
            Actor::Device => "device",
        }
    }
}

/// What happened. The variant name (kebab-case) is the event name in every rendering.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", content = "fields", rename_all = "kebab-case")]
pub enum Kind {
    // ---- app ----
    /// The application starts a banded transfer (idtGetBandedData); `n` counts acquisitions.
    Acquire {
        /// 1 for the first acquisition of the scenario, 2 for the next, ...
        n: u32,
        /// TYMED_CALLBACK or TYMED_MULTIPAGE_CALLBACK.
        tymed: i32,
        /// Transfer buffer size in bytes.
        buffer: u32,
    },
    /// The application's BandedDataCallback returned.
    BandedCallback {
        /// lMessage.
        msg: ItMsg,
        /// lPercentComplete.
        percent: i32,
        /// What the application returned.
        result: Hresult,
    },
    /// The application called IWiaItemExtras::CancelPendingIO (or IWiaTransfer::Cancel on vista).
    CancelPendingIo {
        /// Which call of the scenario's script this is (1-based).
        n: u32,
    },
    /// The application's transfer call returned.
    AcquireDone {
        /// Which acquisition.
        n: u32,
        /// The HRESULT the application saw.
        hr: Hresult,
        /// Bytes the application received.
        bytes: u64,
    },
    // ---- service ----
    /// The service called drvAcquireItemData.
    DrvAcquireItemData {
        /// Which acquisition.
        n: u32,
    },
    /// The driver called MiniDrvCallback; `result` is what the service returned to it.
    Callback {
        /// lReason.
        msg: ItMsg,
        /// lStatus bits.
        status: i32,
        /// lPercentComplete.
        percent: i32,
        /// lOffset.
        offset: i64,
        /// lLength.
        length: i64,
        /// Bytes the callback actually carried, recorded only when they differ from `length`
        /// (a driver whose lLength does not describe its data).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        carried: Option<u64>,
        /// Page (0-based) the data belongs to.
        page: u32,
        /// CRC-32 of the band's bytes (0 for messages without data).
        crc: u32,
        /// CRC-32 of the image bytes expected at [offset, offset+length) of this page.
        expect_crc: u32,
        /// The HRESULT returned to the driver.
        result: Hresult,
        /// True when the service returned S_FALSE on its own (vista's sticky cancel).
        sticky: bool,
    },
    /// The service delivered drvNotifyPnPEvent(WIA_EVENT_CANCEL_IO) to the driver.
    NotifyCancelIo {},
    // ---- driver ----
    /// drvAcquireItemData returned.
    AcquireReturn {
        /// Which acquisition.
        n: u32,
        /// The HRESULT it returned.
        hr: Hresult,
        /// USB transfers still pending on the host when it returned.
        pending: u32,
    },
    /// A line the driver logged (external drivers: a line of stderr).
    Log {
        /// The text.
        text: String,
    },
    /// The driver failed in a way the runner detected (crash, hang, protocol error).
    DriverFault {
        /// What happened.
        what: String,
    },
    // ---- usb ----
    /// A control transfer completed (or failed). Its text and JSON add the request's symbolic
    /// name ([`request_name`]) after `request`.
    #[serde(
        serialize_with = "usb::ser_control",
        deserialize_with = "usb::de_control"
    )]
    Control {
        /// The data stage's direction.
        dir: Direction,
        /// bmRequestType.
        request_type: u8,
        /// bRequest.
        request: u8,
        /// wValue.
        value: u16,
        /// Bytes in the data stage.
        length: u32,
        /// How it ended.
        result: TransferOutcome,
        /// The decoded reply of a status request that succeeded.
        reply: ControlReply,
    },
    /// A bulk transfer completed (or failed).
    Bulk {
        /// Endpoint address.
        ep: u8,
        /// Bytes requested (IN) or offered (OUT).
        requested: u32,
        /// Bytes moved.
        actual: u32,
        /// CRC-32 of the bytes moved.
        crc: u32,
        /// How it ended.
        result: TransferOutcome,
    },
    /// An interrupt transfer completed (or failed); `reply` is the event it carried.
    Interrupt {
        /// Endpoint address.
        ep: u8,
        /// Bytes moved.
        actual: u32,
        /// How it ended.
        result: TransferOutcome,
        /// The device event it carried, if it carried one.
        #[serde(with = "usb::interrupt_event")]
        reply: Option<InterruptEvent>,
    },
    /// CLEAR_FEATURE(ENDPOINT_HALT).
    ClearHalt {
        /// Endpoint address.
        ep: u8,
        /// How it ended.
        result: TransferOutcome,
    },
    /// Port reset and re-enumeration.
    ResetDevice {
        /// How it ended.
        result: TransferOutcome,
    },
    /// The host aborted the transfers pending on an endpoint.
    Abort {
        /// Endpoint address.
        ep: u8,
    },
    // ---- device ----
    /// Something happened inside the scanner (band ready, motor stopped, fault ...). Its text
    /// names the event by `what`; `emulator/DEVICE-NOTES.md` lists every kind.
    #[serde(
        serialize_with = "device::ser_note",
        deserialize_with = "device::de_note"
    )]
    Device {
        /// What happened.
        what: NoteKind,
        /// Page concerned.
        page: u32,
        /// Band index within the page, or another count (bands discarded for motor-stopped).
        value: u64,
        /// What else the note says.
        detail: DeviceDetail,
    },
    // ---- runner ----
    /// A note from the runner itself (scenario step, timeout), attributed to the app.
    Note {
        /// The text.
        text: String,
    },
    // ---- WIA 2.0 app ----
    /// The application called `IWiaTransfer::Download`.
    Download {
        /// 1 for the scenario's first transfer, 2 for the next, ...
        n: u32,
        /// The item's name (`Flatbed`, `Feeder`, `Regions` for a folder).
        item: String,
        /// Download's lFlags: 0, or WIA_TRANSFER_ACQUIRE_CHILDREN (1) for a folder.
        flags: i32,
        /// TYMED_FILE (2) or TYMED_MULTIPAGE_FILE (256).
        tymed: i32,
        /// The file format the item is set to (`pnm`).
        format: String,
    },
    /// The application called `IWiaTransfer::Upload` with a stream of its own.
    Upload {
        /// Which transfer.
        n: u32,
        /// The item's name.
        item: String,
        /// The source stream's id.
        stream: u32,
        /// Bytes in the source stream.
        bytes: u64,
    },
    /// The application's `IWiaTransferCallback::TransferCallback` answered a message.
    TransferCallback {
        /// lMessage.
        msg: TransferMsg,
        /// lPercentComplete.
        percent: i32,
        /// ulTransferredBytes.
        bytes: u64,
        /// hrErrorStatus.
        status: Hresult,
        /// What the application returned.
        result: Hresult,
    },
    /// The application's `IWiaTransferCallback::GetNextStream` answered.
    AppGetNextStream {
        /// bstrItemName.
        item: String,
        /// What it returned.
        result: Hresult,
        /// The stream it gave (0: none, or NULL with S_OK).
        stream: u32,
        /// Bytes already in that stream.
        size: u64,
    },
    /// The application called `IWiaTransfer::Cancel`.
    Cancel {
        /// Which call of the scenario's script this is (1-based).
        n: u32,
    },
    /// The application's error handler (`IWiaAppErrorHandler::ReportStatus`) answered a device
    /// status.
    ReportStatus {
        /// hrErrorStatus of the device status.
        status: Hresult,
        /// What the handler returned (WIA_STATUS_NOT_HANDLED: not handled).
        result: Hresult,
    },
    /// The application moved a stream's seek pointer itself (reading it inside a callback).
    AppSeek {
        /// The stream.
        stream: u32,
        /// The new position.
        pos: u64,
    },
    /// The application's Download or Upload returned.
    TransferDone {
        /// Which transfer.
        n: u32,
        /// What it returned.
        hr: Hresult,
        /// Bytes the driver wrote to the application's streams.
        bytes: u64,
    },
    // ---- WIA 2.0 service ----
    /// The service called a WIA 2.0 driver's drvAcquireItemData.
    DrvAcquireItemData2 {
        /// Which call of the run (1-based).
        n: u32,
        /// The item.
        item: String,
        /// lFlags: WIA_MINIDRV_TRANSFER_DOWNLOAD (2) or _UPLOAD (4), | _ACQUIRE_CHILDREN (1).
        flags: i32,
    },
    /// The driver called `IWiaMiniDrvTransferCallback::GetNextStream`.
    GetNextStream {
        /// bstrItemName.
        item: String,
        /// bstrFullItemName.
        full_item: String,
        /// What the service returned to the driver.
        result: Hresult,
        /// The stream handed to the driver (0: none or NULL).
        stream: u32,
        /// The size that stream should end with: what it held, then its image file (0: no
        /// stream, or a multi-page file of pages still unknown).
        expect_size: u64,
        /// True when the service answered S_FALSE by itself (the transfer was cancelled).
        sticky: bool,
    },
    /// The driver called `IWiaMiniDrvTransferCallback::SendMessage`.
    SendMessage {
        /// lMessage.
        msg: TransferMsg,
        /// lPercentComplete.
        percent: i32,
        /// ulTransferredBytes.
        bytes: u64,
        /// hrErrorStatus.
        status: Hresult,
        /// What the service returned to the driver.
        result: Hresult,
        /// True when the service answered S_FALSE by itself (the transfer was cancelled).
        sticky: bool,
    },
    /// The service ended a stream (END_OF_STREAM): what the stream holds.
    StreamEnd {
        /// The stream.
        stream: u32,
        /// Its size in bytes.
        size: u64,
        /// CRC-32 of its content.
        crc: u32,
        /// The size it should have: what was in it before, then the whole image file.
        expect_size: u64,
        /// CRC-32 of what it should hold.
        expect_crc: u32,
    },
    /// The WIA service process ended during a transfer and was started again: the driver's
    /// call was abandoned, its pending USB I/O cancelled, and a new driver instance loaded.
    ServiceRestart {},
    /// The identical device of an H18 scenario finished a transfer of its own, made by another
    /// instance of the driver at the same time (its own events are not in this trace).
    PeerTransfer {
        /// Which of its transfers.
        n: u32,
        /// What its Download or Upload returned.
        hr: Hresult,
        /// Bytes its driver wrote into its streams.
        bytes: u64,
        /// Every stream it was given ended holding its whole image, and its driver never
        /// faulted.
        whole: bool,
    },
    // ---- WIA 2.0 driver ----
    /// The driver called a method of an application's stream.
    Stream {
        /// The stream.
        stream: u32,
        /// The method.
        op: StreamMethod,
        /// The seek pointer when the call began.
        pos: u64,
        /// Write/Read: bytes offered or asked for; Seek: dlibMove; SetSize: the new size.
        arg: i64,
        /// Seek only: dwOrigin.
        #[serde(with = "opt_origin")]
        origin: Option<SeekOrigin>,
        /// Write/Read: bytes moved; Seek: the new position; Stat: the size.
        actual: u64,
        /// CRC-32 of the bytes written or read.
        crc: u32,
        /// Write: CRC-32 of what belongs at those bytes (see `stream-end`).
        expect_crc: u32,
        /// What the method returned.
        result: Hresult,
    },
}

/// `Option<SeekOrigin>` as a string, empty for none (so text leaves it out).
mod opt_origin {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::wia::SeekOrigin;

    pub fn serialize<S: Serializer>(o: &Option<SeekOrigin>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(o.map_or("", SeekOrigin::name))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SeekOrigin>, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(None);
        }
        serde_json::from_value(serde_json::Value::String(text))
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// One entry of a trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Virtual microseconds since the scenario started.
    pub at_us: u64,
    /// Who did it.
    pub actor: Actor,
    /// What happened, with its fields.
    #[serde(flatten)]
    pub kind: Kind,
}

/// A trace being recorded; cheap to clone, all clones append to the same list.
#[derive(Clone, Default)]
pub(crate) struct Recorder {
    events: Rc<RefCell<Vec<Event>>>,
}

impl Recorder {
    /// An empty trace.
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Appends an event.
    pub fn push(&self, at_us: u64, actor: Actor, kind: Kind) {
        self.events.borrow_mut().push(Event { at_us, actor, kind });
    }

    /// The events so far, sorted by time (stable: equal times keep recording order).
    pub fn finish(&self) -> Trace {
        let mut events = self.events.borrow().clone();
        events.sort_by_key(|e| e.at_us);
        Trace { events }
    }
}

/// A line of a JSON-lines trace that is not an event.
#[derive(Debug, thiserror::Error)]
#[error("line {line}:{}: {error}", error.column())]
pub struct TraceError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it (with its column).
    pub error: serde_json::Error,
}

/// A finished trace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// Events in time order.
    pub events: Vec<Event>,
}

impl Trace {
    /// One JSON object per line.
    pub fn to_json_lines(&self) -> String {
        let mut out = String::new();
        for e in &self.events {
            // Serializing plain data to a String cannot fail.
            out.push_str(&serde_json::to_string(e).unwrap_or_default());
            out.push('\n');
        }
        out
    }

    /// Parses JSON lines, naming the line of the first bad one.
    pub fn from_json_lines(text: &str) -> Result<Trace, TraceError> {
        let mut events = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let e: Event =
                serde_json::from_str(line).map_err(|error| TraceError { line: i + 1, error })?;
            events.push(e);
        }
        Ok(Trace { events })
    }

    /// Aligned text, one event per line: time, actor, event, fields.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for e in &self.events {
            let _ = writeln!(out, "{}", render_event(e));
        }
        out
    }
}

/// One event as a line of text, e.g.
/// `     2842 us  service callback               msg=IT_MSG_DATA status=4 percent=12 ...`.
///
/// Device events are named by what happened (`band-ready`, `motor-stopped`) and control
/// transfers by direction (`control-in`, `control-out`); other fields keep their declared order.
pub fn render_event(e: &Event) -> String {
    let value = serde_json::to_value(&e.kind).unwrap_or_default();
    let mut name = value
        .get("event")
        .and_then(|v| v.as_str())
        .unwrap_or("?")
        .to_string();
    let mut fields = String::new();
    if let Some(obj) = value.get("fields").and_then(|f| f.as_object()) {
        for (k, v) in obj {
            match (name.as_str(), k.as_str()) {
                ("device", "what") => {
                    name = v.as_str().unwrap_or("?").to_string();
                    continue;
                }
                ("control", "dir") => {
                    name = format!("control-{}", v.as_str().unwrap_or("?"));
                    continue;
                }
                _ => {}
            }
            let v = match v {
                serde_json::Value::String(s) if s.is_empty() => continue,
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let _ = write!(fields, " {k}={v}");
        }
    }
    format!(
        "{:>9} us  {:<7} {:<22}{}",
        e.at_us,
        e.actor.name(),
        name,
        fields
    )
}

/// CRC-32 (IEEE) of a payload, as traces record it.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}
