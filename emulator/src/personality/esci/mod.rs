//! The ESC/I personality: an Epson flatbed's command protocol on bulk IN and OUT.
//!
//! [`EsciFunction`] is a second `usb_device::class::UsbClass` beside the native
//! [`ScannerFunction`](crate::personality::native::ScannerFunction), on the same [`ScanEngine`], bus and
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

use crate::engine::Optics;
use crate::engine::{
    Band, CancelOutcome, EngineState, EventKind, Fault, ScanEngine, ScanJob, ScanMode, ScanSource,
};
use crate::personality::native::protocol;
use crate::personality::{engine_note, AnswerAt, DeviceNote, IdleCause, NoteDetail, NoteKind};
use crate::profile::{EsciConfig, EsciLevel, Profile};
use crate::time::Instant;
use crate::usb::bus::FlushFifo;

/// Escape: leads the classic commands.
pub const ESC: u8 = 0x1b;
/// File separator: leads the extended commands.
pub const FS: u8 = 0x1c;
/// Start of text: first byte of every information header.
pub const STX: u8 = 0x02;
/// Acknowledge: success, or the host accepting a block.
pub const ACK: u8 = 0x06;
/// Negative acknowledge: a refused command or parameter.
pub const NAK: u8 = 0x15;
/// Cancel: the host refusing a block, which aborts the scan.
pub const CAN: u8 = 0x18;

/// Extended block status: the device asks the host to cancel (its Cancel button).
pub const BLOCK_CANCEL_REQUEST: u8 = 0x10;
/// Extended block status: fatal error.
pub const BLOCK_FATAL_ERROR: u8 = 0x80;
/// Classic header status: the last block of the area.
pub const HEADER_AREA_END: u8 = 0x20;
/// `ESC F` status: the device understands the extended (`FS`) commands.
pub const STATUS_EXT_COMMANDS: u8 = 0x02;
/// Colour byte: monochrome (gray or lineart by depth).
pub const COLOR_MONO: u8 = 0x00;
/// Colour byte: RGB, pixel-interleaved.
pub const COLOR_RGB_PIXEL: u8 = 0x13;

