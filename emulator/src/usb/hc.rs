//! The host-controller model: transfers built from tokens on a [`BusPort`].
//!
//! A transfer is a resumable state machine. [`Transfer::step`] issues as many tokens as the
//! device will take right now, calling [`DevicePoller::poll_device`] after every token so that
//! usb-device's `UsbDevice::poll` (and the classes behind it) can react, and returns
//! [`StepResult::Pending`] when the device NAKs twice in a row. An async host waits (virtual
//! time, a wake-up) and steps again; [`run`] is the synchronous driver used by tests.
//!
//! - [`ControlTransfer`]: SETUP, DATA in EP0-max-packet chunks, STATUS; a STALL at any stage
//!   ends it with [`WireError::Stall`].
//! - [`InTransfer`] ([`BulkIn`], [`InterruptIn`]): packets until a short packet, a ZLP or the
//!   requested length; partial data survives `Pending`.
//! - [`OutTransfer`] ([`BulkOut`], [`InterruptOut`]): max-packet chunks, plus a ZLP on request.
//!
//! Each transfer counts the payload bytes it moved ([`Transfer::take_wire_bytes`]) so that the
//! caller can charge `speed.wire_time(bytes)`; the model itself reads no clock. Dropping or
//! aborting a transfer mid-way leaves the bus as a wire would: packets already taken are gone,
//! and the device's next IN packet stays in its endpoint buffer.
//!
//! Packet sizes come from the bus's endpoint table ([`BusPort::endpoint_info`]), which is what
//! the host learns from the descriptors anyway.

use thiserror::Error;
use usb_device::control::{Recipient, Request, RequestType};
use usb_device::descriptor::descriptor_type;
use usb_device::endpoint::EndpointType;
use usb_device::UsbDirection;

use crate::usb::bus::{BusPort, PacketError};

/// Something that runs the emulated firmware once: usually
/// `|| { usb_dev.poll(&mut [&mut class]); }`.
pub trait DevicePoller {
    /// Polls the device once, letting it consume and produce packets.
    fn poll_device(&mut self);
}

impl<F: FnMut()> DevicePoller for F {
    fn poll_device(&mut self) {
        self()
    }
}

/// Why a transfer on the wire ended without success (what a host controller sees; the
/// host API's `TransferError` is built from it).
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq, Hash)]
pub enum WireError {
    /// The endpoint is halted, or the device rejected the control request.
    #[error("endpoint stalled")]
    Stall,
    /// The device was unplugged.
    #[error("device disconnected")]
    Disconnected,
    /// The device sent more data than the transfer asked for.
    #[error("device sent more data than requested (babble)")]
    Babble,
    /// No endpoint with this address, direction and a bulk/interrupt type exists.
    #[error("no such endpoint")]
    NoEndpoint,
    /// [`run`] gave up after this many consecutive steps without progress (a step count, not a
    /// clock: timeouts belong to the async layer).
    #[error("no progress after {0} steps")]
    NoProgress(usize),
}

impl From<PacketError> for WireError {
    fn from(err: PacketError) -> WireError {
        match err {
            // Transfers turn NAKs into `Pending` before converting, so none reaches here.
            PacketError::Nak | PacketError::NoEndpoint => WireError::NoEndpoint,
            PacketError::Stall => WireError::Stall,
            PacketError::Babble => WireError::Babble,
            PacketError::Disconnected => WireError::Disconnected,
        }
    }
}

/// The outcome of one [`Transfer::step`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepResult<T> {
    /// The transfer ended. Stepping it again issues no tokens and yields an empty success.
    Done(Result<T, WireError>),
    /// The device NAKed; wait, then step again.
    Pending,
}

/// A resumable transfer.
pub trait Transfer {
    /// What a successful transfer yields.
    type Output;

    /// Issues tokens until the transfer ends or the device NAKs twice in a row, polling the
    /// device after each token.
    fn step(&mut self, port: &BusPort, dev: &mut dyn DevicePoller) -> StepResult<Self::Output>;

