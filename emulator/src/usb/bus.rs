//! The packet-level wire between an emulated device and the host-controller model.
//!
//! [`SimBus`] implements usb-device's [`UsbBus`] in software, so unmodified usb-device firmware
//! (a [`UsbDevice`](usb_device::device::UsbDevice) plus its classes) runs on it. [`BusPort`] is
//! the host's end of the same wire: each call is one token (SETUP, OUT or IN) and answers the
//! way a device controller would (ACK with data, NAK, STALL).
//!
//! Every endpoint has a packet buffer with hardware-like flags:
//!
//! - An OUT (or SETUP) packet stays "full" until the firmware reads it; while full, further OUT
//!   tokens are NAKed and `poll` keeps reporting the endpoint in `ep_out` / `ep_setup`.
//! - An IN endpoint has a FIFO of one packet unless the firmware asked for more
//!   ([`FlushFifo::set_in_depth`]). Packets written by the firmware wait there, in order, until
//!   IN tokens take them; while the FIFO is full, `write` returns `WouldBlock`. When a token
//!   takes the last packet queued, the endpoint is reported once in `ep_in_complete` (with a
//!   one-packet FIFO: every packet taken), as a controller's multi-packet transfer raises one
//!   completion when its last packet went out.
//! - A stalled endpoint answers every token with STALL. A SETUP packet is always accepted on
//!   EP0 and clears both EP0 stalls, as on hardware; it also flushes an unsent EP0 IN packet,
//!   because a SETUP ends whatever control transfer was in progress.
//!
//! Both halves share one `Arc<Mutex<_>>`: `UsbBus` must be `Sync` and takes `&self` once the
//! allocator is frozen, so all state is interior. No clock is read: the caller decides when
//! packets move and charges wire time itself.

use std::sync::{Arc, Mutex, MutexGuard};

use thiserror::Error;
use usb_device::bus::{PollResult, UsbBus};
use usb_device::endpoint::{EndpointAddress, EndpointType};
use usb_device::{UsbDirection, UsbError};

use crate::usb::speed::Speed;

/// Endpoints per direction, as usb-device's 16-bit endpoint masks allow.
pub const ENDPOINT_COUNT: usize = 16;

/// How the device answered one token, when it did not ACK.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq, Hash)]
pub enum PacketError {
    /// The device has nothing to send yet, or its OUT buffer is still full; try again later.
    #[error("device answered nak")]
    Nak,
    /// The endpoint is halted (or the control request was rejected).
    #[error("device answered stall")]
    Stall,
    /// No endpoint with this address and direction is allocated.
    #[error("no such endpoint")]
    NoEndpoint,
    /// The packet is larger than the receiver's buffer or the endpoint's max packet size.
    #[error("packet larger than the receiving buffer (babble)")]
    Babble,
    /// The device has been unplugged.
    #[error("device disconnected")]
    Disconnected,
}

/// What the bus records about one allocated endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointConfig {
    /// The transfer type written into the endpoint descriptor.
    pub ep_type: EndpointType,
    /// The endpoint's max packet size in bytes.
    pub max_packet_size: u16,
    /// The `bInterval` value given at allocation (frames or microframes; unused by the bus).
    pub interval: u8,
}

/// The packets an IN endpoint holds for the host, oldest first: `depth` slots of the max
/// packet size in one buffer reserved up front, so queueing and taking never allocate. The
/// buffer grows as packets are written into it (its bytes are never zeroed first), and a run
/// of packets from its start can leave with the buffer itself ([`InFifo::take_all`]).
#[derive(Debug, Default)]
struct InFifo {
    /// `depth` slots of `slot` bytes each, as far as packets were written.
    data: Vec<u8>,
    /// The length of the packet in each slot.
    lens: Vec<usize>,
    slot: usize,
    head: usize,
    count: usize,
    /// How many of the queued packets are shorter than `slot`.
    short: usize,
}

impl InFifo {
    fn new(depth: usize, slot: usize) -> InFifo {
        let depth = depth.max(1);
        InFifo {
            data: Vec::with_capacity(depth * slot),
            lens: vec![0; depth],
            slot,
            head: 0,
            count: 0,
            short: 0,
        }
    }

