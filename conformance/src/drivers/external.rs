//! Drivers in any language: a process speaking line-delimited JSON on its stdin and stdout.
//!
//! `scanconform run --driver exec:'CMD ARGS'` puts a program under test that is not Rust and not
//! ours. [`ExternalDriver`] implements [`MiniDriver`] by relaying every call to that process, as
//! `conformance/DRIVER-PROTOCOL.md` specifies: a version handshake, `acquire`, the driver's
//! callbacks and their results, `notify` (drvNotifyPnPEvent), and every USB request of the
//! driver, which the runner performs on the emulated device so that virtual time holds and
//! the trace is the one an in-process driver would produce.
//!
//! Determinism. The exchange takes turns: after each message the runner sends, the driver owns
//! the turn until it sends one message that needs an answer (a USB request, a callback, the
//! final result, or the end of a notify exchange). While the driver owns the turn the runner
//! blocks its thread on the driver's next line, so no simulated task runs and virtual time
//! cannot move: the driver's computation is atomic, exactly as the code between two `await`s
//! of an in-process driver. Taking the driver's answer on an asynchronous wake instead would let
//! other tasks due at the same instant run first, in an order set by the wall clock.
//!
//! One process per scenario run: [`MiniDriver::begin_run`] spawns it (a fresh one each run, so
//! no state leaks between runs), [`MiniDriver::end_run`] closes its stdin, gives it a moment to
//! exit, kills it otherwise and reaps it. Its stderr is collected by a thread and recorded at
//! the end of the run as `log` events, in order, stamped with the run's final virtual time.
//!
//! A driver that breaks the protocol (exits, stops answering within the wall-clock guard,
//! writes garbage or an over-long line, answers out of turn, closes stdout) gets one
//! `driver-fault` event naming what happened, its process is killed and reaped, and the
//! acquisition returns `E_FAIL`; the run and the rest of the catalog go on.

use std::cell::{Cell, RefCell};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration as WallDuration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use scanemu::engine::ScanJob;
use scanemu::host::{Setup, TransferError, UsbHost};
use scanemu::sim::Sim;
use scanemu::time::Duration;
use serde::{Deserialize, Serialize};

use crate::driver::{CallbackArgs, MiniDriver, MiniDrvCallback, PnpEvent, TransferContext};
use crate::trace::{Actor, Kind, Recorder};
use crate::wia::{Hresult, ItMsg};

/// The protocol version this runner speaks (`hello.protocol`).
pub const PROTOCOL_VERSION: u32 = 1;

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
}

impl Default for ExternalConfig {
    fn default() -> Self {
        ExternalConfig {
            reply_timeout: WallDuration::from_secs(5),
            max_line_bytes: 16 << 20,
            exit_grace: WallDuration::from_secs(1),
            max_log_lines: 1000,
            max_log_line_bytes: 4096,
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
}

/// What the driver said about itself in its `hello`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverIdentity {
    /// The driver's name.
    pub name: String,
    /// The driver's version.
    pub version: String,
    /// True if it claims to honour WIA_EVENT_CANCEL_IO during a transfer.
    pub async_cancel: bool,
}

// ---- messages ----

/// Runner to driver.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ToDriver<'a> {
    Hello {
        protocol: u32,
        runner: &'a str,
    },
    Acquire {
        acquisition: u32,
        tymed: i32,
        buffer_size: u32,
        interface: u16,
        job: &'a ScanJob,
        now_us: u64,
    },
    CallbackResult {
        hr: u32,
    },
    Notify {
        event: &'a str,
    },
    Done(Done),
}

/// The completion of one USB request.
#[derive(Serialize)]
struct Done {
    id: u64,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    actual: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    now_us: u64,
}