    /// Payload bytes moved on the wire (SETUP packets count 8) since the last call.
    fn take_wire_bytes(&mut self) -> u64;
}

/// Steps `transfer` to completion, polling the device once more after every `Pending`, and
/// fails with [`WireError::NoProgress`] after `max_idle_steps` steps in a row that moved
/// nothing. Returns the result and the total wire bytes.
pub fn run<T: Transfer + ?Sized>(
    transfer: &mut T,
    port: &BusPort,
    dev: &mut dyn DevicePoller,
    max_idle_steps: usize,
) -> (Result<T::Output, WireError>, u64) {
    let mut total = 0;
    let mut idle = 0;
    loop {
        let result = transfer.step(port, dev);
        let moved = transfer.take_wire_bytes();
        total += moved;
        match result {
            StepResult::Done(result) => return (result, total),
            StepResult::Pending => {
                idle = if moved == 0 { idle + 1 } else { 0 };
                if idle >= max_idle_steps {
                    return (Err(WireError::NoProgress(idle)), total);
                }
                dev.poll_device();
            }
        }
    }
}

/// [`run`] with a budget that any device answering within a few polls meets.
pub fn run_default<T: Transfer + ?Sized>(
    transfer: &mut T,
    port: &BusPort,
    dev: &mut dyn DevicePoller,
) -> Result<T::Output, WireError> {
    run(transfer, port, dev, DEFAULT_IDLE_STEPS).0
}

/// The idle-step budget of [`run_default`].
pub const DEFAULT_IDLE_STEPS: usize = 16;

/// Sends one token, and on NAK polls the device and retries once.
fn with_retry<T>(
    dev: &mut dyn DevicePoller,
    mut token: impl FnMut() -> Result<T, PacketError>,
) -> Result<Option<T>, PacketError> {
    match token() {
        Err(PacketError::Nak) => {}
        other => return other.map(Some),
    }
    dev.poll_device();
    match token() {
        Err(PacketError::Nak) => Ok(None),
        other => other.map(Some),
    }
}

/// The 8-byte SETUP packet of a control transfer (USB 2.0 9.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SetupPacket {
    /// `bmRequestType`: direction (bit 7, 1 = IN), type (bits 6..5), recipient (bits 4..0).
    pub request_type: u8,
    /// `bRequest`.
    pub request: u8,
    /// `wValue`.
    pub value: u16,
    /// `wIndex`.
    pub index: u16,
    /// `wLength`: the most data the data stage may carry.
    pub length: u16,
}

/// `bmRequestType` direction bit: device to host.
pub const DIR_IN: u8 = UsbDirection::In as u8;
/// `bmRequestType` type: standard.
pub const TYPE_STANDARD: u8 = (RequestType::Standard as u8) << 5;
/// `bmRequestType` type: class.
pub const TYPE_CLASS: u8 = (RequestType::Class as u8) << 5;
/// `bmRequestType` type: vendor.
pub const TYPE_VENDOR: u8 = (RequestType::Vendor as u8) << 5;
/// `bmRequestType` recipient: device.
pub const RECIPIENT_DEVICE: u8 = Recipient::Device as u8;
/// `bmRequestType` recipient: interface.
pub const RECIPIENT_INTERFACE: u8 = Recipient::Interface as u8;
/// `bmRequestType` recipient: endpoint.
pub const RECIPIENT_ENDPOINT: u8 = Recipient::Endpoint as u8;

/// A SETUP packet that is not 8 bytes long.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("setup packet must be 8 bytes, got {0}")]
pub struct SetupParseError(pub usize);

impl SetupPacket {
    /// Serializes to the little-endian wire form.
    pub fn to_bytes(&self) -> [u8; 8] {
        let [v0, v1] = self.value.to_le_bytes();
        let [i0, i1] = self.index.to_le_bytes();
        let [l0, l1] = self.length.to_le_bytes();
        [self.request_type, self.request, v0, v1, i0, i1, l0, l1]
    }