    fn depth(&self) -> usize {
        self.lens.len()
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn is_full(&self) -> bool {
        self.count >= self.lens.len()
    }

    fn clear(&mut self) {
        self.head = 0;
        self.count = 0;
        self.short = 0;
    }

    /// Writes `bytes` at byte `at` of the storage, growing it as far as they reach.
    fn store(&mut self, at: usize, bytes: &[u8]) {
        if self.data.len() < at {
            self.data.resize(at, 0);
        }
        let within = self.data.len().min(at + bytes.len()) - at;
        self.data[at..at + within].copy_from_slice(&bytes[..within]);
        self.data.extend_from_slice(&bytes[within..]);
    }

    /// Queues `packet` (at most `slot` bytes) behind the others; false when full.
    fn push(&mut self, packet: &[u8]) -> bool {
        if self.is_full() || packet.len() > self.slot {
            return false;
        }
        let i = (self.head + self.count) % self.lens.len();
        self.store(i * self.slot, packet);
        self.lens[i] = packet.len();
        self.count += 1;
        self.short += usize::from(packet.len() < self.slot);
        true
    }

    /// Queues `data` as consecutive packets of `slot` bytes (the last one shorter if `data`
    /// is not a multiple), as many whole packets as there are free slots; returns the bytes
    /// queued. Runs of packets go in with one copy each.
    fn push_run(&mut self, data: &[u8]) -> usize {
        let depth = self.lens.len();
        let mut queued = 0;
        while queued < data.len() && !self.is_full() {
            let tail = (self.head + self.count) % depth;
            // Free slots before the ring wraps, and the packets the rest of `data` needs.
            let room = (depth - self.count).min(depth - tail);
            let rest = data.len() - queued;
            let packets = room.min(rest.div_ceil(self.slot));
            let bytes = (packets * self.slot).min(rest);
            self.store(tail * self.slot, &data[queued..queued + bytes]);
            // Full packets, and the last one what is left.
            let last = bytes - (packets - 1) * self.slot;
            self.lens[tail..tail + packets - 1].fill(self.slot);
            self.lens[tail + packets - 1] = last;
            self.short += usize::from(last < self.slot);
            self.count += packets;
            queued += bytes;
        }
        queued
    }

    /// The oldest packet.
    fn front(&self) -> Option<&[u8]> {
        (self.count > 0).then(|| {
            let at = self.head * self.slot;
            &self.data[at..at + self.lens[self.head]]
        })
    }

    /// Drops the oldest packet. An emptied FIFO starts again at its first slot, so that the
    /// next run of packets lies in one piece from the start of the storage.
    fn pop(&mut self) {
        if self.count > 0 {
            self.short -= usize::from(self.lens[self.head] < self.slot);
            self.head = (self.head + 1) % self.lens.len();
            self.count -= 1;
            if self.count == 0 {
                self.head = 0;
            }
        }
    }

    /// Takes every queued packet at once, handing the storage over to `into` (whose own buffer
    /// becomes the storage, emptied) rather than copying it, where that is what taking them
    /// one by one for a burst with `room` bytes would do: they lie in one piece from the start
    /// of the storage, all but the last are full (`slot` bytes), together they fit, and
    /// `into` has room for them.
    /// Returns the bytes and packets taken and whether the burst ended (its last packet was
    /// short, or it filled `room`); `None`, with nothing changed, where it does not apply.
    fn take_all(&mut self, room: usize, into: &mut Vec<u8>) -> Option<(usize, usize, bool)> {
        if self.head != 0 {
            return None;
        }
        debug_assert_eq!(
            self.short,
            (0..self.count)
                .filter(|i| self.lens[(self.head + i) % self.lens.len()] < self.slot)
                .count(),
            "the count of short packets"
        );
        let last = *self.lens[..self.count].last()?;
        let bytes = (self.count - 1) * self.slot + last;
        // `into` must have been able to hold them: an even exchange of buffers.
        let whole = self.short == usize::from(last < self.slot);
        if !whole || bytes > room || bytes < self.slot || into.capacity() < bytes {
            return None;
        }
        let ended = last < self.slot || bytes == room;
        let packets = self.count;
        std::mem::swap(&mut self.data, into);
        into.truncate(bytes);
        self.data.clear();
        self.data.reserve(self.lens.len() * self.slot);
        self.count = 0;
        self.short = 0;
        Some((bytes, packets, ended))
    }
}

/// One endpoint's packet buffer and flags.
#[derive(Debug, Default)]
struct Endpoint {
    config: Option<EndpointConfig>,
    /// OUT only: the packet; its capacity is reserved at allocation so the data path never
    /// allocates.
    buf: Vec<u8>,
    /// OUT only: a packet is waiting, unread by the firmware.
    full: bool,
    /// OUT only: the waiting packet arrived in a SETUP token.
    setup: bool,
    /// IN only: the packets written by the firmware and not yet taken by the host.
    fifo: InFifo,
    /// IN only: the FIFO ran empty and the firmware has not been told yet.
    complete: bool,
    stalled: bool,
    /// OUT only: the firmware refuses packets for now (the host's are NAKed).
    nak: bool,
}

impl Endpoint {
    fn clear(&mut self) {
        self.buf.clear();
        self.full = false;
        self.setup = false;
        self.fifo.clear();
        self.complete = false;
        self.stalled = false;
        self.nak = false;
    }

    /// IN only: takes the oldest packet for a token with room for `room` bytes, handing it to
    /// `take`; returns its length. The FIFO running empty raises the completion.
    fn take_in(&mut self, room: usize, take: &mut dyn FnMut(&[u8])) -> Result<usize, PacketError> {
        if self.stalled {
            return Err(PacketError::Stall);
        }
        let packet = self.fifo.front().ok_or(PacketError::Nak)?;
        let len = packet.len();
        if len > room {
            return Err(PacketError::Babble);
        }
        take(packet);
        self.fifo.pop();
        if self.fifo.is_empty() {
            self.complete = true;
        }
        Ok(len)
    }
}

/// What one [`BusPort::in_burst`] moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Burst {
    /// Payload bytes taken.
    pub bytes: usize,
    /// Packets taken (zero-length packets included).
    pub packets: usize,
    /// The transfer ended: its last packet was short (or zero-length), or it filled its room.
    pub ended: bool,
}

/// The state both halves of the wire share.
#[derive(Debug)]
struct BusState {
    speed: Speed,
    out_eps: [Endpoint; ENDPOINT_COUNT],
    in_eps: [Endpoint; ENDPOINT_COUNT],
    /// One past the highest endpoint index allocated in either direction: `poll` looks no
    /// further.
    ep_limit: usize,
    address: u8,
    enabled: bool,
    connected: bool,
    suspended: bool,
    reset_pending: bool,
    suspend_pending: bool,
    resume_pending: bool,
}

