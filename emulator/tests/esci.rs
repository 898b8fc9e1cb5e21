//! The ESC/I personality on the wire, through the in-process host in virtual time: the byte
//! sequences Debian's epson2 backend sends (emulator/PROTOCOL-ESCI.md), exact-length replies,
//! blocks at the engine's pace, and every way a scan can end.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::{load, setup, LIMIT, T};
use scanemu::engine::{pattern_line, Fault};
use scanemu::host::inproc::InProcessHost;
use scanemu::host::{HostObserver, TransferError, TransferRecord, UsbHost};
use scanemu::personality::esci::wire::{ACK, CAN, ESC, FS, NAK, STX};
use scanemu::personality::native::protocol::{EP_DATA_IN, EP_DATA_OUT};
use scanemu::personality::DeviceNote;
use scanemu::profile::Profile;
use scanemu::sim::Sim;

#[derive(Default)]
struct Notes(RefCell<Vec<DeviceNote>>);

impl HostObserver for Notes {
    fn transfer(&self, _record: &TransferRecord<'_>) {}
    fn device(&self, note: &DeviceNote) {
        self.0.borrow_mut().push(note.clone());
    }
}

impl Notes {
    fn names(&self) -> Vec<&'static str> {
        self.0.borrow().iter().map(|n| n.kind.name()).collect()
    }
}

fn esci(name: &str, faults: Vec<Fault>) -> (Sim, InProcessHost, Rc<Notes>) {
    let profile = load(name);
    let (sim, host) = setup(&profile, faults);
    let notes = Rc::new(Notes::default());
    host.set_note_observer(notes.clone());
    (sim, host, notes)
}

async fn send(h: &InProcessHost, bytes: &[u8]) {
    let n = h.bulk_out(EP_DATA_OUT, bytes, T).await.expect("bulk OUT");
    assert_eq!(n, bytes.len());
}

/// Reads one IN transfer with room for `room` bytes (more than expected, to prove the device
/// ends each reply where it should).
async fn read(h: &InProcessHost, room: usize) -> Vec<u8> {
    let mut buf = vec![0u8; room];
    let n = h.bulk_in(EP_DATA_IN, &mut buf, T).await.expect("bulk IN");
    buf.truncate(n);
    buf
}

async fn exact(h: &InProcessHost, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let n = h.bulk_in(EP_DATA_IN, &mut buf, T).await.expect("bulk IN");
    assert_eq!(n, len, "short read");
    buf
}

/// A simple command: ESC x then ACK.
async fn simple(h: &InProcessHost, cmd: &[u8]) -> u8 {
    send(h, cmd).await;
    read(h, 64).await[0]
}

/// A parameterised command: ESC x → ACK, parameter → ACK (or NAK).
async fn param(h: &InProcessHost, cmd: &[u8], data: &[u8]) -> u8 {
    assert_eq!(simple(h, cmd).await, ACK, "{cmd:02x?}");
    send(h, data).await;
    read(h, 64).await[0]
}

/// ESC I, ESC F, ESC f, FS I, FS F as epson2 discovers a device; returns the ESC F status.
async fn discover(h: &InProcessHost, ext: bool) -> u8 {
    send(h, &[ESC, b'I']).await;
    let header = read(h, 64).await;
    assert_eq!(header.len(), 4, "ESC I header alone");
    assert_eq!(header[0], STX);
    let len = u16::from_le_bytes([header[2], header[3]]) as usize;
    let identity = read(h, 512).await;
    assert_eq!(identity.len(), len);
    assert_eq!(&identity[..2], if ext { b"B7" } else { b"B6" });
    assert_eq!(identity[2], b'R');
    assert_eq!(identity[len - 5], b'A');
    send(h, &[ESC, b'F']).await;
    let status = read(h, 64).await;
    assert_eq!(status.len(), 4);
    assert_eq!(&status[2..], &[0, 0], "ESC F count must be 0");
    send(h, &[ESC, b'f']).await;
    assert_eq!(read(h, 64).await, vec![STX, 0, 42, 0]);
    let ext_status = read(h, 512).await;
    assert_eq!(ext_status.len(), 42);
    assert_eq!(&ext_status[26..38], b"SCANLAB-ESCI");
    if ext {
        send(h, &[FS, b'I']).await;
        let fsi = read(h, 512).await;
        assert_eq!(fsi.len(), 80);
        assert_eq!(fsi[67], 8, "max output depth 8: no depth probes");
        send(h, &[FS, b'F']).await;
        assert_eq!(read(h, 64).await, vec![0; 16]);
    }
    status[1]
}

