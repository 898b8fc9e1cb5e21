//! The rule catalogue: what a driver must do around a cancel, each rule with the sentence it
//! comes from, checked over one run's [`Trace`].
//!
//! `docs/rule-plan.md` is the contract for the IDs, statements, quotes and `depends_on` lists;
//! the quotes are copied verbatim from the fact sheet (`reference/cancel-semantics.md`, its "Q:"
//! quotes, with markdown emphasis removed).
//!
//! # Judging a run
//!
//! [`check_all`] runs every rule over a [`RunFacts`] and gives one [`RuleResult`] per rule:
//! - `Pass`: the rule had something to judge and found no violation;
//! - `NotApplicable`: nothing in this run is what the rule is about;
//! - `Fail`: the first violation (an index into `trace.events`) and what was wrong;
//! - `NotJudged`: every violation happened where a rule it depends on had already failed (same
//!   acquisition or an earlier one): it is a consequence, listed but never counted;
//! - `Report`: report-only rules (WIA-XP-GAP) describe what they measured and never fail.
//!
//! # Words every rule uses (see `analysis`)
//! - An *acquisition* runs from the service's `drv-acquire-item-data{n}` to the driver's
//!   `acquire-return{n}` (or the `driver-fault` that ended it).
//! - A *cancel point* of an acquisition is a callback that returned S_FALSE or a failure code, a
//!   `notify-cancel-io` delivered during it, or an aborting device fault (Cancel button, jam,
//!   cover, stall, short band, disconnect).
//! - The *device state* comes from the device's own events: busy (scanning or draining),
//!   cancelling, stopped (idle, aborted by a fault, or halted), gone.
//!
//! # Time in real-time runs
//! Intervals the time-based rules measure are taken net of host lag ([`lag`]): the time the
//! run's threads spent waiting for a CPU inside the interval. A message that judged net time
//! says how much lag it took off.
//!
//! # Why one file
//! Over 600 lines because the catalogue (`CATALOG`, 24 rules with their verbatim quotes, about
//! 270 lines) is read beside the types it fills and the judging that resolves dependencies;
//! the checks themselves live in `checks/`, the shared words in `analysis`.

mod analysis;
mod checks;
pub mod lag;
#[cfg(test)]
mod tests;
pub mod wia2;

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;

use serde::Serialize;

use crate::scenario::{Scenario, ServiceModel};
use crate::trace::{render_event, Trace};
pub use crate::verdict::{Metrics, RuleReport, RuleResult, RuleStatus};

use self::checks::Ctx;

/// What the rules know about one run besides its trace.
#[derive(Clone, Copy, Debug)]
pub struct RunFacts<'a> {
    /// The recorded trace.
    pub trace: &'a Trace,
    /// The scenario that was run (expected outcomes, budget, pages).
    pub scenario: &'a Scenario,
    /// The service model of this run.
    pub service: ServiceModel,
    /// Whether the driver claims to honour WIA_EVENT_CANCEL_IO.
    pub async_cancel: bool,
    /// The device's time from Cancel Request to motor stopped, in microseconds (the profile's
    /// `motor_stop_us`, or a `slow_cancel` fault's value when the scenario injects one).
    pub motor_stop_us: u64,
    /// Real-time runs: how long the run's threads waited for a CPU, over the run
    /// ([`lag::HostLag`]). The time-based rules (idle after cancel, CANCEL_IO on the wire,
    /// callback cadence) take the lag inside each interval they measure off that interval,
    /// so a loaded machine cannot fail a correct driver; `None` in virtual time.
    pub host_lag: Option<&'a lag::HostLag>,
}

/// One violation found by a rule's check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The acquisition it belongs to (1-based), if any; dependency suppression compares these.
    pub acquisition: Option<u32>,
    /// Index into `trace.events` of the event that shows the violation.
    pub event: usize,
    /// What was wrong, in a sentence.
    pub message: String,
}

/// What one rule's check concluded, before dependency suppression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Judgement {
    /// Nothing to judge in this run.
    NotApplicable,
    /// Judged, no violation.
    Pass,
    /// Violations, in trace order.
    Fail(Vec<Finding>),
    /// A report-only rule's measurement.
    Report(String),
}

