//! `rusb-play`: makes a recording's transfers through libusb (rusb) and compares every answer
//! with the recorded one, as an unmodified libusb program meeting the recorded device would.
//!
//! `rusb-play RECORDING_DIR [--device VID:PID | --address BUS:DEV] [--overlap]` opens the
//! device (by default the recording's VID:PID), then runs
//! [`scanemu::capture::playback::play`]: the descriptors libusb reports must be the recorded
//! ones, and each transfer, one at a time in completion order (overlapping as recorded with
//! `--overlap`), must get the recorded answer byte for byte. Under
//! `umockdev-run -d DIR/device.umockdev -p SYSFS_PATH=DIR/capture.pcap -- rusb-play DIR`
//! (files from `scanemu import-pcap`) it checks that a recording's capture replays into a
//! libusb program on a machine without USB.
//!
//! Exit status: 0 when every answer is the recorded one, 1 on the first difference or if the
//! device is missing (one line saying which), 2 on a bad flag or an unreadable recording.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use scanemu::capture::playback::{play, PlaybackOptions};
use scanemu::capture::recording::Recording;
use scanemu::host::rusb::{DeviceSelector, RusbHost};
use scanemu::sim::Sim;
use scanemu::time::Instant;

#[derive(Parser)]
#[command(
    name = "rusb-play",
    version,
    about = "Make a recording's transfers through libusb and compare the answers"
)]
struct Cli {
    /// The recording folder (fixtures/recordings/FORMAT.md).
    recording: PathBuf,
    /// The device by idVendor:idProduct in hex (default: the recording's).
    #[arg(long, value_name = "VID:PID", value_parser = parse_vid_pid, conflicts_with = "address")]
    device: Option<(u16, u16)>,
    /// The device by bus number and device address, e.g. 1:11.
    #[arg(long, value_name = "BUS:DEV", value_parser = parse_address)]
    address: Option<(u8, u8)>,
    /// Overlap transfers as on the recorded bus (an interrupt IN waiting while control
    /// requests go by) instead of one at a time in completion order. umockdev's replay needs
    /// one at a time: with a transfer waiting, it skips standard requests not yet submitted.
    #[arg(long)]
    overlap: bool,
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
    let recording = match Recording::load(&cli.recording) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rusb-play: {e}");
            return ExitCode::from(2);
        }
    };
    let selector = match (cli.device, cli.address) {
        (_, Some((bus, dev))) => DeviceSelector::BusAddress(bus, dev),
        (Some((vid, pid)), None) => DeviceSelector::VidPid(vid, pid),
        (None, None) => DeviceSelector::VidPid(recording.meta.vendor_id, recording.meta.product_id),
    };
    let sim = Sim::realtime();
    let host = match RusbHost::open(&sim, selector) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("rusb-play: {e}");
            return ExitCode::from(1);
        }
    };
    let options = if cli.overlap {
        PlaybackOptions::default()
    } else {
        PlaybackOptions::sequential()
    };
    let result = sim.block_on(
        async move { play(&host, &recording, options).await },
        Instant::from_millis(3_600_000),
    );
    match result {
        Ok(Ok(done)) => {
            println!(
                "rusb-play: {} transfers answered as recorded ({} bytes in), {} skipped",
                done.equal,
                done.bytes_in,
                done.skipped.len()
            );
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("rusb-play: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("rusb-play: {e}");
            ExitCode::from(1)
        }
    }
}