fn fs_w(dpi: u32, width: u32, height: u32, color: u8, depth: u8, lcount: u8) -> Vec<u8> {
    let mut w = vec![0u8; 64];
    w[0..4].copy_from_slice(&dpi.to_le_bytes());
    w[4..8].copy_from_slice(&dpi.to_le_bytes());
    w[16..20].copy_from_slice(&width.to_le_bytes());
    w[20..24].copy_from_slice(&height.to_le_bytes());
    w[24] = color;
    w[25] = depth;
    w[28] = lcount;
    w[29] = 0x02;
    w[31] = 0x01;
    w[33] = 0x80;
    w
}

/// The engine's pattern for lines `first..first + lines` at `bpl` bytes per line.
fn pattern(first: u32, lines: u32, bpl: usize) -> Vec<u8> {
    let mut out = vec![0u8; bpl * lines as usize];
    for (i, line) in out.chunks_mut(bpl).enumerate() {
        pattern_line(0, first + i as u32, line);
    }
    out
}

/// FS W, ESC m, FS F, FS G as epson2's sane_start sends them; returns (block_len, full, last).
async fn ext_start(h: &InProcessHost, w: &[u8]) -> (u32, u32, u32) {
    assert_eq!(param(h, &[FS, b'W'], w).await, ACK, "FS W");
    let cct = [0x20, 0, 0, 0, 0x20, 0, 0, 0, 0x20];
    assert_eq!(param(h, &[ESC, b'm'], &cct).await, ACK, "ESC m");
    send(h, &[FS, b'F']).await;
    assert_eq!(read(h, 64).await.len(), 16);
    send(h, &[FS, b'G']).await;
    let g = read(h, 64).await;
    assert_eq!(g.len(), 14);
    assert_eq!(&g[..2], &[STX, 0]);
    let le = |i: usize| u32::from_le_bytes([g[i], g[i + 1], g[i + 2], g[i + 3]]);
    (le(2), le(6), le(10))
}

#[test]
fn extended_gray_scan_is_byte_exact_and_ends_without_ack() {
    let (sim, host, notes) = esci("escI-b7-flatbed.json", vec![]);
    let h = host.clone();
    sim.block_on(
        async move {
            assert_eq!(simple(&h, &[ESC, b'@']).await, ACK);
            assert_eq!(discover(&h, true).await, 0x02, "extended commands bit");
            assert_eq!(simple(&h, &[ESC, b'@']).await, ACK);
            // 25.4 mm at 75 dpi as epson2 computes it: 72 px (a multiple of 8) x 74 lines.
            let (block, full, last) = ext_start(&h, &fs_w(75, 72, 74, 0x00, 8, 255)).await;
            assert_eq!((block, full, last), (16 * 72, 4, 10 * 72));
            let mut image = Vec::new();
            for k in 0..5 {
                let len = if k < 4 { block } else { last } as usize;
                let data = exact(&h, len + 1).await;
                assert_eq!(data[len], 0, "status byte of block {k}");
                image.extend_from_slice(&data[..len]);
                if k < 4 {
                    send(&h, &[ACK]).await;
                }
            }
            assert_eq!(image, pattern(0, 74, 72));
            // The device is idle and answers the next command, not a stale block.
            send(&h, &[ESC, b'F']).await;
            assert_eq!(read(&h, 512).await, vec![STX, 0x02, 0, 0]);
        },
        LIMIT,
    )
    .unwrap();
    let names = notes.names();
    assert_eq!(names.iter().filter(|n| **n == "block-sent").count(), 5);
    assert_eq!(names.iter().filter(|n| **n == "ack").count(), 4);
    assert!(names.contains(&"scan-complete"), "{names:?}");
    assert!(!names.contains(&"scan-abandoned"), "{names:?}");
}

