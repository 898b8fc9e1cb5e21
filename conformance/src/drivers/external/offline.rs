//! The runner's checks on a driver's side of an exchange, replayed without a process, a device
//! or a clock: for the fuzz target of the protocol and for tests.
//!
//! [`replay_driver_lines`] reads the lines one driver wrote in one run and applies to each what
//! the runner would: the line parsed and checked ([`super::parse_driver_message`]'s checks),
//! the turn rules (`turns`), and for version 2 the bookkeeping of submitted transfers
//! (`inflight`). The runner's answers are modelled, not sent: a `wait` is answered by the
//! oldest submitted transfer, which completes then; a `cancel` ends its transfer at once; a
//! `result` ends the acquisition and the next line begins the next one. Notify exchanges are
//! not modelled (their rules are the same checks in another phase).

use std::rc::Rc;

use async_trait::async_trait;
use scanemu::host::TransferError;
use scanemu::time::Instant;

use super::inflight::InFlight;
use super::protocol::{hresult_from_wire, it_msg, payload, Contract, FromDriver};
use super::turns::{self, Phase};
use super::{ExternalConfig, Fault, PROTOCOL_VERSIONS};
use crate::driver::{Completion, RunContext, Urb, UsbRequest};

/// A context whose submitted transfers complete only when the replay says so.
#[derive(Default)]
struct Offline {
    seq: std::cell::Cell<u64>,
}

#[async_trait(?Send)]
impl RunContext for Offline {
    fn now(&self) -> Instant {
        Instant::ZERO
    }

    fn log(&self, _text: &str) {}

    fn fault(&self, _what: &str) {}

    fn submit(&self, request: UsbRequest) -> Urb {
        self.seq.set(self.seq.get() + 1);
        let urb = Urb::new(self.seq.get(), request.queue());
        urb.set_canceller(Box::new(|urb: &Urb| {
            urb.complete(Completion {
                result: Err(TransferError::Cancelled { actual: 0 }),
                data: Vec::new(),
                at: Instant::ZERO,
            })
        }));
        urb
    }

    async fn first_completed(&self, urbs: &[Urb]) -> Option<usize> {
        (!urbs.is_empty()).then_some(0)
    }
}

/// The first line of a replay that the runner would not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{fault}")]
pub struct RefusedLine {
    /// Which line it is, counted from 1.
    pub line: usize,
    /// The one-line text the runner's `driver-fault` event would carry.
    pub fault: String,
}

/// Replays `lines` (each without its `\n`) as one driver's side of a run; see the module
/// documentation. Returns how many messages the runner accepted, or the first it would not.
pub fn replay_driver_lines<'a>(
    lines: impl IntoIterator<Item = &'a [u8]>,
) -> Result<usize, RefusedLine> {
    let config = ExternalConfig::default();
    let run = Rc::new(Offline::default());
    let mut version = None;
    let mut inflight = InFlight::new(config.max_in_flight);
    let mut accepted = 0;
    for line in lines {
        replay_one(line, &mut version, &mut inflight, run.as_ref(), &config).map_err(|f| {
            RefusedLine {
                line: accepted + 1,
                fault: f.to_string(),
            }
        })?;
        accepted += 1;
    }
    Ok(accepted)
}