    /// Parses the wire form.
    pub fn parse(bytes: &[u8]) -> Result<SetupPacket, SetupParseError> {
        let b: &[u8; 8] = bytes.try_into().map_err(|_| SetupParseError(bytes.len()))?;
        Ok(SetupPacket {
            request_type: b[0],
            request: b[1],
            value: u16::from_le_bytes([b[2], b[3]]),
            index: u16::from_le_bytes([b[4], b[5]]),
            length: u16::from_le_bytes([b[6], b[7]]),
        })
    }

    /// Whether the data stage (if any) flows device to host.
    pub fn is_in(&self) -> bool {
        self.request_type & DIR_IN != 0
    }

    /// GET_DESCRIPTOR(`descriptor_type`, `index`) with language `lang_id` and `length`.
    pub fn get_descriptor(descriptor_type: u8, index: u8, lang_id: u16, length: u16) -> Self {
        SetupPacket {
            request_type: DIR_IN | TYPE_STANDARD | RECIPIENT_DEVICE,
            request: Request::GET_DESCRIPTOR,
            value: u16::from(descriptor_type) << 8 | u16::from(index),
            index: lang_id,
            length,
        }
    }

    /// GET_DESCRIPTOR(DEVICE) for `length` bytes.
    pub fn get_device_descriptor(length: u16) -> Self {
        Self::get_descriptor(descriptor_type::DEVICE, 0, 0, length)
    }

    /// GET_DESCRIPTOR(CONFIGURATION `index`) for `length` bytes.
    pub fn get_config_descriptor(index: u8, length: u16) -> Self {
        Self::get_descriptor(descriptor_type::CONFIGURATION, index, 0, length)
    }

    /// GET_DESCRIPTOR(STRING `index`) in `lang_id`; index 0 reads the language table.
    pub fn get_string_descriptor(index: u8, lang_id: u16, length: u16) -> Self {
        Self::get_descriptor(descriptor_type::STRING, index, lang_id, length)
    }

    /// SET_ADDRESS(`address`).
    pub fn set_address(address: u8) -> Self {
        Self::standard_out(RECIPIENT_DEVICE, Request::SET_ADDRESS, address.into(), 0)
    }

    /// SET_CONFIGURATION(`value`).
    pub fn set_configuration(value: u8) -> Self {
        Self::standard_out(
            RECIPIENT_DEVICE,
            Request::SET_CONFIGURATION,
            value.into(),
            0,
        )
    }

    /// SET_INTERFACE(`interface`, `alt_setting`).
    pub fn set_interface(interface: u8, alt_setting: u8) -> Self {
        Self::standard_out(
            RECIPIENT_INTERFACE,
            Request::SET_INTERFACE,
            alt_setting.into(),
            interface.into(),
        )
    }

    /// CLEAR_FEATURE(ENDPOINT_HALT) on `ep_addr`.
    pub fn clear_halt(ep_addr: u8) -> Self {
        Self::standard_out(
            RECIPIENT_ENDPOINT,
            Request::CLEAR_FEATURE,
            Request::FEATURE_ENDPOINT_HALT,
            ep_addr.into(),
        )
    }

    /// SET_FEATURE(ENDPOINT_HALT) on `ep_addr`.
    pub fn set_halt(ep_addr: u8) -> Self {
        Self::standard_out(
            RECIPIENT_ENDPOINT,
            Request::SET_FEATURE,
            Request::FEATURE_ENDPOINT_HALT,
            ep_addr.into(),
        )
    }

    /// GET_STATUS on endpoint `ep_addr` (bit 0 of the answer = halted).
    pub fn get_endpoint_status(ep_addr: u8) -> Self {
        SetupPacket {
            request_type: DIR_IN | TYPE_STANDARD | RECIPIENT_ENDPOINT,
            request: Request::GET_STATUS,
            value: 0,
            index: ep_addr.into(),
            length: 2,
        }
    }

    fn standard_out(recipient: u8, request: u8, value: u16, index: u16) -> Self {
        SetupPacket {
            request_type: TYPE_STANDARD | recipient,
            request,
            value,
            index,
            length: 0,
        }
    }
}

