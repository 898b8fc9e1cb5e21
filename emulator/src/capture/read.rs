//! Reading usbmon captures: classic pcap and pcapng files, as tcpdump, dumpcap, Wireshark,
//! QEMU and scanlab write them, through the `pcap-file` crate.
//!
//! [`read_capture`] takes the whole file and gives every usbmon record in it, in file order,
//! each with the interface it came from and its packet number (Wireshark's frame number). What
//! it accepts:
//! - classic pcap in either byte order, with microsecond or nanosecond timestamps;
//! - pcapng with any number of sections and interfaces, each section in its own byte order,
//!   timestamps scaled by each interface's `if_tsresol` and `if_tsoffset`;
//! - link type 220 (64-byte usbmon headers) and 189 (48-byte headers), also mixed in one
//!   pcapng file. Packets of interfaces with another link type (a capture of a network
//!   interface beside a USB bus) are counted in [`CaptureFile::skipped`] and left out; a file
//!   with no usbmon interface at all is an error.
//!
//! usbmon headers are in the capturing host's byte order, which is the byte order the file
//! (or pcapng section) was written in: they are read that way, as libpcap does. A damaged or
//! truncated file is a [`CaptureReadError`] naming the byte where reading stopped, never a
//! panic.

use pcap_file::pcap::{PcapParseError, PcapParser};
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgParseError, PcapNgParser};
use pcap_file::Endianness;

use crate::time::Instant;
use crate::usb::usbmon::{
    RecordError, UsbmonEvent, LINKTYPE_USB_LINUX, LINKTYPE_USB_LINUX_MMAPPED, USBMON_HEADER_LEN,
    USBMON_HEADER_LEN_48,
};

/// The container a capture came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// Classic pcap (libpcap's format).
    Pcap,
    /// pcapng (Wireshark's default).
    PcapNg,
}

impl std::fmt::Display for FileFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileFormat::Pcap => "pcap",
            FileFormat::PcapNg => "pcapng",
        })
    }
}

/// One capture interface: a classic pcap file has one, a pcapng file one per Interface
/// Description Block (over all its sections).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureInterface {
    /// The pcap link type (220 or 189 for usbmon).
    pub linktype: u32,
    /// `if_name` (`usbmon1`), empty where the file does not say.
    pub name: String,
    /// True when its records are big-endian.
    pub big_endian: bool,
}

impl CaptureInterface {
    /// The length of its usbmon headers, `None` when it is no usbmon interface.
    pub fn usbmon_header_len(&self) -> Option<usize> {
        match self.linktype {
            LINKTYPE_USB_LINUX_MMAPPED => Some(USBMON_HEADER_LEN),
            LINKTYPE_USB_LINUX => Some(USBMON_HEADER_LEN_48),
            _ => None,
        }
    }
}

/// One usbmon record of a capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedRecord<'a> {
    /// Packet number in the file, from 1 (Wireshark's frame number).
    pub packet: usize,
    /// Index into [`CaptureFile::interfaces`].
    pub interface: usize,
    /// The record; its `at` is the packet's timestamp in microseconds since the epoch (or
    /// since whatever origin the capturing tool used).
    pub event: UsbmonEvent<'a>,
}

/// A whole capture, read by [`read_capture`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureFile<'a> {
    /// pcap or pcapng.
    pub format: FileFormat,
    /// Every interface of the file, usbmon or not.
    pub interfaces: Vec<CaptureInterface>,
    /// The usbmon records, in file order.
    pub records: Vec<CapturedRecord<'a>>,
    /// Packets of interfaces that are not usbmon, left out.
    pub skipped: usize,
}

/// Why a capture could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CaptureReadError {
    /// The file does not start like a pcap or pcapng file.
    #[error("not a pcap or pcapng file: {0}")]
    NotACapture(String),
    /// The file is damaged or ends early at byte `at`.
    #[error("{format} damaged at byte {at} (after packet {packet}): {message}")]
    Damaged {
        /// The container.
        format: FileFormat,
        /// Where reading stopped.
        at: usize,
        /// Packets read before it.
        packet: usize,
        /// What is wrong.
        message: String,
    },
    /// A packet of a usbmon interface is not a usbmon record.
    #[error("packet {packet} at byte {at}: {error}")]
    Record {
        /// Packet number, from 1.
        packet: usize,
        /// Its offset in the file.
        at: usize,
        /// What is wrong.
        error: RecordError,
    },
    /// No interface of the file is usbmon.
    #[error("link type {0} is not usbmon (220 or 189)")]
    LinkType(u32),
}

/// An error and its sources in one line (pcap-file's outer errors often say only "invalid
/// format" and keep the reason in their source).
fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s.replace('\n', " ")
}

