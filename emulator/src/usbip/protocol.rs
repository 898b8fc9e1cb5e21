//! The USB/IP wire format (protocol version 1.1.1), encode and decode with strict validation.
//!
//! Source: <https://docs.kernel.org/usb/usbip_protocol.html>. Every field is big-endian.
//!
//! - Operations, before a device is imported: an 8-byte header (version 0x0111, code, status).
//!   `OP_REQ_DEVLIST` (0x8005) is answered by `OP_REP_DEVLIST` (0x0005): a device count, then per
//!   device a 312-byte [`DeviceRecord`] followed by one 4-byte [`InterfaceRecord`] per
//!   interface. `OP_REQ_IMPORT` (0x8003) carries a 32-byte bus id and is answered by
//!   `OP_REP_IMPORT` (0x0003): the status, then (on success only) the 312-byte record.
//! - URB traffic, after a successful import: 48-byte headers. A 20-byte basic header (command,
//!   seqnum, devid, direction, ep) then 28 command-specific bytes. `USBIP_CMD_SUBMIT` (1) is
//!   followed by the OUT data; `USBIP_RET_SUBMIT` (3) by the IN data; `USBIP_CMD_UNLINK` (2)
//!   and `USBIP_RET_UNLINK` (4) carry no payload.
//!
//! Decoding never trusts a length: a transfer longer than [`Limits::max_transfer`] or an
//! isochronous packet count is refused before any buffer is allocated, so a hostile peer cannot
//! make the reader allocate gigabytes or lose its place in the stream unnoticed.

use std::io::{self, Read, Write};

use thiserror::Error;

use crate::usb::hc::SetupPacket;

/// The protocol version every message carries: 1.1.1.
pub const VERSION: u16 = 0x0111;
/// The IANA port of USB/IP.
pub const DEFAULT_PORT: u16 = 3240;

/// Operation code: request the list of exported devices.
pub const OP_REQ_DEVLIST: u16 = 0x8005;
/// Operation code: reply with the list of exported devices.
pub const OP_REP_DEVLIST: u16 = 0x0005;
/// Operation code: request to import (attach) a device by bus id.
pub const OP_REQ_IMPORT: u16 = 0x8003;
/// Operation code: reply to an import request.
pub const OP_REP_IMPORT: u16 = 0x0003;

/// Command: submit an URB.
pub const USBIP_CMD_SUBMIT: u32 = 1;
/// Command: unlink (cancel) an URB.
pub const USBIP_CMD_UNLINK: u32 = 2;
/// Reply: an URB completed.
pub const USBIP_RET_SUBMIT: u32 = 3;
/// Reply: the result of an unlink.
pub const USBIP_RET_UNLINK: u32 = 4;

/// `direction`: host to device.
pub const DIR_OUT: u32 = 0;
/// `direction`: device to host.
pub const DIR_IN: u32 = 1;

/// `transfer_flags`: a short IN transfer is an error.
pub const URB_SHORT_NOT_OK: u32 = 0x0001;
/// `transfer_flags`: end an OUT transfer whose length is a multiple of the packet size with a ZLP.
pub const URB_ZERO_PACKET: u32 = 0x0040;
/// `transfer_flags`: the URB is an IN transfer (Linux sets it; informative only).
pub const URB_DIR_IN: u32 = 0x0200;

/// Operation status: success.
pub const ST_OK: u32 = 0;
/// Operation status: the device is not available.
pub const ST_NA: u32 = 1;
/// Operation status: the device is busy (already imported by another client).
pub const ST_DEV_BUSY: u32 = 2;
/// Operation status: the device is in an error state.
pub const ST_DEV_ERR: u32 = 3;
/// Operation status: no device with this bus id.
pub const ST_NODEV: u32 = 4;

/// Linux errno values of URB statuses: the one table shared with usbmon captures.
pub use crate::usb::usbmon::errno;

