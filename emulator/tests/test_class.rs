//! usb-device's TestClass host suite (`tests/test_class_host/tests.rs` in usb-device 0.3.2),
//! ported from libusb to the in-process host controller and run over `SimBus`.
//!
//! Each test builds a fresh TestClass device (default sizes: 8-byte EP0, 64-byte bulk, 31-byte
//! interrupt, 256-byte buffers) and enumerates it, as the upstream runner resets and configures
//! the device before each test. Random data comes from a seeded xorshift so failures replay.

use scanemu::usb::bus::{BusPort, PacketError, SimBus};
use scanemu::usb::hc::{
    enumerate, run, run_default, ControlTransfer, DevicePoller, Enumeration, InTransfer,
    OutTransfer, SetupPacket, StepResult, Transfer, WireError, DIR_IN, RECIPIENT_DEVICE,
    TYPE_VENDOR,
};
use scanemu::usb::speed::Speed;
use usb_device::bus::UsbBusAllocator;
use usb_device::test_class::{self, TestClass};

const EN_US: u16 = 0x0409;
const BULK_OUT: u8 = 0x01;
const BULK_IN: u8 = 0x81;
const INTERRUPT_OUT: u8 = 0x02;
const INTERRUPT_IN: u8 = 0x82;
const BULK_MPS: usize = 64;
const TESTCLASS_BUFFER: usize = 256;

/// The host side of one test: the wire, the firmware's poll hook and what enumeration read.
struct Host<'a> {
    port: BusPort,
    dev: &'a mut dyn DevicePoller,
    enumeration: Enumeration,
    rng: u64,
}

/// Builds a TestClass device on a fresh full-speed `SimBus`, enumerates it and runs `test`.
fn with_device(test: impl FnOnce(&mut Host)) {
    let (bus, port) = SimBus::new(Speed::Full);
    let alloc = UsbBusAllocator::new(bus);
    let mut class = TestClass::new(&alloc);
    let mut device = class.make_device(&alloc);
    // TestClass's data path is its inherent `poll`, not `UsbClass::poll` (which it leaves as
    // the default no-op), so call it whenever the device reports activity, as upstream does.
    let mut poll = || {
        if device.poll(&mut [&mut class]) {
            class.poll();
        }
    };
    let enumeration = enumerate(&port, &mut poll).expect("enumeration");
    let mut host = Host {
        port,
        dev: &mut poll,
        enumeration,
        rng: 0x9e37_79b9_7f4a_7c15,
    };
    test(&mut host);
}

impl Host<'_> {
    fn random_data(&mut self, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                self.rng as u8
            })
            .collect()
    }

    fn run<T: Transfer>(&mut self, mut transfer: T) -> Result<T::Output, WireError> {
        run_default(&mut transfer, &self.port, self.dev)
    }

    fn control_in(&mut self, setup: SetupPacket) -> Result<Vec<u8>, WireError> {
        self.run(ControlTransfer::new_in(setup))
    }

    fn control_out(&mut self, setup: SetupPacket, data: &[u8]) -> Result<(), WireError> {
        self.run(ControlTransfer::new_out(setup, data.to_vec()))
            .map(|_| ())
    }

    fn vendor_in(&mut self, request: u8, length: u16) -> Result<Vec<u8>, WireError> {
        self.control_in(SetupPacket {
            request_type: DIR_IN | TYPE_VENDOR | RECIPIENT_DEVICE,
            request,
            value: 0,
            index: 0,
            length,
        })
    }

    fn vendor_out(
        &mut self,
        request: u8,
        value: u16,
        index: u16,
        data: &[u8],
    ) -> Result<(), WireError> {
        let setup = SetupPacket {
            request_type: TYPE_VENDOR | RECIPIENT_DEVICE,
            request,
            value,
            index,
            length: 0,
        };
        self.control_out(setup, data)
    }

    fn write(&mut self, ep: u8, data: &[u8], zlp: bool) -> Result<usize, WireError> {
        self.run(OutTransfer::new(ep, data.to_vec(), zlp))
    }

    fn read(&mut self, ep: u8, length: usize) -> Result<Vec<u8>, WireError> {
        self.run(InTransfer::new(ep, length))
    }

    fn string(&mut self, index: u8, lang_id: u16) -> Result<String, WireError> {
        let raw = self.control_in(SetupPacket::get_string_descriptor(index, lang_id, 255))?;
        assert_eq!(usize::from(raw[0]), raw.len(), "bLength of string {index}");
        assert_eq!(raw[1], 3, "bDescriptorType of string {index}");
        let units: Vec<u16> = raw[2..]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Ok(String::from_utf16(&units).expect("utf-16 string"))
    }

    /// One round of upstream's bulk_loopback for `len` bytes; `zlp_in_transfer` picks between
    /// the transfer's own ZLP flag and a separate zero-length write, as libusb users do.
    fn bulk_loopback(&mut self, len: usize, zlp_in_transfer: bool) {
        let data = self.random_data(len);
        assert_eq!(
            self.write(BULK_OUT, &data, zlp_in_transfer),
            Ok(len),
            "bulk write len {len}"
        );
        if !zlp_in_transfer && len > 0 && len.is_multiple_of(BULK_MPS) {
            assert_eq!(self.write(BULK_OUT, &[], false), Ok(0), "zlp after {len}");
        }
        let response = self
            .read(BULK_IN, len.max(1))
            .unwrap_or_else(|e| panic!("bulk read len {len}: {e}"));
        assert_eq!(response, data, "bulk loopback len {len}");
    }
}

