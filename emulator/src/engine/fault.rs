//! Injected device faults: where they happen and what the engine does about them.

use serde::{Deserialize, Serialize};

/// A fault to inject, as written in a profile's `faults` list (tag `kind`, snake_case).
///
/// Positional faults name a `page` (0-based within the job, default 0) and a `band` (0-based
/// within the page). Each positional fault fires at most once; [`ScanEngine::set_faults`]
/// re-arms them. The cancel faults (`ignore_cancel`, `slow_cancel`, `stall_on_cancel`,
/// `disconnect_on_cancel`) have no position: they hold for every host cancel of a running job
/// while they are set, and do nothing to a cancel that finds nothing to cancel (idle, already
/// cancelling, aborted). If several are set, the first of `ignore_cancel`, `stall_on_cancel` and
/// `disconnect_on_cancel` in the list decides what a cancel does; `slow_cancel` applies only to a
/// cancel that goes ahead normally.
///
/// "Aborting" faults fire at the time band `band` would have been ready, instead of that band,
/// whether or not the device buffer is full; the engine emits [`EventKind::Fault`] and goes to
/// [`EngineState::Aborted`]. Bands already buffered stay readable until taken or reset.
///
/// [`ScanEngine::set_faults`]: super::ScanEngine::set_faults
/// [`EventKind::Fault`]: super::EventKind::Fault
/// [`EngineState::Aborted`]: super::EngineState::Aborted
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    deny_unknown_fields,
    try_from = "RawFault"
)]
pub enum Fault {
    /// Aborting: the device stops and stalls its bulk IN endpoint.
    Stall {
        /// Page index within the job.
        #[serde(default)]
        page: u16,
        /// Band index within the page.
        band: u32,
    },
    /// Aborting: the device drops off the bus.
    Disconnect {
        /// Page index within the job.
        #[serde(default)]
        page: u16,
        /// Band index within the page.
        band: u32,
    },
    /// Band `band` is ready `delay_us` later than scheduled (later bands keep their schedule
    /// but are never ready before it). The fault event comes just before that band's
    /// `BandReady`.
    LateBand {
        /// Page index within the job.
        #[serde(default)]
        page: u16,
        /// Band index within the page.
        band: u32,
        /// Extra delay in microseconds.
        delay_us: u64,
    },
    /// Band `band` carries only `bytes` bytes (clamped to its full size); then the device ends
    /// the job: `BandReady` with the short count, then the fault event, then `Aborted`.
    ShortBand {
        /// Page index within the job.
        #[serde(default)]
        page: u16,
        /// Band index within the page.
        band: u32,
        /// Bytes the band carries.
        bytes: u64,
    },
    /// ESC/I personality only: the device takes `delay_us` to accept the host's answer (ACK or
    /// CAN) to block `band` of page `page`; the host's write of that byte is NAKed until then.
    /// It holds for that block of every scan. Not aborting; the engine and the native
    /// personality ignore it.
    SlowAck {
        /// Page index within the job.
        #[serde(default)]
        page: u16,
        /// Band (block) index within the page.
        band: u32,
        /// How long the answer is refused, in microseconds.
        delay_us: u64,
    },
    /// Aborting: paper jam in the feeder (also allowed on flatbeds, for testing).
    PaperJam {
        /// Page index within the job.
        #[serde(default)]
        page: u16,
        /// Band index within the page.
        band: u32,
    },
    /// Aborting: the lid or feeder cover was opened.
    CoverOpen {
        /// Page index within the job.
        #[serde(default)]
        page: u16,
        /// Band index within the page.
        band: u32,
    },
    /// Aborting: the feeder pulled more than one sheet at once (a multi-feed, detected by the
    /// device's sensor); handled like a paper jam.
    MultiFeed {
        /// Page index within the job.
        #[serde(default)]
        page: u16,
        /// Band index within the page.
        band: u32,
    },
    /// Aborting: the user pressed the device's Cancel button (device-initiated cancel).
    CancelButton {
        /// Page index within the job.
        #[serde(default)]
        page: u16,
        /// Band index within the page.
        band: u32,
    },
    /// Every host cancel is ignored: `cancel` returns `Ignored`, the engine emits this fault
    /// and `CancelIgnored`, and scanning continues.
    IgnoreCancel,
    /// Every host cancel takes `motor_stop_us` (instead of the profile's) to reach idle; the
    /// engine emits this fault just before `CancelRequested`.
    SlowCancel {
        /// Time from the cancel request to `MotorStopped`, in microseconds.
        motor_stop_us: u64,
    },
    /// Every host cancel turns into a device-side abort: `cancel` returns
    /// [`CancelOutcome::Faulted`](super::CancelOutcome::Faulted), the engine emits this fault,
    /// discards the ready bands, stops production (the motor stops at once; no `MotorStopped`
    /// follows) and goes to `Aborted`. The USB function stalls both bulk endpoints instead of
    /// answering Busy: Get Device Status reports Transaction_Cancelled (0x201F) with both
    /// halted endpoints until the host clears them, and the scan status error is `DataStall`.
    StallOnCancel,
    /// Every host cancel makes the device drop off the bus: `cancel` returns
    /// [`CancelOutcome::Faulted`](super::CancelOutcome::Faulted), the engine emits this fault,
    /// discards the ready bands and goes to `Aborted`; the USB function disconnects in the same
    /// poll, so the Cancel Request itself and every later transfer fail with "no device".
    DisconnectOnCancel,
}

