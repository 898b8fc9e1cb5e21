//! The scripted WIA 2.0 application: `IWiaTransfer::Download` / `Upload`, its
//! `IWiaTransferCallback` (TransferCallback, GetNextStream), its error handler and its streams,
//! following the scenario's script.
//!
//! For each transfer of the scenario it calls the [`Service2`], answers every callback (S_OK
//! and a fresh stream unless the script says otherwise: S_FALSE, WIA_STATUS_SKIP_ITEM, an error,
//! a NULL stream, a stream of its own), calls `IWiaTransfer::Cancel` where the script says (in
//! a callback, at a time, while the driver is blocked in a Write) and restarts the service where
//! the script says. After it answered an error it repeats that error to every later
//! TransferCallback of the transfer. Between transfers it waits the scripted delay and makes
//! the scripted idle cancels.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use scanemu::sim::Sim;
use scanemu::time::Duration;

use super::service::{AppCallback, Service2, StreamAnswer};
use super::stream::{StreamState, WriteWatcher};
use crate::driver::wia2::TransferParams;
use crate::roles::RoleTrace;
use crate::scenario::wia2::{
    Action2, ItemKind, LoadedScenario2, MessageTrigger, Step2, Trigger2, UploadSource,
};
use crate::trace::{Actor, Kind};
use crate::wia::{Hresult, TransferMsg, WIA_TRANSFER_ACQUIRE_CHILDREN};

/// What the application's Download returns when the service process died during the call.
pub(crate) const RPC_E_SERVICE_DIED: Hresult = Hresult::RPC_S_CALL_FAILED;

/// The application's view of the transfer in progress.
#[derive(Default)]
struct TransferState {
    n: u32,
    /// Steps already carried out (each fires once).
    fired: Vec<bool>,
    messages: BTreeMap<TransferMsg, u32>,
    any_messages: u32,
    next_streams: u32,
    device_statuses: u32,
    writes: u32,
    /// Once the application answered an error, it repeats it.
    failed: Option<Hresult>,
    /// The stream given last (the one `move_position` reads).
    current: Option<Rc<StreamState>>,
    /// Every stream given in this transfer.
    streams: Vec<Rc<StreamState>>,
}

/// The service process died: wakes the transfer that waits for it.
#[derive(Default)]
struct RestartSignal {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl RestartSignal {
    fn fire(&self) {
        self.fired.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// Runs `work` until it finishes or the service restarts; `None` when it was abandoned (and
/// dropped) by a restart.
struct UntilRestart<'a, F> {
    work: Pin<Box<F>>,
    signal: &'a RestartSignal,
}

impl<F: Future> Future for UntilRestart<'_, F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.signal.fired.replace(false) {
            return Poll::Ready(None);
        }
        if let Poll::Ready(v) = self.work.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if self.signal.fired.replace(false) {
            return Poll::Ready(None);
        }
        *self.signal.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// The application role. See the module documentation.
pub(crate) struct Application2 {
    /// A handle on itself for the tasks it starts (its second thread).
    me: Weak<Application2>,
    sim: Sim,
    trace: Rc<RoleTrace>,
    service: Service2,
    scenario: LoadedScenario2,
    state: RefCell<Option<TransferState>>,
    /// The transfer in progress (0 when idle).
    running: Cell<u32>,
    streams_made: Cell<u32>,
    cancels: Cell<u32>,
    restart: RestartSignal,
}

/// The application as its streams' write watcher (they are made before it exists).
pub(crate) struct Watcher(pub(crate) Weak<Application2>);

impl WriteWatcher for Watcher {
    fn write_started(&self, stream: u32) -> bool {
        self.0.upgrade().is_some_and(|a| a.write_started(stream))
    }
}

impl Application2 {
    /// The application that plays `scenario` against the service `make_service` builds (given
    /// the application's write watcher).
    pub(crate) fn new(
        sim: Sim,
        trace: Rc<RoleTrace>,
        scenario: LoadedScenario2,
        make_service: impl FnOnce(Rc<dyn WriteWatcher>) -> Service2,
    ) -> Rc<Application2> {
        Rc::new_cyclic(|me| Application2 {
            me: me.clone(),
            sim,
            trace,
            service: make_service(Rc::new(Watcher(me.clone()))),
            scenario,
            state: RefCell::new(None),
            running: Cell::new(0),
            streams_made: Cell::new(0),
            cancels: Cell::new(0),
            restart: RestartSignal::default(),
        })
    }

