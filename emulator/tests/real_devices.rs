//! Recordings of real devices (`fixtures/recordings/devices/`): usbmon captures from public
//! projects' test data, read in every container they come in, imported, replayed in-process
//! and compared byte for byte.
//!
//! - Re-importing every `source.*` gives the committed recording, capture and umockdev
//!   description byte for byte (the importer and the exporter are stable).
//! - Wireshark's reader (tshark) finds the same payloads in the source as the recording holds
//!   (tshark is required under `CI=true`; elsewhere that check is skipped with a reason).
//! - The replay personality answers every recorded transfer as recorded, descriptors included,
//!   interrupt reports at their recorded pace, transfers pending at the end of the capture
//!   pending; after the recording's end a request NAKs, or diverges in strict mode.
//!
//! The umockdev round trip of the same recordings is `tests/umockdev.rs`.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use scanemu::capture::import::{self, DeviceChoice};
use scanemu::capture::playback::{play, PlaybackOptions};
use scanemu::capture::read::{read_capture, FileFormat};
use scanemu::capture::recording::{files, Recording, TxKind, TxResult};
use scanemu::capture::replay::{ReplayConfig, ReplayHost};
use scanemu::capture::umockdev::describe_recording;
use scanemu::host::{HostObserver, Observed, TransferError, TransferRecord, UsbHost};
use scanemu::personality::DeviceNote;
use scanemu::sim::Sim;
use scanemu::time::{Duration, Instant};
use scanemu::usb::usbmon::EventType;

const LIMIT: Instant = Instant::from_millis(3_600_000);

fn devices_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/recordings/devices")
}

/// Every device folder, with its source capture.
fn devices() -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(devices_dir()).expect("fixtures/recordings/devices") {
        let dir = entry.unwrap().path();
        let source = ["source.pcapng", "source.pcap"]
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.exists());
        if let Some(source) = source {
            out.push((dir, source));
        }
    }
    out.sort();
    assert!(out.len() >= 4, "device recordings under fixtures: {out:?}");
    out
}

fn device(name: &str) -> (PathBuf, Recording) {
    let dir = devices_dir().join(name);
    let rec = Recording::load(&dir).expect("a committed recording loads");
    (dir, rec)
}

#[test]
fn every_source_reimports_to_the_committed_files() {
    for (dir, source) in devices() {
        let bytes = std::fs::read(&source).unwrap();
        let mut imported = import::import(&bytes, DeviceChoice::Auto)
            .unwrap_or_else(|e| panic!("{}: {e}", source.display()))
            .recording;
        imported.meta.provenance.insert(
            "capture".into(),
            source.file_name().unwrap().to_string_lossy().into(),
        );
        let committed = Recording::load(&dir).unwrap();
        assert_eq!(imported, committed, "{}", dir.display());
        let pcap = std::fs::read(dir.join(files::CAPTURE)).unwrap();
        assert!(
            pcap == committed.to_pcap(),
            "{}: capture.pcap is not what the recording exports",
            dir.display()
        );
        let description = std::fs::read_to_string(dir.join("device.umockdev")).unwrap();
        assert_eq!(
            description,
            describe_recording(&committed),
            "{}",
            dir.display()
        );
    }
}

#[test]
fn imports_keep_the_device_where_the_capture_had_it() {
    for (name, bus, address, vid_pid, count) in [
        ("holtek-keyboard", 1, 11, (0x04d9, 0x1603), 29),
        ("synaptics-fingerprint", 1, 5, (0x06cb, 0x00bd), 161),
        ("elecom-mouse", 1, 2, (0x056e, 0x00ff), 8),
        ("lowspeed-mouse-sigrok", 0, 13, (0x04d9, 0x1133), 7),
    ] {
        let (dir, rec) = device(name);
        assert_eq!(rec.meta.bus, Some(bus), "{name}");
        assert_eq!(rec.meta.device_address, Some(address), "{name}");
        assert_eq!((rec.meta.vendor_id, rec.meta.product_id), vid_pid, "{name}");
        assert_eq!(rec.transactions.len(), count, "{name}");
        // The exported capture names the device by the same bus and address, in every record.
        let pcap = std::fs::read(dir.join(files::CAPTURE)).unwrap();
        let file = read_capture(&pcap).unwrap();
        assert!(!file.records.is_empty());
        for r in &file.records {
            assert_eq!((r.event.bus, r.event.device), (bus, address), "{name}");
            assert_ne!(r.event.event, EventType::Error, "{name}: an E record");
        }
        let description = std::fs::read_to_string(dir.join("device.umockdev")).unwrap();
        assert!(
            description.contains(&format!("A: busnum={bus}\n")),
            "{name}"
        );
        assert!(
            description.contains(&format!("A: devnum={address}\n")),
            "{name}"
        );
    }
}