/// Driver to runner. Unknown fields are ignored; unknown types are protocol errors.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum FromDriver {
    Hello {
        protocol: u32,
        name: String,
        version: String,
        capabilities: Capabilities,
    },
    Callback {
        reason: i32,
        status: i32,
        percent: i32,
        offset: i64,
        length: i64,
        #[serde(default)]
        data: String,
    },
    Result {
        hr: i64,
    },
    NotifyDone {},
    ControlIn {
        id: u64,
        request_type: u8,
        request: u8,
        value: u16,
        index: u16,
        length: u16,
        timeout_us: u64,
    },
    ControlOut {
        id: u64,
        request_type: u8,
        request: u8,
        value: u16,
        index: u16,
        #[serde(default)]
        data: String,
        timeout_us: u64,
    },
    BulkIn {
        id: u64,
        ep: u8,
        length: usize,
        timeout_us: u64,
    },
    BulkOut {
        id: u64,
        ep: u8,
        data: String,
        timeout_us: u64,
    },
    InterruptIn {
        id: u64,
        ep: u8,
        length: usize,
        timeout_us: u64,
    },
    ClearHalt {
        id: u64,
        ep: u8,
    },
    ResetDevice {
        id: u64,
    },
    AbortEndpoint {
        id: u64,
        ep: u8,
    },
    Sleep {
        id: u64,
        duration_us: u64,
    },
    Now {
        id: u64,
    },
}

#[derive(Deserialize)]
struct Capabilities {
    async_cancel: bool,
}

impl FromDriver {
    fn name(&self) -> &'static str {
        match self {
            FromDriver::Hello { .. } => "hello",
            FromDriver::Callback { .. } => "callback",
            FromDriver::Result { .. } => "result",
            FromDriver::NotifyDone {} => "notify_done",
            FromDriver::ControlIn { .. } => "control_in",
            FromDriver::ControlOut { .. } => "control_out",
            FromDriver::BulkIn { .. } => "bulk_in",
            FromDriver::BulkOut { .. } => "bulk_out",
            FromDriver::InterruptIn { .. } => "interrupt_in",
            FromDriver::ClearHalt { .. } => "clear_halt",
            FromDriver::ResetDevice { .. } => "reset_device",
            FromDriver::AbortEndpoint { .. } => "abort_endpoint",
            FromDriver::Sleep { .. } => "sleep",
            FromDriver::Now { .. } => "now",
        }
    }
}

/// An HRESULT from the wire: a signed or unsigned 32-bit integer.
fn hresult_from_wire(v: i64) -> Option<Hresult> {
    if (i64::from(i32::MIN)..=i64::from(u32::MAX)).contains(&v) {
        Some(Hresult(v as u32 as i32))
    } else {
        None
    }
}

/// Parses one line a driver wrote on its stdout (without the `\n`) as the runner reads it: the
/// JSON message, then the checks the runner makes before acting on it (base64 data, a 32-bit
/// HRESULT, an IT_MSG_* callback reason, request lengths within [`ExternalConfig::default`]'s
/// line limit). Returns the message's type (`"bulk_in"`, ...) or the one-line protocol error
/// the run would record as a `driver-fault`. Public so the parser can be tested and fuzzed.
pub fn parse_driver_message(line: &[u8]) -> Result<&'static str, String> {
    let msg: FromDriver = serde_json::from_slice(line)
        .map_err(|e| format!("not a valid message: {}", one_line(&e.to_string())))?;
    let base64 = |what: &str, s: &str| {
        BASE64
            .decode(s)
            .map_err(|e| format!("{what} data is not base64: {e}"))
    };
    let max = ExternalConfig::default().max_line_bytes;
    match &msg {
        FromDriver::Result { hr } if hresult_from_wire(*hr).is_none() => {
            return Err(format!("result hr {hr} is not a 32-bit HRESULT"));
        }
        FromDriver::Callback { reason, data, .. } => {
            it_msg(*reason).ok_or_else(|| format!("callback reason {reason} is no IT_MSG_*"))?;
            base64("callback", data)?;
        }
        FromDriver::ControlOut { data, .. } => {
            let n = base64("control_out", data)?.len();
            if n > usize::from(u16::MAX) {
                return Err(format!("control_out of {n} bytes is larger than 65535"));
            }
        }
        FromDriver::BulkOut { data, .. } => {
            base64("bulk_out", data)?;
        }
        FromDriver::BulkIn { length, .. } | FromDriver::InterruptIn { length, .. }
            if *length > max =>
        {
            return Err(format!(
                "{} of {length} bytes is larger than the {max}-byte limit",
                msg.name()
            ));
        }
        _ => {}
    }
    Ok(msg.name())
}