#[test]
fn blocks_never_exceed_the_hosts_line_count() {
    let (sim, host, _) = esci("escI-b7-flatbed.json", vec![]);
    let h = host.clone();
    sim.block_on(
        async move {
            // lcount 5 is below the profile's 16-line bands: blocks of 5 lines.
            let (block, full, last) = ext_start(&h, &fs_w(75, 64, 23, 0x13, 8, 5)).await;
            assert_eq!((block, full, last), (5 * 192, 4, 3 * 192));
            let mut image = Vec::new();
            for k in 0..5 {
                let len = if k < 4 { block } else { last } as usize;
                let data = exact(&h, len + 1).await;
                image.extend_from_slice(&data[..len]);
                if k < 4 {
                    send(&h, &[ACK]).await;
                }
            }
            assert_eq!(image, pattern(0, 23, 192), "RGB, pixel-interleaved");
        },
        LIMIT,
    )
    .unwrap();
}

async fn classic_setup(h: &InProcessHost, color: u8, depth: u8, width: u16, height: u16, lc: u8) {
    for (cmd, data) in [
        (b'C', vec![color]),
        (b'D', vec![depth]),
        (b'L', vec![0]),
        (b'Z', vec![2]),
        (b'Q', vec![0]),
        (b'g', vec![0]),
        (b'K', vec![0]),
        (b'R', [75u16.to_le_bytes(), 75u16.to_le_bytes()].concat()),
        (
            b'A',
            [0u16, 0, width, height]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        (b'd', vec![lc]),
    ] {
        assert_eq!(
            param(h, &[ESC, cmd], &data).await,
            ACK,
            "ESC {}",
            cmd as char
        );
    }
    send(h, &[ESC, b'f']).await;
    assert_eq!(read(h, 64).await.len(), 4);
    assert_eq!(read(h, 64).await.len(), 42);
}

#[test]
fn classic_colour_scan_has_headers_and_area_end() {
    let (sim, host, _) = esci("escI-b6-flatbed.json", vec![]);
    let h = host.clone();
    sim.block_on(
        async move {
            assert_eq!(discover(&h, false).await, 0x00, "no extended commands");
            classic_setup(&h, 0x13, 8, 72, 74, 10).await;
            send(&h, &[ESC, b'G']).await;
            let mut image = Vec::new();
            let mut lines_seen = 0;
            loop {
                let header = read(&h, 64).await;
                assert_eq!(header.len(), 6, "header alone");
                assert_eq!(header[0], STX);
                let bpl = u16::from_le_bytes([header[2], header[3]]);
                let lines = u16::from_le_bytes([header[4], header[5]]);
                assert_eq!(bpl, 216);
                assert!(lines <= 10, "ESC d caps the block at 10 lines");
                image.extend(exact(&h, usize::from(bpl) * usize::from(lines)).await);
                lines_seen += lines;
                if header[1] & 0x20 != 0 {
                    break;
                }
                send(&h, &[ACK]).await;
            }
            assert_eq!(lines_seen, 74);
            assert_eq!(image, pattern(0, 74, 216));
        },
        LIMIT,
    )
    .unwrap();
}

#[test]
fn lineart_is_sent_inverted_for_the_host_to_invert() {
    let (sim, host, _) = esci("escI-b7-flatbed.json", vec![]);
    let h = host.clone();
    sim.block_on(
        async move {
            let (block, _, last) = ext_start(&h, &fs_w(75, 64, 16, 0x00, 1, 255)).await;
            assert_eq!((block, last), (16 * 8, 0));
            let data = exact(&h, 16 * 8 + 1).await;
            let host_view: Vec<u8> = data[..128].iter().map(|b| !b).collect();
            assert_eq!(host_view, pattern(0, 16, 8));
        },
        LIMIT,
    )
    .unwrap();
}

#[test]
fn can_after_a_block_is_answered_with_ack_and_stops_the_motor() {
    let (sim, host, notes) = esci("escI-b7-flatbed.json", vec![]);
    let h = host.clone();
    sim.block_on(
        async move {
            let (block, _, _) = ext_start(&h, &fs_w(75, 72, 74, 0x00, 8, 255)).await;
            exact(&h, block as usize + 1).await;
            send(&h, &[ACK]).await;
            exact(&h, block as usize + 1).await;
            send(&h, &[CAN]).await;
            assert_eq!(read(&h, 64).await, vec![ACK], "one ACK answers CAN");
            // Parameters survive CAN; a new FS G waits for the motor and starts again.
            send(&h, &[FS, b'G']).await;
            assert_eq!(read(&h, 64).await.len(), 14);
        },
        LIMIT,
    )
    .unwrap();
    let names = notes.names();
    let can = names.iter().position(|n| *n == "can").expect("can noted");
    let stop = names
        .iter()
        .position(|n| *n == "motor-stopped")
        .expect("motor stops");
    assert!(can < stop, "{names:?}");
    assert!(names.contains(&"start-deferred"), "{names:?}");
}

#[test]
fn a_command_instead_of_ack_abandons_the_scan_and_gets_its_own_reply() {
    let (sim, host, notes) = esci("escI-b7-flatbed.json", vec![]);
    let h = host.clone();
    sim.block_on(
        async move {
            let (block, _, _) = ext_start(&h, &fs_w(75, 72, 74, 0x00, 8, 255)).await;
            exact(&h, block as usize + 1).await;
            send(&h, &[ACK]).await;
            // Let the next block be produced and queued, as when epson2 cancels while the
            // frontend still holds unread data: no CAN, the close-time ESC F comes next.
            h.sleep(scanemu::time::Duration::from_millis(200)).await;
            send(&h, &[ESC, b'F']).await;
            assert_eq!(
                read(&h, 4096).await,
                vec![STX, 0x02, 0, 0],
                "no stale block"
            );
            send(&h, &[ESC, b'f']).await;
            assert_eq!(read(&h, 4096).await.len(), 4);
            assert_eq!(read(&h, 4096).await.len(), 42);
            assert_eq!(simple(&h, &[ESC, b'@']).await, ACK);
            h.sleep(scanemu::time::Duration::from_millis(100)).await;
            send(&h, &[ESC, b'F']).await;
            assert_eq!(read(&h, 64).await, vec![STX, 0x02, 0, 0]);
        },
        LIMIT,
    )
    .unwrap();
    let names = notes.names();
    assert!(names.contains(&"scan-abandoned"), "{names:?}");
    assert!(names.contains(&"motor-stopped"), "{names:?}");
}

#[test]
fn cancel_button_sets_the_block_status_and_can_is_confirmed() {
    let faults = vec![Fault::CancelButton { page: 0, band: 2 }];
    let (sim, host, notes) = esci("escI-b7-flatbed.json", faults);
    let h = host.clone();
    sim.block_on(
        async move {
            let (block, _, _) = ext_start(&h, &fs_w(75, 72, 74, 0x00, 8, 255)).await;
            for _ in 0..2 {
                let d = exact(&h, block as usize + 1).await;
                assert_eq!(d[block as usize], 0);
                send(&h, &[ACK]).await;
            }
            let d = exact(&h, block as usize + 1).await;
            assert_eq!(d[block as usize], 0x10, "cancel request status");
            send(&h, &[CAN]).await;
            assert_eq!(read(&h, 64).await, vec![ACK]);
            assert_eq!(simple(&h, &[ESC, b'@']).await, ACK);
        },
        LIMIT,
    )
    .unwrap();
    assert!(notes.names().contains(&"fault"));
}

#[test]
fn paper_jam_sets_the_fatal_error_status() {
    let faults = vec![Fault::PaperJam { page: 0, band: 1 }];
    let (sim, host, _) = esci("escI-b7-flatbed.json", faults);
    let h = host.clone();
    sim.block_on(
        async move {
            let (block, _, _) = ext_start(&h, &fs_w(75, 72, 74, 0x00, 8, 255)).await;
            exact(&h, block as usize + 1).await;
            send(&h, &[ACK]).await;
            let d = exact(&h, block as usize + 1).await;
            assert_eq!(d[block as usize], 0x80);
            // epson2 returns IO_ERROR without CAN; the next command is served.
            send(&h, &[ESC, b'F']).await;
            assert_eq!(read(&h, 64).await, vec![STX, 0x02, 0, 0]);
        },
        LIMIT,
    )
    .unwrap();
}

#[test]
fn classic_stall_is_cleared_by_clear_halt() {
    let faults = vec![Fault::Stall { page: 0, band: 1 }];
    let (sim, host, notes) = esci("escI-b6-flatbed.json", faults);
    let h = host.clone();
    sim.block_on(
        async move {
            classic_setup(&h, 0x00, 8, 72, 74, 16).await;
            send(&h, &[ESC, b'G']).await;
            let header = read(&h, 64).await;
            let len = usize::from(u16::from_le_bytes([header[2], header[3]]))
                * usize::from(u16::from_le_bytes([header[4], header[5]]));
            exact(&h, len).await;
            send(&h, &[ACK]).await;
            let mut buf = [0u8; 6];
            let err = h.bulk_in(EP_DATA_IN, &mut buf, T).await.unwrap_err();
            assert_eq!(err, TransferError::Stall);
            h.clear_halt(EP_DATA_IN).await.unwrap();
            send(&h, &[ESC, b'F']).await;
            assert_eq!(read(&h, 64).await, vec![STX, 0, 0, 0]);
        },
        LIMIT,
    )
    .unwrap();
    let names = notes.names();
    assert!(names.contains(&"halted") && names.contains(&"halt-cleared"));
}

#[test]
fn bad_parameters_and_unknown_commands_get_nak() {
    let (sim, host, notes) = esci("escI-b7-flatbed.json", vec![]);
    let h = host.clone();
    sim.block_on(
        async move {
            // 123 dpi is not offered.
            assert_eq!(
                param(&h, &[FS, b'W'], &fs_w(123, 72, 74, 0, 8, 255)).await,
                NAK
            );
            // 16-bit gray is not offered.
            assert_eq!(
                param(&h, &[FS, b'W'], &fs_w(75, 72, 74, 0, 16, 255)).await,
                NAK
            );
            // Wider than the glass.
            assert_eq!(
                param(&h, &[FS, b'W'], &fs_w(75, 800, 74, 0, 8, 255)).await,
                NAK
            );
            assert_eq!(simple(&h, &[ESC, b'!']).await, NAK);
            assert_eq!(simple(&h, &[0x42]).await, NAK);
            // FS G without accepted parameters: fatal-error status.
            send(&h, &[FS, b'G']).await;
            assert_eq!(read(&h, 64).await[..2], [STX, 0x80]);
            // CAN with no scan running is still answered.
            assert_eq!(simple(&h, &[CAN]).await, ACK);
        },
        LIMIT,
    )
    .unwrap();
    assert!(notes.names().contains(&"nak-sent"));
}

#[test]
fn classic_level_refuses_extended_commands() {
    let (sim, host, _) = esci("escI-b6-flatbed.json", vec![]);
    let h = host.clone();
    sim.block_on(
        async move {
            assert_eq!(simple(&h, &[FS, b'I']).await, NAK);
        },
        LIMIT,
    )
    .unwrap();
}

#[test]
fn blocks_come_at_the_engines_pace() {
    let (sim, host, _) = esci("escI-b7-flatbed.json", vec![]);
    let h = host.clone();
    let profile: Profile = load("escI-b7-flatbed.json");
    let times = sim
        .block_on(
            async move {
                let t0 = h.now();
                let (block, _, _) = ext_start(&h, &fs_w(75, 72, 64, 0, 8, 255)).await;
                let mut times = Vec::new();
                for k in 0..4 {
                    exact(&h, block as usize + 1).await;
                    times.push((h.now() - t0).total_micros());
                    if k < 3 {
                        send(&h, &[ACK]).await;
                    }
                }
                times
            },
            LIMIT,
        )
        .unwrap();
    let t = &profile.timing;
    for (k, at) in times.iter().enumerate() {
        let ready = t.warmup_us + (k as u64 + 1) * 16 * t.line_period_us;
        assert!(
            *at >= ready,
            "block {k} at {at} us, before it was scanned ({ready})"
        );
        assert!(
            *at < ready + 2_000,
            "block {k} at {at} us, long after {ready}"
        );
    }
}

#[test]
fn esci_profiles_are_checked() {
    let text = std::fs::read_to_string(common::fixture("escI-b7-flatbed.json")).unwrap();
    let bad_field = text.replace("\"model\": \"SCANLAB-ESCI\"", "\"modle\": \"X\"");
    let err = Profile::from_json_str(&bad_field, "x.json")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("x.json:") && err.contains("modle"), "{err}");
    let gray16 = text.replace("\"gray8\",", "\"gray8\", \"gray16\",");
    let err = Profile::from_json_str(&gray16, "x.json")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("invalid optics.modes") && err.contains("Gray16"),
        "{err}"
    );
    let long = text.replace(
        "\"model\": \"SCANLAB-ESCI\"",
        "\"model\": \"A-MODEL-NAME-TOO-LONG\"",
    );
    let err = Profile::from_json_str(&long, "x.json")
        .unwrap_err()
        .to_string();
    assert!(err.contains("personality.model"), "{err}");
    let level = text.replace("\"level\": \"B7\"", "\"level\": \"B3\"");
    let err = Profile::from_json_str(&level, "x.json")
        .unwrap_err()
        .to_string();
    assert!(err.contains("B3"), "{err}");
}