/// Walks a configuration descriptor: (interface number, alt setting, class, subclass,
/// iInterface, endpoints as (address, bmAttributes, wMaxPacketSize, bInterval)).
type Endpoint = (u8, u8, u16, u8);
fn interfaces(config: &[u8]) -> Vec<(u8, u8, u8, u8, u8, Vec<Endpoint>)> {
    let mut out: Vec<(u8, u8, u8, u8, u8, Vec<Endpoint>)> = Vec::new();
    let mut rest = config;
    while rest.len() >= 2 {
        let len = usize::from(rest[0]);
        assert!(len >= 2 && len <= rest.len(), "malformed descriptor");
        let d = &rest[..len];
        match d[1] {
            4 => out.push((d[2], d[3], d[5], d[6], d[8], Vec::new())),
            5 => out.last_mut().expect("endpoint before interface").5.push((
                d[2],
                d[3],
                u16::from_le_bytes([d[4], d[5]]),
                d[6],
            )),
            _ => {}
        }
        rest = &rest[len..];
    }
    out
}

#[test]
fn enumeration_reads_testclass_descriptors() {
    with_device(|host| {
        let dd = host.enumeration.device_descriptor.clone();
        assert_eq!(dd.len(), 18);
        assert_eq!(&dd[..2], &[18, 1]);
        assert_eq!(u16::from_le_bytes([dd[2], dd[3]]), 0x0210, "bcdUSB");
        assert_eq!(dd[7], 8, "bMaxPacketSize0");
        assert_eq!(u16::from_le_bytes([dd[8], dd[9]]), test_class::VID);
        assert_eq!(u16::from_le_bytes([dd[10], dd[11]]), test_class::PID);
        assert_eq!(
            &dd[14..18],
            &[1, 2, 3, 1],
            "string indices and bNumConfigurations"
        );

        let cd = host.enumeration.config_descriptor.clone();
        assert_eq!(cd[1], 2, "configuration descriptor type");
        assert_eq!(usize::from(u16::from_le_bytes([cd[2], cd[3]])), cd.len());
        assert_eq!(cd.len(), 9 + 9 + 4 * 7 + 9 + 7);
        assert_eq!(cd[4], 1, "bNumInterfaces");
        assert_eq!(host.enumeration.address, 1);
        assert_eq!(host.port.address(), 1);

        let config = host.control_in(SetupPacket {
            request_type: DIR_IN | RECIPIENT_DEVICE,
            request: scanemu::usb::Request::GET_CONFIGURATION,
            value: 0,
            index: 0,
            length: 1,
        });
        assert_eq!(config, Ok(vec![1]));
    });
}