/// Size of an operation header.
pub const OP_HEADER_LEN: usize = 8;
/// Size of the device record in `OP_REP_DEVLIST` / `OP_REP_IMPORT`.
pub const DEVICE_RECORD_LEN: usize = 312;
/// Size of one interface record in `OP_REP_DEVLIST`.
pub const INTERFACE_RECORD_LEN: usize = 4;
/// Size of the bus id field.
pub const BUSID_LEN: usize = 32;
/// Size of the sysfs path field.
pub const PATH_LEN: usize = 256;
/// Size of every URB-phase header.
pub const URB_HEADER_LEN: usize = 48;

/// Bounds a decoder enforces on what a peer may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The longest transfer buffer accepted in one URB, in bytes (default 16 MiB).
    pub max_transfer: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_transfer: 16 << 20,
        }
    }
}

/// Why a message could not be decoded. After any of these the stream cannot be trusted.
#[derive(Debug, Error)]
pub enum ProtocolError {
    /// The peer closed the connection between messages.
    #[error("connection closed")]
    Closed,
    /// The peer closed the connection, or a read failed, in the middle of a message.
    #[error("truncated {what}: {source}")]
    Truncated {
        /// Which message or field was being read.
        what: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// An operation header with another protocol version.
    #[error("unsupported USB/IP version 0x{0:04x} (expected 0x0111)")]
    Version(u16),
    /// An operation code this side does not accept here.
    #[error("unexpected operation code 0x{0:04x}")]
    UnknownOp(u16),
    /// A URB-phase command this side does not accept here.
    #[error("unknown command {0:#x}")]
    UnknownCommand(u32),
    /// A `direction` other than 0 (OUT) or 1 (IN).
    #[error("bad direction {0} (expected 0 or 1)")]
    Direction(u32),
    /// An endpoint number above 15.
    #[error("bad endpoint number {0} (expected 0..=15)")]
    Endpoint(u32),
    /// A transfer buffer longer than the limit.
    #[error("transfer_buffer_length {len} exceeds the limit of {max} bytes")]
    TooLong {
        /// The length asked for.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// An isochronous URB (number_of_packets not 0 or 0xffffffff): no isochronous endpoints here.
    #[error("isochronous URB with {0} packets: not supported")]
    Isochronous(u32),
    /// A reply's `actual_length` larger than the buffer that was submitted.
    #[error("actual_length {actual} exceeds the submitted buffer of {len} bytes")]
    ActualTooLong {
        /// The length the reply claims.
        actual: u32,
        /// The submitted buffer length.
        len: u32,
    },
    /// Anything else malformed.
    #[error("{0}")]
    Invalid(String),
}

fn read_exact(r: &mut impl Read, buf: &mut [u8], what: &'static str) -> Result<(), ProtocolError> {
    r.read_exact(buf)
        .map_err(|source| ProtocolError::Truncated { what, source })
}

/// Reads a message's first bytes: a clean end of stream before any byte is [`ProtocolError::Closed`].
fn read_first(r: &mut impl Read, buf: &mut [u8], what: &'static str) -> Result<(), ProtocolError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Err(ProtocolError::Closed),
            Ok(0) => {
                return Err(ProtocolError::Truncated {
                    what,
                    source: io::ErrorKind::UnexpectedEof.into(),
                })
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if got == 0 && is_disconnect(&e) => return Err(ProtocolError::Closed),
            Err(source) => return Err(ProtocolError::Truncated { what, source }),
        }
    }
    Ok(())
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
    )
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// An operation header (8 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpHeader {
    /// Protocol version; always [`VERSION`] when decoded.
    pub version: u16,
    /// Operation code.
    pub code: u16,
    /// Status (0 in requests).
    pub status: u32,
}

impl OpHeader {
    /// A header of the current version.
    pub const fn new(code: u16, status: u32) -> OpHeader {
        OpHeader {
            version: VERSION,
            code,
            status,
        }
    }

    /// The wire form.
    pub fn encode(&self) -> [u8; OP_HEADER_LEN] {
        let mut b = [0u8; OP_HEADER_LEN];
        b[0..2].copy_from_slice(&self.version.to_be_bytes());
        b[2..4].copy_from_slice(&self.code.to_be_bytes());
        b[4..8].copy_from_slice(&self.status.to_be_bytes());
        b
    }