/// Collects one check's findings and whether it judged anything; [`Verdict::done`] turns them
/// into a [`Judgement`] (findings deduplicated and in trace order). Shared by the WIA 1.0 and
/// WIA 2.0 checks.
#[derive(Default)]
pub(crate) struct Verdict {
    judged: bool,
    findings: Vec<Finding>,
}

impl Verdict {
    /// Something was judged (a pass unless a finding follows).
    pub(crate) fn judged(&mut self) {
        self.judged = true;
    }

    /// A violation at trace event `event`, belonging to acquisition (or call) `acq`.
    pub(crate) fn fail(&mut self, acq: Option<u32>, event: usize, message: String) {
        self.judged = true;
        self.findings.push(Finding {
            acquisition: acq,
            event,
            message,
        });
    }

    /// The judgement: the findings (each event and message once, in trace order), else a pass
    /// when something was judged, else not applicable.
    pub(crate) fn done(mut self) -> Judgement {
        let mut seen = std::collections::BTreeSet::new();
        self.findings
            .retain(|f| seen.insert((f.event, f.message.clone())));
        self.findings.sort_by_key(|f| f.event);
        if !self.findings.is_empty() {
            Judgement::Fail(self.findings)
        } else if self.judged {
            Judgement::Pass
        } else {
            Judgement::NotApplicable
        }
    }
}

/// A rule of the catalogue.
pub struct Rule {
    /// Stable ID (`WIA-CB-STOP`, ...).
    pub id: &'static str,
    /// The rule in one sentence.
    pub statement: &'static str,
    /// The sentence it rests on, verbatim.
    pub quote: &'static str,
    /// Where the quote comes from.
    pub source: &'static str,
    /// Rules whose failure (same or earlier acquisition) makes this one "not judged".
    pub depends_on: &'static [&'static str],
    /// What the check looks at in the trace, in a sentence or two.
    pub looks_at: &'static str,
    /// True for rules that report a measurement and never fail.
    pub report_only: bool,
    check: fn(&Ctx<'_>) -> Judgement,
}

impl Rule {
    /// Runs this rule alone (no dependency suppression).
    pub fn check(&self, facts: &RunFacts<'_>) -> Judgement {
        (self.check)(&Ctx::new(facts))
    }
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rule")
            .field("id", &self.id)
            .field("statement", &self.statement)
            .field("depends_on", &self.depends_on)
            .finish_non_exhaustive()
    }
}

/// Source strings, one per document.
const SRC_CANCEL_TRANSFER: &str =
    "WIA minidriver docs, \"Canceling a Data Transfer\" (canceling-a-data-transfer.md; reference §1.2)";
const SRC_CANCEL_PENDING: &str = "WIA minidriver docs, \"Canceling Pending I/O Operations\" (canceling-pending-i-o-operations.md; reference §1.2)";
const SRC_ACQUIRE: &str =
    "WIA minidriver docs, IWiaMiniDrv::drvAcquireItemData (nf-wiamindr_lh-iwiaminidrv-drvacquireitemdata.md; reference §1.6)";
const SRC_CALLBACK: &str =
    "WIA minidriver docs, IWiaMiniDrvCallBack::MiniDrvCallback (nf-wiamindr_lh-iwiaminidrvcallback-minidrvcallback.md; reference §1.5)";
const SRC_BANDED: &str = "WIA application docs, IWiaDataCallback::BandedDataCallback, lMessage table, IT_MSG_DATA row (wiadef.h values; reference §1.3)";
const SRC_PNP: &str =
    "WIA minidriver docs, IWiaMiniDrv::drvNotifyPnpEvent (nf-wiamindr_lh-iwiaminidrv-drvnotifypnpevent.md; reference §1.8)";
const SRC_XP: &str = "WIA driver docs, \"Cancellation of Data Transfers in Windows XP\" (the seed page; reference §1.1)";
const SRC_VISTA: &str =
    "WIA driver docs, \"Cancellation of Data Transfers in Windows Vista\" (reference §2.1)";
const SRC_WPD: &str = "Microsoft WPD team blog, \"Cancellation behavior of MTP/USB devices\", Case A. When the Host Cancels (reference §4.3)";
const SRC_USB_COMPLETE: &str =
    "USB Complete, 4th ed. (Jan Axelson), ch. 7, on the Still Image class (reference §4.4)";
