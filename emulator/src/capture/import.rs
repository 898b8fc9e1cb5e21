//! Importing a usbmon capture of a real device as a [`Recording`].
//!
//! A capture of a USB bus holds every device on it: root hubs, the device someone meant to
//! capture, and whatever else was plugged in (a webcam answering `lsusb`, a Bluetooth
//! adapter). [`devices`] lists them ([`CaptureDevice`]: bus, address, identity, class, how many
//! transfers), [`choose`] picks the one to import ([`DeviceChoice`]), and [`import`] turns its
//! transfers into a recording:
//!
//! - each URB's `S` and `C` (or `E`) records become one [`Transaction`], in completion order;
//!   records are paired by URB id within their capture interface;
//! - an `S` without a completion (a transfer still pending when the capture stopped) is kept,
//!   after the completed ones, with result [`TxResult::Pending`] and `at_us` the capture's end;
//! - a completion without an `S` (the capture started while it was pending) counts as
//!   submitted when it completed;
//! - a standard CLEAR_FEATURE(ENDPOINT_HALT) becomes a `clear-halt`;
//! - GET_DESCRIPTOR replies fill in the device and configuration descriptors;
//! - the recording keeps the device's bus and address, so its `capture.pcap` names the device
//!   as the original did (umockdev replays a capture by bus and address);
//! - timestamps later than one day are taken as wall-clock and counted from the capture's
//!   first record.
//!
//! Records at address 0 belong to a device in its default state, before it has an address
//! (enumeration); they are never imported.

use std::collections::BTreeMap;
use std::fmt;

use crate::capture::read::{read_capture, CaptureFile, CaptureReadError, CapturedRecord};
use crate::capture::recording::{
    to_hex, Recording, RecordingMeta, SetupFields, Transaction, TxKind, TxResult,
};
use crate::host::DeviceInfo;
use crate::usb::descriptor::{self, DeviceDescriptor};
use crate::usb::hc::SetupPacket;
use crate::usb::speed::Speed;
use crate::usb::usbmon::{errno, EventType, TransferType, UsbmonEvent};
use crate::usb::{descriptor_type, Request};

/// Which device of a capture to import.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The one non-hub device that was used (see [`choose`]).
    #[default]
    Auto,
    /// The device with this address, on whichever bus it is.
    Address(u8),
    /// The device with this address on this bus.
    BusAddress(u16, u8),
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("the used device"),
            DeviceChoice::Address(a) => write!(f, "address {a}"),
            DeviceChoice::BusAddress(b, a) => write!(f, "{b}:{a}"),
        }
    }
}

/// A `--device` value that is neither `ADDRESS` nor `BUS:ADDRESS`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not ADDRESS or BUS:ADDRESS (for example 11 or 1:11)")]
pub struct BadDeviceChoice(pub String);

impl std::str::FromStr for DeviceChoice {
    type Err = BadDeviceChoice;

    fn from_str(s: &str) -> Result<DeviceChoice, BadDeviceChoice> {
        let bad = || BadDeviceChoice(s.to_string());
        match s.split_once([':', '.']) {
            None => s.parse().map(DeviceChoice::Address).map_err(|_| bad()),
            Some((bus, addr)) => Ok(DeviceChoice::BusAddress(
                bus.parse().map_err(|_| bad())?,
                addr.parse().map_err(|_| bad())?,
            )),
        }
    }
}

/// One device seen in a capture ([`devices`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureDevice {
    /// Bus number.
    pub bus: u16,
    /// Device address.
    pub address: u8,
    /// idVendor and idProduct, where the capture holds its device descriptor.
    pub id: Option<(u16, u16)>,
    /// The device's class in words (`HID (03)`), from its descriptors; `?` where the capture
    /// holds none.
    pub class: String,
    /// True for a hub: class 09, or it was sent hub port requests.
    pub hub: bool,
    /// URBs of the device: completed ones and the ones still pending at the end.
    pub transfers: usize,
    /// True when it did more than answer standard requests: a bulk, interrupt or
    /// isochronous transfer that was not unlinked, or a class or vendor request.
    pub used: bool,
}

