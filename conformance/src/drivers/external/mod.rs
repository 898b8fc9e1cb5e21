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
//! final result, the end of a notify exchange, or in version 2 a `wait`). While the driver owns
//! the turn the runner blocks its thread on the driver's next line, so no simulated task runs
//! and virtual time cannot move: the driver's computation is atomic, exactly as the code
//! between two `await`s of an in-process driver. Taking the driver's answer on an asynchronous
//! wake instead would let other tasks due at the same instant run first, in an order set by the
//! wall clock.
//!
//! Versions. The runner's `hello` offers [`PROTOCOL_VERSIONS`]; the driver picks one. Version
//! 2 adds submitted transfers: `submit` starts one through the run's context
//! ([`RunContext::submit`]) and keeps the driver's turn, `cancel` ends one ([`crate::driver::Urb::cancel`]),
//! `wait` gives the turn back until the next completion, chosen by
//! [`RunContext::first_completed`] (completion time, then submission order), so that every
//! completion is delivered at a point fixed by virtual time alone.
//!
//! Contracts. The runner's `hello` also offers [`CONTRACTS`]; the driver names the one it
//! implements. A `wia` driver (the default) is a [`MiniDriver`]; a `wia2` driver is a WIA 2.0
//! stream minidriver, a [`MiniDriver2`]: `acquire_item_data` starts its call, and its
//! `get_next_stream`, `send_message` and `stream` messages are relayed to the call's
//! [`TransferCallback2`] and the application's streams (each an [`AppStream`] the runner keeps
//! by number for the driver instance), `release` keeping the turn as `submit` does. An
//! [`ExternalDriver`] is made for one contract ([`ExternalDriver::new`],
//! [`ExternalDriver::new_wia2`]) and faults a driver whose `hello` names the other.
//!
//! One process per scenario run: [`MiniDriver::begin_run`] spawns it (a fresh one each run, so
//! no state leaks between runs), [`MiniDriver::end_run`] closes its stdin, gives it a moment to
//! exit, kills it otherwise and reaps it. Its stderr is collected by a thread and recorded at
//! the end of the run as `log` events of the run's [`RunContext`], in order, stamped with the
//! run's final virtual time.
//!
//! A driver that breaks the protocol (exits, stops answering within the wall-clock guard,
//! writes garbage or an over-long line, answers out of turn, closes stdout) gets one
//! `driver-fault` event naming what happened, its process is killed and reaped, and the
//! acquisition returns `E_FAIL`; the run and the rest of the catalog go on.
//!
//! About 690 lines: the exchange's two loops (`transfer` for the driver's turn, `notify_exchange`)
//! and the process state they share; the messages, turns, faults, configuration and the wia2
//! contract are in the files beside it.

//!
//! The module has these parts: `protocol` (the wire messages and their checks), `turns`
//! (which message may come where), `inflight` (a version 2 driver's submitted transfers),
//! `offline` (those checks replayed over a driver's lines without a run, for fuzzing),
//! `process` (the child process and its pipes), `requests` (the driver's blocking USB requests
//! performed on the run's host) and, here, the [`MiniDriver`] that takes turns with the
//! process. A protocol version that adds messages extends `protocol` (the messages, the version
//! that brings each), `turns` (where each may come) and the loops here that act on them
//! (`transfer` for the driver's turn, `notify_exchange`).

mod config;
mod fault;
mod inflight;
mod offline;
mod process;
mod protocol;
mod requests;
mod turns;
mod wia2;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration as WallDuration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use scanemu::host::UsbHost;

pub use self::config::{CommandError, ExternalConfig};
use self::fault::Fault;
use self::inflight::{InFlight, Misuse};
pub use self::offline::{replay_driver_lines, RefusedLine};
use self::process::{describe_exit, program_exists, Incoming, Process, StderrLog};
use self::protocol::{
    hresult_from_wire, it_msg, one_line, payload, seek_origin, status_from_wire, within, Done,
    FromDriver, StreamOp, StreamResult, ToDriver, WireItem,
};
pub use self::protocol::{
    parse_driver_message, Contract, ProtocolError, CONTRACTS, PROTOCOL_VERSIONS,
};
use self::turns::Phase;
use crate::driver::wia2::{
    AppStream, Item, ItemContext, MiniDriver2, TransferCallback2, TransferParams,
};
use crate::driver::{
    CallbackArgs, MiniDriver, MiniDrvCallback, PnpEvent, RunContext, TransferContext,
};
use crate::wia::Hresult;

