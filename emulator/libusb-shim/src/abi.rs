//! The C structures of `libusb.h` (1.0.26/1.0.27) that callers read or fill directly, with
//! their x86-64 layouts pinned by compile-time asserts, and the safe builders that turn parsed
//! descriptors into them.
//!
//! Field names follow the header (`bLength`, ...) so a reader can hold the two side by side.
//! A parsed configuration is handed out as one allocation, [`ConfigBox`], whose first field is
//! the public `libusb_config_descriptor`; the vectors after it own what its pointers point to
//! (vectors keep their heap buffers in place when the box is built, so the pointers stay valid
//! until `libusb_free_config_descriptor` drops the box).
#![allow(non_camel_case_types, non_snake_case)]

use std::ffi::{c_int, c_short, c_uint, c_void};
use std::mem::{align_of, offset_of, size_of};
use std::ptr;

use scanemu::usb::descriptor::{AltSetting, Association, Config, Endpoint};
use scanemu::usb::descriptor_type;

/// `struct libusb_device_descriptor`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct libusb_device_descriptor {
    pub bLength: u8,
    pub bDescriptorType: u8,
    pub bcdUSB: u16,
    pub bDeviceClass: u8,
    pub bDeviceSubClass: u8,
    pub bDeviceProtocol: u8,
    pub bMaxPacketSize0: u8,
    pub idVendor: u16,
    pub idProduct: u16,
    pub bcdDevice: u16,
    pub iManufacturer: u8,
    pub iProduct: u8,
    pub iSerialNumber: u8,
    pub bNumConfigurations: u8,
}

impl libusb_device_descriptor {
    /// From the 18 wire bytes (little-endian words become host order).
    pub fn from_bytes(b: &[u8]) -> libusb_device_descriptor {
        let byte = |i: usize| b.get(i).copied().unwrap_or(0);
        let word = |i: usize| u16::from_le_bytes([byte(i), byte(i + 1)]);
        libusb_device_descriptor {
            bLength: byte(0),
            bDescriptorType: byte(1),
            bcdUSB: word(2),
            bDeviceClass: byte(4),
            bDeviceSubClass: byte(5),
            bDeviceProtocol: byte(6),
            bMaxPacketSize0: byte(7),
            idVendor: word(8),
            idProduct: word(10),
            bcdDevice: word(12),
            iManufacturer: byte(14),
            iProduct: byte(15),
            iSerialNumber: byte(16),
            bNumConfigurations: byte(17),
        }
    }
}

/// `struct libusb_endpoint_descriptor`.
#[repr(C)]
#[derive(Debug)]
pub struct libusb_endpoint_descriptor {
    pub bLength: u8,
    pub bDescriptorType: u8,
    pub bEndpointAddress: u8,
    pub bmAttributes: u8,
    pub wMaxPacketSize: u16,
    pub bInterval: u8,
    pub bRefresh: u8,
    pub bSynchAddress: u8,
    pub extra: *const u8,
    pub extra_length: c_int,
}

/// `struct libusb_interface_descriptor`.
#[repr(C)]
#[derive(Debug)]
pub struct libusb_interface_descriptor {
    pub bLength: u8,
    pub bDescriptorType: u8,
    pub bInterfaceNumber: u8,
    pub bAlternateSetting: u8,
    pub bNumEndpoints: u8,
    pub bInterfaceClass: u8,
    pub bInterfaceSubClass: u8,
    pub bInterfaceProtocol: u8,
    pub iInterface: u8,
    pub endpoint: *const libusb_endpoint_descriptor,
    pub extra: *const u8,
    pub extra_length: c_int,
}

/// `struct libusb_interface`.
#[repr(C)]
#[derive(Debug)]
pub struct libusb_interface {
    pub altsetting: *const libusb_interface_descriptor,
    pub num_altsetting: c_int,
}

/// `struct libusb_config_descriptor`.
#[repr(C)]
#[derive(Debug)]
pub struct libusb_config_descriptor {
    pub bLength: u8,
    pub bDescriptorType: u8,
    pub wTotalLength: u16,
    pub bNumInterfaces: u8,
    pub bConfigurationValue: u8,
    pub iConfiguration: u8,
    pub bmAttributes: u8,
    pub MaxPower: u8,
    pub interface: *const libusb_interface,
    pub extra: *const u8,
    pub extra_length: c_int,
}

/// `struct libusb_ss_endpoint_companion_descriptor`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct libusb_ss_endpoint_companion_descriptor {
    pub bLength: u8,
    pub bDescriptorType: u8,
    pub bMaxBurst: u8,
    pub bmAttributes: u8,
    pub wBytesPerInterval: u16,
}

