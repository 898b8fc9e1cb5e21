//! The ESC/I personality: an Epson flatbed's command protocol on bulk IN and OUT.
//!
//! [`EsciFunction`] is a second `usb_device::class::UsbClass` beside the native
//! `ScannerFunction` (the native personality), on the same [`ScanEngine`], bus and
//! faults. It speaks the protocol of `emulator/PROTOCOL-ESCI.md`: two-byte commands (`ESC x`,
//! `FS x`) on bulk OUT, each answered on bulk IN by exactly the bytes the host reads in one
//! transfer (never a zero-length packet after a reply, never a reply queued before its command),
//! and image data in blocks that the host accepts with ACK or refuses with CAN.
//!
//! Two code paths are chosen by [`EsciLevel`]:
//! - **B7, extended**: `FS W` sets the scan parameters, `FS G` starts and announces the block
//!   layout, each block is `lines * bytes_per_line` data bytes plus one status byte;
//! - **B6, classic**: one `ESC` command per parameter, `ESC G` starts, each block is a 6-byte
//!   information header followed by its data; the last header carries AREA_END.
//!
//! Blocks are the engine's bands: the band height is the profile's `band_lines`, capped by the
//! host's line count (`FS W` byte 28 or `ESC d`), so the host's buffer is never overrun. A block
//! is queued only after the host acknowledged the one before and the engine produced it, so
//! data reaches the host at the engine's pace.

use std::collections::VecDeque;

use usb_device::class_prelude::*;
use usb_device::descriptor::lang_id::LangID;
use usb_device::UsbError;

use serde::{Deserialize, Serialize};

use crate::engine::{
    Band, CancelOutcome, EngineState, EventKind, Fault, ScanEngine, ScanJob, ScanMode, ScanSource,
};
use crate::personality::{
    engine_note, AnswerAt, DeviceNote, EndpointSizes, IdleCause, NoteDetail, NoteKind, Personality,
};
use crate::time::Instant;
use crate::usb::bus::{EndpointSet, FlushFifo};
use wire::{
    command_name, mode_of, param_len, ParamError, ACK, BLOCK_CANCEL_REQUEST, BLOCK_FATAL_ERROR,
    CAN, COLOR_MONO, COLOR_RGB_PIXEL, EP_DATA_IN, EP_DATA_OUT, ESC, FS, FS_W_LEN, HEADER_AREA_END,
    NAK, STATUS_EXT_COMMANDS, STX,
};

pub mod wire;

pub use wire::EsciLevel;

/// Settings of the ESC/I personality: a profile's `personality` object with `"protocol":
/// "escI"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EsciConfig {
    /// Command level and code path. Default: `B7`.
    #[serde(default)]
    pub level: EsciLevel,
    /// Model name in the extended status and identity replies: at most 16 printable ASCII
    /// characters, space-padded on the wire. Default: `"SCANLAB-ESCI"`.
    #[serde(default = "default_esci_model")]
    pub model: String,
}

impl Default for EsciConfig {
    fn default() -> EsciConfig {
        EsciConfig {
            level: EsciLevel::B7,
            model: default_esci_model(),
        }
    }
}

fn default_esci_model() -> String {
    "SCANLAB-ESCI".to_string()
}

/// The parameters of one scan, as set by `FS W` or the classic commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EsciParams {
    /// The job the engine runs.
    pub job: ScanJob,
    /// Most lines per block the host can take.
    pub lcount: u32,
}

/// Classic parameters set one command at a time since the last `ESC @`.
#[derive(Clone, Copy, Debug, Default)]
struct Classic {
    color: u8,
    depth: u8,
    resolution: Option<(u16, u16)>,
    area: Option<[u16; 4]>,
    lcount: u8,
}

/// What the host may send next.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// A command (or, while a scan runs, ACK / CAN).
    Command,
    /// The parameter block of command `cmd` (`ESC` or `FS` letter), `len` bytes.
    Param { fs: bool, cmd: u8, len: usize },
}

