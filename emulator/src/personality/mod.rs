//! What the device speaks: the USB functions (personalities) that sit on the scan engine.
//!
//! [`native`] is the project's own protocol (`emulator/PROTOCOL.md`); [`esci`] is Epson's ESC/I
//! (`emulator/PROTOCOL-ESCI.md`), which Debian's epson2 backend drives unmodified.
//!
//! Both implement [`Personality`], the one interface the device (`device::Device`) drives a
//! function through. [`strings`] is polled before either: it answers string requests in any
//! language, as real devices do.
//!
//! Whatever it speaks, a device tells what it did as [`DeviceNote`]s: a typed [`NoteKind`] with
//! its page, a number and a [`NoteDetail`]. Hosts hand them to their
//! `HostObserver` (`host` module), and traces and recordings keep them. The notes are
//! listed, with what their fields mean, in `emulator/DEVICE-NOTES.md`; a test keeps that table
//! and [`NoteKind::ALL`] equal.

pub mod esci;
pub mod native;
pub mod strings;

use std::fmt;

use usb_device::bus::UsbBus;
use usb_device::class::UsbClass;

use crate::engine::{Band, EventKind, Fault, ScanEngine};
use crate::time::Instant;
use crate::usb::bus::{EndpointSet, FlushFifo};

/// The size of the FIFO an IN endpoint gets when its function queues packets back to back
/// ([`Personality::multi_packet_in`]): a 64 KiB read, the usual size, is one burst.
pub const MULTI_PACKET_FIFO_BYTES: usize = 64 * 1024;

/// A USB function that is a scanner: what the device (`device::Device`) needs of a
/// personality, whatever protocol it speaks.
///
/// A personality is firmware on usb-device's `UsbBus` (`B`) and owns its [`ScanEngine`]. The
/// device drives it in this order on every poll at time `now`:
///
/// 1. [`set_now`](Personality::set_now), then usb-device polls [`class`](Personality::class);
/// 2. [`pump`](Personality::pump) runs the engine up to `now` and feeds the IN endpoints;
/// 3. the IN FIFOs of [`take_flush_requests`](Personality::take_flush_requests) are flushed
///    ([`FlushFifo::flush_in`]) and, if there were any, `pump` runs again;
/// 4. the OUT endpoints of [`nak_out`](Personality::nak_out) are NAKed
///    ([`FlushFifo::set_out_nak`]), the others released;
/// 5. [`observe_halts`](Personality::observe_halts) sees which endpoints are still halted;
/// 6. [`wants_disconnect`](Personality::wants_disconnect) and
///    [`take_notes`](Personality::take_notes) report what happened.
///
/// [`poll_at`](Personality::poll_at) says when the next poll is due if no host traffic comes.
pub trait Personality<B: UsbBus + FlushFifo> {
    /// The function as the class usb-device polls.
    fn class(&mut self) -> &mut dyn UsbClass<B>;

    /// `bDeviceClass` of the device descriptor (0: the class is given per interface).
    fn device_class(&self) -> u8;

    /// The scan engine.
    fn engine(&self) -> &ScanEngine;

    /// The scan engine (for faults and the image source).
    fn engine_mut(&mut self) -> &mut ScanEngine;

    /// Sets the time the next poll and requests happen at.
    fn set_now(&mut self, now: Instant);

    /// When the function next needs a poll, if ever (the engine's next event, or a hold of its
    /// own running out).
    fn poll_at(&self) -> Option<Instant>;

    /// Runs the engine up to now and keeps the IN endpoints fed. Called after every
    /// `UsbDevice::poll`.
    fn pump(&mut self);

    /// IN FIFOs to flush now (each request is reported once): the packet queued there belongs
    /// to a cancelled transfer or an earlier job.
    fn take_flush_requests(&mut self) -> EndpointSet;

    /// OUT endpoints whose packets the function refuses (NAKs) for now. Default: none.
    fn nak_out(&self) -> EndpointSet {
        EndpointSet::EMPTY
    }

