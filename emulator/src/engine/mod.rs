//! The scan engine: a sans-IO state machine that produces timed bands of image data.
//!
//! The engine never reads a clock, sleeps or does I/O. The caller passes the current
//! [`Instant`] to every method, calls [`ScanEngine::poll`] until it returns `None`, and asks
//! [`ScanEngine::poll_at`] when to call again. Each [`EngineEvent`] carries the exact virtual time
//! it was scheduled for, which may be earlier than the `now` it was polled at.
//!
//! Contract: before calling a mutating method at `now` ([`ScanEngine::band_taken`],
//! [`ScanEngine::cancel`], [`ScanEngine::start`]) the caller has polled until `poll(now)` returned
//! `None`, so the engine's state reflects everything due up to `now`.
//!
//! # Life of a job
//!
//! ```text
//! start ─► ScanStarted ─(warmup_us)─► WarmupDone ─► BandReady × n ─► PageEnd
//!            ADF, more pages wanted and sheets left: ─(page_feed_us)─► PageFeed ─► BandReady …
//!            ADF, more pages wanted, tray empty:     FeederEmpty
//!          ─► (host takes the last band) ─► ScanComplete
//! ```
//!
//! Timing, with `T = line_period_us` and `B = band_lines`: band `k` of a page is ready at
//! `page_start + (first_line + lines) * T` plus its jitter (a seeded draw in `[0, jitter_us]`),
//! where `page_start` is the start time plus `warmup_us` for the first page and the `PageFeed`
//! time for later pages. So band `k` is ready at `page_start + (k + 1) * B * T` and the short last
//! band at `page_start + lines_per_page * T`. A band is never ready before the band before it.
//!
//! # Device buffer
//!
//! Ready bands wait in a queue of at most `buffer_bands` entries (metadata only: bytes are
//! rendered on demand by [`ScanEngine::fill`], so memory is constant whatever the scan size).
//! If the queue is full when the next band would be ready, the engine emits `BufferFull` and
//! pauses; when the host takes a band ([`ScanEngine::band_taken`]) it emits `Resumed` and the
//! paused band is ready one band period (its own `lines * T`, no jitter) after that call.
//!
//! # Completion
//!
//! `ScanComplete` is emitted when the last band of the last page has been produced **and** taken
//! by the host, at the time of that `band_taken` call. Between the end of production and that
//! point the engine is in [`EngineState::Draining`]. So the engine is idle exactly when the host
//! has everything.
//!
//! # Cancel, reset, faults
//!
//! [`ScanEngine::cancel`] discards all ready bands, stops production and reaches idle
//! `motor_stop_us` later (`MotorStopped`). [`ScanEngine::reset`] reaches idle at once. Device
//! faults ([`Fault`]) are injected by band position; aborting ones leave the engine in
//! [`EngineState::Aborted`] until the next `start` or `reset`. The cancel faults have no
//! position and change what a host cancel does: `ignore_cancel` (scanning goes on),
//! `slow_cancel` (a longer motor stop), `stall_on_cancel` and `disconnect_on_cancel` (the cancel
//! becomes a device-side abort: [`CancelOutcome::Faulted`]).

pub mod config;
mod fault;
mod image;
mod job;
mod rng;

use std::collections::VecDeque;

pub use self::config::{Adf, Optics, Timing};
pub use self::fault::{Fault, FaultKind};
pub use self::image::{pattern_line, ImageError, ImageSource, PnmImage};
pub use self::job::{JobError, ScanJob, ScanMode, ScanSource};
pub use self::rng::SplitMix64;

use crate::time::{Duration, Instant};

/// A band of consecutive lines of one page: the unit the device buffers and sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Band {
    /// Page index within the job, from 0.
    pub page: u16,
    /// Band index within the page, from 0.
    pub index: u32,
    /// Band index within the job, from 0, counting every page.
    pub seq: u64,
    /// First line of the band within the page.
    pub first_line: u32,
    /// Number of lines (`band_lines`, fewer for the last band of a page).
    pub lines: u32,
    /// Bytes the band carries: `lines * bytes_per_line`, or fewer after a `short_band` fault.
    pub bytes: u64,
}