/// Where a control transfer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ControlStage {
    Setup,
    DataIn,
    DataOut,
    StatusIn,
    StatusOut,
    Done,
}

/// A control transfer on EP0: SETUP, optional DATA stage, STATUS.
///
/// An IN transfer yields the data received (at most `wLength` bytes, fewer on a short packet);
/// an OUT transfer yields an empty vector.
#[derive(Debug)]
pub struct ControlTransfer {
    setup: SetupPacket,
    /// IN: received bytes (capacity `wLength`); OUT: bytes to send.
    data: Vec<u8>,
    /// OUT: bytes already sent.
    sent: usize,
    stage: ControlStage,
    wire_bytes: u64,
}

impl ControlTransfer {
    /// A control-IN transfer: `setup` must have the IN direction bit.
    pub fn new_in(setup: SetupPacket) -> Self {
        debug_assert!(
            setup.is_in(),
            "control-IN transfer with an OUT setup packet"
        );
        ControlTransfer {
            setup,
            data: Vec::with_capacity(setup.length.into()),
            sent: 0,
            stage: ControlStage::Setup,
            wire_bytes: 0,
        }
    }

    /// A control-OUT transfer carrying `data`; `wLength` is set to `data.len()`.
    ///
    /// # Panics
    /// If `data` is longer than 65535 bytes.
    pub fn new_out(mut setup: SetupPacket, data: Vec<u8>) -> Self {
        setup.request_type &= !DIR_IN;
        setup.length = u16::try_from(data.len()).expect("control data longer than wLength");
        ControlTransfer {
            setup,
            data,
            sent: 0,
            stage: ControlStage::Setup,
            wire_bytes: 0,
        }
    }

    /// The SETUP packet this transfer sends.
    pub fn setup_packet(&self) -> &SetupPacket {
        &self.setup
    }

    fn step_inner(
        &mut self,
        port: &BusPort,
        dev: &mut dyn DevicePoller,
    ) -> Result<bool, PacketError> {
        let mps = port
            .endpoint_info(0x80)
            .map(|(_, mps, _)| usize::from(mps))
            .ok_or(PacketError::NoEndpoint)?;
        loop {
            match self.stage {
                ControlStage::Setup => {
                    port.setup(self.setup.to_bytes())?;
                    self.wire_bytes += 8;
                    dev.poll_device();
                    self.stage = match (self.setup.length, self.setup.is_in()) {
                        (0, _) => ControlStage::StatusIn,
                        (_, true) => ControlStage::DataIn,
                        (_, false) => ControlStage::DataOut,
                    };
                }
                ControlStage::DataIn => {
                    let have = self.data.len();
                    let chunk = mps.min(usize::from(self.setup.length) - have);
                    self.data.resize(have + chunk, 0);
                    let got = with_retry(dev, || port.in_packet(0x80, &mut self.data[have..]));
                    let n = match got {
                        Ok(Some(n)) => n,
                        Ok(None) => {
                            self.data.truncate(have);
                            return Ok(false);
                        }
                        Err(err) => {
                            self.data.truncate(have);
                            return Err(err);
                        }
                    };
                    self.data.truncate(have + n);
                    self.wire_bytes += n as u64;
                    dev.poll_device();
                    if n < mps || self.data.len() >= usize::from(self.setup.length) {
                        self.stage = ControlStage::StatusOut;
                    }
                }
                ControlStage::DataOut => {
                    let end = self.data.len().min(self.sent + mps);
                    let chunk = &self.data[self.sent..end];
                    if with_retry(dev, || port.out(0x00, chunk))?.is_none() {
                        return Ok(false);
                    }
                    self.wire_bytes += chunk.len() as u64;
                    self.sent = end;
                    dev.poll_device();
                    if self.sent == self.data.len() {
                        self.stage = ControlStage::StatusIn;
                    }
                }
                ControlStage::StatusOut => {
                    if with_retry(dev, || port.out(0x00, &[]))?.is_none() {
                        return Ok(false);
                    }
                    dev.poll_device();
                    self.stage = ControlStage::Done;
                }
                ControlStage::StatusIn => {
                    if with_retry(dev, || port.in_packet(0x80, &mut []))?.is_none() {
                        return Ok(false);
                    }
                    dev.poll_device();
                    self.stage = ControlStage::Done;
                }
                ControlStage::Done => return Ok(true),
            }
        }
    }
}

