//! The built-in WIA 2.0 drivers and the list of which rule each mutant breaks.
//!
//! `reference-wia2` is correct; each `mutant2-*` breaks one rule of the WIA 2.0 catalogue
//! ([`crate::rules::wia2`]). The expected failures are data (`fixtures/mutants-wia2.json`),
//! checked both ways by the test suite, as for WIA 1.0 (`super::load_expected_failures` reads
//! either file).

pub(crate) mod device;
pub mod native;

use std::rc::Rc;

use self::native::{Flavor2, Mutation2, Wia2Driver};
use crate::driver::wia2::MiniDriver2;

/// A WIA 2.0 driver shipped with the runner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuiltinDriver2 {
    /// Name used with `--driver`.
    pub name: &'static str,
    /// Which behaviour it has.
    pub flavor: Flavor2,
    /// One line on what it does.
    pub description: &'static str,
}

/// Makes driver instances (a new one each time the WIA service starts).
pub type Factory2 = Rc<dyn Fn() -> Rc<dyn MiniDriver2>>;

/// Every built-in WIA 2.0 driver, the correct one first.
pub const BUILTIN2: &[BuiltinDriver2] = &[
    BuiltinDriver2 {
        name: "reference-wia2",
        flavor: Flavor2::Reference,
        description: "correct WIA 2.0 stream driver; honours WIA_EVENT_CANCEL_IO by aborting its pending bulk read",
    },
    mutant("mutant2-stat-stream", Mutation2::StatStream, "calls IStream::Stat on download streams to learn their size"),
    mutant("mutant2-upload-setsize", Mutation2::UploadSetSize, "calls IStream::SetSize on an upload's source stream"),
    mutant("mutant2-percent-over-100", Mutation2::PercentOver100, "counts the file header into lPercentComplete, which passes 100"),
    mutant("mutant2-chunk-bytes", Mutation2::ChunkBytes, "reports the last chunk's size as ulTransferredBytes"),
    mutant("mutant2-overwrite", Mutation2::Overwrite, "writes from the stream's seek pointer instead of its end"),
    mutant("mutant2-paper-empty-at-end", Mutation2::PaperEmptyAtEnd, "ends an until-empty feeder job with WIA_ERROR_PAPER_EMPTY (wiadriverex's Scan Wizard convention)"),
    mutant("mutant2-late-release", Mutation2::LateRelease, "releases each stream only after asking for the next one"),
    mutant("mutant2-shared-position", Mutation2::SharedPosition, "keeps its write position in a process-wide variable that every device's instance shares"),
    mutant("mutant2-stream-per-page-multipage", Mutation2::StreamPerPageMultipage, "asks for a new stream per page of a TYMED_MULTIPAGE_FILE transfer"),
    mutant("mutant2-one-stream-tymed-file", Mutation2::OneStreamTymedFile, "writes every feeder page of a TYMED_FILE transfer into the first stream"),
    mutant("mutant2-sok-after-sendmessage-cancel", Mutation2::SOkAfterSendMessageCancel, "returns S_OK after SendMessage returned S_FALSE"),
    mutant("mutant2-skip-stops-transfer", Mutation2::SkipStopsTransfer, "stops the whole transfer when GetNextStream returns WIA_STATUS_SKIP_ITEM"),
    mutant("mutant2-skip-item-returned", Mutation2::SkipItemReturned, "returns WIA_STATUS_SKIP_ITEM when the last item was skipped (wiadriverex)"),
    mutant("mutant2-gns-after-gns-cancel", Mutation2::GnsAfterGnsCancel, "asks for the next stream again after GetNextStream returned S_FALSE"),
    mutant("mutant2-drain-on-cancel", Mutation2::DrainOnCancel, "after a cancel, reads the rest of the image before stopping the device"),
    mutant("mutant2-gns-error-ignored", Mutation2::GnsErrorIgnored, "treats a GetNextStream failure like a skipped item and ends with S_OK"),
    mutant("mutant2-null-stream-crash", Mutation2::NullStreamCrash, "dereferences the NULL stream of an S_OK GetNextStream (wiadriverex): a crash"),
    mutant("mutant2-sendmessage-error-as-cancel", Mutation2::SendMessageErrorAsCancel, "treats a SendMessage failure as a cancel and returns S_FALSE"),
    mutant("mutant2-write-error-ignored", Mutation2::WriteErrorIgnored, "ignores a failed IStream::Write and goes on"),
    mutant("mutant2-no-reseek", Mutation2::NoReseek, "does not seek back to its position after SendMessage"),
    mutant("mutant2-assumes-idle", Mutation2::AssumesIdle, "assumes the device is idle when a transfer starts"),
    mutant("mutant2-idle-cancel-sticks", Mutation2::IdleCancelSticks, "keeps the cancel of a WIA_EVENT_CANCEL_IO that came while idle"),
    mutant("mutant2-write-after-stop", Mutation2::WriteAfterStop, "writes one more chunk after SendMessage returned S_FALSE, WIA_STATUS_SKIP_ITEM or an error"),
    mutant("mutant2-touch-after-next", Mutation2::TouchAfterNext, "rewrites the previous stream's header after asking for the next stream"),
    mutant("mutant2-sends-end-of-stream", Mutation2::SendsEndOfStream, "sends WIA_TRANSFER_MSG_END_OF_STREAM itself after each stream"),
    mutant("mutant2-gns-after-sendmessage-cancel", Mutation2::GnsAfterSendMessageCancel, "goes on to the next page or item after SendMessage returned S_FALSE (wiadriverex's feeder loop)"),
    mutant("mutant2-upload-retries-read", Mutation2::UploadRetriesRead, "retries a failed or empty Read of an upload stream until data comes"),
    mutant("mutant2-gns-cancel-eabort", Mutation2::GnsCancelEAbort, "returns E_ABORT instead of S_FALSE when GetNextStream returned S_FALSE"),
    mutant("mutant2-end-of-media-as-sok", Mutation2::EndOfMediaAsSOk, "converts the feeder's end of media into S_OK (ProdScan)"),
    mutant("mutant2-rewrite-error", Mutation2::RewriteError, "rewrites failures the callbacks return into E_UNEXPECTED (wiadriverex)"),
    mutant("mutant2-ignore-cancel-io", Mutation2::IgnoreCancelIo, "ignores WIA_EVENT_CANCEL_IO, as both of Microsoft's samples do"),
];

