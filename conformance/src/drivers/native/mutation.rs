//! The deliberate defects of the built-in mutants, and which built-in driver is which.

/// One deliberate defect. Each breaks exactly one conformance rule (see `drivers --format json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutation {
    /// Keeps reading and delivering bands after a callback returned S_FALSE.
    DataAfterSFalse,
    /// Returns S_OK instead of S_FALSE when cancelled.
    SOkOnCancel,
    /// Returns E_FAIL instead of S_FALSE when cancelled.
    EFailOnCancel,
    /// Returns S_FALSE instead of the application's error code.
    SwallowError,
    /// Stops reading on cancel but never sends the Cancel Request to the device.
    NoDeviceCancel,
    /// Sends the Cancel Request but returns without waiting for status OK.
    NoStatusPoll,
    /// Lets a device that is still scanning go on for up to two seconds before it tells it
    /// to stop.
    SlowCancel,
    /// After a device-initiated cancel, never clears the halted endpoints.
    HaltUncleared,
    /// Reads one band ahead and does not discard it on cancel: the next scan starts with it.
    StaleBand,
    /// Claims asynchronous cancel support but ignores WIA_EVENT_CANCEL_IO.
    ClaimsAsyncIgnores,
    /// Reports the third band's offset 16 bytes too far.
    OffsetGap,
    /// Reports a lower percentage on the third band than on the second.
    PercentBackwards,
    /// Polls Get Device Status forever when the device answers Transaction_Cancelled.
    HangOnStall,
    /// Never calls back while it waits for data (warm-up, a late band).
    SparseCallbacks,
    /// Reports status only once a second while it waits for data: enough for "roughly once per
    /// second", not for "about ten times" in a transfer shorter than ten seconds.
    StatusOncePerSecond,
    /// Reads whole bands only: a page's short last band stays in the device, and the transfer
    /// still returns S_OK.
    DropShortBand,
    /// Reports a full chunk (a whole band, at most lBufferSize) as lLength of a page's short
    /// last chunk.
    LastLengthOverrun,
    /// Ignores lBufferSize: hands each band to one callback, however large.
    BandPerCallback,
    /// Takes WIA_DPS_PAGES = 0 (until the feeder is empty) for one page and returns S_OK after
    /// it, leaving the feeder running.
    AllPagesAsOne,
    /// Treats any answer but S_OK to a status or new-page callback as a cancel: the
    /// application's error from those becomes S_FALSE (data callbacks are right).
    SwallowStatusError,
    /// Stops the device promptly on a cancel, then waits three seconds before returning.
    SlowReturn,
    /// Takes the abort of its pending read (WIA_EVENT_CANCEL_IO) for a hiccup and reads again
    /// once before it looks at the cancel.
    AbortThenReread,
    /// After a cancel, posts a bulk read to drain the pipe and returns without waiting for it
    /// or aborting it: the read stays pending.
    PendingDrain,
}

/// Which built-in driver this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// Correct, with asynchronous cancel.
    Reference,
    /// Correct for XP; ignores WIA_EVENT_CANCEL_IO and says so.
    LegacyXp,
    /// The reference driver with one defect.
    Mutant(Mutation),
}