impl Transfer for ControlTransfer {
    type Output = Vec<u8>;

    fn step(&mut self, port: &BusPort, dev: &mut dyn DevicePoller) -> StepResult<Vec<u8>> {
        if self.stage == ControlStage::Done {
            return StepResult::Done(Ok(Vec::new()));
        }
        match self.step_inner(port, dev) {
            Ok(false) => StepResult::Pending,
            Ok(true) if self.setup.is_in() => StepResult::Done(Ok(std::mem::take(&mut self.data))),
            Ok(true) => StepResult::Done(Ok(Vec::new())),
            Err(err) => {
                self.stage = ControlStage::Done;
                StepResult::Done(Err(err.into()))
            }
        }
    }

    fn take_wire_bytes(&mut self) -> u64 {
        std::mem::take(&mut self.wire_bytes)
    }
}

/// Looks up a bulk or interrupt endpoint's max packet size.
fn data_endpoint_mps(port: &BusPort, ep_addr: u8) -> Result<usize, PacketError> {
    match port.endpoint_info(ep_addr) {
        Some((EndpointType::Bulk | EndpointType::Interrupt, mps, _)) if mps > 0 => {
            Ok(usize::from(mps))
        }
        _ if !port.is_connected() => Err(PacketError::Disconnected),
        _ => Err(PacketError::NoEndpoint),
    }
}

/// A bulk or interrupt IN transfer of up to `length` bytes.
///
/// Ends on a short packet, a zero-length packet or when `length` bytes have arrived. A packet
/// larger than the space left ends it with [`WireError::Babble`] (the packet stays queued on
/// the device). A zero `length` takes exactly one zero-length packet.
///
/// The data goes into `D`: an owned buffer ([`InTransfer::new`], yielding the data as a
/// `Vec<u8>`; its memory is reserved once and written only by the packets that arrive), or
/// the caller's own slice ([`InTransfer::into_slice`], yielding the byte count), which saves a
/// copy on the data path.
///
/// Packets the device has queued one behind the other are taken in one burst
/// ([`BusPort::in_burst`]); the device is polled after each burst, which is after every packet
/// unless its FIFO holds several.
#[derive(Debug)]
pub struct InTransfer<D = Vec<u8>> {
    ep_addr: u8,
    /// Where the data goes; `filled` bytes of it are data.
    buf: D,
    /// The most bytes the transfer takes.
    length: usize,
    filled: usize,
    done: bool,
    wire_bytes: u64,
    /// Whether the device is polled after the burst that ends the transfer.
    final_poll: bool,
}

/// A bulk IN transfer.
pub type BulkIn = InTransfer;
/// An interrupt IN transfer (same packet rules; polling interval is the caller's business).
pub type InterruptIn = InTransfer;

/// Where an [`InTransfer`] puts the packets it takes.
pub trait InBuffer {
    /// Stores `packet` at byte `at` (the bytes stored so far); the transfer never lets data
    /// go past its length.
    fn put(&mut self, at: usize, packet: &[u8]);
    /// The bytes stored, of which `filled` are data.
    fn stored(&self, filled: usize) -> &[u8];
    /// The buffer as a `Vec`, which a burst can hand the endpoint's storage to instead of
    /// copying packets into it ([`BusPort::in_burst_whole`]); `None` (the default) for a
    /// buffer that must be written in place.
    fn as_vec(&mut self) -> Option<&mut Vec<u8>> {
        None
    }
}

impl InBuffer for Vec<u8> {
    fn put(&mut self, at: usize, packet: &[u8]) {
        self.truncate(at);
        self.extend_from_slice(packet);
    }
    fn stored(&self, filled: usize) -> &[u8] {
        &self[..filled]
    }
    fn as_vec(&mut self) -> Option<&mut Vec<u8>> {
        Some(self)
    }
}