/// What the driver said about itself in its `hello`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverIdentity {
    /// The driver's name.
    pub name: String,
    /// The driver's version.
    pub version: String,
    /// True if it claims to honour WIA_EVENT_CANCEL_IO during a transfer.
    pub async_cancel: bool,
    /// The protocol version it chose.
    pub protocol: u32,
    /// The contract it implements.
    pub contract: Contract,
    /// WIA 2.0: true if it downloads a folder's children in one call
    /// (WIA_TRANSFER_ACQUIRE_CHILDREN_CAPABLE).
    pub acquire_children: bool,
}

/// Everything one run keeps about the driver process.
#[derive(Default)]
struct RunState {
    process: Option<Process>,
    stderr: Option<StderrLog>,
    run: Option<Rc<dyn RunContext>>,
    identity: Option<DriverIdentity>,
    /// The protocol version the driver chose (1 until its hello says otherwise).
    version: u32,
    /// A version 2 driver's submitted transfers.
    inflight: Option<InFlight>,
    /// WIA 2.0: the streams `next_stream` gave the driver instance, by number; kept after
    /// `release` (later calls are the rules' business, not the protocol's).
    streams: std::collections::BTreeMap<u32, Rc<dyn AppStream>>,
    /// Set once the driver faulted: later calls fail at once.
    failed: bool,
    acquisitions: u32,
    pids: Vec<u32>,
    /// The virtual instant of the driver's last message and how many it wrote at it.
    instant: (u64, u64),
}

/// A driver that is an external program; see the module documentation.
pub struct ExternalDriver {
    argv: Vec<String>,
    config: ExternalConfig,
    /// The contract a run of this driver needs.
    wants: Contract,
    state: RefCell<RunState>,
    /// The message the runner sent last, for fault texts.
    last_sent: Cell<&'static str>,
}

impl ExternalDriver {
    /// A driver that runs `command` (split like a POSIX shell does, without running one).
    /// Fails if the command is empty, unbalanced, or names a program that cannot be found.
    pub fn new(command: &str, config: ExternalConfig) -> Result<ExternalDriver, CommandError> {
        let argv = shell_words::split(command).map_err(|error| CommandError::Words {
            command: command.to_string(),
            error,
        })?;
        let Some(program) = argv.first() else {
            return Err(CommandError::Empty);
        };
        if !program_exists(program) {
            return Err(CommandError::NotFound {
                command: command.to_string(),
                program: program.clone(),
            });
        }
        Ok(ExternalDriver {
            argv,
            config,
            wants: Contract::Wia,
            state: RefCell::new(RunState::default()),
            last_sent: Cell::new("nothing"),
        })
    }

    /// A WIA 2.0 driver ([`MiniDriver2`]) that runs `command`, checked as [`ExternalDriver::new`]
    /// checks it; its `hello` must name the `wia2` contract.
    pub fn new_wia2(command: &str, config: ExternalConfig) -> Result<ExternalDriver, CommandError> {
        let mut d = ExternalDriver::new(command, config)?;
        d.wants = Contract::Wia2;
        Ok(d)
    }

    /// Another instance of the same command and contract, with no run begun: what the WIA
    /// service loads when it starts again, or for an identical device.
    pub fn another(&self) -> ExternalDriver {
        ExternalDriver {
            argv: self.argv.clone(),
            config: self.config.clone(),
            wants: self.wants,
            state: RefCell::new(RunState::default()),
            last_sent: Cell::new("nothing"),
        }
    }

    /// What the driver said in its `hello`, once a run started it.
    pub fn identity(&self) -> Option<DriverIdentity> {
        self.state.borrow().identity.clone()
    }

    /// Process ids of every process this driver spawned, oldest first.
    pub fn pids(&self) -> Vec<u32> {
        self.state.borrow().pids.clone()
    }

    /// Records a fault, kills and reaps the process, and marks the driver failed.
    /// Its submitted transfers are cancelled, as closing a device handle kills its URBs, so
    /// an acquisition waiting for one of them ends at once.
    fn fault(&self, what: &Fault) {
        let orphans = {
            let mut st = self.state.borrow_mut();
            if let Some(run) = &st.run {
                run.fault(&what.to_string());
            }
            st.failed = true;
            if let Some(mut p) = st.process.take() {
                p.kill();
            }
            st.inflight.as_ref().map(InFlight::urbs).unwrap_or_default()
        };
        for urb in orphans {
            urb.cancel();
        }
    }