const SRC_CONTEXT: &str = "WIA minidriver docs, MINIDRV_TRANSFER_CONTEXT, lBufferSize row (ns-wiamindr_lh-_minidrv_transfer_context.md; reference §1.7)";
const SRC_HLK: &str = "Windows hardware requirement Device.Imaging.Scanner.Base.dataTransfer, the list the WIA Transfer Test certifies, item H14 (device-imaging-scanner.md; wia2-stream.md §3; reference §5)";
const SRC_HCK: &str =
    "Windows HCK, \"WIA Transfer Test\" (Device.Imaging.Scanner.Base.dataTransfer; reference §5)";

static CATALOG: [Rule; 24] = [
    Rule {
        id: "WIA-CB-STOP",
        statement: "no IT_MSG_DATA callback after a callback returned S_FALSE or an error (same acquisition)",
        quote: "If the method returns S_FALSE, the data transfer has been canceled. The WIA minidriver must stop all acquisition activity and return to an idle state.",
        source: SRC_CANCEL_TRANSFER,
        depends_on: &[],
        looks_at: "In each acquisition, the first callback whose result is S_FALSE or a failure HRESULT; every IT_MSG_DATA callback after it in the same acquisition is a violation.",
        report_only: false,
        check: checks::cb_stop,
    },
    Rule {
        id: "WIA-RET-SFALSE",
        statement: "drvAcquireItemData returns S_FALSE when the transfer was cancelled (app S_FALSE, honoured CANCEL_IO, vista sticky, device Cancel button)",
        quote: "If the transfer was canceled, the method should return S_FALSE.",
        source: SRC_ACQUIRE,
        depends_on: &[],
        looks_at: "The acquisition's first cancel point: a callback's S_FALSE (the app's or vista's sticky one), WIA_EVENT_CANCEL_IO when the driver claims async cancel and the transfer had not finished, or a device-initiated cancel (the Cancel button, or a short band: the device \"is allowed to cancel an operation at any time by returning less data than the host is expecting\", reference §1.2); then acquire-return must carry S_FALSE (a failure code is also accepted when the device left the bus after the cancel). Error callbacks and other device faults are left to WIA-ERR-PROPAGATE and WIA-OUTCOME.",
        report_only: false,
        check: checks::ret_sfalse,
    },
    Rule {
        id: "WIA-ERR-PROPAGATE",
        statement: "an error HRESULT returned by the callback is returned unchanged by drvAcquireItemData",
        quote: "All return codes received from the IWiaMiniDrvCallBack::MiniDrvCallback method should be returned in the IWiaMiniDrv::drvAcquireItemData method.",
        source: SRC_CANCEL_TRANSFER,
        depends_on: &[],
        looks_at: "In each acquisition whose first stopping callback result is a failure HRESULT, acquire-return must carry exactly that HRESULT.",
        report_only: false,
        check: checks::err_propagate,
    },
    Rule {
        id: "WIA-OUTCOME",
        statement: "each acquisition ends as the scenario expects (complete / cancelled / error / exact HRESULT)",
        quote: "On success, the method should return S_OK and clear the device error value pointed to by plDevErrVal. If the transfer was canceled, the method should return S_FALSE.",
        source: "WIA minidriver docs, IWiaMiniDrv::drvAcquireItemData and its ADF result table (reference §1.6)",
        depends_on: &[
            "WIA-RET-SFALSE",
            "WIA-ERR-PROPAGATE",
            "WIA-FAULT-NO-HANG",
            "USB-CANCEL-SENT",
            "USB-STATUS-POLLED",
            "USB-HALTS-CLEARED",
            "USB-NO-STALE",
            "WIA-IDLE-AFTER-CANCEL",
            "WIA-CADENCE",
        ],
        looks_at: "Each acquisition's acquire-return against the scenario's `expect`: complete = S_OK (whether the whole image arrived is the data rules' business); cancelled = S_FALSE; error = FAILED(hr); hresult = that exact code; one_of = any of its outcomes. An expected acquisition that never ran or never returned is a violation.",
        report_only: false,
        check: checks::outcome,
    },
    Rule {
        id: "WIA-CANCEL-IO-ASAP",
        statement: "a driver that claims async cancel stops after WIA_EVENT_CANCEL_IO: no IT_MSG_DATA callback after the event, a cancel on the wire (Cancel Request, Device Reset or endpoint abort) within 10 ms virtual, and no read resubmitted on an endpoint it aborted",
        quote: "If this method is called with *pEventGuid set to WIA_EVENT_CANCEL_IO device event ..., it should cancel all current I/O operations as soon as possible.",
        source: SRC_PNP,
        depends_on: &[],
        looks_at: "Only for drivers that claim async cancel. For each notify-cancel-io inside an acquisition that had not finished: no IT_MSG_DATA callback after it (the callback the application cancelled from inside is not \"after\"), and, if the device was scanning at that moment, a CANCEL (0x64), DEVICE_RESET (0x66), port reset or endpoint abort at most 10 ms after it. An endpoint abort followed by a new read on that endpoint, before any CANCEL or DEVICE_RESET, is no cancel: it restarts the I/O it cancelled, and is itself a violation. A new read is a bulk completion on that endpoint besides the transfers the abort ended (`cancelled` at its instant, or the one still on the wire, `ok` a little later): one that ends without data, or carries data while the device produced or handed over a band since the abort.",
        report_only: false,
        check: checks::cancel_io_asap,
    },
    Rule {
        id: "WIA-XP-GAP",
        statement: "(report, never fails) under xp, bands read from the device after CancelPendingIO when the driver lacks async cancel",
        quote: "there is no connection between the two notification methods",
        source: SRC_XP,
        depends_on: &[],
        looks_at: "Under xp, for a driver without async cancel: per acquisition with a notify-cancel-io, the bands (device band-sent, else bulk IN reads) and bytes read after it, and how long until a callback's S_FALSE told the driver.",
        report_only: true,
        check: checks::xp_gap,
    },
    Rule {
        id: "WIA-VISTA-STICKY",
        statement: "under vista, after Cancel every later callback returns S_FALSE (service self-check) and the driver ends the acquisition with S_FALSE",
        quote: "When an application calls IWiaTransfer::Cancel, the IWiaMiniDrv::drvNotifyPnPEvent method should be called into the driver with WIA_EVENT_CANCEL_IO. In addition, the ... GetNextStream and IWiaMiniDrvTransferCallback::SendMessage callback functions must always return S_FALSE after the transfer has been canceled.",
        source: SRC_VISTA,
        depends_on: &[],
        looks_at: "Under vista, after each application Cancel inside an acquisition: the service delivers notify-cancel-io, and every later callback of the acquisition (not the one the application cancelled from inside, which keeps its own answer) has result S_FALSE with sticky set. The driver's S_FALSE return after a sticky S_FALSE is judged (once) by WIA-RET-SFALSE.",
        report_only: false,
        check: checks::vista_sticky,
    },
    Rule {
        id: "WIA-IDLE-AFTER-CANCEL",
        statement: "after a cancel point the device is idle (motor stopped, status OK) within budget: cancel point -> device idle <= profile motor stop + 50 ms",
        quote: "The WIA minidriver must stop all acquisition activity and return to an idle state.",
        source: SRC_CANCEL_TRANSFER,
        depends_on: &["USB-CANCEL-SENT", "USB-STATUS-POLLED"],
        looks_at: "From the acquisition's first cancel point the driver acts on (a stopping callback, a device fault, or CANCEL_IO when the driver claims async cancel and put a cancel on the wire within 10 ms) to the first device event after which the device is stopped (motor-stopped, drained, idle, reset, or a fault that ended the job): at most max(motor stop, the device's observed cancel-to-stop time) + 50 ms. Acquisitions that never returned or whose device left the bus are not judged here.",
        report_only: false,
        check: checks::idle_after_cancel,
    },
    Rule {
        id: "WIA-CANCEL-RETURN",
        statement: "a cancelled acquisition returns without delay: drvAcquireItemData returns at most 50 ms (virtual) after the device is stopped again following the cancel point the driver acts on",
        quote: "Return from IWiaMiniDrv::drvAcquireItemData calls during canceled transfers in less time than during completed transfers.",
        source: SRC_HLK,
        depends_on: &[
            "USB-CANCEL-SENT",
            "USB-STATUS-POLLED",
            "USB-HALTS-CLEARED",
            "WIA-IDLE-AFTER-CANCEL",
            "WIA-FAULT-NO-HANG",
        ],
        looks_at: "The budget, derived for virtual time: a completed transfer of the item cannot return before the device has produced its last band; a cancelled one has nothing left to wait for once the device has stopped again (motor stopped, buffers flushed: WIA-IDLE-AFTER-CANCEL judges how soon). So from the cancel point the driver acts on (an S_FALSE, CANCEL_IO honoured by a driver that claims async cancel, a device-initiated cancel), drvAcquireItemData must return at most 50 ms after the first moment the device is stopped again, or after the cancel point if it already was. A cancelled transfer that meets it returns about the device's stop time + 50 ms after the cancel, less than the completed transfer would take whenever bands were still to come after that; and the driver is never charged for a device slow to stop (a slow motor, an ignored Cancel Request). Acquisitions whose device never stopped, or left the bus, are not judged here.",
        report_only: false,
        check: checks::cancel_return,
    },
    Rule {
        id: "WIA-NEXT-TRANSFER",
        statement: "the acquisition after a cancelled one is accepted by the device and completes with S_OK when the scenario expects completion",
        quote: "It is then ready for the next data transfer.",
        source: SRC_CANCEL_TRANSFER,
        depends_on: &[
            "USB-CANCEL-SENT",
            "USB-STATUS-POLLED",
            "USB-HALTS-CLEARED",
            "USB-NO-STALE",
            "WIA-IDLE-AFTER-CANCEL",
        ],
        looks_at: "For each acquisition that follows one with a cancel point or a non-S_OK return, and that the scenario expects to complete: no start-refused device event and no failed START_SCAN, and acquire-return S_OK.",
        report_only: false,
        check: checks::next_transfer,
    },
    Rule {
        id: "WIA-DATA-CONTIGUOUS",
        statement: "within a page offset(n+1) = offset(n) + length(n), first offset 0",
        quote: "the current offset (in bytes) into the transfer buffer from the beginning of the buffer",
        source: SRC_CALLBACK,
        depends_on: &[],
        looks_at: "The offset and length of every IT_MSG_DATA callback, per acquisition and page: the first is 0, each next one starts where the previous ended.",
        report_only: false,
        check: checks::data_contiguous,
    },
    Rule {
        id: "WIA-DATA-EXACT",
        statement: "each IT_MSG_DATA's bytes equal the image at the running byte count of the page (crc == expect_crc)",
        quote: "pbBuffer holds a band",
        source: SRC_BANDED,
        depends_on: &["USB-NO-STALE"],
        looks_at: "Every IT_MSG_DATA callback's crc against expect_crc (the service's CRC of the image bytes at the page's running byte count).",
        report_only: false,
        check: checks::data_exact,
    },
    Rule {
        id: "WIA-DATA-LENGTH",
        statement: "each IT_MSG_DATA's lLength is the number of bytes it carries, and offset + lLength stays within the page",
        quote: "pbBuffer holds a band; lOffset/lLength valid",
        source: SRC_BANDED,
        depends_on: &["WIA-DATA-CONTIGUOUS"],
        looks_at: "Every IT_MSG_DATA callback: lLength (\"length of the current band\", reference §1.3) against the bytes the call carried (the trace's `carried`, present when they differ), and offset + lLength against the page's size (bytes per line x lines). WIA-DATA-CONTIGUOUS compares each band with the next one only; this also judges a page's last band.",
        report_only: false,
        check: checks::data_length,
    },
    Rule {
        id: "WIA-DATA-BUFFER",
        statement: "no IT_MSG_DATA callback hands over more bytes than lBufferSize, the transfer buffer's size",
        quote: "total size of the transfer buffer",
        source: SRC_CONTEXT,
        depends_on: &["USB-NO-STALE"],
        looks_at: "Every IT_MSG_DATA callback's lLength and the bytes it carried, against the buffer size of its acquisition (the application's `acquire`, the scenario's `buffer`): a band larger than the buffer must be split across callbacks.",
        report_only: false,
        check: checks::data_buffer,
    },
    Rule {
        id: "WIA-DATA-COMPLETE",
        statement: "an acquisition that returns S_OK delivered the whole image: every page whole, as many pages as asked for, and 100 % on its last band (WIA_STATUS_END_OF_MEDIA: every page it delivered whole)",
        quote: "On success, the method should return S_OK and clear the device error value pointed to by plDevErrVal.",
        source: SRC_ACQUIRE,
        depends_on: &["WIA-RET-SFALSE", "WIA-ERR-PROPAGATE"],
        looks_at: "Each acquisition that returned S_OK or WIA_STATUS_END_OF_MEDIA: the bytes its IT_MSG_DATA callbacks carried, per page (pages counted by IT_MSG_NEW_PAGE), against the page's size; for S_OK also the page count against the pages asked for (flatbed 1; ADF `pages`, unless 0 = until the feeder is empty) and, when the total is known, percent 100 on the last IT_MSG_DATA. Less data than the page is a cancel (the device \"is allowed to cancel an operation at any time by returning less data than the host is expecting\", reference §1.2), never a success.",
        report_only: false,
        check: checks::data_complete,
    },
    Rule {
        id: "WIA-PERCENT",
        statement: "percent is non-decreasing within an acquisition, within 0..=100, and 100 only in a transfer that completes",
        quote: "The percent complete values are sent directly from the driver. The WIA service does not adjust the values.",
        source: SRC_CALLBACK,
        depends_on: &[],
        looks_at: "The percent of every callback: within 0..=100; never lower than the previous callback's on the same page (a new page may start again from 0); 100 neither after a callback told the driver to stop nor while more IT_MSG_DATA of the same page follows.",
        report_only: false,
        check: checks::percent,
    },
    Rule {
        id: "WIA-CADENCE",
        statement: "during a transfer, no gap between callbacks exceeds min(1 s, duration/10) x 1.5, never asking for more than ten callbacks a second",
        quote: "it should be called about ten times, or roughly once per second during the transfer, whichever is more often.",
        source: SRC_ACQUIRE,
        depends_on: &[],
        looks_at: "Per acquisition with IT_MSG_DATA, from drvAcquireItemData to the last callback (or the callback that stopped the transfer): the gap before each callback, against 1.5 x max(100 ms, min(1 s, that duration / 10)). \"Whichever is more often\" is the shorter interval: ten callbacks spread over the transfer (duration / 10) in a transfer shorter than ten seconds, one a second in a longer one; 1.5 is the tolerance for \"about\" and \"roughly\"; the 100 ms floor keeps a transfer of a few virtual milliseconds from asking for callbacks more often than bands arrive. Status callbacks while waiting count.",
        report_only: false,
        check: checks::cadence,
    },
    Rule {
        id: "USB-CANCEL-SENT",
        statement: "when an acquisition ends (cancelled, failed, or even S_OK) while the device is still scanning or holds image data, the driver sent Cancel Request (0x64) or Device Reset (0x66) before returning",
        quote: "When the device receives a cancellation request from the host, it should return Device_Busy (0x2019) for a GetDeviceStatus query.",
        source: SRC_WPD,
        depends_on: &["WIA-DATA-COMPLETE", "USB-NO-STALE"],
        looks_at: "Each acquisition where the device is still scanning or draining (bands produced, not taken) when acquire-return happens, whatever it returned: a CANCEL (0x64), DEVICE_RESET (0x66) or port reset must appear between the first cancel point (or the start) and the return. An S_OK return that left the device busy is judged here too; when the image it delivered was also incomplete or began with a stale band, WIA-DATA-COMPLETE or USB-NO-STALE counts the defect.",
        report_only: false,
        check: checks::cancel_sent,
    },
    Rule {
        id: "USB-STATUS-POLLED",
        statement: "after a Cancel Request, the driver polled Get Device Status until it answered OK (0x2001) before returning",
        quote: "The device should then perform cancellation and clean up, and return Status_OK (0x2001) for subsequent GetDeviceStatus requests.",
        source: SRC_WPD,
        depends_on: &[],
        looks_at: "After the last CANCEL (0x64) of an acquisition and before acquire-return: a GET_DEVICE_STATUS answered 0x2001 (or 0x201F, a device-initiated cancel whose halts USB-HALTS-CLEARED judges), or a device reset. Not judged when the device left the bus.",
        report_only: false,
        check: checks::status_polled,
    },
    Rule {
        id: "USB-HALTS-CLEARED",
        statement: "after a device-initiated cancel (status 0x201F with halted endpoints), every listed endpoint is cleared (CLEAR_FEATURE(ENDPOINT_HALT)) or the device reset, before the acquisition returns",
        quote: "A device using the bulk-only protocol cancels a transfer by stalling the bulk endpoints. The host then sends a class-specific Get_Device_Status request and uses the Clear Feature request to clear the stalled endpoints.",
        source: SRC_USB_COMPLETE,
        depends_on: &[],
        looks_at: "Endpoints listed halted by GET_DEVICE_STATUS 0x201F replies inside an acquisition (what the driver was told): after the last listing and before acquire-return, a successful clear-halt for that endpoint (or the device's halt-cleared), a device reset, or the device's idle.",
        report_only: false,
        check: checks::halts_cleared,
    },
    Rule {
        id: "USB-NO-PENDING",
        statement: "no USB transfer is left pending when drvAcquireItemData returns",
        quote: "The WIA minidriver should cancel all current I/O operations and return to an idle state.",
        source: SRC_CANCEL_PENDING,
        depends_on: &[],
        looks_at: "The `pending` count the host reports in each acquire-return: it must be 0.",
        report_only: false,
        check: checks::no_pending,
    },
    Rule {
        id: "USB-NO-STALE",
        statement: "the first IT_MSG_DATA of an acquisition that follows a cancelled one carries the new image's first bytes",
        quote: "It is then ready for the next data transfer.",
        source: "WIA minidriver docs, \"Canceling a Data Transfer\" (reference §1.2), with the second-transfer check of the derived checklist (reference §7)",
        depends_on: &[],
        looks_at: "For each acquisition after one with a cancel point or a non-S_OK return: its first IT_MSG_DATA callback's crc equals expect_crc (the new image's first bytes).",
        report_only: false,
        check: checks::no_stale,
    },
    Rule {
        id: "WIA-FAULT-NO-HANG",
        statement: "every acquisition returns (no hang, no crash) within the scenario budget, also when the device faults during a cancel",
        quote: "verifies that a driver does not cause applications or the WIA service to crash or hang during data transfer.",
        source: SRC_HCK,
        depends_on: &[],
        looks_at: "Every driver-fault event (hang, crash, protocol error) is a violation; so is an acquisition without acquire-return, or one that returned after the scenario's budget_us.",
        report_only: false,
        check: checks::fault_no_hang,
    },
    Rule {
        id: "WIA-IDLE-CANCEL-HARMLESS",
        statement: "CancelPendingIO while idle, or twice, does no harm: the driver sends nothing that fails and the next acquisition completes",
        quote: "The IWiaItemExtras::CancelPendingIO method can be called at any time.",
        source: SRC_CANCEL_PENDING,
        depends_on: &["USB-CANCEL-SENT", "USB-STATUS-POLLED"],
        looks_at: "After an application CancelPendingIO outside any acquisition: no USB transfer fails (stall, no-device ...) until the next acquisition starts, and that acquisition returns S_OK when the scenario expects completion. After a CancelPendingIO on an acquisition that already had a cancel point (a second cancel): no USB transfer fails until it returns.",
        report_only: false,
        check: checks::idle_cancel_harmless,
    },
];