    /// Parses the wire form; any version other than 1.1.1 is refused.
    pub fn decode(b: &[u8; OP_HEADER_LEN]) -> Result<OpHeader, ProtocolError> {
        let version = be16(b, 0);
        if version != VERSION {
            return Err(ProtocolError::Version(version));
        }
        Ok(OpHeader {
            version,
            code: be16(b, 2),
            status: be32(b, 4),
        })
    }

    /// Reads one header; [`ProtocolError::Closed`] if the stream ends cleanly before it.
    pub fn read(r: &mut impl Read) -> Result<OpHeader, ProtocolError> {
        let mut b = [0u8; OP_HEADER_LEN];
        read_first(r, &mut b, "operation header")?;
        OpHeader::decode(&b)
    }
}

/// Reads the 32-byte bus id of an `OP_REQ_IMPORT` and returns it as text (up to the first NUL).
pub fn read_busid(r: &mut impl Read) -> Result<String, ProtocolError> {
    let mut b = [0u8; BUSID_LEN];
    read_exact(r, &mut b, "import bus id")?;
    decode_cstr(&b, "bus id")
}

/// The 32-byte wire form of a bus id (NUL-padded; at most 31 bytes of text).
pub fn encode_busid(busid: &str) -> Result<[u8; BUSID_LEN], ProtocolError> {
    let mut b = [0u8; BUSID_LEN];
    encode_cstr(&mut b, busid, "bus id")?;
    Ok(b)
}

fn encode_cstr(dest: &mut [u8], s: &str, what: &str) -> Result<(), ProtocolError> {
    if s.len() >= dest.len() || s.as_bytes().contains(&0) {
        return Err(ProtocolError::Invalid(format!(
            "{what} {s:?} does not fit {} bytes",
            dest.len() - 1
        )));
    }
    dest[..s.len()].copy_from_slice(s.as_bytes());
    Ok(())
}

fn decode_cstr(b: &[u8], what: &str) -> Result<String, ProtocolError> {
    let end = b.iter().position(|&c| c == 0).ok_or_else(|| {
        ProtocolError::Invalid(format!(
            "{what} is not NUL-terminated within {} bytes",
            b.len()
        ))
    })?;
    String::from_utf8(b[..end].to_vec())
        .map_err(|_| ProtocolError::Invalid(format!("{what} is not UTF-8")))
}

/// The 312-byte description of an exported device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Sysfs path on the exporting host (informative).
    pub path: String,
    /// Bus id, e.g. `1-1`: what `usbip attach -b` names.
    pub busid: String,
    /// Bus number.
    pub busnum: u32,
    /// Device number on the bus.
    pub devnum: u32,
    /// Speed code: 1 low, 2 full, 3 high, 5 super.
    pub speed: u32,
    /// idVendor.
    pub id_vendor: u16,
    /// idProduct.
    pub id_product: u16,
    /// bcdDevice.
    pub bcd_device: u16,
    /// bDeviceClass.
    pub device_class: u8,
    /// bDeviceSubClass.
    pub device_subclass: u8,
    /// bDeviceProtocol.
    pub device_protocol: u8,
    /// bConfigurationValue of the active configuration.
    pub configuration_value: u8,
    /// bNumConfigurations.
    pub num_configurations: u8,
    /// bNumInterfaces of the active configuration.
    pub num_interfaces: u8,
}

impl DeviceRecord {
    /// The `devid` URB headers carry: `busnum << 16 | devnum`.
    pub const fn devid(&self) -> u32 {
        (self.busnum << 16) | (self.devnum & 0xffff)
    }

    /// The wire form.
    pub fn encode(&self) -> Result<[u8; DEVICE_RECORD_LEN], ProtocolError> {
        let mut b = [0u8; DEVICE_RECORD_LEN];
        encode_cstr(&mut b[..PATH_LEN], &self.path, "path")?;
        encode_cstr(
            &mut b[PATH_LEN..PATH_LEN + BUSID_LEN],
            &self.busid,
            "bus id",
        )?;
        let at = PATH_LEN + BUSID_LEN;
        b[at..at + 4].copy_from_slice(&self.busnum.to_be_bytes());
        b[at + 4..at + 8].copy_from_slice(&self.devnum.to_be_bytes());
        b[at + 8..at + 12].copy_from_slice(&self.speed.to_be_bytes());
        b[at + 12..at + 14].copy_from_slice(&self.id_vendor.to_be_bytes());
        b[at + 14..at + 16].copy_from_slice(&self.id_product.to_be_bytes());
        b[at + 16..at + 18].copy_from_slice(&self.bcd_device.to_be_bytes());
        b[at + 18] = self.device_class;
        b[at + 19] = self.device_subclass;
        b[at + 20] = self.device_protocol;
        b[at + 21] = self.configuration_value;
        b[at + 22] = self.num_configurations;
        b[at + 23] = self.num_interfaces;
        Ok(b)
    }

