//! `scanemu`: the emulated scanner's command line.
//!
//! `scanemu info [--profile PATH]` enumerates a device built from the profile over the
//! in-process bus and prints, for a person, what a host sees (identity, strings, descriptors)
//! and what the profile makes it do (timing, faults, the cost of a default job).
//!
//! `scanemu serve --usbip ADDR [--profile PATH]... [--devices N] [--replay DIR]... [--strict]
//! [--allow-remote] [--pcap FILE] [--trace FILE] [--max-connections N]
//! [--handshake-timeout-ms MS] [--idle-timeout-ms MS]` exports scanners over USB/IP (one per
//! `--profile`, or N of one profile, bus ids 1-1, 1-2, ...), then each `--replay` recording
//! (only the recordings when no `--profile` or `--devices` is given); it refuses a non-loopback address unless `--allow-remote` is given. `--trace` writes
//! every device note (block sent, ACK, CAN, motor stopped …) as a JSON line (with a `busid`
//! when several devices are served). SIGINT or SIGTERM shuts it down gracefully: pending URBs
//! are unlinked (-ESHUTDOWN), the capture and the trace are complete, one line names what was
//! written, and the exit status is 130 (SIGINT) or 143 (SIGTERM), as for a program the signal
//! ended; this holds from the program's start (a signal while the devices enumerate stops the
//! server as soon as it is up), and a second signal ends the program at once. A port already
//! in use is bad input (exit status 2).
//!
//! `scanemu pattern --mode MODE --width PX --height PX` writes the image the engine's test
//! pattern gives for a scan of that size, as PNM, to compare a driver's output byte for byte.
//!
//! `scanemu capture --out DIR [--profile PATH]` records a scripted scan in virtual time as a
//! usbmon pcap (`DIR/scan.pcap`) beside the device's umockdev description
//! (`DIR/device.umockdev`), for `umockdev-run` to replay into a libusb program.
//!
//! `scanemu import-pcap CAPTURE --out DIR [--device BUS:ADDRESS] [--profile PATH]` imports a
//! usbmon capture of a real device (pcap or pcapng) as a recording with the device's umockdev
//! description beside it; `scanemu import-pcap --list CAPTURE` lists the capture's devices.
//! A damaged capture, or one where the device to import is not clear, is one line and exit 2.
//!
//! Exit status: 0 on success, 2 on bad input (unreadable or invalid profile, bad flag) with one
//! line saying what and where, 1 if the device cannot be enumerated.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use scanemu::capture::import::DeviceChoice;
use scanemu::engine::{ScanJob, ScanMode};
use scanemu::profile::Profile;