impl CaptureDevice {
    /// `BUS:ADDRESS`, as `--device` takes it.
    pub fn position(&self) -> String {
        format!("{}:{}", self.bus, self.address)
    }

    /// `VID:PID` in hex, or `????:????`.
    pub fn id_text(&self) -> String {
        match self.id {
            Some((v, p)) => format!("{v:04x}:{p:04x}"),
            None => "????:????".into(),
        }
    }
}

impl fmt::Display for CaptureDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.position(), self.id_text(), self.class)
    }
}

/// Why a capture could not be imported.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read.
    #[error(transparent)]
    Read(#[from] CaptureReadError),
    /// No device other than hubs made a transfer.
    #[error("the capture holds no USB transfer of a device other than a hub")]
    NoDevice,
    /// The automatic choice found several devices.
    #[error("{count} devices could be the one to import: {list}; pick one with --device BUS:ADDRESS (--list shows them all)")]
    Ambiguous {
        /// How many.
        count: usize,
        /// Each as `BUS:ADDRESS VID:PID class`, separated by commas.
        list: String,
    },
    /// `--device` names no device of the capture.
    #[error("no device at {choice} in the capture; it holds {list}")]
    NotFound {
        /// The choice.
        choice: DeviceChoice,
        /// The devices it holds.
        list: String,
    },
    /// An isochronous transfer of the chosen device.
    #[error("packet {packet}: isochronous transfers are not supported")]
    Isochronous {
        /// Packet number, from 1.
        packet: usize,
    },
}

/// What [`import`] made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    /// The recording.
    pub recording: Recording,
    /// The device imported.
    pub device: CaptureDevice,
    /// Records whose payload the capture cut (its snapshot length), so the recording holds
    /// fewer bytes than the device moved.
    pub truncated: usize,
}

/// One URB: its submission and its completion, as far as the capture shows them (at least
/// one of the two).
struct Urb<'c, 'a> {
    submit: Option<&'c CapturedRecord<'a>>,
    done: Option<&'c CapturedRecord<'a>>,
    /// The completion, else the submission.
    last: &'c CapturedRecord<'a>,
}

impl<'c, 'a> Urb<'c, 'a> {
    fn submitted(submit: &'c CapturedRecord<'a>) -> Urb<'c, 'a> {
        Urb {
            submit: Some(submit),
            done: None,
            last: submit,
        }
    }

    fn any(&self) -> &UsbmonEvent<'a> {
        &self.last.event
    }

    fn setup(&self) -> Option<SetupPacket> {
        self.submit
            .and_then(|s| s.event.setup)
            .and_then(|b| SetupPacket::parse(&b).ok())
    }
}

/// Pairs the records into URBs: completed ones in completion order, then the ones still
/// pending at the end in submission order.
fn urbs<'c, 'a>(file: &'c CaptureFile<'a>) -> Vec<Urb<'c, 'a>> {
    let mut pending: BTreeMap<(usize, u16, u8, u64), &CapturedRecord<'a>> = BTreeMap::new();
    let mut out = Vec::new();
    for r in &file.records {
        let key = (r.interface, r.event.bus, r.event.device, r.event.id);
        match r.event.event {
            EventType::Submit => {
                // An id seen again before its completion: the earlier URB never completed.
                if let Some(old) = pending.insert(key, r) {
                    out.push(Urb::submitted(old));
                }
            }
            EventType::Complete | EventType::Error => out.push(Urb {
                submit: pending.remove(&key),
                done: Some(r),
                last: r,
            }),
        }
    }
    let (done, mut open): (Vec<_>, Vec<_>) = out.into_iter().partition(|u| u.done.is_some());
    open.extend(pending.into_values().map(Urb::submitted));
    open.sort_by_key(|u| u.last.packet);
    done.into_iter().chain(open).collect()
}

/// The name of a USB class code.
fn class_name(code: u8) -> &'static str {
    match code {
        0x00 => "per interface",
        0x01 => "audio",
        0x02 => "CDC",
        0x03 => "HID",
        0x05 => "physical",
        0x06 => "still image",
        0x07 => "printer",
        0x08 => "mass storage",
        0x09 => "hub",
        0x0a => "CDC data",
        0x0b => "smart card",
        0x0d => "content security",
        0x0e => "video",
        0x0f => "healthcare",
        0x10 => "audio/video",
        0xdc => "diagnostic",
        0xe0 => "wireless",
        0xef => "miscellaneous",
        0xfe => "application",
        0xff => "vendor",
        _ => "class",
    }
}