    /// Parses the wire form.
    pub fn decode(b: &[u8; DEVICE_RECORD_LEN]) -> Result<DeviceRecord, ProtocolError> {
        let at = PATH_LEN + BUSID_LEN;
        Ok(DeviceRecord {
            path: decode_cstr(&b[..PATH_LEN], "path")?,
            busid: decode_cstr(&b[PATH_LEN..at], "bus id")?,
            busnum: be32(b, at),
            devnum: be32(b, at + 4),
            speed: be32(b, at + 8),
            id_vendor: be16(b, at + 12),
            id_product: be16(b, at + 14),
            bcd_device: be16(b, at + 16),
            device_class: b[at + 18],
            device_subclass: b[at + 19],
            device_protocol: b[at + 20],
            configuration_value: b[at + 21],
            num_configurations: b[at + 22],
            num_interfaces: b[at + 23],
        })
    }

    /// Reads one record.
    pub fn read(r: &mut impl Read) -> Result<DeviceRecord, ProtocolError> {
        let mut b = [0u8; DEVICE_RECORD_LEN];
        read_exact(r, &mut b, "device record")?;
        DeviceRecord::decode(&b)
    }
}

/// One interface of an exported device, as `OP_REP_DEVLIST` lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterfaceRecord {
    /// bInterfaceClass.
    pub class: u8,
    /// bInterfaceSubClass.
    pub subclass: u8,
    /// bInterfaceProtocol.
    pub protocol: u8,
}

impl InterfaceRecord {
    /// The wire form (the fourth byte is padding).
    pub fn encode(&self) -> [u8; INTERFACE_RECORD_LEN] {
        [self.class, self.subclass, self.protocol, 0]
    }
}

/// An exported device with its interfaces: one entry of `OP_REP_DEVLIST`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportedDevice {
    /// The device record.
    pub record: DeviceRecord,
    /// Its interfaces, in order.
    pub interfaces: Vec<InterfaceRecord>,
}

/// Encodes a complete `OP_REP_DEVLIST`.
pub fn encode_devlist(devices: &[ExportedDevice]) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::new();
    out.extend_from_slice(&OpHeader::new(OP_REP_DEVLIST, ST_OK).encode());
    let n = u32::try_from(devices.len())
        .map_err(|_| ProtocolError::Invalid("too many devices".into()))?;
    out.extend_from_slice(&n.to_be_bytes());
    for d in devices {
        out.extend_from_slice(&d.record.encode()?);
        for i in &d.interfaces {
            out.extend_from_slice(&i.encode());
        }
    }
    Ok(out)
}

/// Reads the body of an `OP_REP_DEVLIST` (after its header). At most `max_devices` devices
/// are accepted, so a hostile count cannot make the reader loop for long.
pub fn read_devlist(
    r: &mut impl Read,
    max_devices: u32,
) -> Result<Vec<ExportedDevice>, ProtocolError> {
    let mut n = [0u8; 4];
    read_exact(r, &mut n, "device count")?;
    let n = u32::from_be_bytes(n);
    if n > max_devices {
        return Err(ProtocolError::Invalid(format!(
            "device list of {n} devices exceeds {max_devices}"
        )));
    }
    let mut out = Vec::new();
    for _ in 0..n {
        let record = DeviceRecord::read(r)?;
        let mut interfaces = Vec::new();
        for _ in 0..record.num_interfaces {
            let mut b = [0u8; INTERFACE_RECORD_LEN];
            read_exact(r, &mut b, "interface record")?;
            interfaces.push(InterfaceRecord {
                class: b[0],
                subclass: b[1],
                protocol: b[2],
            });
        }
        out.push(ExportedDevice { record, interfaces });
    }
    Ok(out)
}

