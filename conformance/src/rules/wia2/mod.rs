//! The WIA 2.0 catalogue: what a stream driver must do, one rule per obligation of the HLK
//! requirement `Device.Imaging.Scanner.Base.dataTransfer` that a trace can judge (H1-H28), plus
//! the driver-side sentences of the DDI pages it rests on, each with its sentence quoted
//! verbatim from `reference/wia2-stream.md` (emphasis removed) and its source.
//!
//! The judging is the WIA 1.0 catalogue's (`super::resolve`): each rule's findings, a
//! dependency's failure in the same or an earlier call making a finding "not judged". The
//! device's USB hygiene is judged by the WIA 1.0 catalogue's own device-level rules
//! ([`SHARED`]: Cancel Request sent, status polled, halts cleared, nothing pending), which read
//! WIA 2.0 calls and their stop answers as they read WIA 1.0 acquisitions and callbacks.
//!
//! H18 (an identical device transferring at the same time) is judged in runs whose scenario
//! installs one (`peer`): a second device of the same profile with its own instance of the
//! driver, whose transfers are summarised in the trace as `peer-transfer` events.
//!
//! Not judged, and why (also in `conformance/WIA2.md`):
//! - H23 (the TYMED property written with a signed or unsigned variant type) is about property
//!   writes, which the model does not have: the item's properties are the scenario's.

pub(crate) mod analysis;
mod checks;

use std::fmt;
use std::fmt::Write as _;

use super::{resolve, Judgement, RawJudgement, RuleReport, RuleStatus, RunFacts};
use crate::scenario::wia2::Scenario2;
use crate::scenario::{Acquisition, Outcome, Scenario, ServiceModel};
use crate::trace::Trace;
use crate::verdict::Metrics;

use self::checks::Ctx2;

/// What the WIA 2.0 rules know about one run besides its trace.
#[derive(Clone, Copy, Debug)]
pub struct RunFacts2<'a> {
    /// The recorded trace.
    pub trace: &'a Trace,
    /// The scenario that was run.
    pub scenario: &'a Scenario2,
    /// The device's time from Cancel Request to motor stopped, in microseconds.
    pub motor_stop_us: u64,
    /// Real-time runs: how long the run's threads waited for a CPU (see [`RunFacts`]); `None`
    /// in virtual time.
    pub host_lag: Option<&'a super::lag::HostLag>,
}

/// A rule of the WIA 2.0 catalogue.
pub struct Rule2 {
    /// Stable ID (`WIA2-H14-CANCEL-FASTER`, ...).
    pub id: &'static str,
    /// The rule in one sentence.
    pub statement: &'static str,
    /// The sentence it rests on, verbatim.
    pub quote: &'static str,
    /// Where the quote comes from.
    pub source: &'static str,
    /// Rules whose failure (same or earlier call) makes this one "not judged".
    pub depends_on: &'static [&'static str],
    /// What the check looks at in the trace.
    pub looks_at: &'static str,
    check: fn(&Ctx2<'_>) -> Judgement,
}

impl Rule2 {
    /// Runs this rule alone (no dependency suppression).
    pub fn check(&self, facts: &RunFacts2<'_>) -> Judgement {
        (self.check)(&Ctx2::new(facts))
    }
}

impl fmt::Debug for Rule2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rule2")
            .field("id", &self.id)
            .field("statement", &self.statement)
            .field("depends_on", &self.depends_on)
            .finish_non_exhaustive()
    }
}

const SRC_HLK: &str = "Windows HLK requirement Device.Imaging.Scanner.Base.dataTransfer, \"WIA drivers must do the following\" (device-imaging-scanner.md; reference wia2-stream §3)";
const SRC_HLK_NOT: &str = "Windows HLK requirement Device.Imaging.Scanner.Base.dataTransfer, \"WIA drivers must not do the following\" (device-imaging-scanner.md; reference wia2-stream §3)";
const SRC_ACQUIRE: &str = "WIA minidriver docs, IWiaMiniDrv::drvAcquireItemData (nf-wiamindr_lh-iwiaminidrv-drvacquireitemdata.md; reference wia2-stream §2, A1/A2)";
const SRC_ERRORS: &str = "WIA driver docs, \"WIA Error Handling Architecture\" (wia-error-handling-architecture.md; reference wia2-stream §2, M4)";
const SRC_PNP: &str = "WIA minidriver docs, IWiaMiniDrv::drvNotifyPnpEvent (nf-wiamindr_lh-iwiaminidrv-drvnotifypnpevent.md; reference wia2-stream §2, N1)";
const SRC_VISTA: &str = "WIA driver docs, \"Cancellation of Data Transfers in Windows Vista\" (reference wia2-stream §2, V2)";
const SRC_HCK: &str = "Windows HCK, \"WIA Transfer Test\" (Device.Imaging.Scanner.Base.dataTransfer; reference cancel-semantics §5)";

