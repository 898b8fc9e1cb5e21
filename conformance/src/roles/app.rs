//! The scripted WIA application: it follows the scenario's script.
//!
//! For each acquisition of the scenario it asks the [`Service`] for a banded transfer
//! (`idtGetBandedData`), answers every BandedDataCallback (S_OK, or the scripted S_FALSE or
//! error), and calls CancelPendingIO where the script says: inside a callback, at a time, or
//! right after the last band (on its second thread, as a task of its own). After it cancelled it
//! answers S_FALSE to every later callback of the transfer, as the XP documentation says it
//! "will also have to"; after it failed a callback it repeats that error.
//!
//! Between acquisitions it waits the scripted delay and makes the scripted idle cancels.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use scanemu::engine::ScanJob;
use scanemu::sim::Sim;
use scanemu::time::Duration;

use super::service::{BandedDataCallback, Message, Service};
use super::RoleTrace;
use crate::scenario::{Action, LoadedScenario, Step, Trigger};
use crate::trace::{Actor, Kind};
use crate::wia::{Hresult, ItMsg, TYMED_CALLBACK, TYMED_MULTIPAGE_CALLBACK};

/// The application's view of the acquisition in progress.
#[derive(Default)]
struct AppState {
    n: u32,
    data_callbacks: u32,
    any_callbacks: u32,
    status_callbacks: u32,
    new_pages: u32,
    /// Steps already carried out (each fires once).
    fired: Vec<bool>,
    /// Once the application cancelled or failed, it answers every later callback the same way.
    answer: Option<Hresult>,
    /// Bytes received.
    bytes: u64,
}

impl AppState {
    /// Counts a message the application received.
    fn receive(&mut self, args_reason: ItMsg, len: usize) {
        match args_reason {
            ItMsg::Data => {
                self.data_callbacks += 1;
                self.bytes += len as u64;
            }
            ItMsg::NewPage => self.new_pages += 1,
            ItMsg::Status => self.status_callbacks += 1,
            _ => {}
        }
        self.any_callbacks += 1;
    }

    /// Steps fired so far: the number a CancelPendingIO made now gets.
    fn fired_count(&self) -> u32 {
        self.fired.iter().filter(|f| **f).count() as u32
    }
}

/// What the script makes of one callback.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct CallbackDecision {
    /// The first scripted `return` that fired, if any.
    answer: Option<Hresult>,
    /// A scripted CancelPendingIO fired inside the callback.
    cancel: bool,
}

/// The application role. See the module documentation.
pub(crate) struct Application {
    /// A handle on itself for the tasks it starts (its second thread).
    me: Weak<Application>,
    sim: Sim,
    trace: Rc<RoleTrace>,
    service: Rc<Service>,
    scenario: LoadedScenario,
    job: ScanJob,
    acq: RefCell<Option<AppState>>,
    /// The acquisition in progress (0 when idle).
    running: Cell<u32>,
}

impl Application {
    /// The application that plays `scenario` against `service`.
    pub(crate) fn new(
        sim: Sim,
        trace: Rc<RoleTrace>,
        service: Rc<Service>,
        scenario: LoadedScenario,
    ) -> Rc<Application> {
        let job = scenario.scenario.scan.job();
        Rc::new_cyclic(|me| Application {
            me: me.clone(),
            sim,
            trace,
            service,
            scenario,
            job,
            acq: RefCell::new(None),
            running: Cell::new(0),
        })
    }

    /// The acquisition in progress (0 when idle).
    pub(crate) fn running(&self) -> u32 {
        self.running.get()
    }

    /// Plays the whole script.
    pub(crate) async fn play(&self) {
        let sc = &self.scenario.scenario;
        let total = sc.acquisitions.len() as u32;
        let mut cancels = 0u32;
        for i in 0..=total {
            for idle in sc.idle_cancels.iter().filter(|c| c.before == i) {
                for _ in 0..idle.times {
                    cancels += 1;
                    self.cancel_pending_io(cancels);
                }
            }
            if i == total {
                break;
            }
            let acq = &sc.acquisitions[i as usize];
            if acq.delay_us > 0 {
                self.sim.sleep(Duration::from_micros(acq.delay_us)).await;
            }
            cancels = self.acquire(i + 1, cancels).await;
        }
    }

    /// Acquisition `n`; returns the count of CancelPendingIO calls made so far.
    async fn acquire(&self, n: u32, mut cancels: u32) -> u32 {
        let sc = &self.scenario.scenario;
        let steps = &sc.acquisitions[(n - 1) as usize].steps;
        let tymed = if self.job.pages == 1 {
            TYMED_CALLBACK
        } else {
            TYMED_MULTIPAGE_CALLBACK
        };
        self.trace.push(
            Actor::App,
            Kind::Acquire {
                n,
                tymed,
                buffer: sc.buffer,
            },
        );
        *self.acq.borrow_mut() = Some(AppState {
            n,
            fired: vec![false; steps.len()],
            ..AppState::default()
        });
        self.running.set(n);
        self.start_timed_steps(n, steps);
        let hr = self
            .service
            .acquire_item_data(n, tymed, sc.buffer, self)
            .await;
        self.running.set(0);
        let state = self.acq.borrow_mut().take().unwrap_or_default();
        cancels += state
            .fired
            .iter()
            .zip(steps)
            .filter(|(f, s)| **f && s.action == Action::CancelPendingIo)
            .count() as u32;
        self.trace.push(
            Actor::App,
            Kind::AcquireDone {
                n,
                hr,
                bytes: state.bytes,
            },
        );
        cancels
    }

