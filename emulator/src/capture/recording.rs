//! Recordings: one session with a scanner, kept as files so it can be replayed forever.
//!
//! A recording is a folder (the format is documented in `fixtures/recordings/FORMAT.md`):
//! - `recording.json`: [`RecordingMeta`], the device's identity and descriptors and where the
//!   recording came from;
//! - `transactions.jsonl`: one [`Transaction`] per line, in completion order: every control,
//!   bulk and interrupt transfer with its SETUP packet, payload (hex), result, submission and
//!   completion time, plus the host's clear-halts, resets and aborts;
//! - `notes.jsonl`: the device's own notes ([`RecordedNote`]), when the device could tell
//!   (an emulated one); empty for imported captures;
//! - `capture.pcap`: the same transfers as a usbmon capture ([`crate::capture::pcap`]), for Wireshark.
//!
//! [`RecordingObserver`] builds a recording from a live host (it is a [`HostObserver`]
//! decorator); `Recording::from_pcap` (in [`crate::capture::import`]) builds one from a usbmon
//! capture of a real device. [`Recording::to_pcap`] writes `capture.pcap` with the device
//! at the bus and address it had in its capture, so umockdev replays it.
//! The replay host (`ReplayHost`, beside this module) serves one as a device.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::capture::pcap::{self, CaptureConfig, PcapObserver, PcapWriter};
use crate::host::{DeviceInfo, HostObserver, TransferError, TransferKind, TransferRecord};
use crate::personality::{DeviceNote, NoteKind};
use crate::time::Instant;
use crate::usb::hc::{SetupPacket, ENUMERATION_ADDRESS};
use crate::usb::speed::Speed;

/// The version of the files this module writes; [`Recording::load`] refuses others.
pub const FORMAT_VERSION: u32 = 1;

/// File names inside a recording folder.
pub mod files {
    /// [`super::RecordingMeta`] as pretty JSON.
    pub const META: &str = "recording.json";
    /// [`super::Transaction`]s, one JSON object per line.
    pub const TRANSACTIONS: &str = "transactions.jsonl";
    /// [`super::RecordedNote`]s, one JSON object per line.
    pub const NOTES: &str = "notes.jsonl";
    /// The usbmon capture of the transactions.
    pub const CAPTURE: &str = "capture.pcap";
}

/// A recording that cannot be read or written, naming the file and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RecordingError {
    /// The file concerned.
    pub path: PathBuf,
    /// What is wrong, with the line where one is known.
    pub message: String,
}

impl RecordingError {
    fn new(path: &Path, message: impl Into<String>) -> RecordingError {
        RecordingError {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// What a [`Transaction`] was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TxKind {
    /// A control transfer on EP0.
    Control,
    /// A bulk transfer.
    Bulk,
    /// An interrupt transfer.
    Interrupt,
    /// CLEAR_FEATURE(ENDPOINT_HALT) on `ep`.
    ClearHalt,
    /// A port reset and re-enumeration.
    Reset,
    /// The host aborted the transfers pending on `ep` (not a request to the device).
    Abort,
}

impl From<TransferKind> for TxKind {
    fn from(k: TransferKind) -> TxKind {
        match k {
            TransferKind::Control => TxKind::Control,
            TransferKind::Bulk => TxKind::Bulk,
            TransferKind::Interrupt => TxKind::Interrupt,
            TransferKind::ClearHalt => TxKind::ClearHalt,
            TransferKind::Reset => TxKind::Reset,
            TransferKind::Abort => TxKind::Abort,
        }
    }
}

/// How a [`Transaction`] ended, by the names traces use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TxResult {
    /// Completed.
    Ok,
    /// The endpoint answered STALL.
    Stall,
    /// The host's timeout passed.
    Timeout,
    /// The host aborted it.
    Cancelled,
    /// The device was gone.
    NoDevice,
    /// The device sent more than the buffer held.
    Overflow,
    /// Any other failure.
    IoError,
    /// Still pending when the recording ended (a capture stopped while the device had not
    /// answered): a replay keeps a matching request pending until the host's timeout or abort.
    Pending,
}

impl TxResult {
    /// The result of a host operation.
    pub fn of(r: &Result<(), TransferError>) -> TxResult {
        match r {
            Ok(()) => TxResult::Ok,
            Err(TransferError::Stall) => TxResult::Stall,
            Err(TransferError::Timeout { .. }) => TxResult::Timeout,
            Err(TransferError::Cancelled { .. }) => TxResult::Cancelled,
            Err(TransferError::NoDevice) => TxResult::NoDevice,
            Err(TransferError::Overflow) => TxResult::Overflow,
            Err(TransferError::Io(_)) => TxResult::IoError,
        }
    }