/// The 20-byte header every URB-phase message starts with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BasicHeader {
    /// Command code.
    pub command: u32,
    /// Sequence number: names the URB (CMD_SUBMIT, RET_SUBMIT) or the unlink request.
    pub seqnum: u32,
    /// `busnum << 16 | devnum` of the imported device (0 in replies).
    pub devid: u32,
    /// [`DIR_OUT`] or [`DIR_IN`] (0 in replies).
    pub direction: u32,
    /// Endpoint number, 0..=15 (0 in replies).
    pub ep: u32,
}

impl BasicHeader {
    fn put(&self, b: &mut [u8; URB_HEADER_LEN]) {
        b[0..4].copy_from_slice(&self.command.to_be_bytes());
        b[4..8].copy_from_slice(&self.seqnum.to_be_bytes());
        b[8..12].copy_from_slice(&self.devid.to_be_bytes());
        b[12..16].copy_from_slice(&self.direction.to_be_bytes());
        b[16..20].copy_from_slice(&self.ep.to_be_bytes());
    }

    fn get(b: &[u8; URB_HEADER_LEN]) -> BasicHeader {
        BasicHeader {
            command: be32(b, 0),
            seqnum: be32(b, 4),
            devid: be32(b, 8),
            direction: be32(b, 12),
            ep: be32(b, 16),
        }
    }
}

/// `USBIP_CMD_SUBMIT`: an URB and, for OUT, its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CmdSubmit {
    /// The URB's sequence number.
    pub seqnum: u32,
    /// The device it is for.
    pub devid: u32,
    /// [`DIR_OUT`] or [`DIR_IN`].
    pub direction: u32,
    /// Endpoint number, 0..=15.
    pub ep: u32,
    /// URB transfer flags ([`URB_ZERO_PACKET`], ...).
    pub transfer_flags: u32,
    /// Buffer length: the OUT data's length, or the most an IN transfer may return.
    pub transfer_buffer_length: u32,
    /// Isochronous start frame (0 otherwise).
    pub start_frame: u32,
    /// Isochronous packet count; 0 or 0xffffffff for other transfers.
    pub number_of_packets: u32,
    /// Polling interval of interrupt transfers.
    pub interval: u32,
    /// The SETUP packet of control transfers (zero otherwise).
    pub setup: [u8; 8],
    /// OUT data (`transfer_buffer_length` bytes); empty for IN.
    pub data: Vec<u8>,
}

impl CmdSubmit {
    /// True for a device-to-host URB.
    pub fn is_in(&self) -> bool {
        self.direction == DIR_IN
    }

    /// The SETUP packet, parsed.
    pub fn setup_packet(&self) -> SetupPacket {
        // Eight bytes always parse.
        SetupPacket::parse(&self.setup).unwrap_or(SetupPacket {
            request_type: 0,
            request: 0,
            value: 0,
            index: 0,
            length: 0,
        })
    }

    /// Writes header and data.
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        let mut b = [0u8; URB_HEADER_LEN];
        BasicHeader {
            command: USBIP_CMD_SUBMIT,
            seqnum: self.seqnum,
            devid: self.devid,
            direction: self.direction,
            ep: self.ep,
        }
        .put(&mut b);
        b[20..24].copy_from_slice(&self.transfer_flags.to_be_bytes());
        b[24..28].copy_from_slice(&self.transfer_buffer_length.to_be_bytes());
        b[28..32].copy_from_slice(&self.start_frame.to_be_bytes());
        b[32..36].copy_from_slice(&self.number_of_packets.to_be_bytes());
        b[36..40].copy_from_slice(&self.interval.to_be_bytes());
        b[40..48].copy_from_slice(&self.setup);
        w.write_all(&b)?;
        if !self.is_in() {
            w.write_all(&self.data)?;
        }
        Ok(())
    }
}