    /// IN endpoints on which the function queues packets for as long as `write` accepts them
    /// and takes `endpoint_in_complete` to mean "every packet queued was taken": the device
    /// gives each a multi-packet FIFO ([`FlushFifo::set_in_depth`]) when it is built. Asked
    /// once. Default: none, every IN endpoint holds one packet.
    fn multi_packet_in(&self) -> EndpointSet {
        EndpointSet::EMPTY
    }

    /// Tells the function which endpoints are still halted (`is_stalled`), after every poll,
    /// so it sees the host clear the halts it set.
    fn observe_halts(&mut self, is_stalled: &dyn Fn(u8) -> bool);

    /// True once a fault made the device want to drop off the bus.
    fn wants_disconnect(&self) -> bool;

    /// Moves the notes written since the last call to the end of `into`.
    fn take_notes(&mut self, into: &mut Vec<DeviceNote>);
}

/// Packet sizes of the endpoints a personality allocates (a profile's `usb` settings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointSizes {
    /// Max packet size of the bulk endpoints.
    pub bulk_max_packet: u16,
    /// Max packet size of an interrupt IN endpoint.
    pub interrupt_max_packet: u16,
    /// `bInterval` of an interrupt IN endpoint.
    pub interrupt_interval: u8,
}

/// Something the device did, for traces and recordings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceNote {
    /// When it happened (the engine's scheduled time, or the request's time).
    pub at: Instant,
    /// What happened.
    pub kind: NoteKind,
    /// Page concerned (0 when the note is about no page).
    pub page: u16,
    /// Band index, endpoint, count: what it counts depends on `kind` (see [`NoteKind`]).
    pub value: u64,
    /// What else the note says.
    pub detail: NoteDetail,
}

impl DeviceNote {
    /// A note with page and value 0 and no detail.
    pub fn new(at: Instant, kind: NoteKind) -> DeviceNote {
        DeviceNote {
            at,
            kind,
            page: 0,
            value: 0,
            detail: NoteDetail::None,
        }
    }
}

macro_rules! note_kinds {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)*) => {
        /// The kind of a [`DeviceNote`]: one variant per note any personality, the device or a
        /// replay writes. [`NoteKind::name`] is the stable kebab-case name traces and
        /// recordings spell it with (and serde reads and writes).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum NoteKind {
            $($(#[doc = $doc])* $variant,)*
        }

        impl NoteKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [NoteKind] = &[$(NoteKind::$variant,)*];

            /// The stable kebab-case name (`motor-stopped`).
            pub const fn name(self) -> &'static str {
                match self {
                    $(NoteKind::$variant => $name,)*
                }
            }
        }
    };
}