#[test]
fn set_address_takes_effect_after_status_stage() {
    with_device(|host| {
        let setup = SetupPacket::set_address(5).to_bytes();
        assert_eq!(host.port.setup(setup), Ok(()));
        host.dev.poll_device();
        assert_eq!(
            host.port.address(),
            1,
            "address changed before status stage"
        );
        assert_eq!(host.port.in_packet(0x80, &mut []), Ok(0), "status ZLP");
        assert_eq!(host.port.address(), 1);
        host.dev.poll_device();
        assert_eq!(host.port.address(), 5);
    });
}

#[test]
fn control_request() {
    with_device(|host| {
        for (value, index, len) in [(0x1234, 0xabcd, 0), (0xffff, 0, 7), (7, 0x8001, 15)] {
            let data = host.random_data(len);
            let mut expected = [0u8; 8];
            expected[0] = 0x02 << 5;
            expected[1] = test_class::REQ_STORE_REQUEST;
            expected[2..4].copy_from_slice(&u16::to_le_bytes(value));
            expected[4..6].copy_from_slice(&u16::to_le_bytes(index));
            expected[6..8].copy_from_slice(&(len as u16).to_le_bytes());

            host.vendor_out(test_class::REQ_STORE_REQUEST, value, index, &data)
                .expect("control write");
            let response = host
                .vendor_in(test_class::REQ_READ_BUFFER, 8)
                .expect("control read");
            assert_eq!(response, expected);
        }
    });
}

#[test]
fn control_data() {
    with_device(|host| {
        // Upstream's lengths plus more multiples of the 8-byte EP0 packet (ZLP handling) up to
        // usb-device's 128-byte control buffer.
        for len in [0, 7, 8, 9, 15, 16, 17, 24, 63, 64, 65, 127, 128] {
            let data = host.random_data(len);
            host.vendor_out(test_class::REQ_WRITE_BUFFER, 0, 0, &data)
                .unwrap_or_else(|e| panic!("control write len {len}: {e}"));
            let response = host
                .vendor_in(test_class::REQ_READ_BUFFER, len as u16)
                .unwrap_or_else(|e| panic!("control read len {len}: {e}"));
            assert_eq!(response, data, "control data len {len}");
        }
    });
}

#[test]
fn control_data_stage_is_split_into_ep0_packets() {
    with_device(|host| {
        let mut transfer = ControlTransfer::new_in(SetupPacket::get_device_descriptor(18));
        let (result, wire) = run(&mut transfer, &host.port, host.dev, 4);
        assert_eq!(result.map(|d| d.len()), Ok(18));
        assert_eq!(wire, 8 + 18, "setup + data bytes on the wire");

        // A wLength larger than the answer ends on the short (2-byte) third packet.
        let long = host.control_in(SetupPacket::get_device_descriptor(255));
        assert_eq!(long.map(|d| d.len()), Ok(18));
    });
}

#[test]
fn control_data_static() {
    with_device(|host| {
        let response = host
            .vendor_in(test_class::REQ_READ_LONG_DATA, 257)
            .expect("control read");
        assert_eq!(&response[..], test_class::LONG_DATA);

        // wLength beyond the data: ends on the 1-byte short packet.
        let response = host.vendor_in(test_class::REQ_READ_LONG_DATA, 300);
        assert_eq!(response.as_deref(), Ok(test_class::LONG_DATA));

        // wLength that is a multiple of EP0's max packet: the host stops at wLength; the extra
        // ZLP usb-device queues is flushed by the next SETUP.
        let response = host.vendor_in(test_class::REQ_READ_LONG_DATA, 256);
        assert_eq!(response.as_deref(), Ok(&test_class::LONG_DATA[..256]));
        assert!(
            host.port.in_pending(0x80),
            "usb-device queued a ZLP past wLength"
        );
        let response = host.vendor_in(test_class::REQ_READ_BUFFER, 8);
        assert_eq!(response.map(|d| d.len()), Ok(8));
    });
}