impl BusState {
    fn new(speed: Speed) -> BusState {
        BusState {
            speed,
            out_eps: Default::default(),
            in_eps: Default::default(),
            ep_limit: 0,
            address: 0,
            enabled: false,
            connected: true,
            suspended: false,
            reset_pending: false,
            suspend_pending: false,
            resume_pending: false,
        }
    }

    /// Returns the device-side endpoint for `addr`, if allocated.
    fn device_ep(&mut self, addr: EndpointAddress) -> Option<&mut Endpoint> {
        let index = addr.index();
        let ep = match addr.direction() {
            UsbDirection::Out => self.out_eps.get_mut(index)?,
            UsbDirection::In => self.in_eps.get_mut(index)?,
        };
        ep.config.is_some().then_some(ep)
    }

    /// Returns the host-side endpoint for a raw address (bit 7 = IN), if allocated.
    fn host_ep(&mut self, ep_addr: u8) -> Option<&mut Endpoint> {
        self.device_ep(EndpointAddress::from(ep_addr & 0x8f))
            .filter(|_| ep_addr & 0x70 == 0)
    }

    /// Empties every buffer and flag, as a USB reset does; allocations stay.
    fn reset_endpoints(&mut self) {
        for ep in self.out_eps.iter_mut().chain(self.in_eps.iter_mut()) {
            ep.clear();
        }
        self.address = 0;
    }
}

fn lock(state: &Mutex<BusState>) -> MutexGuard<'_, BusState> {
    // A panic in firmware code never happens while the lock is held, so poisoning carries no
    // half-updated state; recover instead of cascading panics through every later test.
    state.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// A software [`UsbBus`]: the device controller of an emulated USB device.
///
/// Create it with [`SimBus::new`], hand it to
/// [`UsbBusAllocator::new`](usb_device::bus::UsbBusAllocator::new), and drive the device from
/// the returned [`BusPort`].
#[derive(Debug)]
pub struct SimBus {
    state: Arc<Mutex<BusState>>,
}

/// The host's end of a [`SimBus`]: one method call is one token on the wire.
#[derive(Clone, Debug)]
pub struct BusPort {
    state: Arc<Mutex<BusState>>,
}

impl SimBus {
    /// Creates a connected, not yet enabled bus at `speed` and the host port wired to it.
    pub fn new(speed: Speed) -> (SimBus, BusPort) {
        let state = Arc::new(Mutex::new(BusState::new(speed)));
        (
            SimBus {
                state: Arc::clone(&state),
            },
            BusPort { state },
        )
    }

    /// The speed the device is attached at.
    pub fn speed(&self) -> Speed {
        lock(&self.state).speed
    }
}

/// Firmware control over endpoint FIFOs that usb-device's `UsbBus` trait lacks.
///
/// Device controllers have a "flush FIFO" operation (cancel handling needs it: "The device
/// should NOT send a response for the cancelled transaction through the BULK-IN pipe",
/// reference §4.3). The scanner function calls it on a host cancel or a reset so that no packet
/// of the cancelled scan stays queued for the host. They also let firmware answer NAK on an
/// OUT endpoint while it is busy (the STM32 "STAT_RX = NAK" bit, for one), and queue several
/// packets on an IN endpoint at once (multi-packet transfers, a DMA-fed FIFO) so that the
/// firmware is not needed between packets.
pub trait FlushFifo {
    /// Discards every IN packet queued on `ep_addr` and not yet taken by the host, if any.
    fn flush_in(&self, ep_addr: EndpointAddress);
    /// While `nak` is set, the host's packets to OUT endpoint `ep_addr` are NAKed (not
    /// accepted into the FIFO); a USB reset clears it.
    fn set_out_nak(&self, ep_addr: EndpointAddress, nak: bool);
    /// Gives IN endpoint `ep_addr` a FIFO of `packets` max-size packets (at least one; one is
    /// the default). `write` then accepts packets until that many wait for the host, and the
    /// endpoint is reported in `ep_in_complete` only when the host took the last one queued.
    /// Packets still queued are discarded; the depth outlives USB resets.
    fn set_in_depth(&self, ep_addr: EndpointAddress, packets: usize);
}

/// A set of endpoint addresses, both directions, without allocation: the IN FIFOs a function
/// wants flushed, or the OUT endpoints it NAKs. Iterates OUT endpoints 0..=15, then IN
/// endpoints 0x80..=0x8f.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointSet(u32);

impl EndpointSet {
    /// No endpoint.
    pub const EMPTY: EndpointSet = EndpointSet(0);

    const fn bit(ep_addr: u8) -> u32 {
        let dir = if ep_addr & 0x80 != 0 { 16 } else { 0 };
        1 << ((ep_addr & 0x0f) as u32 + dir)
    }

    /// This set and `ep_addr`.
    pub const fn with(self, ep_addr: u8) -> EndpointSet {
        EndpointSet(self.0 | EndpointSet::bit(ep_addr))
    }

    /// This set with `ep_addr` if `yes`.
    pub const fn with_if(self, ep_addr: u8, yes: bool) -> EndpointSet {
        if yes {
            self.with(ep_addr)
        } else {
            self
        }
    }