/// `text` with control characters escaped: serde's messages quote the driver's strings (an
/// unknown `type`, say), which may hold line breaks, and a fault is one line.
fn one_line(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

fn it_msg(value: i32) -> Option<ItMsg> {
    [
        ItMsg::DataHeader,
        ItMsg::Data,
        ItMsg::Status,
        ItMsg::Termination,
        ItMsg::NewPage,
        ItMsg::DeviceStatus,
    ]
    .into_iter()
    .find(|m| m.value() == value)
}

fn status_name(e: &TransferError) -> &'static str {
    match e {
        TransferError::Stall => "stall",
        TransferError::Timeout { .. } => "timeout",
        TransferError::Cancelled { .. } => "cancelled",
        TransferError::NoDevice => "no_device",
        TransferError::Overflow => "overflow",
        TransferError::Io(_) => "io_error",
    }
}

// ---- the process ----

/// What the stdout thread hands over.
enum Incoming {
    Line(Vec<u8>),
    TooLong { limit: usize },
    Eof,
    ReadError(String),
}

/// Reads `\n`-terminated lines of at most `limit` bytes; refuses a longer one as soon as it
/// passes the limit, without buffering it.
fn read_lines(out: impl Read, limit: usize, tx: Sender<Incoming>) {
    let mut reader = BufReader::with_capacity(64 * 1024, out);
    loop {
        let mut line = Vec::new();
        loop {
            let buf = match reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = tx.send(Incoming::ReadError(e.to_string()));
                    return;
                }
            };
            if buf.is_empty() {
                if !line.is_empty() {
                    let _ = tx.send(Incoming::Line(line));
                }
                let _ = tx.send(Incoming::Eof);
                return;
            }
            let (take, end) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (i, true),
                None => (buf.len(), false),
            };
            if line.len() + take > limit {
                let _ = tx.send(Incoming::TooLong { limit });
                return;
            }
            line.extend_from_slice(&buf[..take]);
            reader.consume(take + usize::from(end));
            if end {
                break;
            }
        }
        if tx.send(Incoming::Line(line)).is_err() {
            return;
        }
    }
}

/// Collects stderr lines (each cut to `line_bytes`, at most `max_lines` kept).
fn collect_stderr(err: impl Read, max_lines: usize, line_bytes: usize) -> Vec<String> {
    let mut reader = BufReader::new(err);
    let mut lines = Vec::new();
    let mut dropped = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // Reads at most line_bytes + 1 bytes of the line, then skips the rest of it.
        let n = match (&mut reader)
            .take(line_bytes as u64 + 1)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let complete = buf.last() == Some(&b'\n');
        if !complete && n > line_bytes {
            let mut sink = Vec::new();
            loop {
                sink.clear();
                match (&mut reader).take(64 * 1024).read_until(b'\n', &mut sink) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if sink.last() == Some(&b'\n') => break,
                    Ok(_) => {}
                }
            }
        }
        let end = buf.len().min(line_bytes);
        let text = String::from_utf8_lossy(&buf[..end]);
        let text = text.trim_end_matches(['\n', '\r']).to_string();
        if lines.len() < max_lines {
            lines.push(text);
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        lines.push(format!("({dropped} more stderr lines not kept)"));
    }
    lines
}

struct Process {
    child: Child,
    /// Lines to write to the driver's stdin (a thread writes them, so a driver that stops
    /// reading cannot block the runner). Dropping it closes stdin.
    stdin: Option<Sender<Vec<u8>>>,
    stdout: Receiver<Incoming>,
}

