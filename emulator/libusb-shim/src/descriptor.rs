//! Standard USB descriptors: the raw blobs a device returns, parsed into the nested shape
//! libusb hands out (configuration → interfaces → alternate settings → endpoints), each level
//! keeping the class- or vendor-specific descriptors that follow it as `extra`.
//!
//! The grouping follows the USB 2.0 specification §9.6.5: an interface's alternate settings are
//! consecutive interface descriptors with the same `bInterfaceNumber`; every descriptor that is
//! not an interface or endpoint descriptor belongs, as `extra`, to the last one before it.

/// Descriptor type codes (USB 2.0 table 9-5).
pub mod dt {
    /// DEVICE.
    pub const DEVICE: u8 = 1;
    /// CONFIGURATION.
    pub const CONFIG: u8 = 2;
    /// STRING.
    pub const STRING: u8 = 3;
    /// INTERFACE.
    pub const INTERFACE: u8 = 4;
    /// ENDPOINT.
    pub const ENDPOINT: u8 = 5;
    /// INTERFACE ASSOCIATION.
    pub const INTERFACE_ASSOCIATION: u8 = 11;
}

/// Why a descriptor blob could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescriptorError(pub String);

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

/// Splits a blob into descriptors (`bLength`, `bDescriptorType`, body), refusing a length
/// that is below 2 or runs past the end.
fn split(blob: &[u8]) -> Result<Vec<&[u8]>, DescriptorError> {
    let mut out = Vec::new();
    let mut rest = blob;
    while !rest.is_empty() {
        let len = usize::from(rest[0]);
        if len < 2 || len > rest.len() {
            return Err(DescriptorError(format!(
                "descriptor at offset {} has bLength {len} with {} bytes left",
                blob.len() - rest.len(),
                rest.len()
            )));
        }
        out.push(&rest[..len]);
        rest = &rest[len..];
    }
    Ok(out)
}

/// Parses a complete configuration descriptor (`wTotalLength` bytes).
pub fn parse_config(blob: &[u8]) -> Result<Config, DescriptorError> {
    let descs = split(blob)?;
    let head = descs
        .first()
        .ok_or_else(|| DescriptorError("empty configuration descriptor".into()))?;
    if head[1] != dt::CONFIG || head.len() < 9 {
        return Err(DescriptorError(format!(
            "not a configuration descriptor (type {}, length {})",
            head[1],
            head.len()
        )));
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
            dt::INTERFACE if d.len() >= 9 => {
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
            dt::ENDPOINT if d.len() >= 7 => {
                let (i, a) = match owner {
                    Owner::Alt(i, a) | Owner::Endpoint(i, a, _) => (i, a),
                    Owner::Config => {
                        return Err(DescriptorError(
                            "endpoint descriptor before any interface descriptor".into(),
                        ))
                    }
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
            dt::INTERFACE | dt::ENDPOINT => {
                return Err(DescriptorError(format!(
                    "descriptor of type {} is only {} bytes long",
                    d[1],
                    d.len()
                )))
            }
            other => {
                if other == dt::INTERFACE_ASSOCIATION && d.len() >= 8 {
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
    fn strings_become_ascii_with_question_marks() {
        let d = [10, 3, b'E', 0, b'm', 0, 0xe9, 0, 0x00, 0x4e];
        assert_eq!(string_to_ascii(&d), b"Em??".to_vec());
    }
}