#[test]
fn control_error() {
    with_device(|host| {
        assert_eq!(
            host.vendor_out(test_class::REQ_UNKNOWN, 0, 0, &[]),
            Err(WireError::Stall)
        );
        assert!(host.port.is_stalled(0x80) && host.port.is_stalled(0x00));
        assert_eq!(
            host.vendor_in(test_class::REQ_UNKNOWN, 8),
            Err(WireError::Stall)
        );
        assert_eq!(
            host.vendor_out(test_class::REQ_UNKNOWN, 0, 0, &[1, 2, 3]),
            Err(WireError::Stall)
        );
        // READ_BUFFER longer than TestClass's buffer is rejected too.
        assert_eq!(
            host.vendor_in(test_class::REQ_READ_BUFFER, TESTCLASS_BUFFER as u16 + 1),
            Err(WireError::Stall)
        );

        // The next SETUP clears the EP0 halt and the pipe works again.
        host.vendor_out(test_class::REQ_STORE_REQUEST, 0x55aa, 3, &[])
            .expect("control pipe recovered");
        assert!(!host.port.is_stalled(0x80));
        let response = host.vendor_in(test_class::REQ_READ_BUFFER, 8);
        assert_eq!(response, Ok(vec![0x40, 1, 0xaa, 0x55, 3, 0, 0, 0]));
    });
}

#[test]
fn string_descriptors() {
    with_device(|host| {
        let langs = host.control_in(SetupPacket::get_string_descriptor(0, 0, 255));
        assert_eq!(langs, Ok(vec![4, 3, 0x09, 0x04]), "lang id table");

        let dd = host.enumeration.device_descriptor.clone();
        assert_eq!(
            host.string(dd[14], EN_US).as_deref(),
            Ok(test_class::MANUFACTURER)
        );
        assert_eq!(
            host.string(dd[15], EN_US).as_deref(),
            Ok(test_class::PRODUCT)
        );
        assert_eq!(
            host.string(dd[16], EN_US).as_deref(),
            Ok(test_class::SERIAL_NUMBER)
        );
        // The custom string is 48 bytes, a multiple of EP0's 8: the device ends with a ZLP.
        assert_eq!(
            host.string(4, EN_US).as_deref(),
            Ok(test_class::CUSTOM_STRING)
        );

        assert_eq!(host.string(9, EN_US), Err(WireError::Stall), "no string 9");
        assert_eq!(host.string(2, 0x0407), Err(WireError::Stall), "no German");
        assert_eq!(host.string(2, EN_US).as_deref(), Ok(test_class::PRODUCT));
    });
}

#[test]
fn interface_descriptor() {
    with_device(|host| {
        let ifaces = interfaces(&host.enumeration.config_descriptor);
        let default = ifaces
            .iter()
            .find(|i| i.0 == 0 && i.1 == 0)
            .expect("default alt setting");
        assert_eq!((default.2, default.3, default.4), (0xff, 0x00, 0));

        let second = ifaces
            .iter()
            .find(|i| i.0 == 0 && i.1 == 1)
            .expect("second alt setting");
        assert_eq!((second.2, second.3), (0xff, 0x01));
        assert_ne!(second.4, 0, "second alt setting string is undefined");
        let index = second.4;
        assert_eq!(
            host.string(index, EN_US).as_deref(),
            Ok(test_class::INTERFACE_STRING)
        );

        // usb-device accepts only alt setting 0 for classes that don't handle SET_INTERFACE.
        assert_eq!(
            host.control_out(SetupPacket::set_interface(0, 0), &[]),
            Ok(())
        );
        assert_eq!(
            host.control_out(SetupPacket::set_interface(0, 1), &[]),
            Err(WireError::Stall)
        );
    });
}