    /// The error a host reports for this result after `actual` bytes (`None` for `Ok`).
    pub fn error(self, actual: usize) -> Option<TransferError> {
        Some(match self {
            TxResult::Ok => return None,
            TxResult::Stall => TransferError::Stall,
            TxResult::Timeout => TransferError::Timeout { actual },
            TxResult::Cancelled => TransferError::Cancelled { actual },
            TxResult::NoDevice => TransferError::NoDevice,
            TxResult::Overflow => TransferError::Overflow,
            TxResult::IoError => TransferError::Io("recorded i/o error".into()),
            TxResult::Pending => TransferError::Timeout { actual },
        })
    }

    /// The usbmon status of this result (0 or a negated errno; `-EINPROGRESS` while pending).
    pub fn usbmon_status(self) -> i32 {
        match self {
            TxResult::Pending => -crate::usb::usbmon::errno::EINPROGRESS,
            _ => self.error(0).map_or(0, |e| pcap::status_of(&e)),
        }
    }

    /// The result a usbmon status stands for.
    pub fn from_usbmon_status(status: i32) -> TxResult {
        use crate::usb::usbmon::errno;
        // i32::MIN has no negation: any other failure.
        match status.checked_neg().unwrap_or(i32::MIN) {
            0 => TxResult::Ok,
            errno::EPIPE => TxResult::Stall,
            errno::ETIMEDOUT => TxResult::Timeout,
            errno::ENOENT | errno::ECONNRESET => TxResult::Cancelled,
            errno::ENODEV | errno::ESHUTDOWN => TxResult::NoDevice,
            errno::EOVERFLOW => TxResult::Overflow,
            _ => TxResult::IoError,
        }
    }
}

/// A SETUP packet, field by field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SetupFields {
    /// bmRequestType.
    pub request_type: u8,
    /// bRequest.
    pub request: u8,
    /// wValue.
    pub value: u16,
    /// wIndex.
    pub index: u16,
    /// wLength.
    pub length: u16,
}

impl From<SetupPacket> for SetupFields {
    fn from(s: SetupPacket) -> SetupFields {
        SetupFields {
            request_type: s.request_type,
            request: s.request,
            value: s.value,
            index: s.index,
            length: s.length,
        }
    }
}

impl From<SetupFields> for SetupPacket {
    fn from(s: SetupFields) -> SetupPacket {
        SetupPacket {
            request_type: s.request_type,
            request: s.request,
            value: s.value,
            index: s.index,
            length: s.length,
        }
    }
}

/// One host operation of a recording: a line of `transactions.jsonl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// Position in completion order, from 0.
    pub seq: u64,
    /// What it was.
    pub kind: TxKind,
    /// Endpoint address (0x80 / 0x00 for control IN / OUT, the halted endpoint for
    /// clear-halt, 0 for resets).
    pub ep: u8,
    /// The SETUP packet of control transfers and clear-halts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<SetupFields>,
    /// Microseconds since the session started, when it was submitted.
    pub submitted_us: u64,
    /// Microseconds since the session started, when it completed.
    pub at_us: u64,
    /// Bytes requested (IN) or offered (OUT).
    pub requested: u32,
    /// The bytes moved, in lowercase hex (IN: what the device sent; OUT: what it took).
    #[serde(default)]
    pub data: String,
    /// How it ended.
    pub result: TxResult,
}

impl Transaction {
    /// The payload bytes (empty if `data` is not valid hex, which [`Recording::load`] refuses).
    pub fn bytes(&self) -> Vec<u8> {
        from_hex(&self.data).unwrap_or_default()
    }

    /// True for transfers whose data stage goes device to host.
    pub fn is_in(&self) -> bool {
        match self.kind {
            TxKind::Control => self.setup.is_some_and(|s| s.request_type & 0x80 != 0),
            TxKind::Bulk | TxKind::Interrupt => self.ep & 0x80 != 0,
            _ => false,
        }
    }

    /// How long it took.
    pub fn duration_us(&self) -> u64 {
        self.at_us.saturating_sub(self.submitted_us)
    }
}

