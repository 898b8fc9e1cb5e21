//! The `device` actor's facts, typed: what a device note says beyond its kind, page and value.
//!
//! scanemu's [`NoteDetail`] carries a whole [`Fault`](scanemu::engine::Fault) (with its delays
//! and byte counts); the trace keeps what it shows, the fault's kind, so that a detail turns
//! into its text and back ([`DeviceDetail::parse`]) without loss and trace files written before
//! stay readable.

use std::fmt;

use scanemu::engine::{Fault, FaultKind};
use scanemu::personality::{AnswerAt, IdleCause, NoteDetail, NoteKind};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a device note says beyond its kind, page and value, as the trace keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceDetail {
    /// Nothing more.
    None,
    /// Words for people (a refusal's reason, a command's name); rules never match on them.
    Text(String),
    /// `band-ready`: the band, shown as `seq=S lines=A..B bytes=N`.
    Band {
        /// Band index within the job.
        seq: u64,
        /// First line of the band within the page.
        first_line: u32,
        /// Number of lines.
        lines: u32,
        /// Bytes the band carries.
        bytes: u64,
    },
    /// `fault`: the kind of fault that fired, shown by its name; ESC/I's slow ACK adds its
    /// delay (`slow-ack 200000 us`).
    Fault {
        /// Which fault.
        kind: FaultKind,
        /// The hold of a slow ACK, in microseconds.
        delay_us: Option<u64>,
    },
    /// `halted`: the endpoints the device halted, shown as `0x81,0x02`.
    Endpoints(Vec<u8>),
    /// `idle`: why the device is idle again.
    Idle(IdleCause),
    /// `ack`, `can`: where in the scan the host's byte came.
    Answer(AnswerAt),
}

impl DeviceDetail {
    /// The fault kind of a `fault` note.
    pub fn fault(&self) -> Option<FaultKind> {
        match self {
            DeviceDetail::Fault { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// Reads the text [`fmt::Display`] gives, for a note of `kind`: the note's kind says which
    /// typed detail its text holds. Text that is not one becomes [`DeviceDetail::Text`].
    pub fn parse(kind: NoteKind, text: &str) -> DeviceDetail {
        let typed = match kind {
            NoteKind::BandReady => parse_band(text),
            NoteKind::Fault => parse_fault(text),
            NoteKind::Halted => parse_endpoints(text).map(DeviceDetail::Endpoints),
            NoteKind::Idle => [
                IdleCause::HaltsCleared,
                IdleCause::HaltCleared,
                IdleCause::LastBlockSent,
            ]
            .into_iter()
            .find(|c| c.text() == text)
            .map(DeviceDetail::Idle),
            NoteKind::Ack | NoteKind::Can => {
                [AnswerAt::AfterBlock, AnswerAt::MidBlock, AnswerAt::NoScan]
                    .into_iter()
                    .find(|a| a.text() == text)
                    .map(DeviceDetail::Answer)
            }
            _ => None,
        };
        match typed {
            Some(detail) => detail,
            None if text.is_empty() => DeviceDetail::None,
            None => DeviceDetail::Text(text.to_string()),
        }
    }
}

impl From<&NoteDetail> for DeviceDetail {
    fn from(detail: &NoteDetail) -> DeviceDetail {
        match detail {
            NoteDetail::None => DeviceDetail::None,
            NoteDetail::Text(text) => DeviceDetail::Text(text.clone()),
            NoteDetail::Band(band) => DeviceDetail::Band {
                seq: band.seq,
                first_line: band.first_line,
                lines: band.lines,
                bytes: band.bytes,
            },
            NoteDetail::Fault(fault) => DeviceDetail::Fault {
                kind: fault.kind(),
                delay_us: match fault {
                    Fault::SlowAck { delay_us, .. } => Some(*delay_us),
                    _ => None,
                },
            },
            NoteDetail::Endpoints(eps) => DeviceDetail::Endpoints(eps.clone()),
            NoteDetail::Idle(cause) => DeviceDetail::Idle(*cause),
            NoteDetail::Answer(at) => DeviceDetail::Answer(*at),
        }
    }
}

impl fmt::Display for DeviceDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceDetail::None => Ok(()),
            DeviceDetail::Text(text) => f.write_str(text),
            DeviceDetail::Band {
                seq,
                first_line,
                lines,
                bytes,
            } => write!(
                f,
                "seq={seq} lines={first_line}..{} bytes={bytes}",
                first_line + lines
            ),
            DeviceDetail::Fault {
                kind,
                delay_us: Some(delay_us),
            } => write!(f, "{} {delay_us} us", kind.name()),
            DeviceDetail::Fault { kind, .. } => f.write_str(kind.name()),
            DeviceDetail::Endpoints(eps) => {
                for (i, ep) in eps.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "0x{ep:02x}")?;
                }
                Ok(())
            }
            DeviceDetail::Idle(cause) => f.write_str(cause.text()),
            DeviceDetail::Answer(at) => f.write_str(at.text()),
        }
    }
}