    /// Whether `ep_addr` is in the set.
    pub const fn contains(self, ep_addr: u8) -> bool {
        self.0 & EndpointSet::bit(ep_addr) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Every endpoint in either set.
    pub const fn union(self, other: EndpointSet) -> EndpointSet {
        EndpointSet(self.0 | other.0)
    }

    /// The addresses in the set, OUT endpoints first, each direction by number.
    pub fn iter(self) -> impl Iterator<Item = u8> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let i = bits.trailing_zeros() as u8;
            bits &= bits - 1;
            Some(if i >= 16 { 0x80 | (i - 16) } else { i })
        })
    }
}

impl FlushFifo for SimBus {
    fn flush_in(&self, ep_addr: EndpointAddress) {
        if let Some(ep) = lock(&self.state).device_ep(ep_addr) {
            ep.fifo.clear();
            ep.complete = false;
        }
    }

    fn set_out_nak(&self, ep_addr: EndpointAddress, nak: bool) {
        if let Some(ep) = lock(&self.state).device_ep(ep_addr) {
            ep.nak = nak;
        }
    }

    fn set_in_depth(&self, ep_addr: EndpointAddress, packets: usize) {
        if ep_addr.direction() != UsbDirection::In {
            return;
        }
        if let Some(ep) = lock(&self.state).device_ep(ep_addr) {
            let slot = ep.config.map_or(0, |c| usize::from(c.max_packet_size));
            ep.fifo = InFifo::new(packets, slot);
            ep.complete = false;
        }
    }
}

impl UsbBus for SimBus {
    /// Allocates an endpoint; automatic allocation starts at index 1 because usb-device
    /// allocates EP0 last, with the explicit address 0.
    fn alloc_ep(
        &mut self,
        ep_dir: UsbDirection,
        ep_addr: Option<EndpointAddress>,
        ep_type: EndpointType,
        max_packet_size: u16,
        interval: u8,
    ) -> usb_device::Result<EndpointAddress> {
        let mut state = lock(&self.state);
        let eps = match ep_dir {
            UsbDirection::Out => &mut state.out_eps,
            UsbDirection::In => &mut state.in_eps,
        };
        let index = match ep_addr {
            Some(addr) => {
                let index = addr.index();
                if addr.direction() != ep_dir
                    || index >= ENDPOINT_COUNT
                    || eps[index].config.is_some()
                {
                    return Err(UsbError::InvalidEndpoint);
                }
                index
            }
            None => (1..ENDPOINT_COUNT)
                .find(|&i| eps[i].config.is_none())
                .ok_or(UsbError::EndpointOverflow)?,
        };
        let ep = &mut eps[index];
        ep.config = Some(EndpointConfig {
            ep_type,
            max_packet_size,
            interval,
        });
        match ep_dir {
            UsbDirection::Out => ep.buf = Vec::with_capacity(usize::from(max_packet_size)),
            UsbDirection::In => ep.fifo = InFifo::new(1, usize::from(max_packet_size)),
        }
        state.ep_limit = state.ep_limit.max(index + 1);
        Ok(EndpointAddress::from_parts(index, ep_dir))
    }

    fn enable(&mut self) {
        lock(&self.state).enabled = true;
    }

    fn reset(&self) {
        lock(&self.state).reset_endpoints();
    }

    fn set_device_address(&self, addr: u8) {
        lock(&self.state).address = addr;
    }

    /// Queues one IN packet. `BufferOverflow` if it exceeds the max packet size, `WouldBlock`
    /// while the FIFO is full (with the default depth of one: while the previous packet has not
    /// been taken by the host).
    ///
    /// On an endpoint whose FIFO holds several packets ([`FlushFifo::set_in_depth`]), a
    /// longer `buf` is a multi-packet transfer, as a DMA-fed FIFO takes it: it is queued as
    /// consecutive max-size packets (the last one shorter if the length is not a multiple),
    /// as many whole packets as the FIFO has room for, and the bytes queued are returned
    /// (`WouldBlock` if none fit). The host sees the same packets as from one write each.
    fn write(&self, ep_addr: EndpointAddress, buf: &[u8]) -> usb_device::Result<usize> {
        let mut state = lock(&self.state);
        if ep_addr.direction() != UsbDirection::In {
            return Err(UsbError::InvalidEndpoint);
        }
        let ep = state.device_ep(ep_addr).ok_or(UsbError::InvalidEndpoint)?;
        let max = ep.config.map_or(0, |c| usize::from(c.max_packet_size));
        if buf.len() > max {
            if ep.fifo.depth() < 2 || max == 0 {
                return Err(UsbError::BufferOverflow);
            }
            return match ep.fifo.push_run(buf) {
                0 => Err(UsbError::WouldBlock),
                n => Ok(n),
            };
        }
        if !ep.fifo.push(buf) {
            return Err(UsbError::WouldBlock);
        }
        Ok(buf.len())
    }

    /// Takes the waiting OUT or SETUP packet. `WouldBlock` if there is none, `Ok(0)` for a
    /// zero-length packet, `BufferOverflow` if `buf` is too small: the packet is then dropped
    /// (never truncated) so that the endpoint cannot wedge.
    fn read(&self, ep_addr: EndpointAddress, buf: &mut [u8]) -> usb_device::Result<usize> {
        let mut state = lock(&self.state);
        if ep_addr.direction() != UsbDirection::Out {
            return Err(UsbError::InvalidEndpoint);
        }
        let ep = state.device_ep(ep_addr).ok_or(UsbError::InvalidEndpoint)?;
        if !ep.full {
            return Err(UsbError::WouldBlock);
        }
        ep.full = false;
        ep.setup = false;
        let len = ep.buf.len();
        if len > buf.len() {
            return Err(UsbError::BufferOverflow);
        }
        buf[..len].copy_from_slice(&ep.buf);
        Ok(len)
    }