/// A fault as written in JSON, before its fields are checked against its kind.
///
/// Serde's internally tagged enums ignore extra fields on unit variants, so a typo such as
/// `{"kind": "ignore_cancel", "band": 1}` would pass silently; reading through this struct
/// makes every field that the kind does not use an error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    kind: FaultKind,
    page: Option<u16>,
    band: Option<u32>,
    delay_us: Option<u64>,
    bytes: Option<u64>,
    motor_stop_us: Option<u64>,
}

/// A fault object whose fields do not fit its kind.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FaultFieldError {
    /// A field the kind needs is missing.
    #[error("fault `{}` needs field `{field}`", kind.profile_name())]
    Missing {
        /// The fault's kind.
        kind: FaultKind,
        /// The missing field.
        field: &'static str,
    },
    /// A field the kind does not use is present.
    #[error("fault `{}` has no field `{field}`", kind.profile_name())]
    Unused {
        /// The fault's kind.
        kind: FaultKind,
        /// The field.
        field: &'static str,
    },
}

impl TryFrom<RawFault> for Fault {
    type Error = FaultFieldError;

    fn try_from(raw: RawFault) -> Result<Fault, FaultFieldError> {
        let kind = raw.kind;
        let mut used = vec![];
        let mut need = |field: &'static str, present: bool| -> Result<(), FaultFieldError> {
            used.push(field);
            if present {
                Ok(())
            } else {
                Err(FaultFieldError::Missing { kind, field })
            }
        };
        let page = raw.page.unwrap_or(0);
        let fault = match kind {
            FaultKind::Stall
            | FaultKind::Disconnect
            | FaultKind::PaperJam
            | FaultKind::CoverOpen
            | FaultKind::MultiFeed
            | FaultKind::CancelButton => {
                need("band", raw.band.is_some())?;
                used.push("page");
                let band = raw.band.unwrap_or(0);
                match kind {
                    FaultKind::Stall => Fault::Stall { page, band },
                    FaultKind::Disconnect => Fault::Disconnect { page, band },
                    FaultKind::PaperJam => Fault::PaperJam { page, band },
                    FaultKind::CoverOpen => Fault::CoverOpen { page, band },
                    FaultKind::MultiFeed => Fault::MultiFeed { page, band },
                    _ => Fault::CancelButton { page, band },
                }
            }
            FaultKind::LateBand | FaultKind::SlowAck => {
                need("band", raw.band.is_some())?;
                need("delay_us", raw.delay_us.is_some())?;
                used.push("page");
                let (band, delay_us) = (raw.band.unwrap_or(0), raw.delay_us.unwrap_or(0));
                if kind == FaultKind::LateBand {
                    Fault::LateBand {
                        page,
                        band,
                        delay_us,
                    }
                } else {
                    Fault::SlowAck {
                        page,
                        band,
                        delay_us,
                    }
                }
            }
            FaultKind::ShortBand => {
                need("band", raw.band.is_some())?;
                need("bytes", raw.bytes.is_some())?;
                used.push("page");
                Fault::ShortBand {
                    page,
                    band: raw.band.unwrap_or(0),
                    bytes: raw.bytes.unwrap_or(0),
                }
            }
            FaultKind::SlowCancel => {
                need("motor_stop_us", raw.motor_stop_us.is_some())?;
                Fault::SlowCancel {
                    motor_stop_us: raw.motor_stop_us.unwrap_or(0),
                }
            }
            FaultKind::IgnoreCancel => Fault::IgnoreCancel,
            FaultKind::StallOnCancel => Fault::StallOnCancel,
            FaultKind::DisconnectOnCancel => Fault::DisconnectOnCancel,
        };
        let present = [
            ("page", raw.page.is_some()),
            ("band", raw.band.is_some()),
            ("delay_us", raw.delay_us.is_some()),
            ("bytes", raw.bytes.is_some()),
            ("motor_stop_us", raw.motor_stop_us.is_some()),
        ];
        if let Some(&(field, _)) = present.iter().find(|(f, p)| *p && !used.contains(f)) {
            return Err(FaultFieldError::Unused { kind, field });
        }
        Ok(fault)
    }
}

