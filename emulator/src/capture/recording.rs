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
//! decorator); [`Recording::from_pcap`] builds one from a usbmon capture of a real device.
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
use crate::usb::descriptor::DeviceDescriptor;
use crate::usb::hc::SetupPacket;
use crate::usb::speed::Speed;
use crate::usb::{descriptor_type, usbmon, Request};

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
        })
    }

    /// The usbmon status of this result (0 or a negated errno).
    pub fn usbmon_status(self) -> i32 {
        self.error(0).map_or(0, |e| pcap::status_of(&e))
    }

    /// The result a usbmon status stands for.
    pub fn from_usbmon_status(status: i32) -> TxResult {
        use crate::usb::usbmon::errno;
        match -status {
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
            motor_stop_us,
            provenance: BTreeMap::new(),
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

    /// The transactions as a usbmon capture (classic pcap, link type 220). Resets and aborts
    /// are not URBs and have no record, as in a kernel capture.
    pub fn to_pcap(&self) -> Vec<u8> {
        let Ok(writer) = PcapWriter::new(Vec::new()) else {
            return Vec::new();
        };
        let capture = PcapObserver::new(
            writer,
            &self.meta.device_info(),
            CaptureConfig::with_speed(self.meta.speed),
        );
        for t in &self.transactions {
            let data = t.bytes();
            capture.transfer(&TransferRecord {
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
            });
        }
        capture.finish().unwrap_or_default()
    }

    /// Builds a recording from a usbmon capture: classic pcap (either byte order, micro- or
    /// nanosecond timestamps) with link type 220 (64-byte headers) or 189 (48-byte headers).
    ///
    /// Each URB's `S` and `C` records become one [`Transaction`] (in `C` order); an `S` with no
    /// `C` (a transfer still pending when the capture stopped) is left out; a `C` or `E` with
    /// no `S` counts as submitted when it completed. A standard CLEAR_FEATURE(ENDPOINT_HALT)
    /// becomes a `clear-halt`. The device is the one of the first non-root URB unless
    /// `device_address` picks one. GET_DESCRIPTOR replies fill in the descriptors. Timestamps
    /// later than one day are taken as wall-clock and counted from the first record.
    pub fn from_pcap(
        bytes: &[u8],
        device_address: Option<u8>,
    ) -> Result<Recording, PcapImportError> {
        let records = parse_pcap(bytes)?;
        let device = device_address
            .or_else(|| records.iter().map(|r| r.device).find(|d| *d != 0))
            .ok_or(PcapImportError::NoTransfer)?;
        let base = records.first().map_or(0, |r| r.at_us);
        let base = if base > 86_400_000_000 { base } else { 0 };
        let mut pending: BTreeMap<u64, UsbmonRecord> = BTreeMap::new();
        let mut transactions = Vec::new();
        let mut info = DeviceInfo::default();
        let mut speed = Speed::High;
        for r in records.into_iter().filter(|r| r.device == device) {
            match r.event {
                b'S' => {
                    pending.insert(r.id, r);
                }
                b'C' | b'E' => {
                    let submit = pending.remove(&r.id);
                    let t = transaction_of(transactions.len() as u64, submit.as_ref(), &r, base)?;
                    note_descriptor(&t, &mut info, &mut speed);
                    transactions.push(t);
                }
                other => {
                    return Err(PcapImportError::EventType {
                        index: r.index,
                        event: other as char,
                    })
                }
            }
        }
        let mut meta = RecordingMeta::new("pcap", &info, speed, default_motor_stop_us());
        meta.provenance
            .insert("device_address".into(), device.to_string());
        Ok(Recording {
            meta,
            transactions,
            notes: Vec::new(),
        })
    }
}

/// Why a usbmon capture could not be imported ([`Recording::from_pcap`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PcapImportError {
    /// The file is shorter than a pcap file header.
    #[error("not a pcap file: shorter than the 24-byte file header")]
    Short,
    /// The file is pcapng.
    #[error("pcapng is not supported: convert it with `editcap -F pcap`")]
    Pcapng,
    /// The file does not start with a pcap magic number.
    #[error("not a pcap file: magic {0:#010x}")]
    Magic(u32),
    /// The link type is not usbmon's.
    #[error("link type {0} is not usbmon (220 or 189)")]
    LinkType(u32),
    /// The file ends inside a record header.
    #[error("record {index} at byte {at}: truncated record header")]
    TruncatedHeader {
        /// Record number, from 1.
        index: usize,
        /// Its offset in the file.
        at: usize,
    },
    /// The file ends inside a record.
    #[error("record {index} at byte {at}: {announced} bytes announced, file ends first")]
    Truncated {
        /// Record number, from 1.
        index: usize,
        /// Its offset in the file.
        at: usize,
        /// The length its header announces.
        announced: usize,
    },
    /// A record is shorter than the usbmon header.
    #[error(
        "record {index} at byte {at}: {len} bytes, shorter than the {header}-byte usbmon header"
    )]
    ShortRecord {
        /// Record number, from 1.
        index: usize,
        /// Its offset in the file.
        at: usize,
        /// Its length.
        len: usize,
        /// The usbmon header's length.
        header: usize,
    },
    /// A usbmon event type other than `S`, `C` and `E`.
    #[error("record {index}: unknown usbmon event type {event:?}")]
    EventType {
        /// Record number, from 1.
        index: usize,
        /// The event byte.
        event: char,
    },
    /// An isochronous transfer.
    #[error("record {index}: transfer type {kind} (isochronous) is not supported")]
    Isochronous {
        /// Record number, from 1.
        index: usize,
        /// The usbmon transfer type.
        kind: u8,
    },
    /// The capture holds no transfer of any device.
    #[error("the capture holds no USB transfer")]
    NoTransfer,
}

