//! The turn rules: which message a driver may write at which point of the exchange, in the
//! protocol version and the contract it chose (DRIVER-PROTOCOL.md, "Turns" and "The WIA 2.0
//! contract").
//!
//! The runner reads a driver's line in one of three phases: the answer to `hello`, the
//! driver's turn during `drvAcquireItemData`, and the handling of a `notify`. [`check`] decides,
//! before the runner acts on a message, whether it may come there; everything else about a
//! message (its fields, the transfers it names) is checked where it is acted on. A new protocol
//! version that adds messages says here where they may come.

use super::protocol::{Contract, FromDriver};
use super::Fault;

/// Where the runner is in the exchange when it reads a driver's line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// The driver's `hello` is due.
    Hello,
    /// During `drvAcquireItemData`: the driver owns the turn.
    Acquire,
    /// Handling a `notify` (drvNotifyPnPEvent, which must not block).
    Notify,
}

/// Where [`Fault::OutOfTurn`] happened, as its text says it.
pub(super) const WHERE_HELLO: &str = "where the answer to hello was due";
pub(super) const DURING_ACQUIRE: &str = "out of turn during drvAcquireItemData";
pub(super) const NOT_A_REQUEST: &str = "is not a USB request";
pub(super) const DURING_NOTIFY: &str = "while handling notify (drvNotifyPnPEvent must not block: \
     only abort_endpoint, now and, in protocol 2, cancel, then notify_done)";

/// Checks that `msg` may come in `phase` from a driver speaking protocol `version` under
/// `contract`: a message of the other contract (`callback` from a WIA 2.0 driver,
/// `get_next_stream` from a WIA 1.0 one) is refused wherever it comes.
pub(super) fn check(
    msg: &FromDriver,
    phase: Phase,
    version: u32,
    contract: Contract,
) -> Result<(), Fault> {
    let allowed = match phase {
        Phase::Hello => matches!(msg, FromDriver::Hello { .. }),
        Phase::Acquire => !matches!(msg, FromDriver::Hello { .. } | FromDriver::NotifyDone {}),
        Phase::Notify => matches!(
            msg,
            FromDriver::NotifyDone {}
                | FromDriver::AbortEndpoint { .. }
                | FromDriver::Now { .. }
                | FromDriver::Cancel { .. }
        ),
    };
    if !allowed {
        return Err(Fault::OutOfTurn {
            message: msg.name(),
            when: match phase {
                Phase::Hello => WHERE_HELLO,
                Phase::Acquire => DURING_ACQUIRE,
                Phase::Notify => DURING_NOTIFY,
            },
        });
    }
    if let Some(needs) = msg.contract().filter(|c| *c != contract) {
        return Err(Fault::NeedsContract {
            message: msg.name(),
            needs: needs.name(),
            chose: contract.name(),
        });
    }
    if msg.since() > version {
        return Err(Fault::NeedsVersion {
            message: msg.name(),
            since: msg.since(),
            version,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> FromDriver {
        serde_json::from_str(line).unwrap()
    }

    #[test]
    fn version_2_messages_need_version_2() {
        let submit = parse(
            r#"{"type":"submit","id":1,"transfer":"bulk_in","ep":129,"length":512,"timeout_us":0}"#,
        );
        assert_eq!(
            check(&submit, Phase::Acquire, 1, Contract::Wia)
                .unwrap_err()
                .to_string(),
            "protocol: submit needs protocol version 2; the driver chose 1 in its hello"
        );
        assert!(check(&submit, Phase::Acquire, 2, Contract::Wia).is_ok());
        assert!(check(
            &parse(r#"{"type":"wait"}"#),
            Phase::Acquire,
            2,
            Contract::Wia
        )
        .is_ok());
    }

    #[test]
    fn each_contract_has_its_own_calls() {
        let gns = parse(r#"{"type":"get_next_stream","item_name":"a","full_item_name":"b"}"#);
        assert_eq!(
            check(&gns, Phase::Acquire, 1, Contract::Wia)
                .unwrap_err()
                .to_string(),
            "protocol: get_next_stream needs the wia2 contract; the driver chose wia in its hello"
        );
        assert!(check(&gns, Phase::Acquire, 1, Contract::Wia2).is_ok());
        let release = parse(r#"{"type":"release","stream":1}"#);
        assert!(check(&release, Phase::Acquire, 2, Contract::Wia2).is_ok());
        let e = check(&release, Phase::Notify, 2, Contract::Wia2).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("protocol: release while handling notify"),
            "{e}"
        );
        let callback =
            parse(r#"{"type":"callback","reason":2,"status":4,"percent":1,"offset":0,"length":0}"#);
        assert_eq!(
            check(&callback, Phase::Acquire, 1, Contract::Wia2)
                .unwrap_err()
                .to_string(),
            "protocol: callback needs the wia contract; the driver chose wia2 in its hello"
        );
    }

    #[test]
    fn notify_allows_only_what_does_not_block() {
        assert!(check(
            &parse(r#"{"type":"cancel","id":3}"#),
            Phase::Notify,
            2,
            Contract::Wia
        )
        .is_ok());
        let e = check(
            &parse(r#"{"type":"wait"}"#),
            Phase::Notify,
            2,
            Contract::Wia,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("protocol: wait while handling notify"),
            "{e}"
        );
        let e = check(
            &parse(r#"{"type":"notify_done"}"#),
            Phase::Acquire,
            1,
            Contract::Wia,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "protocol: notify_done out of turn during drvAcquireItemData"
        );
    }
}