/// The kind of a [`Fault`], without its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// See [`Fault::Stall`].
    Stall,
    /// See [`Fault::Disconnect`].
    Disconnect,
    /// See [`Fault::LateBand`].
    LateBand,
    /// See [`Fault::ShortBand`].
    ShortBand,
    /// See [`Fault::SlowAck`].
    SlowAck,
    /// See [`Fault::PaperJam`].
    PaperJam,
    /// See [`Fault::CoverOpen`].
    CoverOpen,
    /// See [`Fault::CancelButton`].
    CancelButton,
    /// See [`Fault::MultiFeed`].
    MultiFeed,
    /// See [`Fault::IgnoreCancel`].
    IgnoreCancel,
    /// See [`Fault::SlowCancel`].
    SlowCancel,
    /// See [`Fault::StallOnCancel`].
    StallOnCancel,
    /// See [`Fault::DisconnectOnCancel`].
    DisconnectOnCancel,
}

impl FaultKind {
    /// The snake-case name profiles spell the fault with (`cancel_button`).
    pub fn profile_name(self) -> String {
        self.name().replace('-', "_")
    }

    /// The kebab-case name device notes and traces spell the fault with (`cancel-button`;
    /// profiles spell it in snake case, `cancel_button`).
    pub const fn name(self) -> &'static str {
        match self {
            FaultKind::Stall => "stall",
            FaultKind::Disconnect => "disconnect",
            FaultKind::LateBand => "late-band",
            FaultKind::SlowAck => "slow-ack",
            FaultKind::ShortBand => "short-band",
            FaultKind::PaperJam => "paper-jam",
            FaultKind::CoverOpen => "cover-open",
            FaultKind::CancelButton => "cancel-button",
            FaultKind::MultiFeed => "multi-feed",
            FaultKind::IgnoreCancel => "ignore-cancel",
            FaultKind::SlowCancel => "slow-cancel",
            FaultKind::StallOnCancel => "stall-on-cancel",
            FaultKind::DisconnectOnCancel => "disconnect-on-cancel",
        }
    }
}

impl Fault {
    /// The kebab-case name of its kind: [`FaultKind::name`].
    pub const fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// The kind of this fault.
    pub const fn kind(&self) -> FaultKind {
        match self {
            Fault::Stall { .. } => FaultKind::Stall,
            Fault::Disconnect { .. } => FaultKind::Disconnect,
            Fault::LateBand { .. } => FaultKind::LateBand,
            Fault::ShortBand { .. } => FaultKind::ShortBand,
            Fault::SlowAck { .. } => FaultKind::SlowAck,
            Fault::PaperJam { .. } => FaultKind::PaperJam,
            Fault::CoverOpen { .. } => FaultKind::CoverOpen,
            Fault::CancelButton { .. } => FaultKind::CancelButton,
            Fault::MultiFeed { .. } => FaultKind::MultiFeed,
            Fault::IgnoreCancel => FaultKind::IgnoreCancel,
            Fault::SlowCancel { .. } => FaultKind::SlowCancel,
            Fault::StallOnCancel => FaultKind::StallOnCancel,
            Fault::DisconnectOnCancel => FaultKind::DisconnectOnCancel,
        }
    }

