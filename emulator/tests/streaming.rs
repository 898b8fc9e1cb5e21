//! Streaming: a 1200-dpi A4 colour scan (about 417 MB) read end to end through the in-process
//! host in 64 KiB bulk reads, every byte checked against the test pattern, in constant memory.

mod common;

use common::*;
use scanemu::engine::{pattern_line, ScanJob, ScanMode};
use scanemu::host::{TransferError, UsbHost};
use scanemu::personality::native::protocol::*;
use scanemu::time::{Duration, Instant};

/// Peak resident set size of this process so far (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// Checks every byte of the stream against the test pattern, one line of expected bytes at a
/// time, as chunks arrive at stream offset `offset`.
struct Checker {
    bpl: u64,
    line: Vec<u8>,
    line_no: Option<u64>,
    lines_checked: u64,
}

impl Checker {
    fn check(&mut self, offset: u64, chunk: &[u8]) {
        let end = offset + chunk.len() as u64;
        let mut l = offset / self.bpl;
        while l * self.bpl < end {
            let ls = l * self.bpl;
            let (from, to) = (ls.max(offset), (ls + self.bpl).min(end));
            let got = &chunk[(from - offset) as usize..(to - offset) as usize];
            let within = (from - ls) as usize;
            if self.line_no != Some(l) {
                pattern_line(0, l as u32, &mut self.line);
                self.line_no = Some(l);
            }
            assert!(
                got == &self.line[within..within + got.len()],
                "line {l} differs at stream offset {from}"
            );
            if to == ls + self.bpl {
                self.lines_checked += 1;
            }
            l += 1;
        }
    }
}

#[test]
fn a4_1200_dpi_colour_streams_through_the_host_in_constant_memory() {
    let profile = load("a4-flatbed-1200.json");
    let job = ScanJob::flatbed(1200, ScanMode::Color24, 9920, 14032);
    assert_eq!(job.page_bytes(), 417_592_320);
    let (sim, h) = setup(&profile, vec![]);
    let before = peak_rss_kib();
    let wall = std::time::Instant::now();
    let (total, reads, checked, virtual_us) = sim
        .block_on(
            async move {
                let report = start(&h, job).await;
                assert_eq!(report.bands_per_page, 220);
                let mut checker = Checker {
                    bpl: u64::from(report.bytes_per_line),
                    line: vec![0; report.bytes_per_line as usize],
                    line_no: None,
                    lines_checked: 0,
                };
                let mut buf = vec![0u8; 64 * 1024];
                let (mut total, mut reads) = (0u64, 0u64);
                while total < job.page_bytes() {
                    let n = h.bulk_in(EP_DATA_IN, &mut buf, T).await.expect("bulk read");
                    checker.check(total, &buf[..n]);
                    total += n as u64;
                    reads += 1;
                }
                let ss = scan_status(&h).await;
                assert_eq!((ss.state, ss.error), (DeviceState::Idle, ScanError::None));
                assert_eq!((ss.bands_sent, ss.lines_produced), (220, 14032));
                assert_eq!(
                    h.bulk_in(EP_DATA_IN, &mut buf, Duration::from_millis(10))
                        .await,
                    Err(TransferError::Timeout { actual: 0 })
                );
                (total, reads, checker.lines_checked, h.now().total_micros())
            },
            Instant::from_millis(600_000),
        )
        .unwrap();
    let wall = wall.elapsed();
    let after = peak_rss_kib();
    let growth = after.saturating_sub(before);
    println!(
        "streamed {total} bytes in {reads} reads ({checked} lines byte-checked), \
         {virtual_us} us virtual, {:.2} s wall; peak RSS {before} KiB -> {after} KiB \
         (+{growth} KiB)",
        wall.as_secs_f64()
    );
    assert_eq!(total, 417_592_320);
    // 64 KiB reads: 219 full bands of 1904640 bytes take 29 full reads and one of 4096 bytes
    // (ended by a ZLP); the last band (16 lines, 476160 bytes) takes 7 and one of 17408.
    assert_eq!(reads, 219 * 30 + 8);
    assert_eq!(checked, 14032, "every line byte-checked");
    assert!(
        growth < 64 * 1024,
        "peak RSS grew by {growth} KiB while streaming 417 MB"
    );
}
