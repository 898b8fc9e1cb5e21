//! The turn rules: which message a driver may write at which point of the exchange, in the
//! protocol version it chose (DRIVER-PROTOCOL.md, "Turns").
//!
//! The runner reads a driver's line in one of three phases: the answer to `hello`, the
//! driver's turn during `drvAcquireItemData`, and the handling of a `notify`. [`check`] decides,
//! before the runner acts on a message, whether it may come there; everything else about a
//! message (its fields, the transfers it names) is checked where it is acted on. A new protocol
//! version that adds messages says here where they may come.

use super::protocol::FromDriver;
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

/// Checks that `msg` may come in `phase` from a driver speaking protocol `version`.
pub(super) fn check(msg: &FromDriver, phase: Phase, version: u32) -> Result<(), Fault> {
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
            check(&submit, Phase::Acquire, 1).unwrap_err().to_string(),
            "protocol: submit needs protocol version 2; the driver chose 1 in its hello"
        );
        assert!(check(&submit, Phase::Acquire, 2).is_ok());
        assert!(check(&parse(r#"{"type":"wait"}"#), Phase::Acquire, 2).is_ok());
    }

    #[test]
    fn notify_allows_only_what_does_not_block() {
        assert!(check(&parse(r#"{"type":"cancel","id":3}"#), Phase::Notify, 2).is_ok());
        let e = check(&parse(r#"{"type":"wait"}"#), Phase::Notify, 2).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("protocol: wait while handling notify"),
            "{e}"
        );
        let e = check(&parse(r#"{"type":"notify_done"}"#), Phase::Acquire, 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "protocol: notify_done out of turn during drvAcquireItemData"
        );
    }
}