#[test]
fn the_same_capture_reads_alike_in_every_container() {
    let dir = devices_dir().join("elecom-mouse");
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let (ng, legacy, both) = (
        read("source.pcap"),
        read("derived-linktype189.pcap"),
        read("derived-two-interfaces.pcapng"),
    );
    let ng = read_capture(&ng).unwrap();
    let legacy = read_capture(&legacy).unwrap();
    let both = read_capture(&both).unwrap();
    // The file is named .pcap but is pcapng: the reader goes by the magic.
    assert_eq!(ng.format, FileFormat::PcapNg);
    assert_eq!(ng.interfaces[0].name, "usbmon1");
    assert_eq!(legacy.format, FileFormat::Pcap);
    assert_eq!(legacy.interfaces[0].linktype, 189);
    assert_eq!(
        both.interfaces
            .iter()
            .map(|i| i.linktype)
            .collect::<Vec<_>>(),
        vec![220, 189]
    );
    assert_eq!(ng.records.len(), 16);
    assert_eq!(legacy.records.len(), 16);
    assert_eq!(both.records.len(), 32);
    // pcapng timestamps are scaled by if_tsresol: the first record is from February 2019.
    assert_eq!(ng.records[0].event.at.total_micros(), 1_550_331_845_117_282);
    let fields = |e: &scanemu::usb::usbmon::UsbmonEvent<'_>| {
        (
            e.id,
            e.event,
            e.transfer_type,
            e.endpoint,
            e.device,
            e.bus,
            e.setup,
            e.at,
            e.status,
            e.urb_len,
            e.data.to_vec(),
        )
    };
    for (i, r) in ng.records.iter().enumerate() {
        assert_eq!(
            fields(&r.event),
            fields(&legacy.records[i].event),
            "record {i}"
        );
    }
    for iface in 0..2 {
        let mine: Vec<_> = both
            .records
            .iter()
            .filter(|r| r.interface == iface)
            .map(|r| fields(&r.event))
            .collect();
        let theirs: Vec<_> = ng.records.iter().map(|r| fields(&r.event)).collect();
        assert_eq!(mine, theirs, "interface {iface}");
    }
    // Each interface is its own URB id space: the two copies import as two of everything.
    let imported = Recording::from_pcap(
        &std::fs::read(dir.join("derived-two-interfaces.pcapng")).unwrap(),
        None,
    )
    .unwrap();
    assert_eq!(imported.transactions.len(), 16);
}

#[test]
fn a_big_endian_capture_of_a_synthesized_bus_reads_right() {
    let (_, rec) = device("lowspeed-mouse-sigrok");
    // Control records of this file carry endpoint 0x00 both ways: the SETUP packet decides.
    let first = &rec.transactions[0];
    assert_eq!(first.kind, TxKind::Control);
    assert_eq!(first.ep, 0x80);
    assert_eq!(first.requested, 18);
    assert_eq!(first.data, rec.meta.device_descriptor);
    assert_eq!(rec.transactions.last().unwrap().result, TxResult::Pending);
}

/// Wireshark's reader: every packet of `bus`:`address` as (urb type, endpoint, payload).
fn tshark_payloads(source: &Path, bus: u16, address: u8) -> Option<Vec<(char, u8, Vec<u8>)>> {
    let have = std::process::Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok();
    if !have {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("tshark is missing (apt-get install tshark); CI must run this test");
        }
        eprintln!("skipped: tshark is not installed (apt-get install tshark)");
        return None;
    }
    let out = std::process::Command::new("tshark")
        .arg("-r")
        .arg(source)
        .args([
            "-Y",
            &format!("usb.bus_id == {bus} && usb.device_address == {address}"),
        ])
        .args(["-T", "json", "-x"])
        .output()
        .expect("tshark runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let packets: serde_json::Value = serde_json::from_slice(&out.stdout).expect("tshark json");
    let mut found = Vec::new();
    for p in packets.as_array().unwrap() {
        let layers = &p["_source"]["layers"];
        let usb = &layers["usb"];
        let text = |k: &str| usb[k].as_str().unwrap_or_default().to_string();
        let number = |k: &str| {
            let t = text(k);
            match t.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16).unwrap(),
                None => t.parse().unwrap(),
            }
        };
        let raw = layers["frame_raw"][0].as_str().unwrap();
        let raw: Vec<u8> = (0..raw.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&raw[i..i + 2], 16).unwrap())
            .collect();
        let len = number("usb.data_len") as usize;
        let kind = text("usb.urb_type").chars().nth(1).unwrap();
        found.push((
            kind,
            number("usb.endpoint_address") as u8,
            raw[64..64 + len].to_vec(),
        ));
    }
    Some(found)
}

