//! The trace's list of events against `conformance/TRACE.md`, and trace files read back byte for
//! byte.

use scanemu::engine::FaultKind;
use scanemu::personality::native::protocol::{self, DeviceStatus, EventCode};

use super::*;

/// Where in [`samples`] each kind sits. No wildcard: a new kind must get its place, and then a
/// sample and a row in TRACE.md.
fn ordinal(kind: &Kind) -> usize {
    match kind {
        Kind::Acquire { .. } => 0,
        Kind::BandedCallback { .. } => 1,
        Kind::CancelPendingIo { .. } => 2,
        Kind::AcquireDone { .. } => 3,
        Kind::DrvAcquireItemData { .. } => 4,
        Kind::Callback { .. } => 5,
        Kind::NotifyCancelIo {} => 6,
        Kind::AcquireReturn { .. } => 7,
        Kind::Log { .. } => 8,
        Kind::DriverFault { .. } => 9,
        Kind::Control { .. } => 10,
        Kind::Bulk { .. } => 11,
        Kind::Interrupt { .. } => 12,
        Kind::ClearHalt { .. } => 13,
        Kind::ResetDevice { .. } => 14,
        Kind::Abort { .. } => 15,
        Kind::Device { .. } => 16,
        Kind::Note { .. } => 17,
        Kind::Download { .. } => 18,
        Kind::Upload { .. } => 19,
        Kind::TransferCallback { .. } => 20,
        Kind::AppGetNextStream { .. } => 21,
        Kind::Cancel { .. } => 22,
        Kind::ReportStatus { .. } => 23,
        Kind::AppSeek { .. } => 24,
        Kind::TransferDone { .. } => 25,
        Kind::DrvAcquireItemData2 { .. } => 26,
        Kind::GetNextStream { .. } => 27,
        Kind::SendMessage { .. } => 28,
        Kind::StreamEnd { .. } => 29,
        Kind::ServiceRestart {} => 30,
        Kind::Stream { .. } => 31,
        Kind::PeerTransfer { .. } => 32,
    }
}

