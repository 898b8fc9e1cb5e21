//! String descriptors in any language, as real devices answer them.
//!
//! usb-device answers GET_DESCRIPTOR(STRING, index) for the manufacturer, product and serial
//! strings only when `wIndex` is one of the configured language IDs, and STALLs otherwise.
//! Real scanners do not look at `wIndex`, and hosts rely on it: libusb programs such as
//! `sane-find-scanner` ask with language ID 0 (`libusb_get_string_descriptor_ascii` takes the
//! first language from string 0, and sanei_usb asks with 0 outright). [`AnyLanguageStrings`] is
//! a class polled before the personality: it answers those requests for a language the device
//! does not have with the first language's string, and leaves every other request to
//! usb-device (string 0, the configured language, the function's own strings, which
//! usb-device already hands over whatever the language).

use usb_device::bus::UsbBus;
use usb_device::class::{ControlIn, UsbClass};
use usb_device::control::{Recipient, Request, RequestType};
use usb_device::descriptor::descriptor_type;

/// The device's manufacturer, product and serial strings (indices 1, 2 and 3), answered in
/// every language. See the module documentation.
#[derive(Clone, Debug)]
pub struct AnyLanguageStrings {
    /// The language usb-device answers itself.
    language: u16,
    /// Strings 1, 2 and 3.
    strings: [String; 3],
}

impl AnyLanguageStrings {
    /// The strings usb-device holds for `language` (its first and only language).
    pub fn new(language: u16, manufacturer: &str, product: &str, serial: &str) -> Self {
        AnyLanguageStrings {
            language,
            strings: [
                manufacturer.to_string(),
                product.to_string(),
                serial.to_string(),
            ],
        }
    }

    /// The string descriptor (`bLength`, `STRING`, UTF-16LE) of string `index`, if it is one
    /// of the three.
    fn descriptor(&self, index: u8) -> Option<Vec<u8>> {
        let text = self.strings.get(usize::from(index).checked_sub(1)?)?;
        let mut out = vec![0, descriptor_type::STRING];
        for unit in text.encode_utf16() {
            out.extend_from_slice(&unit.to_le_bytes());
        }
        // A descriptor's length is one byte: a longer string is cut, as usb-device does.
        out.truncate(254);
        out[0] = out.len() as u8;
        Some(out)
    }
}

impl<B: UsbBus> UsbClass<B> for AnyLanguageStrings {
    fn control_in(&mut self, xfer: ControlIn<B>) {
        let req = *xfer.request();
        if req.request_type != RequestType::Standard
            || req.recipient != Recipient::Device
            || req.request != Request::GET_DESCRIPTOR
            || req.index == self.language
        {
            return;
        }
        let (kind, index) = req.descriptor_type_index();
        if kind != descriptor_type::STRING {
            return;
        }
        if let Some(bytes) = self.descriptor(index) {
            let n = bytes.len().min(usize::from(req.length));
            // An error only means the host already gave up on the transfer.
            let _ = xfer.accept_with(&bytes[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_utf16_with_their_length() {
        let s = AnyLanguageStrings::new(0x0409, "scanlab", "é", "");
        assert_eq!(
            s.descriptor(1).unwrap(),
            [16, 3, b's', 0, b'c', 0, b'a', 0, b'n', 0, b'l', 0, b'a', 0, b'b', 0]
        );
        assert_eq!(s.descriptor(2).unwrap(), [4, 3, 0xe9, 0]);
        assert_eq!(s.descriptor(3).unwrap(), [2, 3]);
        assert_eq!(s.descriptor(0), None);
        assert_eq!(s.descriptor(4), None);
        let long = AnyLanguageStrings::new(0x0409, &"x".repeat(300), "", "");
        assert_eq!(long.descriptor(1).unwrap()[0], 254);
    }
}