/// A file that ends inside `what`.
fn truncated(what: &str, need: usize, got: usize) -> String {
    format!("the file ends inside a {what}: {need} bytes needed, {got} left")
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The pcapng magic (a Section Header Block's type), in either byte order.
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
/// Classic pcap's magics: microsecond and nanosecond timestamps.
const PCAP_MAGICS: [u32; 2] = [0xa1b2_c3d4, 0xa1b2_3c4d];

/// Reads every usbmon record of a pcap or pcapng file (told apart by their first bytes, not by
/// the file name). See the module documentation.
pub fn read_capture(bytes: &[u8]) -> Result<CaptureFile<'_>, CaptureReadError> {
    if bytes.len() < 4 {
        return Err(CaptureReadError::NotACapture(format!(
            "{} bytes, shorter than any file header",
            bytes.len()
        )));
    }
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    let mut file = if magic == PCAPNG_MAGIC {
        read_pcapng(bytes)?
    } else if PCAP_MAGICS
        .iter()
        .any(|m| magic == m.to_le_bytes() || magic == m.to_be_bytes())
    {
        read_pcap(bytes)?
    } else {
        return Err(CaptureReadError::NotACapture(format!(
            "it starts with {:02x} {:02x} {:02x} {:02x}, neither a pcap nor a pcapng magic",
            magic[0], magic[1], magic[2], magic[3]
        )));
    };
    if file.records.is_empty() && file.skipped > 0 {
        let other = file
            .interfaces
            .iter()
            .find(|i| i.usbmon_header_len().is_none())
            .map_or(0, |i| i.linktype);
        return Err(CaptureReadError::LinkType(other));
    }
    if let Some(first) = file.interfaces.first() {
        if file
            .interfaces
            .iter()
            .all(|i| i.usbmon_header_len().is_none())
        {
            return Err(CaptureReadError::LinkType(first.linktype));
        }
    }
    file.records.shrink_to_fit();
    Ok(file)
}

fn read_pcap(bytes: &[u8]) -> Result<CaptureFile<'_>, CaptureReadError> {
    let (mut rest, parser) = PcapParser::new(bytes).map_err(|e| match e {
        PcapParseError::IncompleteBuffer(need, got) => CaptureReadError::Damaged {
            format: FileFormat::Pcap,
            at: 0,
            packet: 0,
            message: truncated("file header", need, got),
        },
        e => CaptureReadError::NotACapture(one_line(&e)),
    })?;
    let header = parser.header();
    let interface = CaptureInterface {
        linktype: u32::from(header.datalink),
        name: String::new(),
        big_endian: header.endianness == Endianness::Big,
    };
    let header_len = interface.usbmon_header_len();
    let mut file = CaptureFile {
        format: FileFormat::Pcap,
        interfaces: vec![interface],
        records: Vec::new(),
        skipped: 0,
    };
    let big = file.interfaces[0].big_endian;
    while !rest.is_empty() {
        let at = bytes.len() - rest.len();
        let packet = file.records.len() + file.skipped + 1;
        let (next, p) = parser
            .next_packet(rest)
            .map_err(|e| CaptureReadError::Damaged {
                format: FileFormat::Pcap,
                at,
                packet: packet - 1,
                message: match e {
                    PcapParseError::IncompleteBuffer(need, got) => truncated("packet", need, got),
                    e => one_line(&e),
                },
            })?;
        rest = next;
        let Some(header_len) = header_len else {
            file.skipped += 1;
            continue;
        };
        let when = Instant::from_micros(micros(p.timestamp()));
        let data: &[u8] = match p.into_data() {
            std::borrow::Cow::Borrowed(d) => d,
            // The slice parser always borrows; an owned copy would be a new pcap-file
            // behaviour, read as a damaged file rather than trusted.
            std::borrow::Cow::Owned(_) => {
                return Err(CaptureReadError::Damaged {
                    format: FileFormat::Pcap,
                    at,
                    packet: packet - 1,
                    message: "packet data not in the file".into(),
                })
            }
        };
        let event = UsbmonEvent::decode(data, header_len, big, when)
            .map_err(|error| CaptureReadError::Record { packet, at, error })?;
        file.records.push(CapturedRecord {
            packet,
            interface: 0,
            event,
        });
    }
    Ok(file)
}