const fn mutant(name: &'static str, m: Mutation2, description: &'static str) -> BuiltinDriver2 {
    BuiltinDriver2 {
        name,
        flavor: Flavor2::Mutant(m),
        description,
    }
}

/// The built-in WIA 2.0 driver called `name`.
pub fn find(name: &str) -> Option<&'static BuiltinDriver2> {
    BUILTIN2.iter().find(|d| d.name == name)
}

/// The factory of the built-in WIA 2.0 driver called `name`.
pub fn factory(name: &str) -> Option<Factory2> {
    let flavor = find(name)?.flavor;
    Some(Rc::new(move || {
        Rc::new(Wia2Driver::new(flavor)) as Rc<dyn MiniDriver2>
    }))
}

/// The factory of the WIA 2.0 driver called `name`: a built-in one, or `exec:'CMD ARGS'`, an
/// external driver process of the `wia2` contract (`conformance/DRIVER-PROTOCOL.md`, "The WIA
/// 2.0 contract"), one process per driver instance. The command is checked here, once.
pub fn instantiate(name: &str) -> Result<Factory2, super::DriverError> {
    if let Some(command) = name.strip_prefix("exec:") {
        let config = super::external::ExternalConfig::from_env();
        let template = super::external::ExternalDriver::new_wia2(command, config)?;
        return Ok(Rc::new(move || {
            Rc::new(template.another()) as Rc<dyn MiniDriver2>
        }));
    }
    factory(name).ok_or_else(|| super::DriverError::Unknown {
        name: name.to_string(),
    })
}