/// The WIA 1.0 catalogue's device-level rules the WIA 2.0 catalogue also judges.
pub const SHARED: [&str; 4] = [
    "USB-CANCEL-SENT",
    "USB-STATUS-POLLED",
    "USB-HALTS-CLEARED",
    "USB-NO-PENDING",
];

const OUTCOME_DEPS: &[&str] = &[
    "WIA2-H6-SUCCESS",
    "WIA2-H8-MULTIPAGE-ONE-STREAM",
    "WIA2-H9-STREAM-PER-ITEM",
    "WIA2-H10-SENDMESSAGE-SFALSE",
    "WIA2-H11-SKIP-CONTINUES",
    "WIA2-H12-SKIP-SOK",
    "WIA2-H15-GNS-FAILURE",
    "WIA2-H16-NULL-STREAM",
    "WIA2-H17-SENDMESSAGE-FAILURE",
    "WIA2-H18-IDENTICAL-DEVICE",
    "WIA2-H19-STREAM-FAILURE",
    "WIA2-H21-SERVICE-RESTART",
    "WIA2-H22-IDLE-CANCEL-IO",
    "WIA2-H28-UPLOAD-BAD-STREAM",
    "WIA2-A1-CANCELLED-SFALSE",
    "WIA2-A2-ADF-RESULT",
    "WIA2-M4-DEVICE-STATUS-ERROR",
    "WIA2-NO-HANG",
    "USB-CANCEL-SENT",
    "USB-STATUS-POLLED",
    "USB-HALTS-CLEARED",
];