fn read_pcapng(bytes: &[u8]) -> Result<CaptureFile<'_>, CaptureReadError> {
    let (mut rest, mut parser) = PcapNgParser::new(bytes).map_err(|e| match e {
        PcapNgParseError::IncompleteBuffer(need, got) => CaptureReadError::Damaged {
            format: FileFormat::PcapNg,
            at: 0,
            packet: 0,
            message: truncated("section header block", need, got),
        },
        e => CaptureReadError::NotACapture(one_line(&e)),
    })?;
    let mut file = CaptureFile {
        format: FileFormat::PcapNg,
        interfaces: Vec::new(),
        records: Vec::new(),
        skipped: 0,
    };
    // Interfaces are numbered per section; `first` is the current section's first one.
    let mut first = 0usize;
    let mut last_at = Instant::ZERO;
    let mut big = parser.section().endianness == Endianness::Big;
    while !rest.is_empty() {
        let at = bytes.len() - rest.len();
        let packets = file.records.len() + file.skipped;
        let damaged = |message: String| CaptureReadError::Damaged {
            format: FileFormat::PcapNg,
            at,
            packet: packets,
            message,
        };
        let (next, block) = parser.next_block(rest).map_err(|e| {
            damaged(match e {
                PcapNgParseError::IncompleteBuffer(need, got) => truncated("block", need, got),
                e => one_line(&e),
            })
        })?;
        rest = next;
        let (interface, when, data) = match block {
            Block::SectionHeader(shb) => {
                first = file.interfaces.len();
                big = shb.endianness == Endianness::Big;
                continue;
            }
            Block::InterfaceDescription(idb) => {
                let name = idb.options.iter().find_map(|o| match o {
                    InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
                    _ => None,
                });
                file.interfaces.push(CaptureInterface {
                    linktype: u32::from(idb.linktype),
                    name: name.unwrap_or_default(),
                    big_endian: big,
                });
                continue;
            }
            Block::EnhancedPacket(epb) => {
                (epb.interface_id as usize, Some(epb.timestamp), epb.data)
            }
            Block::Packet(pb) => (usize::from(pb.interface_id), Some(pb.timestamp), pb.data),
            // A Simple Packet Block belongs to the section's first interface and has no time:
            // it keeps the time of the packet before it.
            Block::SimplePacket(spb) => (0, None, spb.data),
            _ => continue,
        };
        let packet = packets + 1;
        let index = first + interface;
        let Some(iface) = file.interfaces.get(index).filter(|_| index >= first) else {
            return Err(damaged(format!(
                "packet {packet} names interface {interface}, which the section does not \
                 describe"
            )));
        };
        let Some(header_len) = iface.usbmon_header_len() else {
            file.skipped += 1;
            continue;
        };
        let data: &[u8] = match data {
            std::borrow::Cow::Borrowed(d) => d,
            std::borrow::Cow::Owned(_) => {
                return Err(damaged("packet data not in the file".into()));
            }
        };
        if let Some(t) = when {
            last_at = Instant::from_micros(micros(t));
        }
        let event = UsbmonEvent::decode(data, header_len, iface.big_endian, last_at)
            .map_err(|error| CaptureReadError::Record { packet, at, error })?;
        file.records.push(CapturedRecord {
            packet,
            interface: index,
            event,
        });
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usb::usbmon::{EventType, PcapWriter, TransferType};

    fn one_record_pcap() -> Vec<u8> {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write_event(&UsbmonEvent {
            id: 7,
            event: EventType::Submit,
            transfer_type: TransferType::Bulk,
            endpoint: 0x02,
            device: 3,
            bus: 2,
            setup: None,
            at: Instant::from_micros(1_500_000),
            status: -115,
            urb_len: 4,
            data: &[1, 2, 3, 4],
            interval: 0,
            start_frame: 0,
            xfer_flags: 0,
            ndesc: 0,
        })
        .unwrap();
        w.into_inner().unwrap()
    }

    #[test]
    fn reads_back_what_the_writer_wrote() {
        let bytes = one_record_pcap();
        let file = read_capture(&bytes).unwrap();
        assert_eq!(file.format, FileFormat::Pcap);
        assert_eq!(file.records.len(), 1);
        let e = &file.records[0].event;
        assert_eq!((e.id, e.bus, e.device, e.endpoint), (7, 2, 3, 0x02));
        assert_eq!(e.at, Instant::from_micros(1_500_000));
        assert_eq!(e.data, &[1, 2, 3, 4]);
        assert_eq!(e.status, -115);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = one_record_pcap();
        for cut in 0..bytes.len() {
            let r = read_capture(&bytes[..cut]);
            if cut == 24 {
                // The header alone is a capture without packets.
                assert_eq!(r.unwrap().records.len(), 0);
                continue;
            }
            let e = r.expect_err("a truncated file is refused").to_string();
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn other_link_types_are_refused_by_number() {
        let mut bytes = one_record_pcap();
        bytes[20..24].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(
            read_capture(&bytes).unwrap_err(),
            CaptureReadError::LinkType(1)
        );
    }
}