    /// Starts the second thread's task for every time-triggered step of acquisition `n`.
    fn start_timed_steps(&self, n: u32, steps: &[Step]) {
        for (k, step) in steps.iter().enumerate() {
            if let Trigger::AtUs(at) = step.when {
                let at = self.sim.now() + Duration::from_micros(at);
                let (me, sim) = (self.me.clone(), self.sim.clone());
                self.sim.spawn(async move {
                    sim.sleep_until(at).await;
                    if let Some(app) = me.upgrade() {
                        app.timed_step(n, k);
                    }
                });
            }
        }
    }

    /// CancelPendingIO from the application's second thread, if acquisition `n` still runs.
    fn fire_cancel(&self, n: u32) {
        if self.running.get() != n {
            self.note(format!(
                "cancel after the last band of acquisition {n} not fired: the acquisition had ended"
            ));
            return;
        }
        let count = self.acq.borrow().as_ref().map_or(0, AppState::fired_count);
        self.cancel_pending_io(count);
    }

    /// A time-triggered step: fires only while its acquisition runs.
    fn timed_step(&self, n: u32, k: usize) {
        if self.running.get() != n {
            self.note(format!(
                "step {} of acquisition {n} not fired: the acquisition had ended",
                k + 1
            ));
            return;
        }
        let count = {
            let mut acq = self.acq.borrow_mut();
            let Some(state) = acq.as_mut() else { return };
            state.fired[k] = true;
            state.fired_count()
        };
        self.cancel_pending_io(count);
    }

    /// IWiaItemExtras::CancelPendingIO (xp) / IWiaTransfer::Cancel (vista), the `n`th call.
    fn cancel_pending_io(&self, n: u32) {
        self.trace.push(Actor::App, Kind::CancelPendingIo { n });
        if let Some(state) = self.acq.borrow_mut().as_mut() {
            state.answer.get_or_insert(Hresult::S_FALSE);
        }
        self.service.cancel_pending_io();
    }

    fn note(&self, text: String) {
        self.trace.push(Actor::App, Kind::Note { text });
    }

    /// Counts `message` and fires the callback steps it meets.
    fn decide(&self, state: &mut AppState, message: &Message<'_>) -> CallbackDecision {
        let args = &message.args;
        state.receive(args.reason, args.data.len());
        let steps = &self.scenario.scenario.acquisitions[(state.n - 1) as usize].steps;
        let pages = u64::from(self.job.pages.max(1));
        let last_data = args.reason == ItMsg::Data
            && self.job.pages > 0
            && u64::from(message.page) + 1 == pages
            && message.page_pos + args.data.len() as u64 == self.job.page_bytes();
        let mut decision = CallbackDecision::default();
        for (k, step) in steps.iter().enumerate() {
            if state.fired[k] {
                continue;
            }
            let hit = match step.when {
                Trigger::DataCallback(m) => args.reason == ItMsg::Data && state.data_callbacks == m,
                Trigger::Percent(p) => args.reason == ItMsg::Data && args.percent >= p,
                Trigger::AnyCallback(m) => state.any_callbacks == m,
                Trigger::StatusCallback(m) => {
                    args.reason == ItMsg::Status && state.status_callbacks == m
                }
                Trigger::NewPage(m) => args.reason == ItMsg::NewPage && state.new_pages == m,
                Trigger::LastDataCallback => last_data,
                Trigger::AfterLastDataCallback => {
                    if last_data {
                        state.fired[k] = true;
                        let (me, n) = (self.me.clone(), state.n);
                        self.sim.spawn(async move {
                            if let Some(app) = me.upgrade() {
                                app.fire_cancel(n);
                            }
                        });
                    }
                    false
                }
                Trigger::AtUs(_) => false,
            };
            if !hit {
                continue;
            }
            state.fired[k] = true;
            match step.action {
                Action::Return(hr) => {
                    decision.answer.get_or_insert(hr);
                }
                Action::CancelPendingIo => decision.cancel = true,
            }
        }
        decision
    }
}

impl BandedDataCallback for Application {
    fn banded_data_callback(&self, message: &Message<'_>) -> Hresult {
        // The answer is fixed before a CancelPendingIO made from inside the callback: that call
        // affects later callbacks only.
        let (answer, cancel) = {
            let mut guard = self.acq.borrow_mut();
            let Some(state) = guard.as_mut() else {
                return Hresult::S_OK;
            };
            let decision = self.decide(state, message);
            if let Some(hr) = decision.answer.filter(|hr| *hr != Hresult::S_OK) {
                state.answer.get_or_insert(hr);
            }
            let answer = state.answer.or(decision.answer).unwrap_or(Hresult::S_OK);
            (answer, decision.cancel.then(|| state.fired_count()))
        };
        self.trace.push(
            Actor::App,
            Kind::BandedCallback {
                msg: message.args.reason,
                percent: message.args.percent,
                result: answer,
            },
        );
        if let Some(n) = cancel {
            self.cancel_pending_io(n);
        }
        answer
    }

    fn data_after_cancel(&self, message: &Message<'_>) {
        if let Some(state) = self.acq.borrow_mut().as_mut() {
            state.receive(message.args.reason, message.args.data.len());
        }
    }
}
