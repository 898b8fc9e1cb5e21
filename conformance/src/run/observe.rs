//! The host's records as trace events: [`TraceObserver`] turns each finished transfer and each
//! device note into one event of the `usb` or `device` actor.
//!
//! Enumeration traffic (GET_DESCRIPTOR) is left out: it is the same in every scenario, and the
//! trace is about the scan.

use scanemu::host::{HostObserver, Setup, TransferError, TransferKind, TransferRecord};
use scanemu::personality::native::protocol::{self, DeviceStatus, ScanStatus};
use scanemu::personality::DeviceNote;
use scanemu::usb::hc::request as std_request;

use crate::trace::{crc32, Actor, Kind, Recorder};

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

fn result_name(r: &Result<(), TransferError>) -> String {
    use TransferError as E;
    match r {
        Ok(()) => "ok".into(),
        Err(E::Stall) => "stall".into(),
        Err(E::Timeout { .. }) => "timeout".into(),
        Err(E::Cancelled { .. }) => "cancelled".into(),
        Err(E::NoDevice) => "no-device".into(),
        Err(E::Overflow) => "overflow".into(),
        Err(E::Io(_)) => "io-error".into(),
    }
}

/// Symbolic name of a control request.
fn request_name(request_type: u8, request: u8) -> String {
    let kind = request_type & 0x60;
    if kind == 0 {
        return match request {
            std_request::GET_STATUS => "GET_STATUS",
            std_request::CLEAR_FEATURE => "CLEAR_FEATURE",
            std_request::SET_FEATURE => "SET_FEATURE",
            std_request::SET_ADDRESS => "SET_ADDRESS",
            std_request::GET_DESCRIPTOR => "GET_DESCRIPTOR",
            std_request::SET_CONFIGURATION => "SET_CONFIGURATION",
            _ => "STANDARD",
        }
        .into();
    }
    match request {
        protocol::REQ_GET_CAPABILITIES => "GET_CAPABILITIES",
        protocol::REQ_SET_PARAMS => "SET_PARAMS",
        protocol::REQ_GET_PARAMS => "GET_PARAMS",
        protocol::REQ_START_SCAN => "START_SCAN",
        protocol::REQ_GET_SCAN_STATUS => "GET_SCAN_STATUS",
        protocol::REQ_CANCEL => "CANCEL",
        protocol::REQ_DEVICE_RESET => "DEVICE_RESET",
        protocol::REQ_GET_DEVICE_STATUS => "GET_DEVICE_STATUS",
        _ => return format!("0x{request:02X}"),
    }
    .into()
}

/// A short decoding of a control reply, for the trace.
fn describe_reply(request: u8, data: &[u8]) -> String {
    match request {
        protocol::REQ_GET_DEVICE_STATUS => match DeviceStatus::decode(data) {
            Ok(st) => {
                let word = match st.code {
                    protocol::STATUS_OK => "ok",
                    protocol::STATUS_BUSY => "busy",
                    protocol::STATUS_TRANSACTION_CANCELLED => "cancelled",
                    _ => "unknown",
                };
                let mut s = format!("0x{:04x} {word}", st.code);
                if !st.halted.is_empty() {
                    let eps: Vec<String> = st.halted.iter().map(|e| format!("0x{e:02x}")).collect();
                    s.push_str(&format!(" halted={}", eps.join(",")));
                }
                s
            }
            Err(e) => e.to_string(),
        },
        protocol::REQ_GET_SCAN_STATUS => match ScanStatus::decode(data) {
            Ok(st) => format!(
                "state={} error={} bands_sent={}",
                st.state.name(),
                st.error.name(),
                st.bands_sent
            ),
            Err(e) => e.to_string(),
        },
        _ => String::new(),
    }
}

impl HostObserver for TraceObserver {
    fn transfer(&self, r: &TransferRecord<'_>) {
        let at = r.at.total_micros();
        let kind = match r.kind {
            TransferKind::Control => {
                let setup = r.setup.unwrap_or(Setup {
                    request_type: 0,
                    request: 0,
                    value: 0,
                    index: 0,
                    length: 0,
                });
                let vendor = setup.request_type & 0x60 != 0;
                if !vendor && setup.request == std_request::GET_DESCRIPTOR {
                    return;
                }
                Kind::Control {
                    dir: if setup.is_in() { "in" } else { "out" }.into(),
                    request_type: setup.request_type,
                    request: setup.request,
                    name: request_name(setup.request_type, setup.request),
                    value: setup.value,
                    length: r.data.len() as u32,
                    result: result_name(&r.result),
                    reply: if setup.is_in() && r.result.is_ok() {
                        describe_reply(setup.request, r.data)
                    } else {
                        String::new()
                    },
                }
            }
            TransferKind::Bulk => Kind::Bulk {
                ep: r.ep,
                requested: r.requested as u32,
                actual: r.data.len() as u32,
                crc: crc32(r.data),
                result: result_name(&r.result),
            },
            TransferKind::Interrupt => Kind::Interrupt {
                ep: r.ep,
                actual: r.data.len() as u32,
                result: result_name(&r.result),
                reply: protocol::Event::decode(r.data)
                    .map(|e| {
                        format!(
                            "{:?} arg={} page={} value={}",
                            e.code, e.arg, e.page, e.value
                        )
                    })
                    .unwrap_or_default(),
            },
            TransferKind::ClearHalt => Kind::ClearHalt {
                ep: r.ep,
                result: result_name(&r.result),
            },
            TransferKind::Reset => Kind::ResetDevice {
                result: result_name(&r.result),
            },
            TransferKind::Abort => Kind::Abort { ep: r.ep },
        };
        self.rec.push(at, Actor::Usb, kind);
    }

    fn device(&self, note: &DeviceNote) {
        self.rec.push(
            note.at.total_micros(),
            Actor::Device,
            Kind::Device {
                what: note.kind.name().to_string(),
                page: u32::from(note.page),
                value: note.value,
                detail: note.detail.to_string(),
            },
        );
    }
}
