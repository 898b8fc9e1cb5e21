//! The scanner's USB function: a `usb_device::class::UsbClass` speaking the native protocol.
//!
//! [`ScannerFunction`] is firmware: it is written against usb-device's `UsbBus` (plus
//! [`FlushFifo`], the FIFO flush every device controller has) and would run on a microcontroller
//! unchanged. It owns the [`ScanEngine`], answers the vendor and Still Image class requests of
//! `emulator/PROTOCOL.md`, streams bands on bulk IN (each band ends with a short packet or a
//! ZLP), posts events on interrupt IN, and stalls its bulk endpoints on a device-initiated
//! cancel until the host clears both halts.
//!
//! Time enters through [`ScannerFunction::set_now`], called by the surrounding
//! device (`device::Device`) before every poll. Everything that happens is also written to a
//! log of [`DeviceNote`]s, which hosts turn into trace events.

pub mod protocol;

use std::collections::VecDeque;

use usb_device::class_prelude::*;
use usb_device::control::{Recipient, RequestType};

use crate::engine::{
    Band, CancelOutcome, EngineState, EventKind, Fault, ScanEngine, ScanJob, StartError,
};
use crate::personality::{
    engine_note, DeviceNote, EndpointSizes, IdleCause, NoteDetail, NoteKind, Personality,
};
use crate::time::Instant;
use crate::usb::bus::{EndpointSet, FlushFifo};
use protocol::{
    Capabilities, DeviceState, DeviceStatus, Event, EventCode, ParamsReport, ScanError, ScanParams,
    ScanStatus,
};
use usb_device::descriptor::lang_id::LangID;
use usb_device::UsbError;

/// Events queued for the interrupt endpoint before the oldest are dropped.
const EVENT_QUEUE: usize = 32;

/// The band being streamed on bulk IN.
#[derive(Clone, Copy, Debug)]
struct Streaming {
    band: Band,
    /// Bytes of the band already queued to the endpoint.
    sent: u64,
    /// Every packet of the band is queued, the short or zero-length one that ends it included.
    queued_all: bool,
    /// `stage[from..to]` holds the band's next bytes, rendered and not yet taken by the FIFO
    /// (empty when `from == to`).
    staged: (usize, usize),
}

/// Bytes of band data rendered ahead at a time, in whole packets: a multi-packet FIFO
/// takes a run of this many with one write.
const STAGE_BYTES: usize = super::MULTI_PACKET_FIFO_BYTES;

/// The native-protocol scanner function. See the module documentation.
pub struct ScannerFunction<'a, B: UsbBus + FlushFifo> {
    iface: InterfaceNumber,
    iface_string: StringIndex,
    data_in: EndpointIn<'a, B>,
    data_out: EndpointOut<'a, B>,
    events: EndpointIn<'a, B>,
    engine: ScanEngine,
    caps: Capabilities,
    params: Option<ScanJob>,
    now: Instant,
    streaming: Option<Streaming>,
    /// Bulk IN's max packet size.
    mps: usize,
    /// Band data rendered for bulk IN: whole packets, a multiple of `mps` long.
    stage: Vec<u8>,
    /// Bulk endpoints halted by a device-initiated cancel, not yet cleared by the host.
    halted: Vec<u8>,
    error: ScanError,
    job_id: u32,
    bands_sent: u32,
    pages_done: u16,
    queue: VecDeque<Event>,
    event_in_flight: bool,
    disconnect: bool,
    flush_data_in: bool,
    flush_events: bool,
    notes: Vec<DeviceNote>,
}

