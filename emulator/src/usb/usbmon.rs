//! The usbmon capture format: Linux's `usbmon` binary records in a classic pcap file, and the
//! Linux errno values both usbmon and USB/IP report.
//!
//! The file format is classic pcap (microsecond timestamps, little-endian) with link type
//! [`LINKTYPE_USB_LINUX_MMAPPED`] (220): each record is a 64-byte usbmon header followed by the
//! captured payload, exactly as Linux's `usbmon` binary interface delivers it (and as QEMU's
//! `pcap=` property writes it). Each USB transfer (URB) gives two records: its submission (`S`)
//! and its completion (`C`), sharing one URB id.
//!
//! What goes where, following the kernel (`drivers/usb/mon/mon_bin.c`):
//! - `S` records carry the URB's buffer length in `urb_len`, status `-EINPROGRESS`, the 8-byte
//!   SETUP packet of control transfers, and the payload of OUT transfers;
//! - `C` records carry the actual length in `urb_len`, the final status (0, `-EPIPE` for a
//!   stall, `-ENOENT` for a cancelled URB, `-ETIMEDOUT`, ...), and the payload of IN transfers;
//! - the data flag is `<` on IN submissions and `>` on OUT completions (no data by design), 0
//!   when data follows; the setup flag is 0 when a SETUP packet is present, `-` otherwise.
//!
//! Timestamps are [`Instant`]s of the session clock, never the wall clock's: a virtual-time
//! capture is byte-identical on every run. [`UsbmonEvent`] is one record ([`UsbmonEvent::decode`]
//! reads one, 64- or 48-byte header, either byte order), [`PcapWriter`] writes them; reading
//! whole files is `capture::read`. This module knows nothing of hosts or devices (the observer that turns a host's
//! transfers into records is `capture::pcap`, the USB/IP server writes its own).

use std::io::{self, Write};

use crate::time::Instant;

/// The pcap link type of usbmon's binary ("mmapped") records with 64-byte headers.
pub const LINKTYPE_USB_LINUX_MMAPPED: u32 = 220;
/// The pcap link type of usbmon's first binary records, with 48-byte headers (no interval,
/// start frame, transfer flags or isochronous descriptor count); old libpcap wrote it.
pub const LINKTYPE_USB_LINUX: u32 = 189;
/// Size of the usbmon header in front of every record's payload.
pub const USBMON_HEADER_LEN: usize = 64;
/// Size of the header of [`LINKTYPE_USB_LINUX`] records.
pub const USBMON_HEADER_LEN_48: usize = 48;
/// The default snapshot length: the most payload bytes kept per record (larger payloads are
/// cut, `urb_len` still tells the full length).
pub const DEFAULT_SNAPLEN: u32 = 16 << 20;

/// Linux errno values, as usbmon reports them (negated in the status field) and USB/IP carries
/// them (negated in `RET_SUBMIT`'s status): the one table of both.
pub mod errno {
    /// No such file or directory: the URB was killed (`usb_kill_urb`, usbfs discard), or no
    /// such endpoint.
    pub const ENOENT: i32 = 2;
    /// No such device (submitted to a device that is gone).
    pub const ENODEV: i32 = 19;
    /// Invalid request.
    pub const EINVAL: i32 = 22;
    /// Broken pipe: the endpoint stalled.
    pub const EPIPE: i32 = 32;
    /// Protocol error.
    pub const EPROTO: i32 = 71;
    /// Value too large: the device babbled (sent more than the buffer holds).
    pub const EOVERFLOW: i32 = 75;
    /// Connection reset: the URB was unlinked asynchronously (cancelled by the host).
    pub const ECONNRESET: i32 = 104;
    /// The device was shut down: disconnected (or reset) while the URB was pending.
    pub const ESHUTDOWN: i32 = 108;
    /// Timed out.
    pub const ETIMEDOUT: i32 = 110;
    /// Operation in progress: the status of every submission.
    pub const EINPROGRESS: i32 = 115;
}

/// The usbmon event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// `S`: the URB was submitted.
    Submit,
    /// `C`: the URB completed (successfully or not).
    Complete,
    /// `E`: the submission itself failed.
    Error,
}

impl EventType {
    /// The byte usbmon writes.
    pub const fn code(self) -> u8 {
        match self {
            EventType::Submit => b'S',
            EventType::Complete => b'C',
            EventType::Error => b'E',
        }
    }
}

impl TryFrom<u8> for EventType {
    type Error = RecordError;

    fn try_from(code: u8) -> Result<EventType, RecordError> {
        match code {
            b'S' => Ok(EventType::Submit),
            b'C' => Ok(EventType::Complete),
            b'E' => Ok(EventType::Error),
            other => Err(RecordError::EventType(other)),
        }
    }
}