impl Process {
    fn spawn(argv: &[String], config: &ExternalConfig) -> std::io::Result<(Process, StderrLog)> {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other("pipes of the child were not set up"));
        };
        let (line_tx, line_rx) = mpsc::channel();
        let limit = config.max_line_bytes;
        std::thread::spawn(move || read_lines(stdout, limit, line_tx));
        let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || write_lines(stdin, in_rx));
        let (max_lines, line_bytes) = (config.max_log_lines, config.max_log_line_bytes);
        let (log_tx, log_rx) = mpsc::channel();
        let handle = std::thread::spawn(move || {
            let _ = log_tx.send(collect_stderr(stderr, max_lines, line_bytes));
        });
        Ok((
            Process {
                child,
                stdin: Some(in_tx),
                stdout: line_rx,
            },
            StderrLog {
                lines: log_rx,
                _thread: handle,
            },
        ))
    }

    /// Kills the process if it still runs and reaps it.
    fn kill(&mut self) -> Option<ExitStatus> {
        self.stdin = None;
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }

    /// Waits up to `grace` for the process to exit by itself.
    fn wait_exit(&mut self, grace: WallDuration) -> Option<ExitStatus> {
        let start = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if start.elapsed() >= grace {
                return None;
            }
            std::thread::sleep(WallDuration::from_millis(1));
        }
    }
}

fn write_lines(mut stdin: ChildStdin, rx: Receiver<Vec<u8>>) {
    for line in rx {
        if stdin.write_all(&line).and_then(|()| stdin.flush()).is_err() {
            return;
        }
    }
}

/// The stderr collector of one process.
struct StderrLog {
    lines: Receiver<Vec<String>>,
    _thread: JoinHandle<()>,
}

fn describe_exit(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("killed by signal {sig}");
        }
    }
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "exited".to_string(),
    }
}

/// Why a turn ended without a usable message. The text goes into the `driver-fault` event.
struct Fault(String);

/// Everything one run keeps about the driver process.
#[derive(Default)]
struct RunState {
    process: Option<Process>,
    stderr: Option<StderrLog>,
    sim: Option<Sim>,
    trace: Option<Recorder>,
    identity: Option<DriverIdentity>,
    /// Set once the driver faulted: later calls fail at once.
    failed: bool,
    acquisitions: u32,
    pids: Vec<u32>,
}

/// A driver that is an external program; see the module documentation.
pub struct ExternalDriver {
    argv: Vec<String>,
    config: ExternalConfig,
    state: RefCell<RunState>,
    /// The message the runner sent last, for fault texts.
    last_sent: Cell<&'static str>,
}

impl ExternalDriver {
    /// A driver that runs `command` (split like a POSIX shell does, without running one).
    /// Fails if the command is empty, unbalanced, or names a program that cannot be found.
    pub fn new(command: &str, config: ExternalConfig) -> Result<ExternalDriver, String> {
        let argv =
            shell_words::split(command).map_err(|e| format!("driver command {command:?}: {e}"))?;
        let Some(program) = argv.first() else {
            return Err("driver command is empty: use exec:'PROGRAM ARGS'".to_string());
        };
        if !program_exists(program) {
            return Err(format!(
                "driver command {command:?}: program {program:?} not found"
            ));
        }
        Ok(ExternalDriver {
            argv,
            config,
            state: RefCell::new(RunState::default()),
            last_sent: Cell::new("nothing"),
        })
    }

    /// What the driver said in its `hello`, once a run started it.
    pub fn identity(&self) -> Option<DriverIdentity> {
        self.state.borrow().identity.clone()
    }

    /// Process ids of every process this driver spawned, oldest first.
    pub fn pids(&self) -> Vec<u32> {
        self.state.borrow().pids.clone()
    }

    fn now_us(&self) -> u64 {
        self.state
            .borrow()
            .sim
            .as_ref()
            .map_or(0, |s| s.now().total_micros())
    }

    /// Records a fault, kills and reaps the process, and marks the driver failed.
    fn fault(&self, what: String) {
        let at = self.now_us();
        let mut st = self.state.borrow_mut();
        if let Some(trace) = &st.trace {
            trace.push(at, Actor::Driver, Kind::DriverFault { what });
        }
        st.failed = true;
        if let Some(mut p) = st.process.take() {
            p.kill();
        }
    }

    fn send(&self, msg: &ToDriver<'_>) -> Result<(), Fault> {
        let mut line = serde_json::to_vec(msg).map_err(|e| Fault(e.to_string()))?;
        line.push(b'\n');
        self.last_sent.set(match msg {
            ToDriver::Hello { .. } => "hello",
            ToDriver::Acquire { .. } => "acquire",
            ToDriver::CallbackResult { .. } => "callback_result",
            ToDriver::Notify { .. } => "notify",
            ToDriver::Done(_) => "done",
        });
        let st = self.state.borrow();
        let Some(tx) = st.process.as_ref().and_then(|p| p.stdin.as_ref()) else {
            return Err(Fault("the driver process is not running".into()));
        };
        // A closed pipe shows up as end of stdout on the next read, with the exit status.
        let _ = tx.send(line);
        Ok(())
    }