    /// The transfer in progress (0 when idle).
    pub(crate) fn running(&self) -> u32 {
        self.running.get()
    }

    /// Ends the run (the driver instance's `end_run`).
    pub(crate) fn end(&self) {
        self.service.end();
    }

    /// Plays the whole script.
    pub(crate) async fn play(&self) {
        let sc = &self.scenario.scenario;
        let total = sc.transfers.len() as u32;
        for i in 0..=total {
            for idle in sc.idle_cancels.iter().filter(|c| c.before == i) {
                for _ in 0..idle.times {
                    self.cancel_now();
                }
            }
            if i == total {
                break;
            }
            let t = &sc.transfers[i as usize];
            if t.delay_us > 0 {
                self.sim.sleep(Duration::from_micros(t.delay_us)).await;
            }
            self.transfer(i + 1).await;
        }
    }

    fn next_stream_id(&self) -> u32 {
        let id = self.streams_made.get() + 1;
        self.streams_made.set(id);
        id
    }

    /// Transfer `n`.
    async fn transfer(&self, n: u32) {
        let sc = &self.scenario.scenario;
        let t = &sc.transfers[(n - 1) as usize];
        let item = self.service.item();
        let upload = t.upload.map(|src| {
            let id = self.next_stream_id();
            let (bytes, invalid) = match src {
                UploadSource::Bytes(b) => (b, false),
                UploadSource::Empty => (0, false),
                UploadSource::Invalid => (0, true),
            };
            let stream = StreamState::source(id, bytes, invalid);
            self.trace.push(
                Actor::App,
                Kind::Upload {
                    n,
                    item: item.name().into(),
                    stream: id,
                    bytes,
                },
            );
            stream
        });
        if upload.is_none() {
            let flags = if item.kind == ItemKind::Folder {
                WIA_TRANSFER_ACQUIRE_CHILDREN
            } else {
                0
            };
            self.trace.push(
                Actor::App,
                Kind::Download {
                    n,
                    item: item.name().into(),
                    flags,
                    tymed: item.tymed.value(),
                    format: item.format.name().into(),
                },
            );
        }
        *self.state.borrow_mut() = Some(TransferState {
            n,
            fired: vec![false; t.steps.len()],
            ..TransferState::default()
        });
        self.running.set(n);
        self.start_timed_steps(n, &t.steps);
        self.restart.fired.set(false);
        let work = UntilRestart {
            work: Box::pin(self.service.transfer(self, upload)),
            signal: &self.restart,
        };
        let hr = match work.await {
            Some(hr) => hr,
            None => {
                self.service.start_again();
                RPC_E_SERVICE_DIED
            }
        };
        self.running.set(0);
        let state = self.state.borrow_mut().take().unwrap_or_default();
        let bytes = state.streams.iter().map(|s| s.written()).sum();
        self.trace
            .push(Actor::App, Kind::TransferDone { n, hr, bytes });
    }

    /// Starts the second thread's task for every `at_us` step of transfer `n`.
    fn start_timed_steps(&self, n: u32, steps: &[Step2]) {
        for (k, step) in steps.iter().enumerate() {
            if let Trigger2::AtUs(at) = step.when {
                let at = self.sim.now() + Duration::from_micros(at);
                let (me, sim) = (self.me.clone(), self.sim.clone());
                self.sim.spawn(async move {
                    sim.sleep_until(at).await;
                    if let Some(app) = me.upgrade() {
                        app.thread_step(n, k);
                    }
                });
            }
        }
    }