#[derive(Parser)]
#[command(name = "scanemu", version, about = "A software USB scanner")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enumerate the device and print its descriptors, timing, faults and the cost of a default
    /// job, readable by a person.
    Info {
        /// Device profile (JSON); the built-in fast profile when absent.
        #[arg(long, value_name = "PATH")]
        profile: Option<PathBuf>,
    },
    /// Export scanners over USB/IP (protocol 1.1.1) until SIGINT or SIGTERM.
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:3240.
        #[arg(long, value_name = "ADDR")]
        usbip: std::net::SocketAddr,
        /// Device profile (JSON), once per exported device: bus ids 1-1, 1-2, ... in order,
        /// each device with its profile's faults. The built-in fast profile when absent.
        #[arg(long, value_name = "PATH")]
        profile: Vec<PathBuf>,
        /// Export this many devices (default: one per --profile, else 1); with one --profile
        /// (or none) every device uses it.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
        devices: Option<u16>,
        /// Also export this recording (`scanconform record`, `scanemu import-pcap`; repeat for
        /// several), after the emulated devices; alone, only the recordings are exported.
        /// Each import replays it from the start (fixtures/recordings/FORMAT.md, "Replay").
        #[arg(long, value_name = "DIR")]
        replay: Vec<PathBuf>,
        /// With --replay: every departure from a recording is a divergence (a request after
        /// its end NAKs by default; see FORMAT.md).
        #[arg(long, requires = "replay")]
        strict: bool,
        /// Most connections alive at once; at the cap, the oldest connection that has not
        /// imported a device is closed to make room.
        #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
        max_connections: u32,
        /// How long a connection that has not imported a device may take over each operation.
        #[arg(long, value_name = "MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
        handshake_timeout_ms: u64,
        /// Close an imported connection with no URB pending after this long without a
        /// command; 0 never does (for a device left attached with `usbip attach`).
        #[arg(long, value_name = "MS", default_value_t = 600_000)]
        idle_timeout_ms: u64,
        /// Allow a non-loopback address (the device is then reachable from the network).
        #[arg(long)]
        allow_remote: bool,
        /// Write every URB to this usbmon pcap (link type 220) for Wireshark, tshark or umockdev.
        #[arg(long, value_name = "FILE")]
        pcap: Option<PathBuf>,
        /// Write every device note as a JSON line to this file (flushed per line):
        /// `{"at_us":…,"what":"block-sent","page":0,"value":3,"detail":"…"}`.
        #[arg(long, value_name = "FILE")]
        trace: Option<PathBuf>,
    },
    /// Write the test pattern of a one-page scan as PNM (P4 lineart, P5 gray, P6 colour) with
    /// the header `scanimage --format=pnm` writes, so `cmp` checks a scan byte for byte.
    Pattern {
        /// lineart, gray8, gray16, color24 or color48.
        #[arg(long, value_parser = parse_mode)]
        mode: ScanMode,
        /// Pixels per line.
        #[arg(long)]
        width: u32,
        /// Lines.
        #[arg(long)]
        height: u32,
        /// Output file (default: standard output).
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Build a recording (fixtures/recordings/FORMAT.md) from a usbmon capture of a device:
    /// pcap or pcapng, link type 220 or 189. The replay personality serves it.
    ImportPcap {
        /// The capture file.
        capture: PathBuf,
        /// The recording folder to write (created if missing).
        #[arg(long, value_name = "DIR", required_unless_present = "list")]
        out: Option<PathBuf>,
        /// List the capture's devices (bus, address, VID:PID, class, transfers) and write
        /// nothing.
        #[arg(long, conflicts_with_all = ["out", "profile", "motor_stop_us"])]
        list: bool,
        /// Take the descriptors from this device profile when the capture holds no
        /// enumeration (captures started after the device was plugged in).
        #[arg(long, value_name = "PATH")]
        profile: Option<PathBuf>,
        /// The device to import, as BUS:ADDRESS or ADDRESS (default: the one device that is
        /// no hub and did more than answer standard requests).
        #[arg(long, value_name = "BUS:ADDRESS")]
        device: Option<scanemu::capture::import::DeviceChoice>,
        /// How long the device's motor takes to stop after a cancel, for cancels the capture
        /// does not hold (default: the profile's, else 40000).
        #[arg(long)]
        motor_stop_us: Option<u64>,
    },
    /// Record a scripted scan as a usbmon pcap and a umockdev device description in DIR.
    Capture {
        /// Output folder (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Device profile (JSON); the built-in fast profile when absent.
        #[arg(long, value_name = "PATH")]
        profile: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            usbip,
            profile,
            devices,
            replay,
            strict,
            max_connections,
            handshake_timeout_ms,
            idle_timeout_ms,
            allow_remote,
            pcap,
            trace,
        } => serve(&ServeArgs {
            addr: usbip,
            profiles: profile,
            devices,
            replays: replay,
            strict,
            max_connections,
            handshake_timeout_ms,
            idle_timeout_ms,
            allow_remote,
            pcap,
            trace,
        }),
        Command::Pattern {
            mode,
            width,
            height,
            output,
        } => pattern(mode, width, height, output.as_deref()),
        Command::Capture { out, profile } => capture(&out, profile.as_deref()),
        Command::ImportPcap {
            capture,
            out,
            list,
            profile,
            device,
            motor_stop_us,
        } => match (list, out) {
            (true, _) | (false, None) => list_devices(&capture, device),
            (false, Some(out)) => import_pcap(
                &capture,
                &out,
                profile.as_deref(),
                device.unwrap_or_default(),
                motor_stop_us,
            ),
        },
        Command::Info { profile: path } => {
            let loaded = match load_profile(path.as_deref()) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("scanemu: {e}");
                    return ExitCode::from(2);
                }
            };
            let origin = profile_origin(&loaded.name, &path);
            match scanemu::info::describe(&loaded, &origin) {
                Ok(text) => {
                    // A closed pipe (`scanemu info | head`) is not an error worth a panic.
                    let _ = std::io::stdout().write_all(text.as_bytes());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("scanemu: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// `scanemu import-pcap --list`: the devices of a capture, one per line, the one the import
/// would take marked.
fn list_devices(capture: &Path, choice: Option<DeviceChoice>) -> ExitCode {
    use scanemu::capture::{import, read};
    let bytes = match std::fs::read(capture) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("scanemu: {}: {e}", capture.display());
            return ExitCode::from(2);
        }
    };
    let file = match read::read_capture(&bytes) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("scanemu: {}: {e}", capture.display());
            return ExitCode::from(2);
        }
    };
    let devices = import::devices(&file);
    let chosen = import::choose(&devices, choice.unwrap_or_default()).ok();
    let interfaces: Vec<String> = file
        .interfaces
        .iter()
        .map(|i| match i.name.as_str() {
            "" => format!("link type {}", i.linktype),
            name => format!("{name} (link type {})", i.linktype),
        })
        .collect();
    let mut out = format!(
        "{}: {}, {} usbmon records, interfaces: {}\n",
        capture.display(),
        file.format,
        file.records.len(),
        interfaces.join(", ")
    );
    out.push_str(&format!(
        "{:<10} {:<10} {:<28} {:>9}  note\n",
        "bus:addr", "vid:pid", "class", "transfers"
    ));
    for (i, d) in devices.iter().enumerate() {
        let note = match (d.hub, d.used, chosen == Some(i)) {
            (_, _, true) => "imported by default",
            (true, _, _) => "hub",
            (false, false, _) => "standard requests only",
            (false, true, _) => "",
        };
        out.push_str(&format!(
            "{:<10} {:<10} {:<28} {:>9}  {note}\n",
            d.position(),
            d.id_text(),
            d.class,
            d.transfers
        ));
    }
    if chosen.is_none() {
        if let Err(e) = import::choose(&devices, choice.unwrap_or_default()) {
            out.push_str(&format!("no default: {e}\n"));
        }
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    ExitCode::SUCCESS
}