/// A device note of a recording: a line of `notes.jsonl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedNote {
    /// Microseconds since the session started.
    pub at_us: u64,
    /// What happened (`band-ready`, `motor-stopped`, ...), as JSON field `what`.
    #[serde(rename = "what")]
    pub kind: NoteKind,
    /// Page concerned.
    pub page: u16,
    /// Band index, endpoint, count: depends on `what`.
    pub value: u64,
    /// Extra detail.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// `recording.json`: who the device is and where the recording came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingMeta {
    /// [`FORMAT_VERSION`].
    pub format: u32,
    /// `record` (a conformance run) or `pcap` (an imported usbmon capture).
    pub source: String,
    /// idVendor.
    pub vendor_id: u16,
    /// idProduct.
    pub product_id: u16,
    /// The 18-byte device descriptor, hex (empty when the capture did not show it).
    #[serde(default)]
    pub device_descriptor: String,
    /// The full configuration descriptor, hex (empty when unknown).
    #[serde(default)]
    pub config_descriptor: String,
    /// Bus speed (sets usbmon's interrupt interval unit).
    #[serde(default)]
    pub speed: Speed,
    /// The bus the device was on (imported captures); `capture.pcap` names it (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<u16>,
    /// The device's address on that bus (imported captures); `capture.pcap` names it (default
    /// the in-process host's address, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_address: Option<u8>,
    /// How long the device's motor takes to stop after a host cancel, used when a replay has
    /// to answer a cancel the recording does not hold (default 40000).
    #[serde(default = "default_motor_stop_us")]
    pub motor_stop_us: u64,
    /// Free-form provenance: scenario, driver, service, transport, profile, capture file.
    #[serde(default)]
    pub provenance: BTreeMap<String, String>,
}

fn default_motor_stop_us() -> u64 {
    40_000
}

impl RecordingMeta {
    /// Metadata for a device with `info`'s descriptors.
    pub fn new(source: &str, info: &DeviceInfo, speed: Speed, motor_stop_us: u64) -> Self {
        RecordingMeta {
            format: FORMAT_VERSION,
            source: source.to_string(),
            vendor_id: info.vendor_id,
            product_id: info.product_id,
            device_descriptor: to_hex(&info.device_descriptor),
            config_descriptor: to_hex(&info.config_descriptor),
            speed,
            bus: None,
            device_address: None,
            motor_stop_us,
            provenance: BTreeMap::new(),
        }
    }

    /// Where `capture.pcap` puts the device: the recorded bus and address, else bus 1 at the
    /// in-process host's address.
    pub fn capture_config(&self) -> CaptureConfig {
        CaptureConfig {
            bus: self.bus.unwrap_or(1),
            device: self.device_address.unwrap_or(ENUMERATION_ADDRESS),
            ..CaptureConfig::with_speed(self.speed)
        }
    }

    /// The device's identity and descriptors, as a host reports them.
    pub fn device_info(&self) -> DeviceInfo {
        DeviceInfo {
            vendor_id: self.vendor_id,
            product_id: self.product_id,
            device_descriptor: from_hex(&self.device_descriptor).unwrap_or_default(),
            config_descriptor: from_hex(&self.config_descriptor).unwrap_or_default(),
        }
    }
}

/// A whole recording in memory. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recording {
    /// `recording.json`.
    pub meta: RecordingMeta,
    /// `transactions.jsonl`, in completion order.
    pub transactions: Vec<Transaction>,
    /// `notes.jsonl`, in time order.
    pub notes: Vec<RecordedNote>,
}

