//! `rusb-scan`: one scan from a scanlab scanner through libusb (rusb), as any user-space driver
//! would make it.
//!
//! `rusb-scan [--device VID:PID | --address BUS:DEV] [--out FILE]` opens the device, runs
//! [`scanemu::capture::umockdev::scripted_scan`] over the rusb host and writes the image bytes to
//! `FILE`. It is the unmodified libusb program of the umockdev replay: under
//! `umockdev-run -d DIR/device.umockdev -p /sys/devices/pci0000:00/0000:00:14.0/usb1/1-1=DIR/scan.pcap
//! -- rusb-scan` (files from `scanemu capture --out DIR`) it scans from a recorded emulator
//! session on a machine without USB.
//!
//! Exit status: 0 on success, 1 if the device is missing or the scan fails (one line saying
//! why), 2 on a bad flag.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use scanemu::capture::umockdev::scripted_scan;
use scanemu::host::rusb::{DeviceSelector, RusbHost};
use scanemu::sim::Sim;
use scanemu::time::Instant;

#[derive(Parser)]
#[command(
    name = "rusb-scan",
    version,
    about = "Scan once from a scanlab scanner via libusb"
)]
struct Cli {
    /// The device by idVendor:idProduct in hex (default 5ca1:0001).
    #[arg(long, value_name = "VID:PID", value_parser = parse_vid_pid, conflicts_with = "address")]
    device: Option<(u16, u16)>,
    /// The device by bus number and device address, e.g. 1:1.
    #[arg(long, value_name = "BUS:DEV", value_parser = parse_address)]
    address: Option<(u8, u8)>,
    /// Where to write the image bytes (default: nowhere; the summary is printed anyway).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

fn parse_pair<T>(s: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<(T, T), String> {
    let (a, b) = s
        .split_once(':')
        .ok_or("expected two numbers separated by ':'")?;
    Ok((parse(a)?, parse(b)?))
}

fn parse_vid_pid(s: &str) -> Result<(u16, u16), String> {
    parse_pair(s, |x| {
        u16::from_str_radix(x, 16).map_err(|e| format!("{x:?} is not a 16-bit hex number: {e}"))
    })
}

fn parse_address(s: &str) -> Result<(u8, u8), String> {
    parse_pair(s, |x| {
        x.parse::<u8>()
            .map_err(|e| format!("{x:?} is not a number 0..=255: {e}"))
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let selector = match (cli.device, cli.address) {
        (_, Some((bus, dev))) => DeviceSelector::BusAddress(bus, dev),
        (Some((vid, pid)), None) => DeviceSelector::VidPid(vid, pid),
        (None, None) => DeviceSelector::VidPid(0x5ca1, 0x0001),
    };
    let sim = Sim::realtime();
    let host = match RusbHost::open(&sim, selector) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("rusb-scan: {e}");
            return ExitCode::from(1);
        }
    };
    let result = sim.block_on(
        async move { scripted_scan(&host).await },
        Instant::from_millis(600_000),
    );
    let scan = match result {
        Ok(Ok(scan)) => scan,
        Ok(Err(e)) => {
            eprintln!("rusb-scan: {e}");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("rusb-scan: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(path) = &cli.out {
        if let Err(e) = std::fs::write(path, &scan.image) {
            eprintln!("rusb-scan: --out {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    println!(
        "rusb-scan: {} x {} px {:?} at {} dpi: {} bands, {} bytes, device status 0x{:04x}",
        scan.job.width_px,
        scan.job.height_px,
        scan.job.mode,
        scan.job.resolution_dpi,
        scan.report.bands_per_page,
        scan.image.len(),
        scan.status.code
    );
    ExitCode::SUCCESS
}