/// `USBIP_CMD_UNLINK`: cancel the URB `unlink_seqnum`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmdUnlink {
    /// This request's own sequence number (RET_UNLINK answers with it).
    pub seqnum: u32,
    /// The device.
    pub devid: u32,
    /// Direction of the URB being unlinked (informative).
    pub direction: u32,
    /// Endpoint of the URB being unlinked (informative).
    pub ep: u32,
    /// The sequence number of the URB to cancel.
    pub unlink_seqnum: u32,
}

impl CmdUnlink {
    /// Writes the 48-byte message.
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        let mut b = [0u8; URB_HEADER_LEN];
        BasicHeader {
            command: USBIP_CMD_UNLINK,
            seqnum: self.seqnum,
            devid: self.devid,
            direction: self.direction,
            ep: self.ep,
        }
        .put(&mut b);
        b[20..24].copy_from_slice(&self.unlink_seqnum.to_be_bytes());
        w.write_all(&b)
    }
}

/// A command a server receives in the URB phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `USBIP_CMD_SUBMIT`.
    Submit(CmdSubmit),
    /// `USBIP_CMD_UNLINK`.
    Unlink(CmdUnlink),
}

impl Command {
    /// Reads one command, validating every field before allocating anything.
    /// [`ProtocolError::Closed`] when the peer closed the stream cleanly between commands.
    pub fn read(r: &mut impl Read, limits: &Limits) -> Result<Command, ProtocolError> {
        let mut b = [0u8; URB_HEADER_LEN];
        read_first(r, &mut b, "URB header")?;
        Command::wire_len(&b, limits)?;
        let h = BasicHeader::get(&b);
        if h.command == USBIP_CMD_UNLINK {
            return Ok(Command::Unlink(CmdUnlink {
                seqnum: h.seqnum,
                devid: h.devid,
                direction: h.direction,
                ep: h.ep,
                unlink_seqnum: be32(&b, 20),
            }));
        }
        let len = be32(&b, 24);
        let packets = be32(&b, 32);
        let mut setup = [0u8; 8];
        setup.copy_from_slice(&b[40..48]);
        let mut data = Vec::new();
        if h.direction == DIR_OUT && len > 0 {
            data = vec![0u8; len as usize];
            read_exact(r, &mut data, "URB OUT data")?;
        }
        Ok(Command::Submit(CmdSubmit {
            seqnum: h.seqnum,
            devid: h.devid,
            direction: h.direction,
            ep: h.ep,
            transfer_flags: be32(&b, 20),
            transfer_buffer_length: len,
            start_frame: be32(&b, 28),
            number_of_packets: packets,
            interval: be32(&b, 36),
            setup,
            data,
        }))
    }
}

impl Command {
    /// How many bytes the command whose 48-byte header is `header` takes on the wire (the
    /// header and, for an OUT submission, its data), after the checks [`Command::read`] makes:
    /// lets a non-blocking reader frame a command before decoding it, without trusting a length.
    pub fn wire_len(
        header: &[u8; URB_HEADER_LEN],
        limits: &Limits,
    ) -> Result<usize, ProtocolError> {
        let h = BasicHeader::get(header);
        match h.command {
            USBIP_CMD_SUBMIT | USBIP_CMD_UNLINK => {}
            other => return Err(ProtocolError::UnknownCommand(other)),
        }
        if h.direction > DIR_IN {
            return Err(ProtocolError::Direction(h.direction));
        }
        if h.ep > 15 {
            return Err(ProtocolError::Endpoint(h.ep));
        }
        if h.command == USBIP_CMD_UNLINK {
            return Ok(URB_HEADER_LEN);
        }
        let len = be32(header, 24);
        if len > limits.max_transfer {
            return Err(ProtocolError::TooLong {
                len,
                max: limits.max_transfer,
            });
        }
        let packets = be32(header, 32);
        if packets != 0 && packets != u32::MAX {
            return Err(ProtocolError::Isochronous(packets));
        }
        Ok(if h.direction == DIR_OUT {
            URB_HEADER_LEN + len as usize
        } else {
            URB_HEADER_LEN
        })
    }
}

/// `USBIP_RET_SUBMIT`: an URB's completion and, for IN, its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetSubmit {
    /// The URB's sequence number.
    pub seqnum: u32,
    /// 0 on success, or a negated errno ([`errno`]).
    pub status: i32,
    /// Bytes transferred.
    pub actual_length: u32,
    /// IN data (`actual_length` bytes); empty for OUT.
    pub data: Vec<u8>,
}