/// Where a started scan is.
#[derive(Clone, Copy, Debug)]
struct Scan {
    ext: bool,
    bytes_per_line: u64,
    blocks: u32,
    /// Blocks handed to the host so far (the one being sent included).
    sent: u32,
    state: ScanState,
    lineart: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ScanState {
    /// The host may have the next block as soon as the engine produced it.
    WantBlock,
    /// A block is queued or streaming on bulk IN.
    Sending,
    /// The block went out; the host owes ACK or CAN.
    AwaitAck,
}

/// One IN transfer's worth of bytes.
#[derive(Clone, Debug)]
enum Reply {
    /// A reply, sent as is.
    Bytes(Vec<u8>),
    /// Block `number` (from 0): the band's data, then `status` if extended, `expected` bytes
    /// announced to the host (a short band sends fewer).
    Block {
        band: Band,
        number: u32,
        status: Option<u8>,
        expected: u64,
    },
    /// An extended block that carries only its status (a device-side fault): `len` data bytes
    /// of zeros, then `status`.
    StatusBlock { number: u32, len: u64, status: u8 },
}

impl Reply {
    fn len(&self) -> u64 {
        match self {
            Reply::Bytes(b) => b.len() as u64,
            Reply::Block { band, status, .. } => band.bytes + u64::from(status.is_some()),
            Reply::StatusBlock { len, .. } => len + 1,
        }
    }

    /// Whether the host reads more than the device sends: then a transfer that ends on a
    /// packet boundary needs a zero-length packet to end it.
    fn short(&self) -> bool {
        match self {
            Reply::Block {
                band,
                status,
                expected,
                ..
            } => band.bytes + u64::from(status.is_some()) < *expected,
            _ => false,
        }
    }
}

/// The transfer being streamed on bulk IN.
#[derive(Clone, Debug)]
struct Sending {
    reply: Reply,
    sent: u64,
    in_flight: bool,
    /// A packet of this transfer was queued (an empty transfer is one zero-length packet).
    started: bool,
    last_packet: usize,
}

/// The ESC/I scanner function. See the module documentation.
pub struct EsciFunction<'a, B: UsbBus + FlushFifo> {
    iface: InterfaceNumber,
    iface_string: StringIndex,
    data_in: EndpointIn<'a, B>,
    data_out: EndpointOut<'a, B>,
    engine: ScanEngine,
    config: EsciConfig,
    now: Instant,
    inbox: Vec<u8>,
    phase: Phase,
    classic: Classic,
    params: Option<EsciParams>,
    scan: Option<Scan>,
    /// A start that waits for the motor to stop after a cancel.
    deferred_start: Option<bool>,
    fault_status: Option<u8>,
    replies: VecDeque<Reply>,
    sending: Option<Sending>,
    packet: Vec<u8>,
    halted: bool,
    disconnect: bool,
    flush_in: bool,
    /// A `slow_ack` fault: bulk OUT is not read before this time.
    hold_out_until: Option<Instant>,
    notes: Vec<DeviceNote>,
}

