//! Standard USB descriptors (USB 2.0 §9.6): one walker and one parser for every part of
//! scanlab that reads them: the `scanemu info` command, the USB/IP server's device record, the
//! umockdev description, the pcap capture's endpoint intervals and the libusb stand-in.
//!
//! - [`descriptors`] walks a blob of concatenated descriptors (`bLength`, `bDescriptorType`,
//!   body), refusing a length below 2 or past the end;
//! - [`DeviceDescriptor`] reads the 18-byte device descriptor;
//! - [`parse_config`] parses a configuration descriptor into the nested shape libusb hands out
//!   (configuration → interfaces → alternate settings → endpoints), each level keeping the
//!   class- or vendor-specific descriptors that follow it as `extra`;
//! - [`decode_string`] and [`string_to_ascii`] read string descriptors.
//!
//! The grouping follows the USB 2.0 specification §9.6.5: an interface's alternate settings are
//! consecutive interface descriptors with the same `bInterfaceNumber`; every descriptor that is
//! not an interface or endpoint descriptor belongs, as `extra`, to the last one before it.
//! Descriptor type codes are usb-device's ([`descriptor_type`]).

use usb_device::descriptor::descriptor_type;

/// Why a descriptor blob could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// A descriptor's `bLength` is below 2 or runs past the end of the blob.
    #[error("descriptor at offset {offset} has bLength {length} with {left} bytes left")]
    Length {
        /// Offset of the descriptor in the blob.
        offset: usize,
        /// Its `bLength`.
        length: usize,
        /// Bytes left in the blob from that offset.
        left: usize,
    },
    /// The configuration blob is empty.
    #[error("empty configuration descriptor")]
    Empty,
    /// The blob does not start with a configuration descriptor of at least 9 bytes.
    #[error("not a configuration descriptor (type {kind}, length {length})")]
    NotConfiguration {
        /// Its `bDescriptorType`.
        kind: u8,
        /// Its `bLength`.
        length: usize,
    },
    /// An endpoint descriptor comes before any interface descriptor.
    #[error("endpoint descriptor before any interface descriptor")]
    EndpointBeforeInterface,
    /// An interface or endpoint descriptor shorter than the standard's.
    #[error("descriptor of type {kind} is only {length} bytes long")]
    Short {
        /// Its `bDescriptorType`.
        kind: u8,
        /// Its `bLength`.
        length: usize,
    },
    /// A device descriptor shorter than 18 bytes, or of another type.
    #[error("not a device descriptor (type {kind}, length {length})")]
    NotDevice {
        /// Its `bDescriptorType` (0 if absent).
        kind: u8,
        /// Its length.
        length: usize,
    },
}

/// The descriptors of `blob` in order, each with its `bLength` bytes; a descriptor whose
/// `bLength` is below 2 or runs past the end is an error, after which the walk ends.
pub fn descriptors(blob: &[u8]) -> Descriptors<'_> {
    Descriptors { blob, at: 0 }
}

/// The walk of [`descriptors`].
#[derive(Clone, Debug)]
pub struct Descriptors<'a> {
    blob: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Descriptors<'a> {
    type Item = Result<&'a [u8], DescriptorError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.blob[self.at..];
        let &len = rest.first()?;
        let len = usize::from(len);
        if len < 2 || len > rest.len() {
            let err = DescriptorError::Length {
                offset: self.at,
                length: len,
                left: rest.len(),
            };
            self.at = self.blob.len();
            return Some(Err(err));
        }
        self.at += len;
        Some(Ok(&rest[..len]))
    }
}

/// The well-formed descriptors of `blob`, up to the first malformed one: the lenient walk for
/// reading what a device reports without judging it.
pub fn walk(blob: &[u8]) -> impl Iterator<Item = &[u8]> {
    descriptors(blob).map_while(Result::ok)
}

/// A device descriptor (USB 2.0 table 9-8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceDescriptor {
    /// bcdUSB.
    pub usb_version: u16,
    /// bDeviceClass.
    pub class: u8,
    /// bDeviceSubClass.
    pub subclass: u8,
    /// bDeviceProtocol.
    pub protocol: u8,
    /// bMaxPacketSize0.
    pub max_packet_size_0: u8,
    /// idVendor.
    pub vendor_id: u16,
    /// idProduct.
    pub product_id: u16,
    /// bcdDevice.
    pub device_version: u16,
    /// iManufacturer.
    pub manufacturer_index: u8,
    /// iProduct.
    pub product_index: u8,
    /// iSerialNumber.
    pub serial_index: u8,
    /// bNumConfigurations.
    pub num_configurations: u8,
}

