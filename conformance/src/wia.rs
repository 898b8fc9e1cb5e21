//! WIA values the driver models use, with the numbers of `wiadef.h` / `wia_lh.h` /
//! `wiamindr_lh.h` / `winerror.h`.
//!
//! Sources: reference §1.3-1.9 (`mingw-w64-headers/include/wiadef.h`) for WIA 1.0;
//! `reference/wia2-stream.md` §1 for the WIA 2.0 stream transfer values ([`TransferMsg`],
//! [`TYMED_FILE`], the `WIA_MINIDRV_TRANSFER_*` flags, `WIA_STATUS_SKIP_ITEM`).

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
    /// E_POINTER: an invalid (NULL) pointer.
    pub const E_POINTER: Hresult = hr(0x8000_4003);
    /// E_UNEXPECTED: catastrophic failure; what Microsoft's WIA 2.0 sample turns unknown
    /// results into (wia2-stream §6).
    pub const E_UNEXPECTED: Hresult = hr(0x8000_FFFF);
    /// STG_E_MEDIUMFULL: the stream's medium is full (disk full).
    pub const STG_E_MEDIUMFULL: Hresult = hr(0x8003_0070);
    /// STG_E_WRITEFAULT: a disk error during a write.
    pub const STG_E_WRITEFAULT: Hresult = hr(0x8003_001D);
    /// STG_E_REVERTED: the stream object has been invalidated.
    pub const STG_E_REVERTED: Hresult = hr(0x8003_0102);
    /// WIA_ERROR_MULTI_FEED (Vista and later): the feeder pulled more than one sheet.
    pub const WIA_ERROR_MULTI_FEED: Hresult = hr(0x8021_0014);
    /// WIA_STATUS_WARMING_UP: success severity, the lamp is warming up.
    pub const WIA_STATUS_WARMING_UP: Hresult = hr(0x0021_0002);
    /// WIA_STATUS_SKIP_ITEM: success severity, the application skips the current item.
    pub const WIA_STATUS_SKIP_ITEM: Hresult = hr(0x0021_0009);
    /// WIA_STATUS_NOT_HANDLED: success severity, an error handler did not handle a status.
    pub const WIA_STATUS_NOT_HANDLED: Hresult = hr(0x0021_000A);
    /// HRESULT_FROM_WIN32(RPC_S_CALL_FAILED): the server process of a COM call died during it.
    pub const RPC_S_CALL_FAILED: Hresult = hr(0x8007_06BE);

    const NAMES: [(Hresult, &'static str); 25] = [
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
        (Self::E_POINTER, "E_POINTER"),
        (Self::E_UNEXPECTED, "E_UNEXPECTED"),
        (Self::STG_E_MEDIUMFULL, "STG_E_MEDIUMFULL"),
        (Self::STG_E_WRITEFAULT, "STG_E_WRITEFAULT"),
        (Self::STG_E_REVERTED, "STG_E_REVERTED"),
        (Self::WIA_ERROR_MULTI_FEED, "WIA_ERROR_MULTI_FEED"),
        (Self::WIA_STATUS_WARMING_UP, "WIA_STATUS_WARMING_UP"),
        (Self::WIA_STATUS_SKIP_ITEM, "WIA_STATUS_SKIP_ITEM"),
        (Self::WIA_STATUS_NOT_HANDLED, "WIA_STATUS_NOT_HANDLED"),
        (Self::RPC_S_CALL_FAILED, "RPC_S_CALL_FAILED"),
    ];

    /// True for success codes (S_OK, S_FALSE, WIA_STATUS_*): `SUCCEEDED(hr)`.
    pub const fn succeeded(self) -> bool {
        self.0 >= 0
    }

    /// True for failure codes: `FAILED(hr)`.
    pub const fn failed(self) -> bool {
        self.0 < 0
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

/// TYMED_FILE: a WIA 2.0 file transfer, one stream per item (or per page of a feeder).
pub const TYMED_FILE: i32 = 2;
/// TYMED_MULTIPAGE_FILE: a WIA 2.0 file transfer, one stream holding every page.
pub const TYMED_MULTIPAGE_FILE: i32 = 256;

/// `IWiaTransfer::Download` lFlags: WIA_TRANSFER_ACQUIRE_CHILDREN, the only IWiaTransfer flag.
pub const WIA_TRANSFER_ACQUIRE_CHILDREN: i32 = 0x0001;
/// drvAcquireItemData lFlags: the driver should transfer the children of a folder item.
pub const WIA_MINIDRV_TRANSFER_ACQUIRE_CHILDREN: i32 = 0x0001;
/// drvAcquireItemData lFlags: a stream download (the application called IWiaTransfer::Download).
pub const WIA_MINIDRV_TRANSFER_DOWNLOAD: i32 = 0x0002;
/// drvAcquireItemData lFlags: a stream upload (the application called IWiaTransfer::Upload).
pub const WIA_MINIDRV_TRANSFER_UPLOAD: i32 = 0x0004;

/// `WiaTransferParams::lMessage` (WIA_TRANSFER_MSG_*). Any LONG a driver sends is kept; the
/// known ones have names.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferMsg(pub i32);

impl TransferMsg {
    /// WIA_TRANSFER_MSG_STATUS (1): progress.
    pub const STATUS: TransferMsg = TransferMsg(1);
    /// WIA_TRANSFER_MSG_END_OF_STREAM (2): sent by the service when the driver asks for the
    /// next stream; "Drivers do not send this message manually."
    pub const END_OF_STREAM: TransferMsg = TransferMsg(2);
    /// WIA_TRANSFER_MSG_END_OF_TRANSFER (3): sent by the service after drvAcquireItemData
    /// returned; "The driver does not send this message."
    pub const END_OF_TRANSFER: TransferMsg = TransferMsg(3);
    /// WIA_TRANSFER_MSG_DEVICE_STATUS (5): a device status for the error handlers.
    pub const DEVICE_STATUS: TransferMsg = TransferMsg(5);
    /// WIA_TRANSFER_MSG_NEW_PAGE (6): a new page of a multi-page file begins.
    pub const NEW_PAGE: TransferMsg = TransferMsg(6);

    const NAMES: [(TransferMsg, &'static str); 5] = [
        (Self::STATUS, "WIA_TRANSFER_MSG_STATUS"),
        (Self::END_OF_STREAM, "WIA_TRANSFER_MSG_END_OF_STREAM"),
        (Self::END_OF_TRANSFER, "WIA_TRANSFER_MSG_END_OF_TRANSFER"),
        (Self::DEVICE_STATUS, "WIA_TRANSFER_MSG_DEVICE_STATUS"),
        (Self::NEW_PAGE, "WIA_TRANSFER_MSG_NEW_PAGE"),
    ];

    /// The wiadef.h name, if this is a known message.
    pub fn name(self) -> Option<&'static str> {
        Self::NAMES
            .iter()
            .find(|(m, _)| *m == self)
            .map(|(_, n)| *n)
    }

    /// Parses a wiadef.h name or a number (`4`, `0x4`).
    pub fn parse(s: &str) -> Option<TransferMsg> {
        if let Some((m, _)) = Self::NAMES.iter().find(|(_, n)| *n == s) {
            return Some(*m);
        }
        match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) => i32::from_str_radix(hex, 16).ok().map(TransferMsg),
            None => s.parse().ok().map(TransferMsg),
        }
    }
}