/// `struct libusb_interface_association_descriptor` (1.0.27).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct libusb_interface_association_descriptor {
    pub bLength: u8,
    pub bDescriptorType: u8,
    pub bFirstInterface: u8,
    pub bInterfaceCount: u8,
    pub bFunctionClass: u8,
    pub bFunctionSubClass: u8,
    pub bFunctionProtocol: u8,
    pub iFunction: u8,
}

/// `struct libusb_interface_association_descriptor_array` (1.0.27).
#[repr(C)]
#[derive(Debug)]
pub struct libusb_interface_association_descriptor_array {
    pub iad: *const libusb_interface_association_descriptor,
    pub length: c_int,
}

/// `struct libusb_iso_packet_descriptor`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct libusb_iso_packet_descriptor {
    pub length: c_uint,
    pub actual_length: c_uint,
    pub status: c_int,
}

/// `libusb_transfer_cb_fn`.
pub type libusb_transfer_cb_fn = Option<unsafe extern "C" fn(*mut libusb_transfer)>;

/// `struct libusb_transfer`, followed in memory by `num_iso_packets` packet descriptors.
#[repr(C)]
#[derive(Debug)]
pub struct libusb_transfer {
    pub dev_handle: *mut c_void,
    pub flags: u8,
    pub endpoint: u8,
    pub r#type: u8,
    pub timeout: c_uint,
    pub status: c_int,
    pub length: c_int,
    pub actual_length: c_int,
    pub callback: libusb_transfer_cb_fn,
    pub user_data: *mut c_void,
    pub buffer: *mut u8,
    pub num_iso_packets: c_int,
    pub iso_packet_desc: [libusb_iso_packet_descriptor; 0],
}

/// `struct libusb_version`.
#[repr(C)]
#[derive(Debug)]
pub struct libusb_version {
    pub major: u16,
    pub minor: u16,
    pub micro: u16,
    pub nano: u16,
    pub rc: *const std::ffi::c_char,
    pub describe: *const std::ffi::c_char,
}

/// `struct libusb_pollfd`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct libusb_pollfd {
    pub fd: c_int,
    pub events: c_short,
}

/// `struct libusb_init_option` (1.0.27): an option and its int or log-callback value.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct libusb_init_option {
    pub option: c_int,
    pub value: usize,
}