note_kinds! {
    // ---- the scan engine, for both personalities ----
    /// A job was accepted; the lamp warms up. Value: the native job id (ESC/I: 0).
    ScanStarted = "scan-started",
    /// Warm-up is over; the first page starts.
    WarmupDone = "warmup-done",
    /// A band is in the device buffer. Page, value: the band's page and index within it;
    /// detail: [`NoteDetail::Band`].
    BandReady = "band-ready",
    /// The last band of a page was produced. Page: that page.
    PageEnd = "page-end",
    /// ADF: the next sheet is in place. Page: its page.
    PageFeed = "page-feed",
    /// ADF: the job wanted another page and the tray is empty. Page, value: pages scanned.
    FeederEmpty = "feeder-empty",
    /// The host has taken every band of the job. Page, value: pages scanned.
    ScanComplete = "scan-complete",
    /// A host cancel was accepted. Value: microseconds until the motor stops.
    CancelRequested = "cancel-requested",
    /// A host cancel was ignored (the `ignore_cancel` fault); scanning goes on.
    CancelIgnored = "cancel-ignored",
    /// The motor stopped after a host cancel; the device is idle. Value: bands discarded.
    MotorStopped = "motor-stopped",
    /// The device buffer is full; production pauses.
    BufferFull = "buffer-full",
    /// The host took a band; production resumes.
    Resumed = "resumed",
    // ---- either personality ----
    /// An injected fault fired. Page, value: its position (0 for the cancel faults; ESC/I's
    /// slow ACK: the block); detail: [`NoteDetail::Fault`].
    Fault = "fault",
    /// The device halted bulk endpoints (a device-side abort); detail:
    /// [`NoteDetail::Endpoints`].
    Halted = "halted",
    /// The host cleared the halt of an endpoint. Value: the endpoint address.
    HaltCleared = "halt-cleared",
    /// The device is idle again after a halt or a finished ESC/I scan; detail:
    /// [`NoteDetail::Idle`].
    Idle = "idle",
    /// A Device Reset request (no detail) or a bus reset (detail `bus reset`).
    Reset = "reset",
    /// A request to set parameters or start a scan was refused; detail: why, in words.
    StartRefused = "start-refused",
    // ---- the native personality ----
    /// A band's last packet was taken by the host. Page, value: the band's page and index;
    /// detail `seq=N`.
    BandSent = "band-sent",
    /// The host has taken the last band of a job that ended without error.
    Drained = "drained",
    // ---- the device ----
    /// The device left the bus (a `disconnect` fault).
    Disconnected = "disconnected",
    // ---- the ESC/I personality ----
    /// A two-byte command arrived. Value: its letter byte; detail: its name (`FS W`).
    Command = "command",
    /// A command's parameter block was accepted. Value: the command letter; detail: the name
    /// and the decoded parameters.
    Param = "param",
    /// The device answered NAK. Value: the unknown byte, or 0; detail: what was refused, why.
    NakSent = "nak-sent",
    /// A scan started. Value: blocks to send; detail: lines per block and bytes per line.
    BlocksPlanned = "blocks-planned",
    /// A block went out. Page: its page; value: block number from 0; detail: bytes and status.
    BlockSent = "block-sent",
    /// The host sent ACK. Value: blocks sent so far; detail: [`NoteDetail::Answer`].
    Ack = "ack",
    /// The host sent CAN. Value: blocks sent so far; detail: [`NoteDetail::Answer`].
    Can = "can",
    /// A command arrived in the middle of a scan, which the device stopped to serve it.
    /// Value: blocks sent; detail: when, and the engine's answer to the cancel.
    ScanAbandoned = "scan-abandoned",
    /// A start waits for the motor to stop after a cancel.
    StartDeferred = "start-deferred",
    // ---- a replayed recording (`capture::replay`) ----
    /// The host's request differs from the recording; detail: expected and received.
    ReplayDivergence = "replay-divergence",
    /// A cancel the recording does not hold was answered by the replay; detail: how.
    ReplayCancel = "replay-cancel",
    /// A request came after the recording's end on its endpoint: it NAKs until its timeout or
    /// abort (once per endpoint); detail: the endpoint and the request.
    ReplayEnd = "replay-end",
}

impl NoteKind {
    /// The kind named `name` ([`NoteKind::name`]), if there is one.
    pub fn from_name(name: &str) -> Option<NoteKind> {
        NoteKind::ALL.iter().copied().find(|k| k.name() == name)
    }
}

impl fmt::Display for NoteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is no [`NoteKind`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown device note `{0}`")]
pub struct UnknownNote(pub String);

impl std::str::FromStr for NoteKind {
    type Err = UnknownNote;

    fn from_str(s: &str) -> Result<NoteKind, UnknownNote> {
        NoteKind::from_name(s).ok_or_else(|| UnknownNote(s.to_string()))
    }
}

impl serde::Serialize for NoteKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for NoteKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<NoteKind, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// What a [`DeviceNote`] says beyond its kind, page and value. [`fmt::Display`] gives the text
/// traces show (empty for [`NoteDetail::None`]); the typed variants carry the facts that rules
/// look at, [`NoteDetail::Text`] carries words that are only shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoteDetail {
    /// Nothing more.
    None,
    /// Words for people (a refusal's reason, a command's name); never matched on.
    Text(String),
    /// `band-ready`: the band, shown as `seq=S lines=A..B bytes=N`.
    Band(Band),
    /// `fault`: the fault that fired, shown by its name (`cancel-button`); ESC/I's slow ACK,
    /// noted when the hold starts, adds its delay (`slow-ack 200000 us`).
    Fault(Fault),
    /// `halted`: the endpoints the device halted, shown as `0x81,0x02`.
    Endpoints(Vec<u8>),
    /// `idle`: why the device is idle again.
    Idle(IdleCause),
    /// `ack`, `can`: where in the scan the host's byte came.
    Answer(AnswerAt),
}