    /// A step on the second thread: fires only while its transfer runs.
    fn thread_step(&self, n: u32, k: usize) {
        if self.running.get() != n {
            self.note(format!(
                "step {} of transfer {n} not fired: the transfer had ended",
                k + 1
            ));
            return;
        }
        let action = {
            let mut st = self.state.borrow_mut();
            let Some(st) = st.as_mut() else { return };
            st.fired[k] = true;
            self.scenario.scenario.transfers[(n - 1) as usize].steps[k]
                .action
                .clone()
        };
        match action {
            Action2::Cancel => self.cancel_now(),
            Action2::RestartService => {
                // The process dies now: its pending USB I/O is cancelled before anything of
                // the driver runs again (it never will).
                self.service.terminate();
                self.restart.fire();
            }
            _ => {}
        }
    }

    /// `IWiaTransfer::Cancel`: the call and the WIA_EVENT_CANCEL_IO it delivers happen at one
    /// instant, in real time as in virtual time.
    fn cancel_now(&self) {
        let n = self.cancels.get() + 1;
        self.cancels.set(n);
        self.trace.at_one_instant(|| {
            self.trace.push(Actor::App, Kind::Cancel { n });
            self.service.cancel();
        });
    }

    fn note(&self, text: String) {
        self.trace.push(Actor::App, Kind::Note { text });
    }

    /// The steps of the running transfer that `hit` selects and that have not fired, marked
    /// fired; their actions in file order.
    fn fire(&self, hit: impl Fn(&TransferState, &Trigger2) -> bool) -> Vec<Action2> {
        let mut guard = self.state.borrow_mut();
        let Some(st) = guard.as_mut() else {
            return Vec::new();
        };
        let steps = &self.scenario.scenario.transfers[(st.n - 1) as usize].steps;
        let mut out = Vec::new();
        for (k, step) in steps.iter().enumerate() {
            if !st.fired[k] && hit(st, &step.when) {
                st.fired[k] = true;
                out.push(step.action.clone());
            }
        }
        out
    }

    /// A Write on `stream` begins: true when a `write` step holds it.
    fn write_started(&self, _stream: u32) -> bool {
        let n = {
            let mut guard = self.state.borrow_mut();
            let Some(st) = guard.as_mut() else {
                return false;
            };
            st.writes += 1;
            st.n
        };
        let steps = &self.scenario.scenario.transfers[(n - 1) as usize].steps;
        let held: Vec<usize> = {
            let guard = self.state.borrow();
            let Some(st) = guard.as_ref() else {
                return false;
            };
            steps
                .iter()
                .enumerate()
                .filter(|(k, s)| !st.fired[*k] && s.when == Trigger2::Write(st.writes))
                .map(|(k, _)| k)
                .collect()
        };
        for k in &held {
            let (me, k) = (self.me.clone(), *k);
            self.sim.spawn(async move {
                if let Some(app) = me.upgrade() {
                    app.thread_step(n, k);
                }
            });
        }
        !held.is_empty()
    }