impl InBuffer for &mut [u8] {
    fn put(&mut self, at: usize, packet: &[u8]) {
        self[at..at + packet.len()].copy_from_slice(packet);
    }
    fn stored(&self, filled: usize) -> &[u8] {
        &self[..filled]
    }
}

impl InTransfer {
    /// A transfer reading up to `length` bytes from `ep_addr` (bit 7 set).
    pub fn new(ep_addr: u8, length: usize) -> Self {
        InTransfer {
            ep_addr: ep_addr | 0x80,
            buf: Vec::with_capacity(length),
            length,
            filled: 0,
            done: false,
            wire_bytes: 0,
            final_poll: true,
        }
    }

    /// Like [`InTransfer::new`], reading into `buf` (emptied first): a caller that reuses its
    /// buffers from one transfer to the next allocates nothing per transfer.
    pub fn with_buffer(ep_addr: u8, length: usize, mut buf: Vec<u8>) -> Self {
        buf.clear();
        buf.reserve(length);
        InTransfer {
            ep_addr: ep_addr | 0x80,
            buf,
            length,
            filled: 0,
            done: false,
            wire_bytes: 0,
            final_poll: true,
        }
    }

    /// The transfer does not poll the device after the burst that ends it: the caller polls
    /// it at the same instant itself, before anything else touches the device. The device sees
    /// the same tokens and polls in the same order; a server uses it to answer its client
    /// before the firmware refills its FIFO.
    pub fn defer_final_poll(mut self) -> Self {
        self.final_poll = false;
        self
    }

    /// Abandons the transfer and returns what had arrived (the URB's `actual_length` bytes).
    /// The device's next packet, if any, stays queued in its endpoint.
    pub fn abort(mut self) -> Vec<u8> {
        self.buf.truncate(self.filled);
        self.buf
    }
}

impl<'a> InTransfer<&'a mut [u8]> {
    /// A transfer reading up to `buf.len()` bytes from `ep_addr` (bit 7 set) straight into
    /// `buf`; it yields the number of bytes read.
    pub fn into_slice(ep_addr: u8, buf: &'a mut [u8]) -> Self {
        InTransfer {
            ep_addr: ep_addr | 0x80,
            length: buf.len(),
            buf,
            filled: 0,
            done: false,
            wire_bytes: 0,
            final_poll: true,
        }
    }
}

impl<D: InBuffer> InTransfer<D> {
    /// The data received so far.
    pub fn data(&self) -> &[u8] {
        self.buf.stored(self.filled)
    }

    fn step_inner(
        &mut self,
        port: &BusPort,
        dev: &mut dyn DevicePoller,
    ) -> Result<bool, PacketError> {
        let mps = data_endpoint_mps(port, self.ep_addr)?;
        loop {
            let (buf, start) = (&mut self.buf, self.filled);
            let room = self.length - start;
            let ep_addr = self.ep_addr;
            let mut burst = || {
                // The first burst of a transfer into a `Vec` may take the endpoint's packets
                // with their buffer, uncopied.
                if start == 0 {
                    if let Some(v) = buf.as_vec() {
                        v.clear();
                        if let Some(b) = port.in_burst_whole(ep_addr, mps, room, v) {
                            return Ok(b);
                        }
                    }
                }
                let mut at = start;
                port.in_burst(ep_addr, mps, room, &mut |packet: &[u8]| {
                    buf.put(at, packet);
                    at += packet.len();
                })
            };
            let Some(burst) = with_retry(dev, &mut burst)? else {
                return Ok(false);
            };
            self.filled += burst.bytes;
            self.wire_bytes += burst.bytes as u64;
            if !burst.ended || self.final_poll {
                dev.poll_device();
            }
            if burst.ended {
                return Ok(true);
            }
        }
    }

    /// One step; `Done(Ok(()))` when the transfer is complete.
    fn step_data(&mut self, port: &BusPort, dev: &mut dyn DevicePoller) -> StepResult<()> {
        if self.done {
            return StepResult::Done(Ok(()));
        }
        match self.step_inner(port, dev) {
            Ok(false) => StepResult::Pending,
            Ok(true) => {
                self.done = true;
                StepResult::Done(Ok(()))
            }
            Err(err) => {
                self.done = true;
                StepResult::Done(Err(err.into()))
            }
        }
    }
}