    /// `(page, band)` for positional faults, `None` for the cancel faults (`ignore_cancel`,
    /// `slow_cancel`, `stall_on_cancel`, `disconnect_on_cancel`).
    pub const fn position(&self) -> Option<(u16, u32)> {
        match *self {
            Fault::Stall { page, band }
            | Fault::Disconnect { page, band }
            | Fault::LateBand { page, band, .. }
            | Fault::ShortBand { page, band, .. }
            | Fault::SlowAck { page, band, .. }
            | Fault::PaperJam { page, band }
            | Fault::CoverOpen { page, band }
            | Fault::CancelButton { page, band }
            | Fault::MultiFeed { page, band } => Some((page, band)),
            Fault::IgnoreCancel
            | Fault::SlowCancel { .. }
            | Fault::StallOnCancel
            | Fault::DisconnectOnCancel => None,
        }
    }

    /// Whether this fault ends the job in [`EngineState::Aborted`](super::EngineState::Aborted)
    /// (the cancel-time ones when a host cancel triggers them).
    pub const fn aborts(&self) -> bool {
        matches!(
            self.kind(),
            FaultKind::Stall
                | FaultKind::Disconnect
                | FaultKind::ShortBand
                | FaultKind::PaperJam
                | FaultKind::CoverOpen
                | FaultKind::CancelButton
                | FaultKind::MultiFeed
                | FaultKind::StallOnCancel
                | FaultKind::DisconnectOnCancel
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fields_a_kind_does_not_use_are_errors() {
        let err = serde_json::from_str::<super::Fault>(r#"{"kind":"ignore_cancel","band":1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no field `band`"), "{err}");
        let err = serde_json::from_str::<super::Fault>(r#"{"kind":"stall"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs field `band`"), "{err}");
        let err = serde_json::from_str::<super::Fault>(r#"{"kind":"stall","band":1,"colour":2}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
        let ok: super::Fault =
            serde_json::from_str(r#"{"kind":"late_band","page":1,"band":2,"delay_us":5}"#).unwrap();
        assert_eq!(
            ok,
            super::Fault::LateBand {
                page: 1,
                band: 2,
                delay_us: 5
            }
        );
        let round = serde_json::to_string(&super::Fault::IgnoreCancel).unwrap();
        assert_eq!(
            serde_json::from_str::<super::Fault>(&round).unwrap(),
            super::Fault::IgnoreCancel
        );
    }

    use super::*;

    #[test]
    fn serde_shapes() {
        let f: Fault = serde_json::from_str(r#"{"kind":"stall","page":1,"band":3}"#).unwrap();
        assert_eq!(f, Fault::Stall { page: 1, band: 3 });
        let f: Fault =
            serde_json::from_str(r#"{"kind":"late_band","band":2,"delay_us":5}"#).unwrap();
        assert_eq!(
            f,
            Fault::LateBand {
                page: 0,
                band: 2,
                delay_us: 5
            }
        );
        let f: Fault = serde_json::from_str(r#"{"kind":"ignore_cancel"}"#).unwrap();
        assert_eq!(f.position(), None);
        let f: Fault = serde_json::from_str(r#"{"kind":"stall_on_cancel"}"#).unwrap();
        assert_eq!(
            (f, f.position(), f.aborts()),
            (Fault::StallOnCancel, None, true)
        );
        let f: Fault = serde_json::from_str(r#"{"kind":"disconnect_on_cancel"}"#).unwrap();
        assert_eq!(f.kind(), FaultKind::DisconnectOnCancel);
        assert_eq!(
            serde_json::to_string(&Fault::DisconnectOnCancel).unwrap(),
            r#"{"kind":"disconnect_on_cancel"}"#
        );
        assert!(serde_json::from_str::<Fault>(r#"{"kind":"stall","band":1,"x":1}"#).is_err());
        assert!(serde_json::from_str::<Fault>(r#"{"kind":"melt","band":1}"#).is_err());
        let f: Fault =
            serde_json::from_str(r#"{"kind":"slow_ack","band":2,"delay_us":400000}"#).unwrap();
        assert_eq!(
            (f, f.position(), f.aborts()),
            (
                Fault::SlowAck {
                    page: 0,
                    band: 2,
                    delay_us: 400_000
                },
                Some((0, 2)),
                false
            )
        );
        assert!(serde_json::from_str::<Fault>(r#"{"kind":"slow_ack","band":2}"#).is_err());
        assert!(Fault::CancelButton { page: 0, band: 0 }.aborts());
        assert!(!Fault::LateBand {
            page: 0,
            band: 0,
            delay_us: 1
        }
        .aborts());
    }
}