/// Something that happened in the engine, at a virtual time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EngineEvent {
    /// When it was scheduled to happen (not when it was polled).
    pub at: Instant,
    /// What happened.
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A job was accepted; the lamp warms up.
    ScanStarted,
    /// Warm-up is over; the first page starts.
    WarmupDone,
    /// A band is in the device buffer, ready to be read.
    BandReady(Band),
    /// The last band of page `page` was produced.
    PageEnd {
        /// Page index within the job.
        page: u16,
    },
    /// ADF: the sheet for page `page` has been fed into place; its lines start now.
    PageFeed {
        /// Page index within the job.
        page: u16,
    },
    /// ADF: the job wanted another page but the tray is empty.
    FeederEmpty {
        /// Pages scanned in this job.
        pages_scanned: u16,
    },
    /// The job is over: every band was produced and taken by the host.
    ScanComplete {
        /// Pages scanned.
        pages: u16,
    },
    /// A host cancel was accepted; the motor stops `motor_stop_us` later.
    CancelRequested {
        /// Time until `MotorStopped`, in microseconds.
        motor_stop_us: u64,
    },
    /// A host cancel was ignored (`ignore_cancel` fault); scanning continues.
    CancelIgnored,
    /// The motor has stopped after a cancel; the engine is idle.
    MotorStopped {
        /// Ready bands thrown away, plus one if a band was partly scanned.
        bands_discarded: u32,
    },
    /// An injected fault took effect (see [`Fault`] for when each kind fires).
    Fault(Fault),
    /// A band would be ready but the buffer is full: production pauses.
    BufferFull,
    /// The host took a band while production was paused: production resumes.
    Resumed,
}

/// Where the engine is in a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EngineState {
    /// No job; `start` is accepted.
    Idle,
    /// A job was started; the lamp warms up.
    WarmingUp,
    /// Lines of page `page` are being scanned (or production is paused on a full buffer).
    Scanning {
        /// Page index within the job.
        page: u16,
    },
    /// ADF: the sheet for page `page` is being fed.
    FeedingPage {
        /// Page index within the job.
        page: u16,
    },
    /// Every band was produced; waiting for the host to take the rest from the buffer.
    Draining,
    /// A host cancel is in progress; idle again at `until`.
    Cancelling {
        /// When the motor will have stopped.
        until: Instant,
    },
    /// A device-side fault ended the job. Buffered bands can still be taken. `start` (a new
    /// job) and `reset` leave this state; `cancel` answers `NotScanning`.
    Aborted {
        /// The fault that ended the job.
        fault: Fault,
    },
}

/// Why [`ScanEngine::start`] refused a job.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// A job is running or cancelling.
    #[error("device is busy")]
    Busy,
    /// The job does not fit the profile.
    #[error("invalid job: {0}")]
    InvalidJob(#[from] JobError),
    /// An ADF job was started with an empty tray.
    #[error("no documents in the feeder")]
    NoDocuments,
}

/// What [`ScanEngine::cancel`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CancelOutcome {
    /// Production stopped; `MotorStopped` follows.
    Started,
    /// The device ignores cancels (`ignore_cancel` fault); scanning continues.
    Ignored,
    /// Nothing to cancel: idle, already cancelling, or aborted. Harmless.
    NotScanning,
    /// A `stall_on_cancel` or `disconnect_on_cancel` fault turned the cancel into a device-side
    /// abort: ready bands were discarded, the fault event was emitted and the engine is
    /// [`EngineState::Aborted`] with that fault.
    Faulted(Fault),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    WarmupDone,
    Band,
    PageFed,
    MotorStop,
}

/// The scan engine of one device. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct ScanEngine {
    optics: Optics,
    timing: Timing,
    adf: Option<Adf>,
    faults: Vec<Fault>,
    fired: Vec<bool>,
    rng: SplitMix64,
    image: ImageSource,
    sheets: u16,

    state: EngineState,
    job: Option<ScanJob>,
    pending: VecDeque<EngineEvent>,
    next: Option<(Instant, Step)>,
    /// Time of line 0 of the current page (moved forward on resume).
    origin: Instant,
    page: u16,
    band: u32,
    band_started_at: Instant,
    late: Option<Fault>,
    paused: bool,
    last_ready: Instant,
    queue: VecDeque<Band>,
    discarded: u32,

    lines_produced: u64,
    bands_produced: u64,
    bands_taken: u64,
    pages_done: u16,

    line_buf: Vec<u8>,
    line_key: Option<(u16, u32)>,
    /// Lines per band of the current job: the profile's `band_lines`, or fewer if the host
    /// asked for smaller blocks ([`ScanEngine::start_with_band_lines`]).
    band_lines: u32,
}