/// Every fault kind.
const FAULT_KINDS: [FaultKind; 13] = [
    FaultKind::Stall,
    FaultKind::Disconnect,
    FaultKind::LateBand,
    FaultKind::ShortBand,
    FaultKind::SlowAck,
    FaultKind::PaperJam,
    FaultKind::CoverOpen,
    FaultKind::CancelButton,
    FaultKind::MultiFeed,
    FaultKind::IgnoreCancel,
    FaultKind::SlowCancel,
    FaultKind::StallOnCancel,
    FaultKind::DisconnectOnCancel,
];

/// `cancel-button`, or `slow-ack 200000 us`.
fn parse_fault(text: &str) -> Option<DeviceDetail> {
    let (name, delay_us) = match text.strip_suffix(" us").and_then(|t| t.split_once(' ')) {
        Some((name, delay)) => (name, Some(delay.parse().ok()?)),
        None => (text, None),
    };
    let kind = FAULT_KINDS.into_iter().find(|k| k.name() == name)?;
    Some(DeviceDetail::Fault { kind, delay_us })
}

/// `seq=S lines=A..B bytes=N`.
fn parse_band(text: &str) -> Option<DeviceDetail> {
    let mut words = text.split(' ');
    let mut field = |key: &str| words.next()?.strip_prefix(key)?.strip_prefix('=');
    let seq = field("seq")?.parse().ok()?;
    let (from, to) = field("lines")?.split_once("..")?;
    let bytes = field("bytes")?.parse().ok()?;
    if words.next().is_some() {
        return None;
    }
    let first_line: u32 = from.parse().ok()?;
    let lines = to.parse::<u32>().ok()?.checked_sub(first_line)?;
    Some(DeviceDetail::Band {
        seq,
        first_line,
        lines,
        bytes,
    })
}

/// `0x81,0x02`.
fn parse_endpoints(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() {
        return None;
    }
    text.split(',')
        .map(|ep| u8::from_str_radix(ep.strip_prefix("0x")?, 16).ok())
        .collect()
}

/// A device event as JSON writes it: the detail as text.
#[derive(Serialize, Deserialize)]
struct NoteWire {
    what: NoteKind,
    page: u32,
    value: u64,
    detail: String,
}

pub(super) fn ser_note<S: Serializer>(
    what: &NoteKind,
    page: &u32,
    value: &u64,
    detail: &DeviceDetail,
    s: S,
) -> Result<S::Ok, S::Error> {
    NoteWire {
        what: *what,
        page: *page,
        value: *value,
        detail: detail.to_string(),
    }
    .serialize(s)
}

pub(super) fn de_note<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<(NoteKind, u32, u64, DeviceDetail), D::Error> {
    let w = NoteWire::deserialize(d)?;
    let detail = DeviceDetail::parse(w.what, &w.detail);
    Ok((w.what, w.page, w.value, detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_read_back_what_they_render() {
        let cases = [
            (NoteKind::ScanStarted, DeviceDetail::None),
            (
                NoteKind::StartRefused,
                DeviceDetail::Text("no parameters".into()),
            ),
            (NoteKind::Reset, DeviceDetail::Text("bus reset".into())),
            (
                NoteKind::BandReady,
                DeviceDetail::Band {
                    seq: 3,
                    first_line: 48,
                    lines: 16,
                    bytes: 2048,
                },
            ),
            (
                NoteKind::Fault,
                DeviceDetail::Fault {
                    kind: FaultKind::SlowAck,
                    delay_us: Some(200_000),
                },
            ),
            (NoteKind::Halted, DeviceDetail::Endpoints(vec![0x81, 0x02])),
            (NoteKind::Idle, DeviceDetail::Idle(IdleCause::HaltsCleared)),
            (NoteKind::Ack, DeviceDetail::Answer(AnswerAt::AfterBlock)),
            (NoteKind::Can, DeviceDetail::Answer(AnswerAt::MidBlock)),
        ];
        for (kind, detail) in cases {
            let text = detail.to_string();
            assert_eq!(DeviceDetail::parse(kind, &text), detail, "{kind} {text:?}");
        }
        // Exhaustive on purpose: a new fault kind or idle cause must be added to the lists here.
        let listed = |k: FaultKind| match k {
            FaultKind::Stall
            | FaultKind::Disconnect
            | FaultKind::LateBand
            | FaultKind::ShortBand
            | FaultKind::SlowAck
            | FaultKind::PaperJam
            | FaultKind::CoverOpen
            | FaultKind::CancelButton
            | FaultKind::MultiFeed
            | FaultKind::IgnoreCancel
            | FaultKind::SlowCancel
            | FaultKind::StallOnCancel
            | FaultKind::DisconnectOnCancel => FAULT_KINDS.contains(&k),
        };
        assert!(FAULT_KINDS.into_iter().all(listed));
        let _ = |c: IdleCause| match c {
            IdleCause::HaltsCleared | IdleCause::HaltCleared | IdleCause::LastBlockSent => (),
        };
        let _ = |a: AnswerAt| match a {
            AnswerAt::AfterBlock | AnswerAt::MidBlock | AnswerAt::NoScan => (),
        };
        for kind in FAULT_KINDS {
            let detail = DeviceDetail::Fault {
                kind,
                delay_us: None,
            };
            assert_eq!(DeviceDetail::parse(NoteKind::Fault, kind.name()), detail);
        }
        assert_eq!(
            DeviceDetail::parse(NoteKind::BandSent, "seq=3"),
            DeviceDetail::Text("seq=3".into())
        );
    }
}