    /// Blocks until the driver ends its turn with one message (see the module documentation).
    fn recv(&self) -> Result<FromDriver, Fault> {
        let waiting_for = self.last_sent.get();
        let incoming = {
            let st = self.state.borrow();
            let Some(p) = st.process.as_ref() else {
                return Err(Fault("the driver process is not running".into()));
            };
            p.stdout.recv_timeout(self.config.reply_timeout)
        };
        match incoming {
            Ok(Incoming::Line(bytes)) => serde_json::from_slice(&bytes).map_err(|e| {
                let shown: String = String::from_utf8_lossy(&bytes).chars().take(80).collect();
                let e = one_line(&e.to_string());
                Fault(format!(
                    "protocol: not a valid message after {waiting_for}: {e} (line starts {shown:?})"
                ))
            }),
            Ok(Incoming::TooLong { limit }) => Err(Fault(format!(
                "protocol: a line longer than {limit} bytes after {waiting_for}"
            ))),
            Ok(Incoming::ReadError(e)) => Err(Fault(format!(
                "reading the driver's stdout after {waiting_for}: {e}"
            ))),
            Ok(Incoming::Eof) | Err(RecvTimeoutError::Disconnected) => {
                let exited = {
                    let mut st = self.state.borrow_mut();
                    let grace = WallDuration::from_millis(500).min(self.config.reply_timeout);
                    st.process.as_mut().and_then(|p| p.wait_exit(grace))
                };
                Err(Fault(match exited {
                    Some(status) => format!(
                        "the driver {} while the runner waited for its answer to {waiting_for}",
                        describe_exit(status)
                    ),
                    None => format!(
                        "the driver closed its stdout but kept running (after {waiting_for})"
                    ),
                }))
            }
            Err(RecvTimeoutError::Timeout) => Err(Fault(format!(
                "hang: the driver did not answer {waiting_for} within {} ms of wall-clock time",
                self.config.reply_timeout.as_millis()
            ))),
        }
    }

    fn start(&self) -> Result<DriverIdentity, Fault> {
        let (process, stderr) = Process::spawn(&self.argv, &self.config)
            .map_err(|e| Fault(format!("could not start {:?}: {e}", self.argv[0])))?;
        {
            let mut st = self.state.borrow_mut();
            st.pids.push(process.child.id());
            st.process = Some(process);
            st.stderr = Some(stderr);
        }
        self.send(&ToDriver::Hello {
            protocol: PROTOCOL_VERSION,
            runner: concat!("scanconform ", env!("CARGO_PKG_VERSION")),
        })?;
        match self.recv()? {
            FromDriver::Hello {
                protocol,
                name,
                version,
                capabilities,
            } => {
                if protocol != PROTOCOL_VERSION {
                    return Err(Fault(format!(
                        "protocol: the driver speaks protocol version {protocol}, the runner {PROTOCOL_VERSION}"
                    )));
                }
                Ok(DriverIdentity {
                    name,
                    version,
                    async_cancel: capabilities.async_cancel,
                })
            }
            other => Err(Fault(format!(
                "protocol: {} where the answer to hello was due",
                other.name()
            ))),
        }
    }

    /// Stops the process of the current run (see the module documentation) and records its
    /// stderr.
    fn stop(&self) {
        let at = self.now_us();
        let (process, stderr, trace) = {
            let mut st = self.state.borrow_mut();
            (st.process.take(), st.stderr.take(), st.trace.clone())
        };
        let mut notes = Vec::new();
        if let Some(mut p) = process {
            p.stdin = None;
            match p.wait_exit(self.config.exit_grace) {
                Some(status) if status.success() => {}
                Some(status) => notes.push(format!("driver {}", describe_exit(status))),
                None => {
                    p.kill();
                    notes.push(format!(
                        "driver still running {} ms after its stdin closed: killed",
                        self.config.exit_grace.as_millis()
                    ));
                }
            }
        }
        let mut lines = stderr
            .and_then(|s| s.lines.recv_timeout(WallDuration::from_secs(1)).ok())
            .unwrap_or_default();
        lines.extend(notes);
        if let Some(trace) = trace {
            for text in lines {
                trace.push(at, Actor::Driver, Kind::Log { text });
            }
        }
    }

