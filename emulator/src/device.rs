//! One emulated scanner: usb-device's `UsbDevice` and its function on a [`SimBus`].
//!
//! The function is the profile's personality, behind the [`Personality`] trait: the native
//! [`ScannerFunction`] or the ESC/I [`EsciFunction`]. [`Device`] owns the bus allocator, the
//! device stack and the function together (the stack borrows the allocator, so they live in one
//! self-referential cell), plus the host's end of the wire, the [`BusPort`]. It is still sans-IO:
//! every method takes the current time, and [`Device::poll_at`] says when the scan engine needs
//! it next.

use usb_device::bus::UsbBusAllocator;
use usb_device::descriptor::lang_id::LangID;
use usb_device::device::{StringDescriptors, UsbDevice, UsbDeviceBuilder, UsbVidPid};
use usb_device::endpoint::EndpointAddress;

use crate::engine::{Fault, ImageSource};
use crate::personality::esci::EsciFunction;
use crate::personality::native::ScannerFunction;
use crate::personality::strings::AnyLanguageStrings;
use crate::personality::{DeviceNote, NoteKind, Personality};
use crate::profile::{PersonalityConfig, Profile};
use crate::time::Instant;
use crate::usb::bus::{BusPort, EndpointSet, FlushFifo, SimBus};
use crate::usb::hc::DevicePoller;

pub use crate::personality::MULTI_PACKET_FIFO_BYTES;

/// The firmware: the device stack and the scanner function, borrowing one allocator.
struct Firmware<'a> {
    usb: UsbDevice<'a, SimBus>,
    /// Polled before the function: string requests in a language the device lacks.
    strings: AnyLanguageStrings,
    function: Box<dyn Personality<SimBus> + Send + 'a>,
    /// The OUT endpoints the function NAKed after the last poll.
    out_naks: EndpointSet,
}

self_cell::self_cell!(
    struct FirmwareCell {
        owner: UsbBusAllocator<SimBus>,
        #[not_covariant]
        dependent: Firmware,
    }
);

/// An emulated scanner. See the module documentation.
pub struct Device {
    firmware: FirmwareCell,
    port: BusPort,
    profile: Profile,
    now: Instant,
    disconnected: bool,
    notes: Vec<DeviceNote>,
}

impl Device {
    /// A scanner with `profile`'s descriptors, timing and faults, attached and not yet
    /// enumerated.
    pub fn new(profile: &Profile) -> Device {
        let (bus, port) = SimBus::new(profile.usb.speed);
        let strings = [
            profile.usb.manufacturer.clone(),
            profile.usb.product.clone(),
            profile.usb.serial.clone(),
        ];
        let firmware = FirmwareCell::new(UsbBusAllocator::new(bus), |alloc| {
            let sizes = profile.usb.endpoint_sizes();
            let engine = profile.engine();
            let function: Box<dyn Personality<SimBus> + Send> = match &profile.personality {
                PersonalityConfig::EscI(config) => {
                    Box::new(EsciFunction::new(alloc, sizes, engine, config))
                }
                _ => Box::new(ScannerFunction::new(alloc, sizes, engine)),
            };
            let class = function.device_class();
            let language = LangID::EN_US;
            let descriptors = StringDescriptors::new(language)
                .manufacturer(intern(&strings[0]))
                .product(intern(&strings[1]))
                .serial_number(intern(&strings[2]));
            let usb = UsbDeviceBuilder::new(alloc, UsbVidPid(profile.usb.vid, profile.usb.pid))
                .strings(&[descriptors])
                .expect("one language is within usb-device's limit")
                .max_packet_size_0(64)
                .expect("64 is a valid EP0 packet size")
                .device_class(class)
                .build();
            let strings =
                AnyLanguageStrings::new(u16::from(language), &strings[0], &strings[1], &strings[2]);
            Firmware {
                usb,
                strings,
                function,
                out_naks: EndpointSet::EMPTY,
            }
        });
        firmware.with_dependent(|_, fw| {
            for ep in fw.function.multi_packet_in().iter() {
                let mps = port
                    .endpoint_info(ep)
                    .map_or(0, |(_, mps, _)| usize::from(mps));
                if let Some(packets) = MULTI_PACKET_FIFO_BYTES.checked_div(mps) {
                    fw.usb
                        .bus()
                        .set_in_depth(EndpointAddress::from(ep), packets.max(1));
                }
            }
        });
        let mut device = Device {
            firmware,
            port,
            profile: profile.clone(),
            now: Instant::ZERO,
            disconnected: false,
            notes: Vec::new(),
        };
        device.set_faults(profile.faults.clone());
        device
    }

