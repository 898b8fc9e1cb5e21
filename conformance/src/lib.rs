//! `scanconform`: replays scripted cancel scenarios against scanner drivers and checks what the
//! documentation says a driver must do when a scan is cancelled.
//!
//! # The facts it rests on
//!
//! Windows XP's WIA documentation gives an application two ways to cancel a banded transfer
//! (return S_FALSE from `IWiaDataCallback::BandedDataCallback`, or call
//! `IWiaItemExtras::CancelPendingIO`) and a minidriver two ways to learn of it (S_FALSE from
//! `IWiaMiniDrvCallBack::MiniDrvCallback`, or `drvNotifyPnPEvent(WIA_EVENT_CANCEL_IO)`), and
//! says that "there is no connection between the two". Vista connects them: after
//! `IWiaTransfer::Cancel` every later callback "must always return S_FALSE". A driver returns
//! S_FALSE from `drvAcquireItemData` when cancelled (a success code: `FAILED(hr)` misses it) and
//! the application's error when the callback failed. Every rule quotes its sentence from
//! `reference/cancel-semantics.md`.
//!
//! # Roles, as WIA draws them
//!
//! ```text
//! scenario ─► app ──BandedDataCallback answer / CancelPendingIO──► service (xp | vista)
//!                                 MiniDrvCallback answer, drvNotifyPnPEvent │
//!                                                                           ▼
//!                      driver under test ──UsbHost──► emulated scanner (scanemu)
//! every role ─► one trace ─► rules ─► verdict ─► report
//! ```
//!
//! - [`driver`]: the contract a driver under test implements ([`driver::MiniDriver`]), and the
//!   small [`driver::RunContext`] the runner lends it. Stable, for outside authors.
//! - `roles` (private): the scripted application and the service. Calls go one way, app →
//!   service → driver; the service calls the application back only through a
//!   `BandedDataCallback` trait it defines.
//! - [`run`]: one run. It builds the host ([`run::Transport`]: in-process, replay, USB/IP,
//!   libusb), the roles and the driver's context, plays them on scanemu's `Sim` until the
//!   script ends or the budget runs out, and judges the trace. A run never leaves its thread;
//!   [`run::parallel`] puts whole runs on worker threads and hands their results back in
//!   catalog order (`run --jobs`). [`device`] serves the scenario's scanner over USB/IP for
//!   runs and for SANE backends alike; [`record`] keeps a run as a recording and replays it.
//! - [`drivers`]: the built-in drivers (reference, legacy-xp, the mutants) and the adapter for
//!   drivers in any language, a process speaking JSON lines ([`drivers::external`]).
//! - [`sane`]: SANE backends loaded with dlopen, played against the same kind of scenarios.
//! - WIA 2.0 beside WIA 1.0, in the same structure: the stream contract
//!   [`driver::wia2::MiniDriver2`], its roles (`roles::wia2`: the application with its
//!   `IStream`s, the service), [`run::wia2`], [`rules::wia2`] (the HLK dataTransfer
//!   obligations), [`scenario::wia2`] and [`drivers::wia2`]; `conformance/WIA2.md` describes it.
//!
//! # The trace, the rules, the verdict
//!
//! [`trace`] is one list of typed events `{at_us, actor, event, fields}` from every role; USB
//! outcomes and device notes are stored as types, and strings exist only where a trace is
//! rendered (aligned text, JSON lines; `conformance/TRACE.md` lists every event). [`rules`] is
//! the catalogue: each rule has an ID, its quoted sentence and a check over the trace; rules
//! match on the trace's types. [`verdict`] holds what a check concludes, shared by the WIA and
//! SANE catalogues, and [`report`] turns every driver kind's runs into one record per run and
//! renders them (summary table, JSON, JUnit, HTML with SVG timelines) for the binary to print.
//! [`scenario`] reads the scenario files; [`wia`] holds the WIA values (`Hresult`, `IT_MSG_*`).
//!
//! # Time
//!
//! The default run is virtual time: scanemu's `Sim` runs the device, the host, the driver and
//! the roles as futures on one thread and jumps time to the next timer when every task waits,
//! so a 40-second scan replays in milliseconds and the same scenario gives a byte-identical
//! trace every run. An external driver keeps that: while it owns the turn the runner blocks on
//! its answer, so no task runs and time cannot move. Runs over USB/IP or libusb use the wall
//! clock (`Sim::realtime`); their traces are checked by the same rules, not by snapshots.
//! On the WIA side nothing reads the wall clock but `Sim::realtime`, the external driver's
//! wall-clock guards and the USB/IP server's epoch; SANE backends ([`sane`]) always run on the
//! wall clock.
//!
//! # Where unsafe lives
//!
//! `#![deny(unsafe_code)]` holds for the crate except [`sane::ffi`] (dlopen of SANE backends
//! and their C ABI), each block with a `// SAFETY:` line. The libusb-1.0 stand-in
//! ([`libusb`]) is loaded and checked from safe code; its `unsafe` lives in its own crate
//! (`emulator/libusb-shim`).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod device;
pub mod driver;
pub mod drivers;
pub mod libusb;
pub mod record;
pub mod report;
mod roles;
pub mod rules;
pub mod run;
pub mod sane;
pub mod scenario;
pub mod trace;
pub mod verdict;
pub mod wia;