/// Length of the `FS W` parameter block.
pub const FS_W_LEN: usize = 64;

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
    optics: Optics,
    band_lines: u32,
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
    /// Allocates the vendor interface with bulk IN 0x81 and bulk OUT 0x02 on `alloc`, with the
    /// scan engine of `profile` and the ESC/I settings `config`.
    pub fn new(
        alloc: &'a UsbBusAllocator<B>,
        profile: &Profile,
        config: &EsciConfig,
    ) -> EsciFunction<'a, B> {
        let mps = profile.usb.bulk_max_packet;
        let data_in = alloc
            .alloc(
                Some(EndpointAddress::from(protocol::EP_DATA_IN)),
                EndpointType::Bulk,
                mps,
                0,
            )
            .expect("bulk IN 0x81 is free on a fresh allocator");
        let data_out = alloc
            .alloc(
                Some(EndpointAddress::from(protocol::EP_DATA_OUT)),
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
            engine: profile.engine(),
            config: config.clone(),
            optics: profile.optics.clone(),
            band_lines: profile.timing.band_lines,
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

    /// The scan engine.
    pub fn engine(&self) -> &ScanEngine {
        &self.engine
    }

    /// The scan engine (for tests and for choosing an image source).
    pub fn engine_mut(&mut self) -> &mut ScanEngine {
        &mut self.engine
    }

    /// Sets the time the next poll and requests happen at.
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// When the device next needs a poll: the engine's next event, or the end of a
    /// `slow_ack` hold on bulk OUT.
    pub fn poll_at(&self) -> Option<Instant> {
        match (self.engine.poll_at(), self.hold_out_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// True once a disconnect fault fired.
    pub fn wants_disconnect(&self) -> bool {
        self.disconnect
    }

    /// Takes the notes written since the last call.
    pub fn take_notes(&mut self) -> Vec<DeviceNote> {
        std::mem::take(&mut self.notes)
    }

    /// True while a `slow_ack` fault holds bulk OUT: the device must NAK the host's packets
    /// ([`FlushFifo::set_out_nak`]).
    pub fn out_held(&self) -> bool {
        self.hold_out_until.is_some()
    }

    /// True (once) when the bulk IN FIFO must be flushed (a reply or block was abandoned).
    pub fn take_flush_request(&mut self) -> bool {
        std::mem::take(&mut self.flush_in)
    }

    /// The parameters of the last accepted `FS W` or classic setup, if any.
    pub fn params(&self) -> Option<EsciParams> {
        self.params
    }

    /// Tells the function whether the host has cleared the halt of bulk IN; called by the
    /// device after every poll.
    pub fn observe_halts(&mut self, is_stalled: impl Fn(u8) -> bool) {
        if self.halted && !is_stalled(protocol::EP_DATA_IN) {
            self.halted = false;
            self.note(
                self.now,
                NoteKind::HaltCleared,
                0,
                u64::from(protocol::EP_DATA_IN),
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

    /// Runs the engine up to now and keeps bulk IN fed. Called after every `UsbDevice::poll`.
    pub fn pump(&mut self) {
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
            NoteDetail::Endpoints(vec![protocol::EP_DATA_IN]),
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
                b'I' => self.reply(self.extended_identity()),
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
            b'I' => self.reply_with_header(self.identity()),
            b'F' => {
                let status = if ext { STATUS_EXT_COMMANDS } else { 0 };
                self.reply(vec![STX, status, 0, 0]);
            }
            b'f' => self.reply_with_header(self.extended_status()),
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
            self.decode_fs_w(data)
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
            Err(why) => self.nak(&name, &why),
        }
    }

    fn classic_param(&mut self, cmd: u8, data: &[u8]) -> Result<String, String> {
        let c = &mut self.classic;
        match cmd {
            b'C' => match data[0] {
                COLOR_MONO | COLOR_RGB_PIXEL => c.color = data[0],
                other => return Err(format!("colour mode 0x{other:02x} is not emulated")),
            },
            b'D' => match data[0] {
                1 | 8 => c.depth = data[0],
                other => return Err(format!("depth {other} is not emulated")),
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
                    return Err("line count 0".into());
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

    fn decode_fs_w(&mut self, d: &[u8]) -> Result<String, String> {
        let le32 = |i: usize| u32::from_le_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
        let (xres, yres) = (le32(0), le32(4));
        if xres != yres {
            return Err(format!("x and y resolution differ ({xres} / {yres})"));
        }
        let dpi = u16::try_from(xres).map_err(|_| format!("resolution {xres} dpi"))?;
        if d[26] != 0 {
            return Err(format!("option unit {} is not installed", d[26]));
        }
        let mode = mode_of(d[24], d[25])?;
        let job = ScanJob {
            resolution_dpi: dpi,
            mode,
            x_px: le32(8),
            y_px: le32(12),
            width_px: le32(16),
            height_px: le32(20),
            source: ScanSource::Flatbed,
            pages: 1,
        };
        self.accept_job(job, u32::from(d[28]))
    }

    fn accept_job(&mut self, job: ScanJob, lcount: u32) -> Result<String, String> {
        if lcount == 0 {
            return Err("line count 0".into());
        }
        job.validate(&self.optics).map_err(|e| e.to_string())?;
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
                return self.refuse_start(ext, &why);
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
        let lines = self.band_lines.min(params.lcount).max(1);
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
                    let full = job.height_px / lines;
                    let last = u64::from(job.height_px % lines) * bpl;
                    let block = u64::from(lines) * bpl;
                    let mut r = vec![STX, 0];
                    r.extend_from_slice(&le32(block).to_le_bytes());
                    r.extend_from_slice(&full.to_le_bytes());
                    r.extend_from_slice(&le32(last).to_le_bytes());
                    self.reply(r);
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
            let mut r = vec![STX, BLOCK_FATAL_ERROR];
            r.extend_from_slice(&[0; 12]);
            self.reply(r);
        } else {
            // The host reads a 6-byte header; one NAK byte makes that read come up short.
            self.reply(vec![NAK]);
        }
    }

    fn max_dpi(&self) -> u16 {
        self.optics.resolutions.iter().copied().max().unwrap_or(1)
    }

    /// The flatbed at the highest resolution, in pixels.
    fn area_at_max(&self) -> (u16, u16) {
        let scale = |px: u32| {
            let v = u64::from(px) * u64::from(self.max_dpi()) / u64::from(self.optics.optical_dpi);
            u16::try_from(v).unwrap_or(u16::MAX)
        };
        (
            scale(self.optics.max_width_px),
            scale(self.optics.max_height_px),
        )
    }

    fn level_bytes(&self) -> [u8; 2] {
        match self.config.level {
            EsciLevel::B7 => *b"B7",
            EsciLevel::B6 => *b"B6",
        }
    }

    /// ESC I payload: level, resolutions, area.
    fn identity(&self) -> Vec<u8> {
        let mut p = self.level_bytes().to_vec();
        let mut res = self.optics.resolutions.clone();
        res.sort_unstable();
        res.dedup();
        for r in res {
            p.push(b'R');
            p.extend_from_slice(&r.to_le_bytes());
        }
        let (x, y) = self.area_at_max();
        p.push(b'A');
        p.extend_from_slice(&x.to_le_bytes());
        p.extend_from_slice(&y.to_le_bytes());
        p
    }

    fn model_field(&self) -> [u8; 16] {
        let mut m = [b' '; 16];
        let name = self.config.model.as_bytes();
        m[..name.len().min(16)].copy_from_slice(&name[..name.len().min(16)]);
        m
    }

    /// ESC f payload: 42 bytes of extended status.
    fn extended_status(&self) -> Vec<u8> {
        let mut p = vec![0u8; 42];
        p[0] = 0x40; // flatbed
        let (x, y) = self.area_at_max();
        p[12..14].copy_from_slice(&x.to_le_bytes());
        p[14..16].copy_from_slice(&y.to_le_bytes());
        p[26..42].copy_from_slice(&self.model_field());
        p
    }

    /// FS I: 80 bytes of extended identity, no header.
    fn extended_identity(&self) -> Vec<u8> {
        let o = &self.optics;
        let mut p = vec![0u8; 80];
        p[0..2].copy_from_slice(&self.level_bytes());
        let min = o.resolutions.iter().copied().min().unwrap_or(1);
        p[4..8].copy_from_slice(&u32::from(o.optical_dpi).to_le_bytes());
        p[8..12].copy_from_slice(&u32::from(min).to_le_bytes());
        p[12..16].copy_from_slice(&u32::from(self.max_dpi()).to_le_bytes());
        p[16..20].copy_from_slice(&o.max_width_px.to_le_bytes());
        p[20..24].copy_from_slice(&o.max_width_px.to_le_bytes());
        p[24..28].copy_from_slice(&o.max_height_px.to_le_bytes());
        p[46..62].copy_from_slice(&self.model_field());
        p[62..66].copy_from_slice(b"1.00");
        p[66] = 8;
        p[67] = 8;
        p
    }
}

fn le32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The scan mode of a colour byte and a depth.
fn mode_of(color: u8, depth: u8) -> Result<ScanMode, String> {
    match (color, depth) {
        (COLOR_MONO, 8) => Ok(ScanMode::Gray8),
        (COLOR_MONO, 1) => Ok(ScanMode::Lineart),
        (COLOR_RGB_PIXEL, 8) => Ok(ScanMode::Color24),
        (c, d) => Err(format!("colour 0x{c:02x} at depth {d} is not emulated")),
    }
}

/// Length of the parameter block of classic command `ESC letter`, if it takes one.
pub fn param_len(letter: u8) -> Option<usize> {
    match letter {
        b'C' | b'D' | b'B' | b'L' | b'Z' | b'M' | b'Q' | b'g' | b'K' | b'd' | b's' | b't'
        | b'N' | b'e' => Some(1),
        b'R' => Some(4),
        b'A' => Some(8),
        b'm' => Some(9),
        b'z' => Some(257),
        _ => None,
    }
}

/// `ESC I`, `FS W`, or `ESC 0x05` for a byte that is not a printable letter.
pub fn command_name(fs: bool, letter: u8) -> String {
    let lead = if fs { "FS" } else { "ESC" };
    if letter.is_ascii_graphic() {
        format!("{lead} {}", letter as char)
    } else {
        format!("{lead} 0x{letter:02x}")
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