    /// Performs one USB request of the driver and returns its completion.
    async fn perform(&self, req: FromDriver, host: &dyn UsbHost) -> Result<Done, Fault> {
        let timeout = |us: u64| Duration::from_micros(us);
        let decode = |what: &str, s: &str| {
            BASE64
                .decode(s)
                .map_err(|e| Fault(format!("protocol: {what} data is not base64: {e}")))
        };
        let max = self.config.max_line_bytes;
        let too_big = |what: &str, n: usize| {
            Fault(format!(
                "protocol: {what} of {n} bytes is larger than the {max}-byte limit"
            ))
        };
        let done = |id, r: Result<Option<Vec<u8>>, TransferError>| {
            let now_us = host.now().total_micros();
            match r {
                Ok(data) => Done {
                    id,
                    status: "ok",
                    actual: data.as_ref().map(Vec::len),
                    data: data.map(|d| BASE64.encode(d)),
                    error: None,
                    now_us,
                },
                Err(e) => Done {
                    id,
                    status: status_name(&e),
                    actual: match e {
                        TransferError::Timeout { actual } | TransferError::Cancelled { actual } => {
                            Some(actual)
                        }
                        _ => None,
                    },
                    data: None,
                    error: match &e {
                        TransferError::Io(text) => Some(text.clone()),
                        _ => None,
                    },
                    now_us,
                },
            }
        };
        Ok(match req {
            FromDriver::ControlIn {
                id,
                request_type,
                request,
                value,
                index,
                length,
                timeout_us,
            } => {
                let setup = Setup {
                    request_type,
                    request,
                    value,
                    index,
                    length,
                };
                let r = host.control_in(setup, timeout(timeout_us)).await;
                done(id, r.map(Some))
            }
            FromDriver::ControlOut {
                id,
                request_type,
                request,
                value,
                index,
                data,
                timeout_us,
            } => {
                let data = decode("control_out", &data)?;
                let length =
                    u16::try_from(data.len()).map_err(|_| too_big("control_out", data.len()))?;
                let setup = Setup {
                    request_type,
                    request,
                    value,
                    index,
                    length,
                };
                let r = host.control_out(setup, &data, timeout(timeout_us)).await;
                done(id, r.map(|()| None))
            }
            FromDriver::BulkIn {
                id,
                ep,
                length,
                timeout_us,
            } => {
                if length > max {
                    return Err(too_big("bulk_in", length));
                }
                let mut buf = vec![0u8; length];
                let r = host.bulk_in(ep, &mut buf, timeout(timeout_us)).await;
                done(
                    id,
                    r.map(|n| {
                        buf.truncate(n);
                        Some(buf)
                    }),
                )
            }
            FromDriver::BulkOut {
                id,
                ep,
                data,
                timeout_us,
            } => {
                let data = decode("bulk_out", &data)?;
                let r = host.bulk_out(ep, &data, timeout(timeout_us)).await;
                let mut d = done(id, r.as_ref().map(|_| None).map_err(Clone::clone));
                if let Ok(n) = r {
                    d.actual = Some(n);
                }
                d
            }
            FromDriver::InterruptIn {
                id,
                ep,
                length,
                timeout_us,
            } => {
                if length > max {
                    return Err(too_big("interrupt_in", length));
                }
                let mut buf = vec![0u8; length];
                let r = host.interrupt_in(ep, &mut buf, timeout(timeout_us)).await;
                done(
                    id,
                    r.map(|n| {
                        buf.truncate(n);
                        Some(buf)
                    }),
                )
            }
            FromDriver::ClearHalt { id, ep } => done(id, host.clear_halt(ep).await.map(|()| None)),
            FromDriver::ResetDevice { id } => done(id, host.reset_device().await.map(|()| None)),
            FromDriver::AbortEndpoint { id, ep } => {
                host.abort_endpoint(ep);
                done(id, Ok(None))
            }
            FromDriver::Sleep { id, duration_us } => {
                host.sleep(Duration::from_micros(duration_us)).await;
                done(id, Ok(None))
            }
            FromDriver::Now { id } => done(id, Ok(None)),
            other => {
                return Err(Fault(format!(
                    "protocol: {} is not a USB request",
                    other.name()
                )))
            }
        })
    }