impl NoteDetail {
    /// The fault of a `fault` note.
    pub fn fault(&self) -> Option<Fault> {
        match self {
            NoteDetail::Fault(f) => Some(*f),
            _ => None,
        }
    }
}

impl From<String> for NoteDetail {
    fn from(text: String) -> NoteDetail {
        NoteDetail::Text(text)
    }
}

impl From<&str> for NoteDetail {
    fn from(text: &str) -> NoteDetail {
        NoteDetail::Text(text.to_string())
    }
}

impl fmt::Display for NoteDetail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoteDetail::None => Ok(()),
            NoteDetail::Text(text) => f.write_str(text),
            NoteDetail::Band(band) => write!(
                f,
                "seq={} lines={}..{} bytes={}",
                band.seq,
                band.first_line,
                band.first_line + band.lines,
                band.bytes
            ),
            NoteDetail::Fault(Fault::SlowAck { delay_us, .. }) => {
                write!(f, "slow-ack {delay_us} us")
            }
            NoteDetail::Fault(fault) => f.write_str(fault.name()),
            NoteDetail::Endpoints(eps) => {
                for (i, ep) in eps.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "0x{ep:02x}")?;
                }
                Ok(())
            }
            NoteDetail::Idle(cause) => f.write_str(cause.text()),
            NoteDetail::Answer(at) => f.write_str(at.text()),
        }
    }
}

/// Why the device noted `idle`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdleCause {
    /// Native: the host cleared both halted bulk endpoints (`both halts cleared`).
    HaltsCleared,
    /// ESC/I: the host cleared the halt of bulk IN (`halt cleared`).
    HaltCleared,
    /// ESC/I: the last block of the scan went out, which the host does not acknowledge
    /// (`last block sent`): the scan completed.
    LastBlockSent,
}

impl IdleCause {
    /// The words traces show.
    pub const fn text(self) -> &'static str {
        match self {
            IdleCause::HaltsCleared => "both halts cleared",
            IdleCause::HaltCleared => "halt cleared",
            IdleCause::LastBlockSent => "last block sent",
        }
    }
}

/// Where in an ESC/I scan the host's ACK or CAN came.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnswerAt {
    /// After a whole block, as the protocol asks (shown as nothing).
    AfterBlock,
    /// While a block was still being sent (`mid-block`): an ACK is ignored, a CAN still aborts.
    MidBlock,
    /// With no scan running (`no scan running`): nothing to acknowledge or abort.
    NoScan,
}

impl AnswerAt {
    /// The words traces show.
    pub const fn text(self) -> &'static str {
        match self {
            AnswerAt::AfterBlock => "",
            AnswerAt::MidBlock => "mid-block",
            AnswerAt::NoScan => "no scan running",
        }
    }
}