impl Transfer for InTransfer {
    type Output = Vec<u8>;

    fn step(&mut self, port: &BusPort, dev: &mut dyn DevicePoller) -> StepResult<Vec<u8>> {
        match self.step_data(port, dev) {
            StepResult::Pending => StepResult::Pending,
            StepResult::Done(r) => StepResult::Done(r.map(|()| {
                self.buf.truncate(self.filled);
                std::mem::take(&mut self.buf)
            })),
        }
    }

    fn take_wire_bytes(&mut self) -> u64 {
        std::mem::take(&mut self.wire_bytes)
    }
}

impl Transfer for InTransfer<&mut [u8]> {
    type Output = usize;

    fn step(&mut self, port: &BusPort, dev: &mut dyn DevicePoller) -> StepResult<usize> {
        match self.step_data(port, dev) {
            StepResult::Pending => StepResult::Pending,
            StepResult::Done(r) => StepResult::Done(r.map(|()| self.filled)),
        }
    }

    fn take_wire_bytes(&mut self) -> u64 {
        std::mem::take(&mut self.wire_bytes)
    }
}

/// A bulk or interrupt OUT transfer; yields the number of bytes sent.
///
/// The data goes out in max-packet chunks. With `zlp`, a transfer whose length is a non-zero
/// multiple of the max packet size ends with a zero-length packet; an empty transfer always
/// sends one zero-length packet.
#[derive(Debug)]
pub struct OutTransfer {
    ep_addr: u8,
    data: Vec<u8>,
    sent: usize,
    zlp: bool,
    zlp_sent: bool,
    done: bool,
    wire_bytes: u64,
}

/// A bulk OUT transfer.
pub type BulkOut = OutTransfer;
/// An interrupt OUT transfer.
pub type InterruptOut = OutTransfer;

impl OutTransfer {
    /// A transfer writing `data` to `ep_addr` (bit 7 clear), ending with a ZLP if `zlp` and the
    /// length is a multiple of the max packet size.
    pub fn new(ep_addr: u8, data: Vec<u8>, zlp: bool) -> Self {
        OutTransfer {
            ep_addr: ep_addr & 0x7f,
            data,
            sent: 0,
            zlp,
            zlp_sent: false,
            done: false,
            wire_bytes: 0,
        }
    }

    /// Bytes the device has acknowledged so far.
    pub fn sent(&self) -> usize {
        self.sent
    }

    fn step_inner(
        &mut self,
        port: &BusPort,
        dev: &mut dyn DevicePoller,
    ) -> Result<bool, PacketError> {
        let mps = data_endpoint_mps(port, self.ep_addr)?;
        let zlp_due = self.data.is_empty() || (self.zlp && self.data.len().is_multiple_of(mps));
        while self.sent < self.data.len() {
            let end = self.data.len().min(self.sent + mps);
            let chunk = &self.data[self.sent..end];
            if with_retry(dev, || port.out(self.ep_addr, chunk))?.is_none() {
                return Ok(false);
            }
            self.wire_bytes += chunk.len() as u64;
            self.sent = end;
            dev.poll_device();
        }
        if zlp_due && !self.zlp_sent {
            if with_retry(dev, || port.out(self.ep_addr, &[]))?.is_none() {
                return Ok(false);
            }
            self.zlp_sent = true;
            dev.poll_device();
        }
        Ok(true)
    }
}

impl Transfer for OutTransfer {
    type Output = usize;

    fn step(&mut self, port: &BusPort, dev: &mut dyn DevicePoller) -> StepResult<usize> {
        if self.done {
            return StepResult::Done(Ok(self.sent));
        }
        match self.step_inner(port, dev) {
            Ok(false) => StepResult::Pending,
            Ok(true) => {
                self.done = true;
                StepResult::Done(Ok(self.sent))
            }
            Err(err) => {
                self.done = true;
                StepResult::Done(Err(err.into()))
            }
        }
    }

