//! What the command line and the environment set for an external driver: its limits and
//! timeouts ([`ExternalConfig`]), and why a command cannot be one ([`CommandError`]).

use std::time::Duration as WallDuration;

/// Limits and timeouts of an external driver.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExternalConfig {
    /// Wall-clock time the driver may take for one turn before it counts as hung. Default 5 s;
    /// `exec:` drivers read `SCANCONFORM_DRIVER_TIMEOUT_MS` to change it.
    pub reply_timeout: WallDuration,
    /// Longest line the driver may write, in bytes; longer lines are refused without being
    /// buffered whole. Default 16 MiB (a 4 MiB band in base64 fits with room to spare).
    pub max_line_bytes: usize,
    /// Wall-clock time the driver gets to exit after its stdin is closed at the end of a run
    /// before it is killed. Default 1 s.
    pub exit_grace: WallDuration,
    /// Stderr lines kept per run (later ones are counted, not kept). Default 1000.
    pub max_log_lines: usize,
    /// Bytes kept of one stderr line. Default 4096.
    pub max_log_line_bytes: usize,
    /// Transfers a version 2 driver may have submitted and not yet received the `done` of;
    /// one more `submit` is a protocol error. Default 64.
    pub max_in_flight: usize,
    /// Messages the driver may write while virtual time stands at one instant; one more is a
    /// hang (a driver that spins on `now`, `sleep` of 0 or timers of 0 instead of waiting,
    /// which no virtual-time budget would ever stop). Default 100 000.
    pub max_messages_per_instant: u64,
}

impl Default for ExternalConfig {
    fn default() -> Self {
        ExternalConfig {
            reply_timeout: WallDuration::from_secs(5),
            max_line_bytes: 16 << 20,
            exit_grace: WallDuration::from_secs(1),
            max_log_lines: 1000,
            max_log_line_bytes: 4096,
            max_in_flight: 64,
            max_messages_per_instant: 100_000,
        }
    }
}

impl ExternalConfig {
    /// The defaults, with `SCANCONFORM_DRIVER_TIMEOUT_MS` (if set to a number) as the reply
    /// timeout.
    pub fn from_env() -> ExternalConfig {
        let mut config = ExternalConfig::default();
        if let Some(ms) = std::env::var("SCANCONFORM_DRIVER_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            config.reply_timeout = WallDuration::from_millis(ms.max(1));
        }
        config
    }

    /// Sets [`ExternalConfig::reply_timeout`].
    pub fn with_reply_timeout(mut self, timeout: WallDuration) -> ExternalConfig {
        self.reply_timeout = timeout;
        self
    }

    /// Sets [`ExternalConfig::max_line_bytes`].
    pub fn with_max_line_bytes(mut self, bytes: usize) -> ExternalConfig {
        self.max_line_bytes = bytes;
        self
    }

    /// Sets [`ExternalConfig::max_messages_per_instant`].
    pub fn with_max_messages_per_instant(mut self, messages: u64) -> ExternalConfig {
        self.max_messages_per_instant = messages;
        self
    }

    /// Sets [`ExternalConfig::max_in_flight`].
    pub fn with_max_in_flight(mut self, transfers: usize) -> ExternalConfig {
        self.max_in_flight = transfers;
        self
    }
}

/// Why an `exec:` command cannot be a driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The command does not split into words (an unbalanced quote, say).
    #[error("driver command {command:?}: {error}")]
    Words {
        /// The command.
        command: String,
        /// What is wrong with it.
        error: shell_words::ParseError,
    },
    /// The command is empty.
    #[error("driver command is empty: use exec:'PROGRAM ARGS'")]
    Empty,
    /// The program is neither a file nor on `PATH`.
    #[error("driver command {command:?}: program {program:?} not found")]
    NotFound {
        /// The command.
        command: String,
        /// Its first word.
        program: String,
    },
}