/// The whole catalogue, in the order of `docs/rule-plan.md`.
pub fn catalog() -> &'static [Rule] {
    &CATALOG
}

/// The rule with this ID.
pub fn find(id: &str) -> Option<&'static Rule> {
    CATALOG.iter().find(|r| r.id == id)
}

/// A rule explained for people (`scanconform explain RULE-ID`).
pub fn explain(id: &str) -> Option<String> {
    let r = find(id)?;
    let mut s = String::new();
    let _ = writeln!(s, "{}: {}", r.id, r.statement);
    let _ = writeln!(s, "  \"{}\"", r.quote);
    let _ = writeln!(s, "    -- {}", r.source);
    let _ = writeln!(s, "  checks: {}", r.looks_at);
    if r.depends_on.is_empty() {
        let _ = writeln!(s, "  depends on: -");
    } else {
        let _ = writeln!(
            s,
            "  depends on: {} (a violation after one of these failed, in the same or an earlier acquisition, is listed as not judged)",
            r.depends_on.join(", ")
        );
    }
    if r.report_only {
        let _ = writeln!(s, "  report only: it never fails");
    }
    Some(s)
}

/// Runs every rule, suppresses consequences of failed dependencies, and measures the run.
pub fn check_all(facts: &RunFacts<'_>) -> RuleReport {
    let ctx = Ctx::new(facts);
    let judgements = CATALOG
        .iter()
        .map(|r| (r.id, r.depends_on, (r.check)(&ctx)))
        .collect();
    let results = resolve(judgements);
    let mut metrics = checks::metrics(&ctx);
    metrics.rules_checked = results
        .iter()
        .filter(|r| r.status != RuleStatus::NotApplicable)
        .count() as u32;
    RuleReport { results, metrics }
}