impl<'a, B: UsbBus + FlushFifo> ScannerFunction<'a, B> {
    /// Allocates the interface and endpoints (bulk IN 0x81, bulk OUT 0x02, interrupt IN 0x83,
    /// of `sizes`) on `alloc`, running `engine`; the capabilities are the engine's optics and
    /// timing.
    pub fn new(
        alloc: &'a UsbBusAllocator<B>,
        sizes: EndpointSizes,
        engine: ScanEngine,
    ) -> ScannerFunction<'a, B> {
        let usb = sizes;
        let optics = engine.optics();
        let timing = engine.timing();
        let caps = Capabilities {
            version: protocol::PROTOCOL_VERSION,
            optical_dpi: optics.optical_dpi,
            max_width_px: optics.max_width_px,
            max_height_px: optics.max_height_px,
            modes: optics
                .modes
                .iter()
                .fold(0, |m, mode| m | 1 << protocol::mode_code(*mode)),
            flags: if optics.adf.is_some() {
                Capabilities::FLAG_ADF
            } else {
                0
            },
            band_lines: u16::try_from(timing.band_lines).unwrap_or(u16::MAX),
            buffer_bands: u16::try_from(timing.buffer_bands).unwrap_or(u16::MAX),
            resolutions: optics.resolutions.clone(),
        };
        // Endpoint addresses are fixed by the protocol; a fresh allocator always has them free.
        let data_in = alloc
            .alloc(
                Some(EndpointAddress::from(protocol::EP_DATA_IN)),
                EndpointType::Bulk,
                usb.bulk_max_packet,
                0,
            )
            .expect("bulk IN 0x81 is free on a fresh allocator");
        let data_out = alloc
            .alloc(
                Some(EndpointAddress::from(protocol::EP_DATA_OUT)),
                EndpointType::Bulk,
                usb.bulk_max_packet,
                0,
            )
            .expect("bulk OUT 0x02 is free on a fresh allocator");
        let events = alloc
            .alloc(
                Some(EndpointAddress::from(protocol::EP_EVENTS)),
                EndpointType::Interrupt,
                usb.interrupt_max_packet,
                usb.interrupt_interval,
            )
            .expect("interrupt IN 0x83 is free on a fresh allocator");
        ScannerFunction {
            iface: alloc.interface(),
            iface_string: alloc.string(),
            data_in,
            data_out,
            events,
            engine,
            caps,
            params: None,
            now: Instant::ZERO,
            streaming: None,
            mps: usize::from(usb.bulk_max_packet),
            stage: vec![
                0;
                (STAGE_BYTES / usize::from(usb.bulk_max_packet).max(1)).max(1)
                    * usize::from(usb.bulk_max_packet)
            ],
            halted: Vec::new(),
            error: ScanError::None,
            job_id: 0,
            bands_sent: 0,
            pages_done: 0,
            queue: VecDeque::new(),
            event_in_flight: false,
            disconnect: false,
            flush_data_in: false,
            flush_events: false,
            notes: Vec::new(),
        }
    }

    /// Bulk endpoints the device has halted and the host has not cleared yet.
    pub fn halted(&self) -> &[u8] {
        &self.halted
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

    fn post(&mut self, code: EventCode, arg: u8, page: u16, value: u32) {
        if self.queue.len() >= EVENT_QUEUE {
            self.queue.pop_front();
        }
        self.queue.push_back(Event {
            code,
            arg,
            page,
            value,
        });
    }

    fn halt(&mut self, at: Instant, eps: &[u8]) {
        self.data_in.stall();
        if eps.contains(&protocol::EP_DATA_OUT) {
            self.data_out.stall();
        }
        self.drop_stream();
        self.halted = eps.to_vec();
        self.note(
            at,
            NoteKind::Halted,
            0,
            0,
            NoteDetail::Endpoints(eps.to_vec()),
        );
    }

    /// Handles every engine event due up to now (the engine's contract before a change).
    fn drain_engine(&mut self) {
        while let Some(ev) = self.engine.poll(self.now) {
            self.on_engine_event(ev.at, ev.kind);
        }
    }

    fn on_engine_event(&mut self, at: Instant, kind: EventKind) {
        if let EventKind::Fault(fault) = kind {
            return self.on_fault(at, fault);
        }
        self.notes
            .extend(engine_note(at, &kind, u64::from(self.job_id)));
        match kind {
            EventKind::ScanStarted => self.post(EventCode::ScanStarted, 0, 0, self.job_id),
            EventKind::BandReady(band) => {
                self.post(EventCode::BandReady, 0, band.page, band.seq as u32)
            }
            EventKind::PageEnd { page } => {
                self.pages_done = page + 1;
                self.post(EventCode::PageEnd, 0, page, 0);
            }
            EventKind::PageFeed { page } => self.post(EventCode::PageFeed, 0, page, 0),
            EventKind::FeederEmpty { pages_scanned } => {
                self.error = ScanError::FeederEmpty;
                self.post(EventCode::FeederEmpty, 0, 0, u32::from(pages_scanned));
            }
            EventKind::ScanComplete { pages } => {
                self.post(EventCode::ScanComplete, 0, 0, u32::from(pages))
            }
            EventKind::MotorStopped { bands_discarded } => {
                self.post(EventCode::MotorStopped, 0, 0, bands_discarded)
            }
            EventKind::WarmupDone
            | EventKind::CancelRequested { .. }
            | EventKind::CancelIgnored
            | EventKind::BufferFull
            | EventKind::Resumed
            | EventKind::Fault(_) => {}
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
        let both = [protocol::EP_DATA_IN, protocol::EP_DATA_OUT];
        let (error, halt): (ScanError, &[u8]) = match fault {
            Fault::Stall { .. } => (ScanError::DataStall, &both[..1]),
            Fault::PaperJam { .. } => (ScanError::PaperJam, &both),
            Fault::CoverOpen { .. } => (ScanError::CoverOpen, &both),
            Fault::CancelButton { .. } => (ScanError::CancelButton, &both),
            Fault::MultiFeed { .. } => (ScanError::MultiFeed, &both),
            Fault::ShortBand { .. } => {
                self.error = ScanError::ShortBand;
                self.post(EventCode::Cancelled, ScanError::ShortBand as u8, page, 0);
                return;
            }
            Fault::StallOnCancel => (ScanError::DataStall, &both),
            Fault::Disconnect { .. } | Fault::DisconnectOnCancel => {
                self.drop_stream();
                self.disconnect = true;
                return;
            }
            Fault::LateBand { .. }
            | Fault::SlowAck { .. }
            | Fault::IgnoreCancel
            | Fault::SlowCancel { .. } => return,
        };
        self.error = error;
        let code = if error == ScanError::CancelButton {
            EventCode::Cancelled
        } else {
            EventCode::Fault
        };
        self.post(code, error as u8, page, band);
        self.halt(at, halt);
    }

    fn drop_stream(&mut self) {
        self.streaming = None;
        self.flush_data_in = true;
    }

    /// Queues the next packet of the current band (or the next band) on bulk IN.
    fn feed_data(&mut self) {
        if !self.halted.is_empty() {
            return;
        }
        // Packets queued now would go with the stale ones the device is about to flush.
        if self.flush_data_in {
            return;
        }
        if self.streaming.is_none() {
            let Some(band) = self.engine.front_band().copied() else {
                return;
            };
            self.streaming = Some(Streaming {
                band,
                sent: 0,
                queued_all: false,
                staged: (0, 0),
            });
        }
        let Some(mut st) = self.streaming else { return };
        let mps = self.mps;
        // As much as the FIFO takes: one packet on a plain endpoint, a run of them (one write)
        // where the device gave bulk IN a deeper FIFO. Packets are what one write per packet
        // would queue: max-size ones, then the band's short last one, or a ZLP after a full one.
        while !st.queued_all {
            if st.sent == st.band.bytes {
                // Only the zero-length packet that ends a band of whole packets is left.
                match self.data_in.write(&[]) {
                    Ok(_) => st.queued_all = true,
                    Err(UsbError::WouldBlock) => break,
                    Err(_) => {
                        self.streaming = None;
                        return;
                    }
                }
                continue;
            }
            if st.staged.0 == st.staged.1 {
                let left = st.band.bytes - st.sent;
                let len =
                    usize::try_from(left).map_or(self.stage.len(), |l| l.min(self.stage.len()));
                self.engine.fill(&st.band, st.sent, &mut self.stage[..len]);
                st.staged = (0, len);
            }
            let (from, to) = st.staged;
            let written = match self.data_in.write(&self.stage[from..to]) {
                Ok(n) => Ok(n),
                // A one-packet FIFO takes one packet per write.
                Err(UsbError::BufferOverflow) if to - from > mps => {
                    self.data_in.write(&self.stage[from..from + mps])
                }
                Err(e) => Err(e),
            };
            match written {
                Ok(n) => {
                    st.sent += n as u64;
                    st.staged.0 += n;
                    // A short last packet ends the band; a full one needs a ZLP after it.
                    st.queued_all =
                        st.sent == st.band.bytes && !st.band.bytes.is_multiple_of(mps as u64);
                }
                // The FIFO is full; the rest waits for the host to take some.
                Err(UsbError::WouldBlock) => break,
                Err(_) => {
                    self.streaming = None;
                    return;
                }
            }
        }
        self.streaming = Some(st);
    }

    /// The host took the last packet queued on bulk IN (the FIFO ran empty).
    fn data_packet_taken(&mut self) {
        let Some(st) = self.streaming else { return };
        if st.queued_all {
            self.streaming = None;
            self.bands_sent += 1;
            let band = st.band;
            self.note(
                self.now,
                NoteKind::BandSent,
                band.page,
                u64::from(band.index),
                NoteDetail::Text(format!("seq={}", band.seq)),
            );
            // Contract: the engine is polled up to now before band_taken.
            self.drain_engine();
            self.engine.band_taken(self.now);
            self.drain_engine();
            if self.engine.state() == EngineState::Idle && self.error == ScanError::None {
                self.note(self.now, NoteKind::Drained, 0, 0, NoteDetail::None);
            }
        }
        self.feed_data();
    }

    fn feed_events(&mut self) {
        if self.event_in_flight {
            return;
        }
        let Some(ev) = self.queue.front().copied() else {
            return;
        };
        if self.events.write(&ev.encode()).is_ok() {
            self.queue.pop_front();
            self.event_in_flight = true;
        }
    }

    fn device_state(&self) -> DeviceState {
        if !self.halted.is_empty() {
            return DeviceState::Halted;
        }
        match self.engine.state() {
            EngineState::Idle | EngineState::Aborted { .. } => DeviceState::Idle,
            EngineState::WarmingUp => DeviceState::WarmingUp,
            EngineState::Scanning { .. } => DeviceState::Scanning,
            EngineState::FeedingPage { .. } => DeviceState::FeedingPage,
            EngineState::Draining => DeviceState::Draining,
            EngineState::Cancelling { .. } => DeviceState::Cancelling,
        }
    }

    fn device_status(&self) -> DeviceStatus {
        if !self.halted.is_empty() {
            return DeviceStatus {
                code: protocol::STATUS_TRANSACTION_CANCELLED,
                halted: self.halted.clone(),
            };
        }
        let code = match self.engine.state() {
            EngineState::Cancelling { .. } => protocol::STATUS_BUSY,
            _ => protocol::STATUS_OK,
        };
        DeviceStatus {
            code,
            halted: Vec::new(),
        }
    }

    fn scan_status(&self) -> ScanStatus {
        let page = match self.engine.state() {
            EngineState::Scanning { page } | EngineState::FeedingPage { page } => page,
            _ => self.pages_done,
        };
        ScanStatus {
            state: self.device_state(),
            error: self.error,
            page,
            lines_produced: u32::try_from(self.engine.lines_produced()).unwrap_or(u32::MAX),
            bands_ready: self.engine.ready_bands().len() as u32,
            bands_sent: self.bands_sent,
            pages_done: self.pages_done,
            job_id: self.job_id,
        }
    }

    fn params_report(&self, job: &ScanJob) -> ParamsReport {
        let band_lines = self.engine.timing().band_lines;
        let bpl = job.bytes_per_line();
        ParamsReport {
            params: ScanParams { job: *job },
            bytes_per_line: u32::try_from(bpl).unwrap_or(u32::MAX),
            lines_per_page: job.lines_per_page(),
            band_lines,
            band_bytes: u32::try_from(bpl * u64::from(band_lines)).unwrap_or(u32::MAX),
            bands_per_page: job.bands_per_page(band_lines),
        }
    }

    /// Handles a vendor or class OUT request; `Err` stalls it.
    fn request_out(&mut self, request: u8, data: &[u8]) -> Result<(), ()> {
        let now = self.now;
        // Contract: the engine has seen everything due up to now before it is changed.
        self.drain_engine();
        match request {
            protocol::REQ_SET_PARAMS => {
                let params = ScanParams::decode(data).map_err(|_| ())?;
                let idle = matches!(self.device_state(), DeviceState::Idle);
                let valid = params.job.validate(self.engine.optics()).is_ok();
                if !idle || !valid {
                    // A refused request while a job runs must not hide why that job ends.
                    if idle {
                        self.error = ScanError::BadRequest;
                    }
                    let why = if idle {
                        "invalid parameters"
                    } else {
                        "not idle"
                    };
                    self.note(
                        now,
                        NoteKind::StartRefused,
                        0,
                        0,
                        format!("SET_PARAMS: {why}").into(),
                    );
                    return Err(());
                }
                self.params = Some(params.job);
                Ok(())
            }
            protocol::REQ_START_SCAN => {
                let Some(job) = self.params else {
                    self.error = ScanError::BadRequest;
                    self.note(now, NoteKind::StartRefused, 0, 0, "no parameters".into());
                    return Err(());
                };
                if !self.halted.is_empty() {
                    self.note(now, NoteKind::StartRefused, 0, 0, "endpoints halted".into());
                    return Err(());
                }
                match self.engine.start(now, job) {
                    Ok(()) => {
                        self.job_id += 1;
                        self.bands_sent = 0;
                        self.pages_done = 0;
                        self.error = ScanError::None;
                        // A packet of an earlier job (a short band's tail) must not lead the
                        // new job's data.
                        self.drop_stream();
                        self.drain_engine();
                        Ok(())
                    }
                    Err(e) => {
                        match e {
                            StartError::NoDocuments => self.error = ScanError::FeederEmpty,
                            StartError::InvalidJob(_) => self.error = ScanError::BadRequest,
                            // Busy: the running job's error stays what it is.
                            StartError::Busy => {}
                        }
                        self.note(now, NoteKind::StartRefused, 0, 0, e.to_string().into());
                        Err(())
                    }
                }
            }
            protocol::REQ_CANCEL => {
                match self.engine.cancel(now) {
                    CancelOutcome::Started => {
                        self.error = ScanError::HostCancel;
                        self.drop_stream();
                        self.post(EventCode::Cancelled, ScanError::HostCancel as u8, 0, 0);
                    }
                    // The fault event (polled below) halts the endpoints or disconnects.
                    CancelOutcome::Faulted(_)
                    | CancelOutcome::Ignored
                    | CancelOutcome::NotScanning => {}
                }
                self.drain_engine();
                Ok(())
            }
            protocol::REQ_DEVICE_RESET => {
                let was_busy = !matches!(self.device_state(), DeviceState::Idle);
                self.engine.reset(now);
                self.drop_stream();
                self.data_in.unstall();
                self.data_out.unstall();
                self.halted.clear();
                self.queue.clear();
                self.flush_events = true;
                self.event_in_flight = false;
                self.error = if was_busy {
                    ScanError::Reset
                } else {
                    ScanError::None
                };
                self.note(now, NoteKind::Reset, 0, 0, NoteDetail::None);
                Ok(())
            }
            _ => Err(()),
        }
    }
}

impl<B: UsbBus + FlushFifo> Personality<B> for ScannerFunction<'_, B> {
    fn class(&mut self) -> &mut dyn UsbClass<B> {
        self
    }

    /// 0: the vendor class is given by the interface.
    fn device_class(&self) -> u8 {
        0
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

    fn poll_at(&self) -> Option<Instant> {
        self.engine.poll_at()
    }

    fn pump(&mut self) {
        self.drain_engine();
        self.feed_data();
        self.feed_events();
    }

    /// Bulk IN: a band streams as a run of packets queued back to back.
    fn multi_packet_in(&self) -> EndpointSet {
        EndpointSet::EMPTY.with(protocol::EP_DATA_IN)
    }

    /// Bulk IN when a stream was dropped (cancel, fault, reset, new job); interrupt IN after a
    /// Device Reset, so that no event of the old job is delivered after it.
    fn take_flush_requests(&mut self) -> EndpointSet {
        EndpointSet::EMPTY
            .with_if(
                protocol::EP_DATA_IN,
                std::mem::take(&mut self.flush_data_in),
            )
            .with_if(protocol::EP_EVENTS, std::mem::take(&mut self.flush_events))
    }

    /// Both bulk endpoints may be halted by a device-initiated cancel; when the host cleared
    /// both, the device is idle.
    fn observe_halts(&mut self, is_stalled: &dyn Fn(u8) -> bool) {
        if self.halted.is_empty() {
            return;
        }
        let before = std::mem::take(&mut self.halted);
        for ep in before {
            if is_stalled(ep) {
                self.halted.push(ep);
            } else {
                self.note(
                    self.now,
                    NoteKind::HaltCleared,
                    0,
                    u64::from(ep),
                    NoteDetail::None,
                );
            }
        }
        if self.halted.is_empty() {
            self.engine.reset(self.now);
            self.note(
                self.now,
                NoteKind::Idle,
                0,
                0,
                NoteDetail::Idle(IdleCause::HaltsCleared),
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

impl<B: UsbBus + FlushFifo> UsbClass<B> for ScannerFunction<'_, B> {
    fn get_configuration_descriptors(
        &self,
        writer: &mut DescriptorWriter,
    ) -> usb_device::Result<()> {
        writer.interface_alt(
            self.iface,
            0,
            protocol::INTERFACE_CLASS,
            protocol::INTERFACE_SUBCLASS,
            protocol::INTERFACE_PROTOCOL,
            Some(self.iface_string),
        )?;
        writer.endpoint(&self.data_in)?;
        writer.endpoint(&self.data_out)?;
        writer.endpoint(&self.events)?;
        Ok(())
    }

    fn get_string(&self, index: StringIndex, _lang_id: LangID) -> Option<&str> {
        (index == self.iface_string).then_some("scanemu native scanner interface")
    }

    fn reset(&mut self) {
        // A bus reset aborts the scan as a Device Reset does.
        self.engine.reset(self.now);
        self.streaming = None;
        self.halted.clear();
        self.queue.clear();
        self.event_in_flight = false;
        self.note(self.now, NoteKind::Reset, 0, 0, "bus reset".into());
    }

    fn control_out(&mut self, xfer: ControlOut<B>) {
        let req = *xfer.request();
        if !self.is_ours(&req) {
            return;
        }
        let data = xfer.data().to_vec();
        // A rejected request STALLs the status stage; errors from accept/reject only mean the
        // host already gave up on the transfer.
        let _ = match self.request_out(req.request, &data) {
            Ok(()) => xfer.accept(),
            Err(()) => xfer.reject(),
        };
    }

    fn control_in(&mut self, xfer: ControlIn<B>) {
        let req = *xfer.request();
        if !self.is_ours(&req) {
            return;
        }
        self.drain_engine();
        let reply: Option<Vec<u8>> = match req.request {
            protocol::REQ_GET_CAPABILITIES => Some(self.caps.encode().to_vec()),
            protocol::REQ_GET_PARAMS => self
                .params
                .map(|j| self.params_report(&j).encode().to_vec()),
            protocol::REQ_GET_SCAN_STATUS => Some(self.scan_status().encode().to_vec()),
            protocol::REQ_GET_DEVICE_STATUS => Some(self.device_status().encode()),
            _ => None,
        };
        let _ = match reply {
            Some(bytes) => {
                let n = bytes.len().min(usize::from(req.length));
                xfer.accept_with(&bytes[..n])
            }
            None => xfer.reject(),
        };
    }

    fn endpoint_in_complete(&mut self, addr: EndpointAddress) {
        if addr == self.data_in.address() {
            self.data_packet_taken();
        } else if addr == self.events.address() {
            self.event_in_flight = false;
            self.feed_events();
        }
    }

    fn endpoint_out(&mut self, addr: EndpointAddress) {
        if addr == self.data_out.address() {
            // Commands on bulk OUT are reserved: read and discard so the pipe never wedges.
            let mut sink = [0u8; 1024];
            let _ = self.data_out.read(&mut sink);
        }
    }
}

impl<B: UsbBus + FlushFifo> ScannerFunction<'_, B> {
    fn is_ours(&self, req: &usb_device::control::Request) -> bool {
        matches!(req.request_type, RequestType::Vendor | RequestType::Class)
            && req.recipient == Recipient::Interface
            && req.index == u16::from(u8::from(self.iface))
    }
}