    fn set_stalled(&self, ep_addr: EndpointAddress, stalled: bool) {
        if let Some(ep) = lock(&self.state).device_ep(ep_addr) {
            ep.stalled = stalled;
        }
    }

    fn is_stalled(&self, ep_addr: EndpointAddress) -> bool {
        lock(&self.state)
            .device_ep(ep_addr)
            .is_some_and(|ep| ep.stalled)
    }

    fn suspend(&self) {
        lock(&self.state).suspended = true;
    }

    fn resume(&self) {
        lock(&self.state).suspended = false;
    }

    /// Reports a pending reset first, then suspend/resume, then endpoint events: `ep_out` and
    /// `ep_setup` bits stay set while packets are unread, `ep_in_complete` bits are reported once.
    fn poll(&self) -> PollResult {
        let mut state = lock(&self.state);
        if !state.enabled || !state.connected {
            return PollResult::None;
        }
        if state.reset_pending {
            state.reset_pending = false;
            return PollResult::Reset;
        }
        if state.suspend_pending {
            state.suspend_pending = false;
            return PollResult::Suspend;
        }
        if state.resume_pending {
            state.resume_pending = false;
            return PollResult::Resume;
        }
        let (mut ep_out, mut ep_setup, mut ep_in_complete) = (0u16, 0u16, 0u16);
        let limit = state.ep_limit;
        for (i, ep) in state.out_eps[..limit].iter().enumerate() {
            if ep.full {
                if ep.setup {
                    ep_setup |= 1 << i;
                } else {
                    ep_out |= 1 << i;
                }
            }
        }
        for (i, ep) in state.in_eps[..limit].iter_mut().enumerate() {
            if ep.complete {
                ep.complete = false;
                ep_in_complete |= 1 << i;
            }
        }
        if ep_out | ep_setup | ep_in_complete == 0 {
            PollResult::None
        } else {
            PollResult::Data {
                ep_out,
                ep_in_complete,
                ep_setup,
            }
        }
    }
}

impl BusPort {
    /// Sends a SETUP token with its 8-byte packet to EP0.
    ///
    /// A SETUP is always accepted (even over an unread packet), clears both EP0 stalls and
    /// flushes an unsent EP0 IN packet. Fails only with `NoEndpoint` (EP0 not yet allocated) or
    /// `Disconnected`.
    pub fn setup(&self, packet: [u8; 8]) -> Result<(), PacketError> {
        let mut state = self.live()?;
        if state.in_eps[0].config.is_none() || state.out_eps[0].config.is_none() {
            return Err(PacketError::NoEndpoint);
        }
        let ep_in = &mut state.in_eps[0];
        ep_in.stalled = false;
        ep_in.fifo.clear();
        let ep_out = &mut state.out_eps[0];
        ep_out.stalled = false;
        ep_out.buf.clear();
        ep_out.buf.extend_from_slice(&packet);
        ep_out.full = true;
        ep_out.setup = true;
        Ok(())
    }

    /// Sends one OUT packet to `ep_addr` (bit 7 clear).
    ///
    /// `Nak` while the previous packet is unread or the firmware NAKs the endpoint
    /// ([`FlushFifo::set_out_nak`]), `Stall` if halted, `Babble` (packet dropped) if `data`
    /// exceeds the endpoint's max packet size.
    pub fn out(&self, ep_addr: u8, data: &[u8]) -> Result<(), PacketError> {
        if ep_addr & 0x80 != 0 {
            return Err(PacketError::NoEndpoint);
        }
        let mut state = self.live()?;
        let ep = state.host_ep(ep_addr).ok_or(PacketError::NoEndpoint)?;
        if ep.stalled {
            return Err(PacketError::Stall);
        }
        if ep.full || ep.nak {
            return Err(PacketError::Nak);
        }
        let max = ep.config.map_or(0, |c| usize::from(c.max_packet_size));
        if data.len() > max {
            return Err(PacketError::Babble);
        }
        ep.buf.clear();
        ep.buf.extend_from_slice(data);
        ep.full = true;
        ep.setup = false;
        Ok(())
    }

    /// Sends one IN token to `ep_addr` (bit 7 set) and copies the packet into `buf`, returning
    /// its length (0 for a zero-length packet).
    ///
    /// `Nak` if the device has nothing queued, `Stall` if halted, `Babble` if the packet is
    /// larger than `buf`: the packet is then not acknowledged and stays queued on the device.
    pub fn in_packet(&self, ep_addr: u8, buf: &mut [u8]) -> Result<usize, PacketError> {
        if ep_addr & 0x80 == 0 {
            return Err(PacketError::NoEndpoint);
        }
        let mut state = self.live()?;
        let ep = state.host_ep(ep_addr).ok_or(PacketError::NoEndpoint)?;
        ep.take_in(buf.len(), &mut |packet| {
            buf[..packet.len()].copy_from_slice(packet)
        })
    }

