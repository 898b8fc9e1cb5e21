//! The two roles around the driver under test, as WIA draws them: the application and the
//! service.
//!
//! Calls go one way, as in Windows: [`app`] calls the [`service`] (start a transfer,
//! CancelPendingIO), and the service calls the driver (`drvAcquireItemData`,
//! `drvNotifyPnPEvent`). The service calls the application back only through the
//! [`service::BandedDataCallback`] trait it defines, which the application implements, so
//! `service.rs` never names the application.
//!
//! Both roles write to the run's trace through one [`RoleTrace`], which stamps events with the
//! run's time; while a callback runs that time stands still, so everything the roles record
//! inside one callback carries one timestamp, in real time as in virtual time.

pub(crate) mod app;
pub(crate) mod service;
pub(crate) mod wia2;

use std::cell::Cell;

use scanemu::sim::Sim;

use crate::trace::{Actor, Kind, Recorder};

/// The roles' pen: the run's trace, stamped with the run's clock or with the instant a
/// callback froze.
pub(crate) struct RoleTrace {
    sim: Sim,
    rec: Recorder,
    /// While set, every event is stamped with this time: what happens inside one callback
    /// happens at one instant, in real time as in virtual time.
    frozen_us: Cell<Option<u64>>,
}

impl RoleTrace {
    /// Writes to `rec` at `sim`'s time.
    pub(crate) fn new(sim: Sim, rec: Recorder) -> RoleTrace {
        RoleTrace {
            sim,
            rec,
            frozen_us: Cell::new(None),
        }
    }

    /// The time the next event gets.
    pub(crate) fn now_us(&self) -> u64 {
        self.frozen_us
            .get()
            .unwrap_or_else(|| self.sim.now().total_micros())
    }

    /// Appends an event at [`RoleTrace::now_us`].
    pub(crate) fn push(&self, actor: Actor, kind: Kind) {
        self.rec.push(self.now_us(), actor, kind);
    }

    /// Runs `f` with the clock held at the current instant. `f` must not wait. Calls may nest
    /// (a Cancel made inside a callback): the inner one keeps the outer instant and leaves
    /// the clock held.
    pub(crate) fn at_one_instant<R>(&self, f: impl FnOnce() -> R) -> R {
        let outer = self.frozen_us.get();
        self.frozen_us.set(Some(self.now_us()));
        let result = f();
        self.frozen_us.set(outer);
        result
    }
}