// Layouts measured with offsetof on libusb.h 1.0.26, x86-64 (the brief, §2).
const _: () = {
    assert!(size_of::<libusb_device_descriptor>() == 18);
    assert!(align_of::<libusb_device_descriptor>() == 2);
    assert!(offset_of!(libusb_device_descriptor, idVendor) == 8);
    assert!(offset_of!(libusb_device_descriptor, bcdDevice) == 12);
    assert!(offset_of!(libusb_device_descriptor, bNumConfigurations) == 17);
    assert!(size_of::<libusb_endpoint_descriptor>() == 32);
    assert!(offset_of!(libusb_endpoint_descriptor, wMaxPacketSize) == 4);
    assert!(offset_of!(libusb_endpoint_descriptor, bSynchAddress) == 8);
    assert!(offset_of!(libusb_endpoint_descriptor, extra) == 16);
    assert!(offset_of!(libusb_endpoint_descriptor, extra_length) == 24);
    assert!(size_of::<libusb_interface_descriptor>() == 40);
    assert!(offset_of!(libusb_interface_descriptor, iInterface) == 8);
    assert!(offset_of!(libusb_interface_descriptor, endpoint) == 16);
    assert!(offset_of!(libusb_interface_descriptor, extra) == 24);
    assert!(offset_of!(libusb_interface_descriptor, extra_length) == 32);
    assert!(size_of::<libusb_interface>() == 16);
    assert!(offset_of!(libusb_interface, num_altsetting) == 8);
    assert!(size_of::<libusb_config_descriptor>() == 40);
    assert!(offset_of!(libusb_config_descriptor, wTotalLength) == 2);
    assert!(offset_of!(libusb_config_descriptor, MaxPower) == 8);
    assert!(offset_of!(libusb_config_descriptor, interface) == 16);
    assert!(offset_of!(libusb_config_descriptor, extra) == 24);
    assert!(offset_of!(libusb_config_descriptor, extra_length) == 32);
    assert!(size_of::<libusb_ss_endpoint_companion_descriptor>() == 6);
    assert!(size_of::<libusb_interface_association_descriptor>() == 8);
    assert!(size_of::<libusb_interface_association_descriptor_array>() == 16);
    assert!(size_of::<libusb_iso_packet_descriptor>() == 12);
    assert!(size_of::<libusb_transfer>() == 64);
    assert!(align_of::<libusb_transfer>() == 8);
    assert!(offset_of!(libusb_transfer, flags) == 8);
    assert!(offset_of!(libusb_transfer, endpoint) == 9);
    assert!(offset_of!(libusb_transfer, r#type) == 10);
    assert!(offset_of!(libusb_transfer, timeout) == 12);
    assert!(offset_of!(libusb_transfer, status) == 16);
    assert!(offset_of!(libusb_transfer, length) == 20);
    assert!(offset_of!(libusb_transfer, actual_length) == 24);
    assert!(offset_of!(libusb_transfer, callback) == 32);
    assert!(offset_of!(libusb_transfer, user_data) == 40);
    assert!(offset_of!(libusb_transfer, buffer) == 48);
    assert!(offset_of!(libusb_transfer, num_iso_packets) == 56);
    assert!(offset_of!(libusb_transfer, iso_packet_desc) == 60);
    assert!(size_of::<libusb_version>() == 24);
    assert!(offset_of!(libusb_version, rc) == 8);
    assert!(offset_of!(libusb_version, describe) == 16);
    assert!(size_of::<libusb_pollfd>() == 8);
    assert!(align_of::<libusb_pollfd>() == 4);
    assert!(size_of::<libusb_init_option>() == 16);
};

fn extra_ptr(extra: &[u8]) -> (*const u8, c_int) {
    if extra.is_empty() {
        (ptr::null(), 0)
    } else {
        (
            extra.as_ptr(),
            c_int::try_from(extra.len()).unwrap_or(c_int::MAX),
        )
    }
}

fn len_int(n: usize) -> c_int {
    c_int::try_from(n).unwrap_or(c_int::MAX)
}

/// A configuration descriptor as handed to C, with everything its pointers point to.
#[repr(C)]
pub struct ConfigBox {
    /// The public part; `*mut ConfigBox` and `*mut libusb_config_descriptor` are the same
    /// address.
    pub desc: libusb_config_descriptor,
    interfaces: Vec<libusb_interface>,
    altsettings: Vec<Vec<libusb_interface_descriptor>>,
    endpoints: Vec<Vec<libusb_endpoint_descriptor>>,
    extras: Vec<Vec<u8>>,
}

fn endpoint_c(e: &Endpoint, extras: &mut Vec<Vec<u8>>) -> libusb_endpoint_descriptor {
    extras.push(e.extra.clone());
    let (extra, extra_length) = extra_ptr(extras.last().map_or(&[][..], |v| v));
    libusb_endpoint_descriptor {
        bLength: e.length,
        bDescriptorType: descriptor_type::ENDPOINT,
        bEndpointAddress: e.address,
        bmAttributes: e.attributes,
        wMaxPacketSize: e.max_packet_size,
        bInterval: e.interval,
        bRefresh: e.refresh,
        bSynchAddress: e.synch_address,
        extra,
        extra_length,
    }
}

fn alt_c(
    a: &AltSetting,
    endpoints: &mut Vec<Vec<libusb_endpoint_descriptor>>,
    extras: &mut Vec<Vec<u8>>,
) -> libusb_interface_descriptor {
    let eps: Vec<_> = a.endpoints.iter().map(|e| endpoint_c(e, extras)).collect();
    let (endpoint, n) = if eps.is_empty() {
        (ptr::null(), 0)
    } else {
        (eps.as_ptr(), eps.len())
    };
    endpoints.push(eps);
    extras.push(a.extra.clone());
    let (extra, extra_length) = extra_ptr(extras.last().map_or(&[][..], |v| v));
    libusb_interface_descriptor {
        bLength: a.length,
        bDescriptorType: descriptor_type::INTERFACE,
        bInterfaceNumber: a.number,
        bAlternateSetting: a.alternate,
        // What was parsed, so walking `endpoint[0..bNumEndpoints]` stays in bounds.
        bNumEndpoints: u8::try_from(n).unwrap_or(u8::MAX),
        bInterfaceClass: a.class,
        bInterfaceSubClass: a.subclass,
        bInterfaceProtocol: a.protocol,
        iInterface: a.string_index,
        endpoint,
        extra,
        extra_length,
    }
}

impl ConfigBox {
    /// Builds the C form of `c`.
    pub fn new(c: &Config) -> Box<ConfigBox> {
        let mut extras = Vec::new();
        let mut endpoints = Vec::new();
        let mut altsettings = Vec::new();
        let mut interfaces = Vec::new();
        for i in &c.interfaces {
            let alts: Vec<_> = i
                .altsettings
                .iter()
                .map(|a| alt_c(a, &mut endpoints, &mut extras))
                .collect();
            interfaces.push(libusb_interface {
                altsetting: alts.as_ptr(),
                num_altsetting: len_int(alts.len()),
            });
            altsettings.push(alts);
        }
        extras.push(c.extra.clone());
        let (extra, extra_length) = extra_ptr(extras.last().map_or(&[][..], |v| v));
        Box::new(ConfigBox {
            desc: libusb_config_descriptor {
                bLength: c.length,
                bDescriptorType: descriptor_type::CONFIGURATION,
                wTotalLength: c.total_length,
                bNumInterfaces: u8::try_from(interfaces.len()).unwrap_or(u8::MAX),
                bConfigurationValue: c.value,
                iConfiguration: c.string_index,
                bmAttributes: c.attributes,
                MaxPower: c.max_power,
                interface: if interfaces.is_empty() {
                    ptr::null()
                } else {
                    interfaces.as_ptr()
                },
                extra,
                extra_length,
            },
            interfaces,
            altsettings,
            endpoints,
            extras,
        })
    }
}

/// An interface association array as handed to C, owning its items.
#[repr(C)]
pub struct AssociationBox {
    /// The public part (same address as the box).
    pub array: libusb_interface_association_descriptor_array,
    items: Vec<libusb_interface_association_descriptor>,
}

impl AssociationBox {
    /// Builds the C form of a configuration's associations.
    pub fn new(list: &[Association]) -> Box<AssociationBox> {
        let items: Vec<_> = list
            .iter()
            .map(|a| libusb_interface_association_descriptor {
                bLength: a.raw[0],
                bDescriptorType: a.raw[1],
                bFirstInterface: a.raw[2],
                bInterfaceCount: a.raw[3],
                bFunctionClass: a.raw[4],
                bFunctionSubClass: a.raw[5],
                bFunctionProtocol: a.raw[6],
                iFunction: a.raw[7],
            })
            .collect();
        Box::new(AssociationBox {
            array: libusb_interface_association_descriptor_array {
                iad: if items.is_empty() {
                    ptr::null()
                } else {
                    items.as_ptr()
                },
                length: len_int(items.len()),
            },
            items,
        })
    }
}

/// The pollfd array of `libusb_get_pollfds`: a NULL-terminated pointer list and its entry.
#[repr(C)]
pub struct PollfdsBox {
    /// The list handed out (first field: same address as the box).
    pub list: [*const libusb_pollfd; 2],
    /// The one entry.
    pub entry: libusb_pollfd,
}

/// `POLLIN`.
pub const POLLIN: c_short = 1;

#[cfg(test)]
mod tests {
    use super::*;
    use scanemu::usb::descriptor::parse_config;

    #[test]
    fn config_box_points_into_itself() {
        let mut b = vec![9, 2, 0, 0, 1, 1, 0, 0x80, 50];
        b.extend([9, 4, 0, 0, 2, 0xff, 0x53, 1, 0]);
        b.extend([7, 5, 0x81, 2, 0, 2, 0]);
        b.extend([5, 0x25, 1, 2, 3]);
        b.extend([7, 5, 0x02, 2, 0, 2, 0]);
        let total = b.len() as u16;
        b[2..4].copy_from_slice(&total.to_le_bytes());
        let c = parse_config(&b).unwrap();
        let boxed = ConfigBox::new(&c);
        let d = &boxed.desc;
        assert_eq!(d.bNumInterfaces, 1);
        assert_eq!(d.wTotalLength, total);
        assert!(d.extra.is_null());
        let iface = &boxed.interfaces[0];
        assert_eq!(iface.num_altsetting, 1);
        assert_eq!(iface.altsetting, boxed.altsettings[0].as_ptr());
        let alt = &boxed.altsettings[0][0];
        assert_eq!(alt.bNumEndpoints, 2);
        assert_eq!(alt.endpoint, boxed.endpoints[0].as_ptr());
        let ep = &boxed.endpoints[0][0];
        assert_eq!(ep.bEndpointAddress, 0x81);
        assert_eq!(ep.extra_length, 5);
        assert_eq!(ep.extra, boxed.extras[0].as_ptr());
    }
}