impl RetSubmit {
    /// Writes the 48-byte header and the IN data (if any).
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        let mut b = [0u8; URB_HEADER_LEN];
        BasicHeader {
            command: USBIP_RET_SUBMIT,
            seqnum: self.seqnum,
            ..BasicHeader::default()
        }
        .put(&mut b);
        b[20..24].copy_from_slice(&self.status.to_be_bytes());
        b[24..28].copy_from_slice(&self.actual_length.to_be_bytes());
        w.write_all(&b)?;
        w.write_all(&self.data)
    }
}

/// `USBIP_RET_UNLINK`: the result of a CMD_UNLINK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetUnlink {
    /// The CMD_UNLINK's sequence number.
    pub seqnum: u32,
    /// `-ECONNRESET` if the URB was cancelled (it gets no RET_SUBMIT), 0 if it had completed.
    pub status: i32,
}

impl RetUnlink {
    /// Writes the 48-byte message.
    pub fn write(&self, w: &mut impl Write) -> io::Result<()> {
        let mut b = [0u8; URB_HEADER_LEN];
        BasicHeader {
            command: USBIP_RET_UNLINK,
            seqnum: self.seqnum,
            ..BasicHeader::default()
        }
        .put(&mut b);
        b[20..24].copy_from_slice(&self.status.to_be_bytes());
        w.write_all(&b)
    }
}

/// A reply a client receives in the URB phase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `USBIP_RET_SUBMIT`.
    Submit(RetSubmit),
    /// `USBIP_RET_UNLINK`.
    Unlink(RetUnlink),
}