static CATALOG2: [Rule2; 34] = [
    Rule2 {
        id: "WIA2-H1-DOWNLOAD-STREAM-METHODS",
        statement: "during a download the driver calls only Write, Seek and SetSize (and Release) on the application's streams",
        quote: "Use only the Write, Seek, and SetSizeIStream methods during downloads.",
        source: SRC_HLK,
        depends_on: &[],
        looks_at: "Every stream call the driver makes during a download call: Read and Stat are violations.",
        check: checks::h1_download_methods,
    },
    Rule2 {
        id: "WIA2-H2-UPLOAD-STREAM-METHODS",
        statement: "during an upload the driver calls only Read, Seek and Stat (and Release) on the application's stream",
        quote: "Use only the Read, Seek, and StatIStream methods during uploads.",
        source: SRC_HLK,
        depends_on: &[],
        looks_at: "Every stream call the driver makes during an upload call: Write and SetSize are violations.",
        check: checks::h2_upload_methods,
    },
    Rule2 {
        id: "WIA2-H3-PERCENT-RANGE",
        statement: "lPercentComplete of every SendMessage is within 0..=100",
        quote: "Send valid lPercentComplete values during calls to the IWiaMiniDrvTransferCallback::SendMessage. lPercentComplete must be between 0 and 100 inclusive.",
        source: SRC_HLK,
        depends_on: &[],
        looks_at: "The percent of every send-message.",
        check: checks::h3_percent,
    },
    Rule2 {
        id: "WIA2-H4-TRANSFERRED-BYTES",
        statement: "ulTransferredBytes of STATUS and NEW_PAGE messages is the number of bytes transferred so far",
        quote: "Send correct ulTransferredBytes values during calls to IWiaMiniDrvTransferCallback::SendMessage.",
        source: SRC_HLK,
        depends_on: &[],
        looks_at: "Each STATUS or NEW_PAGE send-message against the bytes the driver had moved by then: written to the current stream, or in the whole call (both readings of \"transferred\" are accepted; an upload counts the bytes read from its source).",
        check: checks::h4_transferred_bytes,
    },
    Rule2 {
        id: "WIA2-H5-APPEND",
        statement: "data goes after what a stream already holds: no write below its size when it was given",
        quote: "Append new data to the end of streams that the IWiaMiniDrvTransferCallback::GetNextStream receives if the streams are not empty.",
        source: SRC_HLK,
        depends_on: &[],
        looks_at: "Streams the application gave holding data (app-get-next-stream size > 0): every write the driver makes on one must start at or after that size.",
        check: checks::h5_append,
    },
    Rule2 {
        id: "WIA2-H6-SUCCESS",
        statement: "a transfer with good parameters and nothing going wrong returns a success code",
        quote: "Return success values from the IWiaMiniDrv::drvAcquireItemData method when the driver calls IWiaMiniDrv::drvAcquireItemData by using good parameters in all supported formats.",
        source: SRC_HLK,
        depends_on: &["WIA2-H21-SERVICE-RESTART", "WIA2-H22-IDLE-CANCEL-IO"],
        looks_at: "Calls of transfers the scenario leaves alone (no steps, an empty stream that never fails, no device faults, a readable upload stream) and expects to succeed: the call returns SUCCEEDED(hr).",
        check: checks::h6_success,
    },
    Rule2 {
        id: "WIA2-H7-RELEASE-STREAM",
        statement: "the driver releases each stream before it asks for the next one and before drvAcquireItemData returns",
        quote: "Release their references to the application's IStream object before their IWiaMiniDrv::drvAcquireItemData methods return or call IWiaMiniDrvTransferCallback::GetNextStream.",
        source: SRC_HLK,
        depends_on: &[],
        looks_at: "Each stream the driver was given in a call: a Release of it before the call's next get-next-stream and before its acquire-return (calls that crashed or were cut by a restart are not judged).",
        check: checks::h7_release,
    },
    Rule2 {
        id: "WIA2-H8-MULTIPAGE-ONE-STREAM",
        statement: "a TYMED_MULTIPAGE_FILE download puts every page of an item into one stream, which holds the whole multi-page file",
        quote: "Send one stream that contains a multi-page file during downloads by using all supported TYMED_MULTIPAGE_FILE formats.",
        source: SRC_HLK,
        depends_on: &[],
        looks_at: "TYMED_MULTIPAGE_FILE download calls: never more than one get-next-stream per item (per folder child, else one); undisturbed ones that returned success: exactly one per item, and a NEW_PAGE before every page after an item's first (pages counted by the device's page-end notes). Whether each stream holds its whole file is WIA2-H20's.",
        check: checks::h8_multipage,
    },
    Rule2 {
        id: "WIA2-H9-STREAM-PER-ITEM",
        statement: "a TYMED_FILE download puts each item (each feeder page, each folder child) into a stream of its own, which holds its whole file",
        quote: "Send one stream for each item during downloads by using all supported TYMED_FILE formats.",
        source: SRC_HLK,
        depends_on: &["WIA2-H18-IDENTICAL-DEVICE"],
        looks_at: "TYMED_FILE download calls: no write past the end of its stream's file (get-next-stream expect_size), which would put a second item into it; undisturbed ones that returned success: as many get-next-stream as images (folder children, pages the feeder scanned, or one). Whether each stream holds its whole file is WIA2-H20's.",
        check: checks::h9_stream_per_item,
    },
    Rule2 {
        id: "WIA2-H10-SENDMESSAGE-SFALSE",
        statement: "drvAcquireItemData returns S_FALSE when SendMessage returned S_FALSE",
        quote: "Return S_FALSE from IWiaMiniDrv::drvAcquireItemData if IWiaMiniDrvTransferCallback::SendMessage returns S_FALSE.",
        source: SRC_HLK,
        depends_on: &[],
        looks_at: "Calls whose first stopping answer is a send-message result of S_FALSE: acquire-return S_FALSE (a failure is accepted when the device left the bus).",
        check: checks::h10_sendmessage_sfalse,
    },
    Rule2 {
        id: "WIA2-H11-SKIP-CONTINUES",
        statement: "after GetNextStream returned WIA_STATUS_SKIP_ITEM the driver goes on with the next item",
        quote: "Continue to transfer any subsequent items during multi-item downloads after IWiaMiniDrvTransferCallback::GetNextStream returns WIA_STATUS_SKIP_ITEM.",
        source: SRC_HLK,
        depends_on: &[],
        looks_at: "Each get-next-stream answered WIA_STATUS_SKIP_ITEM for an image with more to come (a folder child that is not the last, a feeder page before the pages asked for and the sheets loaded), with nothing else stopping the call: a later get-next-stream in the call. (\"The WIA mini-driver must skip the current image transfer and continue with the next image transfer, if any\", GetNextStream remarks.)",
        check: checks::h11_skip_continues,
    },
    Rule2 {
        id: "WIA2-H12-SKIP-SOK",
        statement: "a download in which items were skipped (and nothing else went wrong) returns S_OK, also when the last item was skipped",
        quote: "Return S_OK from IWiaMiniDrv::drvAcquireItemData during single-item and multi-item downloads after the IWiaMiniDrvTransferCallback::GetNextStream returns WIA_STATUS_SKIP_ITEM for any item.",
        source: SRC_HLK,
        depends_on: &[],
        looks_at: "Calls with a get-next-stream answered WIA_STATUS_SKIP_ITEM and no stop answer, cancel or device fault: acquire-return S_OK (WIA_STATUS_END_OF_MEDIA too when the feeder ran out, which WIA2-A2 judges).",
        check: checks::h12_skip_sok,
    },
    Rule2 {
        id: "WIA2-H13-GNS-SFALSE-ABORTS",
        statement: "after GetNextStream returned S_FALSE the driver transfers nothing more: no further GetNextStream, no further write",
        quote: "Abort transfer of all items after IWiaMiniDrvTransferCallback::GetNextStream returns S_FALSE.",
        source: SRC_HLK,
        depends_on: &[],
        looks_at: "After a get-next-stream that returned S_FALSE, in the same call: any later get-next-stream or stream Write is a violation.",
        check: checks::h13_gns_sfalse_aborts,
    },
    Rule2 {
        id: "WIA2-H14-CANCEL-FASTER",
        statement: "a cancelled download returns sooner than a completed download of the same item (virtual time)",
        quote: "Return from IWiaMiniDrv::drvAcquireItemData calls during canceled transfers in less time than during completed transfers.",
        source: SRC_HLK,
        depends_on: &[],
        looks_at: "Download calls of the run that returned S_OK undisturbed are the completed transfers of the scenario's item; every call cancelled (an S_FALSE answer or WIA_EVENT_CANCEL_IO) in the first half of the fastest completed one must return in less time than that one took, from drv-acquire-item-data2 to acquire-return. Not applicable when the run completes no download; in a real-time run (USB/IP, libusb) only reported, since two calls' wall-clock durations differ by transport latency and scheduling.",
        check: checks::h14_cancel_faster,
    },
    Rule2 {
        id: "WIA2-H15-GNS-FAILURE",
        statement: "drvAcquireItemData returns a failure code when GetNextStream failed",
        quote: "Return a failure code from IWiaMiniDrv::drvAcquireItemData if IWiaMiniDrvTransferCallback::GetNextStream fails.",
        source: SRC_HLK,
        depends_on: &[],
        looks_at: "Calls with a get-next-stream that returned a failure HRESULT: acquire-return FAILED(hr).",
        check: checks::h15_gns_failure,
    },
    Rule2 {
        id: "WIA2-H16-NULL-STREAM",
        statement: "a NULL stream from an S_OK GetNextStream makes drvAcquireItemData return a standard COM failure code, without crashing",
        quote: "Return a standard COM failure code from IWiaMiniDrv::drvAcquireItemData if IWiaMiniDrvTransferCallback::GetNextStream returns a NULL stream pointer.",
        source: SRC_HLK,
        depends_on: &[],
        looks_at: "Calls with a get-next-stream that returned S_OK and no stream: the call returns FAILED(hr); a driver-fault (a crash) or a success code is a violation.",
        check: checks::h16_null_stream,
    },
    Rule2 {
        id: "WIA2-H17-SENDMESSAGE-FAILURE",
        statement: "drvAcquireItemData returns a failure code when SendMessage failed",
        quote: "Return a failure code from IWiaMiniDrv::drvAcquireItemData if IWiaMiniDrvTransferCallback::SendMessage fails.",
        source: SRC_HLK,
        depends_on: &[],
        looks_at: "Calls whose first stopping answer is a send-message failure: acquire-return FAILED(hr).",
        check: checks::h17_sendmessage_failure,
    },
    Rule2 {
        id: "WIA2-H18-IDENTICAL-DEVICE",
        statement: "transfers succeed while an identical device, served by another instance of the driver, transfers at the same time",
        quote: "Successfully transfer items when an identical device is installed and when the identical device transfers an item simultaneously.",
        source: SRC_HLK,
        depends_on: &[],
        looks_at: "Runs with an identical device (the scenario's `peer`): every transfer of this device the scenario expects to complete returns S_OK with every stream whole (stream-end size and crc as expected), and every peer-transfer of the identical device returned a success code other than S_FALSE with its streams whole.",
        check: checks::h18_identical_device,
    },
    Rule2 {
        id: "WIA2-H19-STREAM-FAILURE",
        statement: "drvAcquireItemData returns a failure code when a stream method failed",
        quote: "Return a failure code from IWiaMiniDrv::drvAcquireItemData if an IStream method fails.",
        source: SRC_HLK,
        depends_on: &[],
        looks_at: "Calls with a stream call that failed (a full disk, a failing Seek, an invalidated upload stream) and that returned: acquire-return FAILED(hr) (a cancel that came first is S_FALSE's business).",
        check: checks::h19_stream_failure,
    },
    Rule2 {
        id: "WIA2-H20-SEEK-POSITION",
        statement: "every byte the driver writes lands where it belongs in the stream, also after the application moved the seek pointer during a callback",
        quote: "Seek to the correct stream position after the driver begins the transfer or calls IWiaMiniDrvTransferCallback::GetNextStream or IWiaMiniDrvTransferCallback::SendMessage.",
        source: SRC_HLK,
        depends_on: &[
            "WIA2-H5-APPEND",
            "WIA2-H8-MULTIPAGE-ONE-STREAM",
            "WIA2-H9-STREAM-PER-ITEM",
            "WIA2-H18-IDENTICAL-DEVICE",
        ],
        looks_at: "Every stream Write of a download that moved bytes inside its stream's file: its crc equals expect_crc, the CRC of what belongs at that position (what the stream held, then the image file); and in undisturbed downloads that returned success, every stream-end holds exactly its expected content (size == expect_size, crc == expect_crc).",
        check: checks::h20_seek_position,
    },
    Rule2 {
        id: "WIA2-H21-SERVICE-RESTART",
        statement: "after the WIA service ended during a transfer and started again, the next transfer succeeds with the right data",
        quote: "Function correctly if the WIA service terminates during a transfer and is then restarted, and a new transfer is requested.",
        source: SRC_HLK,
        depends_on: &[],
        looks_at: "The first transfer after each service-restart, if the scenario expects it to succeed: its calls return a success code other than S_FALSE (which one is WIA2-OUTCOME's and WIA2-A2's) and every stream it ended holds its image (stream-end size and crc as expected).",
        check: checks::h21_service_restart,
    },
    Rule2 {
        id: "WIA2-H22-IDLE-CANCEL-IO",
        statement: "WIA_EVENT_CANCEL_IO while no transfer runs is ignored: nothing fails, and the next transfer goes as it would have",
        quote: "Ignore calls to the drvNotifyPnPEvent that contain WIA_EVENT_CANCEL_IO if a transfer is not occurring, and not crash or hang.",
        source: SRC_HLK,
        depends_on: &[],
        looks_at: "Each notify-cancel-io outside any call: no driver-fault and no failed USB transfer until the next transfer starts, and that transfer's calls return S_OK when the scenario leaves it alone and expects completion.",
        check: checks::h22_idle_cancel_io,
    },
    Rule2 {
        id: "WIA2-H24-NO-STREAM-CALL-AFTER-STOP",
        statement: "after SendMessage returned S_FALSE, WIA_STATUS_SKIP_ITEM or an error, the driver calls nothing but Release on the stream(s) it held",
        quote: "Call a method of an application's IStream object other than the IUnknown::Release method after an application's transfer callback returns S_FALSE, WIA_STATUS_SKIP_ITEM, or an error.",
        source: SRC_HLK_NOT,
        depends_on: &[],
        looks_at: "After each send-message answered S_FALSE, WIA_STATUS_SKIP_ITEM or a failure: stream calls other than Release on a stream the driver had been given before it (for a skip: that item's stream only) are violations.",
        check: checks::h24_no_stream_call_after_stop,
    },
    Rule2 {
        id: "WIA2-H25-NO-STREAM-CALL-AFTER-NEXT",
        statement: "the driver calls nothing but Release on a stream once it asked for the next one or drvAcquireItemData returned",
        quote: "Call a method of an application's IStream object other than the IUnknown::Release method after the driver's IWiaMiniDrv::drvAcquireItemData method returns or calls IWiaMiniDrvTransferCallback::GetNextStream during a multi-item transfer.",
        source: SRC_HLK_NOT,
        depends_on: &[],
        looks_at: "Stream calls other than Release on a stream after the next get-next-stream of its call, or after its call's acquire-return.",
        check: checks::h25_no_stream_call_after_next,
    },
    Rule2 {
        id: "WIA2-H26-NO-EOS-EOT",
        statement: "the driver never sends END_OF_STREAM or END_OF_TRANSFER: the service does",
        quote: "Call IWiaMiniDrvTransferCallback::SendMessage by using WIA_TRANSFER_MSG_END_OF_STREAM and WIA_TRANSFER_MSG_END_OF_TRANSFER messages.",
        source: SRC_HLK_NOT,
        depends_on: &[],
        looks_at: "Every send-message: lMessage WIA_TRANSFER_MSG_END_OF_STREAM or WIA_TRANSFER_MSG_END_OF_TRANSFER is a violation.",
        check: checks::h26_no_eos_eot,
    },
    Rule2 {
        id: "WIA2-H27-NO-CALL-AFTER-SFALSE",
        statement: "after SendMessage returned S_FALSE or an error the driver calls neither SendMessage nor GetNextStream again",
        quote: "Call IWiaMiniDrvTransferCallback::SendMessage or IWiaMiniDrvTransferCallback::GetNextStream after IWiaMiniDrvTransferCallback::SendMessage returns S_FALSE or an error.",
        source: SRC_HLK_NOT,
        depends_on: &[],
        looks_at: "After a send-message answered S_FALSE or a failure, in the same call: any later send-message or get-next-stream is a violation.",
        check: checks::h27_no_call_after_sfalse,
    },
    Rule2 {
        id: "WIA2-H28-UPLOAD-BAD-STREAM",
        statement: "an upload from an empty or invalid stream returns: no crash, no hang",
        quote: "Crash or hang if a device requests an upload by using an invalid or empty stream.",
        source: SRC_HLK_NOT,
        depends_on: &[],
        looks_at: "Upload calls whose source stream is empty or invalid (every method fails): the call returns, with no driver-fault, before the scenario's budget.",
        check: checks::h28_upload_bad_stream,
    },
    Rule2 {
        id: "WIA2-A1-CANCELLED-SFALSE",
        statement: "drvAcquireItemData returns S_FALSE when the transfer was cancelled by GetNextStream's S_FALSE, by IWiaTransfer::Cancel or by the device's Cancel button",
        quote: "If the transfer was canceled, the method should return S_FALSE.",
        source: SRC_ACQUIRE,
        depends_on: &[],
        looks_at: "Calls whose first stop is a get-next-stream answered S_FALSE, a WIA_EVENT_CANCEL_IO the driver got while transferring (a call that still ended with every stream complete and S_OK had finished first), or a device-initiated cancel (the Cancel button, a short band): acquire-return S_FALSE (a failure is accepted when the device left the bus). SendMessage's S_FALSE is WIA2-H10's.",
        check: checks::a1_cancelled_sfalse,
    },
    Rule2 {
        id: "WIA2-A2-ADF-RESULT",
        statement: "a feeder download returns what the ADF table says: S_OK when every page asked for (or every sheet) was scanned, WIA_STATUS_END_OF_MEDIA when the feeder ran out after at least one page, WIA_ERROR_MULTI_FEED on a multi-feed, a failure for an empty tray or a jam",
        quote: "On success, the method should return S_OK and clear the device error value pointed to by plDevErrVal. If the transfer was canceled, the method should return S_FALSE. If the method fails, it should return a standard COM error code and fill in a minidriver-specific error code value",
        source: SRC_ACQUIRE,
        depends_on: &["WIA2-H6-SUCCESS", "WIA2-M4-DEVICE-STATUS-ERROR"],
        looks_at: "Feeder download calls with no stop answer, skip or cancel: an empty tray at the start (start-refused) or a jam must give a failure code; a multi-feed WIA_ERROR_MULTI_FEED; pages asked for N > 0 with 1 <= k < N pages scanned before the feeder emptied WIA_STATUS_END_OF_MEDIA; every page asked for, or pages = 0 with the feeder emptied, S_OK (the table rows of reference wia2-stream §2 A2).",
        check: checks::a2_adf_result,
    },
    Rule2 {
        id: "WIA2-M4-DEVICE-STATUS-ERROR",
        statement: "when the error handlers give a device status error back, the driver stops and returns exactly that HRESULT",
        quote: "If no error handler supports a device status message with SEVERITY_ERROR (error message), the WIA proxy will return the status error back to the driver, which in turn should stop the transfer. The driver should return this HRESULT value from IWiaMiniDrv::drvAcquireItemData",
        source: SRC_ERRORS,
        depends_on: &["WIA2-H17-SENDMESSAGE-FAILURE"],
        looks_at: "Each send-message of a WIA_TRANSFER_MSG_DEVICE_STATUS answered with a failure: no later stream Write or STATUS in the call, and acquire-return carries exactly that failure.",
        check: checks::m4_device_status_error,
    },
    Rule2 {
        id: "WIA2-N1-CANCEL-IO",
        statement: "on WIA_EVENT_CANCEL_IO during a transfer the driver stops its I/O at once: no write after it, and a cancel on the wire within 10 ms while the device scans",
        quote: "If this method is called with pEventGuid set to WIA_EVENT_CANCEL_IO device event, it should cancel all current I/O operations as soon as possible.",
        source: SRC_PNP,
        depends_on: &[],
        looks_at: "Each notify-cancel-io made from the application's second thread inside a call (a Cancel made inside the application's callbacks reaches the driver as that call's S_FALSE instead): no stream Write after it in the call, and, when the device was scanning, a CANCEL (0x64), DEVICE_RESET (0x66), port reset or endpoint abort at most 10 ms after it.",
        check: checks::n1_cancel_io,
    },
    Rule2 {
        id: "WIA2-V2-STICKY",
        statement: "(service self-check) after IWiaTransfer::Cancel the driver gets WIA_EVENT_CANCEL_IO, and every later GetNextStream and SendMessage of the transfer returns S_FALSE",
        quote: "When an application calls IWiaTransfer::Cancel, the IWiaMiniDrv::drvNotifyPnPEvent method should be called into the driver with WIA_EVENT_CANCEL_IO. In addition, the IWiaMiniDrvTransferCallback::GetNextStream and IWiaMiniDrvTransferCallback::SendMessage callback functions must always return S_FALSE after the transfer has been canceled.",
        source: SRC_VISTA,
        depends_on: &[],
        looks_at: "Each application cancel: a notify-cancel-io right after it; inside a transfer, every later get-next-stream and send-message of that transfer answered S_FALSE.",
        check: checks::v2_sticky,
    },
    Rule2 {
        id: "WIA2-NO-HANG",
        statement: "every drvAcquireItemData returns: no crash, no hang, within the scenario's budget",
        quote: "verifies that a driver does not cause applications or the WIA service to crash or hang during data transfer.",
        source: SRC_HCK,
        depends_on: &["WIA2-H16-NULL-STREAM", "WIA2-H28-UPLOAD-BAD-STREAM"],
        looks_at: "Every driver-fault (a crash, a hang, a protocol error) is a violation; so is a call that never returned and was not cut by a service restart.",
        check: checks::no_hang,
    },
    Rule2 {
        id: "WIA2-OUTCOME",
        statement: "each transfer ends as the scenario expects",
        quote: "On success, the method should return S_OK and clear the device error value pointed to by plDevErrVal. If the transfer was canceled, the method should return S_FALSE.",
        source: SRC_ACQUIRE,
        depends_on: OUTCOME_DEPS,
        looks_at: "Each transfer's last drvAcquireItemData return against the scenario's `expect` (a transfer cut by a service restart: what Download returned).",
        check: checks::outcome,
    },
];