    /// The profile the device was built from.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The host's end of the wire.
    pub fn port(&self) -> &BusPort {
        &self.port
    }

    /// Replaces the injected faults (the profile's faults are the default).
    pub fn set_faults(&mut self, faults: Vec<Fault>) {
        self.firmware
            .with_dependent_mut(|_, fw| fw.function.engine_mut().set_faults(faults));
    }

    /// Chooses where image bytes come from (the test pattern by default).
    pub fn set_image(&mut self, image: ImageSource) {
        self.firmware
            .with_dependent_mut(|_, fw| fw.function.engine_mut().set_image(image));
    }

    /// Runs the firmware at `now`: usb-device's poll, the scan engine, the endpoints.
    pub fn poll(&mut self, now: Instant) {
        self.now = self.now.max(now);
        let now = self.now;
        let port = &self.port;
        let mut disconnect = false;
        let notes = &mut self.notes;
        self.firmware.with_dependent_mut(|_, fw| {
            let function = &mut fw.function;
            function.set_now(now);
            fw.usb.poll(&mut [&mut fw.strings, function.class()]);
            function.pump();
            let bus = fw.usb.bus();
            let flush = function.take_flush_requests();
            if !flush.is_empty() {
                for ep in flush.iter() {
                    bus.flush_in(EndpointAddress::from(ep));
                }
                function.pump();
            }
            let naks = function.nak_out();
            // Re-asserted on every poll: a USB reset clears the bus's NAK flags.
            if !(naks.is_empty() && fw.out_naks.is_empty()) {
                for ep in fw.out_naks.union(naks).iter() {
                    bus.set_out_nak(EndpointAddress::from(ep), naks.contains(ep));
                }
                fw.out_naks = naks;
            }
            function.observe_halts(&|ep| port.is_stalled(ep));
            disconnect = function.wants_disconnect();
            function.take_notes(notes);
        });
        if disconnect && !self.disconnected {
            self.disconnected = true;
            self.port.disconnect();
            self.notes
                .push(DeviceNote::new(now, NoteKind::Disconnected));
        }
    }

    /// When the device next needs a poll, if ever.
    pub fn poll_at(&self) -> Option<Instant> {
        if self.disconnected {
            return None;
        }
        self.firmware.with_dependent(|_, fw| fw.function.poll_at())
    }

    /// Takes the device's notes since the last call, in the order they happened.
    pub fn take_notes(&mut self) -> Vec<DeviceNote> {
        std::mem::take(&mut self.notes)
    }

    /// A [`DevicePoller`] that runs this device's firmware at `now`, for stepping transfers.
    pub fn poller(&mut self, now: Instant) -> impl DevicePoller + '_ {
        move || self.poll(now)
    }

    /// Splits the device into its port and a poller, so a transfer can step on the port while
    /// the poller runs the firmware.
    pub fn port_and_poller(&mut self, now: Instant) -> (BusPort, impl DevicePoller + '_) {
        (self.port.clone(), move || self.poll(now))
    }
}

/// Interns a descriptor string for the lifetime of the process: usb-device needs `&'a str` for
/// the allocator's lifetime, and profiles carry a handful of distinct strings, so each distinct
/// string is stored once, however many devices are built.
fn intern(s: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static STRINGS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let set = STRINGS.get_or_init(|| Mutex::new(HashSet::new()));
    let mut set = set.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = set.get(s) {
        return found;
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    set.insert(leaked);
    leaked
}