#[test]
fn the_recordings_hold_the_payloads_wireshark_reads() {
    for (name, bus, address) in [("holtek-keyboard", 1, 11), ("synaptics-fingerprint", 1, 5)] {
        let (dir, rec) = device(name);
        let Some(packets) = tshark_payloads(&dir.join("source.pcapng"), bus, address) else {
            return;
        };
        // IN data arrives with completions, OUT data leaves with submissions.
        let tshark_in: Vec<&Vec<u8>> = packets
            .iter()
            .filter(|(k, ep, d)| *k == 'C' && ep & 0x80 != 0 && !d.is_empty())
            .map(|(_, _, d)| d)
            .collect();
        let tshark_out: Vec<&Vec<u8>> = packets
            .iter()
            .filter(|(k, ep, d)| *k == 'S' && ep & 0x80 == 0 && !d.is_empty())
            .map(|(_, _, d)| d)
            .collect();
        let recorded_in: Vec<Vec<u8>> = rec
            .transactions
            .iter()
            .filter(|t| t.is_in())
            .map(|t| t.bytes())
            .filter(|d| !d.is_empty())
            .collect();
        let mut outs: Vec<_> = rec.transactions.iter().filter(|t| !t.is_in()).collect();
        outs.sort_by_key(|t| (t.submitted_us, t.seq));
        let recorded_out: Vec<Vec<u8>> = outs
            .iter()
            .map(|t| t.bytes())
            .filter(|d| !d.is_empty())
            .collect();
        assert!(
            !recorded_in.is_empty() && !recorded_out.is_empty(),
            "{name}"
        );
        assert_eq!(
            tshark_in.into_iter().cloned().collect::<Vec<_>>(),
            recorded_in,
            "{name}: IN payloads"
        );
        assert_eq!(
            tshark_out.into_iter().cloned().collect::<Vec<_>>(),
            recorded_out,
            "{name}: OUT payloads"
        );
    }
}

/// One completed transfer: kind, endpoint, submitted, completed, data.
type ServedTransfer = (TxKind, u8, Instant, Instant, Vec<u8>);

/// Every completed transfer the replay served.
#[derive(Default)]
struct Served(RefCell<Vec<ServedTransfer>>);

impl HostObserver for Served {
    fn transfer(&self, r: &TransferRecord<'_>) {
        self.0
            .borrow_mut()
            .push((r.kind.into(), r.ep, r.submitted, r.at, r.data.to_vec()));
    }
    fn device(&self, _: &DeviceNote) {}
}