impl<'a, B: UsbBus + FlushFifo> EsciFunction<'a, B> {
    /// Allocates the vendor interface with bulk IN 0x81 and bulk OUT 0x02 (of
    /// `sizes.bulk_max_packet`) on `alloc`, running `engine`, with the ESC/I settings `config`.
    pub fn new(
        alloc: &'a UsbBusAllocator<B>,
        sizes: EndpointSizes,
        engine: ScanEngine,
        config: &EsciConfig,
    ) -> EsciFunction<'a, B> {
        let mps = sizes.bulk_max_packet;
        let data_in = alloc
            .alloc(
                Some(EndpointAddress::from(EP_DATA_IN)),
                EndpointType::Bulk,
                mps,
                0,
            )
            .expect("bulk IN 0x81 is free on a fresh allocator");
        let data_out = alloc
            .alloc(
                Some(EndpointAddress::from(EP_DATA_OUT)),
                EndpointType::Bulk,
                mps,
                0,
            )
            .expect("bulk OUT 0x02 is free on a fresh allocator");
        EsciFunction {
            iface: alloc.interface(),
            iface_string: alloc.string(),
            data_in,
            data_out,
            engine,
            config: config.clone(),
            now: Instant::ZERO,
            inbox: Vec::new(),
            phase: Phase::Command,
            classic: Classic::default(),
            params: None,
            scan: None,
            deferred_start: None,
            fault_status: None,
            replies: VecDeque::new(),
            sending: None,
            packet: vec![0; usize::from(mps)],
            halted: false,
            disconnect: false,
            flush_in: false,
            hold_out_until: None,
            notes: Vec::new(),
        }
    }

    /// True while a `slow_ack` fault holds bulk OUT: the device NAKs the host's packets
    /// ([`Personality::nak_out`]).
    pub fn out_held(&self) -> bool {
        self.hold_out_until.is_some()
    }

    /// The parameters of the last accepted `FS W` or classic setup, if any.
    pub fn params(&self) -> Option<EsciParams> {
        self.params
    }

    fn note(&mut self, at: Instant, kind: NoteKind, page: u16, value: u64, detail: NoteDetail) {
        self.notes.push(DeviceNote {
            at,
            kind,
            page,
            value,
            detail,
        });
    }

    fn drain_engine(&mut self) {
        while let Some(ev) = self.engine.poll(self.now) {
            self.on_engine_event(ev.at, ev.kind);
        }
    }

    fn on_engine_event(&mut self, at: Instant, kind: EventKind) {
        match kind {
            EventKind::Fault(fault) => self.on_fault(at, fault),
            _ => self.notes.extend(engine_note(at, &kind, 0)),
        }
    }

    fn on_fault(&mut self, at: Instant, fault: Fault) {
        let (page, band) = fault.position().unwrap_or((0, 0));
        self.note(
            at,
            NoteKind::Fault,
            page,
            u64::from(band),
            NoteDetail::Fault(fault),
        );
        let ext = self.scan.is_some_and(|s| s.ext);
        match fault {
            Fault::Disconnect { .. } | Fault::DisconnectOnCancel => {
                self.abandon_output();
                self.disconnect = true;
            }
            Fault::Stall { .. } | Fault::StallOnCancel => self.halt(at),
            Fault::CancelButton { .. } if ext => self.fault_status = Some(BLOCK_CANCEL_REQUEST),
            Fault::PaperJam { .. } | Fault::CoverOpen { .. } | Fault::MultiFeed { .. } if ext => {
                self.fault_status = Some(BLOCK_FATAL_ERROR)
            }
            // Classic blocks have no status byte after the data: a device-side abort halts
            // bulk IN, as the native personality does.
            Fault::CancelButton { .. }
            | Fault::PaperJam { .. }
            | Fault::CoverOpen { .. }
            | Fault::MultiFeed { .. } => self.halt(at),
            // The band ends early: the block is shorter than announced.
            // Handled when its block has gone out (`transfer_done`).
            Fault::ShortBand { .. }
            | Fault::LateBand { .. }
            | Fault::SlowAck { .. }
            | Fault::IgnoreCancel
            | Fault::SlowCancel { .. } => {}
        }
    }

    fn halt(&mut self, at: Instant) {
        self.data_in.stall();
        self.abandon_output();
        self.halted = true;
        self.note(
            at,
            NoteKind::Halted,
            0,
            0,
            NoteDetail::Endpoints(vec![EP_DATA_IN]),
        );
    }

    /// Drops every reply not yet taken by the host, including the packet in the FIFO.
    fn abandon_output(&mut self) {
        self.replies.clear();
        if self.sending.take().is_some_and(|st| st.in_flight) {
            // The packet in the FIFO goes too; nothing is queued until the device flushed it.
            self.flush_in = true;
        }
    }

    fn reply(&mut self, bytes: Vec<u8>) {
        self.replies.push_back(Reply::Bytes(bytes));
    }

    /// Queues the next block if the host may have it and the engine produced it.
    fn offer_block(&mut self) {
        let Some(mut scan) = self.scan else { return };
        if scan.state != ScanState::WantBlock || self.halted {
            return;
        }
        let number = scan.sent;
        let last = number + 1 == scan.blocks;
        if let Some(band) = self.engine.front_band().copied() {
            let expected = u64::from(band.lines) * scan.bytes_per_line;
            if scan.ext {
                self.replies.push_back(Reply::Block {
                    band,
                    number,
                    status: Some(0),
                    expected: expected + 1,
                });
            } else {
                let status = if last { HEADER_AREA_END } else { 0 };
                let bpl = u16::try_from(scan.bytes_per_line).unwrap_or(u16::MAX);
                let lines = u16::try_from(band.lines).unwrap_or(u16::MAX);
                let mut header = vec![STX, status];
                header.extend_from_slice(&bpl.to_le_bytes());
                header.extend_from_slice(&lines.to_le_bytes());
                self.reply(header);
                self.replies.push_back(Reply::Block {
                    band,
                    number,
                    status: None,
                    expected,
                });
            }
        } else if let Some(status) = self.fault_status.filter(|_| scan.ext) {
            let per_block = self.engine.band_lines();
            let height = self.params.map_or(per_block, |p| p.job.height_px);
            let lines = per_block
                .min(height.saturating_sub(number * per_block))
                .max(1);
            self.replies.push_back(Reply::StatusBlock {
                number,
                len: u64::from(lines) * scan.bytes_per_line,
                status,
            });
        } else {
            return;
        }
        scan.sent += 1;
        scan.state = ScanState::Sending;
        self.scan = Some(scan);
    }

    /// Queues the next packet on bulk IN.
    fn feed(&mut self) {
        if self.halted || self.flush_in {
            return;
        }
        if self.sending.is_none() {
            let Some(reply) = self.replies.pop_front() else {
                return;
            };
            self.sending = Some(Sending {
                reply,
                sent: 0,
                in_flight: false,
                started: false,
                last_packet: 0,
            });
        }
        let Some(st) = self.sending.as_mut() else {
            return;
        };
        let total = st.reply.len();
        if st.in_flight || (st.sent >= total && (total > 0 || st.started)) {
            return;
        }
        let mps = self.packet.len();
        let left = total - st.sent;
        let len = usize::try_from(left).unwrap_or(mps).min(mps);
        let offset = st.sent;
        let out = &mut self.packet[..len];
        match &st.reply {
            Reply::Bytes(b) => {
                let start = usize::try_from(offset).unwrap_or(b.len());
                out.copy_from_slice(&b[start..start + len]);
            }
            Reply::Block { band, status, .. } => {
                let data = band.bytes;
                let n = usize::try_from(data.saturating_sub(offset))
                    .unwrap_or(len)
                    .min(len);
                self.engine.fill(band, offset, &mut out[..n]);
                if self.scan.is_some_and(|s| s.lineart) {
                    // The host inverts lineart bytes (ESC/I sends 1 = white).
                    out[..n].iter_mut().for_each(|b| *b = !*b);
                }
                if n < len {
                    out[n] = status.unwrap_or(0);
                }
            }
            Reply::StatusBlock { status, .. } => {
                out.fill(0);
                if offset + len as u64 == total {
                    out[len - 1] = *status;
                }
            }
        }
        match self.data_in.write(&self.packet[..len]) {
            Ok(_) => {
                if let Some(st) = self.sending.as_mut() {
                    st.sent += len as u64;
                    st.in_flight = true;
                    st.started = true;
                    st.last_packet = len;
                }
            }
            // The FIFO still holds a packet; try again on the next poll.
            Err(UsbError::WouldBlock) => {}
            Err(_) => self.sending = None,
        }
    }

    /// The host took the packet queued on bulk IN.
    fn packet_taken(&mut self) {
        let mps = self.packet.len();
        let Some(st) = self.sending.as_mut() else {
            return;
        };
        st.in_flight = false;
        if st.sent < st.reply.len() {
            self.feed();
            return;
        }
        if st.reply.short() && st.last_packet == mps {
            // A block shorter than announced that ends on a packet boundary: a zero-length
            // packet ends the host's transfer.
            st.last_packet = 0;
            if self.data_in.write(&[]).is_ok() {
                st.in_flight = true;
                return;
            }
        }
        if let Some(st) = self.sending.take() {
            self.transfer_done(st.reply);
        }
        self.feed();
    }

    fn transfer_done(&mut self, reply: Reply) {
        let (number, band, status) = match reply {
            Reply::Bytes(_) => return,
            Reply::Block {
                band,
                number,
                status,
                ..
            } => (number, Some(band), status.unwrap_or(0)),
            Reply::StatusBlock { number, status, .. } => (number, None, status),
        };
        let Some(mut scan) = self.scan else { return };
        let bytes = band.map_or(0, |b| b.bytes);
        self.note(
            self.now,
            NoteKind::BlockSent,
            band.map_or(0, |b| b.page),
            u64::from(number),
            format!("bytes={bytes} status=0x{status:02x}").into(),
        );
        if band.is_some() {
            // Contract: the engine is polled up to now before band_taken.
            self.drain_engine();
            self.engine.band_taken(self.now);
            self.drain_engine();
        }
        let last = number + 1 >= scan.blocks;
        if last && band.is_some() {
            // The host acknowledges every block but the last.
            self.scan = None;
            self.note(
                self.now,
                NoteKind::Idle,
                0,
                0,
                NoteDetail::Idle(IdleCause::LastBlockSent),
            );
            return;
        }
        scan.state = ScanState::AwaitAck;
        self.scan = Some(scan);
        let page = band.map_or(0, |b| b.page);
        let slow = self.engine.faults().iter().find_map(|f| match *f {
            Fault::SlowAck {
                page: p,
                band: b,
                delay_us,
            } if (p, b) == (page, number) => Some(delay_us),
            _ => None,
        });
        if let Some(delay_us) = slow {
            self.hold_out_until = Some(self.now + crate::time::Duration::from_micros(delay_us));
            let fault = Fault::SlowAck {
                page,
                band: number,
                delay_us,
            };
            self.note(
                self.now,
                NoteKind::Fault,
                page,
                u64::from(number),
                NoteDetail::Fault(fault),
            );
        }
    }

    /// Parses every complete unit in the OUT bytes received so far.
    fn process(&mut self) {
        // Contract: the engine has seen everything due up to now before it is changed.
        self.drain_engine();
        let mut at = 0;
        loop {
            let rest = &self.inbox[at..];
            match self.phase {
                Phase::Param { fs, cmd, len } => {
                    if rest.len() < len {
                        break;
                    }
                    let data = rest[..len].to_vec();
                    at += len;
                    self.phase = Phase::Command;
                    self.parameter(fs, cmd, &data);
                }
                Phase::Command => {
                    let Some(&b0) = rest.first() else { break };
                    if b0 == ACK || b0 == CAN {
                        at += 1;
                        self.host_byte(b0);
                        continue;
                    }
                    if b0 == ESC || b0 == FS {
                        let Some(&letter) = rest.get(1) else { break };
                        at += 2;
                        self.leave_scan_for_command();
                        self.command(b0 == FS, letter);
                        continue;
                    }
                    at += 1;
                    self.leave_scan_for_command();
                    self.note(
                        self.now,
                        NoteKind::NakSent,
                        0,
                        u64::from(b0),
                        "unknown byte".into(),
                    );
                    self.reply(vec![NAK]);
                }
            }
        }
        self.inbox.drain(..at);
        self.offer_block();
        self.feed();
    }

    /// A command arrived while a scan was running: the host left the scan without CAN (ESC/I
    /// gives no rule for this; the device stops the scan and serves the command).
    fn leave_scan_for_command(&mut self) {
        let Some(scan) = self.scan.take() else { return };
        let unsent = self.sending.is_some() || !self.replies.is_empty();
        self.abandon_output();
        self.fault_status = None;
        let outcome = self.engine.cancel(self.now);
        self.drain_engine();
        self.note(
            self.now,
            NoteKind::ScanAbandoned,
            0,
            u64::from(scan.sent),
            format!(
                "a command arrived {}; {outcome:?}",
                match (scan.state, unsent) {
                    (ScanState::AwaitAck, _) => "instead of ACK or CAN",
                    (_, true) => "while a block was unread",
                    _ => "before the next block",
                }
            )
            .into(),
        );
    }

    /// ACK or CAN from the host.
    fn host_byte(&mut self, byte: u8) {
        let kind = if byte == ACK {
            NoteKind::Ack
        } else {
            NoteKind::Can
        };
        let Some(mut scan) = self.scan else {
            self.note(self.now, kind, 0, 0, NoteDetail::Answer(AnswerAt::NoScan));
            if byte == CAN {
                // Nothing to abort; answer so that the host's read of the answer returns.
                self.reply(vec![ACK]);
            }
            return;
        };
        if scan.state != ScanState::AwaitAck {
            // The block is not all sent: the host is ahead of the data (a protocol error on its
            // side). The device keeps sending; a CAN still aborts.
            let sent = u64::from(scan.sent);
            self.note(
                self.now,
                kind,
                0,
                sent,
                NoteDetail::Answer(AnswerAt::MidBlock),
            );
            if byte == ACK {
                return;
            }
        } else {
            let sent = u64::from(scan.sent);
            self.note(
                self.now,
                kind,
                0,
                sent,
                NoteDetail::Answer(AnswerAt::AfterBlock),
            );
        }
        if byte == ACK {
            scan.state = ScanState::WantBlock;
            self.scan = Some(scan);
            return;
        }
        let device_asked = self.fault_status.take().is_some();
        self.abandon_output();
        if device_asked {
            // The device asked for the cancel and has stopped already: confirm.
            self.scan = None;
            self.reply(vec![ACK]);
            return;
        }
        match self.engine.cancel(self.now) {
            CancelOutcome::Ignored => {
                // The device pays no attention to CAN: it goes on with the next block.
                scan.state = ScanState::WantBlock;
                self.scan = Some(scan);
            }
            CancelOutcome::Started | CancelOutcome::NotScanning => {
                self.scan = None;
                self.reply(vec![ACK]);
            }
            // The fault event (polled below) halts bulk IN or disconnects.
            CancelOutcome::Faulted(_) => self.scan = None,
        }
        self.drain_engine();
    }

    /// A two-byte command.
    fn command(&mut self, fs: bool, letter: u8) {
        let name = command_name(fs, letter);
        self.note(
            self.now,
            NoteKind::Command,
            0,
            u64::from(letter),
            name.clone().into(),
        );
        let ext = self.config.level == EsciLevel::B7;
        if fs {
            if !ext {
                return self.nak(&name, "extended commands need level B7");
            }
            match letter {
                b'I' => self.reply(wire::extended_identity(
                    self.engine.optics(),
                    self.config.level,
                    &self.config.model,
                )),
                b'F' => self.reply(vec![0; 16]),
                b'W' => self.expect_param(true, letter, FS_W_LEN),
                b'G' => self.start(true),
                _ => self.nak(&name, "unknown command"),
            }
            return;
        }
        match letter {
            b'@' => {
                self.classic = Classic::default();
                self.params = None;
                self.fault_status = None;
                self.reply(vec![ACK]);
            }
            b'I' => self.reply_with_header(wire::identity(self.engine.optics(), self.config.level)),
            b'F' => {
                let status = if ext { STATUS_EXT_COMMANDS } else { 0 };
                self.reply(vec![STX, status, 0, 0]);
            }
            b'f' => self.reply_with_header(wire::extended_status(
                self.engine.optics(),
                &self.config.model,
            )),
            b'G' => self.start(false),
            _ => match param_len(letter) {
                Some(len) => self.expect_param(false, letter, len),
                None => self.nak(&name, "unknown command"),
            },
        }
    }

    fn nak(&mut self, name: &str, why: &str) {
        self.note(
            self.now,
            NoteKind::NakSent,
            0,
            0,
            format!("{name}: {why}").into(),
        );
        self.reply(vec![NAK]);
    }

    fn expect_param(&mut self, fs: bool, cmd: u8, len: usize) {
        self.phase = Phase::Param { fs, cmd, len };
        self.reply(vec![ACK]);
    }

    fn reply_with_header(&mut self, payload: Vec<u8>) {
        let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
        let mut header = vec![STX, 0];
        header.extend_from_slice(&len.to_le_bytes());
        self.reply(header);
        self.reply(payload);
    }

    /// The parameter block of `cmd`.
    fn parameter(&mut self, fs: bool, cmd: u8, data: &[u8]) {
        let name = command_name(fs, cmd);
        let result = if fs {
            wire::decode_fs_w(data).and_then(|(job, lcount)| self.accept_job(job, lcount))
        } else {
            self.classic_param(cmd, data)
        };
        match result {
            Ok(detail) => {
                self.note(
                    self.now,
                    NoteKind::Param,
                    0,
                    u64::from(cmd),
                    format!("{name} {detail}").into(),
                );
                self.reply(vec![ACK]);
            }
            Err(why) => self.nak(&name, &why.to_string()),
        }
    }

    /// Applies a classic parameter block; the detail of its `param` note.
    fn classic_param(&mut self, cmd: u8, data: &[u8]) -> Result<String, ParamError> {
        let c = &mut self.classic;
        match cmd {
            b'C' => match data[0] {
                COLOR_MONO | COLOR_RGB_PIXEL => c.color = data[0],
                other => return Err(ParamError::ColourMode(other)),
            },
            b'D' => match data[0] {
                1 | 8 => c.depth = data[0],
                other => return Err(ParamError::Depth(other)),
            },
            b'R' => {
                let x = u16::from_le_bytes([data[0], data[1]]);
                let y = u16::from_le_bytes([data[2], data[3]]);
                c.resolution = Some((x, y));
            }
            b'A' => {
                let v = |i: usize| u16::from_le_bytes([data[i], data[i + 1]]);
                c.area = Some([v(0), v(2), v(4), v(6)]);
            }
            b'd' => {
                if data[0] == 0 {
                    return Err(ParamError::ZeroLineCount);
                }
                c.lcount = data[0];
            }
            // Accepted and without effect on the image: gamma, halftone, brightness,
            // sharpness, colour correction, speed, threshold, mirroring, option unit.
            _ => {}
        }
        let hex: Vec<String> = data.iter().take(9).map(|b| format!("{b:02x}")).collect();
        Ok(hex.join(""))
    }

    /// Stores the parameters of the next scan; the detail of their `param` note.
    fn accept_job(&mut self, job: ScanJob, lcount: u32) -> Result<String, ParamError> {
        if lcount == 0 {
            return Err(ParamError::ZeroLineCount);
        }
        job.validate(self.engine.optics())?;
        self.params = Some(EsciParams { job, lcount });
        Ok(format!(
            "{} dpi {:?} {}x{}+{}+{} lcount {lcount}",
            job.resolution_dpi, job.mode, job.width_px, job.height_px, job.x_px, job.y_px
        ))
    }

    /// FS G (extended) or ESC G (classic).
    fn start(&mut self, ext: bool) {
        if !ext {
            let c = self.classic;
            let job = match (c.resolution, c.area, mode_of(c.color, c.depth)) {
                (Some((x, y)), Some(a), Ok(mode)) if x == y => ScanJob {
                    resolution_dpi: x,
                    mode,
                    x_px: u32::from(a[0]),
                    y_px: u32::from(a[1]),
                    width_px: u32::from(a[2]),
                    height_px: u32::from(a[3]),
                    source: ScanSource::Flatbed,
                    pages: 1,
                },
                _ => return self.refuse_start(ext, "resolution, area or mode not set"),
            };
            let lcount = if c.lcount == 0 {
                1
            } else {
                u32::from(c.lcount)
            };
            if let Err(why) = self.accept_job(job, lcount) {
                return self.refuse_start(ext, &why.to_string());
            }
        }
        let Some(params) = self.params else {
            return self.refuse_start(ext, "no parameters");
        };
        if matches!(self.engine.state(), EngineState::Cancelling { .. }) {
            // The motor is still stopping: the answer comes when it has.
            self.deferred_start = Some(ext);
            self.note(
                self.now,
                NoteKind::StartDeferred,
                0,
                0,
                "motor stopping".into(),
            );
            return;
        }
        let lines = self.engine.timing().band_lines.min(params.lcount).max(1);
        let job = params.job;
        match self.engine.start_with_band_lines(self.now, job, lines) {
            Ok(()) => {
                self.fault_status = None;
                // Nothing of an earlier scan may lead this one's data.
                self.abandon_output();
                self.drain_engine();
                let bpl = job.bytes_per_line();
                let blocks = job.height_px.div_ceil(lines);
                self.scan = Some(Scan {
                    ext,
                    bytes_per_line: bpl,
                    blocks,
                    sent: 0,
                    state: ScanState::WantBlock,
                    lineart: job.mode == ScanMode::Lineart,
                });
                if ext {
                    self.reply(wire::start_reply(lines, job.height_px, bpl));
                }
                self.note(
                    self.now,
                    NoteKind::BlocksPlanned,
                    0,
                    u64::from(blocks),
                    format!("lines={lines} bytes_per_line={bpl}").into(),
                );
            }
            Err(e) => self.refuse_start(ext, &e.to_string()),
        }
    }

    fn refuse_start(&mut self, ext: bool, why: &str) {
        self.note(self.now, NoteKind::StartRefused, 0, 0, why.into());
        if ext {
            self.reply(wire::start_refused_reply());
        } else {
            // The host reads a 6-byte header; one NAK byte makes that read come up short.
            self.reply(vec![NAK]);
        }
    }
}