    /// Sends IN tokens to `ep_addr` (bit 7 set) for as long as the device has packets queued
    /// and the transfer they belong to goes on, handing each packet to `take` in order: what a
    /// host controller does between two looks at the device, since nothing the firmware does
    /// is needed while its FIFO holds packets.
    ///
    /// A transfer with `room` bytes left and `max_packet` its endpoint's max packet size goes
    /// on until a packet shorter than `max_packet` (a zero-length packet included) or `room`
    /// bytes have arrived. The burst stops there, or before a token the device would not ACK:
    /// its FIFO is empty (NAK) or the packet is larger than the room left (babble). The
    /// first token's failure is the error (`Nak`, `Stall`, `Babble` as for
    /// [`in_packet`](Self::in_packet)); a later one ends the burst and the next call meets it.
    pub fn in_burst(
        &self,
        ep_addr: u8,
        max_packet: usize,
        room: usize,
        take: &mut dyn FnMut(&[u8]),
    ) -> Result<Burst, PacketError> {
        if ep_addr & 0x80 == 0 {
            return Err(PacketError::NoEndpoint);
        }
        let mut state = self.live()?;
        let ep = state.host_ep(ep_addr).ok_or(PacketError::NoEndpoint)?;
        let mut burst = Burst::default();
        loop {
            match ep.take_in(room - burst.bytes, take) {
                Ok(len) => {
                    burst.bytes += len;
                    burst.packets += 1;
                    if len < max_packet || burst.bytes == room {
                        burst.ended = true;
                        return Ok(burst);
                    }
                }
                Err(e) if burst.packets == 0 => return Err(e),
                Err(_) => return Ok(burst),
            }
        }
    }

    /// Like [`in_burst`](Self::in_burst) into an empty `buf`, where the packets the burst would
    /// take are all the endpoint holds and lie in one piece: `buf` takes over the endpoint's
    /// storage (and the endpoint keeps `buf`'s allocation), so the bytes are not copied.
    /// `None`, with nothing taken, where that does not apply (an empty or stalled endpoint, a
    /// run that is not whole, a `buf` that is not empty or has no capacity for the run); the
    /// caller then uses `in_burst`.
    pub fn in_burst_whole(
        &self,
        ep_addr: u8,
        max_packet: usize,
        room: usize,
        buf: &mut Vec<u8>,
    ) -> Option<Burst> {
        if ep_addr & 0x80 == 0 || !buf.is_empty() {
            return None;
        }
        let mut state = self.live().ok()?;
        let ep = state.host_ep(ep_addr)?;
        if ep.stalled || ep.fifo.slot != max_packet {
            return None;
        }
        let (bytes, packets, ended) = ep.fifo.take_all(room, buf)?;
        // The FIFO ran empty, as taking its last packet reports.
        ep.complete = true;
        Some(Burst {
            bytes,
            packets,
            ended,
        })
    }

    /// Like [`in_packet`](Self::in_packet), allocating a buffer of the endpoint's max packet
    /// size; convenient for tests, not for the data path.
    pub fn in_packet_vec(&self, ep_addr: u8) -> Result<Vec<u8>, PacketError> {
        let max = self
            .endpoint_info(ep_addr)
            .map_or(0, |(_, max, _)| usize::from(max));
        let mut buf = vec![0; max];
        let len = self.in_packet(ep_addr, &mut buf)?;
        buf.truncate(len);
        Ok(buf)
    }

    /// Signals a USB reset: every buffer, flag and stall is cleared and the address returns to
    /// 0 at once; the firmware sees `PollResult::Reset` on its next poll.
    pub fn bus_reset(&self) {
        let mut state = lock(&self.state);
        state.reset_endpoints();
        state.suspend_pending = false;
        state.resume_pending = false;
        state.reset_pending = true;
    }

    /// Signals suspend: the firmware sees `PollResult::Suspend` on its next poll.
    pub fn suspend(&self) {
        let mut state = lock(&self.state);
        state.resume_pending = false;
        state.suspend_pending = true;
    }

    /// Signals resume: the firmware sees `PollResult::Resume` on its next poll.
    pub fn resume(&self) {
        let mut state = lock(&self.state);
        state.suspend_pending = false;
        state.resume_pending = true;
    }

    /// Unplugs the device: every later token fails with `Disconnected` and the firmware's poll
    /// sees nothing more.
    pub fn disconnect(&self) {
        lock(&self.state).connected = false;
    }

    /// Plugs the device back in; the firmware sees a reset on its next poll, as after a real
    /// attach, and the host must enumerate again.
    pub fn reconnect(&self) {
        let mut state = lock(&self.state);
        state.connected = true;
        state.reset_endpoints();
        state.reset_pending = true;
    }

    /// Whether the firmware has entered suspend (it called `UsbBus::suspend` and not yet
    /// `resume`).
    pub fn is_suspended(&self) -> bool {
        lock(&self.state).suspended
    }

    /// Whether the device is still plugged in.
    pub fn is_connected(&self) -> bool {
        lock(&self.state).connected
    }

    /// The speed the device is attached at.
    pub fn speed(&self) -> Speed {
        lock(&self.state).speed
    }

    /// `(type, max packet size, interval)` of the endpoint at `ep_addr` (bit 7 = IN), if
    /// allocated.
    pub fn endpoint_info(&self, ep_addr: u8) -> Option<(EndpointType, u16, u8)> {
        let mut state = lock(&self.state);
        let config = state.host_ep(ep_addr)?.config?;
        Some((config.ep_type, config.max_packet_size, config.interval))
    }