#[test]
fn iso_endpoint_descriptors() {
    with_device(|host| {
        let ifaces = interfaces(&host.enumeration.config_descriptor);
        let mut iso_count = 0;
        for iface in &ifaces {
            let iso: Vec<_> = iface.5.iter().filter(|ep| ep.1 & 0x03 == 1).collect();
            if iface.1 == 0 {
                assert!(
                    iso.iter().all(|ep| ep.2 == 0),
                    "isochronous endpoint in the default setting"
                );
                // The data endpoints the loopback tests use.
                let eps: Vec<(u8, u8, u16, u8)> = iface.5.clone();
                assert_eq!(
                    eps,
                    vec![
                        (BULK_IN, 2, 64, 0),
                        (BULK_OUT, 2, 64, 0),
                        (INTERRUPT_IN, 3, 31, 1),
                        (INTERRUPT_OUT, 3, 31, 1),
                    ]
                );
            } else {
                iso_count += iso.len();
                assert!(iso.iter().all(|ep| ep.0 & 0x80 != 0 && ep.2 == 500));
            }
        }
        assert_eq!(iso_count, 1, "one isochronous endpoint in alt setting 1");
    });
}

#[test]
fn bulk_loopback() {
    with_device(|host| {
        let lens = [
            0, 1, 2, 32, 63, 64, 65, 127, 128, 129, 191, 192, 193, 255, 256,
        ];
        for (round, len) in lens.into_iter().enumerate() {
            host.bulk_loopback(len, round % 2 == 0);
        }
    });
}

#[test]
fn bulk_transfers_count_wire_bytes() {
    with_device(|host| {
        let data = host.random_data(129);
        let mut out = OutTransfer::new(BULK_OUT, data.clone(), true);
        assert_eq!(run(&mut out, &host.port, host.dev, 4), (Ok(129), 129));
        let mut inp = InTransfer::new(BULK_IN, 129);
        assert_eq!(run(&mut inp, &host.port, host.dev, 4), (Ok(data), 129));
    });
}

#[test]
fn bulk_in_babble_keeps_the_packet_queued() {
    with_device(|host| {
        let data = host.random_data(64);
        assert_eq!(host.write(BULK_OUT, &data, true), Ok(64));
        assert_eq!(host.read(BULK_IN, 10), Err(WireError::Babble));
        assert!(host.port.in_pending(BULK_IN));
        assert_eq!(host.read(BULK_IN, 64), Ok(data));
    });
}

#[test]
fn interrupt_loopback() {
    with_device(|host| {
        for len in [0, 1, 2, 15, 31] {
            let data = host.random_data(len);
            assert_eq!(
                host.write(INTERRUPT_OUT, &data, false),
                Ok(len),
                "interrupt write len {len}"
            );
            let response = host
                .read(INTERRUPT_IN, len.max(1))
                .unwrap_or_else(|e| panic!("interrupt read len {len}: {e}"));
            assert_eq!(response, data, "interrupt loopback len {len}");
        }
    });
}

#[test]
fn halted_endpoint_stalls_until_clear_feature() {
    with_device(|host| {
        for ep in [BULK_IN, BULK_OUT] {
            assert_eq!(host.control_out(SetupPacket::set_halt(ep), &[]), Ok(()));
            assert!(host.port.is_stalled(ep), "{ep:#04x} halted");
            let status = host.control_in(SetupPacket::get_endpoint_status(ep));
            assert_eq!(status, Ok(vec![1, 0]));
        }
        assert_eq!(
            host.write(BULK_OUT, &[1, 2, 3], false),
            Err(WireError::Stall)
        );
        assert_eq!(host.read(BULK_IN, 64), Err(WireError::Stall));
        assert_eq!(host.port.out(BULK_OUT, &[1]), Err(PacketError::Stall));
        // Interrupt endpoints are unaffected.
        assert_eq!(host.write(INTERRUPT_OUT, &[9], false), Ok(1));
        assert_eq!(host.read(INTERRUPT_IN, 31), Ok(vec![9]));

        for ep in [BULK_IN, BULK_OUT] {
            assert_eq!(host.control_out(SetupPacket::clear_halt(ep), &[]), Ok(()));
            assert!(!host.port.is_stalled(ep), "{ep:#04x} halt cleared");
            let status = host.control_in(SetupPacket::get_endpoint_status(ep));
            assert_eq!(status, Ok(vec![0, 0]));
        }
        host.bulk_loopback(65, true);
    });
}