/// One event of every kind, with the actor that records it, in [`ordinal`] order.
fn samples() -> Vec<(Actor, Kind)> {
    vec![
        (
            Actor::App,
            Kind::Acquire {
                n: 1,
                tymed: 128,
                buffer: 2048,
            },
        ),
        (
            Actor::App,
            Kind::BandedCallback {
                msg: ItMsg::Data,
                percent: 12,
                result: Hresult::S_FALSE,
            },
        ),
        (Actor::App, Kind::CancelPendingIo { n: 1 }),
        (
            Actor::App,
            Kind::AcquireDone {
                n: 1,
                hr: Hresult::S_FALSE,
                bytes: 2048,
            },
        ),
        (Actor::Service, Kind::DrvAcquireItemData { n: 1 }),
        (
            Actor::Service,
            Kind::Callback {
                msg: ItMsg::Data,
                status: 4,
                percent: 12,
                offset: 0,
                length: 2048,
                carried: Some(2000),
                page: 0,
                crc: 1,
                expect_crc: 1,
                result: Hresult::S_OK,
                sticky: false,
            },
        ),
        (Actor::Service, Kind::NotifyCancelIo {}),
        (
            Actor::Driver,
            Kind::AcquireReturn {
                n: 1,
                hr: Hresult::S_FALSE,
                pending: 0,
            },
        ),
        (
            Actor::Driver,
            Kind::Log {
                text: "a line".into(),
            },
        ),
        (
            Actor::Driver,
            Kind::DriverFault {
                what: "hang".into(),
            },
        ),
        (
            Actor::Usb,
            Kind::Control {
                dir: Direction::In,
                request_type: 0xC1,
                request: protocol::REQ_GET_DEVICE_STATUS,
                value: 0,
                length: 8,
                result: TransferOutcome::Ok,
                reply: ControlReply::DeviceStatus(DeviceStatus {
                    code: protocol::STATUS_TRANSACTION_CANCELLED,
                    halted: vec![0x81, 0x02],
                }),
            },
        ),
        (
            Actor::Usb,
            Kind::Bulk {
                ep: 0x81,
                requested: 3072,
                actual: 2048,
                crc: 7,
                result: TransferOutcome::Ok,
            },
        ),
        (
            Actor::Usb,
            Kind::Interrupt {
                ep: 0x83,
                actual: 8,
                result: TransferOutcome::Ok,
                reply: Some(InterruptEvent {
                    code: EventCode::BandReady,
                    arg: 0,
                    page: 0,
                    value: 3,
                }),
            },
        ),
        (
            Actor::Usb,
            Kind::ClearHalt {
                ep: 0x81,
                result: TransferOutcome::Stall,
            },
        ),
        (
            Actor::Usb,
            Kind::ResetDevice {
                result: TransferOutcome::NoDevice,
            },
        ),
        (Actor::Usb, Kind::Abort { ep: 0x81 }),
        (
            Actor::Device,
            Kind::Device {
                what: NoteKind::Fault,
                page: 0,
                value: 2,
                detail: DeviceDetail::Fault {
                    kind: FaultKind::CancelButton,
                    delay_us: None,
                },
            },
        ),
        (
            Actor::App,
            Kind::Note {
                text: "step 1 not fired".into(),
            },
        ),
        (
            Actor::App,
            Kind::Download {
                n: 1,
                item: "Feeder".into(),
                flags: 0,
                tymed: 2,
                format: "pnm".into(),
            },
        ),
        (
            Actor::App,
            Kind::Upload {
                n: 2,
                item: "Flatbed".into(),
                stream: 3,
                bytes: 5000,
            },
        ),
        (
            Actor::App,
            Kind::TransferCallback {
                msg: TransferMsg::STATUS,
                percent: 40,
                bytes: 4096,
                status: Hresult::S_OK,
                result: Hresult::WIA_STATUS_SKIP_ITEM,
            },
        ),
        (
            Actor::App,
            Kind::AppGetNextStream {
                item: "Feeder".into(),
                result: Hresult::S_OK,
                stream: 1,
                size: 0,
            },
        ),
        (Actor::App, Kind::Cancel { n: 1 }),
        (
            Actor::App,
            Kind::ReportStatus {
                status: Hresult::WIA_STATUS_WARMING_UP,
                result: Hresult::WIA_STATUS_NOT_HANDLED,
            },
        ),
        (Actor::App, Kind::AppSeek { stream: 1, pos: 0 }),
        (
            Actor::App,
            Kind::TransferDone {
                n: 1,
                hr: Hresult::S_FALSE,
                bytes: 4096,
            },
        ),
        (
            Actor::Service,
            Kind::DrvAcquireItemData2 {
                n: 1,
                item: "Feeder".into(),
                flags: 2,
            },
        ),
        (
            Actor::Service,
            Kind::GetNextStream {
                item: "Feeder".into(),
                full_item: "0000\\Root\\Feeder".into(),
                result: Hresult::S_OK,
                stream: 1,
                expect_size: 8192,
                sticky: false,
            },
        ),
        (
            Actor::Service,
            Kind::SendMessage {
                msg: TransferMsg::NEW_PAGE,
                percent: 50,
                bytes: 8192,
                status: Hresult::S_OK,
                result: Hresult::S_FALSE,
                sticky: true,
            },
        ),
        (
            Actor::Service,
            Kind::StreamEnd {
                stream: 1,
                size: 8192,
                crc: 5,
                expect_size: 8192,
                expect_crc: 5,
            },
        ),
        (Actor::Service, Kind::ServiceRestart {}),
        (
            Actor::Driver,
            Kind::Stream {
                stream: 1,
                op: StreamMethod::Seek,
                pos: 4096,
                arg: 0,
                origin: Some(SeekOrigin::End),
                actual: 8192,
                crc: 0,
                expect_crc: 0,
                result: Hresult::S_OK,
            },
        ),
        (
            Actor::Service,
            Kind::PeerTransfer {
                n: 1,
                hr: Hresult::S_OK,
                bytes: 4109,
                whole: true,
            },
        ),
    ]
}