    /// The address the firmware has set (0 until SET_ADDRESS completes, and after a reset).
    pub fn address(&self) -> u8 {
        lock(&self.state).address
    }

    /// Whether the endpoint at `ep_addr` (bit 7 = IN) is halted; false if not allocated.
    pub fn is_stalled(&self, ep_addr: u8) -> bool {
        lock(&self.state)
            .host_ep(ep_addr)
            .is_some_and(|ep| ep.stalled)
    }

    /// Whether the device has an IN packet queued on `ep_addr` that no token has taken yet.
    pub fn in_pending(&self, ep_addr: u8) -> bool {
        ep_addr & 0x80 != 0
            && lock(&self.state)
                .host_ep(ep_addr)
                .is_some_and(|ep| !ep.fifo.is_empty())
    }

    /// How many packets the FIFO of IN endpoint `ep_addr` holds at most (1 unless the
    /// firmware asked for more); 0 if there is no such endpoint.
    pub fn in_depth(&self, ep_addr: u8) -> usize {
        if ep_addr & 0x80 == 0 {
            return 0;
        }
        lock(&self.state)
            .host_ep(ep_addr)
            .map_or(0, |ep| ep.fifo.depth())
    }

    /// Locks the state if the device is plugged in.
    fn live(&self) -> Result<MutexGuard<'_, BusState>, PacketError> {
        let state = lock(&self.state);
        if state.connected {
            Ok(state)
        } else {
            Err(PacketError::Disconnected)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus_with_bulk() -> (SimBus, BusPort, EndpointAddress, EndpointAddress) {
        let (mut bus, port) = SimBus::new(Speed::Full);
        let out = bus
            .alloc_ep(UsbDirection::Out, None, EndpointType::Bulk, 64, 0)
            .unwrap();
        let inp = bus
            .alloc_ep(UsbDirection::In, None, EndpointType::Bulk, 64, 0)
            .unwrap();
        bus.enable();
        (bus, port, out, inp)
    }

    #[test]
    fn auto_allocation_starts_at_one_and_ep0_stays_free() {
        let (mut bus, _port, out, inp) = bus_with_bulk();
        assert_eq!((out.index(), inp.index()), (1, 1));
        let ep0 = bus
            .alloc_ep(
                UsbDirection::Out,
                Some(EndpointAddress::from(0x00)),
                EndpointType::Control,
                8,
                0,
            )
            .unwrap();
        assert_eq!(ep0.index(), 0);
        let again = bus.alloc_ep(
            UsbDirection::Out,
            Some(EndpointAddress::from(0x01)),
            EndpointType::Bulk,
            64,
            0,
        );
        assert_eq!(again, Err(UsbError::InvalidEndpoint));
    }

    #[test]
    fn out_packet_is_sticky_until_read_and_never_truncated() {
        let (bus, port, out, _) = bus_with_bulk();
        assert_eq!(port.out(0x01, &[1, 2, 3]), Ok(()));
        assert_eq!(port.out(0x01, &[4]), Err(PacketError::Nak));
        for _ in 0..2 {
            match bus.poll() {
                PollResult::Data { ep_out, .. } => assert_eq!(ep_out, 0b10),
                _ => panic!("expected ep_out"),
            }
        }
        let mut small = [0u8; 2];
        assert_eq!(bus.read(out, &mut small), Err(UsbError::BufferOverflow));
        assert_eq!(bus.read(out, &mut small), Err(UsbError::WouldBlock));
        assert_eq!(port.out(0x01, &[]), Ok(()));
        assert_eq!(bus.read(out, &mut small), Ok(0));
        assert!(matches!(bus.poll(), PollResult::None));
        assert_eq!(port.out(0x01, &[0; 65]), Err(PacketError::Babble));
    }

    #[test]
    fn firmware_nak_refuses_out_packets_until_lifted_and_a_reset_lifts_it() {
        let (bus, port, out, _) = bus_with_bulk();
        bus.set_out_nak(out, true);
        assert_eq!(port.out(0x01, &[1]), Err(PacketError::Nak));
        assert!(matches!(bus.poll(), PollResult::None));
        bus.set_out_nak(out, false);
        assert_eq!(port.out(0x01, &[1]), Ok(()));
        let mut buf = [0u8; 8];
        assert_eq!(bus.read(out, &mut buf), Ok(1));
        bus.set_out_nak(out, true);
        port.bus_reset();
        assert_eq!(port.out(0x01, &[2]), Ok(()));
    }

    #[test]
    fn in_packet_blocks_writes_and_completes_once() {
        let (bus, port, _, inp) = bus_with_bulk();
        assert_eq!(port.in_packet(0x81, &mut [0; 64]), Err(PacketError::Nak));
        assert_eq!(bus.write(inp, &[0; 65]), Err(UsbError::BufferOverflow));
        assert_eq!(bus.write(inp, &[7; 10]), Ok(10));
        assert_eq!(bus.write(inp, &[8]), Err(UsbError::WouldBlock));
        assert_eq!(port.in_packet(0x81, &mut [0; 4]), Err(PacketError::Babble));
        assert_eq!(port.in_packet_vec(0x81), Ok(vec![7; 10]));
        match bus.poll() {
            PollResult::Data { ep_in_complete, .. } => assert_eq!(ep_in_complete, 0b10),
            _ => panic!("expected ep_in_complete"),
        }
        assert!(matches!(bus.poll(), PollResult::None));
    }

    #[test]
    fn a_multi_packet_write_queues_the_packets_one_write_each_would() {
        let (bus, port, _, inp) = bus_with_bulk();
        // A one-packet FIFO takes one packet per write.
        assert_eq!(bus.write(inp, &[1; 100]), Err(UsbError::BufferOverflow));
        bus.set_in_depth(inp, 4);
        let data: Vec<u8> = (0..=255u8).cycle().take(300).collect();
        // Four slots: 256 bytes as four full packets; the rest waits.
        assert_eq!(bus.write(inp, &data), Ok(256));
        assert_eq!(bus.write(inp, &data[256..]), Err(UsbError::WouldBlock));
        assert_eq!(port.in_packet_vec(0x81), Ok(data[..64].to_vec()));
        assert_eq!(port.in_packet_vec(0x81), Ok(data[64..128].to_vec()));
        // The ring wraps: the short last packet goes into the first slot again.
        assert_eq!(bus.write(inp, &data[256..]), Ok(44));
        let mut got = Vec::new();
        let mut lens = Vec::new();
        while let Ok(p) = port.in_packet_vec(0x81) {
            lens.push(p.len());
            got.extend(p);
        }
        assert_eq!(lens, [64, 64, 44]);
        assert_eq!(got, data[128..]);
        // Across the wrap with two packets free at the end of the ring and more at its start.
        for round in 0..3 {
            let chunk: Vec<u8> = (0..200).map(|i| (i + round * 7) as u8).collect();
            assert_eq!(bus.write(inp, &chunk), Ok(200));
            let mut got = Vec::new();
            while let Ok(p) = port.in_packet_vec(0x81) {
                got.extend(p);
            }
            assert_eq!(got, chunk, "round {round}");
        }
    }

    /// A burst that takes the FIFO's storage whole ([`BusPort::in_burst_whole`], falling back
    /// to [`BusPort::in_burst`] where it does not apply) takes what packet-by-packet bursts
    /// take, in every state the ring gets into: two buses given the same random writes, single
    /// packets and bursts of random room stay alike.
    #[test]
    fn a_whole_run_burst_takes_what_packet_bursts_take() {
        let (bus_a, port_a, _, in_a) = bus_with_bulk();
        let (bus_b, port_b, _, in_b) = bus_with_bulk();
        bus_a.set_in_depth(in_a, 8);
        bus_b.set_in_depth(in_b, 8);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (mut wholes, mut spare) = (0, Vec::new());
        for step in 0..20_000 {
            match next(4) {
                0 => {
                    let len = next(700);
                    let data: Vec<u8> = (0..len).map(|i| (i + step) as u8).collect();
                    assert_eq!(bus_a.write(in_a, &data), bus_b.write(in_b, &data), "{step}");
                }
                1 => assert_eq!(port_a.in_packet_vec(0x81), port_b.in_packet_vec(0x81)),
                _ => {
                    let room = 1 + next(600);
                    let mut a = Vec::new();
                    let burst_a = port_a.in_burst(0x81, 64, room, &mut |p| a.extend_from_slice(p));
                    let mut b = std::mem::take(&mut spare);
                    b.clear();
                    if next(3) == 0 {
                        b.shrink_to(next(600));
                    }
                    let burst_b = match port_b.in_burst_whole(0x81, 64, room, &mut b) {
                        Some(burst) => {
                            wholes += 1;
                            Ok(burst)
                        }
                        None => port_b.in_burst(0x81, 64, room, &mut |p| b.extend_from_slice(p)),
                    };
                    assert_eq!((burst_a, &a), (burst_b, &b), "step {step}, room {room}");
                    spare = b;
                }
            }
            let completions = |r: PollResult| match r {
                PollResult::Data { ep_in_complete, .. } => ep_in_complete,
                _ => 0,
            };
            assert_eq!(
                completions(bus_a.poll()),
                completions(bus_b.poll()),
                "{step}"
            );
        }
        assert!(wholes > 100, "only {wholes} whole-run bursts");
    }

    #[test]
    fn stall_and_disconnect_answer_tokens() {
        let (bus, port, out, _) = bus_with_bulk();
        bus.set_stalled(out, true);
        assert!(port.is_stalled(0x01));
        assert_eq!(port.out(0x01, &[1]), Err(PacketError::Stall));
        assert_eq!(port.out(0x02, &[1]), Err(PacketError::NoEndpoint));
        assert_eq!(port.in_packet(0x01, &mut []), Err(PacketError::NoEndpoint));
        port.disconnect();
        assert_eq!(port.out(0x01, &[1]), Err(PacketError::Disconnected));
        assert!(matches!(bus.poll(), PollResult::None));
    }

    #[test]
    fn endpoint_sets_keep_direction_and_order() {
        let set = EndpointSet::EMPTY.with(0x83).with(0x02).with(0x81);
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0x02, 0x81, 0x83]);
        assert!(set.contains(0x81) && !set.contains(0x01) && !set.contains(0x82));
        assert!(EndpointSet::EMPTY.is_empty() && !set.is_empty());
        let other = EndpointSet::EMPTY.with_if(0x01, true).with_if(0x02, false);
        assert_eq!(
            set.union(other).iter().collect::<Vec<_>>(),
            vec![0x01, 0x02, 0x81, 0x83]
        );
    }
}