/// The class column of a device: its device class, or its interfaces' classes where the
/// device leaves the class to them (00, or EF with interface associations).
fn describe_class(device: Option<&DeviceDescriptor>, config: &[u8]) -> String {
    let named = |c: u8| format!("{} ({c:02x})", class_name(c));
    if let Some(d) = device.filter(|d| d.class != 0 && d.class != 0xef) {
        return named(d.class);
    }
    let mut classes: Vec<u8> = Vec::new();
    for d in descriptor::walk(config) {
        if d.len() >= 9
            && d[1] == descriptor_type::INTERFACE
            && d[3] == 0
            && !classes.contains(&d[5])
        {
            classes.push(d[5]);
        }
    }
    match (classes.is_empty(), device) {
        (false, _) => classes
            .into_iter()
            .map(named)
            .collect::<Vec<_>>()
            .join(", "),
        (true, Some(d)) => named(d.class),
        (true, None) => "?".into(),
    }
}

/// A completed standard GET_DESCRIPTOR of `kind`: its reply.
fn descriptor_reply<'a>(u: &Urb<'_, 'a>, kind: u8) -> Option<&'a [u8]> {
    let s = u.setup()?;
    let done = u.done?;
    (s.request_type == 0x80
        && s.request == Request::GET_DESCRIPTOR
        && (s.value >> 8) as u8 == kind
        && done.event.status == 0)
        .then_some(done.event.data)
}

/// Every device of the capture with at least one transfer, by bus and address; address 0
/// (devices not yet addressed) is left out.
pub fn devices(file: &CaptureFile<'_>) -> Vec<CaptureDevice> {
    struct Seen {
        transfers: usize,
        used: bool,
        hub_requests: bool,
        device: Option<DeviceDescriptor>,
        config: Vec<u8>,
    }
    let mut seen: BTreeMap<(u16, u8), Seen> = BTreeMap::new();
    for u in urbs(file) {
        let e = u.any();
        if e.device == 0 {
            continue;
        }
        let s = seen.entry((e.bus, e.device)).or_insert(Seen {
            transfers: 0,
            used: false,
            hub_requests: false,
            device: None,
            config: Vec::new(),
        });
        s.transfers += 1;
        let unlinked = u.done.is_some_and(|d| {
            d.event.status == -errno::ENOENT || d.event.status == -errno::ECONNRESET
        });
        match (e.transfer_type, u.setup()) {
            (TransferType::Control, Some(setup)) => {
                s.used |= setup.request_type & 0x60 != 0;
                // Class requests to a port ("other" recipient) go to hubs only.
                s.hub_requests |= setup.request_type & 0x7f == 0x23;
            }
            (TransferType::Control, None) => {}
            _ => s.used |= !unlinked,
        }
        if let Some(d) = descriptor_reply(&u, descriptor_type::DEVICE).filter(|d| d.len() >= 18) {
            s.device = Some(DeviceDescriptor::read(d));
        }
        if let Some(c) = descriptor_reply(&u, descriptor_type::CONFIGURATION) {
            if c.len() > s.config.len() {
                s.config = c.to_vec();
            }
        }
    }
    seen.into_iter()
        .map(|((bus, address), s)| CaptureDevice {
            bus,
            address,
            id: s.device.map(|d| (d.vendor_id, d.product_id)),
            class: describe_class(s.device.as_ref(), &s.config),
            hub: s.hub_requests || s.device.is_some_and(|d| d.class == 0x09),
            transfers: s.transfers,
            used: s.used && !s.hub_requests,
        })
        .collect()
}