impl Recording {
    /// Writes the recording into `dir` (created if missing): `recording.json`,
    /// `transactions.jsonl`, `notes.jsonl` and `capture.pcap`. Other files are left alone.
    pub fn save(&self, dir: &Path) -> Result<(), RecordingError> {
        std::fs::create_dir_all(dir).map_err(|e| RecordingError::new(dir, e.to_string()))?;
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).map_err(|e| RecordingError::new(&path, e.to_string()))
        };
        let meta = serde_json::to_string_pretty(&self.meta).unwrap_or_default() + "\n";
        write(files::META, meta.as_bytes())?;
        write(
            files::TRANSACTIONS,
            json_lines(&self.transactions).as_bytes(),
        )?;
        write(files::NOTES, json_lines(&self.notes).as_bytes())?;
        write(files::CAPTURE, &self.to_pcap())
    }

    /// Reads the recording in `dir`; every problem names its file and line.
    pub fn load(dir: &Path) -> Result<Recording, RecordingError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map_err(|e| RecordingError::new(&path, e.to_string()))
                .map(|text| (path, text))
        };
        let (path, text) = read(files::META)?;
        let meta: RecordingMeta = serde_json::from_str(&text).map_err(|e| {
            RecordingError::new(&path, format!("line {}:{}: {e}", e.line(), e.column()))
        })?;
        if meta.format != FORMAT_VERSION {
            return Err(RecordingError::new(
                &path,
                format!(
                    "format {} is not the supported {FORMAT_VERSION}",
                    meta.format
                ),
            ));
        }
        for (field, hex) in [
            ("device_descriptor", &meta.device_descriptor),
            ("config_descriptor", &meta.config_descriptor),
        ] {
            if from_hex(hex).is_none() {
                return Err(RecordingError::new(&path, format!("{field} is not hex")));
            }
        }
        let (path, text) = read(files::TRANSACTIONS)?;
        let transactions: Vec<Transaction> = parse_lines(&path, &text)?;
        for (i, t) in transactions.iter().enumerate() {
            if from_hex(&t.data).is_none() {
                return Err(RecordingError::new(
                    &path,
                    format!("line {}: data is not hex", i + 1),
                ));
            }
        }
        let notes = match read(files::NOTES) {
            Ok((path, text)) => parse_lines(&path, &text)?,
            Err(_) if !dir.join(files::NOTES).exists() => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(Recording {
            meta,
            transactions,
            notes,
        })
    }

    /// The transactions as a usbmon capture (classic pcap, link type 220), the device at the
    /// bus and address of [`RecordingMeta::capture_config`]. Each transfer's `S` record comes
    /// right before its `C` record, in completion order; transfers still pending at the end
    /// have their `S` record only, after all the others. Resets and aborts are not URBs and
    /// have no record, as in a kernel capture.
    pub fn to_pcap(&self) -> Vec<u8> {
        let Ok(writer) = PcapWriter::new(Vec::new()) else {
            return Vec::new();
        };
        let capture =
            PcapObserver::new(writer, &self.meta.device_info(), self.meta.capture_config());
        let (done, pending): (Vec<&Transaction>, Vec<&Transaction>) = self
            .transactions
            .iter()
            .partition(|t| t.result != TxResult::Pending);
        for (t, is_pending) in done
            .into_iter()
            .map(|t| (t, false))
            .chain(pending.into_iter().map(|t| (t, true)))
        {
            let data = t.bytes();
            let record = TransferRecord {
                submitted: Instant::from_micros(t.submitted_us),
                at: Instant::from_micros(t.at_us),
                kind: match t.kind {
                    TxKind::Control => TransferKind::Control,
                    TxKind::Bulk => TransferKind::Bulk,
                    TxKind::Interrupt => TransferKind::Interrupt,
                    TxKind::ClearHalt => TransferKind::ClearHalt,
                    TxKind::Reset => TransferKind::Reset,
                    TxKind::Abort => TransferKind::Abort,
                },
                ep: t.ep,
                setup: t.setup.map(SetupPacket::from),
                requested: t.requested as usize,
                data: &data,
                result: t.result.error(data.len()).map_or(Ok(()), Err),
            };
            if is_pending {
                capture.pending(&record);
            } else {
                capture.transfer(&record);
            }
        }
        capture.finish().unwrap_or_default()
    }
}

fn json_lines<T: Serialize>(items: &[T]) -> String {
    let mut out = String::new();
    for item in items {
        out.push_str(&serde_json::to_string(item).unwrap_or_default());
        out.push('\n');
    }
    out
}

fn parse_lines<T: for<'de> Deserialize<'de>>(
    path: &Path,
    text: &str,
) -> Result<Vec<T>, RecordingError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(line).map_err(|e| {
            RecordingError::new(path, format!("line {}:{}: {e}", i + 1, e.column()))
        })?);
    }
    Ok(out)
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The bytes of a hex string, or `None` if it is not hex.
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A [`HostObserver`] decorator that keeps every transfer and device note as a
/// [`Recording`], then passes it on to the observer it wraps (if any), like
/// [`PcapObserver`]: `new(..).wrapping(inner)`.
pub struct RecordingObserver {
    inner: Option<Rc<dyn HostObserver>>,
    recording: RefCell<Recording>,
}

