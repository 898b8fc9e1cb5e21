//! Scan engine and profile tests: timing, bytes, feeder, buffer, cancel, faults, images,
//! streaming.

use std::path::PathBuf;

use scanemu::engine::{
    pattern_line, Band, CancelOutcome, EngineEvent, EngineState, EventKind, Fault, ImageSource,
    JobError, ScanEngine, ScanJob, ScanMode, StartError,
};
use scanemu::profile::Profile;
use scanemu::time::Instant;

fn profile(name: &str) -> Profile {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/profiles")
        .join(format!("{name}.json"));
    Profile::load(&path).unwrap()
}

fn us(micros: u64) -> Instant {
    Instant::from_micros(micros)
}

/// A host that starts reading the front band as soon as it is ready and finishes `delay_us`
/// later. Stops when nothing more is scheduled or after `max_events` events.
fn simulate(
    engine: &mut ScanEngine,
    start: Instant,
    delay_us: u64,
    max_events: usize,
) -> Vec<EngineEvent> {
    let mut now = start;
    let mut events = Vec::new();
    let mut host_done: Option<Instant> = None;
    loop {
        while let Some(e) = engine.poll(now) {
            assert!(e.at <= now, "event from the future: {e:?} at {now:?}");
            events.push(e);
        }
        if events.len() >= max_events {
            break;
        }
        match host_done {
            Some(t) if t <= now => {
                engine.band_taken(now).expect("a band to take");
                host_done = None;
                continue;
            }
            None if engine.front_band().is_some() => {
                host_done = Some(now + scanemu::time::Duration::from_micros(delay_us));
                continue;
            }
            _ => {}
        }
        let next = match (engine.poll_at(), host_done) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => break,
            },
        };
        now = next;
    }
    events
}

fn bands(events: &[EngineEvent]) -> Vec<(Instant, Band)> {
    events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::BandReady(b) => Some((e.at, b)),
            _ => None,
        })
        .collect()
}

fn find(events: &[EngineEvent], pred: impl Fn(&EventKind) -> bool) -> Vec<EngineEvent> {
    events.iter().copied().filter(|e| pred(&e.kind)).collect()
}

/// Expected bytes of lines `first..first+lines` of page `page`.
fn expected(page: u16, first: u32, lines: u32, bpl: usize) -> Vec<u8> {
    let mut v = vec![0; bpl * lines as usize];
    for (i, chunk) in v.chunks_exact_mut(bpl).enumerate() {
        pattern_line(page, first + i as u32, chunk);
    }
    v
}

fn read_band(engine: &mut ScanEngine, band: &Band, chunk: usize) -> Vec<u8> {
    let mut out = vec![0; band.bytes as usize];
    let mut off = 0;
    while off < out.len() {
        let n = chunk.min(out.len() - off);
        engine.fill(band, off as u64, &mut out[off..off + n]);
        off += n;
    }
    out
}

#[test]
fn all_fixture_profiles_load() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/profiles");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let p = Profile::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(path.file_stem().unwrap().to_str().unwrap(), p.name);
            names.push(p.name);
        }
    }
    names.sort();
    assert_eq!(
        names,
        [
            "a4-flatbed-1200",
            "a4-flatbed-300",
            "adf-sheetfed",
            "escI-b6-flatbed",
            "escI-b7-flatbed",
            "fast-feeder",
            "fast-flatbed"
        ]
    );
    assert_eq!(profile("fast-flatbed"), Profile::builtin_fast());
}