fn list(devices: &[&CaptureDevice]) -> String {
    devices
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The device `choice` names among `devices` ([`devices`]).
///
/// [`DeviceChoice::Auto`] takes the one device that is no hub and was used (it did more than
/// answer standard requests: a bulk, interrupt or isochronous transfer that was not unlinked,
/// or a class or vendor request); where no device was used, the one device that is no hub.
/// Anything else is [`ImportError::Ambiguous`], naming the devices to choose from.
pub fn choose(devices: &[CaptureDevice], choice: DeviceChoice) -> Result<usize, ImportError> {
    let all: Vec<&CaptureDevice> = devices.iter().collect();
    let pick = |found: Vec<usize>, fallback: &[&CaptureDevice]| match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(ImportError::NotFound {
            choice,
            list: list(fallback),
        }),
        many => Err(ImportError::Ambiguous {
            count: many.len(),
            list: list(&many.iter().map(|&i| &devices[i]).collect::<Vec<_>>()),
        }),
    };
    let indices = |f: &dyn Fn(&CaptureDevice) -> bool| -> Vec<usize> {
        (0..devices.len()).filter(|&i| f(&devices[i])).collect()
    };
    match choice {
        DeviceChoice::Address(a) => pick(indices(&|d| d.address == a), &all),
        DeviceChoice::BusAddress(b, a) => pick(indices(&|d| d.bus == b && d.address == a), &all),
        DeviceChoice::Auto => {
            let used = indices(&|d| !d.hub && d.used);
            let candidates = indices(&|d| !d.hub);
            match (used.len(), candidates.len()) {
                (1, _) => Ok(used[0]),
                (0, 0) => Err(ImportError::NoDevice),
                (0, 1) => Ok(candidates[0]),
                (0, _) => pick(candidates, &all),
                _ => pick(used, &all),
            }
        }
    }
}

impl Recording {
    /// Builds a recording from a usbmon capture (pcap or pcapng) of the device `device`
    /// chooses (default [`DeviceChoice::Auto`]): [`import`] without its report.
    pub fn from_pcap(bytes: &[u8], device: Option<DeviceChoice>) -> Result<Recording, ImportError> {
        import(bytes, device.unwrap_or_default()).map(|i| i.recording)
    }
}

/// Reads `bytes` (pcap or pcapng) and imports the device `choice` names. See the module
/// documentation.
pub fn import(bytes: &[u8], choice: DeviceChoice) -> Result<Imported, ImportError> {
    let file = read_capture(bytes)?;
    let found = devices(&file);
    let device = found[choose(&found, choice)?].clone();
    let first = file
        .records
        .first()
        .map_or(0, |r| r.event.at.total_micros());
    let base = if first > 86_400_000_000 { first } else { 0 };
    let end = file
        .records
        .last()
        .map_or(0, |r| r.event.at.total_micros())
        .saturating_sub(base);
    let mut transactions = Vec::new();
    let mut info = DeviceInfo::default();
    let mut speed = Speed::High;
    let mut truncated = 0;
    for u in urbs(&file) {
        let e = u.any();
        if (e.bus, e.device) != (device.bus, device.address) {
            continue;
        }
        let packet = u.last.packet;
        let seq = transactions.len() as u64;
        let t = transaction_of(seq, &u, base, end).ok_or(ImportError::Isochronous { packet })?;
        truncated += [u.submit, u.done]
            .into_iter()
            .flatten()
            .filter(|r| {
                let carries = match r.event.event {
                    EventType::Submit => r.event.endpoint & 0x80 == 0,
                    _ => r.event.endpoint & 0x80 != 0,
                };
                carries && (r.event.data.len() as u64) < u64::from(r.event.urb_len)
            })
            .count();
        note_descriptor(&t, &mut info, &mut speed);
        transactions.push(t);
    }
    let mut meta = RecordingMeta::new("pcap", &info, speed, 40_000);
    meta.bus = Some(device.bus);
    meta.device_address = Some(device.address);
    Ok(Imported {
        recording: Recording {
            meta,
            transactions,
            notes: Vec::new(),
        },
        device,
        truncated,
    })
}