impl DeviceDescriptor {
    /// Parses an 18-byte device descriptor (longer blobs: the first 18 bytes).
    pub fn parse(d: &[u8]) -> Result<DeviceDescriptor, DescriptorError> {
        let kind = d.get(1).copied().unwrap_or(0);
        if d.len() < 18 || kind != descriptor_type::DEVICE {
            return Err(DescriptorError::NotDevice {
                kind,
                length: d.len(),
            });
        }
        Ok(DeviceDescriptor::read(d))
    }

    /// Reads the fields of whatever `d` holds, bytes beyond its end as 0: for a device that
    /// sent a short or odd descriptor, shown as it is.
    pub fn read(d: &[u8]) -> DeviceDescriptor {
        let byte = |at: usize| d.get(at).copied().unwrap_or(0);
        let word = |at: usize| u16::from_le_bytes([byte(at), byte(at + 1)]);
        DeviceDescriptor {
            usb_version: word(2),
            class: byte(4),
            subclass: byte(5),
            protocol: byte(6),
            max_packet_size_0: byte(7),
            vendor_id: word(8),
            product_id: word(10),
            device_version: word(12),
            manufacturer_index: byte(14),
            product_index: byte(15),
            serial_index: byte(16),
            num_configurations: byte(17),
        }
    }
}

/// An endpoint descriptor and the descriptors that follow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// bLength.
    pub length: u8,
    /// bEndpointAddress.
    pub address: u8,
    /// bmAttributes (bits 0..1: transfer type).
    pub attributes: u8,
    /// wMaxPacketSize, as on the wire (bits 11..12: extra transactions per microframe).
    pub max_packet_size: u16,
    /// bInterval.
    pub interval: u8,
    /// bRefresh (audio endpoints, 9-byte form; 0 otherwise).
    pub refresh: u8,
    /// bSynchAddress (audio endpoints, 9-byte form; 0 otherwise).
    pub synch_address: u8,
    /// Class- or vendor-specific descriptors after it.
    pub extra: Vec<u8>,
}

/// One alternate setting of an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AltSetting {
    /// bLength.
    pub length: u8,
    /// bInterfaceNumber.
    pub number: u8,
    /// bAlternateSetting.
    pub alternate: u8,
    /// bNumEndpoints as declared.
    pub num_endpoints: u8,
    /// bInterfaceClass.
    pub class: u8,
    /// bInterfaceSubClass.
    pub subclass: u8,
    /// bInterfaceProtocol.
    pub protocol: u8,
    /// iInterface.
    pub string_index: u8,
    /// Its endpoints, in order.
    pub endpoints: Vec<Endpoint>,
    /// Descriptors between it and its first endpoint.
    pub extra: Vec<u8>,
}

/// An interface: its alternate settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// The alternate settings, in the order the configuration lists them.
    pub altsettings: Vec<AltSetting>,
}

/// An interface association descriptor (USB ECN, type 11).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Association {
    /// The eight bytes as on the wire.
    pub raw: [u8; 8],
}

/// A parsed configuration descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// bLength.
    pub length: u8,
    /// wTotalLength.
    pub total_length: u16,
    /// bNumInterfaces as declared.
    pub num_interfaces: u8,
    /// bConfigurationValue.
    pub value: u8,
    /// iConfiguration.
    pub string_index: u8,
    /// bmAttributes.
    pub attributes: u8,
    /// bMaxPower (units of 2 mA, 8 mA at super speed).
    pub max_power: u8,
    /// The interfaces, in order of first appearance.
    pub interfaces: Vec<Interface>,
    /// Descriptors between the configuration descriptor and the first interface.
    pub extra: Vec<u8>,
    /// Interface association descriptors, in order.
    pub associations: Vec<Association>,
}

impl Config {
    /// The endpoint with address `ep` in any alternate setting, first match.
    pub fn endpoint(&self, ep: u8) -> Option<&Endpoint> {
        self.interfaces
            .iter()
            .flat_map(|i| &i.altsettings)
            .flat_map(|a| &a.endpoints)
            .find(|e| e.address == ep)
    }

    /// The alternate setting `alt` of interface `number`.
    pub fn altsetting(&self, number: u8, alt: u8) -> Option<&AltSetting> {
        self.interfaces
            .iter()
            .flat_map(|i| &i.altsettings)
            .find(|a| a.number == number && a.alternate == alt)
    }
}

/// The largest packet an endpoint moves per (micro)frame: `wMaxPacketSize` bits 0..10 times
/// one plus the additional transactions (bits 11..12) for isochronous and interrupt endpoints.
pub fn max_packet_bytes(ep: &Endpoint) -> u32 {
    let size = u32::from(ep.max_packet_size & 0x7ff);
    let mult = u32::from((ep.max_packet_size >> 11) & 3) + 1;
    match ep.attributes & 3 {
        1 | 3 => size * mult,
        _ => size,
    }
}