    fn transfer_spec(&self) -> Option<crate::scenario::wia2::StreamSpec> {
        let n = self.state.borrow().as_ref()?.n;
        Some(
            self.scenario.scenario.transfers[(n - 1) as usize]
                .stream
                .clone(),
        )
    }
}

impl AppCallback for Application2 {
    fn transfer_callback(&self, params: &TransferParams) -> Hresult {
        let (count, any) = {
            let mut guard = self.state.borrow_mut();
            let Some(st) = guard.as_mut() else {
                return Hresult::S_OK;
            };
            let c = st.messages.entry(params.msg).or_insert(0);
            *c += 1;
            st.any_messages += 1;
            (*c, st.any_messages)
        };
        let actions = self.fire(|_, when| match *when {
            Trigger2::Message(MessageTrigger { msg, n }) => msg == params.msg && n == count,
            Trigger2::Percent(p) => params.msg == TransferMsg::STATUS && params.percent >= p,
            Trigger2::AnyMessage(n) => n == any,
            _ => false,
        });
        let mut answer = None;
        let mut cancel = false;
        for a in &actions {
            match a {
                Action2::Return(hr) => {
                    answer.get_or_insert(*hr);
                }
                Action2::Cancel => cancel = true,
                Action2::MovePosition(pos) => {
                    let current = self.state.borrow().as_ref().and_then(|s| s.current.clone());
                    match current {
                        Some(stream) => stream.app_seek(*pos, &self.trace),
                        None => self.note("move_position: no stream to read".into()),
                    }
                }
                _ => {}
            }
        }
        let result = {
            let mut guard = self.state.borrow_mut();
            let failed = guard.as_ref().and_then(|s| s.failed);
            let result = failed.or(answer).unwrap_or(Hresult::S_OK);
            if let Some(st) = guard.as_mut() {
                if result.failed() {
                    st.failed = Some(result);
                }
            }
            result
        };
        self.trace.push(
            Actor::App,
            Kind::TransferCallback {
                msg: params.msg,
                percent: params.percent,
                bytes: params.bytes,
                status: params.status,
                result,
            },
        );
        if cancel {
            self.cancel_now();
        }
        result
    }

    fn get_next_stream(&self, item: &str, _full_item: &str) -> StreamAnswer {
        let count = {
            let mut guard = self.state.borrow_mut();
            let Some(st) = guard.as_mut() else {
                return StreamAnswer {
                    hr: Hresult::E_FAIL,
                    stream: None,
                };
            };
            st.next_streams += 1;
            st.next_streams
        };
        let actions = self.fire(|_, when| *when == Trigger2::NextStream(count));
        let mut spec = self.transfer_spec().unwrap_or_default();
        let mut answer: Option<(Hresult, bool)> = None;
        let mut cancel = false;
        for a in &actions {
            match a {
                Action2::Return(hr) => {
                    answer.get_or_insert((*hr, false));
                }
                Action2::NullStream => {
                    answer.get_or_insert((Hresult::S_OK, false));
                }
                Action2::Stream(s) => {
                    spec = s.clone();
                }
                Action2::Cancel => cancel = true,
                _ => {}
            }
        }
        let (hr, stream) = match answer {
            Some((hr, _)) => (hr, None),
            None => {
                let stream = StreamState::new(self.next_stream_id(), &spec);
                if let Some(st) = self.state.borrow_mut().as_mut() {
                    st.current = Some(stream.clone());
                    st.streams.push(stream.clone());
                }
                (Hresult::S_OK, Some(stream))
            }
        };
        self.trace.push(
            Actor::App,
            Kind::AppGetNextStream {
                item: item.to_string(),
                result: hr,
                stream: stream.as_ref().map_or(0, |s| s.id()),
                size: stream.as_ref().map_or(0, |s| s.prefill_len()),
            },
        );
        if cancel {
            self.cancel_now();
        }
        StreamAnswer { hr, stream }
    }

    fn report_status(&self, status: Hresult) -> Hresult {
        let count = {
            let mut guard = self.state.borrow_mut();
            let Some(st) = guard.as_mut() else {
                return Hresult::WIA_STATUS_NOT_HANDLED;
            };
            st.device_statuses += 1;
            st.device_statuses
        };
        let actions = self.fire(|_, when| *when == Trigger2::DeviceStatus(count));
        let mut result = Hresult::WIA_STATUS_NOT_HANDLED;
        let mut cancel = false;
        for a in &actions {
            match a {
                Action2::Return(hr) => result = *hr,
                Action2::Cancel => cancel = true,
                _ => {}
            }
        }
        self.trace
            .push(Actor::App, Kind::ReportStatus { status, result });
        if cancel {
            self.cancel_now();
        }
        result
    }
}