/// `scanemu import-pcap`: a usbmon capture to a recording folder, with the device's umockdev
/// description beside it.
fn import_pcap(
    capture: &Path,
    out: &Path,
    profile: Option<&Path>,
    device: DeviceChoice,
    motor_stop_us: Option<u64>,
) -> ExitCode {
    let bytes = match std::fs::read(capture) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("scanemu: {}: {e}", capture.display());
            return ExitCode::from(2);
        }
    };
    let imported = match scanemu::capture::import::import(&bytes, device) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("scanemu: {}: {e}", capture.display());
            return ExitCode::from(2);
        }
    };
    let mut recording = imported.recording;
    let meta = &mut recording.meta;
    if let Some(name) = capture.file_name() {
        meta.provenance
            .insert("capture".into(), name.to_string_lossy().into_owned());
    }
    if let Some(path) = profile {
        let loaded = match Profile::load(path) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("scanemu: {e}");
                return ExitCode::from(2);
            }
        };
        if meta.device_descriptor.is_empty() {
            match scanemu::info::enumerate(&loaded) {
                Ok(e) => {
                    let speed = loaded.usb.speed;
                    let mut fresh =
                        scanemu::capture::recording::RecordingMeta::new("pcap", &e.info, speed, 0);
                    fresh.provenance = std::mem::take(&mut meta.provenance);
                    fresh.bus = meta.bus;
                    fresh.device_address = meta.device_address;
                    fresh.motor_stop_us = loaded.timing.motor_stop_us;
                    *meta = fresh;
                }
                Err(e) => {
                    eprintln!("scanemu: {e}");
                    return ExitCode::from(1);
                }
            }
        } else {
            meta.motor_stop_us = loaded.timing.motor_stop_us;
        }
    }
    if let Some(us) = motor_stop_us {
        meta.motor_stop_us = us;
    }
    if meta.device_descriptor.is_empty() {
        eprintln!(
            "scanemu: note: {} holds no GET_DESCRIPTOR replies of {}; the recording has no descriptors (pass --profile to take them from a profile)",
            capture.display(),
            imported.device.position()
        );
    }
    if imported.truncated > 0 {
        eprintln!(
            "scanemu: note: {} cut the payload of {} records (its snapshot length); the recording holds what it kept",
            capture.display(),
            imported.truncated
        );
    }
    if let Err(e) = recording.save(out) {
        eprintln!("scanemu: --out {e}");
        return ExitCode::from(2);
    }
    let description = out.join(scanemu::capture::umockdev::DESCRIPTION_FILE);
    let text = scanemu::capture::umockdev::describe_recording(&recording);
    if let Err(e) = std::fs::write(&description, text) {
        eprintln!("scanemu: --out {}: {e}", description.display());
        return ExitCode::from(2);
    }
    let pending = recording
        .transactions
        .iter()
        .filter(|t| t.result == scanemu::capture::recording::TxResult::Pending)
        .count();
    // The device as the recording has it: a profile gives the identity a capture started
    // after enumeration lacks.
    let mut device = imported.device.clone();
    let d = &recording.meta.device_info().device_descriptor;
    if device.id.is_none() && d.len() >= 12 {
        device.id = Some((
            u16::from_le_bytes([d[8], d[9]]),
            u16::from_le_bytes([d[10], d[11]]),
        ));
    }
    let text = format!(
        "scanemu: {} transactions ({pending} pending at the end) of {} from {} -> {}\n\
         scanemu: replay into a libusb program with:\n  umockdev-run -d {} -p {}={} -- PROGRAM\n",
        recording.transactions.len(),
        device.position() + " " + &device.id_text(),
        capture.display(),
        out.display(),
        description.display(),
        scanemu::capture::umockdev::sysfs_path(&recording.meta.capture_config()),
        out.join(scanemu::capture::recording::files::CAPTURE)
            .display()
    );
    // A closed pipe (`| head -1`) is not an error worth a panic.
    let _ = std::io::stdout().write_all(text.as_bytes());
    ExitCode::SUCCESS
}

