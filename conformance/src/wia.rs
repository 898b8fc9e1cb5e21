//! WIA 1.0 values the driver model uses, with the numbers of `wiadef.h` / `winerror.h`.
//!
//! Sources: reference §1.3-1.9 (`mingw-w64-headers/include/wiadef.h`).

use core::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A COM result code. `S_FALSE` is a *success* code: `FAILED(hr)` misses a cancel.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hresult(pub i32);

const fn hr(v: u32) -> Hresult {
    Hresult(v as i32)
}

impl Hresult {
    /// Success.
    pub const S_OK: Hresult = hr(0);
    /// Success, but cancelled (WIA: "If the transfer was canceled, the method should return S_FALSE").
    pub const S_FALSE: Hresult = hr(1);
    /// Unspecified failure.
    pub const E_FAIL: Hresult = hr(0x8000_4005);
    /// Operation aborted.
    pub const E_ABORT: Hresult = hr(0x8000_4004);
    /// Out of memory.
    pub const E_OUTOFMEMORY: Hresult = hr(0x8007_000E);
    /// Invalid argument.
    pub const E_INVALIDARG: Hresult = hr(0x8007_0057);
    /// WIA_ERROR_GENERAL_ERROR.
    pub const WIA_ERROR_GENERAL_ERROR: Hresult = hr(0x8021_0001);
    /// WIA_ERROR_PAPER_JAM.
    pub const WIA_ERROR_PAPER_JAM: Hresult = hr(0x8021_0002);
    /// WIA_ERROR_PAPER_EMPTY.
    pub const WIA_ERROR_PAPER_EMPTY: Hresult = hr(0x8021_0003);
    /// WIA_ERROR_OFFLINE.
    pub const WIA_ERROR_OFFLINE: Hresult = hr(0x8021_0005);
    /// WIA_ERROR_BUSY.
    pub const WIA_ERROR_BUSY: Hresult = hr(0x8021_0006);
    /// WIA_ERROR_DEVICE_COMMUNICATION.
    pub const WIA_ERROR_DEVICE_COMMUNICATION: Hresult = hr(0x8021_000A);
    /// WIA_ERROR_INVALID_COMMAND.
    pub const WIA_ERROR_INVALID_COMMAND: Hresult = hr(0x8021_000B);
    /// WIA_ERROR_COVER_OPEN (header arithmetic value; reference §1.9).
    pub const WIA_ERROR_COVER_OPEN: Hresult = hr(0x8021_0010);
    /// WIA_STATUS_END_OF_MEDIA: success severity, the feeder ran out after at least one page.
    pub const WIA_STATUS_END_OF_MEDIA: Hresult = hr(0x0021_0001);

    const NAMES: [(Hresult, &'static str); 15] = [
        (Self::S_OK, "S_OK"),
        (Self::S_FALSE, "S_FALSE"),
        (Self::E_FAIL, "E_FAIL"),
        (Self::E_ABORT, "E_ABORT"),
        (Self::E_OUTOFMEMORY, "E_OUTOFMEMORY"),
        (Self::E_INVALIDARG, "E_INVALIDARG"),
        (Self::WIA_ERROR_GENERAL_ERROR, "WIA_ERROR_GENERAL_ERROR"),
        (Self::WIA_ERROR_PAPER_JAM, "WIA_ERROR_PAPER_JAM"),
        (Self::WIA_ERROR_PAPER_EMPTY, "WIA_ERROR_PAPER_EMPTY"),
        (Self::WIA_ERROR_OFFLINE, "WIA_ERROR_OFFLINE"),
        (Self::WIA_ERROR_BUSY, "WIA_ERROR_BUSY"),
        (
            Self::WIA_ERROR_DEVICE_COMMUNICATION,
            "WIA_ERROR_DEVICE_COMMUNICATION",
        ),
        (Self::WIA_ERROR_INVALID_COMMAND, "WIA_ERROR_INVALID_COMMAND"),
        (Self::WIA_ERROR_COVER_OPEN, "WIA_ERROR_COVER_OPEN"),
        (Self::WIA_STATUS_END_OF_MEDIA, "WIA_STATUS_END_OF_MEDIA"),
    ];

    /// True for success codes (S_OK, S_FALSE, WIA_STATUS_*): `SUCCEEDED(hr)`.
    pub const fn succeeded(self) -> bool {
        self.0 >= 0
    }

    /// The symbolic name, if this is a known code.
    pub fn name(self) -> Option<&'static str> {
        Self::NAMES
            .iter()
            .find(|(h, _)| *h == self)
            .map(|(_, n)| *n)
    }