#[test]
fn bus_reset_clears_state_and_device_reenumerates() {
    with_device(|host| {
        // Leave a loopback half-read: two packets still owed by the device.
        let data = host.random_data(150);
        assert_eq!(host.write(BULK_OUT, &data, true), Ok(150));
        assert_eq!(host.read(BULK_IN, 64).map(|d| d.len()), Ok(64));
        assert!(host.port.in_pending(BULK_IN));

        host.port.bus_reset();
        assert_eq!(host.port.address(), 0);
        assert!(!host.port.in_pending(BULK_IN), "reset drops queued packets");
        host.dev.poll_device();
        let config = host.control_in(SetupPacket {
            request_type: DIR_IN | RECIPIENT_DEVICE,
            request: scanemu::usb::Request::GET_CONFIGURATION,
            value: 0,
            index: 0,
            length: 1,
        });
        assert_eq!(config, Ok(vec![0]), "unconfigured after reset");

        let again = enumerate(&host.port, host.dev).expect("re-enumeration");
        assert_eq!(again, host.enumeration);
        host.bulk_loopback(100, true);
    });
}

#[test]
fn abandoned_bulk_in_leaves_next_packet_queued() {
    with_device(|host| {
        let data = host.random_data(192);
        assert_eq!(host.write(BULK_OUT, &data, true), Ok(192));
        // A 64-byte read takes only the first packet; dropping it mid-loopback loses nothing
        // else: the device's next packet waits in the endpoint buffer.
        assert_eq!(host.read(BULK_IN, 64).as_deref(), Ok(&data[..64]));
        assert!(host.port.in_pending(BULK_IN));
        assert_eq!(host.read(BULK_IN, 128).as_deref(), Ok(&data[64..]));
    });
}

#[test]
fn pending_bulk_in_keeps_partial_data_and_resumes() {
    with_device(|host| {
        let mut idle = InTransfer::new(BULK_IN, 64);
        assert_eq!(idle.step(&host.port, host.dev), StepResult::Pending);
        assert_eq!(idle.take_wire_bytes(), 0);
        assert_eq!(
            run(&mut idle, &host.port, host.dev, 3).0,
            Err(WireError::NoProgress(3))
        );
        drop(idle);

        // 128 bytes loop back as two full packets and no terminator (TestClass sends no ZLP),
        // so a 256-byte read holds 128 bytes and waits.
        let first = host.random_data(128);
        assert_eq!(host.write(BULK_OUT, &first, true), Ok(128));
        let mut transfer = InTransfer::new(BULK_IN, TESTCLASS_BUFFER);
        assert_eq!(transfer.step(&host.port, host.dev), StepResult::Pending);
        assert_eq!(transfer.take_wire_bytes(), 128);
        assert_eq!(transfer.data(), &first[..]);
        assert_eq!(transfer.step(&host.port, host.dev), StepResult::Pending);
        assert_eq!(transfer.data().len(), 128);

        // The next loopback's short packet completes it.
        let second = host.random_data(5);
        assert_eq!(host.write(BULK_OUT, &second, false), Ok(5));
        let mut expected = first.clone();
        expected.extend_from_slice(&second);
        assert_eq!(
            transfer.step(&host.port, host.dev),
            StepResult::Done(Ok(expected))
        );

        // abort() hands back what had arrived.
        assert_eq!(host.write(BULK_OUT, &first, true), Ok(128));
        let mut transfer = InTransfer::new(BULK_IN, TESTCLASS_BUFFER);
        assert_eq!(transfer.step(&host.port, host.dev), StepResult::Pending);
        assert_eq!(transfer.abort(), first);
        // The device is idle again and the pipe works.
        host.bulk_loopback(1, true);
    });
}