/// Notes the replay made.
#[derive(Default)]
struct Notes(RefCell<Vec<(&'static str, String)>>);

impl HostObserver for Notes {
    fn transfer(&self, _: &TransferRecord<'_>) {}
    fn device(&self, n: &DeviceNote) {
        self.0
            .borrow_mut()
            .push((n.kind.name(), n.detail.to_string()));
    }
}

fn replay_host(rec: &Recording, config: ReplayConfig) -> (Sim, ReplayHost, Rc<Notes>) {
    let sim = Sim::new();
    let host = ReplayHost::with_config(rec.clone(), Rc::new(sim.clone()), config);
    let notes = Rc::new(Notes::default());
    host.set_note_observer(notes.clone());
    (sim, host, notes)
}

#[test]
fn real_devices_replay_in_process_byte_for_byte() {
    for (dir, _) in devices() {
        let rec = Recording::load(&dir).unwrap();
        for options in [PlaybackOptions::default(), PlaybackOptions::sequential()] {
            let (sim, host, notes) = replay_host(&rec, ReplayConfig::strict());
            let h = host.clone();
            let r = rec.clone();
            let done = sim
                .block_on(async move { play(&h, &r, options).await }, LIMIT)
                .expect("the replay never hangs")
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            assert_eq!(done.equal, rec.transactions.len(), "{}", dir.display());
            assert!(done.skipped.is_empty(), "{:?}", done.skipped);
            let bytes_in: usize = rec
                .transactions
                .iter()
                .filter(|t| t.is_in())
                .map(|t| t.data.len() / 2)
                .sum();
            assert_eq!(done.bytes_in, bytes_in);
            assert_eq!(host.divergence(), None, "{}", dir.display());
            assert!(host.unserved().is_empty(), "{}", dir.display());
            assert!(notes.0.borrow().is_empty(), "{:?}", notes.0.borrow());
        }
    }
}

#[test]
fn the_keyboard_replays_its_descriptors_and_reports() {
    let (_, rec) = device("holtek-keyboard");
    let (sim, host, _) = replay_host(&rec, ReplayConfig::default());
    let served = Rc::new(Served::default());
    let observed = Observed::new(host.clone(), served.clone());
    let r = rec.clone();
    sim.block_on(
        async move { play(&observed, &r, PlaybackOptions::default()).await },
        LIMIT,
    )
    .unwrap()
    .unwrap();
    let served = served.0.borrow();
    // The descriptors a libusb program parses, byte for byte from the capture.
    let descriptor = |value: u16, index: u16| {
        rec.transactions
            .iter()
            .find(|t| {
                t.setup
                    .is_some_and(|s| s.request == 6 && s.value == value && s.index == index)
            })
            .map(|t| t.bytes())
            .unwrap()
    };
    assert_eq!(
        descriptor(0x0100, 0),
        hex("1201100100000008d9040316100301020001")
    );
    assert_eq!(rec.meta.config_descriptor.len(), 2 * 0x3b);
    // HID report descriptors of both interfaces, 62 and 101 bytes.
    assert_eq!(descriptor(0x2200, 0).len(), 62);
    assert_eq!(descriptor(0x2200, 1).len(), 101);
    assert_eq!(&descriptor(0x2200, 0)[..4], &[0x05, 0x01, 0x09, 0x06]);
    // Every boot report the keyboard sent, in order, at its recorded pace: the first report
    // sets the replay's clock against the recording's, then each comes when it came.
    let reports: Vec<_> = rec
        .transactions
        .iter()
        .filter(|t| t.kind == TxKind::Interrupt && t.result == TxResult::Ok)
        .collect();
    let got: Vec<_> = served
        .iter()
        .filter(|(k, _, _, _, d)| *k == TxKind::Interrupt && !d.is_empty())
        .collect();
    assert_eq!(reports.len(), 14);
    assert_eq!(got.len(), reports.len());
    let offset = got[0].3.total_micros() as i64 - reports[0].at_us as i64;
    for (t, (_, ep, _, at, data)) in reports.iter().zip(&got) {
        assert_eq!(*ep, 0x81);
        assert_eq!(data, &t.bytes());
        assert_eq!(
            at.total_micros() as i64 - offset,
            t.at_us as i64,
            "report #{}",
            t.seq
        );
    }
    // Key 0x0c ('i') down, then up.
    assert_eq!(got[0].4, hex("00000c0000000000"));
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn transfers_pending_at_the_capture_end_stay_pending() {
    let (dir, rec) = device("holtek-keyboard");
    let pending: Vec<_> = rec
        .transactions
        .iter()
        .filter(|t| t.result == TxResult::Pending)
        .collect();
    assert_eq!(
        pending
            .iter()
            .map(|t| (t.kind, t.ep, t.requested))
            .collect::<Vec<_>>(),
        vec![(TxKind::Interrupt, 0x82, 4), (TxKind::Interrupt, 0x81, 8)]
    );
    // The exported capture keeps their submissions, with no completion.
    let pcap = std::fs::read(dir.join(files::CAPTURE)).unwrap();
    let file = read_capture(&pcap).unwrap();
    let submitted_only: Vec<_> = file
        .records
        .iter()
        .filter(|s| {
            s.event.event == EventType::Submit
                && !file
                    .records
                    .iter()
                    .any(|c| c.event.event == EventType::Complete && c.event.id == s.event.id)
        })
        .map(|s| s.event.endpoint)
        .collect();
    assert_eq!(submitted_only, vec![0x82, 0x81]);
    // A replay keeps a matching request waiting until the host gives up, as the device did.
    let (sim, host, _) = replay_host(&rec, ReplayConfig::default());
    let h = host.clone();
    let (result, waited) = sim
        .block_on(
            async move {
                let start = h.now();
                let mut buf = [0u8; 4];
                let r = h
                    .interrupt_in(0x82, &mut buf, Duration::from_millis(1500))
                    .await;
                (r, h.now().saturating_duration_since(start))
            },
            LIMIT,
        )
        .unwrap();
    assert_eq!(result, Err(TransferError::Timeout { actual: 0 }));
    assert_eq!(waited, Duration::from_millis(1500));
    assert_eq!(host.divergence(), None);
    // The driver may never ask for them again: by default that is no departure.
    assert!(host.missing().iter().all(|t| t.result != TxResult::Pending));
    let (_, strict, _) = replay_host(&rec, ReplayConfig::strict());
    assert!(strict
        .missing()
        .iter()
        .any(|t| t.result == TxResult::Pending));
}

#[test]
fn after_the_recording_ends_a_request_naks_or_diverges_in_strict_mode() {
    let (_, rec) = device("elecom-mouse");
    for strict in [false, true] {
        let config = if strict {
            ReplayConfig::strict()
        } else {
            ReplayConfig::default()
        };
        let (sim, host, notes) = replay_host(&rec, config);
        let h = host.clone();
        let r = rec.clone();
        let after = sim
            .block_on(
                async move {
                    play(&h, &r, PlaybackOptions::default()).await.unwrap();
                    let mut buf = [0u8; 8];
                    let start = h.now();
                    let first = h
                        .interrupt_in(0x81, &mut buf, Duration::from_millis(500))
                        .await;
                    let waited = h.now().saturating_duration_since(start);
                    let second = h
                        .interrupt_in(0x81, &mut buf, Duration::from_millis(500))
                        .await;
                    (first, waited, second)
                },
                LIMIT,
            )
            .unwrap();
        let notes = notes.0.borrow();
        if strict {
            assert!(matches!(after.0, Err(TransferError::Io(_))), "{after:?}");
            assert_eq!(after.2, Err(TransferError::NoDevice));
            let d = host.divergence().expect("a divergence");
            assert!(d.to_string().contains("after the recording's end"), "{d}");
            assert!(d.got.starts_with("interrupt ep=0x81 length=8"), "{d}");
            assert_eq!(notes[0].0, "replay-divergence");
        } else {
            // A NAK: the read waits out its timeout, and so does the next one.
            assert_eq!(after.0, Err(TransferError::Timeout { actual: 0 }));
            assert_eq!(after.1, Duration::from_millis(500));
            assert_eq!(after.2, Err(TransferError::Timeout { actual: 0 }));
            assert_eq!(host.divergence(), None);
            assert_eq!(notes.len(), 1, "one note per endpoint: {notes:?}");
            assert_eq!(notes[0].0, "replay-end");
            assert!(notes[0].1.contains("endpoint 0x81"), "{}", notes[0].1);
        }
    }
}

/// Serves `rec` over USB/IP on loopback (beside an emulated scanner, the recording second),
/// with a sink for the replay's reports.
fn serve_over_usbip(
    rec: &Recording,
) -> (
    scanemu::usbip::UsbIpServer,
    std::sync::Arc<std::sync::Mutex<Vec<scanemu::capture::replay::ReplayReport>>>,
) {
    use scanemu::capture::serve::ServedRecording;
    use scanemu::profile::Profile;
    use scanemu::usbip::{DeviceSpec, ServerConfig, UsbIpServer};
    use std::sync::{Arc, Mutex};
    let reports = Arc::new(Mutex::new(Vec::new()));
    let mut served = ServedRecording::new(rec.clone());
    let sink = reports.clone();
    served.reports = Some(Arc::new(
        move |r: &scanemu::capture::replay::ReplayReport| sink.lock().unwrap().push(r.clone()),
    ));
    let config = ServerConfig::with_devices(vec![
        DeviceSpec::new(Profile::builtin_fast(), "1-1"),
        DeviceSpec::with_backend(Arc::new(served), "1-2"),
    ]);
    let server = UsbIpServer::bind("127.0.0.1:0".parse().unwrap(), config).expect("binds");
    (server, reports)
}

#[test]
fn real_devices_replay_over_usbip_byte_for_byte() {
    use scanemu::host::usbip::UsbIpHost;
    for (dir, _) in devices() {
        let rec = Recording::load(&dir).unwrap();
        if rec.meta.device_info().config_descriptor.is_empty() {
            // No client can configure it; the server refuses to export it (tested below).
            continue;
        }
        let (server, reports) = serve_over_usbip(&rec);
        let exports = server.exports();
        assert_eq!(exports.len(), 2, "the live device and the recording");
        let info = rec.meta.device_info();
        let d = &exports[1].record;
        assert_eq!(
            (d.id_vendor, d.id_product),
            (
                u16::from_le_bytes([info.device_descriptor[8], info.device_descriptor[9]]),
                u16::from_le_bytes([info.device_descriptor[10], info.device_descriptor[11]])
            ),
            "{}: the device list names the recorded device",
            dir.display()
        );
        let sim = Sim::realtime();
        let host = UsbIpHost::connect(server.local_addr(), "1-2", Rc::new(sim.clone()))
            .unwrap_or_else(|e| panic!("{}: import: {e}", dir.display()));
        let seen = host.device_info();
        assert_eq!(
            seen.device_descriptor,
            info.device_descriptor,
            "{}",
            dir.display()
        );
        assert_eq!(
            seen.config_descriptor,
            info.config_descriptor,
            "{}",
            dir.display()
        );
        let r = rec.clone();
        let h = host.clone();
        let done = sim
            .block_on(
                async move { play(&h, &r, PlaybackOptions::default()).await },
                Instant::from_millis(120_000),
            )
            .expect("the replay over USB/IP never hangs")
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert_eq!(done.equal, rec.transactions.len(), "{}", dir.display());
        assert!(done.skipped.is_empty(), "{:?}", done.skipped);
        let bytes_in: usize = rec
            .transactions
            .iter()
            .filter(|t| t.is_in())
            .map(|t| t.data.len() / 2)
            .sum();
        assert_eq!(done.bytes_in, bytes_in, "{}", dir.display());
        drop(host);
        server.shutdown();
        let reports = reports.lock().unwrap();
        assert_eq!(
            reports.len(),
            1,
            "{}: one import, one report",
            dir.display()
        );
        assert_eq!(reports[0].divergence, None, "{}", dir.display());
        assert!(
            reports[0].missing.is_empty(),
            "{}: {:?}",
            dir.display(),
            reports[0].missing
        );
    }
}

#[test]
fn a_request_after_the_end_naks_over_usbip_and_the_live_device_still_answers() {
    use scanemu::host::usbip::UsbIpHost;
    let (_, rec) = device("holtek-keyboard");
    let (server, reports) = serve_over_usbip(&rec);
    let sim = Sim::realtime();
    let host = UsbIpHost::connect(server.local_addr(), "1-2", Rc::new(sim.clone())).unwrap();
    let live = UsbIpHost::connect(server.local_addr(), "1-1", Rc::new(sim.clone())).unwrap();
    let r = rec.clone();
    let h = host.clone();
    let outcome = sim
        .block_on(
            async move {
                play(&h, &r, PlaybackOptions::sequential()).await.unwrap();
                // The recording is over on 0x81 (its last read was still pending when the
                // capture stopped): the next read NAKs until its timeout.
                let mut buf = [0u8; 8];
                let after = h
                    .interrupt_in(0x81, &mut buf, Duration::from_millis(300))
                    .await;
                let live_info = live.device_info();
                (after, live_info)
            },
            Instant::from_millis(120_000),
        )
        .expect("never hangs");
    assert!(
        matches!(outcome.0, Err(TransferError::Timeout { actual: 0 })),
        "{:?}",
        outcome.0
    );
    assert!(
        !outcome.1.device_descriptor.is_empty(),
        "the live scanner is served beside the recording"
    );
    drop(host);
    server.shutdown();
    let reports = reports.lock().unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].divergence, None);
}

#[test]
fn a_recording_without_a_configuration_is_not_exported() {
    use scanemu::capture::serve::ServedRecording;
    use scanemu::usbip::{DeviceSpec, ServerConfig, UsbIpServer};
    let (_, rec) = device("elecom-mouse");
    assert!(rec.meta.device_info().config_descriptor.is_empty());
    let config = ServerConfig::with_devices(vec![DeviceSpec::with_backend(
        std::sync::Arc::new(ServedRecording::new(rec)),
        "1-1",
    )]);
    let e = UsbIpServer::bind("127.0.0.1:0".parse().unwrap(), config)
        .err()
        .expect("refused");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(e.to_string(), "1-1: no configuration descriptor to export");
}