impl<B: UsbBus + FlushFifo> Personality<B> for EsciFunction<'_, B> {
    fn class(&mut self) -> &mut dyn UsbClass<B> {
        self
    }

    /// Vendor-specific (0xFF), as Epson's scanners report it.
    fn device_class(&self) -> u8 {
        0xFF
    }

    fn engine(&self) -> &ScanEngine {
        &self.engine
    }

    fn engine_mut(&mut self) -> &mut ScanEngine {
        &mut self.engine
    }

    fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// The engine's next event, or the end of a `slow_ack` hold on bulk OUT.
    fn poll_at(&self) -> Option<Instant> {
        match (self.engine.poll_at(), self.hold_out_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn pump(&mut self) {
        if self.hold_out_until.is_some_and(|t| self.now >= t) {
            self.hold_out_until = None;
        }
        self.drain_engine();
        if let Some(ext) = self.deferred_start {
            if matches!(
                self.engine.state(),
                EngineState::Idle | EngineState::Aborted { .. }
            ) {
                self.deferred_start = None;
                self.start(ext);
            }
        }
        self.offer_block();
        self.feed();
    }

    /// Bulk IN, when a reply or block was abandoned with a packet in the FIFO.
    fn take_flush_requests(&mut self) -> EndpointSet {
        EndpointSet::EMPTY.with_if(EP_DATA_IN, std::mem::take(&mut self.flush_in))
    }

    /// Bulk OUT while a `slow_ack` fault holds it.
    fn nak_out(&self) -> EndpointSet {
        EndpointSet::EMPTY.with_if(EP_DATA_OUT, self.out_held())
    }

    /// Bulk IN is the endpoint the function halts; when the host cleared it the device is idle.
    fn observe_halts(&mut self, is_stalled: &dyn Fn(u8) -> bool) {
        if self.halted && !is_stalled(EP_DATA_IN) {
            self.halted = false;
            self.note(
                self.now,
                NoteKind::HaltCleared,
                0,
                u64::from(EP_DATA_IN),
                NoteDetail::None,
            );
            self.engine.reset(self.now);
            self.scan = None;
            self.note(
                self.now,
                NoteKind::Idle,
                0,
                0,
                NoteDetail::Idle(IdleCause::HaltCleared),
            );
        }
    }

    fn wants_disconnect(&self) -> bool {
        self.disconnect
    }

    fn take_notes(&mut self, into: &mut Vec<DeviceNote>) {
        into.append(&mut self.notes);
    }
}

impl<B: UsbBus + FlushFifo> UsbClass<B> for EsciFunction<'_, B> {
    fn get_configuration_descriptors(
        &self,
        writer: &mut DescriptorWriter,
    ) -> usb_device::Result<()> {
        writer.interface_alt(self.iface, 0, 0xFF, 0xFF, 0xFF, Some(self.iface_string))?;
        writer.endpoint(&self.data_in)?;
        writer.endpoint(&self.data_out)?;
        Ok(())
    }

    fn get_string(&self, index: StringIndex, _lang_id: LangID) -> Option<&str> {
        (index == self.iface_string).then_some("ESC/I scanner interface")
    }

    fn reset(&mut self) {
        self.engine.reset(self.now);
        self.hold_out_until = None;
        self.scan = None;
        self.replies.clear();
        self.sending = None;
        self.inbox.clear();
        self.phase = Phase::Command;
        self.halted = false;
        self.deferred_start = None;
        self.note(self.now, NoteKind::Reset, 0, 0, "bus reset".into());
    }

    fn endpoint_in_complete(&mut self, addr: EndpointAddress) {
        if addr == self.data_in.address() {
            self.packet_taken();
        }
    }

    fn endpoint_out(&mut self, addr: EndpointAddress) {
        if addr != self.data_out.address() {
            return;
        }

        let mut buf = [0u8; 1024];
        if let Ok(n) = self.data_out.read(&mut buf) {
            self.inbox.extend_from_slice(&buf[..n]);
            self.process();
        }
    }
}