fn replay_one(
    line: &[u8],
    version: &mut Option<(u32, Contract)>,
    inflight: &mut InFlight,
    run: &Offline,
    config: &ExternalConfig,
) -> Result<(), Fault> {
    super::parse_driver_message(line)?;
    let msg: FromDriver = serde_json::from_slice(line).map_err(|e| Fault::Garbage {
        after: "acquire",
        error: e.to_string(),
        start: String::new(),
    })?;
    let Some((v, contract)) = *version else {
        turns::check(&msg, Phase::Hello, PROTOCOL_VERSIONS[0], Contract::Wia)?;
        if let FromDriver::Hello {
            protocol, contract, ..
        } = msg
        {
            if !PROTOCOL_VERSIONS.contains(&protocol) {
                return Err(Fault::Version(protocol));
            }
            let contract = match contract {
                None => Contract::Wia,
                Some(c) => Contract::from_name(&c).ok_or(Fault::UnknownContract { chose: c })?,
            };
            *version = Some((protocol, contract));
        }
        return Ok(());
    };
    turns::check(&msg, Phase::Acquire, v, contract)?;
    match msg {
        FromDriver::Result { hr } => {
            hresult_from_wire(hr)?;
        }
        FromDriver::Callback { reason, data, .. } => {
            it_msg(reason)?;
            payload("callback", &data)?;
        }
        // WIA 2.0: the fields were checked with the line; which streams exist is known to a
        // run only.
        FromDriver::GetNextStream { .. }
        | FromDriver::SendMessage { .. }
        | FromDriver::Stream { .. }
        | FromDriver::Release { .. } => {}
        FromDriver::Submit { id, request } => {
            let request = request.to_request(config.max_line_bytes)?;
            inflight.submit(id, request, run)?;
        }
        FromDriver::Cancel { id } => {
            if let Some(urb) = inflight.to_cancel(id)? {
                urb.cancel();
            }
        }
        FromDriver::Wait {} => {
            let urbs = inflight.waitable()?;
            let first = urbs
                .iter()
                .find(|u| u.is_complete())
                .unwrap_or(&urbs[0])
                .clone();
            first.complete(Completion {
                result: Ok(0),
                data: Vec::new(),
                at: Instant::ZERO,
            });
            inflight.deliver(&first);
        }
        request => {
            if let Some(id) = request.id() {
                inflight.check_blocking(request.name(), id, request.queue())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(lines: &[&str]) -> Result<usize, String> {
        replay_driver_lines(lines.iter().map(|l| l.as_bytes())).map_err(|e| {
            assert_eq!(e.line, lines.len(), "the refused line is the last given");
            e.fault
        })
    }

    const HELLO_2: &str = r#"{"type":"hello","protocol":2,"name":"t","version":"1","capabilities":{"async_cancel":true}}"#;
    const READ_1: &str =
        r#"{"type":"submit","id":1,"transfer":"bulk_in","ep":129,"length":512,"timeout_us":0}"#;

    #[test]
    fn a_read_ahead_exchange_is_accepted() {
        let lines = [
            HELLO_2,
            READ_1,
            r#"{"type":"submit","id":2,"transfer":"bulk_in","ep":129,"length":512,"timeout_us":0}"#,
            r#"{"type":"control_in","id":3,"request_type":193,"request":103,"value":0,"index":0,"length":8,"timeout_us":1000}"#,
            r#"{"type":"wait"}"#,
            r#"{"type":"cancel","id":2}"#,
            r#"{"type":"wait"}"#,
            r#"{"type":"result","hr":1}"#,
        ];
        assert_eq!(replay(&lines), Ok(lines.len()));
    }

    #[test]
    fn a_wia2_exchange_is_accepted_and_the_other_contract_refused() {
        let hello = r#"{"type":"hello","protocol":1,"contract":"wia2","name":"t","version":"1","capabilities":{"acquire_children":true}}"#;
        let lines = [
            hello,
            r#"{"type":"get_next_stream","item_name":"Flatbed","full_item_name":"0000\\Root\\Flatbed"}"#,
            r#"{"type":"stream","stream":1,"op":"seek","offset":0,"origin":2}"#,
            r#"{"type":"stream","stream":1,"op":"write","data":"UDUK"}"#,
            r#"{"type":"send_message","msg":1,"percent":100,"bytes":3,"status":0}"#,
            r#"{"type":"release","stream":1}"#,
            r#"{"type":"result","hr":0}"#,
        ];
        assert_eq!(replay(&lines), Ok(lines.len()));
        assert_eq!(
            replay(&[
                hello,
                r#"{"type":"callback","reason":2,"status":4,"percent":1,"offset":0,"length":0}"#
            ]),
            Err(
                "protocol: callback needs the wia contract; the driver chose wia2 in its hello"
                    .into()
            )
        );
        assert_eq!(
            replay(&[
                hello,
                r#"{"type":"stream","stream":1,"op":"seek","offset":0,"origin":9}"#
            ]),
            Err("protocol: stream seek origin 9 is no STREAM_SEEK_* (0 SET, 1 CUR, 2 END)".into())
        );
        let wia = HELLO_2.replace("\"protocol\":2", "\"protocol\":1");
        assert_eq!(
            replay(&[&wia, r#"{"type":"release","stream":1}"#]),
            Err(
                "protocol: release needs the wia2 contract; the driver chose wia in its hello"
                    .into()
            )
        );
    }

    #[test]
    fn the_first_misuse_is_named() {
        assert_eq!(
            replay(&[
                HELLO_2,
                READ_1,
                r#"{"type":"wait"}"#,
                r#"{"type":"cancel","id":1}"#
            ]),
            Err(
                "protocol: cancel of id 1: that transfer completed and its done was delivered \
                 already"
                    .into()
            )
        );
        let hello_1 = HELLO_2.replace("\"protocol\":2", "\"protocol\":1");
        assert_eq!(
            replay(&[&hello_1, READ_1]),
            Err(
                "protocol: submit needs protocol version 2; the driver chose 1 in its hello".into()
            )
        );
        assert!(replay(&[READ_1])
            .unwrap_err()
            .contains("where the answer to hello was due"));
    }
}