impl ScanEngine {
    /// An idle engine with these optics, feeder (with its loaded sheets), timing (and its
    /// jitter seed) and faults, serving the test pattern. A device profile builds one with
    /// `Profile::engine`.
    pub fn new(optics: &Optics, timing: &Timing, faults: &[Fault]) -> ScanEngine {
        let adf = optics.adf.clone();
        ScanEngine {
            optics: optics.clone(),
            timing: timing.clone(),
            sheets: adf.as_ref().map_or(0, |a| a.loaded_sheets),
            adf,
            fired: vec![false; faults.len()],
            faults: faults.to_vec(),
            rng: SplitMix64::new(timing.jitter_seed),
            image: ImageSource::Pattern,
            state: EngineState::Idle,
            job: None,
            pending: VecDeque::new(),
            next: None,
            origin: Instant::ZERO,
            page: 0,
            band: 0,
            band_started_at: Instant::ZERO,
            late: None,
            paused: false,
            last_ready: Instant::ZERO,
            queue: VecDeque::new(),
            discarded: 0,
            lines_produced: 0,
            bands_produced: 0,
            bands_taken: 0,
            pages_done: 0,
            line_buf: Vec::new(),
            line_key: None,
            band_lines: timing.band_lines,
        }
    }

    /// Replaces the injected faults and re-arms them all.
    pub fn set_faults(&mut self, faults: Vec<Fault>) {
        self.fired = vec![false; faults.len()];
        self.faults = faults;
    }

    /// The injected faults.
    pub fn faults(&self) -> &[Fault] {
        &self.faults
    }

    /// Replaces the image source (takes effect for bytes filled from now on).
    pub fn set_image(&mut self, image: ImageSource) {
        self.image = image;
        self.line_key = None;
    }

    /// Puts `sheets` sheets in the feeder tray (no effect on the profile's capacity check).
    pub fn set_loaded_sheets(&mut self, sheets: u16) {
        self.sheets = sheets;
    }

    /// Sheets left in the feeder tray (0 without a feeder).
    pub fn loaded_sheets(&self) -> u16 {
        self.sheets
    }

    /// Lines per band of the current (or last) job.
    pub fn band_lines(&self) -> u32 {
        self.band_lines
    }

    /// The timing the engine runs with.
    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// What the optics and paper path can do.
    pub fn optics(&self) -> &Optics {
        &self.optics
    }

    /// Where the engine is.
    pub fn state(&self) -> EngineState {
        self.state
    }

    /// Whether production is paused on a full buffer (after `BufferFull`, until `Resumed`).
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The current job, or the last one until `reset`.
    pub fn job(&self) -> Option<&ScanJob> {
        self.job.as_ref()
    }

    /// Starts `job` at `now`.
    ///
    /// Accepted when idle or aborted. Errors: [`StartError::Busy`] while a job runs, drains or
    /// cancels; [`StartError::InvalidJob`] if the job does not fit the profile;
    /// [`StartError::NoDocuments`] for an ADF job with an empty tray.
    pub fn start(&mut self, now: Instant, job: ScanJob) -> Result<(), StartError> {
        self.start_with_band_lines(now, job, self.timing.band_lines)
    }

    /// Starts `job` at `now` with bands of at most `max_band_lines` lines (at least 1, at most
    /// the profile's `band_lines`): for protocols where the host fixes the largest block it can
    /// take. Band timing follows from the lines as usual. Errors as [`ScanEngine::start`].
    pub fn start_with_band_lines(
        &mut self,
        now: Instant,
        job: ScanJob,
        max_band_lines: u32,
    ) -> Result<(), StartError> {
        if !matches!(self.state, EngineState::Idle | EngineState::Aborted { .. }) {
            return Err(StartError::Busy);
        }
        job.validate(&self.optics)?;
        if job.source == ScanSource::Adf && self.sheets == 0 {
            return Err(StartError::NoDocuments);
        }
        self.clear_job();
        self.job = Some(job);
        self.band_lines = max_band_lines.clamp(1, self.timing.band_lines.max(1));
        self.last_ready = now;
        self.state = EngineState::WarmingUp;
        self.push(now, EventKind::ScanStarted);
        self.next = Some((
            now + Duration::from_micros(self.timing.warmup_us),
            Step::WarmupDone,
        ));
        Ok(())
    }