/// The note an engine event is written as, for every personality: `None` for faults, which
/// each function notes itself with what it did about them. `job` is the value of
/// `scan-started`.
pub(crate) fn engine_note(at: Instant, kind: &EventKind, job: u64) -> Option<DeviceNote> {
    let note = |kind, page, value, detail| DeviceNote {
        at,
        kind,
        page,
        value,
        detail,
    };
    let none = NoteDetail::None;
    Some(match *kind {
        EventKind::ScanStarted => note(NoteKind::ScanStarted, 0, job, none),
        EventKind::WarmupDone => note(NoteKind::WarmupDone, 0, 0, none),
        EventKind::BandReady(band) => note(
            NoteKind::BandReady,
            band.page,
            u64::from(band.index),
            NoteDetail::Band(band),
        ),
        EventKind::PageEnd { page } => note(NoteKind::PageEnd, page, 0, none),
        EventKind::PageFeed { page } => note(NoteKind::PageFeed, page, 0, none),
        EventKind::FeederEmpty { pages_scanned } => note(
            NoteKind::FeederEmpty,
            pages_scanned,
            u64::from(pages_scanned),
            none,
        ),
        EventKind::ScanComplete { pages } => {
            note(NoteKind::ScanComplete, pages, u64::from(pages), none)
        }
        EventKind::CancelRequested { motor_stop_us } => {
            note(NoteKind::CancelRequested, 0, motor_stop_us, none)
        }
        EventKind::CancelIgnored => note(NoteKind::CancelIgnored, 0, 0, none),
        EventKind::MotorStopped { bands_discarded } => {
            note(NoteKind::MotorStopped, 0, u64::from(bands_discarded), none)
        }
        EventKind::BufferFull => note(NoteKind::BufferFull, 0, 0, none),
        EventKind::Resumed => note(NoteKind::Resumed, 0, 0, none),
        EventKind::Fault(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The note names `emulator/DEVICE-NOTES.md`'s table lists: the first column of every row
    /// whose first cell is one back-quoted name.
    fn documented() -> Vec<String> {
        include_str!("../../DEVICE-NOTES.md")
            .lines()
            .filter_map(|line| {
                let cell = line.strip_prefix("| `")?;
                let (name, rest) = cell.split_once('`')?;
                rest.trim_start().starts_with('|').then(|| name.to_string())
            })
            .collect()
    }

    #[test]
    fn every_note_kind_is_documented_and_every_documented_note_exists() {
        let doc = documented();
        let missing: Vec<&str> = NoteKind::ALL
            .iter()
            .map(|k| k.name())
            .filter(|n| !doc.iter().any(|d| d == n))
            .collect();
        assert!(
            missing.is_empty(),
            "DEVICE-NOTES.md lacks {missing:?}: add a row for each"
        );
        let unknown: Vec<&String> = doc
            .iter()
            .filter(|d| NoteKind::from_name(d).is_none())
            .collect();
        assert!(
            unknown.is_empty(),
            "DEVICE-NOTES.md names {unknown:?}, which no NoteKind is"
        );
        let mut sorted = doc.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), doc.len(), "a note is listed twice");
    }

    #[test]
    fn names_are_unique_kebab_case_and_serde_round_trips() {
        for (i, kind) in NoteKind::ALL.iter().enumerate() {
            let name = kind.name();
            assert!(
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{name}"
            );
            assert!(
                NoteKind::ALL[..i].iter().all(|k| k.name() != name),
                "{name} twice"
            );
            let json = serde_json::to_string(kind).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<NoteKind>(&json).unwrap(), *kind);
            assert_eq!(name.parse::<NoteKind>(), Ok(*kind));
        }
        let err = serde_json::from_str::<NoteKind>("\"motor-started\"").unwrap_err();
        assert!(err
            .to_string()
            .contains("unknown device note `motor-started`"));
    }

    #[test]
    fn details_render_as_traces_spell_them() {
        let band = Band {
            page: 0,
            index: 2,
            seq: 2,
            first_line: 32,
            lines: 16,
            bytes: 2048,
        };
        let cases = [
            (NoteDetail::None, ""),
            (NoteDetail::Band(band), "seq=2 lines=32..48 bytes=2048"),
            (
                NoteDetail::Fault(Fault::CancelButton { page: 0, band: 1 }),
                "cancel-button",
            ),
            (
                NoteDetail::Fault(Fault::SlowAck {
                    page: 0,
                    band: 1,
                    delay_us: 200_000,
                }),
                "slow-ack 200000 us",
            ),
            (NoteDetail::Endpoints(vec![0x81, 0x02]), "0x81,0x02"),
            (
                NoteDetail::Idle(IdleCause::LastBlockSent),
                "last block sent",
            ),
            (NoteDetail::Answer(AnswerAt::AfterBlock), ""),
            (NoteDetail::Answer(AnswerAt::NoScan), "no scan running"),
            (NoteDetail::from("bus reset"), "bus reset"),
        ];
        for (detail, text) in cases {
            assert_eq!(detail.to_string(), text, "{detail:?}");
        }
    }
}