    /// The acquisition itself; a `Fault` ends it.
    async fn transfer(
        &self,
        ctx: &TransferContext,
        host: &dyn UsbHost,
        callback: &dyn MiniDrvCallback,
    ) -> Result<Hresult, Fault> {
        let acquisition = {
            let mut st = self.state.borrow_mut();
            st.acquisitions += 1;
            st.acquisitions
        };
        self.send(&ToDriver::Acquire {
            acquisition,
            tymed: ctx.tymed,
            buffer_size: ctx.buffer_size,
            interface: ctx.interface,
            job: &ctx.job,
            now_us: host.now().total_micros(),
        })?;
        loop {
            let msg = self.recv()?;
            match msg {
                FromDriver::Result { hr } => {
                    return hresult_from_wire(hr).ok_or_else(|| {
                        Fault(format!("protocol: result hr {hr} is not a 32-bit HRESULT"))
                    });
                }
                FromDriver::Callback {
                    reason,
                    status,
                    percent,
                    offset,
                    length,
                    data,
                } => {
                    let reason = it_msg(reason).ok_or_else(|| {
                        Fault(format!("protocol: callback reason {reason} is no IT_MSG_*"))
                    })?;
                    let data = BASE64.decode(&data).map_err(|e| {
                        Fault(format!("protocol: callback data is not base64: {e}"))
                    })?;
                    let hr = callback
                        .call(CallbackArgs {
                            reason,
                            status,
                            percent,
                            offset,
                            length,
                            data: &data,
                        })
                        .await;
                    self.check_alive()?;
                    self.send(&ToDriver::CallbackResult { hr: hr.0 as u32 })?;
                }
                FromDriver::Hello { .. } | FromDriver::NotifyDone {} => {
                    return Err(Fault(format!(
                        "protocol: {} out of turn during drvAcquireItemData",
                        msg.name()
                    )));
                }
                request => {
                    let done = self.perform(request, host).await?;
                    self.check_alive()?;
                    self.send(&ToDriver::Done(done))?;
                }
            }
        }
    }

    /// Fails if the driver faulted meanwhile (during a notify exchange, say).
    fn check_alive(&self) -> Result<(), Fault> {
        if self.state.borrow().failed {
            return Err(Fault(String::new()));
        }
        Ok(())
    }

    /// The notify exchange: runs synchronously; only `abort_endpoint` and `now` are allowed.
    fn notify_exchange(&self, host: &dyn UsbHost) -> Result<(), Fault> {
        self.send(&ToDriver::Notify { event: "cancel_io" })?;
        loop {
            match self.recv()? {
                FromDriver::NotifyDone {} => return Ok(()),
                FromDriver::AbortEndpoint { id, ep } => {
                    host.abort_endpoint(ep);
                    self.send(&ToDriver::Done(Done {
                        id,
                        status: "ok",
                        actual: None,
                        data: None,
                        error: None,
                        now_us: host.now().total_micros(),
                    }))?;
                }
                FromDriver::Now { id } => {
                    self.send(&ToDriver::Done(Done {
                        id,
                        status: "ok",
                        actual: None,
                        data: None,
                        error: None,
                        now_us: host.now().total_micros(),
                    }))?;
                }
                other => {
                    return Err(Fault(format!(
                        "protocol: {} while handling notify (drvNotifyPnPEvent must not block: only abort_endpoint and now, then notify_done)",
                        other.name()
                    )))
                }
            }
        }
    }
}