#[test]
fn samples_hold_every_kind_once() {
    let ordinals: Vec<usize> = samples().iter().map(|(_, k)| ordinal(k)).collect();
    assert_eq!(ordinals, (0..ordinals.len()).collect::<Vec<_>>());
}

/// One row of TRACE.md's event table.
#[derive(Debug, PartialEq, Eq)]
struct Row {
    event: String,
    actor: String,
    fields: Vec<String>,
}

/// The rows of the table under `## Events` in TRACE.md.
fn documented() -> Vec<Row> {
    let text = include_str!("../../TRACE.md");
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Events"))
        .expect("TRACE.md has an Events section");
    let backquoted = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };
    section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.strip_prefix('|')?.split('|').map(str::trim).collect();
            let event = cells.first()?.strip_prefix('`')?.strip_suffix('`')?;
            Some(Row {
                event: event.to_string(),
                actor: cells.get(1)?.to_string(),
                fields: backquoted(cells.get(2)?),
            })
        })
        .collect()
}

/// The row an event's JSON gives.
fn row_of(actor: Actor, kind: &Kind) -> Row {
    let value = serde_json::to_value(kind).expect("an event serializes");
    Row {
        event: value["event"].as_str().expect("a name").to_string(),
        actor: actor.name().to_string(),
        fields: value["fields"]
            .as_object()
            .expect("fields")
            .keys()
            .cloned()
            .collect(),
    }
}

#[test]
fn every_documented_event_exists_and_every_event_is_documented() {
    let doc = documented();
    let code: Vec<Row> = samples().iter().map(|(a, k)| row_of(*a, k)).collect();
    for row in &code {
        assert!(
            doc.contains(row),
            "TRACE.md lacks {row:?} (or gives it another actor or other fields)"
        );
    }
    for row in &doc {
        assert!(
            code.iter().any(|c| c.event == row.event),
            "TRACE.md names event `{}`, which trace::Kind does not have",
            row.event
        );
    }
    assert_eq!(doc.len(), code.len(), "TRACE.md lists an event twice");
}

#[test]
fn every_sample_reads_back_as_itself() {
    for (actor, kind) in samples() {
        let t = Trace {
            events: vec![Event {
                at_us: 5,
                actor,
                kind,
            }],
        };
        let text = t.to_json_lines();
        assert_eq!(
            Trace::from_json_lines(&text).expect("it parses"),
            t,
            "{text}"
        );
    }
}

/// Traces kept with the recordings were written before the trace was typed: they read back
/// and write out byte for byte.
#[test]
fn recorded_traces_read_back_byte_for_byte() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/recordings");
    let mut read = 0;
    for entry in std::fs::read_dir(&dir).expect("fixtures/recordings") {
        let path = entry.expect("an entry").path().join("trace.jsonl");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let trace = Trace::from_json_lines(&text).expect("a recorded trace parses");
        assert_eq!(trace.to_json_lines(), text, "{}", path.display());
        read += 1;
    }
    assert!(read > 0, "no recorded trace under {}", dir.display());
}

#[test]
fn a_control_reply_that_does_not_fit_its_request_is_refused() {
    let line = r#"{"at_us":1,"actor":"usb","event":"control","fields":{"dir":"in","request_type":193,"request":103,"name":"GET_DEVICE_STATUS","value":0,"length":4,"result":"ok","reply":"state=idle error=none bands_sent=0"}}"#;
    let e = Trace::from_json_lines(line).expect_err("a scan status is no device status");
    assert_eq!(e.line, 1);
}