impl std::fmt::Debug for RecordingObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.recording.borrow();
        f.debug_struct("RecordingObserver")
            .field("transactions", &r.transactions.len())
            .field("notes", &r.notes.len())
            .finish()
    }
}

impl RecordingObserver {
    /// Starts a recording whose metadata is `meta` (fill in the descriptors later with
    /// [`RecordingObserver::set_device_info`] if the host does not exist yet).
    pub fn new(meta: RecordingMeta) -> RecordingObserver {
        RecordingObserver {
            inner: None,
            recording: RefCell::new(Recording {
                meta,
                transactions: Vec::new(),
                notes: Vec::new(),
            }),
        }
    }

    /// Passes every record and note on to `inner` as well.
    pub fn wrapping(mut self, inner: Rc<dyn HostObserver>) -> RecordingObserver {
        self.inner = Some(inner);
        self
    }

    /// The observer records and notes are passed on to, if any.
    pub fn inner(&self) -> Option<&Rc<dyn HostObserver>> {
        self.inner.as_ref()
    }

    /// Takes the device's identity and descriptors from `info`.
    pub fn set_device_info(&self, info: &DeviceInfo) {
        let mut r = self.recording.borrow_mut();
        r.meta.vendor_id = info.vendor_id;
        r.meta.product_id = info.product_id;
        r.meta.device_descriptor = to_hex(&info.device_descriptor);
        r.meta.config_descriptor = to_hex(&info.config_descriptor);
    }

    /// Adds a provenance entry (`scenario`, `driver`, ...).
    pub fn set_provenance(&self, key: &str, value: &str) {
        self.recording
            .borrow_mut()
            .meta
            .provenance
            .insert(key.to_string(), value.to_string());
    }

    /// The recording so far (notes sorted by time).
    pub fn recording(&self) -> Recording {
        let mut r = self.recording.borrow().clone();
        r.notes.sort_by_key(|n| n.at_us);
        r
    }
}

impl HostObserver for RecordingObserver {
    fn transfer(&self, r: &TransferRecord<'_>) {
        {
            let mut rec = self.recording.borrow_mut();
            let seq = rec.transactions.len() as u64;
            rec.transactions.push(Transaction {
                seq,
                kind: r.kind.into(),
                ep: r.ep,
                setup: r.setup.map(SetupFields::from),
                submitted_us: r.submitted.total_micros(),
                at_us: r.at.total_micros(),
                requested: u32::try_from(r.requested).unwrap_or(u32::MAX),
                data: to_hex(r.data),
                result: TxResult::of(&r.result),
            });
        }
        if let Some(inner) = &self.inner {
            inner.transfer(r);
        }
    }

    fn device(&self, note: &DeviceNote) {
        self.recording.borrow_mut().notes.push(RecordedNote {
            at_us: note.at.total_micros(),
            kind: note.kind,
            page: note.page,
            value: note.value,
            detail: note.detail.to_string(),
        });
        if let Some(inner) = &self.inner {
            inner.device(note);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(to_hex(&bytes), "0001abff");
        assert_eq!(from_hex("0001abff").as_deref(), Some(&bytes[..]));
        assert_eq!(from_hex("0g"), None);
        assert_eq!(from_hex("abc"), None);
    }

    #[test]
    fn usbmon_status_round_trips() {
        for r in [
            TxResult::Ok,
            TxResult::Stall,
            TxResult::Timeout,
            TxResult::Cancelled,
            TxResult::NoDevice,
            TxResult::Overflow,
            TxResult::IoError,
        ] {
            assert_eq!(TxResult::from_usbmon_status(r.usbmon_status()), r);
        }
        assert_eq!(TxResult::from_usbmon_status(i32::MIN), TxResult::IoError);
    }

    #[test]
    fn pcap_import_refuses_other_files_with_a_reason() {
        let e = Recording::from_pcap(b"hello", None)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("not a pcap or pcapng file: "), "{e}");
        let e = Recording::from_pcap(b"abc", None).unwrap_err().to_string();
        assert!(e.contains("shorter than any file header"), "{e}");
        let mut header = vec![0u8; 24];
        header[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        header[20..24].copy_from_slice(&1u32.to_le_bytes());
        assert!(Recording::from_pcap(&header, None)
            .unwrap_err()
            .to_string()
            .contains("link type 1"));
    }
}