/// True if `program` names an existing file, or a file in one of `PATH`'s directories.
fn program_exists(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

#[async_trait(?Send)]
impl MiniDriver for ExternalDriver {
    fn supports_async_cancel(&self) -> bool {
        self.state
            .borrow()
            .identity
            .as_ref()
            .is_some_and(|i| i.async_cancel)
    }

    async fn acquire_item_data(
        &self,
        ctx: &TransferContext,
        host: &dyn UsbHost,
        callback: &dyn MiniDrvCallback,
    ) -> Hresult {
        if self.state.borrow().failed || self.state.borrow().process.is_none() {
            if !self.state.borrow().failed {
                self.fault("the driver process is not running (no run was begun)".into());
            }
            return Hresult::E_FAIL;
        }
        match self.transfer(ctx, host, callback).await {
            Ok(hr) => hr,
            Err(Fault(what)) => {
                if !self.state.borrow().failed {
                    self.fault(what);
                }
                Hresult::E_FAIL
            }
        }
    }

    fn notify_pnp_event(&self, event: PnpEvent, host: &dyn UsbHost) {
        let PnpEvent::CancelIo = event;
        if self.state.borrow().failed || self.state.borrow().process.is_none() {
            return;
        }
        if let Err(Fault(what)) = self.notify_exchange(host) {
            self.fault(what);
        }
    }

    fn begin_run(&self, sim: &Sim, trace: &Recorder) {
        self.stop();
        {
            let mut st = self.state.borrow_mut();
            st.sim = Some(sim.clone());
            st.trace = Some(trace.clone());
            st.identity = None;
            st.failed = false;
            st.acquisitions = 0;
        }
        match self.start() {
            Ok(identity) => self.state.borrow_mut().identity = Some(identity),
            Err(Fault(what)) => self.fault(what),
        }
    }

    fn end_run(&self) {
        self.stop();
    }
}

impl Drop for ExternalDriver {
    fn drop(&mut self) {
        if let Some(mut p) = self.state.get_mut().process.take() {
            p.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_refused_without_buffering_them() {
        let (tx, rx) = mpsc::channel();
        let mut input = b"{\"a\":1}\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 10_000));
        input.push(b'\n');
        read_lines(&input[..], 100, tx);
        assert!(matches!(rx.recv(), Ok(Incoming::Line(l)) if l == b"{\"a\":1}"));
        assert!(matches!(rx.recv(), Ok(Incoming::TooLong { limit: 100 })));
        assert!(rx.recv().is_err());
    }

    #[test]
    fn stderr_lines_are_cut_and_counted() {
        let mut input = Vec::new();
        input.extend(std::iter::repeat_n(b'y', 50));
        input.extend(b"\nshort\nthird\nfourth\n");
        let lines = collect_stderr(&input[..], 3, 10);
        assert_eq!(
            lines,
            vec![
                "yyyyyyyyyy",
                "short",
                "third",
                "(1 more stderr lines not kept)"
            ]
        );
    }

    #[test]
    fn hresults_are_read_signed_or_unsigned() {
        assert_eq!(hresult_from_wire(1), Some(Hresult::S_FALSE));
        assert_eq!(hresult_from_wire(0x8000_4005), Some(Hresult::E_FAIL));
        assert_eq!(hresult_from_wire(-2_147_467_259), Some(Hresult::E_FAIL));
        assert_eq!(hresult_from_wire(1 << 40), None);
    }

    #[test]
    fn driver_messages_parse_to_their_type_or_one_line_of_error() {
        assert_eq!(parse_driver_message(br#"{"type":"now","id":1}"#), Ok("now"));
        let e = parse_driver_message(br#"{"type":"a\nb"}"#).unwrap_err();
        assert!(e.contains("a\\nb") && !e.contains('\n'), "{e}");
        let e = parse_driver_message(br#"{"type":"result","hr":1099511627776}"#).unwrap_err();
        assert!(e.contains("not a 32-bit HRESULT"), "{e}");
    }

    #[test]
    fn commands_are_checked_before_any_run() {
        assert!(ExternalDriver::new("", ExternalConfig::default()).is_err());
        assert!(ExternalDriver::new("'unbalanced", ExternalConfig::default()).is_err());
        assert!(ExternalDriver::new("no-such-program-xyz", ExternalConfig::default()).is_err());
        assert!(ExternalDriver::new("sh -c 'exit 0'", ExternalConfig::default()).is_ok());
    }
}