/// Parses a complete configuration descriptor (`wTotalLength` bytes).
pub fn parse_config(blob: &[u8]) -> Result<Config, DescriptorError> {
    let descs: Vec<&[u8]> = descriptors(blob).collect::<Result<_, _>>()?;
    let head = descs.first().ok_or(DescriptorError::Empty)?;
    if head[1] != descriptor_type::CONFIGURATION || head.len() < 9 {
        return Err(DescriptorError::NotConfiguration {
            kind: head[1],
            length: head.len(),
        });
    }
    let mut config = Config {
        length: head[0],
        total_length: u16::from_le_bytes([head[2], head[3]]),
        num_interfaces: head[4],
        value: head[5],
        string_index: head[6],
        attributes: head[7],
        max_power: head[8],
        interfaces: Vec::new(),
        extra: Vec::new(),
        associations: Vec::new(),
    };
    // Where the next non-standard descriptor goes.
    enum Owner {
        Config,
        Alt(usize, usize),
        Endpoint(usize, usize, usize),
    }
    let mut owner = Owner::Config;
    for d in &descs[1..] {
        match d[1] {
            descriptor_type::INTERFACE if d.len() >= 9 => {
                let alt = AltSetting {
                    length: d[0],
                    number: d[2],
                    alternate: d[3],
                    num_endpoints: d[4],
                    class: d[5],
                    subclass: d[6],
                    protocol: d[7],
                    string_index: d[8],
                    endpoints: Vec::new(),
                    extra: Vec::new(),
                };
                let i = match config
                    .interfaces
                    .iter()
                    .position(|i| i.altsettings[0].number == d[2])
                {
                    Some(i) => i,
                    None => {
                        config.interfaces.push(Interface {
                            altsettings: Vec::new(),
                        });
                        config.interfaces.len() - 1
                    }
                };
                config.interfaces[i].altsettings.push(alt);
                owner = Owner::Alt(i, config.interfaces[i].altsettings.len() - 1);
            }
            descriptor_type::ENDPOINT if d.len() >= 7 => {
                let (i, a) = match owner {
                    Owner::Alt(i, a) | Owner::Endpoint(i, a, _) => (i, a),
                    Owner::Config => return Err(DescriptorError::EndpointBeforeInterface),
                };
                let ep = Endpoint {
                    length: d[0],
                    address: d[2],
                    attributes: d[3],
                    max_packet_size: u16::from_le_bytes([d[4], d[5]]),
                    interval: d[6],
                    refresh: d.get(7).copied().unwrap_or(0),
                    synch_address: d.get(8).copied().unwrap_or(0),
                    extra: Vec::new(),
                };
                let eps = &mut config.interfaces[i].altsettings[a].endpoints;
                eps.push(ep);
                owner = Owner::Endpoint(i, a, eps.len() - 1);
            }
            descriptor_type::INTERFACE | descriptor_type::ENDPOINT => {
                return Err(DescriptorError::Short {
                    kind: d[1],
                    length: d.len(),
                })
            }
            other => {
                if other == descriptor_type::IAD && d.len() >= 8 {
                    let mut raw = [0u8; 8];
                    raw.copy_from_slice(&d[..8]);
                    config.associations.push(Association { raw });
                }
                let extra = match owner {
                    Owner::Config => &mut config.extra,
                    Owner::Alt(i, a) => &mut config.interfaces[i].altsettings[a].extra,
                    Owner::Endpoint(i, a, e) => {
                        &mut config.interfaces[i].altsettings[a].endpoints[e].extra
                    }
                };
                extra.extend_from_slice(d);
            }
        }
    }
    Ok(config)
}