/// `scanemu capture`: records a scripted scan for umockdev replay.
fn capture(out: &Path, path: Option<&Path>) -> ExitCode {
    let profile = match load_profile(path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("scanemu: {e}");
            return ExitCode::from(2);
        }
    };
    match scanemu::capture::umockdev::record(&profile, out) {
        Ok(r) => {
            println!(
                "scanemu: {} records in {}, device in {}; replay with:\n  umockdev-run -d {} -p {}={} -- PROGRAM",
                r.records,
                r.capture.display(),
                r.description.display(),
                r.description.display(),
                r.sysfs_path,
                r.capture.display()
            );
            ExitCode::SUCCESS
        }
        Err(e @ scanemu::capture::umockdev::RecordError::Io { .. }) => {
            eprintln!("scanemu: --out: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("scanemu: {e}");
            ExitCode::from(1)
        }
    }
}

/// The flags of `scanemu serve`.
struct ServeArgs {
    addr: std::net::SocketAddr,
    profiles: Vec<PathBuf>,
    devices: Option<u16>,
    replays: Vec<PathBuf>,
    strict: bool,
    max_connections: u32,
    handshake_timeout_ms: u64,
    idle_timeout_ms: u64,
    allow_remote: bool,
    pcap: Option<PathBuf>,
    trace: Option<PathBuf>,
}