/// One usbmon record read from a capture.
struct UsbmonRecord {
    index: usize,
    id: u64,
    event: u8,
    transfer_type: u8,
    endpoint: u8,
    device: u8,
    setup: Option<[u8; 8]>,
    at_us: u64,
    status: i32,
    urb_len: u32,
    data: Vec<u8>,
}

fn parse_pcap(bytes: &[u8]) -> Result<Vec<UsbmonRecord>, PcapImportError> {
    if bytes.len() < 24 {
        return Err(PcapImportError::Short);
    }
    let magic = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let (big, nanos) = match magic {
        0xa1b2_c3d4 => (false, false),
        0xa1b2_3c4d => (false, true),
        0xd4c3_b2a1 => (true, false),
        0x4d3c_b2a1 => (true, true),
        0x0a0d_0d0a => return Err(PcapImportError::Pcapng),
        other => return Err(PcapImportError::Magic(other)),
    };
    let u32_at = |b: &[u8], at: usize| {
        let w = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if big {
            u32::from_be_bytes(w)
        } else {
            u32::from_le_bytes(w)
        }
    };
    let linktype = u32_at(bytes, 20);
    let header_len = match linktype {
        usbmon::LINKTYPE_USB_LINUX_MMAPPED => usbmon::USBMON_HEADER_LEN,
        189 => 48,
        other => return Err(PcapImportError::LinkType(other)),
    };
    let mut out = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        let index = out.len() + 1;
        let rec = bytes
            .get(at..at + 16)
            .ok_or(PcapImportError::TruncatedHeader { index, at })?;
        let (sec, frac, incl) = (u32_at(rec, 0), u32_at(rec, 4), u32_at(rec, 8) as usize);
        let body = bytes
            .get(at + 16..at + 16 + incl)
            .ok_or(PcapImportError::Truncated {
                index,
                at,
                announced: incl,
            })?;
        if body.len() < header_len {
            return Err(PcapImportError::ShortRecord {
                index,
                at,
                len: body.len(),
                header: header_len,
            });
        }
        // usbmon headers are in the capturing host's byte order: little-endian here.
        let le32 = |o: usize| u32::from_le_bytes([body[o], body[o + 1], body[o + 2], body[o + 3]]);
        let micros = u64::from(sec) * 1_000_000
            + if nanos {
                u64::from(frac) / 1000
            } else {
                u64::from(frac)
            };
        let mut id = [0u8; 8];
        id.copy_from_slice(&body[0..8]);
        out.push(UsbmonRecord {
            index,
            id: u64::from_le_bytes(id),
            event: body[8],
            transfer_type: body[9],
            endpoint: body[10],
            device: body[11],
            setup: (body[14] == 0 && body[9] == 2 && body[8] == b'S').then(|| {
                let mut s = [0u8; 8];
                s.copy_from_slice(&body[40..48]);
                s
            }),
            at_us: micros,
            status: le32(28) as i32,
            urb_len: le32(32),
            data: body[header_len..].to_vec(),
        });
        at += 16 + incl;
    }
    Ok(out)
}