#[test]
fn disconnect_fails_every_token() {
    with_device(|host| {
        let data = host.random_data(10);
        assert_eq!(host.write(BULK_OUT, &data, false), Ok(10));
        host.port.disconnect();
        assert!(!host.port.is_connected());
        assert_eq!(host.read(BULK_IN, 64), Err(WireError::Disconnected));
        assert_eq!(
            host.write(BULK_OUT, &[1], false),
            Err(WireError::Disconnected)
        );
        assert_eq!(
            host.control_in(SetupPacket::get_device_descriptor(18)),
            Err(WireError::Disconnected)
        );
        assert_eq!(
            host.port
                .setup(SetupPacket::get_device_descriptor(18).to_bytes()),
            Err(PacketError::Disconnected)
        );
        assert_eq!(
            enumerate(&host.port, host.dev),
            Err(WireError::Disconnected)
        );
        // The device's queued answer never leaves it.
        assert!(host.port.in_pending(BULK_IN));
    });
}

#[test]
fn reconnect_requires_reenumeration() {
    with_device(|host| {
        host.port.disconnect();
        host.dev.poll_device();
        host.port.reconnect();
        assert_eq!(host.port.address(), 0);
        let again = enumerate(&host.port, host.dev).expect("enumeration after replug");
        assert_eq!(again, host.enumeration);
        host.bulk_loopback(70, false);
    });
}

#[test]
fn suspend_and_resume() {
    with_device(|host| {
        host.port.suspend();
        host.dev.poll_device();
        assert!(host.port.is_suspended());
        host.port.resume();
        host.dev.poll_device();
        assert!(!host.port.is_suspended());
        let config = host.control_in(SetupPacket {
            request_type: DIR_IN | RECIPIENT_DEVICE,
            request: scanemu::usb::Request::GET_CONFIGURATION,
            value: 0,
            index: 0,
            length: 1,
        });
        assert_eq!(config, Ok(vec![1]), "configuration survives suspend");
        host.bulk_loopback(3, true);
    });
}

#[test]
fn setup_packet_round_trips() {
    let setup = SetupPacket::get_string_descriptor(4, EN_US, 255);
    assert_eq!(setup.to_bytes(), [0x80, 6, 4, 3, 0x09, 0x04, 255, 0]);
    assert_eq!(SetupPacket::parse(&setup.to_bytes()), Ok(setup));
    assert!(SetupPacket::parse(&[0; 7]).is_err());
    assert_eq!(
        SetupPacket::clear_halt(0x81).to_bytes(),
        [0x02, 1, 0, 0, 0x81, 0, 0, 0]
    );
}

/// Upstream's bench_bulk_write / bench_bulk_read: 16 transfers of 64 KiB in bench mode.
fn bench(host: &mut Host, read: bool) {
    const TRANSFER_BYTES: usize = 64 * 1024;
    const TRANSFERS: usize = 16;
    host.vendor_out(test_class::REQ_SET_BENCH_ENABLED, 1, 0, &[])
        .expect("enable bench mode");
    let data = host.random_data(TRANSFER_BYTES);
    let start = std::time::Instant::now();
    let mut wire = 0;
    for _ in 0..TRANSFERS {
        if read {
            let mut t = InTransfer::new(BULK_IN, TRANSFER_BYTES);
            let (result, bytes) = run(&mut t, &host.port, host.dev, 4);
            assert_eq!(result.map(|d| d.len()), Ok(TRANSFER_BYTES));
            wire += bytes;
        } else {
            let mut t = OutTransfer::new(BULK_OUT, data.clone(), false);
            let (result, bytes) = run(&mut t, &host.port, host.dev, 4);
            assert_eq!(result, Ok(TRANSFER_BYTES));
            wire += bytes;
        }
    }
    assert_eq!(wire, (TRANSFERS * TRANSFER_BYTES) as u64);
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "bench_bulk_{}: {} x {} bytes in {:.3} s -> {:.1} MB/s",
        if read { "read" } else { "write" },
        TRANSFERS,
        TRANSFER_BYTES,
        secs,
        wire as f64 / secs / 1e6
    );
}

#[test]
fn bench_bulk_write() {
    with_device(|host| bench(host, false));
}

#[test]
fn bench_bulk_read() {
    with_device(|host| bench(host, true));
}