/// The WIA 2.0 rules of their own, in catalogue order (the shared device-level rules of
/// [`SHARED`] are judged too; [`ids`] lists all).
pub fn catalog() -> &'static [Rule2] {
    &CATALOG2
}

/// Every rule ID a WIA 2.0 run reports: the WIA 2.0 rules, then the shared ones.
pub fn ids() -> Vec<&'static str> {
    CATALOG2.iter().map(|r| r.id).chain(SHARED).collect()
}

/// The WIA 2.0 rule with this ID (not the shared ones: [`super::find`] has those).
pub fn find(id: &str) -> Option<&'static Rule2> {
    CATALOG2.iter().find(|r| r.id == id)
}

/// True when a WIA 2.0 run reports this rule.
pub fn known(id: &str) -> bool {
    find(id).is_some() || SHARED.contains(&id)
}

/// A WIA 2.0 rule explained for people (`scanconform explain RULE-ID`).
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
            "  depends on: {} (a violation after one of these failed, in the same or an earlier call, is listed as not judged)",
            r.depends_on.join(", ")
        );
    }
    Some(s)
}

/// The text of a rule a WIA 2.0 run reports (its own or a shared one):
/// `(id, statement, quote, source)`.
pub fn text_of(id: &str) -> Option<(&'static str, &'static str, &'static str, &'static str)> {
    match find(id) {
        Some(r) => Some((r.id, r.statement, r.quote, r.source)),
        None if SHARED.contains(&id) => {
            super::find(id).map(|r| (r.id, r.statement, r.quote, r.source))
        }
        None => None,
    }
}