    /// Parses a symbolic name or a hex value such as `0x80004005`.
    pub fn parse(s: &str) -> Option<Hresult> {
        if let Some((h, _)) = Self::NAMES.iter().find(|(_, n)| *n == s) {
            return Some(*h);
        }
        let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
        u32::from_str_radix(hex, 16).ok().map(hr)
    }
}

impl fmt::Display for Hresult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "0x{:08X}", self.0 as u32),
        }
    }
}

impl fmt::Debug for Hresult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Hresult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Hresult {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Hresult::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown HRESULT {s:?}: use a name such as S_FALSE or E_FAIL, or hex like 0x80004005"
            ))
        })
    }
}

/// lMessage / lReason of a callback (IT_MSG_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ItMsg {
    /// 0x0001: header before data.
    #[serde(rename = "IT_MSG_DATA_HEADER")]
    DataHeader,
    /// 0x0002: a band of data.
    #[serde(rename = "IT_MSG_DATA")]
    Data,
    /// 0x0003: status only.
    #[serde(rename = "IT_MSG_STATUS")]
    Status,
    /// 0x0004: transfer complete.
    #[serde(rename = "IT_MSG_TERMINATION")]
    Termination,
    /// 0x0005: a new page begins.
    #[serde(rename = "IT_MSG_NEW_PAGE")]
    NewPage,
    /// 0x0008: device status changed (Vista and later).
    #[serde(rename = "IT_MSG_DEVICE_STATUS")]
    DeviceStatus,
}

impl ItMsg {
    /// The wiadef.h value.
    pub const fn value(self) -> i32 {
        match self {
            ItMsg::DataHeader => 0x0001,
            ItMsg::Data => 0x0002,
            ItMsg::Status => 0x0003,
            ItMsg::Termination => 0x0004,
            ItMsg::NewPage => 0x0005,
            ItMsg::DeviceStatus => 0x0008,
        }
    }

    /// The wiadef.h name.
    pub const fn name(self) -> &'static str {
        match self {
            ItMsg::DataHeader => "IT_MSG_DATA_HEADER",
            ItMsg::Data => "IT_MSG_DATA",
            ItMsg::Status => "IT_MSG_STATUS",
            ItMsg::Termination => "IT_MSG_TERMINATION",
            ItMsg::NewPage => "IT_MSG_NEW_PAGE",
            ItMsg::DeviceStatus => "IT_MSG_DEVICE_STATUS",
        }
    }
}

/// IT_STATUS_TRANSFER_FROM_DEVICE: data coming from the device.
pub const IT_STATUS_TRANSFER_FROM_DEVICE: i32 = 0x0001;
/// IT_STATUS_PROCESSING_DATA: data being processed.
pub const IT_STATUS_PROCESSING_DATA: i32 = 0x0002;
/// IT_STATUS_TRANSFER_TO_CLIENT: data going to the client's buffer.
pub const IT_STATUS_TRANSFER_TO_CLIENT: i32 = 0x0004;

/// TYMED_CALLBACK: banded memory transfer.
pub const TYMED_CALLBACK: i32 = 128;
/// TYMED_MULTIPAGE_CALLBACK: banded memory transfer of several pages.
pub const TYMED_MULTIPAGE_CALLBACK: i32 = 512;

/// WIA_EVENT_CANCEL_IO = {C860F7B8-9CCD-41EA-BBBF-4DD09C5B1795}.
pub const WIA_EVENT_CANCEL_IO: &str = "{C860F7B8-9CCD-41EA-BBBF-4DD09C5B1795}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_round_trip() {
        assert_eq!(Hresult::E_FAIL.0 as u32, 0x8000_4005);
        assert!(Hresult::S_FALSE.succeeded());
        assert!(!Hresult::E_FAIL.succeeded());
        for (h, n) in Hresult::NAMES {
            assert_eq!(Hresult::parse(n), Some(h));
            assert_eq!(h.to_string(), n);
        }
        assert_eq!(
            Hresult::parse("0x80070005").unwrap().to_string(),
            "0x80070005"
        );
        assert_eq!(Hresult::parse("S_MAYBE"), None);
    }
}