    /// Runs one acquisition's exchange (WIA 1.0 or 2.0): E_FAIL without starting it when the
    /// process is gone or was never begun, and E_FAIL with the fault recorded (once) when the
    /// exchange breaks the protocol.
    async fn exchange(
        &self,
        call: impl std::future::Future<Output = Result<Hresult, Fault>>,
    ) -> Hresult {
        if self.state.borrow().failed || self.state.borrow().process.is_none() {
            if !self.state.borrow().failed {
                self.fault(&Fault::NotBegun);
            }
            return Hresult::E_FAIL;
        }
        match call.await {
            Ok(hr) => hr,
            Err(fault) => {
                if !self.state.borrow().failed {
                    self.fault(&fault);
                }
                Hresult::E_FAIL
            }
        }
    }

    fn send(&self, msg: &ToDriver<'_>) -> Result<(), Fault> {
        let mut line = serde_json::to_vec(msg).map_err(Fault::Encode)?;
        line.push(b'\n');
        self.last_sent.set(match msg {
            ToDriver::Hello { .. } => "hello",
            ToDriver::Acquire { .. } => "acquire",
            ToDriver::CallbackResult { .. } => "callback_result",
            ToDriver::AcquireItemData { .. } => "acquire_item_data",
            ToDriver::NextStream { .. } => "next_stream",
            ToDriver::MessageResult { .. } => "message_result",
            ToDriver::StreamResult(_) => "stream_result",
            ToDriver::Notify { .. } => "notify",
            ToDriver::Done(_) => "done",
        });
        let st = self.state.borrow();
        let Some(tx) = st.process.as_ref().and_then(|p| p.stdin.as_ref()) else {
            return Err(Fault::NotRunning);
        };
        // A closed pipe shows up as end of stdout on the next read, with the exit status.
        let _ = tx.send(line);
        Ok(())
    }

    /// Blocks until the driver ends its turn with one message (see the module documentation).
    fn recv(&self) -> Result<FromDriver, Fault> {
        let after = self.last_sent.get();
        let incoming = {
            let st = self.state.borrow();
            let Some(p) = st.process.as_ref() else {
                return Err(Fault::NotRunning);
            };
            p.stdout.recv_timeout(self.config.reply_timeout)
        };
        if let Ok(Incoming::Line(_)) = &incoming {
            self.count_at_instant()?;
        }
        match incoming {
            Ok(Incoming::Line(bytes)) => {
                serde_json::from_slice(&bytes).map_err(|e| Fault::Garbage {
                    after,
                    error: one_line(&e.to_string()),
                    start: String::from_utf8_lossy(&bytes).chars().take(80).collect(),
                })
            }
            Ok(Incoming::TooLong { limit }) => Err(Fault::LineTooLong { after, limit }),
            Ok(Incoming::ReadError(error)) => Err(Fault::Stdout { after, error }),
            Ok(Incoming::Eof) | Err(RecvTimeoutError::Disconnected) => {
                let exited = {
                    let mut st = self.state.borrow_mut();
                    let grace = WallDuration::from_millis(500).min(self.config.reply_timeout);
                    st.process.as_mut().and_then(|p| p.wait_exit(grace))
                };
                Err(match exited {
                    Some(status) => Fault::Exited {
                        after,
                        how: describe_exit(status),
                    },
                    None => Fault::StdoutClosed { after },
                })
            }
            Err(RecvTimeoutError::Timeout) => Err(Fault::Silent {
                after,
                ms: self.config.reply_timeout.as_millis(),
            }),
        }
    }

    /// Counts one message at the current virtual instant; too many is [`Fault::Spins`].
    fn count_at_instant(&self) -> Result<(), Fault> {
        let mut st = self.state.borrow_mut();
        let now = st.run.as_ref().map_or(0, |r| r.now().total_micros());
        let (at, count) = st.instant;
        let count = if at == now { count + 1 } else { 1 };
        st.instant = (now, count);
        if count > self.config.max_messages_per_instant {
            return Err(Fault::Spins { count, at_us: now });
        }
        Ok(())
    }

