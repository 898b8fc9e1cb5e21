//! The host's records as trace events: [`TraceObserver`] turns each finished transfer and each
//! device note into one typed event of the `usb` or `device` actor.
//!
//! Enumeration traffic (GET_DESCRIPTOR) is left out: it is the same in every scenario, and the
//! trace is about the scan.

use scanemu::host::{HostObserver, Setup, TransferKind, TransferRecord};
use scanemu::personality::native::protocol::Event as InterruptEvent;
use scanemu::personality::DeviceNote;
use scanemu::usb::Request as std_request;

use crate::trace::{
    crc32, Actor, ControlReply, DeviceDetail, Direction, Kind, Recorder, TransferOutcome,
};

/// Turns host transfers and device notes into trace events.
pub(crate) struct TraceObserver {
    rec: Recorder,
}

impl TraceObserver {
    /// An observer writing to `rec`.
    pub(crate) fn new(rec: Recorder) -> TraceObserver {
        TraceObserver { rec }
    }
}

/// The control event of a record, or `None` for enumeration traffic.
fn control(r: &TransferRecord<'_>, result: TransferOutcome) -> Option<Kind> {
    let setup = r.setup.unwrap_or(Setup {
        request_type: 0,
        request: 0,
        value: 0,
        index: 0,
        length: 0,
    });
    let standard = setup.request_type & 0x60 == 0;
    if standard && setup.request == std_request::GET_DESCRIPTOR {
        return None;
    }
    let (dir, reply) = match setup.is_in() {
        true if result.is_ok() => (Direction::In, ControlReply::decode(setup.request, r.data)),
        true => (Direction::In, ControlReply::None),
        false => (Direction::Out, ControlReply::None),
    };
    Some(Kind::Control {
        dir,
        request_type: setup.request_type,
        request: setup.request,
        value: setup.value,
        length: r.data.len() as u32,
        result,
        reply,
    })
}

impl HostObserver for TraceObserver {
    fn transfer(&self, r: &TransferRecord<'_>) {
        let result = TransferOutcome::of(&r.result);
        let kind = match r.kind {
            TransferKind::Control => match control(r, result) {
                Some(kind) => kind,
                None => return,
            },
            TransferKind::Bulk => Kind::Bulk {
                ep: r.ep,
                requested: r.requested as u32,
                actual: r.data.len() as u32,
                crc: crc32(r.data),
                result,
            },
            TransferKind::Interrupt => Kind::Interrupt {
                ep: r.ep,
                actual: r.data.len() as u32,
                result,
                reply: InterruptEvent::decode(r.data).ok(),
            },
            TransferKind::ClearHalt => Kind::ClearHalt { ep: r.ep, result },
            TransferKind::Reset => Kind::ResetDevice { result },
            TransferKind::Abort => Kind::Abort { ep: r.ep },
        };
        self.rec.push(r.at.total_micros(), Actor::Usb, kind);
    }

    fn device(&self, note: &DeviceNote) {
        self.rec.push(
            note.at.total_micros(),
            Actor::Device,
            Kind::Device {
                what: note.kind,
                page: u32::from(note.page),
                value: note.value,
                detail: DeviceDetail::from(&note.detail),
            },
        );
    }
}