/// A string descriptor's text (UTF-16LE, up to its `bLength`; unpaired surrogates become
/// U+FFFD).
pub fn decode_string(raw: &[u8]) -> String {
    let len = usize::from(raw.first().copied().unwrap_or(0)).min(raw.len());
    let units: Vec<u16> = raw
        .get(2..len)
        .unwrap_or(&[])
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// Decodes a string descriptor's UTF-16LE text to ASCII as libusb's
/// `libusb_get_string_descriptor_ascii` does: every code unit above 0x7f becomes `?`.
pub fn string_to_ascii(desc: &[u8]) -> Vec<u8> {
    desc.get(2..)
        .unwrap_or(&[])
        .chunks_exact(2)
        .map(|u| {
            if u[0] & 0x80 != 0 || u[1] != 0 {
                b'?'
            } else {
                u[0]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration with a vendor descriptor after the configuration, two alternate
    /// settings of interface 0 (the second with a class descriptor and one endpoint that has
    /// a companion-like extra), and interface 1.
    fn blob() -> Vec<u8> {
        let mut b = vec![9, 2, 0, 0, 2, 1, 0, 0x80, 50];
        b.extend([4, 0x24, 1, 2]); // config extra
        b.extend([9, 4, 0, 0, 0, 0xff, 0, 0, 0]);
        b.extend([9, 4, 0, 1, 1, 0xff, 0x53, 1, 4]);
        b.extend([3, 0x21, 7]); // alt extra
        b.extend([7, 5, 0x81, 2, 0x00, 0x02, 0]);
        b.extend([6, 0x30, 0, 0, 0, 0]); // endpoint extra
        b.extend([9, 4, 1, 0, 1, 3, 0, 0, 0]);
        b.extend([7, 5, 0x83, 3, 0x10, 0x08, 4]);
        let total = b.len() as u16;
        b[2..4].copy_from_slice(&total.to_le_bytes());
        b
    }

    #[test]
    fn nested_shape_and_extras() {
        let c = parse_config(&blob()).unwrap();
        assert_eq!(c.value, 1);
        assert_eq!(c.extra, vec![4, 0x24, 1, 2]);
        assert_eq!(c.interfaces.len(), 2);
        let i0 = &c.interfaces[0];
        assert_eq!(i0.altsettings.len(), 2);
        assert!(i0.altsettings[0].endpoints.is_empty());
        let a1 = &i0.altsettings[1];
        assert_eq!((a1.class, a1.subclass, a1.protocol), (0xff, 0x53, 1));
        assert_eq!(a1.extra, vec![3, 0x21, 7]);
        assert_eq!(a1.endpoints[0].address, 0x81);
        assert_eq!(a1.endpoints[0].max_packet_size, 512);
        assert_eq!(a1.endpoints[0].extra, vec![6, 0x30, 0, 0, 0, 0]);
        let ep = c.endpoint(0x83).unwrap();
        // 0x0810: 16 bytes, one additional transaction.
        assert_eq!(max_packet_bytes(ep), 32);
        assert_eq!(max_packet_bytes(c.endpoint(0x81).unwrap()), 512);
        assert_eq!(c.altsetting(0, 1).unwrap().string_index, 4);
    }

    #[test]
    fn broken_lengths_are_errors() {
        let mut b = blob();
        b[9] = 0;
        assert!(parse_config(&b).is_err());
        let b = blob();
        assert!(parse_config(&b[..b.len() - 1]).is_err());
        assert!(parse_config(&[]).is_err());
        assert!(parse_config(&[7, 5, 0x81, 2, 0, 2, 0]).is_err());
    }

    #[test]
    fn the_walk_stops_at_a_bad_length_and_says_where() {
        let b = blob();
        assert_eq!(walk(&b).count(), 9);
        let mut bad = b.clone();
        bad[9] = 200; // the config extra claims more bytes than are left
        let all: Vec<_> = descriptors(&bad).collect();
        assert_eq!(all.len(), 2);
        assert!(matches!(
            all[1],
            Err(DescriptorError::Length {
                offset: 9,
                length: 200,
                ..
            })
        ));
        assert_eq!(walk(&bad).count(), 1);
        assert!(matches!(
            parse_config(&bad),
            Err(DescriptorError::Length { offset: 9, .. })
        ));
        assert_eq!(descriptors(&[]).count(), 0);
    }

    #[test]
    fn device_descriptors_read_every_field() {
        let d = [
            18, 1, 0x00, 0x02, 0xff, 0, 0, 64, 0xa1, 0x5c, 0x00, 0x03, 0x01, 0x01, 1, 2, 3, 1,
        ];
        let dd = DeviceDescriptor::parse(&d).unwrap();
        assert_eq!((dd.vendor_id, dd.product_id), (0x5ca1, 0x0300));
        assert_eq!((dd.usb_version, dd.device_version), (0x0200, 0x0101));
        assert_eq!((dd.class, dd.max_packet_size_0), (0xff, 64));
        assert_eq!(
            (dd.manufacturer_index, dd.product_index, dd.serial_index),
            (1, 2, 3)
        );
        assert_eq!(dd.num_configurations, 1);
        assert!(DeviceDescriptor::parse(&d[..17]).is_err());
        assert_eq!(DeviceDescriptor::read(&d[..12]).vendor_id, 0x5ca1);
        assert_eq!(DeviceDescriptor::read(&d[..12]).device_version, 0);
    }

    #[test]
    fn strings_decode_as_utf16() {
        let d = [10, 3, b'E', 0, b'm', 0, 0xe9, 0, 0x00, 0x4e];
        assert_eq!(decode_string(&d), "Em\u{e9}\u{4e00}");
        assert_eq!(decode_string(&[4, 3, b'x', 0, b'y', 0]), "x");
        assert_eq!(decode_string(&[]), "");
    }

    #[test]
    fn strings_become_ascii_with_question_marks() {
        let d = [10, 3, b'E', 0, b'm', 0, 0xe9, 0, 0x00, 0x4e];
        assert_eq!(string_to_ascii(&d), b"Em??".to_vec());
    }
}
