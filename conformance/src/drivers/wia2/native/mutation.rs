//! The deliberate defects of the WIA 2.0 mutants, and which built-in WIA 2.0 driver is which.

/// One deliberate defect of a WIA 2.0 driver. Each breaks exactly one rule (see
/// `fixtures/mutants-wia2.json`); most are behaviours `reference/wia2-stream.md` §6 reads in
/// Microsoft's own samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutation2 {
    /// Calls IStream::Stat on download streams to learn their size (H1).
    StatStream,
    /// Calls IStream::SetSize on an upload's source stream (H2).
    UploadSetSize,
    /// Counts the file header into lPercentComplete, which passes 100 (H3).
    PercentOver100,
    /// Reports the last chunk's size as ulTransferredBytes instead of the running count (H4).
    ChunkBytes,
    /// Writes from the stream's seek pointer without seeking to its end first (H5).
    Overwrite,
    /// Ends a feeder job that emptied the tray with WIA_ERROR_PAPER_EMPTY, the Scan Wizard
    /// convention of Microsoft's wiadriverex sample (H6).
    PaperEmptyAtEnd,
    /// Releases each stream only after the next GetNextStream (H7).
    LateRelease,
    /// Keeps the position it writes at in a process-wide variable, which every instance of the
    /// driver (one per device) shares (H18).
    SharedPosition,
    /// Asks for a new stream for every page of a TYMED_MULTIPAGE_FILE transfer (H8).
    StreamPerPageMultipage,
    /// Writes every feeder page of a TYMED_FILE transfer into the first stream (H9).
    OneStreamTymedFile,
    /// Returns S_OK after SendMessage returned S_FALSE (H10).
    SOkAfterSendMessageCancel,
    /// Stops the whole transfer when GetNextStream returns WIA_STATUS_SKIP_ITEM (H11).
    SkipStopsTransfer,
    /// Returns WIA_STATUS_SKIP_ITEM when the last item was skipped, as wiadriverex does (H12).
    SkipItemReturned,
    /// Asks for the next stream again after GetNextStream returned S_FALSE (H13).
    GnsAfterGnsCancel,
    /// After a cancel, reads the rest of the image from the device before stopping it (H14).
    DrainOnCancel,
    /// Treats a GetNextStream failure like a skipped item and ends with S_OK (H15).
    GnsErrorIgnored,
    /// Dereferences the NULL stream of an S_OK GetNextStream (wiadriverex): a crash (H16).
    NullStreamCrash,
    /// Treats a SendMessage failure as a cancel and returns S_FALSE (H17).
    SendMessageErrorAsCancel,
    /// Ignores a failed IStream::Write and goes on (H19).
    WriteErrorIgnored,
    /// Does not seek back to its position after SendMessage (H20).
    NoReseek,
    /// Assumes the device is idle when a transfer starts (H21).
    AssumesIdle,
    /// Keeps the cancel flag of a WIA_EVENT_CANCEL_IO that came while idle, cancelling the next
    /// transfer (H22).
    IdleCancelSticks,
    /// Writes one more chunk after SendMessage returned S_FALSE, WIA_STATUS_SKIP_ITEM or an
    /// error (H24).
    WriteAfterStop,
    /// Rewrites the previous stream's header after asking for the next stream (H25).
    TouchAfterNext,
    /// Sends END_OF_STREAM itself after each stream (H26).
    SendsEndOfStream,
    /// Goes on to the next page or item (calls GetNextStream) after SendMessage returned
    /// S_FALSE, as wiadriverex's feeder loop does (H27).
    GnsAfterSendMessageCancel,
    /// Retries a failed or empty Read of an upload stream until data comes (H28).
    UploadRetriesRead,
    /// Returns E_ABORT instead of S_FALSE when GetNextStream returned S_FALSE (A1).
    GnsCancelEAbort,
    /// Converts the feeder's end of media into S_OK, as the ProdScan sample does (A2).
    EndOfMediaAsSOk,
    /// Rewrites failures the callbacks return into E_UNEXPECTED, as wiadriverex does (M4).
    RewriteError,
    /// Ignores WIA_EVENT_CANCEL_IO, as both of Microsoft's samples do (N1).
    IgnoreCancelIo,
}

/// Which built-in WIA 2.0 driver this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flavor2 {
    /// Correct.
    Reference,
    /// The reference with one defect.
    Mutant(Mutation2),
}