#[test]
fn profile_load_errors_name_file_line_column() {
    let dir = std::env::temp_dir().join(format!("scanemu-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.json");
    let text = scanemu::profile::BUILTIN_FAST_JSON
        .replace("\"jitter_us\": 0,", "\"jitter_us\": 0,\n    \"foo\": 3,");
    std::fs::write(&path, &text).unwrap();
    let err = Profile::load(&path).unwrap_err().to_string();
    let line = text.lines().position(|l| l.contains("\"foo\"")).unwrap() + 1;
    assert!(
        err.starts_with(&format!("{}:{line}:", path.display())),
        "{err}"
    );
    assert!(err.contains("unknown field `foo`"), "{err}");
    let missing = Profile::load(&dir.join("nope.json"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("nope.json"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a4_profile_area_at_300_dpi() {
    let p = profile("a4-flatbed-300");
    assert!(ScanJob::flatbed(300, ScanMode::Gray8, 2480, 3508)
        .validate(&p.optics)
        .is_ok());
    let err = ScanJob::flatbed(300, ScanMode::Gray8, 2481, 3508).validate(&p.optics);
    assert!(matches!(
        err,
        Err(JobError::OutOfArea {
            max_width_px: 2480,
            max_height_px: 3508,
            ..
        })
    ));
    let mut off = ScanJob::flatbed(300, ScanMode::Gray8, 2480, 3508);
    off.y_px = 1;
    assert!(off.validate(&p.optics).is_err());
}

#[test]
fn bytes_per_line_by_mode() {
    let j = |mode, w| ScanJob::flatbed(100, mode, w, 10);
    assert_eq!(j(ScanMode::Lineart, 13).bytes_per_line(), 2);
    assert_eq!(j(ScanMode::Lineart, 16).bytes_per_line(), 2);
    assert_eq!(j(ScanMode::Gray8, 13).bytes_per_line(), 13);
    assert_eq!(j(ScanMode::Gray16, 10).bytes_per_line(), 20);
    assert_eq!(j(ScanMode::Color24, 10).bytes_per_line(), 30);
    assert_eq!(j(ScanMode::Color48, 10).bytes_per_line(), 60);
    assert_eq!(j(ScanMode::Color48, 10).page_bytes(), 600);
    assert_eq!(j(ScanMode::Gray8, 1).bands_per_page(4), 3);
    assert_eq!(j(ScanMode::Gray8, 1).lines_per_page(), 10);
    assert_eq!(ScanMode::Color48.bits_per_pixel(), 48);
}

#[test]
fn band_timing_is_exact_without_jitter() {
    let mut e = Profile::builtin_fast().engine();
    let t0 = 1000;
    e.start(us(t0), ScanJob::flatbed(100, ScanMode::Gray8, 256, 250))
        .unwrap();
    assert_eq!(e.state(), EngineState::WarmingUp);
    let events = simulate(&mut e, us(t0), 0, 10_000);
    assert_eq!(
        events[0],
        EngineEvent {
            at: us(t0),
            kind: EventKind::ScanStarted
        }
    );
    assert_eq!(
        events[1],
        EngineEvent {
            at: us(t0 + 2000),
            kind: EventKind::WarmupDone
        }
    );
    let b = bands(&events);
    assert_eq!(b.len(), 16);
    for (k, (at, band)) in b.iter().enumerate() {
        let k32 = k as u32;
        assert_eq!((band.page, band.index, band.seq), (0, k32, k as u64));
        assert_eq!(band.first_line, k32 * 16);
        if k < 15 {
            assert_eq!(at.total_micros(), t0 + 2000 + (k as u64 + 1) * 16 * 50);
            assert_eq!(band.lines, 16);
        } else {
            assert_eq!(at.total_micros(), t0 + 2000 + 250 * 50);
            assert_eq!(band.lines, 10);
        }
        assert_eq!(band.bytes, u64::from(band.lines) * 256);
    }
    let end = us(t0 + 2000 + 250 * 50);
    let tail: Vec<_> = events[events.len() - 2..].to_vec();
    assert_eq!(
        tail[0],
        EngineEvent {
            at: end,
            kind: EventKind::PageEnd { page: 0 }
        }
    );
    assert_eq!(
        tail[1],
        EngineEvent {
            at: end,
            kind: EventKind::ScanComplete { pages: 1 }
        }
    );
    assert_eq!(e.state(), EngineState::Idle);
    assert_eq!(
        (e.lines_produced(), e.bands_produced(), e.bands_taken()),
        (250, 16, 16)
    );
    assert_eq!(e.poll_at(), None);
}

#[test]
fn scan_complete_waits_for_the_host_to_take_the_last_band() {
    let mut e = Profile::builtin_fast().engine();
    e.start(us(0), ScanJob::flatbed(100, ScanMode::Gray8, 8, 16))
        .unwrap();
    let events: Vec<_> = std::iter::from_fn(|| e.poll(us(1_000_000))).collect();
    assert!(matches!(
        events.last().unwrap().kind,
        EventKind::PageEnd { page: 0 }
    ));
    assert_eq!(e.state(), EngineState::Draining);
    assert_eq!(e.cancel(us(1_000_000)), CancelOutcome::Started);
    let mut e = Profile::builtin_fast().engine();
    e.start(us(0), ScanJob::flatbed(100, ScanMode::Gray8, 8, 16))
        .unwrap();
    while e.poll(us(1_000_000)).is_some() {}
    e.band_taken(us(1_500_000)).unwrap();
    assert_eq!(
        e.poll(us(1_500_000)),
        Some(EngineEvent {
            at: us(1_500_000),
            kind: EventKind::ScanComplete { pages: 1 }
        })
    );
    assert_eq!(e.state(), EngineState::Idle);
    assert_eq!(e.band_taken(us(1_500_001)), None);
}

#[test]
fn every_band_matches_the_pattern() {
    for (mode, w) in [
        (ScanMode::Gray8, 256),
        (ScanMode::Lineart, 37),
        (ScanMode::Gray16, 3),
        (ScanMode::Color48, 200),
    ] {
        let mut e = Profile::builtin_fast().engine();
        let job = ScanJob::flatbed(100, mode, w, 70);
        e.start(us(0), job).unwrap();
        let bpl = job.bytes_per_line() as usize;
        let mut total = 0;
        let mut now = us(0);
        loop {
            while e.poll(now).is_some() {}
            if let Some(band) = e.front_band().copied() {
                let want = expected(band.page, band.first_line, band.lines, bpl);
                // Reads in pieces shorter than a line, and in pieces holding whole lines
                // (rendered in place) between parts of others.
                let got = read_band(&mut e, &band, 777);
                assert_eq!(got, want, "{mode:?} band {}", band.index);
                let whole = read_band(&mut e, &band, 2 * bpl + bpl / 2 + 1);
                assert_eq!(whole, want, "{mode:?} band {} in whole lines", band.index);
                total += got.len();
                e.band_taken(now);
                continue;
            }
            match e.poll_at() {
                Some(t) => now = t,
                None => break,
            }
        }
        assert_eq!(total as u64, job.page_bytes(), "{mode:?}");
    }
}

#[test]
fn start_errors() {
    let mut e = Profile::builtin_fast().engine();
    let bad = |e: &mut ScanEngine, job| e.start(us(0), job).unwrap_err();
    assert!(matches!(
        bad(&mut e, ScanJob::flatbed(300, ScanMode::Gray8, 1, 1)),
        StartError::InvalidJob(JobError::Resolution { dpi: 300, .. })
    ));
    assert!(matches!(
        bad(&mut e, ScanJob::flatbed(100, ScanMode::Gray8, 0, 1)),
        StartError::InvalidJob(JobError::EmptyArea { .. })
    ));
    assert!(matches!(
        bad(&mut e, ScanJob::flatbed(50, ScanMode::Gray8, 129, 1)),
        StartError::InvalidJob(JobError::OutOfArea {
            max_width_px: 128,
            ..
        })
    ));
    assert!(matches!(
        bad(&mut e, ScanJob::adf(100, ScanMode::Gray8, 1, 1, 0)),
        StartError::InvalidJob(JobError::NoAdf)
    ));
    let mut two = ScanJob::flatbed(100, ScanMode::Gray8, 1, 1);
    two.pages = 2;
    assert!(matches!(
        bad(&mut e, two),
        StartError::InvalidJob(JobError::FlatbedPages { pages: 2 })
    ));
    let mut adf = profile("adf-sheetfed").engine();
    assert!(matches!(
        bad(&mut adf, ScanJob::adf(75, ScanMode::Gray16, 1, 1, 1)),
        StartError::InvalidJob(JobError::Mode {
            mode: ScanMode::Gray16
        })
    ));
    e.start(us(0), ScanJob::flatbed(100, ScanMode::Gray8, 1, 1))
        .unwrap();
    assert_eq!(
        bad(&mut e, ScanJob::flatbed(100, ScanMode::Gray8, 1, 1)),
        StartError::Busy
    );
    assert_eq!(
        StartError::NoDocuments.to_string(),
        "no documents in the feeder"
    );
}

fn adf_engine() -> ScanEngine {
    let p = profile("adf-sheetfed");
    assert_eq!(p.optics.adf.as_ref().unwrap().loaded_sheets, 3);
    p.engine()
}

#[test]
fn adf_until_empty_scans_every_sheet() {
    let mut e = adf_engine();
    let job = ScanJob::adf(75, ScanMode::Gray8, 100, 100, 0);
    e.start(us(0), job).unwrap();
    let events = simulate(&mut e, us(0), 0, 10_000);
    let ends = find(&events, |k| matches!(k, EventKind::PageEnd { .. }));
    let feeds = find(&events, |k| matches!(k, EventKind::PageFeed { .. }));
    assert_eq!(ends.len(), 3);
    assert_eq!(
        feeds.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [
            EventKind::PageFeed { page: 1 },
            EventKind::PageFeed { page: 2 }
        ]
    );
    // Page 1 starts one feed after page 0 ends; its first band a band period later.
    assert_eq!(
        feeds[0].at.total_micros(),
        ends[0].at.total_micros() + 900_000
    );
    let b = bands(&events);
    assert_eq!(b.len(), 6);
    assert_eq!((b[2].1.page, b[2].1.index, b[2].1.seq), (1, 0, 2));
    assert_eq!(b[2].0.total_micros(), feeds[0].at.total_micros() + 64 * 600);
    assert_eq!(b[0].0.total_micros(), 500_000 + 64 * 600);
    let n = events.len();
    assert_eq!(
        events[n - 2].kind,
        EventKind::FeederEmpty { pages_scanned: 3 }
    );
    assert_eq!(events[n - 1].kind, EventKind::ScanComplete { pages: 3 });
    assert_eq!(e.loaded_sheets(), 0);
    assert_eq!(e.start(us(99_000_000), job), Err(StartError::NoDocuments));
    // Page numbers are in the bytes.
    let band = b[5].1;
    let mut line = vec![0; 100];
    assert_eq!(
        e.start(us(0), ScanJob::flatbed(75, ScanMode::Gray8, 100, 100)),
        Err(StartError::InvalidJob(JobError::NoFlatbed))
    );
    e.set_loaded_sheets(1);
    e.start(us(0), job).unwrap();
    e.fill(&band, 0, &mut line);
    assert_eq!(&line[2..4], &2u16.to_be_bytes());
}

#[test]
fn adf_more_pages_than_sheets_reports_feeder_empty_after_three() {
    let mut e = adf_engine();
    e.start(us(0), ScanJob::adf(75, ScanMode::Lineart, 100, 10, 5))
        .unwrap();
    let events = simulate(&mut e, us(0), 0, 10_000);
    assert_eq!(
        find(&events, |k| matches!(k, EventKind::PageEnd { .. })).len(),
        3
    );
    assert_eq!(
        find(&events, |k| matches!(k, EventKind::FeederEmpty { .. }))[0].kind,
        EventKind::FeederEmpty { pages_scanned: 3 }
    );
    assert_eq!(
        events.last().unwrap().kind,
        EventKind::ScanComplete { pages: 3 }
    );

    let mut e = adf_engine();
    e.start(us(0), ScanJob::adf(75, ScanMode::Lineart, 100, 10, 2))
        .unwrap();
    let events = simulate(&mut e, us(0), 0, 10_000);
    assert!(find(&events, |k| matches!(k, EventKind::FeederEmpty { .. })).is_empty());
    assert_eq!(
        events.last().unwrap().kind,
        EventKind::ScanComplete { pages: 2 }
    );
    assert_eq!(e.loaded_sheets(), 1);
}

#[test]
fn full_buffer_pauses_and_resumes_on_take() {
    let mut e = Profile::builtin_fast().engine();
    e.start(us(0), ScanJob::flatbed(100, ScanMode::Gray8, 16, 160))
        .unwrap();
    let events: Vec<_> = std::iter::from_fn(|| e.poll(us(1_000_000))).collect();
    let b = bands(&events);
    assert_eq!(b.len(), 4);
    let full = events.last().unwrap();
    assert_eq!(
        *full,
        EngineEvent {
            at: us(2000 + 5 * 800),
            kind: EventKind::BufferFull
        }
    );
    assert_eq!(e.poll_at(), None);
    assert_eq!(e.ready_bands().len(), 4);
    assert!(matches!(e.state(), EngineState::Scanning { page: 0 }));
    assert!(e.is_paused());
    let taken = e.band_taken(us(50_000)).unwrap();
    assert_eq!(taken.index, 0);
    assert_eq!(
        e.poll(us(50_000)).unwrap(),
        EngineEvent {
            at: us(50_000),
            kind: EventKind::Resumed
        }
    );
    assert_eq!(e.poll_at(), Some(us(50_800)));
    let ev = e.poll(us(50_800)).unwrap();
    assert!(
        matches!(
            ev.kind,
            EventKind::BandReady(Band {
                index: 4,
                first_line: 64,
                ..
            })
        ),
        "{ev:?}"
    );
    // The buffer is full again at the next band time.
    assert_eq!(
        e.poll(us(51_600)).unwrap(),
        EngineEvent {
            at: us(51_600),
            kind: EventKind::BufferFull
        }
    );
    e.band_taken(us(60_000));
    e.band_taken(us(60_000));
    let rest = simulate(&mut e, us(60_000), 0, 1000);
    let b = bands(&rest);
    assert_eq!(b[0], (us(60_800), b[0].1));
    assert_eq!(b[1].0, us(61_600));
    assert_eq!(b.last().unwrap().1.index, 9);
    assert_eq!(
        rest.last().unwrap().kind,
        EventKind::ScanComplete { pages: 1 }
    );
}

#[test]
fn cancel_discards_and_stops_the_motor() {
    let mut e = Profile::builtin_fast().engine();
    e.start(us(0), ScanJob::flatbed(100, ScanMode::Gray8, 256, 256))
        .unwrap();
    // Bands 0..=2 ready by 4400; band 3 is partly scanned at 4500.
    let now = us(4500);
    let events: Vec<_> = std::iter::from_fn(|| e.poll(now)).collect();
    assert_eq!(bands(&events).len(), 3);
    assert_eq!(e.cancel(now), CancelOutcome::Started);
    assert_eq!(e.state(), EngineState::Cancelling { until: us(5000) });
    assert!(e.front_band().is_none());
    assert_eq!(e.cancel(now), CancelOutcome::NotScanning);
    let after: Vec<_> = std::iter::from_fn(|| e.poll(us(10_000_000))).collect();
    assert_eq!(
        after,
        [
            EngineEvent {
                at: now,
                kind: EventKind::CancelRequested { motor_stop_us: 500 }
            },
            EngineEvent {
                at: us(5000),
                kind: EventKind::MotorStopped { bands_discarded: 4 }
            },
        ]
    );
    assert_eq!(e.state(), EngineState::Idle);
    assert_eq!(e.poll_at(), None);
    assert_eq!(e.cancel(us(10_000_000)), CancelOutcome::NotScanning);
    // Ready for the next job, which starts from page 0 line 0 again.
    e.start(us(20_000), ScanJob::flatbed(100, ScanMode::Gray8, 256, 32))
        .unwrap();
    let events = simulate(&mut e, us(20_000), 0, 1000);
    assert_eq!(bands(&events)[0].1.seq, 0);
    assert_eq!(
        events.last().unwrap().kind,
        EventKind::ScanComplete { pages: 1 }
    );
}

#[test]
fn cancel_while_paused_or_warming_counts_only_buffered_bands() {
    let mut e = Profile::builtin_fast().engine();
    e.start(us(0), ScanJob::flatbed(100, ScanMode::Gray8, 256, 256))
        .unwrap();
    while e.poll(us(100_000)).is_some() {}
    assert_eq!(e.cancel(us(100_000)), CancelOutcome::Started);
    let ev: Vec<_> = std::iter::from_fn(|| e.poll(us(200_000))).collect();
    assert_eq!(ev[1].kind, EventKind::MotorStopped { bands_discarded: 4 });

    e.start(
        us(300_000),
        ScanJob::flatbed(100, ScanMode::Gray8, 256, 256),
    )
    .unwrap();
    while e.poll(us(300_100)).is_some() {}
    assert_eq!(e.cancel(us(300_100)), CancelOutcome::Started);
    let ev: Vec<_> = std::iter::from_fn(|| e.poll(us(400_000))).collect();
    assert_eq!(ev[1].kind, EventKind::MotorStopped { bands_discarded: 0 });
    assert!(bands(&ev).is_empty());
}

#[test]
fn ignore_cancel_keeps_scanning() {
    let mut e = Profile::builtin_fast().engine();
    e.set_faults(vec![Fault::IgnoreCancel]);
    e.start(us(0), ScanJob::flatbed(100, ScanMode::Gray8, 64, 64))
        .unwrap();
    while e.poll(us(3000)).is_some() {}
    assert_eq!(e.cancel(us(3000)), CancelOutcome::Ignored);
    let ev: Vec<_> = std::iter::from_fn(|| e.poll(us(3000))).collect();
    assert_eq!(
        ev,
        [
            EngineEvent {
                at: us(3000),
                kind: EventKind::Fault(Fault::IgnoreCancel)
            },
            EngineEvent {
                at: us(3000),
                kind: EventKind::CancelIgnored
            },
        ]
    );
    let rest = simulate(&mut e, us(3000), 0, 1000);
    assert_eq!(bands(&rest).len(), 3);
    assert_eq!(e.bands_produced(), 4);
    assert_eq!(
        rest.last().unwrap().kind,
        EventKind::ScanComplete { pages: 1 }
    );
}

#[test]
fn slow_cancel_takes_its_own_time() {
    let mut e = Profile::builtin_fast().engine();
    e.set_faults(vec![Fault::SlowCancel {
        motor_stop_us: 12_345,
    }]);
    e.start(us(0), ScanJob::flatbed(100, ScanMode::Gray8, 64, 64))
        .unwrap();
    while e.poll(us(2900)).is_some() {}
    assert_eq!(e.cancel(us(2900)), CancelOutcome::Started);
    let ev: Vec<_> = std::iter::from_fn(|| e.poll(us(1_000_000))).collect();
    assert_eq!(
        ev,
        [
            EngineEvent {
                at: us(2900),
                kind: EventKind::Fault(Fault::SlowCancel {
                    motor_stop_us: 12_345
                })
            },
            EngineEvent {
                at: us(2900),
                kind: EventKind::CancelRequested {
                    motor_stop_us: 12_345
                }
            },
            EngineEvent {
                at: us(2900 + 12_345),
                kind: EventKind::MotorStopped { bands_discarded: 2 }
            },
        ]
    );
}

#[test]
fn stall_and_disconnect_on_cancel_turn_the_cancel_into_an_abort() {
    for fault in [Fault::StallOnCancel, Fault::DisconnectOnCancel] {
        let mut e = Profile::builtin_fast().engine();
        // slow_cancel listed too: it never applies to a cancel that faults.
        e.set_faults(vec![Fault::SlowCancel { motor_stop_us: 99 }, fault]);
        assert_eq!(
            e.cancel(us(0)),
            CancelOutcome::NotScanning,
            "idle: harmless"
        );
        e.start(us(0), ScanJob::flatbed(100, ScanMode::Gray8, 64, 64))
            .unwrap();
        // Bands 0 and 1 are ready at 2800 and 3600 us; none is taken.
        while e.poll(us(3700)).is_some() {}
        assert_eq!(e.ready_bands().len(), 2);
        assert_eq!(e.cancel(us(3700)), CancelOutcome::Faulted(fault));
        assert_eq!(e.ready_bands().len(), 0, "ready bands are discarded");
        assert_eq!(e.state(), EngineState::Aborted { fault });
        let ev: Vec<_> = std::iter::from_fn(|| e.poll(us(1_000_000))).collect();
        assert_eq!(
            ev,
            [EngineEvent {
                at: us(3700),
                kind: EventKind::Fault(fault)
            }]
        );
        assert_eq!(e.poll_at(), None, "production has stopped");
        assert_eq!(e.lines_produced(), 32);
        assert_eq!(e.cancel(us(4000)), CancelOutcome::NotScanning);
        // A new job is accepted, and the fault holds for its cancel too.
        e.start(us(5000), ScanJob::flatbed(100, ScanMode::Gray8, 64, 64))
            .unwrap();
        while e.poll(us(5000)).is_some() {}
        assert_eq!(e.cancel(us(5000)), CancelOutcome::Faulted(fault));
    }
}

#[test]
fn the_first_decisive_cancel_fault_wins() {
    let mut e = Profile::builtin_fast().engine();
    e.set_faults(vec![Fault::IgnoreCancel, Fault::StallOnCancel]);
    e.start(us(0), ScanJob::flatbed(100, ScanMode::Gray8, 64, 64))
        .unwrap();
    while e.poll(us(1000)).is_some() {}
    assert_eq!(e.cancel(us(1000)), CancelOutcome::Ignored);
    e.set_faults(vec![Fault::DisconnectOnCancel, Fault::IgnoreCancel]);
    while e.poll(us(1000)).is_some() {}
    assert_eq!(
        e.cancel(us(1000)),
        CancelOutcome::Faulted(Fault::DisconnectOnCancel)
    );
}

#[test]
fn aborting_faults_replace_their_band() {
    let aborting = [
        Fault::Stall { page: 0, band: 3 },
        Fault::Disconnect { page: 0, band: 3 },
        Fault::PaperJam { page: 0, band: 3 },
        Fault::CoverOpen { page: 0, band: 3 },
        Fault::CancelButton { page: 0, band: 3 },
    ];
    for fault in aborting {
        let mut e = Profile::builtin_fast().engine();
        e.set_faults(vec![fault]);
        e.start(us(0), ScanJob::flatbed(100, ScanMode::Gray8, 64, 128))
            .unwrap();
        let events = simulate(&mut e, us(0), 0, 1000);
        let b = bands(&events);
        assert_eq!(
            b.iter().map(|(_, b)| b.index).collect::<Vec<_>>(),
            [0, 1, 2],
            "{fault:?}"
        );
        assert_eq!(
            *events.last().unwrap(),
            EngineEvent {
                at: us(2000 + 4 * 800),
                kind: EventKind::Fault(fault)
            }
        );
        assert_eq!(e.state(), EngineState::Aborted { fault });
        assert_eq!(e.poll_at(), None);
        assert_eq!(e.cancel(us(10_000)), CancelOutcome::NotScanning);
        // Each positional fault fires once: the next job runs clean.
        e.start(us(20_000), ScanJob::flatbed(100, ScanMode::Gray8, 64, 128))
            .unwrap();
        let events = simulate(&mut e, us(20_000), 0, 1000);
        assert_eq!(
            events.last().unwrap().kind,
            EventKind::ScanComplete { pages: 1 }
        );
    }
}

#[test]
fn aborting_fault_fires_even_with_a_full_buffer() {
    let mut e = Profile::builtin_fast().engine();
    e.set_faults(vec![Fault::CoverOpen { page: 0, band: 5 }]);
    e.start(us(0), ScanJob::flatbed(100, ScanMode::Gray8, 64, 256))
        .unwrap();
    let events: Vec<_> = std::iter::from_fn(|| e.poll(us(1_000_000))).collect();
    assert_eq!(events.last().unwrap().kind, EventKind::BufferFull);
    e.band_taken(us(1_000_000));
    // Band 4 refills the buffer at +800; band 5's time (+1600) finds it full, yet the cover opens.
    let events: Vec<_> = std::iter::from_fn(|| e.poll(us(2_000_000))).collect();
    assert_eq!(bands(&events).len(), 1);
    assert_eq!(
        *events.last().unwrap(),
        EngineEvent {
            at: us(1_001_600),
            kind: EventKind::Fault(Fault::CoverOpen { page: 0, band: 5 })
        }
    );
    assert_eq!(
        e.ready_bands().len(),
        4,
        "buffered bands stay readable after an abort"
    );
}

#[test]
fn late_band_is_late_and_later_bands_never_overtake_it() {
    let mut e = Profile::builtin_fast().engine();
    let late = Fault::LateBand {
        page: 0,
        band: 2,
        delay_us: 1000,
    };
    e.set_faults(vec![late]);
    e.start(us(0), ScanJob::flatbed(100, ScanMode::Gray8, 64, 96))
        .unwrap();
    let events = simulate(&mut e, us(0), 0, 1000);
    let b = bands(&events);
    let times: Vec<u64> = b.iter().map(|(t, _)| t.total_micros()).collect();
    assert_eq!(times, [2800, 3600, 4400 + 1000, 5400, 6000, 6800]);
    let i = events
        .iter()
        .position(|e| e.kind == EventKind::Fault(late))
        .unwrap();
    assert!(matches!(
        events[i + 1].kind,
        EventKind::BandReady(Band { index: 2, .. })
    ));
    assert_eq!(events[i].at, us(5400));
    assert_eq!(
        events.last().unwrap().kind,
        EventKind::ScanComplete { pages: 1 }
    );
}

#[test]
fn short_band_then_abort() {
    let mut e = Profile::builtin_fast().engine();
    let short = Fault::ShortBand {
        page: 0,
        band: 1,
        bytes: 100,
    };
    e.set_faults(vec![short]);
    e.start(us(0), ScanJob::flatbed(100, ScanMode::Gray8, 64, 96))
        .unwrap();
    let events: Vec<_> = std::iter::from_fn(|| e.poll(us(1_000_000))).collect();
    let n = events.len();
    assert!(matches!(
        events[n - 2].kind,
        EventKind::BandReady(Band {
            index: 1,
            bytes: 100,
            lines: 16,
            ..
        })
    ));
    assert_eq!(
        events[n - 1],
        EngineEvent {
            at: us(3600),
            kind: EventKind::Fault(short)
        }
    );
    assert_eq!(e.state(), EngineState::Aborted { fault: short });
    e.band_taken(us(1_000_000));
    let band = *e.front_band().unwrap();
    let got = read_band(&mut e, &band, 64);
    assert_eq!(got, expected(0, 16, 16, 64)[..100]);
}

#[test]
fn fault_on_a_later_adf_page() {
    let mut e = adf_engine();
    let jam = Fault::PaperJam { page: 1, band: 0 };
    e.set_faults(vec![jam]);
    e.start(us(0), ScanJob::adf(75, ScanMode::Gray8, 10, 100, 0))
        .unwrap();
    let events = simulate(&mut e, us(0), 0, 1000);
    let n = events.len();
    assert_eq!(events[n - 2].kind, EventKind::PageFeed { page: 1 });
    assert_eq!(events[n - 1].kind, EventKind::Fault(jam));
    assert_eq!(
        events[n - 1].at.total_micros(),
        events[n - 2].at.total_micros() + 64 * 600
    );
}

#[test]
fn reset_drops_everything_at_once() {
    let mut e = Profile::builtin_fast().engine();
    e.start(us(0), ScanJob::flatbed(100, ScanMode::Gray8, 64, 256))
        .unwrap();
    while e.poll(us(4000)).is_some() {}
    assert!(e.front_band().is_some());
    assert_eq!(e.cancel(us(4000)), CancelOutcome::Started);
    e.reset(us(4001));
    assert_eq!(e.state(), EngineState::Idle);
    assert_eq!(e.poll_at(), None);
    assert_eq!(e.poll(us(100_000_000)), None);
    assert!(e.front_band().is_none());
    assert!(e.job().is_none());
    assert_eq!(e.bands_produced(), 0);
    e.start(us(5000), ScanJob::flatbed(100, ScanMode::Gray8, 64, 16))
        .unwrap();
    let events = simulate(&mut e, us(5000), 0, 100);
    assert_eq!(bands(&events)[0].0, us(5000 + 2000 + 800));
}

#[test]
fn same_seed_same_events_with_jitter() {
    let p = profile("a4-flatbed-300");
    assert!(p.timing.jitter_us > 0);
    let run = |p: &Profile| {
        let mut e = p.engine();
        e.start(us(0), ScanJob::flatbed(75, ScanMode::Gray8, 620, 877))
            .unwrap();
        simulate(&mut e, us(0), 3000, 100_000)
    };
    let a = run(&p);
    assert_eq!(a, run(&p));
    let b = bands(&a);
    assert_eq!(b.len(), 14);
    let jitters: Vec<u64> = b
        .iter()
        .map(|(t, band)| {
            t.total_micros() - 800_000 - u64::from(band.first_line + band.lines) * 1700
        })
        .collect();
    assert!(jitters.iter().all(|&j| j <= 200), "{jitters:?}");
    assert!(jitters.iter().any(|&j| j > 0), "{jitters:?}");
    let mut other = p.clone();
    other.timing.jitter_seed += 1;
    assert_ne!(a, run(&other));
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("scanemu-engine-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Scans a `w` x `h` area in `mode` from `image` and returns the page bytes.
fn scan_image(image: ImageSource, mode: ScanMode, w: u32, h: u32) -> Vec<u8> {
    let mut e = Profile::builtin_fast().engine();
    e.set_image(image);
    e.start(us(0), ScanJob::flatbed(100, mode, w, h)).unwrap();
    let mut out = Vec::new();
    let mut now = us(0);
    loop {
        while e.poll(now).is_some() {}
        if let Some(band) = e.front_band().copied() {
            out.extend(read_band(&mut e, &band, 5));
            e.band_taken(now);
            continue;
        }
        match e.poll_at() {
            Some(t) => now = t,
            None => return out,
        }
    }
}

#[test]
fn pnm_p6_tiles_and_converts() {
    // 2 x 2: red, green / blue, white.
    let mut ppm = b"P6\n# test\n2 2\n255\n".to_vec();
    ppm.extend([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255]);
    let path = temp_file("t.ppm", &ppm);
    let img = ImageSource::load_pnm(&path).unwrap();
    let c = scan_image(img.clone(), ScanMode::Color24, 3, 3);
    let (r, g, b, w) = ([255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]);
    let want: Vec<u8> = [r, g, r, b, w, b, r, g, r].concat();
    assert_eq!(c, want);
    let gray = scan_image(img.clone(), ScanMode::Gray8, 2, 2);
    assert_eq!(gray, [85, 85, 85, 255]);
    let g16 = scan_image(img.clone(), ScanMode::Gray16, 2, 2);
    assert_eq!(g16, [0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0xff, 0xff]);
    let c48 = scan_image(img, ScanMode::Color48, 1, 1);
    assert_eq!(c48, [0xff, 0xff, 0, 0, 0, 0]);
}

#[test]
fn pnm_p5_lineart_and_16_bit() {
    // 10 x 1 gray ramp: < 128 is black (1).
    let mut pgm = b"P5 10 1 255\n".to_vec();
    pgm.extend([0, 127, 128, 255, 10, 200, 0, 0, 255, 100]);
    let img = ImageSource::load_pnm(&temp_file("t.pgm", &pgm)).unwrap();
    let la = scan_image(img, ScanMode::Lineart, 10, 2);
    assert_eq!(la, [0b1100_1011, 0b0100_0000, 0b1100_1011, 0b0100_0000]);

    let pgm16 = b"P5 1 1 65535\n\x12\x34".to_vec();
    let img = ImageSource::load_pnm(&temp_file("t16.pgm", &pgm16)).unwrap();
    assert_eq!(
        scan_image(img.clone(), ScanMode::Gray16, 2, 1),
        [0x12, 0x34, 0x12, 0x34]
    );
    assert_eq!(
        scan_image(img, ScanMode::Color48, 1, 1),
        [0x12, 0x34, 0x12, 0x34, 0x12, 0x34]
    );

    let err = ImageSource::load_pnm(&temp_file("bad.pgm", b"P5 4 4 255\n\x00"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.pgm"), "{err}");
    let err = ImageSource::load_pnm(&PathBuf::from("/nonexistent/x.pgm"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/x.pgm"), "{err}");
}

/// Resident set size in bytes (Linux), to show streaming does not grow memory.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[test]
fn a4_1200_dpi_colour_streams_in_constant_memory() {
    let p = profile("a4-flatbed-1200");
    let job = ScanJob::flatbed(1200, ScanMode::Color24, 9920, 14032);
    assert_eq!(job.page_bytes(), 417_592_320);
    let mut e = p.engine();
    e.start(us(0), job).unwrap();
    let rss_before = rss_bytes();
    let mut chunk = vec![0u8; 64 * 1024];
    let bpl = job.bytes_per_line();
    let mut total = 0u64;
    let mut bands_seen = 0u64;
    let mut line0 = vec![0u8; 8];
    let mut now = us(0);
    loop {
        while let Some(ev) = e.poll(now) {
            if let EventKind::ScanComplete { pages } = ev.kind {
                assert_eq!(pages, 1);
            }
        }
        if let Some(band) = e.front_band().copied() {
            let mut off = 0;
            while off < band.bytes {
                let n = (band.bytes - off).min(chunk.len() as u64) as usize;
                e.fill(&band, off, &mut chunk[..n]);
                if off == 0 {
                    pattern_line(band.page, band.first_line, &mut line0);
                    assert_eq!(chunk[..8], line0[..], "band {}", band.index);
                }
                off += n as u64;
            }
            // Spot-check the last line's header of each band.
            let mut last = [0u8; 8];
            e.fill(&band, u64::from(band.lines - 1) * bpl, &mut last);
            assert_eq!(
                &last[4..8],
                &(band.first_line + band.lines - 1).to_be_bytes()
            );
            total += band.bytes;
            bands_seen += 1;
            e.band_taken(now);
            continue;
        }
        match e.poll_at() {
            Some(t) => now = t,
            None => break,
        }
    }
    assert_eq!(total, job.page_bytes());
    assert_eq!(bands_seen, u64::from(job.bands_per_page(64)));
    assert_eq!(e.state(), EngineState::Idle);
    if let (Some(before), Some(after)) = (rss_before, rss_bytes()) {
        assert!(
            after.saturating_sub(before) < 64 << 20,
            "rss grew from {before} to {after}"
        );
    }
}