    fn start(&self) -> Result<DriverIdentity, Fault> {
        let (process, stderr) =
            Process::spawn(&self.argv, &self.config).map_err(|error| Fault::Start {
                program: self.argv[0].clone(),
                error,
            })?;
        {
            let mut st = self.state.borrow_mut();
            st.pids.push(process.child.id());
            st.process = Some(process);
            st.stderr = Some(stderr);
        }
        self.send(&ToDriver::Hello {
            protocol: PROTOCOL_VERSIONS[0],
            protocols: PROTOCOL_VERSIONS,
            contracts: CONTRACTS,
            runner: concat!("scanconform ", env!("CARGO_PKG_VERSION")),
        })?;
        let msg = self.recv()?;
        turns::check(&msg, Phase::Hello, PROTOCOL_VERSIONS[0], Contract::Wia)?;
        let FromDriver::Hello {
            protocol,
            contract,
            name,
            version,
            capabilities,
        } = msg
        else {
            return Err(Fault::OutOfTurn {
                message: msg.name(),
                when: turns::WHERE_HELLO,
            });
        };
        if !PROTOCOL_VERSIONS.contains(&protocol) {
            return Err(Fault::Version(protocol));
        }
        let contract = match contract {
            None => Contract::Wia,
            Some(c) => Contract::from_name(&c).ok_or(Fault::UnknownContract { chose: c })?,
        };
        if contract != self.wants {
            return Err(Fault::WrongContract {
                chose: contract.name(),
                wants: self.wants,
            });
        }
        Ok(DriverIdentity {
            name,
            version,
            async_cancel: capabilities.async_cancel,
            protocol,
            contract,
            acquire_children: capabilities.acquire_children,
        })
    }

    /// The protocol version of the run.
    fn version(&self) -> u32 {
        self.state.borrow().version
    }