/// The usbmon transfer type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransferType {
    /// Isochronous (0).
    Isochronous = 0,
    /// Interrupt (1).
    Interrupt = 1,
    /// Control (2).
    Control = 2,
    /// Bulk (3).
    Bulk = 3,
}

impl TryFrom<u8> for TransferType {
    type Error = RecordError;

    fn try_from(code: u8) -> Result<TransferType, RecordError> {
        match code {
            0 => Ok(TransferType::Isochronous),
            1 => Ok(TransferType::Interrupt),
            2 => Ok(TransferType::Control),
            3 => Ok(TransferType::Bulk),
            other => Err(RecordError::TransferType(other)),
        }
    }
}

/// Why bytes are not a usbmon record ([`UsbmonEvent::decode`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The record is shorter than its header.
    #[error("{len} bytes, shorter than the {header}-byte usbmon header")]
    Short {
        /// The record's length.
        len: usize,
        /// The header's length.
        header: usize,
    },
    /// An event type other than `S`, `C` and `E`.
    #[error("unknown usbmon event type {0:#04x}")]
    EventType(u8),
    /// A transfer type other than 0..=3.
    #[error("unknown usbmon transfer type {0}")]
    TransferType(u8),
}

/// `URB_DIR_IN`, the kernel's transfer flag for IN URBs.
pub const URB_DIR_IN: u32 = 0x0200;

/// One usbmon event: the header fields and the payload that follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsbmonEvent<'a> {
    /// URB id: the same for an URB's `S` and `C` records, different for every URB (never 0:
    /// umockdev reads 0 as "not submitted").
    pub id: u64,
    /// Submission, completion or error.
    pub event: EventType,
    /// Transfer type.
    pub transfer_type: TransferType,
    /// Endpoint address with the direction bit (0x80 for IN; control IN is 0x80).
    pub endpoint: u8,
    /// Device address on the bus.
    pub device: u8,
    /// Bus number.
    pub bus: u16,
    /// The SETUP packet (control submissions only).
    pub setup: Option<[u8; 8]>,
    /// When it happened, on the session clock.
    pub at: Instant,
    /// 0 or a negated errno (`-EINPROGRESS` for submissions).
    pub status: i32,
    /// Buffer length (submission) or actual length (completion).
    pub urb_len: u32,
    /// The payload captured (OUT data on submission, IN data on completion).
    pub data: &'a [u8],
    /// Polling interval of interrupt and isochronous URBs (frames or microframes), else 0.
    pub interval: i32,
    /// Start frame of isochronous URBs, else 0.
    pub start_frame: i32,
    /// The URB's transfer flags ([`URB_DIR_IN`] ...).
    pub xfer_flags: u32,
    /// Isochronous descriptors that follow the header (always 0 here).
    pub ndesc: u32,
}

impl UsbmonEvent<'_> {
    /// The data flag: 0 when data follows, else why not (as the kernel writes it).
    fn data_flag(&self, captured: usize) -> u8 {
        let is_in = self.endpoint & 0x80 != 0;
        match self.event {
            // mon_bin_error: an error record never carries data.
            EventType::Error => b'E',
            _ if captured > 0 => 0,
            EventType::Submit if is_in => b'<',
            EventType::Complete if !is_in => b'>',
            _ => 0,
        }
    }

    /// The 64-byte header, with `captured` payload bytes following it.
    pub fn header(&self, captured: usize) -> [u8; USBMON_HEADER_LEN] {
        let mut h = [0u8; USBMON_HEADER_LEN];
        let micros = self.at.total_micros();
        h[0..8].copy_from_slice(&self.id.to_le_bytes());
        h[8] = self.event.code();
        h[9] = self.transfer_type as u8;
        h[10] = self.endpoint;
        h[11] = self.device;
        h[12..14].copy_from_slice(&self.bus.to_le_bytes());
        h[14] = if self.setup.is_some() { 0 } else { b'-' };
        h[15] = self.data_flag(captured);
        h[16..24].copy_from_slice(&((micros / 1_000_000) as i64).to_le_bytes());
        h[24..28].copy_from_slice(&((micros % 1_000_000) as i32).to_le_bytes());
        h[28..32].copy_from_slice(&self.status.to_le_bytes());
        h[32..36].copy_from_slice(&self.urb_len.to_le_bytes());
        h[36..40].copy_from_slice(&(captured as u32).to_le_bytes());
        if let Some(setup) = self.setup {
            h[40..48].copy_from_slice(&setup);
        }
        h[48..52].copy_from_slice(&self.interval.to_le_bytes());
        h[52..56].copy_from_slice(&self.start_frame.to_le_bytes());
        h[56..60].copy_from_slice(&self.xfer_flags.to_le_bytes());
        h[60..64].copy_from_slice(&self.ndesc.to_le_bytes());
        h
    }
}