impl fmt::Display for TransferMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Debug for TransferMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for TransferMsg {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TransferMsg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TransferMsg::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown transfer message {s:?}: use a name such as WIA_TRANSFER_MSG_STATUS, or a number"
            ))
        })
    }
}

/// An `IStream` method (or `IUnknown::Release`) a driver called on an application's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StreamMethod {
    /// `IStream::Write` (`ISequentialStream`).
    Write,
    /// `IStream::Read` (`ISequentialStream`).
    Read,
    /// `IStream::Seek`.
    Seek,
    /// `IStream::SetSize`.
    SetSize,
    /// `IStream::Stat`.
    Stat,
    /// `IUnknown::Release`.
    Release,
}

impl StreamMethod {
    /// The method's name, as traces show it.
    pub const fn name(self) -> &'static str {
        match self {
            StreamMethod::Write => "Write",
            StreamMethod::Read => "Read",
            StreamMethod::Seek => "Seek",
            StreamMethod::SetSize => "SetSize",
            StreamMethod::Stat => "Stat",
            StreamMethod::Release => "Release",
        }
    }
}

/// `IStream::Seek` dwOrigin (STREAM_SEEK_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SeekOrigin {
    /// STREAM_SEEK_SET (0): from the start.
    #[serde(rename = "STREAM_SEEK_SET")]
    Set,
    /// STREAM_SEEK_CUR (1): from the current position.
    #[serde(rename = "STREAM_SEEK_CUR")]
    Cur,
    /// STREAM_SEEK_END (2): from the end.
    #[serde(rename = "STREAM_SEEK_END")]
    End,
}

impl SeekOrigin {
    /// The objidl.h value.
    pub const fn value(self) -> u32 {
        match self {
            SeekOrigin::Set => 0,
            SeekOrigin::Cur => 1,
            SeekOrigin::End => 2,
        }
    }

    /// The objidl.h name.
    pub const fn name(self) -> &'static str {
        match self {
            SeekOrigin::Set => "STREAM_SEEK_SET",
            SeekOrigin::Cur => "STREAM_SEEK_CUR",
            SeekOrigin::End => "STREAM_SEEK_END",
        }
    }
}

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
        assert!(Hresult::WIA_STATUS_SKIP_ITEM.succeeded());
        assert!(Hresult::E_POINTER.failed());
    }

    #[test]
    fn transfer_messages_have_their_wiadef_values() {
        assert_eq!(
            TransferMsg::parse("WIA_TRANSFER_MSG_NEW_PAGE"),
            Some(TransferMsg(6))
        );
        assert_eq!(TransferMsg::parse("4"), Some(TransferMsg(4)));
        assert_eq!(TransferMsg(4).to_string(), "4");
        assert_eq!(
            TransferMsg::END_OF_STREAM.to_string(),
            "WIA_TRANSFER_MSG_END_OF_STREAM"
        );
        assert_eq!(TransferMsg::parse("STATUS"), None);
    }
}
