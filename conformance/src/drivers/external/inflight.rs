//! The transfers a version 2 driver submitted and whose `done` it has not received yet, and the
//! checks on `submit`, `cancel`, `wait` and blocking requests that keep the exchange
//! unambiguous (DRIVER-PROTOCOL.md, "Version 2").
//!
//! Each entry holds the [`Urb`] the run's context returned for the request. An entry leaves
//! the table when its `done` is delivered; its id is then remembered as delivered (a `cancel`
//! of it is a mistake) until the driver submits that id again.

use std::collections::HashSet;

use super::protocol::Shape;
use crate::driver::{Completion, RunContext, Urb, UsbRequest};

/// A message of a version 2 driver that contradicts what it submitted. Each is one line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum Misuse {
    #[error(
        "submit of id {0}: a transfer with that id is still in flight or its done not yet \
         delivered"
    )]
    DuplicateId(u64),
    #[error(
        "{what} with id {id}: a submitted transfer with that id is still in flight or its \
         done not yet delivered"
    )]
    IdInUse { what: &'static str, id: u64 },
    #[error(
        "submit of id {id}: {max} transfers are in flight already, the most the runner allows"
    )]
    TooMany { id: u64, max: usize },
    #[error("cancel of id {0}: no transfer with that id was submitted")]
    UnknownCancel(u64),
    #[error("cancel of id {0}: that transfer completed and its done was delivered already")]
    CancelFinished(u64),
    #[error(
        "wait with no transfer in flight and no completion to deliver: nothing could ever \
         answer it"
    )]
    NothingToWaitFor,
    #[error(
        "{what} (id {id}) on endpoint {ep:#04x} while submitted transfers are in flight \
         there (ids {ids}): its done would overtake theirs; submit it and wait instead"
    )]
    Overtakes {
        what: &'static str,
        id: u64,
        ep: u8,
        ids: String,
    },
}

/// One submitted transfer.
struct Entry {
    id: u64,
    shape: Shape,
    urb: Urb,
}

/// The submitted transfers of one run; see the module documentation.
pub(super) struct InFlight {
    max: usize,
    /// In submission order.
    entries: Vec<Entry>,
    delivered: HashSet<u64>,
}

impl InFlight {
    /// A table that allows at most `max` transfers in flight.
    pub(super) fn new(max: usize) -> InFlight {
        InFlight {
            max,
            entries: Vec::new(),
            delivered: HashSet::new(),
        }
    }

    fn find(&self, id: u64) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// Submits `request` as transfer `id` through `run`.
    pub(super) fn submit(
        &mut self,
        id: u64,
        request: UsbRequest,
        run: &dyn RunContext,
    ) -> Result<(), Misuse> {
        if self.find(id).is_some() {
            return Err(Misuse::DuplicateId(id));
        }
        if self.entries.len() >= self.max {
            return Err(Misuse::TooMany { id, max: self.max });
        }
        let shape = Shape::of(&request);
        let urb = run.submit(request);
        self.delivered.remove(&id);
        self.entries.push(Entry { id, shape, urb });
        Ok(())
    }

    /// The transfer `cancel` of `id` ends: `None` if it completed already (its `done`, not
    /// delivered yet, keeps its own status). The caller cancels it with no borrow held.
    pub(super) fn to_cancel(&self, id: u64) -> Result<Option<Urb>, Misuse> {
        match self.find(id) {
            Some(e) if e.urb.is_complete() => Ok(None),
            Some(e) => Ok(Some(e.urb.clone())),
            None if self.delivered.contains(&id) => Err(Misuse::CancelFinished(id)),
            None => Err(Misuse::UnknownCancel(id)),
        }
    }

    /// Checks blocking request `what` (id `id`, waiting in endpoint queue `queue`): its id
    /// must not name a submitted transfer, and it must not wait behind submitted transfers.
    pub(super) fn check_blocking(
        &self,
        what: &'static str,
        id: u64,
        queue: Option<u8>,
    ) -> Result<(), Misuse> {
        if self.find(id).is_some() {
            return Err(Misuse::IdInUse { what, id });
        }
        let Some(ep) = queue else {
            return Ok(());
        };
        let ahead: Vec<String> = self
            .entries
            .iter()
            .filter(|e| e.urb.queue() == Some(ep) && !e.urb.is_complete())
            .map(|e| e.id.to_string())
            .collect();
        if ahead.is_empty() {
            return Ok(());
        }
        Err(Misuse::Overtakes {
            what,
            id,
            ep,
            ids: ahead.join(", "),
        })
    }

    /// The handles of every transfer whose `done` is still due, in submission order.
    pub(super) fn urbs(&self) -> Vec<Urb> {
        self.entries.iter().map(|e| e.urb.clone()).collect()
    }

    /// [`InFlight::urbs`], or an error if there is none (a `wait` could never be answered).
    pub(super) fn waitable(&self) -> Result<Vec<Urb>, Misuse> {
        if self.entries.is_empty() {
            return Err(Misuse::NothingToWaitFor);
        }
        Ok(self.urbs())
    }

    /// Takes the completed transfer `urb` out of the table: its id, shape and completion.
    pub(super) fn deliver(&mut self, urb: &Urb) -> Option<(u64, Shape, Completion)> {
        let at = self.entries.iter().position(|e| e.urb.seq() == urb.seq())?;
        let completion = self.entries[at].urb.completion()?;
        let e = self.entries.remove(at);
        self.delivered.insert(e.id);
        Some((e.id, e.shape, completion))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::Urb;

    #[test]
    fn misuse_texts_name_the_message_and_why() {
        let e = Misuse::Overtakes {
            what: "bulk_in",
            id: 9,
            ep: 0x81,
            ids: "7, 8".into(),
        };
        assert_eq!(
            e.to_string(),
            "bulk_in (id 9) on endpoint 0x81 while submitted transfers are in flight there \
             (ids 7, 8): its done would overtake theirs; submit it and wait instead"
        );
        assert_eq!(
            Misuse::CancelFinished(3).to_string(),
            "cancel of id 3: that transfer completed and its done was delivered already"
        );
    }

    #[test]
    fn cancel_tells_unknown_from_delivered_ids() {
        let mut t = InFlight::new(4);
        let urb = Urb::new(1, Some(0x81));
        t.entries.push(Entry {
            id: 5,
            shape: Shape::In,
            urb: urb.clone(),
        });
        assert!(matches!(t.to_cancel(5), Ok(Some(_))));
        assert_eq!(t.to_cancel(6).unwrap_err(), Misuse::UnknownCancel(6));
        assert_eq!(
            t.check_blocking("bulk_in", 6, Some(0x81)).unwrap_err(),
            Misuse::Overtakes {
                what: "bulk_in",
                id: 6,
                ep: 0x81,
                ids: "5".into()
            }
        );
        assert!(t.check_blocking("control_in", 6, Some(0)).is_ok());
        assert_eq!(
            t.check_blocking("now", 5, None).unwrap_err(),
            Misuse::IdInUse { what: "now", id: 5 }
        );
        urb.complete(Completion {
            result: Ok(0),
            data: Vec::new(),
            at: scanemu::time::Instant::ZERO,
        });
        assert!(
            matches!(t.to_cancel(5), Ok(None)),
            "completed, not delivered"
        );
        assert_eq!(t.deliver(&urb).map(|(id, _, _)| id), Some(5));
        assert_eq!(t.to_cancel(5).unwrap_err(), Misuse::CancelFinished(5));
        assert_eq!(t.waitable().unwrap_err(), Misuse::NothingToWaitFor);
    }
}
