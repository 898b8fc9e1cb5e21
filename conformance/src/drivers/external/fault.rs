//! Why a turn of the exchange ended without a usable message: the text of the trace's
//! `driver-fault` event.

use super::inflight::Misuse;
use super::protocol::{Contract, ProtocolError, CONTRACTS, PROTOCOL_VERSIONS};

/// Why a turn ended without a usable message. The text goes into the `driver-fault` event.
#[derive(Debug, thiserror::Error)]
pub(super) enum Fault {
    /// A message that breaks the protocol.
    #[error("protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// A line that is no message.
    #[error("protocol: not a valid message after {after}: {error} (line starts {start:?})")]
    Garbage {
        after: &'static str,
        error: String,
        start: String,
    },
    #[error("protocol: a line longer than {limit} bytes after {after}")]
    LineTooLong { after: &'static str, limit: usize },
    #[error("reading the driver's stdout after {after}: {error}")]
    Stdout {
        after: &'static str,
        error: std::io::Error,
    },
    #[error("the driver {how} while the runner waited for its answer to {after}")]
    Exited { after: &'static str, how: String },
    #[error("the driver closed its stdout but kept running (after {after})")]
    StdoutClosed { after: &'static str },
    #[error("hang: the driver did not answer {after} within {ms} ms of wall-clock time")]
    Silent { after: &'static str, ms: u128 },
    #[error(
        "hang: the driver wrote {count} messages while virtual time stood at {at_us} us: it \
         spins instead of waiting"
    )]
    Spins { count: u64, at_us: u64 },
    #[error("protocol: the driver speaks protocol version {}, the runner {}", .0, versions())]
    Version(u32),
    /// A message the driver may not send at this point of the exchange.
    #[error("protocol: {message} {when}")]
    OutOfTurn {
        message: &'static str,
        when: &'static str,
    },
    /// A message of a later protocol version than the driver chose.
    #[error("protocol: {message} needs protocol version {since}; the driver chose {version} in its hello")]
    NeedsVersion {
        message: &'static str,
        since: u32,
        version: u32,
    },
    /// A message of the contract the driver did not choose.
    #[error(
        "protocol: {message} needs the {needs} contract; the driver chose {chose} in its hello"
    )]
    NeedsContract {
        message: &'static str,
        needs: &'static str,
        chose: &'static str,
    },
    /// A contract the runner does not offer.
    #[error("protocol: the driver chose contract {chose:?}, the runner offers {}", CONTRACTS.join(" and "))]
    UnknownContract { chose: String },
    /// A driver of one contract where the run needs the other.
    #[error("protocol: the driver chose contract {chose} in its hello; this run needs a {wants} driver{}", contract_hint(*.wants))]
    WrongContract {
        chose: &'static str,
        wants: Contract,
    },
    /// A stream call naming a stream no `next_stream` gave.
    #[error("protocol: stream {stream} of a stream {op}: no next_stream gave that stream")]
    UnknownStream { stream: u32, op: &'static str },
    /// A version 2 message that contradicts the transfers the driver submitted.
    #[error("protocol: {0}")]
    Misuse(#[from] Misuse),
    #[error("could not start {program:?}: {error}")]
    Start {
        program: String,
        error: std::io::Error,
    },
    #[error("the driver process is not running")]
    NotRunning,
    #[error("the driver process is not running (no run was begun)")]
    NotBegun,
    #[error("encoding a message: {0}")]
    Encode(serde_json::Error),
    /// The driver faulted meanwhile (during a notify exchange, say); already recorded.
    #[error("the driver had already failed")]
    Failed,
}

/// What a driver of the wrong contract is told to do instead.
fn contract_hint(wants: Contract) -> &'static str {
    match wants {
        Contract::Wia => {
            " (a wia2 driver runs the WIA 2.0 scenarios: --scenarios fixtures/scenarios/wia2)"
        }
        Contract::Wia2 => " (a wia driver runs the WIA 1.0 scenarios)",
    }
}

/// The versions the runner speaks, as a fault text names them: `1 and 2`.
pub(super) fn versions() -> String {
    let v: Vec<String> = PROTOCOL_VERSIONS.iter().map(u32::to_string).collect();
    match v.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => v.join(""),
    }
}
