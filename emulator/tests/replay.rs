//! The replay personality at the wire level: a scripted session with the emulated scanner is
//! captured as usbmon pcap, imported with `Recording::from_pcap`, and served by `ReplayHost`;
//! the same script then gets the same answers at the same virtual times, and a script that
//! departs gets the first divergence instead of a hang.

mod common;

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

use common::*;
use scanemu::capture::pcap::{CaptureConfig, PcapObserver, PcapWriter};
use scanemu::capture::recording::{Recording, RecordingMeta, RecordingObserver};
use scanemu::capture::replay::ReplayHost;
use scanemu::engine::{ScanJob, ScanMode};
use scanemu::host::{HostObserver, Observed, Setup, TransferError, TransferRecord, UsbHost};
use scanemu::personality::native::protocol::*;
use scanemu::personality::DeviceNote;
use scanemu::sim::Sim;
use scanemu::time::Instant;

/// Every answer a script got, with the time it got it.
type Log = Rc<RefCell<Vec<String>>>;

/// A driver's session: status, parameters, start, one event, every band, status again.
/// `width` lets a test depart from the recorded parameters.
async fn script(h: Rc<dyn UsbHost>, width: u32, log: Log) {
    let say = |what: String| log.borrow_mut().push(format!("{} {what}", h.now()));
    let st = h
        .control_in(Setup::vendor_in(REQ_GET_DEVICE_STATUS, 0, 0, 8), T)
        .await;
    say(format!("status {st:?}"));
    let job = ScanJob::flatbed(100, ScanMode::Gray8, width, 64);
    let params = ScanParams { job }.encode();
    let r = h
        .control_out(Setup::vendor_out(REQ_SET_PARAMS, 0, 0, 0), &params, T)
        .await;
    say(format!("set-params {r:?}"));
    if r.is_err() {
        return;
    }
    let report = h
        .control_in(
            Setup::vendor_in(REQ_GET_PARAMS, 0, 0, PARAMS_REPORT_LEN as u16),
            T,
        )
        .await
        .expect("GET_PARAMS");
    let report = ParamsReport::decode(&report).unwrap();
    let r = h
        .control_out(Setup::vendor_out(REQ_START_SCAN, 0, 0, 0), &[], T)
        .await;
    say(format!("start {r:?}"));
    let mut ev = [0u8; 8];
    let r = h.interrupt_in(EP_EVENTS, &mut ev, T).await;
    say(format!("event {r:?} {ev:?}"));
    let total = job.page_bytes();
    let mut got = 0u64;
    while got < total {
        let mut buf = vec![0u8; report.band_bytes as usize];
        match h.bulk_in(EP_DATA_IN, &mut buf, T).await {
            Ok(n) => {
                say(format!("band {n} crc {:08x}", crc(&buf[..n])));
                got += n as u64;
            }
            Err(e) => {
                say(format!("band error {e:?}"));
                return;
            }
        }
    }
    let st = h
        .control_in(Setup::vendor_in(REQ_GET_DEVICE_STATUS, 0, 0, 8), T)
        .await;
    say(format!("status {st:?}"));
}

/// A small checksum, enough to tell bands apart.
fn crc(b: &[u8]) -> u32 {
    b.iter().fold(0x811c_9dc5u32, |h, x| {
        (h ^ u32::from(*x)).wrapping_mul(0x0100_0193)
    })
}