impl Reply {
    /// Reads one reply. `in_length(seqnum)` says how long the IN buffer of that URB was (or
    /// `None` for OUT URBs and unknown sequence numbers, which then must carry no data), so
    /// a reply can never claim more data than was asked for.
    pub fn read(
        r: &mut impl Read,
        in_length: impl Fn(u32) -> Option<u32>,
    ) -> Result<Reply, ProtocolError> {
        let mut b = [0u8; URB_HEADER_LEN];
        read_first(r, &mut b, "URB reply header")?;
        let h = BasicHeader::get(&b);
        let status = be32(&b, 20) as i32;
        match h.command {
            USBIP_RET_SUBMIT => {
                let actual = be32(&b, 24);
                let data = match in_length(h.seqnum) {
                    Some(len) if actual > len => {
                        return Err(ProtocolError::ActualTooLong { actual, len })
                    }
                    Some(_) => {
                        let mut data = vec![0u8; actual as usize];
                        read_exact(r, &mut data, "URB IN data")?;
                        data
                    }
                    None => Vec::new(),
                };
                Ok(Reply::Submit(RetSubmit {
                    seqnum: h.seqnum,
                    status,
                    actual_length: actual,
                    data,
                }))
            }
            USBIP_RET_UNLINK => Ok(Reply::Unlink(RetUnlink {
                seqnum: h.seqnum,
                status,
            })),
            other => Err(ProtocolError::UnknownCommand(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> DeviceRecord {
        DeviceRecord {
            path: "/sys/devices/scanemu/usb1/1-1".into(),
            busid: "1-1".into(),
            busnum: 1,
            devnum: 2,
            speed: 3,
            id_vendor: 0x5ca1,
            id_product: 0x0001,
            bcd_device: 0x0100,
            device_class: 0,
            device_subclass: 0,
            device_protocol: 0,
            configuration_value: 1,
            num_configurations: 1,
            num_interfaces: 1,
        }
    }

    #[test]
    fn device_record_round_trips_at_documented_offsets() {
        let r = record();
        let b = r.encode().unwrap();
        assert_eq!(b.len(), 312);
        assert_eq!(&b[256..259], b"1-1");
        assert_eq!(be32(&b, 288), 1);
        assert_eq!(be32(&b, 292), 2);
        assert_eq!(be32(&b, 296), 3);
        assert_eq!(be16(&b, 300), 0x5ca1);
        assert_eq!(DeviceRecord::decode(&b).unwrap(), r);
        assert_eq!(r.devid(), 0x0001_0002);
    }

    #[test]
    fn devlist_round_trips() {
        let dev = ExportedDevice {
            record: record(),
            interfaces: vec![InterfaceRecord {
                class: 0xff,
                subclass: 0x53,
                protocol: 1,
            }],
        };
        let bytes = encode_devlist(std::slice::from_ref(&dev)).unwrap();
        assert_eq!(bytes.len(), 8 + 4 + 312 + 4);
        let mut r = &bytes[..];
        let h = OpHeader::read(&mut r).unwrap();
        assert_eq!(h, OpHeader::new(OP_REP_DEVLIST, 0));
        assert_eq!(read_devlist(&mut r, 16).unwrap(), vec![dev]);
    }

    #[test]
    fn submit_round_trips_and_out_data_follows() {
        let cmd = CmdSubmit {
            seqnum: 7,
            devid: 0x10002,
            direction: DIR_OUT,
            ep: 2,
            transfer_flags: URB_ZERO_PACKET,
            transfer_buffer_length: 3,
            start_frame: 0,
            number_of_packets: 0,
            interval: 0,
            setup: [0; 8],
            data: vec![1, 2, 3],
        };
        let mut bytes = Vec::new();
        cmd.write(&mut bytes).unwrap();
        assert_eq!(bytes.len(), 48 + 3);
        let got = Command::read(&mut &bytes[..], &Limits::default()).unwrap();
        assert_eq!(got, Command::Submit(cmd));
    }

    #[test]
    fn hostile_headers_are_refused_before_allocation() {
        let mut b = [0u8; 48];
        b[0..4].copy_from_slice(&USBIP_CMD_SUBMIT.to_be_bytes());
        b[12..16].copy_from_slice(&DIR_IN.to_be_bytes());
        b[24..28].copy_from_slice(&u32::MAX.to_be_bytes());
        let err = Command::read(&mut &b[..], &Limits::default()).unwrap_err();
        assert!(
            matches!(err, ProtocolError::TooLong { len: u32::MAX, .. }),
            "{err}"
        );

        b[24..28].copy_from_slice(&0u32.to_be_bytes());
        b[32..36].copy_from_slice(&5u32.to_be_bytes());
        let err = Command::read(&mut &b[..], &Limits::default()).unwrap_err();
        assert!(matches!(err, ProtocolError::Isochronous(5)), "{err}");

        b[0..4].copy_from_slice(&9u32.to_be_bytes());
        let err = Command::read(&mut &b[..], &Limits::default()).unwrap_err();
        assert!(matches!(err, ProtocolError::UnknownCommand(9)), "{err}");

        let err = Command::read(&mut &b[..20], &Limits::default()).unwrap_err();
        assert!(matches!(err, ProtocolError::Truncated { .. }), "{err}");
        let err = Command::read(&mut &b[..0], &Limits::default()).unwrap_err();
        assert!(matches!(err, ProtocolError::Closed), "{err}");

        let mut v = [0u8; 8];
        v[0..2].copy_from_slice(&0x0106u16.to_be_bytes());
        assert!(matches!(
            OpHeader::read(&mut &v[..]),
            Err(ProtocolError::Version(0x0106))
        ));
    }

    #[test]
    fn replies_cannot_claim_more_than_was_asked() {
        let ret = RetSubmit {
            seqnum: 3,
            status: 0,
            actual_length: 4,
            data: vec![9; 4],
        };
        let mut bytes = Vec::new();
        ret.write(&mut bytes).unwrap();
        let got = Reply::read(&mut &bytes[..], |_| Some(8)).unwrap();
        assert_eq!(got, Reply::Submit(ret));
        let err = Reply::read(&mut &bytes[..], |_| Some(2)).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::ActualTooLong { actual: 4, len: 2 }
        ));
        let mut bytes = Vec::new();
        RetUnlink {
            seqnum: 5,
            status: -errno::ECONNRESET,
        }
        .write(&mut bytes)
        .unwrap();
        assert_eq!(
            Reply::read(&mut &bytes[..], |_| None).unwrap(),
            Reply::Unlink(RetUnlink {
                seqnum: 5,
                status: -104
            })
        );
    }
}
