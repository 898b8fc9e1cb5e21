//! `scanemu`: the emulated scanner's command line.
//!
//! `scanemu info [--profile PATH]` enumerates a device built from the profile over the
//! in-process bus and prints, for a person, what a host sees (identity, strings, descriptors)
//! and what the profile makes it do (timing, faults, the cost of a default job).
//!
//! `scanemu serve --usbip ADDR [--profile PATH] [--allow-remote] [--pcap FILE] [--trace FILE]`
//! exports the scanner over USB/IP; it refuses a non-loopback address unless `--allow-remote`
//! is given. `--trace` writes every device note (block sent, ACK, CAN, motor stopped …) as a
//! JSON line.
//!
//! `scanemu pattern --mode MODE --width PX --height PX` writes the image the engine's test
//! pattern gives for a scan of that size, as PNM, to compare a driver's output byte for byte.
//!
//! `scanemu capture --out DIR [--profile PATH]` records a scripted scan in virtual time as a
//! usbmon pcap (`DIR/scan.pcap`) beside the device's umockdev description
//! (`DIR/device.umockdev`), for `umockdev-run` to replay into a libusb program.
//!
//! Exit status: 0 on success, 2 on bad input (unreadable or invalid profile, bad flag) with one
//! line saying what and where, 1 if the device cannot be enumerated.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;

use anyhow::{anyhow, Context as _};
use clap::{Parser, Subcommand};