    /// The next event due at or before `now`, with its scheduled time; `None` when nothing is
    /// due. Call in a loop until `None`.
    pub fn poll(&mut self, now: Instant) -> Option<EngineEvent> {
        loop {
            let pending_at = self.pending.front().map(|e| e.at);
            match (pending_at, self.next) {
                (Some(p), next) if next.is_none_or(|(s, _)| p <= s) => {
                    return if p <= now {
                        self.pending.pop_front()
                    } else {
                        None
                    };
                }
                (_, Some((s, step))) if s <= now => {
                    self.next = None;
                    self.run(s, step);
                }
                _ => return None,
            }
        }
    }

    /// When the next event is due, or `None` if nothing is scheduled (idle, paused on a full
    /// buffer, draining, aborted).
    pub fn poll_at(&self) -> Option<Instant> {
        let pending = self.pending.front().map(|e| e.at);
        let step = self.next.map(|(s, _)| s);
        match (pending, step) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The oldest ready band, the one the host reads next.
    pub fn front_band(&self) -> Option<&Band> {
        self.queue.front()
    }

    /// All ready bands, oldest first.
    pub fn ready_bands(&self) -> impl ExactSizeIterator<Item = &Band> + '_ {
        self.queue.iter()
    }

    /// The host has read the whole front band: removes and returns it (`None` if there is
    /// none). Resumes a paused production, and completes the job when it was the last band.
    pub fn band_taken(&mut self, now: Instant) -> Option<Band> {
        let band = self.queue.pop_front()?;
        self.bands_taken += 1;
        if self.paused {
            self.paused = false;
            self.push(now, EventKind::Resumed);
            let job = self.job.expect("paused with a job");
            let (first, lines) = self.geometry(&job, self.band);
            let period = self.timing.line_period_us;
            self.origin =
                Instant::from_micros(now.total_micros().saturating_sub(u64::from(first) * period));
            self.band_started_at = now;
            self.next = Some((
                now + Duration::from_micros(u64::from(lines) * period),
                Step::Band,
            ));
        } else if self.state == EngineState::Draining && self.queue.is_empty() {
            self.state = EngineState::Idle;
            self.push(
                now,
                EventKind::ScanComplete {
                    pages: self.pages_done,
                },
            );
        }
        Some(band)
    }

    /// Host cancel at `now`. See [`CancelOutcome`]; when started or faulted, ready bands are
    /// discarded at once and no `BandReady` of this job follows.
    pub fn cancel(&mut self, now: Instant) -> CancelOutcome {
        if !matches!(
            self.state,
            EngineState::WarmingUp
                | EngineState::Scanning { .. }
                | EngineState::FeedingPage { .. }
                | EngineState::Draining
        ) {
            return CancelOutcome::NotScanning;
        }
        let decisive = self.faults.iter().copied().find(|f| {
            matches!(
                f.kind(),
                FaultKind::IgnoreCancel | FaultKind::StallOnCancel | FaultKind::DisconnectOnCancel
            )
        });
        match decisive {
            Some(f @ Fault::IgnoreCancel) => {
                self.push(now, EventKind::Fault(f));
                self.push(now, EventKind::CancelIgnored);
                return CancelOutcome::Ignored;
            }
            Some(f @ (Fault::StallOnCancel | Fault::DisconnectOnCancel)) => {
                self.queue.clear();
                self.abort(now, f);
                return CancelOutcome::Faulted(f);
            }
            _ => {}
        }
        let mut stop_us = self.timing.motor_stop_us;
        if let Some(f) = self
            .faults
            .iter()
            .copied()
            .find(|f| f.kind() == FaultKind::SlowCancel)
        {
            if let Fault::SlowCancel { motor_stop_us } = f {
                stop_us = motor_stop_us;
            }
            self.push(now, EventKind::Fault(f));
        }
        let partial = matches!(self.state, EngineState::Scanning { .. })
            && matches!(self.next, Some((_, Step::Band)))
            && now > self.band_started_at;
        self.discarded = self.queue.len() as u32 + u32::from(partial);
        self.queue.clear();
        self.paused = false;
        self.late = None;
        let until = now + Duration::from_micros(stop_us);
        self.state = EngineState::Cancelling { until };
        self.push(
            now,
            EventKind::CancelRequested {
                motor_stop_us: stop_us,
            },
        );
        self.next = Some((until, Step::MotorStop));
        CancelOutcome::Started
    }