    /// Stops the process of the current run (see the module documentation), records its
    /// stderr and lets go of the run.
    fn stop(&self) {
        let (process, stderr, run) = {
            let mut st = self.state.borrow_mut();
            (st.process.take(), st.stderr.take(), st.run.take())
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
        if let Some(run) = run {
            for text in lines {
                run.log(&text);
            }
        }
    }

    /// Starts the process of a run and reads its `hello` (a fault is recorded).
    fn begin(&self, run: Rc<dyn RunContext>) {
        self.stop();
        {
            let mut st = self.state.borrow_mut();
            st.run = Some(run);
            st.identity = None;
            st.version = PROTOCOL_VERSIONS[0];
            st.inflight = None;
            st.streams.clear();
            st.failed = false;
            st.acquisitions = 0;
            st.instant = (0, 0);
        }
        match self.start() {
            Ok(identity) => {
                let mut st = self.state.borrow_mut();
                st.version = identity.protocol;
                if identity.protocol >= 2 {
                    st.inflight = Some(InFlight::new(self.config.max_in_flight));
                }
                st.identity = Some(identity);
            }
            Err(fault) => self.fault(&fault),
        }
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
            turns::check(&msg, Phase::Acquire, self.version(), self.wants)?;
            match msg {
                FromDriver::Result { hr } => return Ok(hresult_from_wire(hr)?),
                FromDriver::Callback {
                    reason,
                    status,
                    percent,
                    offset,
                    length,
                    data,
                } => {
                    let reason = it_msg(reason)?;
                    let data = payload("callback", &data)?;
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
                FromDriver::Submit { id, request } => {
                    let request = request.to_request(self.config.max_line_bytes)?;
                    self.submit(id, request)?;
                }
                FromDriver::Cancel { id } => self.cancel(id)?,
                FromDriver::Wait {} => {
                    let done = self.next_completion(host).await?;
                    self.send(&ToDriver::Done(done))?;
                }
                request => {
                    self.check_blocking(&request)?;
                    let done = requests::perform(request, host, self.config.max_line_bytes).await?;
                    self.check_alive()?;
                    self.send(&ToDriver::Done(done))?;
                }
            }
        }
    }

    /// `submit`: starts transfer `id` through the run's context.
    fn submit(&self, id: u64, request: crate::driver::UsbRequest) -> Result<(), Fault> {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        let (Some(run), Some(inflight)) = (st.run.as_ref(), st.inflight.as_mut()) else {
            return Err(Fault::NotBegun);
        };
        inflight.submit(id, request, run.as_ref())?;
        Ok(())
    }

    /// `cancel`: ends transfer `id` now, unless it completed already.
    fn cancel(&self, id: u64) -> Result<(), Fault> {
        let urb = {
            let st = self.state.borrow();
            let Some(inflight) = st.inflight.as_ref() else {
                return Err(Fault::NotBegun);
            };
            inflight.to_cancel(id)?
        };
        if let Some(urb) = urb {
            urb.cancel();
        }
        Ok(())
    }

    /// Checks a blocking request against the submitted transfers (its id, its endpoint).
    fn check_blocking(&self, request: &FromDriver) -> Result<(), Fault> {
        let st = self.state.borrow();
        if let (Some(inflight), Some(id)) = (st.inflight.as_ref(), request.id()) {
            inflight.check_blocking(request.name(), id, request.queue())?;
        }
        Ok(())
    }

    /// `wait`: the `done` of the submitted transfer that completed first (completion time,
    /// then submission order), once there is one.
    async fn next_completion(&self, host: &dyn UsbHost) -> Result<Done, Fault> {
        let (urbs, run) = {
            let st = self.state.borrow();
            let Some(inflight) = st.inflight.as_ref() else {
                return Err(Fault::NotBegun);
            };
            (inflight.waitable()?, st.run.clone().ok_or(Fault::NotBegun)?)
        };
        let first = run.first_completed(&urbs).await;
        self.check_alive()?;
        let delivered = first.and_then(|i| {
            let mut st = self.state.borrow_mut();
            st.inflight.as_mut().and_then(|t| t.deliver(&urbs[i]))
        });
        let Some((id, shape, completion)) = delivered else {
            return Err(Misuse::NothingToWaitFor.into());
        };
        Ok(Done::of_completion(
            id,
            shape,
            completion,
            host.now().total_micros(),
        ))
    }

    /// Fails if the driver faulted meanwhile (during a notify exchange, say).
    fn check_alive(&self) -> Result<(), Fault> {
        if self.state.borrow().failed {
            return Err(Fault::Failed);
        }
        Ok(())
    }

    /// The notify exchange: runs synchronously; only `abort_endpoint`, `now` and (version 2)
    /// `cancel` are allowed.
    fn notify_exchange(&self, host: &dyn UsbHost) -> Result<(), Fault> {
        self.send(&ToDriver::Notify { event: "cancel_io" })?;
        loop {
            let msg = self.recv()?;
            turns::check(&msg, Phase::Notify, self.version(), self.wants)?;
            if matches!(
                msg,
                FromDriver::AbortEndpoint { .. } | FromDriver::Now { .. }
            ) {
                self.check_blocking(&msg)?;
            }
            match msg {
                FromDriver::NotifyDone {} => return Ok(()),
                FromDriver::Cancel { id } => self.cancel(id)?,
                FromDriver::AbortEndpoint { id, ep } => {
                    host.abort_endpoint(ep);
                    self.send(&ToDriver::Done(Done::of(
                        id,
                        Ok(None),
                        host.now().total_micros(),
                    )))?;
                }
                FromDriver::Now { id } => {
                    self.send(&ToDriver::Done(Done::of(
                        id,
                        Ok(None),
                        host.now().total_micros(),
                    )))?;
                }
                other => {
                    return Err(Fault::OutOfTurn {
                        message: other.name(),
                        when: turns::DURING_NOTIFY,
                    })
                }
            }
        }
    }
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
        self.exchange(self.transfer(ctx, host, callback)).await
    }

    fn notify_pnp_event(&self, event: PnpEvent, host: &dyn UsbHost) {
        let PnpEvent::CancelIo = event;
        if self.state.borrow().failed || self.state.borrow().process.is_none() {
            return;
        }
        if let Err(fault) = self.notify_exchange(host) {
            self.fault(&fault);
        }
    }

    fn begin_run(&self, run: Rc<dyn RunContext>) {
        self.begin(run);
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
    fn commands_are_checked_before_any_run() {
        assert!(ExternalDriver::new("", ExternalConfig::default()).is_err());
        assert!(ExternalDriver::new("'unbalanced", ExternalConfig::default()).is_err());
        assert!(ExternalDriver::new("no-such-program-xyz", ExternalConfig::default()).is_err());
        assert!(ExternalDriver::new("sh -c 'exit 0'", ExternalConfig::default()).is_ok());
    }

    #[test]
    fn fault_texts_are_the_ones_traces_carry() {
        let f = Fault::from(ProtocolError::NotAReason(9));
        assert_eq!(f.to_string(), "protocol: callback reason 9 is no IT_MSG_*");
        let f = Fault::OutOfTurn {
            message: "hello",
            when: turns::DURING_ACQUIRE,
        };
        assert_eq!(
            f.to_string(),
            "protocol: hello out of turn during drvAcquireItemData"
        );
    }
}