#[test]
fn a_short_band_ends_the_block_early_on_both_paths() {
    for (profile, ext) in [
        ("escI-b7-flatbed.json", true),
        ("escI-b6-flatbed.json", false),
    ] {
        for bytes in [0u64, 100, 512] {
            let faults = vec![Fault::ShortBand {
                page: 0,
                band: 1,
                bytes,
            }];
            let (sim, host, _) = esci(profile, faults);
            let h = host.clone();
            sim.block_on(
                async move {
                    let full = 16 * 72;
                    if ext {
                        ext_start(&h, &fs_w(75, 72, 74, 0, 8, 255)).await;
                        exact(&h, full + 1).await;
                        send(&h, &[ACK]).await;
                        let got = read(&h, full + 1).await;
                        assert_eq!(got.len() as u64, bytes + 1, "data and status byte");
                    } else {
                        classic_setup(&h, 0x00, 8, 72, 74, 16).await;
                        send(&h, &[ESC, b'G']).await;
                        assert_eq!(read(&h, 64).await.len(), 6);
                        exact(&h, full).await;
                        send(&h, &[ACK]).await;
                        assert_eq!(read(&h, 64).await.len(), 6, "header of the short block");
                        let got = read(&h, full).await;
                        assert_eq!(got.len() as u64, bytes, "the short block ends early");
                    }
                    // The device is still usable.
                    send(&h, &[ESC, b'F']).await;
                    assert_eq!(read(&h, 64).await.len(), 4);
                },
                LIMIT,
            )
            .unwrap_or_else(|e| panic!("{profile} bytes={bytes}: {e:?}"));
        }
    }
}