    /// Device reset at `now`: idle at once; the job, its bands, counters and any events not yet
    /// polled are dropped. Faults stay armed as they are; the tray keeps its sheets.
    pub fn reset(&mut self, now: Instant) {
        let _ = now;
        self.clear_job();
        self.pending.clear();
        self.job = None;
        self.state = EngineState::Idle;
    }

    /// Lines in the bands produced so far in this job.
    pub fn lines_produced(&self) -> u64 {
        self.lines_produced
    }

    /// Bands produced so far in this job.
    pub fn bands_produced(&self) -> u64 {
        self.bands_produced
    }

    /// Bands the host has taken so far in this job.
    pub fn bands_taken(&self) -> u64 {
        self.bands_taken
    }

    /// Pages whose last band was produced in this job.
    pub fn pages_scanned(&self) -> u16 {
        self.pages_done
    }

    /// Writes bytes `[offset, offset + out.len())` of `band` into `out`, rendered on demand
    /// from the image source (one line of scratch memory, whatever the scan size).
    ///
    /// Zero-fills if there is no job (after `reset`). Panics if the range goes past
    /// `band.bytes`.
    pub fn fill(&mut self, band: &Band, offset: u64, out: &mut [u8]) {
        assert!(
            offset
                .checked_add(out.len() as u64)
                .is_some_and(|end| end <= band.bytes),
            "fill of {} bytes at offset {offset} goes past the band's {} bytes",
            out.len(),
            band.bytes
        );
        let Some(job) = self.job else {
            out.fill(0);
            return;
        };
        let bpl = job.bytes_per_line();
        let bpl_usize = usize::try_from(bpl).expect("line fits in memory");
        if self.line_buf.len() != bpl_usize {
            self.line_buf = vec![0; bpl_usize];
            self.line_key = None;
        }
        let mut pos = offset;
        let mut done = 0usize;
        while done < out.len() {
            let line = band.first_line + (pos / bpl) as u32;
            let within = (pos % bpl) as usize;
            if within == 0 && out.len() - done >= bpl_usize {
                // A whole line is rendered where it goes, with no copy; the cached line
                // stays for a fill that ends or starts in the middle of one.
                self.image
                    .render_line(&job, band.page, line, &mut out[done..done + bpl_usize]);
                done += bpl_usize;
                pos += bpl;
                continue;
            }
            if self.line_key != Some((band.page, line)) {
                self.image
                    .render_line(&job, band.page, line, &mut self.line_buf);
                self.line_key = Some((band.page, line));
            }
            let n = (bpl_usize - within).min(out.len() - done);
            out[done..done + n].copy_from_slice(&self.line_buf[within..within + n]);
            done += n;
            pos += n as u64;
        }
    }

    fn push(&mut self, at: Instant, kind: EventKind) {
        self.pending.push_back(EngineEvent { at, kind });
    }

    /// Drops everything of the current job except queued events.
    fn clear_job(&mut self) {
        self.queue.clear();
        self.next = None;
        self.paused = false;
        self.late = None;
        self.page = 0;
        self.band = 0;
        self.discarded = 0;
        self.lines_produced = 0;
        self.bands_produced = 0;
        self.bands_taken = 0;
        self.pages_done = 0;
        self.line_key = None;
    }

    /// `(first_line, lines)` of band `index` of a page.
    fn geometry(&self, job: &ScanJob, index: u32) -> (u32, u32) {
        let first = index * self.band_lines;
        (first, self.band_lines.min(job.height_px - first))
    }

    /// Takes the first unfired positional fault at `(page, band)` that `want` accepts.
    fn take_fault(&mut self, page: u16, band: u32, want: impl Fn(&Fault) -> bool) -> Option<Fault> {
        let i = self
            .faults
            .iter()
            .zip(&self.fired)
            .position(|(f, fired)| !fired && f.position() == Some((page, band)) && want(f))?;
        self.fired[i] = true;
        Some(self.faults[i])
    }