/// The transaction of one URB (`None` for an isochronous one).
fn transaction_of(seq: u64, u: &Urb<'_, '_>, base: u64, end: u64) -> Option<Transaction> {
    let e = u.any();
    let setup = u.setup().map(SetupFields::from);
    // A control transfer's direction is its SETUP packet's (usbmon also marks control IN
    // records 0x80, but not every tool that writes usbmon records does).
    let is_in = match (e.transfer_type, setup) {
        (TransferType::Control, Some(s)) => s.request_type & 0x80 != 0,
        _ => e.endpoint & 0x80 != 0,
    };
    let (kind, ep) = match e.transfer_type {
        TransferType::Control => match setup {
            Some(s) if s.request_type == 0x02 && s.request == 1 && s.value == 0 => {
                (TxKind::ClearHalt, s.index as u8)
            }
            _ => (TxKind::Control, if is_in { 0x80 } else { 0x00 }),
        },
        TransferType::Bulk => (TxKind::Bulk, e.endpoint),
        TransferType::Interrupt => (TxKind::Interrupt, e.endpoint),
        TransferType::Isochronous => return None,
    };
    let offered = u.submit.map_or(&[][..], |s| s.event.data);
    let (data, result, at) = match u.done {
        Some(done) => {
            let result = if done.event.event == EventType::Error {
                TxResult::IoError
            } else {
                TxResult::from_usbmon_status(done.event.status)
            };
            // OUT completions tell how many bytes the device took.
            let data = if is_in {
                done.event.data
            } else {
                &offered[..(done.event.urb_len as usize).min(offered.len())]
            };
            (data, result, done.event.at.total_micros())
        }
        None => (
            if is_in { &[][..] } else { offered },
            TxResult::Pending,
            end + base,
        ),
    };
    let submitted = u.submit.map_or(at, |s| s.event.at.total_micros());
    // A control transfer's buffer is wLength long (the kernel's `S` says so too).
    let requested = match (setup, u.submit) {
        (Some(s), _) => u32::from(s.length),
        (None, Some(s)) => s.event.urb_len,
        (None, None) => u.last.event.urb_len,
    };
    Some(Transaction {
        seq,
        kind,
        ep,
        setup,
        submitted_us: submitted.saturating_sub(base),
        at_us: at.saturating_sub(base),
        requested,
        data: to_hex(data),
        result,
    })
}

/// Takes the device and configuration descriptors from GET_DESCRIPTOR replies.
fn note_descriptor(t: &Transaction, info: &mut DeviceInfo, speed: &mut Speed) {
    let Some(s) = t.setup else { return };
    if t.kind != TxKind::Control
        || s.request_type != 0x80
        || s.request != Request::GET_DESCRIPTOR
        || t.result != TxResult::Ok
    {
        return;
    }
    let data = t.bytes();
    match (s.value >> 8) as u8 {
        descriptor_type::DEVICE if data.len() >= 18 => {
            let d = DeviceDescriptor::read(&data);
            info.vendor_id = d.vendor_id;
            info.product_id = d.product_id;
            // bcdUSB 1.x is full (or low) speed at most; 3.x SuperSpeed.
            *speed = match d.usb_version >> 8 {
                0 | 1 => Speed::Full,
                2 => Speed::High,
                _ => Speed::Super,
            };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_choices_parse_as_lsusb_writes_them() {
        assert_eq!("11".parse(), Ok(DeviceChoice::Address(11)));
        assert_eq!("1:11".parse(), Ok(DeviceChoice::BusAddress(1, 11)));
        assert_eq!("2.3".parse(), Ok(DeviceChoice::BusAddress(2, 3)));
        assert!("1:x".parse::<DeviceChoice>().is_err());
        assert!("300".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn class_names_follow_the_interfaces_where_the_device_defers() {
        let mut dd = DeviceDescriptor {
            class: 0x09,
            ..DeviceDescriptor::default()
        };
        assert_eq!(describe_class(Some(&dd), &[]), "hub (09)");
        dd.class = 0;
        let config = [
            9, 2, 27, 0, 1, 1, 0, 0x80, 50, // configuration
            9, 4, 0, 0, 1, 3, 1, 1, 0, // interface 0: HID boot keyboard
            9, 4, 1, 0, 1, 0xff, 0, 0, 0, // interface 1: vendor
        ];
        assert_eq!(describe_class(Some(&dd), &config), "HID (03), vendor (ff)");
        assert_eq!(describe_class(None, &[]), "?");
    }
}