    fn take_wire_bytes(&mut self) -> u64 {
        std::mem::take(&mut self.wire_bytes)
    }
}

/// The descriptors read by [`enumerate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enumeration {
    /// The 18-byte device descriptor.
    pub device_descriptor: Vec<u8>,
    /// The full configuration descriptor (all `wTotalLength` bytes).
    pub config_descriptor: Vec<u8>,
    /// The address assigned with SET_ADDRESS.
    pub address: u8,
}

/// The address [`enumerate`] assigns.
pub const ENUMERATION_ADDRESS: u8 = 1;

/// Enumerates the device the way a host does: bus reset, GET_DESCRIPTOR(device, 8) to learn
/// EP0's max packet size, GET_DESCRIPTOR(device, 18), SET_ADDRESS(1), GET_DESCRIPTOR(config, 9)
/// then the full `wTotalLength`, SET_CONFIGURATION(1).
///
/// Each transfer runs under [`run_default`]. Descriptors are returned as sent (a short answer
/// is not an error at this level); the caller parses and checks them.
pub fn enumerate(port: &BusPort, dev: &mut dyn DevicePoller) -> Result<Enumeration, WireError> {
    if !port.is_connected() {
        return Err(WireError::Disconnected);
    }
    port.bus_reset();
    dev.poll_device();
    let control_in = |dev: &mut dyn DevicePoller, setup| {
        run_default(&mut ControlTransfer::new_in(setup), port, dev)
    };
    let control_out = |dev: &mut dyn DevicePoller, setup| {
        run_default(&mut ControlTransfer::new_out(setup, Vec::new()), port, dev)
    };
    control_in(dev, SetupPacket::get_device_descriptor(8))?;
    let device_descriptor = control_in(dev, SetupPacket::get_device_descriptor(18))?;
    control_out(dev, SetupPacket::set_address(ENUMERATION_ADDRESS))?;
    let head = control_in(dev, SetupPacket::get_config_descriptor(0, 9))?;
    let total = match head.get(2..4) {
        Some(&[lo, hi]) => u16::from_le_bytes([lo, hi]),
        _ => 9,
    };
    let config_descriptor = control_in(dev, SetupPacket::get_config_descriptor(0, total))?;
    control_out(dev, SetupPacket::set_configuration(1))?;
    Ok(Enumeration {
        device_descriptor,
        config_descriptor,
        address: port.address(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usb::bus::{FlushFifo, SimBus};
    use crate::usb::speed::Speed;
    use usb_device::bus::UsbBus;
    use usb_device::endpoint::EndpointAddress;

    /// A bus with bulk IN 0x81 (64-byte packets, a four-packet FIFO) holding a 150-byte
    /// transfer: two full packets and a short one.
    fn queued() -> (SimBus, BusPort, EndpointAddress, Vec<u8>) {
        let (mut bus, port) = SimBus::new(Speed::Full);
        let ep = bus
            .alloc_ep(UsbDirection::In, None, EndpointType::Bulk, 64, 0)
            .expect("allocates");
        bus.enable();
        bus.set_in_depth(ep, 4);
        let data: Vec<u8> = (0..150u8).collect();
        assert_eq!(bus.write(ep, &data), Ok(150));
        (bus, port, ep, data)
    }

    #[test]
    fn a_deferred_final_poll_is_left_to_the_caller_and_the_data_is_the_same() {
        for defer in [false, true] {
            let (_bus, port, _ep, data) = queued();
            let mut polls = 0;
            let mut poller = || polls += 1;
            let mut t = InTransfer::new(0x81, 1000);
            if defer {
                t = t.defer_final_poll();
            }
            assert_eq!(t.step(&port, &mut poller), StepResult::Done(Ok(data)));
            assert_eq!(t.take_wire_bytes(), 150);
            // One burst took all three packets; only the poll after it differs.
            assert_eq!(polls, usize::from(!defer), "defer {defer}");
        }
    }
}