    fn run(&mut self, at: Instant, step: Step) {
        match step {
            Step::WarmupDone => {
                self.push(at, EventKind::WarmupDone);
                self.begin_page(at);
            }
            Step::PageFed => {
                self.push(at, EventKind::PageFeed { page: self.page });
                self.begin_page(at);
            }
            Step::MotorStop => {
                self.push(
                    at,
                    EventKind::MotorStopped {
                        bands_discarded: self.discarded,
                    },
                );
                self.state = EngineState::Idle;
            }
            Step::Band => self.produce(at),
        }
    }

    fn begin_page(&mut self, at: Instant) {
        self.state = EngineState::Scanning { page: self.page };
        self.origin = at;
        self.band = 0;
        self.schedule_band();
    }

    fn schedule_band(&mut self) {
        let job = self.job.expect("scheduling with a job");
        let (first, lines) = self.geometry(&job, self.band);
        let period = self.timing.line_period_us;
        let start = self.origin + Duration::from_micros(u64::from(first) * period);
        self.band_started_at = start;
        let jitter = self.rng.up_to(self.timing.jitter_us);
        let mut at = start + Duration::from_micros(u64::from(lines) * period + jitter);
        if let Some(f) = self.take_fault(self.page, self.band, |f| f.kind() == FaultKind::LateBand)
        {
            if let Fault::LateBand { delay_us, .. } = f {
                at += Duration::from_micros(delay_us);
            }
            self.late = Some(f);
        }
        self.next = Some((at.max(self.last_ready), Step::Band));
    }

    fn abort(&mut self, at: Instant, fault: Fault) {
        self.push(at, EventKind::Fault(fault));
        self.state = EngineState::Aborted { fault };
        self.next = None;
        self.paused = false;
        self.late = None;
    }

    fn produce(&mut self, at: Instant) {
        let job = self.job.expect("producing with a job");
        let (page, index) = (self.page, self.band);
        if let Some(f) = self.take_fault(page, index, |f| {
            f.aborts() && f.kind() != FaultKind::ShortBand
        }) {
            self.abort(at, f);
            return;
        }
        if self.queue.len() >= self.timing.buffer_bands as usize {
            self.paused = true;
            self.push(at, EventKind::BufferFull);
            return;
        }
        let (first_line, lines) = self.geometry(&job, index);
        let full = u64::from(lines) * job.bytes_per_line();
        let short = self.take_fault(page, index, |f| f.kind() == FaultKind::ShortBand);
        let bytes = match short {
            Some(Fault::ShortBand { bytes, .. }) => bytes.min(full),
            _ => full,
        };
        if let Some(f) = self.late.take() {
            self.push(at, EventKind::Fault(f));
        }
        let band = Band {
            page,
            index,
            seq: self.bands_produced,
            first_line,
            lines,
            bytes,
        };
        self.queue.push_back(band);
        self.bands_produced += 1;
        self.lines_produced += u64::from(lines);
        self.last_ready = at;
        self.push(at, EventKind::BandReady(band));
        if let Some(f) = short {
            self.abort(at, f);
            return;
        }
        if index + 1 < job.bands_per_page(self.band_lines) {
            self.band += 1;
            self.schedule_band();
            return;
        }
        self.push(at, EventKind::PageEnd { page });
        self.pages_done += 1;
        let adf = job.source == ScanSource::Adf;
        if adf {
            self.sheets = self.sheets.saturating_sub(1);
        }
        let want_more = adf && (job.pages == 0 || self.pages_done < job.pages);
        if want_more && self.sheets > 0 {
            self.page += 1;
            self.band = 0;
            self.state = EngineState::FeedingPage { page: self.page };
            let feed_us = self.adf.as_ref().map_or(0, |a| a.page_feed_us);
            self.next = Some((at + Duration::from_micros(feed_us), Step::PageFed));
            return;
        }
        if want_more {
            self.push(
                at,
                EventKind::FeederEmpty {
                    pages_scanned: self.pages_done,
                },
            );
        }
        self.state = EngineState::Draining;
    }
}