/// One rule's judgement before dependency suppression: its ID, what it depends on, and what
/// its check concluded.
pub(crate) type RawJudgement = (&'static str, &'static [&'static str], Judgement);

/// Turns every rule's judgement into its result, in the order given: a finding that a failed
/// dependency explains (a finding of it in the same or an earlier acquisition) is not counted,
/// and a rule whose every finding is explained is "not judged". Shared by every catalogue.
pub(crate) fn resolve(judgements: Vec<RawJudgement>) -> Vec<RuleResult> {
    let raw: BTreeMap<&'static str, &[Finding]> = judgements
        .iter()
        .filter_map(|(id, _, j)| match j {
            Judgement::Fail(f) if !f.is_empty() => Some((*id, f.as_slice())),
            _ => None,
        })
        .collect();
    let mut results = Vec::with_capacity(judgements.len());
    for (id, depends_on, j) in &judgements {
        let status = match j {
            Judgement::NotApplicable => RuleStatus::NotApplicable,
            Judgement::Pass => RuleStatus::Pass,
            Judgement::Report(m) => RuleStatus::Report { message: m.clone() },
            Judgement::Fail(findings) => suppress(depends_on, findings, &raw),
        };
        results.push(RuleResult { id, status });
    }
    results
}

/// The failed dependency that explains `f`, if any: a dependency with a finding in the same or
/// an earlier acquisition (a finding tied to no acquisition matches every acquisition).
fn explained_by(
    depends_on: &[&'static str],
    f: &Finding,
    raw: &BTreeMap<&'static str, &[Finding]>,
) -> Option<&'static str> {
    depends_on.iter().copied().find(|dep| {
        raw.get(dep).is_some_and(|dep_findings| {
            dep_findings
                .iter()
                .any(|d| match (d.acquisition, f.acquisition) {
                    (Some(da), Some(fa)) => da <= fa,
                    _ => true,
                })
        })
    })
}

fn suppress(
    depends_on: &[&'static str],
    findings: &[Finding],
    raw: &BTreeMap<&'static str, &[Finding]>,
) -> RuleStatus {
    if findings.is_empty() {
        return RuleStatus::Pass;
    }
    let mut counted: Vec<&Finding> = Vec::new();
    let mut because = None;
    for f in findings {
        match explained_by(depends_on, f, raw) {
            Some(dep) => {
                because.get_or_insert(dep);
            }
            None => counted.push(f),
        }
    }
    counted.sort_by_key(|f| f.event);
    match (counted.first(), because) {
        (Some(first), _) => {
            let mut message = first.message.clone();
            if counted.len() > 1 {
                let _ = write!(message, " (and {} more violations)", counted.len() - 1);
            }
            RuleStatus::Fail {
                event: first.event,
                message,
            }
        }
        (None, Some(dep)) => RuleStatus::NotJudged { because: dep },
        (None, None) => RuleStatus::Pass,
    }
}

/// A failure for people: the rule, its quote and source, the message, and the trace around the
/// violating event (5 before, 3 after, the violation marked `>>`).
pub fn render_failure(rule: &Rule, trace: &Trace, event: usize, message: &str) -> String {
    render_failure_of(
        (rule.id, rule.statement, rule.quote, rule.source),
        trace,
        event,
        message,
    )
}

/// [`render_failure`] for a rule of any catalogue: `(id, statement, quote, source)`.
pub fn render_failure_of(
    (id, statement, quote, source): (&str, &str, &str, &str),
    trace: &Trace,
    event: usize,
    message: &str,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "FAIL {id}: {statement}");
    let _ = writeln!(s, "  \"{quote}\"");
    let _ = writeln!(s, "    -- {source}");
    let _ = writeln!(s, "  {message}");
    if trace.events.is_empty() {
        let _ = writeln!(s, "  (empty trace)");
        return s;
    }
    let at = event.min(trace.events.len() - 1);
    let _ = writeln!(s, "  trace around event #{event}:");
    let from = at.saturating_sub(5);
    let to = (at + 3).min(trace.events.len() - 1);
    for i in from..=to {
        let mark = if i == event { ">>" } else { "  " };
        let _ = writeln!(s, "  {mark} #{i:<4} {}", render_event(&trace.events[i]));
    }
    s
}