impl<'a> UsbmonEvent<'a> {
    /// Reads one record: a `header_len`-byte header ([`USBMON_HEADER_LEN`] for link type 220,
    /// [`USBMON_HEADER_LEN_48`] for 189) in the capturing host's byte order (`big_endian`),
    /// then the captured payload, which becomes [`UsbmonEvent::data`]. The header's own
    /// timestamp is not read: `at` comes from the file (pcap keeps both, and they agree).
    ///
    /// The SETUP packet is taken from control submissions whose setup flag is 0; the fields
    /// 189 records lack (interval, start frame, transfer flags, descriptor count) read as 0.
    pub fn decode(
        record: &'a [u8],
        header_len: usize,
        big_endian: bool,
        at: Instant,
    ) -> Result<UsbmonEvent<'a>, RecordError> {
        if record.len() < header_len || header_len < USBMON_HEADER_LEN_48 {
            return Err(RecordError::Short {
                len: record.len(),
                header: header_len,
            });
        }
        let u32_at = |o: usize| {
            let b = [record[o], record[o + 1], record[o + 2], record[o + 3]];
            if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let mut id = [0u8; 8];
        id.copy_from_slice(&record[0..8]);
        let bus = [record[12], record[13]];
        let event = EventType::try_from(record[8])?;
        let transfer_type = TransferType::try_from(record[9])?;
        let setup = (record[14] == 0
            && transfer_type == TransferType::Control
            && event == EventType::Submit)
            .then(|| {
                let mut s = [0u8; 8];
                s.copy_from_slice(&record[40..48]);
                s
            });
        let wide = header_len >= USBMON_HEADER_LEN;
        let field = |o: usize| if wide { u32_at(o) } else { 0 };
        Ok(UsbmonEvent {
            id: if big_endian {
                u64::from_be_bytes(id)
            } else {
                u64::from_le_bytes(id)
            },
            event,
            transfer_type,
            endpoint: record[10],
            device: record[11],
            bus: if big_endian {
                u16::from_be_bytes(bus)
            } else {
                u16::from_le_bytes(bus)
            },
            setup,
            at,
            status: u32_at(28) as i32,
            urb_len: u32_at(32),
            data: &record[header_len..],
            interval: field(48) as i32,
            start_frame: field(52) as i32,
            xfer_flags: field(56),
            ndesc: field(60),
        })
    }
}

/// Writes a classic pcap file of usbmon records to `W`.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
    snaplen: u32,
    records: u64,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the pcap file header (link type 220, [`DEFAULT_SNAPLEN`]) to `out`.
    pub fn new(out: W) -> io::Result<PcapWriter<W>> {
        PcapWriter::with_snaplen(out, DEFAULT_SNAPLEN)
    }

    /// As [`PcapWriter::new`], keeping at most `snaplen` bytes of each record (header included;
    /// at least the 64-byte header).
    pub fn with_snaplen(mut out: W, snaplen: u32) -> io::Result<PcapWriter<W>> {
        let snaplen = snaplen.max(USBMON_HEADER_LEN as u32);
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone 0, sigfigs 0.
        h[16..20].copy_from_slice(&snaplen.to_le_bytes());
        h[20..24].copy_from_slice(&LINKTYPE_USB_LINUX_MMAPPED.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter {
            out,
            snaplen,
            records: 0,
        })
    }

    /// Appends one record.
    pub fn write_event(&mut self, event: &UsbmonEvent<'_>) -> io::Result<()> {
        let room = self.snaplen as usize - USBMON_HEADER_LEN;
        let captured = event.data.len().min(room);
        let micros = event.at.total_micros();
        let mut rec = [0u8; 16];
        rec[0..4].copy_from_slice(&((micros / 1_000_000) as u32).to_le_bytes());
        rec[4..8].copy_from_slice(&((micros % 1_000_000) as u32).to_le_bytes());
        let incl = (USBMON_HEADER_LEN + captured) as u32;
        let orig = (USBMON_HEADER_LEN + event.data.len()) as u32;
        rec[8..12].copy_from_slice(&incl.to_le_bytes());
        rec[12..16].copy_from_slice(&orig.to_le_bytes());
        self.out.write_all(&rec)?;
        self.out.write_all(&event.header(captured))?;
        self.out.write_all(&event.data[..captured])?;
        self.records += 1;
        Ok(())
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The underlying writer.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// The underlying writer, mutably (writing to it corrupts the file).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Flushes and returns the underlying writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}