use scanemu::device::Device;
use scanemu::engine::{ScanJob, ScanMode};
use scanemu::host::inproc::InProcessHost;
use scanemu::host::{DeviceInfo, UsbHost};
use scanemu::profile::Profile;
use scanemu::sim::Sim;
use scanemu::time::{Duration, Instant};
use scanemu::usb::hc::{descriptor_type, SetupPacket};
use scanemu::usb::speed::Speed;

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
    /// Export the scanner over USB/IP (protocol 1.1.1) until interrupted.
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:3240.
        #[arg(long, value_name = "ADDR")]
        usbip: std::net::SocketAddr,
        /// Device profile (JSON); the built-in fast profile when absent.
        #[arg(long, value_name = "PATH")]
        profile: Option<PathBuf>,
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
    /// classic pcap, link type 220 or 189. The replay personality serves it.
    ImportPcap {
        /// The capture file.
        capture: PathBuf,
        /// The recording folder to write (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Take the descriptors from this device profile when the capture holds no
        /// enumeration (captures started after the device was plugged in).
        #[arg(long, value_name = "PATH")]
        profile: Option<PathBuf>,
        /// The device address to import (default: the first device with a transfer).
        #[arg(long)]
        device: Option<u8>,
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
            allow_remote,
            pcap,
            trace,
        } => serve(
            usbip,
            profile.as_deref(),
            allow_remote,
            pcap.as_deref(),
            trace.as_deref(),
        ),
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
            profile,
            device,
            motor_stop_us,
        } => import_pcap(&capture, &out, profile.as_deref(), device, motor_stop_us),
        Command::Info { profile: path } => {
            let loaded = match load_profile(path.as_deref()) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("scanemu: {e}");
                    return ExitCode::from(2);
                }
            };
            let origin = profile_origin(&loaded.name, &path);
            match info(&loaded, origin) {
                Ok(text) => {
                    // A closed pipe (`scanemu info | head`) is not an error worth a panic.
                    let _ = std::io::stdout().write_all(text.as_bytes());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("scanemu: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// `scanemu import-pcap`: a usbmon capture to a recording folder.
fn import_pcap(
    capture: &Path,
    out: &Path,
    profile: Option<&Path>,
    device: Option<u8>,
    motor_stop_us: Option<u64>,
) -> ExitCode {
    let bytes = match std::fs::read(capture) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("scanemu: {}: {e}", capture.display());
            return ExitCode::from(2);
        }
    };
    let mut recording = match scanemu::capture::recording::Recording::from_pcap(&bytes, device) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("scanemu: {}: {e}", capture.display());
            return ExitCode::from(2);
        }
    };
    let meta = &mut recording.meta;
    meta.provenance
        .insert("capture".into(), capture.display().to_string());
    if let Some(path) = profile {
        let loaded = match Profile::load(path) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("scanemu: {e}");
                return ExitCode::from(2);
            }
        };
        if meta.device_descriptor.is_empty() {
            match enumerate(&loaded) {
                Ok(e) => {
                    let speed = loaded.usb.speed;
                    let mut fresh =
                        scanemu::capture::recording::RecordingMeta::new("pcap", &e.info, speed, 0);
                    fresh.provenance = std::mem::take(&mut meta.provenance);
                    fresh.motor_stop_us = loaded.timing.motor_stop_us;
                    *meta = fresh;
                }
                Err(e) => {
                    eprintln!("scanemu: {e:#}");
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
            "scanemu: note: {} holds no GET_DESCRIPTOR replies; the recording has no descriptors (pass --profile to take them from a profile)",
            capture.display()
        );
    }
    if let Err(e) = recording.save(out) {
        eprintln!("scanemu: --out {e}");
        return ExitCode::from(2);
    }
    println!(
        "scanemu: {} transactions from {} -> {}",
        recording.transactions.len(),
        capture.display(),
        out.display()
    );
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

/// `scanemu serve`: exports the device over USB/IP until the process is killed.
fn serve(
    addr: std::net::SocketAddr,
    path: Option<&Path>,
    allow_remote: bool,
    pcap: Option<&Path>,
    trace: Option<&Path>,
) -> ExitCode {
    if !addr.ip().is_loopback() && !allow_remote {
        eprintln!(
            "scanemu: --usbip {addr}: not a loopback address; pass --allow-remote to export the device to the network"
        );
        return ExitCode::from(2);
    }
    let profile = match load_profile(path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("scanemu: {e}");
            return ExitCode::from(2);
        }
    };
    let mut config = scanemu::usbip::ServerConfig::new(profile);
    config.log = Some(std::sync::Arc::new(|line: &str| {
        eprintln!("scanemu: {line}")
    }));
    if let Some(file) = pcap {
        let writer = std::fs::File::create(file).and_then(|f| {
            let out: Box<dyn std::io::Write + Send> = Box::new(std::io::BufWriter::new(f));
            scanemu::capture::pcap::PcapWriter::new(out)
        });
        match writer {
            Ok(w) => config.capture = Some(std::sync::Arc::new(std::sync::Mutex::new(w))),
            Err(e) => {
                eprintln!("scanemu: --pcap {}: {e}", file.display());
                return ExitCode::from(2);
            }
        }
    }
    if let Some(file) = trace {
        match std::fs::File::create(file) {
            Ok(f) => {
                let f = std::sync::Mutex::new(f);
                config.notes = Some(std::sync::Arc::new(
                    move |n: &scanemu::personality::DeviceNote| {
                        let line = serde_json::json!({
                            "at_us": n.at.total_micros(),
                            "what": n.kind,
                            "page": n.page,
                            "value": n.value,
                            "detail": n.detail.to_string(),
                        });
                        let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
                        // A full disk loses trace lines, not the device.
                        let _ = writeln!(f, "{line}");
                    },
                ));
            }
            Err(e) => {
                eprintln!("scanemu: --trace {}: {e}", file.display());
                return ExitCode::from(2);
            }
        }
    }
    let server = match scanemu::usbip::UsbIpServer::bind(addr, config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("scanemu: --usbip {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    let rec = &server.exported().record;
    let scope = if server.local_addr().ip().is_loopback() {
        "loopback only"
    } else {
        "reachable from the network (--allow-remote)"
    };
    println!(
        "scanemu: USB/IP server listening on {} ({scope}); exporting bus id {} = {:04x}:{:04x}",
        server.local_addr(),
        rec.busid,
        rec.id_vendor,
        rec.id_product
    );
    println!(
        "scanemu: list with `usbip --tcp-port {} list -r {}`",
        server.local_addr().port(),
        server.local_addr().ip()
    );
    let _ = std::io::stdout().flush();
    server.wait();
    ExitCode::SUCCESS
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

/// What enumeration and a few standard requests returned.
struct Enumerated {
    info: DeviceInfo,
    /// String descriptors by index (index 0, the language list, excluded).
    strings: Vec<(u8, String)>,
}

/// Builds a device from `profile`, enumerates it through the in-process host and reads its
/// string descriptors, as any host would.
fn enumerate(profile: &Profile) -> anyhow::Result<Enumerated> {
    let sim = Sim::new();
    let device = Device::new(profile);
    let host = InProcessHost::new(device, Rc::new(sim.clone()))
        .map_err(|e| anyhow!("enumeration failed: {e}"))?;
    let info = host.device_info();
    let mut indices: Vec<u8> = Vec::new();
    let d = &info.device_descriptor;
    indices.extend([14, 15, 16].iter().filter_map(|&i| d.get(i).copied()));
    walk(&info.config_descriptor, |desc| match desc.get(1).copied() {
        Some(descriptor_type::CONFIGURATION) => indices.extend(desc.get(6)),
        Some(descriptor_type::INTERFACE) => indices.extend(desc.get(8)),
        _ => {}
    });
    indices.retain(|&i| i != 0);
    indices.sort_unstable();
    indices.dedup();
    let strings = sim
        .block_on(
            async move {
                let timeout = Duration::from_millis(100);
                let langs = host
                    .control_in(
                        SetupPacket::get_descriptor(descriptor_type::STRING, 0, 0, 255),
                        timeout,
                    )
                    .await?;
                let lang = langs
                    .get(2..4)
                    .map_or(0x0409, |b| u16::from_le_bytes([b[0], b[1]]));
                let mut strings = Vec::new();
                for i in indices {
                    let raw = host
                        .control_in(
                            SetupPacket::get_descriptor(descriptor_type::STRING, i, lang, 255),
                            timeout,
                        )
                        .await?;
                    strings.push((i, decode_string(&raw)));
                }
                Ok::<_, scanemu::host::TransferError>(strings)
            },
            Instant::from_millis(10_000),
        )
        .context("reading string descriptors")?
        .context("reading string descriptors")?;
    Ok(Enumerated { info, strings })
}

fn decode_string(raw: &[u8]) -> String {
    let len = usize::from(raw.first().copied().unwrap_or(0)).min(raw.len());
    let units: Vec<u16> = raw
        .get(2..len)
        .unwrap_or(&[])
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// Calls `f` with each descriptor (length-prefixed) of a configuration descriptor set.
fn walk(mut bytes: &[u8], mut f: impl FnMut(&[u8])) {
    while let Some(&len) = bytes.first() {
        let len = usize::from(len);
        if len < 2 || len > bytes.len() {
            break;
        }
        f(&bytes[..len]);
        bytes = &bytes[len..];
    }
}

fn word(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .map_or(0, |w| u16::from_le_bytes([w[0], w[1]]))
}

fn bcd(v: u16) -> String {
    format!("{:x}.{:02x}", v >> 8, v & 0xff)
}

fn string_or_none(e: &Enumerated, index: u8) -> String {
    if index == 0 {
        return "(none)".into();
    }
    e.strings.iter().find(|(i, _)| *i == index).map_or_else(
        || format!("(string {index} unreadable)"),
        |(_, s)| format!("{s:?}"),
    )
}

fn speed_text(speed: Speed) -> String {
    let name = match speed {
        Speed::Full => "full speed (USB 1.1, 12 Mbit/s)",
        Speed::High => "high speed (USB 2.0, 480 Mbit/s)",
        Speed::Super => "SuperSpeed (USB 3.x)",
        Speed::Unlimited => "unlimited (high speed descriptors, no wire time)",
    };
    match speed.bulk_bytes_per_second() {
        Some(rate) => format!("{name}; bulk payload up to {:.3} MB/s", rate as f64 / 1e6),
        None => name.to_string(),
    }
}

/// `us` in the most readable unit.
fn us_text(us: u64) -> String {
    if us < 1000 {
        format!("{us} us")
    } else if us < 1_000_000 {
        format!("{:.3} ms", us as f64 / 1e3)
    } else {
        format!("{:.3} s", us as f64 / 1e6)
    }
}

fn bytes_text(n: u64) -> String {
    if n < 1024 {
        format!("{n} B")
    } else if n < 1024 * 1024 {
        format!("{n} B ({:.1} KiB)", n as f64 / 1024.0)
    } else {
        format!("{n} B ({:.1} MiB)", n as f64 / (1024.0 * 1024.0))
    }
}

fn interval_text(speed: Speed, b_interval: u8) -> String {
    match speed {
        Speed::Full => format!("{b_interval} ({b_interval} ms)"),
        _ => {
            let micro = 1u64 << (u32::from(b_interval.clamp(1, 16)) - 1);
            format!(
                "{b_interval} ({micro} microframe{}, {})",
                if micro == 1 { "" } else { "s" },
                us_text(micro * 125)
            )
        }
    }
}

fn describe_usb(out: &mut String, profile: &Profile, e: &Enumerated) {
    let d = &e.info.device_descriptor;
    let at = |i: usize| d.get(i).copied().unwrap_or(0);
    let _ = writeln!(out, "USB device (as enumerated over the in-process bus)");
    let _ = writeln!(
        out,
        "  VID:PID        {:04x}:{:04x}",
        e.info.vendor_id, e.info.product_id
    );
    let _ = writeln!(out, "  manufacturer   {}", string_or_none(e, at(14)));
    let _ = writeln!(out, "  product        {}", string_or_none(e, at(15)));
    let _ = writeln!(out, "  serial         {}", string_or_none(e, at(16)));
    let _ = writeln!(out, "  speed          {}", speed_text(profile.usb.speed));
    let _ = writeln!(
        out,
        "  device         USB {}, class {:#04x} subclass {:#04x} protocol {:#04x}, \
         EP0 max packet {}, device release {}, {} configuration(s)",
        bcd(word(d, 2)),
        at(4),
        at(5),
        at(6),
        at(7),
        bcd(word(d, 12)),
        at(17)
    );
    walk(&e.info.config_descriptor, |desc| match desc[1] {
        descriptor_type::CONFIGURATION if desc.len() >= 9 => {
            let attrs = desc[7];
            let _ = writeln!(
                out,
                "  configuration  {}: {} interface(s), {} bytes in all, attributes {attrs:#04x} \
                 ({}{}), max power {} mA{}",
                desc[5],
                desc[4],
                word(desc, 2),
                if attrs & 0x40 != 0 {
                    "self-powered"
                } else {
                    "bus-powered"
                },
                if attrs & 0x20 != 0 {
                    ", remote wake-up"
                } else {
                    ""
                },
                u32::from(desc[8]) * 2,
                if desc[6] != 0 {
                    format!(", {}", string_or_none(e, desc[6]))
                } else {
                    String::new()
                }
            );
        }
        descriptor_type::INTERFACE if desc.len() >= 9 => {
            let class = if desc[5] == 0xff {
                " (vendor specific)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "    interface {} alt {}: class {:#04x}{class} subclass {:#04x} protocol {:#04x}, \
                 {} endpoint(s), {}",
                desc[2],
                desc[3],
                desc[5],
                desc[6],
                desc[7],
                desc[4],
                string_or_none(e, desc[8])
            );
        }
        descriptor_type::ENDPOINT if desc.len() >= 7 => {
            let addr = desc[2];
            let dir = if addr & 0x80 != 0 { "IN " } else { "OUT" };
            let kind = ["control", "isochronous", "bulk", "interrupt"][usize::from(desc[3] & 3)];
            let mps = word(desc, 4) & 0x7ff;
            let interval = match desc[3] & 3 {
                3 | 1 => format!(", interval {}", interval_text(profile.usb.speed, desc[6])),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "      endpoint {addr:#04x} {dir} {kind:<9} max packet {mps}{interval}"
            );
        }
        other => {
            let _ = writeln!(
                out,
                "    descriptor type {other:#04x}, {} bytes",
                desc.len()
            );
        }
    });
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

fn describe_profile(out: &mut String, profile: &Profile) {
    let o = &profile.optics;
    let t = &profile.timing;
    let mm = |px: u32| f64::from(px) * 25.4 / f64::from(o.optical_dpi.max(1));
    let _ = writeln!(out, "\nProtocol");
    match &profile.personality {
        scanemu::profile::Personality::EscI(e) => {
            let path = match e.level {
                scanemu::profile::EsciLevel::B7 => {
                    "extended path: FS W parameters, FS G start, blocks of data + 1 status byte"
                }
                scanemu::profile::EsciLevel::B6 => {
                    "classic block mode: ESC parameter commands, ESC G start, 6-byte block headers"
                }
            };
            let _ = writeln!(
                out,
                "  personality    Epson ESC/I level {:?}, model \"{}\"",
                e.level, e.model
            );
            let _ = writeln!(out, "  path           {path}");
            let _ = writeln!(
                out,
                "  blocks         one per band: up to {} lines, fewer if the host's line count is lower; ACK / CAN after each but the last",
                t.band_lines
            );
            let _ = writeln!(out, "  reference      emulator/PROTOCOL-ESCI.md");
        }
        _ => {
            let _ = writeln!(
                out,
                "  personality    native: vendor requests on EP0, bands on bulk IN, events on interrupt IN"
            );
            let _ = writeln!(out, "  reference      emulator/PROTOCOL.md");
        }
    }
    let _ = writeln!(out, "\nOptics");
    let res: Vec<String> = o.resolutions.iter().map(u16::to_string).collect();
    let _ = writeln!(
        out,
        "  optical        {} dpi; resolutions {} dpi",
        o.optical_dpi,
        res.join(", ")
    );
    let _ = writeln!(
        out,
        "  area           {} x {} px at {} dpi ({:.1} x {:.1} mm)",
        o.max_width_px,
        o.max_height_px,
        o.optical_dpi,
        mm(o.max_width_px),
        mm(o.max_height_px)
    );
    let modes: Vec<&str> = o.modes.iter().map(|m| mode_name(*m)).collect();
    let _ = writeln!(out, "  modes          {}", modes.join(", "));
    let _ = writeln!(
        out,
        "  flatbed        {}",
        if o.flatbed { "yes" } else { "no" }
    );
    match &o.adf {
        Some(adf) => {
            let _ = writeln!(
                out,
                "  feeder         {} sheets, {} loaded, {} page feed",
                adf.capacity,
                adf.loaded_sheets,
                us_text(adf.page_feed_us)
            );
        }
        None => {
            let _ = writeln!(out, "  feeder         none");
        }
    }
    let _ = writeln!(out, "\nTiming");
    let _ = writeln!(out, "  warm-up        {}", us_text(t.warmup_us));
    let _ = writeln!(out, "  line period    {}", us_text(t.line_period_us));
    let _ = writeln!(
        out,
        "  band           {} lines ({} per band)",
        t.band_lines,
        us_text(u64::from(t.band_lines) * t.line_period_us)
    );
    let _ = writeln!(
        out,
        "  motor stop     {} (cancel request to idle)",
        us_text(t.motor_stop_us)
    );
    if t.jitter_us == 0 {
        let _ = writeln!(out, "  jitter         none");
    } else {
        let _ = writeln!(
            out,
            "  jitter         up to {} per band (seed {})",
            us_text(t.jitter_us),
            t.jitter_seed
        );
    }
    let _ = writeln!(out, "  device buffer  {} bands", t.buffer_bands);
    let _ = writeln!(out, "\nFaults");
    if profile.faults.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for f in &profile.faults {
        let json = serde_json::to_string(f).unwrap_or_else(|_| format!("{f:?}"));
        let _ = writeln!(out, "  {json}");
    }
}

fn mode_name(mode: ScanMode) -> &'static str {
    match mode {
        ScanMode::Lineart => "lineart",
        ScanMode::Gray8 => "gray8",
        ScanMode::Gray16 => "gray16",
        ScanMode::Color24 => "color24",
        ScanMode::Color48 => "color48",
    }
}

/// The default job: the whole optical area at the highest resolution up to 300 dpi (the lowest
/// one if none is that low), flatbed if there is one, one page.
fn default_job(profile: &Profile, mode: ScanMode) -> ScanJob {
    let o = &profile.optics;
    let dpi = o
        .resolutions
        .iter()
        .copied()
        .filter(|&r| r <= 300)
        .max()
        .or_else(|| o.resolutions.iter().copied().min())
        .unwrap_or(o.optical_dpi);
    let scale = |px: u32| {
        let v = u64::from(px) * u64::from(dpi) / u64::from(o.optical_dpi.max(1));
        u32::try_from(v).unwrap_or(u32::MAX)
    };
    let (w, h) = (scale(o.max_width_px), scale(o.max_height_px));
    if o.flatbed {
        ScanJob::flatbed(dpi, mode, w, h)
    } else {
        ScanJob::adf(dpi, mode, w, h, 1)
    }
}

fn describe_cost(out: &mut String, profile: &Profile) {
    let t = &profile.timing;
    let speed = profile.usb.speed;
    let mut modes: Vec<ScanMode> = [ScanMode::Gray8, ScanMode::Color24]
        .into_iter()
        .filter(|m| profile.optics.modes.contains(m))
        .collect();
    if modes.is_empty() {
        modes.extend(profile.optics.modes.first());
    }
    let Some(first) = modes.first() else { return };
    let job0 = default_job(profile, *first);
    let _ = writeln!(
        out,
        "\nCost of a default job: the whole area at {} dpi ({} x {} px), one page{}",
        job0.resolution_dpi,
        job0.width_px,
        job0.height_px,
        if profile.optics.flatbed {
            " on the flatbed"
        } else {
            " from the feeder"
        }
    );
    let wire = |bytes: u64| match speed.bulk_bytes_per_second() {
        Some(_) => format!(
            "on the wire {}",
            us_text(speed.wire_time(bytes).total_micros())
        ),
        None => "no wire time (unlimited bus)".to_string(),
    };
    for mode in modes {
        let job = default_job(profile, mode);
        let bpl = job.bytes_per_line();
        let band_lines = t.band_lines.min(job.height_px);
        let band_bytes = bpl * u64::from(band_lines);
        let band_us = u64::from(band_lines) * t.line_period_us;
        let page_bytes = job.page_bytes();
        let lines_us = u64::from(job.lines_per_page()) * t.line_period_us;
        let page_wire = speed.wire_time(page_bytes).total_micros();
        let _ = writeln!(out, "  {} ({} bytes per line)", mode_name(mode), bpl);
        let _ = writeln!(
            out,
            "    one band     {} lines, {}: produced in {}, {}",
            band_lines,
            bytes_text(band_bytes),
            us_text(band_us),
            wire(band_bytes)
        );
        let _ = writeln!(
            out,
            "    one page     {} lines in {} bands, {}: produced in {} ({} warm-up + {} of \
             lines{}), {}",
            job.lines_per_page(),
            job.bands_per_page(t.band_lines),
            bytes_text(page_bytes),
            us_text(t.warmup_us + lines_us),
            us_text(t.warmup_us),
            us_text(lines_us),
            if t.jitter_us > 0 {
                format!(", plus up to {} of jitter per band", us_text(t.jitter_us))
            } else {
                String::new()
            },
            wire(page_bytes)
        );
        let bound = if page_wire > lines_us {
            "the bus is the bottleneck: bands queue in the device"
        } else {
            "the scanner is the bottleneck: the bus keeps up"
        };
        let _ = writeln!(out, "    limit        {bound}");
    }
}

fn info(profile: &Profile, origin: String) -> anyhow::Result<String> {
    let e = enumerate(profile)?;
    let mut out = String::new();
    let _ = writeln!(out, "profile          {origin}");
    if !profile.description.is_empty() {
        let _ = writeln!(out, "                 {}", profile.description);
    }
    let _ = writeln!(out);
    describe_usb(&mut out, profile, &e);
    describe_profile(&mut out, profile);
    describe_cost(&mut out, profile);
    Ok(out)
}