/// `scanemu serve`: exports the devices over USB/IP until SIGINT or SIGTERM, then shuts down
/// gracefully (pending URBs are unlinked with -ESHUTDOWN, the capture is flushed), says what it
/// wrote and exits 128 + the signal's number.
fn serve(args: &ServeArgs) -> ExitCode {
    use scanemu::usbip::{default_busid, DeviceSpec, ServerConfig, UsbIpServer};
    if let Err(e) = early_signals::catch() {
        eprintln!("scanemu: cannot handle SIGINT/SIGTERM: {e}");
        return ExitCode::from(1);
    }
    let addr = args.addr;
    if !addr.ip().is_loopback() && !args.allow_remote {
        eprintln!(
            "scanemu: --usbip {addr}: not a loopback address; pass --allow-remote to export the device to the network"
        );
        return ExitCode::from(2);
    }
    let mut recordings = Vec::new();
    for dir in &args.replays {
        match scanemu::capture::recording::Recording::load(dir) {
            Ok(r) => recordings.push(r),
            Err(e) => {
                eprintln!("scanemu: --replay {e}");
                return ExitCode::from(2);
            }
        }
    }
    let mut profiles = Vec::new();
    if args.profiles.is_empty() && (args.replays.is_empty() || args.devices.is_some()) {
        profiles.push(Profile::builtin_fast());
    }
    for path in &args.profiles {
        match load_profile(Some(path)) {
            Ok(p) => profiles.push(p),
            Err(e) => {
                eprintln!("scanemu: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let count = match args.devices {
        Some(n) if profiles.len() > 1 && usize::from(n) != profiles.len() => {
            eprintln!(
                "scanemu: --devices {n} with {} --profile flags: give one profile per device, or one profile for all",
                profiles.len()
            );
            return ExitCode::from(2);
        }
        Some(n) => usize::from(n),
        None => profiles.len(),
    };
    if count + recordings.len() > 64 {
        eprintln!(
            "scanemu: {count} devices and {} recordings: at most 64 exports",
            recordings.len()
        );
        return ExitCode::from(2);
    }
    let trace = match &args.trace {
        Some(file) => match std::fs::File::create(file) {
            Ok(f) => Some(std::sync::Arc::new(std::sync::Mutex::new(f))),
            Err(e) => {
                eprintln!("scanemu: --trace {}: {e}", file.display());
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let total = count + recordings.len();
    let specs: Vec<DeviceSpec> = (0..total)
        .map(|i| {
            let busid = default_busid(i);
            let mut spec = match i.checked_sub(count) {
                None => DeviceSpec::new(profiles[i.min(profiles.len() - 1)].clone(), busid.clone()),
                Some(r) => {
                    let mut served =
                        scanemu::capture::serve::ServedRecording::new(recordings[r].clone());
                    served.config.strict = args.strict;
                    DeviceSpec::with_backend(std::sync::Arc::new(served), busid.clone())
                }
            };
            if let Some(f) = &trace {
                let f = f.clone();
                // One device keeps the single-device line format; several name theirs.
                let tag = (total > 1).then_some(busid);
                spec.notes = Some(std::sync::Arc::new(
                    move |n: &scanemu::personality::DeviceNote| {
                        let mut line = serde_json::json!({
                            "at_us": n.at.total_micros(),
                            "what": n.kind,
                            "page": n.page,
                            "value": n.value,
                            "detail": n.detail.to_string(),
                        });
                        if let Some(b) = &tag {
                            line["busid"] = serde_json::Value::from(b.as_str());
                        }
                        let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
                        // A full disk loses trace lines, not the device.
                        let _ = writeln!(f, "{line}");
                    },
                ));
            }
            spec
        })
        .collect();
    let mut config = ServerConfig::with_devices(specs);
    config.max_connections = args.max_connections as usize;
    config.handshake_timeout = std::time::Duration::from_millis(args.handshake_timeout_ms);
    config.idle_timeout =
        (args.idle_timeout_ms > 0).then(|| std::time::Duration::from_millis(args.idle_timeout_ms));
    config.log = Some(std::sync::Arc::new(|line: &str| {
        eprintln!("scanemu: {line}")
    }));
    if let Some(file) = &args.pcap {
        let writer = std::fs::File::create(file).and_then(|f| {
            let out: Box<dyn std::io::Write + Send> = Box::new(std::io::BufWriter::new(f));
            scanemu::usb::usbmon::PcapWriter::new(out)
        });
        match writer {
            Ok(w) => config.capture = Some(std::sync::Arc::new(std::sync::Mutex::new(w))),
            Err(e) => {
                eprintln!("scanemu: --pcap {}: {e}", file.display());
                return ExitCode::from(2);
            }
        }
    }
    let server = match UsbIpServer::bind(addr, config) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            eprintln!("scanemu: {e}");
            return ExitCode::from(2);
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable
            ) =>
        {
            // Someone else's port, or an address this host does not have: the user's input.
            eprintln!("scanemu: --usbip {addr}: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("scanemu: --usbip {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = server.stop_on_signals() {
        eprintln!("scanemu: cannot handle SIGINT/SIGTERM: {e}");
        return ExitCode::from(1);
    }
    // A signal that came while the exports loaded and enumerated stops the server now, as it
    // would have had it come later; the handlers above see any later one.
    if let Some(signal) = early_signals::received() {
        server.stop_by(signal);
        return stopped(server, args);
    }
    let scope = if server.local_addr().ip().is_loopback() {
        "loopback only"
    } else {
        "reachable from the network (--allow-remote)"
    };
    let exports: Vec<String> = server
        .exports()
        .iter()
        .map(|e| {
            format!(
                "bus id {} = {:04x}:{:04x}",
                e.record.busid, e.record.id_vendor, e.record.id_product
            )
        })
        .collect();
    println!(
        "scanemu: USB/IP server listening on {} ({scope}); exporting {}",
        server.local_addr(),
        exports.join(", ")
    );
    println!(
        "scanemu: list with `usbip --tcp-port {} list -r {}`",
        server.local_addr().port(),
        server.local_addr().ip()
    );
    let _ = std::io::stdout().flush();
    stopped(server, args)
}

/// Waits for `server` to stop; after a signal, one line says what was written and the exit
/// status is 128 + the signal's number.
fn stopped(server: scanemu::usbip::UsbIpServer, args: &ServeArgs) -> ExitCode {
    match server.wait() {
        Some(signal) => {
            let mut written: Vec<String> = Vec::new();
            if let Some(p) = &args.pcap {
                written.push(format!("capture {}", p.display()));
            }
            if let Some(t) = &args.trace {
                written.push(format!("trace {}", t.display()));
            }
            eprintln!(
                "scanemu: stopped by {}; {}",
                signal.name(),
                if written.is_empty() {
                    "nothing to write".to_string()
                } else {
                    format!("wrote {} (complete)", written.join(", "))
                }
            );
            ExitCode::from(128 + signal.number())
        }
        None => ExitCode::SUCCESS,
    }
}

/// SIGINT and SIGTERM for `scanemu serve` from its first step: the handlers (`signal-hook`'s,
/// which only store into atomics) remember the first signal until the server's own handlers
/// are installed, so no signal ends the program without the graceful shutdown, and end the
/// program at once with 128 + the signal's number on a second signal, for a shutdown that
/// does not finish.
mod early_signals {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use scanemu::usbip::StopSignal;
    use signal_hook::consts::{SIGINT, SIGTERM};

    /// The number of the last signal received (0: none).
    static RECEIVED: AtomicUsize = AtomicUsize::new(0);
    /// Set by every signal; a signal that finds it set ends the program.
    static SEEN: AtomicBool = AtomicBool::new(false);

    /// Installs the handlers.
    pub fn catch() -> std::io::Result<()> {
        for sig in [SIGINT, SIGTERM] {
            // Registered in this order, the shutdown check runs before the flag is set.
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, &SEEN)?;
            signal_hook::flag::register(sig, &SEEN)?;
            signal_hook::flag::register_usize(sig, &RECEIVED, sig as usize)?;
        }
        Ok(())
    }

    /// The signal received so far, if any (a second one would have ended the program).
    pub fn received() -> Option<StopSignal> {
        match RECEIVED.load(Ordering::SeqCst) {
            0 => None,
            n if n == SIGTERM as usize => Some(StopSignal::Terminate),
            _ => Some(StopSignal::Interrupt),
        }
    }
}

/// The profile's name and where it came from.
fn profile_origin(name: &str, path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!("{name} ({})", p.display()),
        None => format!("{name} (built in)"),
    }
}

fn load_profile(path: Option<&Path>) -> Result<Profile, scanemu::profile::ProfileError> {
    match path {
        Some(p) => Profile::load(p),
        None => Ok(Profile::builtin_fast()),
    }
}

fn parse_mode(s: &str) -> Result<ScanMode, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("{s:?} is not one of lineart, gray8, gray16, color24, color48"))
}

/// `scanemu pattern`: the test pattern of a one-page scan as PNM.
fn pattern(mode: ScanMode, width: u32, height: u32, output: Option<&Path>) -> ExitCode {
    const MAX_SIDE: u32 = 1 << 20;
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        eprintln!("scanemu: pattern: --width and --height must be in 1..={MAX_SIDE}");
        return ExitCode::from(2);
    }
    let job = ScanJob::flatbed(1, mode, width, height);
    let (magic, maxval) = match mode {
        ScanMode::Lineart => ("P4", ""),
        ScanMode::Gray8 => ("P5", "255\n"),
        ScanMode::Gray16 => ("P5", "65535\n"),
        ScanMode::Color24 => ("P6", "255\n"),
        ScanMode::Color48 => ("P6", "65535\n"),
    };
    let write = |out: &mut dyn std::io::Write| -> std::io::Result<()> {
        // The header scanimage writes, so that `cmp` compares a scan with the pattern.
        write!(
            out,
            "{magic}\n# SANE data follows\n{width} {height}\n{maxval}"
        )?;
        let mut line = vec![0u8; usize::try_from(job.bytes_per_line()).unwrap_or(0)];
        for l in 0..height {
            scanemu::engine::pattern_line(0, l, &mut line);
            out.write_all(&line)?;
        }
        out.flush()
    };
    let result = match output {
        Some(path) => std::fs::File::create(path).and_then(|f| {
            let mut w = std::io::BufWriter::new(f);
            write(&mut w)
        }),
        None => write(&mut std::io::BufWriter::new(std::io::stdout().lock())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let name = output.map_or("standard output".to_string(), |p| p.display().to_string());
            eprintln!("scanemu: pattern: {name}: {e}");
            ExitCode::from(1)
        }
    }
}