/// Notes the replay made, by name and detail.
#[derive(Default)]
struct Notes(RefCell<Vec<(&'static str, String)>>);

impl HostObserver for Notes {
    fn transfer(&self, _: &TransferRecord<'_>) {}
    fn device(&self, note: &DeviceNote) {
        self.0
            .borrow_mut()
            .push((note.kind.name(), note.detail.to_string()));
    }
}

/// Runs the script against the emulated scanner; returns its log, the pcap, and the
/// recording made by `RecordingObserver`.
fn record_emulated() -> (Vec<String>, Vec<u8>, Recording) {
    let profile = load("fast-flatbed.json");
    let (sim, host) = setup(&profile, vec![]);
    let capture = Rc::new(PcapObserver::new(
        PcapWriter::new(Vec::new()).unwrap(),
        &host.device_info(),
        CaptureConfig::with_speed(profile.usb.speed),
    ));
    let recorder = Rc::new(
        RecordingObserver::new(RecordingMeta::new(
            "record",
            &host.device_info(),
            profile.usb.speed,
            profile.timing.motor_stop_us,
        ))
        .wrapping(capture.clone()),
    );
    host.set_note_observer(recorder.clone());
    let ticker = host.clone();
    sim.spawn(async move { ticker.run_device().await });
    let log: Log = Rc::default();
    let observed = Rc::new(Observed::new(host.clone(), recorder.clone()));
    sim.block_on(script(observed, 128, log.clone()), LIMIT)
        .expect("runs");
    drop(host);
    let pcap = capture.finish().expect("capture written");
    let out = log.borrow().clone();
    (out, pcap, recorder.recording())
}

fn replay(recording: Recording, width: u32) -> (Vec<String>, ReplayHost, Rc<Notes>) {
    let sim = Sim::new();
    let host = ReplayHost::new(recording, Rc::new(sim.clone()));
    let notes = Rc::new(Notes::default());
    host.set_note_observer(notes.clone());
    let log: Log = Rc::default();
    sim.block_on(script(Rc::new(host.clone()), width, log.clone()), LIMIT)
        .expect("the replay never hangs");
    let out = log.borrow().clone();
    (out, host, notes)
}

#[test]
fn an_imported_emulator_capture_replays_the_same_session() {
    let (live, pcap, recorded) = record_emulated();
    assert!(
        live.iter().filter(|l| l.contains("band")).count() >= 2,
        "{live:?}"
    );
    let mut imported = Recording::from_pcap(&pcap, None).expect("imports");
    assert_eq!(imported.transactions.len(), recorded.transactions.len());
    imported.meta.device_descriptor = recorded.meta.device_descriptor.clone();
    let (replayed, host, notes) = replay(imported, 128);
    assert_eq!(live, replayed);
    assert_eq!(host.divergence(), None);
    assert!(host.unserved().is_empty());
    assert!(notes.0.borrow().is_empty());
}

#[test]
fn a_session_that_departs_gets_the_first_divergence_not_a_hang() {
    let (_, _, recorded) = record_emulated();
    let (replayed, host, notes) = replay(recorded, 64);
    let d = host.divergence().expect("diverges");
    assert_eq!(d.seq, Some(1));
    assert!(d.expected.starts_with("control-out SET_PARAMS"), "{d}");
    assert!(d.got.contains("data differs from byte"), "{d}");
    assert!(
        replayed.last().unwrap().contains("set-params Err(Io("),
        "{replayed:?}"
    );
    assert_eq!(notes.0.borrow()[0].0, "replay-divergence");
    // After the divergence the device is gone: no request waits.
    let sim = Sim::new();
    let h = host.clone();
    let r = sim
        .block_on(
            async move {
                h.control_in(Setup::vendor_in(REQ_GET_DEVICE_STATUS, 0, 0, 8), T)
                    .await
            },
            Instant::from_millis(10),
        )
        .unwrap();
    assert_eq!(r, Err(TransferError::NoDevice));
}

/// A transfer whose future the host drops before it finished (the process that made it ended)
/// hands its recorded transaction back: the device never finished it, so the next read gets
/// it, as on a real bus, and the transfer no longer counts as pending.
#[test]
fn a_dropped_transfer_hands_its_transaction_back() {
    let (live, _, recorded) = record_emulated();
    let sim = Sim::new();
    let host = ReplayHost::new(recorded, Rc::new(sim.clone()));
    let h = host.clone();
    sim.block_on(
        async move {
            let setup = Setup::vendor_in(REQ_GET_DEVICE_STATUS, 0, 0, 8);
            let mut read = std::pin::pin!(h.control_in(setup, T));
            // One poll: the request takes the first recorded transaction and waits for its
            // recorded duration.
            std::future::poll_fn(|cx| {
                assert!(read.as_mut().poll(cx).is_pending());
                std::task::Poll::Ready(())
            })
            .await;
            assert_eq!(h.pending_transfers(), 1);
        },
        LIMIT,
    )
    .expect("runs");
    assert_eq!(host.pending_transfers(), 0);
    let log: Log = Rc::default();
    sim.block_on(script(Rc::new(host.clone()), 128, log.clone()), LIMIT)
        .expect("the replay never hangs");
    assert_eq!(*log.borrow(), live);
    assert_eq!(host.divergence(), None);
    assert!(host.unserved().is_empty());
}

#[test]
fn a_recording_round_trips_through_its_files() {
    let (_, _, recorded) = record_emulated();
    let dir = std::env::temp_dir().join(format!("scanemu-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    recorded.save(&dir).unwrap();
    assert_eq!(Recording::load(&dir).unwrap(), recorded);
    // A damaged line is named by file and line.
    let path = dir.join("transactions.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("\"kind\"", "\"kynd\"", 1)).unwrap();
    let e = Recording::load(&dir).unwrap_err().to_string();
    assert!(e.contains("transactions.jsonl: line 1:"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