#[test]
fn slow_ack_holds_the_hosts_answer_to_that_block() {
    let faults = vec![Fault::SlowAck {
        page: 0,
        band: 1,
        delay_us: 200_000,
    }];
    let (sim, host, notes) = esci("escI-b7-flatbed.json", faults);
    let h = host.clone();
    let took = sim
        .block_on(
            async move {
                let (block, _, _) = ext_start(&h, &fs_w(75, 72, 74, 0, 8, 255)).await;
                exact(&h, block as usize + 1).await;
                let t = h.now();
                send(&h, &[ACK]).await;
                let quick = (h.now() - t).total_micros();
                exact(&h, block as usize + 1).await;
                let t = h.now();
                send(&h, &[ACK]).await;
                let slow = (h.now() - t).total_micros();
                exact(&h, block as usize + 1).await;
                (quick, slow)
            },
            LIMIT,
        )
        .unwrap();
    assert!(
        took.0 < 1_000,
        "the ACK of block 0 is taken at once: {took:?}"
    );
    assert!(
        (195_000..=200_000).contains(&took.1),
        "the ACK of block 1 waits until 200 ms after the block went out: {took:?}"
    );
    assert!(notes
        .0
        .borrow()
        .iter()
        .any(|n| n.kind.name() == "fault" && n.detail.to_string() == "slow-ack 200000 us"));
}