fn transaction_of(
    seq: u64,
    submit: Option<&UsbmonRecord>,
    done: &UsbmonRecord,
    base: u64,
) -> Result<Transaction, PcapImportError> {
    let setup = submit
        .and_then(|s| s.setup)
        .and_then(|b| SetupPacket::parse(&b).ok())
        .map(SetupFields::from);
    let (kind, ep) = match done.transfer_type {
        2 => match setup {
            Some(s) if s.request_type == 0x02 && s.request == 1 && s.value == 0 => {
                (TxKind::ClearHalt, s.index as u8)
            }
            _ => (TxKind::Control, done.endpoint & 0x80),
        },
        3 => (TxKind::Bulk, done.endpoint),
        1 => (TxKind::Interrupt, done.endpoint),
        other => {
            return Err(PcapImportError::Isochronous {
                index: done.index,
                kind: other,
            })
        }
    };
    let is_in = done.endpoint & 0x80 != 0;
    let data = if is_in {
        done.data.clone()
    } else {
        submit.map(|s| s.data.clone()).unwrap_or_default()
    };
    let result = if done.event == b'E' {
        TxResult::IoError
    } else {
        TxResult::from_usbmon_status(done.status)
    };
    // OUT completions tell how many bytes the device took.
    let data = if is_in {
        data
    } else {
        let took = (done.urb_len as usize).min(data.len());
        data[..took].to_vec()
    };
    let requested = submit.map_or(done.urb_len, |s| s.urb_len);
    Ok(Transaction {
        seq,
        kind,
        ep,
        setup,
        submitted_us: submit.map_or(done.at_us, |s| s.at_us).saturating_sub(base),
        at_us: done.at_us.saturating_sub(base),
        requested,
        data: to_hex(&data),
        result,
    })
}

/// Takes the device and configuration descriptors from GET_DESCRIPTOR replies.
fn note_descriptor(t: &Transaction, info: &mut DeviceInfo, speed: &mut Speed) {
    let Some(s) = t.setup else { return };
    if t.kind != TxKind::Control || s.request_type != 0x80 || s.request != Request::GET_DESCRIPTOR {
        return;
    }
    let data = t.bytes();
    match (s.value >> 8) as u8 {
        descriptor_type::DEVICE if data.len() >= 18 => {
            let d = DeviceDescriptor::read(&data);
            info.vendor_id = d.vendor_id;
            info.product_id = d.product_id;
            // bcdUSB 2.x with a 64-byte EP0 is high speed at most; 1.x is full speed.
            if d.usb_version >> 8 < 2 {
                *speed = Speed::Full;
            } else if d.usb_version >> 8 >= 3 {
                *speed = Speed::Super;
            }
            info.device_descriptor = data;
        }
        descriptor_type::CONFIGURATION if data.len() >= 4 => {
            let total = usize::from(u16::from_le_bytes([data[2], data[3]]));
            if data.len() >= total && data.len() >= info.config_descriptor.len() {
                info.config_descriptor = data;
            }
        }
        _ => {}
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
    if s.len() % 2 != 0 {
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
    }

    #[test]
    fn pcap_import_refuses_other_files_with_a_reason() {
        assert!(Recording::from_pcap(b"hello", None)
            .unwrap_err()
            .to_string()
            .contains("shorter"));
        let mut header = vec![0u8; 24];
        header[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        header[20..24].copy_from_slice(&1u32.to_le_bytes());
        assert!(Recording::from_pcap(&header, None)
            .unwrap_err()
            .to_string()
            .contains("link type 1"));
    }
}