/// The WIA 2.0 scenario seen as a WIA 1.0 one, for the shared device-level rules: they read the
/// trace and the device's timing, never the application's script.
fn device_view(sc: &Scenario2) -> Scenario {
    Scenario {
        description: sc.description.clone(),
        rules: Vec::new(),
        services: vec![ServiceModel::Vista],
        profile: sc.profile.clone(),
        scan: sc.scan.clone(),
        buffer: 65536,
        faults: sc.faults.clone(),
        acquisitions: sc
            .transfers
            .iter()
            .map(|t| Acquisition {
                steps: Vec::new(),
                expect: Outcome::Complete,
                delay_us: t.delay_us,
            })
            .collect(),
        idle_cancels: sc.idle_cancels.clone(),
        budget_us: sc.budget_us,
    }
}

/// Runs every WIA 2.0 rule and the shared device-level ones, and suppresses consequences of
/// failed dependencies.
pub fn check_all(facts: &RunFacts2<'_>) -> RuleReport {
    let ctx = Ctx2::new(facts);
    let mut judgements: Vec<RawJudgement> = CATALOG2
        .iter()
        .map(|r| (r.id, r.depends_on, (r.check)(&ctx)))
        .collect();
    let view = device_view(facts.scenario);
    let wia1 = RunFacts {
        trace: facts.trace,
        scenario: &view,
        service: ServiceModel::Vista,
        async_cancel: true,
        motor_stop_us: facts.motor_stop_us,
        host_lag: facts.host_lag,
    };
    for id in SHARED {
        if let Some(rule) = super::find(id) {
            judgements.push((rule.id, rule.depends_on, rule.check(&wia1)));
        }
    }
    let results = resolve(judgements);
    // The device-side measurements read the calls as the shared rules do: first cancel point
    // to the device stopped, bands read after it, host lag. The data is what the streams got.
    let device = super::checks::metrics(&super::Ctx::new(&wia1));
    let mut metrics = Metrics {
        cancel_to_idle_us: device.cancel_to_idle_us,
        bands_wasted: device.bands_wasted,
        data_bytes: checks::bytes_written(&ctx),
        host_lag_us: device.host_lag_us,
        cancel_to_idle_lag_us: device.cancel_to_idle_lag_us,
        ..Metrics::default()
    };
    metrics.rules_checked = results
        .iter()
        .filter(|r| r.status != RuleStatus::NotApplicable)
        .count() as u32;
    RuleReport { results, metrics }
}
