//! What `scanemu info` prints: a device as a host sees it, and what its profile makes it do.
//!
//! [`describe`] builds a device from a profile, enumerates it through the in-process host,
//! reads its string descriptors, and writes for a person: the identity and every descriptor
//! ([`describe_usb`], read with [`crate::usb::descriptor`]), the protocol, optics, timing and
//! faults ([`describe_profile`]), and what a default job costs ([`describe_cost`]). The text is
//! deterministic: the same profile gives the same text.

use std::fmt::Write as _;
use std::rc::Rc;

use crate::device::Device;
use crate::engine::{ScanJob, ScanMode};
use crate::host::inproc::InProcessHost;
use crate::host::{DeviceInfo, TransferError, UsbHost};
use crate::personality::esci::EsciLevel;
use crate::profile::{PersonalityConfig, Profile};
use crate::sim::{Sim, SimError};
use crate::time::{Duration, Instant};
use crate::usb::descriptor::{self, DeviceDescriptor};
use crate::usb::descriptor_type;
use crate::usb::hc::SetupPacket;
use crate::usb::speed::Speed;

/// What enumeration and a few standard requests returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enumerated {
    /// The identity and descriptors the host read.
    pub info: DeviceInfo,
    /// String descriptors by index (index 0, the language list, excluded).
    pub strings: Vec<(u8, String)>,
}

/// Why a device could not be described.
#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    /// The device did not enumerate.
    #[error("enumeration failed: {0}")]
    Enumeration(TransferError),
    /// A string descriptor could not be read.
    #[error("reading string descriptors: {0}")]
    Strings(TransferError),
    /// Reading the string descriptors did not finish.
    #[error("reading string descriptors: {0}")]
    Stalled(SimError),
}

/// Builds a device from `profile`, enumerates it through the in-process host and reads its
/// string descriptors, as any host would.
pub fn enumerate(profile: &Profile) -> Result<Enumerated, InfoError> {
    let sim = Sim::new();
    let device = Device::new(profile);
    let host = InProcessHost::new(device, Rc::new(sim.clone())).map_err(InfoError::Enumeration)?;
    let info = host.device_info();
    let dd = DeviceDescriptor::read(&info.device_descriptor);
    let mut indices: Vec<u8> = vec![dd.manufacturer_index, dd.product_index, dd.serial_index];
    for desc in descriptor::walk(&info.config_descriptor) {
        match desc[1] {
            descriptor_type::CONFIGURATION => indices.extend(desc.get(6)),
            descriptor_type::INTERFACE => indices.extend(desc.get(8)),
            _ => {}
        }
    }
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
                    strings.push((i, descriptor::decode_string(&raw)));
                }
                Ok::<_, TransferError>(strings)
            },
            Instant::from_millis(10_000),
        )
        .map_err(InfoError::Stalled)?
        .map_err(InfoError::Strings)?;
    Ok(Enumerated { info, strings })
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

/// `us` in the most readable unit: `850 us`, `1.700 ms`, `3.500 s`.
pub fn us_text(us: u64) -> String {
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

/// The device as enumerated: identity, strings, and every descriptor of its configuration.
pub fn describe_usb(out: &mut String, speed: Speed, e: &Enumerated) {
    let d = DeviceDescriptor::read(&e.info.device_descriptor);
    let _ = writeln!(out, "USB device (as enumerated over the in-process bus)");
    let _ = writeln!(
        out,
        "  VID:PID        {:04x}:{:04x}",
        e.info.vendor_id, e.info.product_id
    );
    let _ = writeln!(
        out,
        "  manufacturer   {}",
        string_or_none(e, d.manufacturer_index)
    );
    let _ = writeln!(
        out,
        "  product        {}",
        string_or_none(e, d.product_index)
    );
    let _ = writeln!(
        out,
        "  serial         {}",
        string_or_none(e, d.serial_index)
    );
    let _ = writeln!(out, "  speed          {}", speed_text(speed));
    let _ = writeln!(
        out,
        "  device         USB {}, class {:#04x} subclass {:#04x} protocol {:#04x}, \
         EP0 max packet {}, device release {}, {} configuration(s)",
        bcd(d.usb_version),
        d.class,
        d.subclass,
        d.protocol,
        d.max_packet_size_0,
        bcd(d.device_version),
        d.num_configurations
    );
    for desc in descriptor::walk(&e.info.config_descriptor) {
        describe_descriptor(out, speed, e, desc);
    }
}

/// One line for one descriptor of a configuration.
fn describe_descriptor(out: &mut String, speed: Speed, e: &Enumerated, desc: &[u8]) {
    match desc[1] {
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
                3 | 1 => format!(", interval {}", interval_text(speed, desc[6])),
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
    }
}

/// What the profile makes the device do: protocol, optics, timing, faults.
pub fn describe_profile(out: &mut String, profile: &Profile) {
    let o = &profile.optics;
    let t = &profile.timing;
    let mm = |px: u32| f64::from(px) * 25.4 / f64::from(o.optical_dpi.max(1));
    let _ = writeln!(out, "\nProtocol");
    match &profile.personality {
        PersonalityConfig::EscI(e) => {
            let path = match e.level {
                EsciLevel::B7 => {
                    "extended path: FS W parameters, FS G start, blocks of data + 1 status byte"
                }
                EsciLevel::B6 => {
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

/// The profile name of a scan mode (`gray8`).
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
pub fn default_job(profile: &Profile, mode: ScanMode) -> ScanJob {
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

/// What a default job costs in each of gray8 and color24 (or the first mode): bytes, time to
/// produce, time on the wire, and which of the two is the bottleneck.
pub fn describe_cost(out: &mut String, profile: &Profile) {
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

/// Everything `scanemu info` prints for `profile`, which came from `origin` (a name and a
/// path): the enumerated device, the profile, and the cost of a default job.
pub fn describe(profile: &Profile, origin: &str) -> Result<String, InfoError> {
    let e = enumerate(profile)?;
    let mut out = String::new();
    let _ = writeln!(out, "profile          {origin}");
    if !profile.description.is_empty() {
        let _ = writeln!(out, "                 {}", profile.description);
    }
    let _ = writeln!(out);
    describe_usb(&mut out, profile.usb.speed, &e);
    describe_profile(&mut out, profile);
    describe_cost(&mut out, profile);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_in_their_unit() {
        assert_eq!(us_text(850), "850 us");
        assert_eq!(us_text(1700), "1.700 ms");
        assert_eq!(us_text(3_500_000), "3.500 s");
        assert_eq!(bytes_text(512), "512 B");
        assert_eq!(bytes_text(2048), "2048 B (2.0 KiB)");
        assert_eq!(bytes_text(3 << 20), "3145728 B (3.0 MiB)");
        assert_eq!(interval_text(Speed::Full, 10), "10 (10 ms)");
        assert_eq!(interval_text(Speed::High, 1), "1 (1 microframe, 125 us)");
        assert_eq!(interval_text(Speed::High, 4), "4 (8 microframes, 1.000 ms)");
    }

    #[test]
    fn the_default_job_is_the_whole_area_at_300_dpi_or_less() {
        let p = Profile::builtin_fast();
        let job = default_job(&p, ScanMode::Gray8);
        assert_eq!(job.resolution_dpi, 100);
        assert_eq!((job.width_px, job.height_px), (256, 256));
    }

    #[test]
    fn descriptors_are_listed_one_line_each() {
        let e = Enumerated {
            info: DeviceInfo {
                vendor_id: 0x5ca1,
                product_id: 0x0300,
                device_descriptor: vec![
                    18, 1, 0, 2, 0, 0, 0, 64, 0xa1, 0x5c, 0, 3, 0, 1, 1, 2, 0, 1,
                ],
                config_descriptor: vec![
                    9, 2, 32, 0, 1, 1, 0, 0x80, 50, // configuration
                    9, 4, 0, 0, 2, 0xff, 0x53, 1, 4, // interface 0
                    7, 5, 0x81, 2, 0, 2, 0, // bulk IN
                    7, 5, 0x83, 3, 16, 0, 4, // interrupt IN
                ],
            },
            strings: vec![(1, "scanlab".into()), (4, "iface".into())],
        };
        let mut out = String::new();
        describe_usb(&mut out, Speed::High, &e);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[1], "  VID:PID        5ca1:0300");
        assert_eq!(lines[2], "  manufacturer   \"scanlab\"");
        assert_eq!(lines[3], "  product        (string 2 unreadable)");
        assert_eq!(lines[4], "  serial         (none)");
        assert!(lines[7].starts_with("  configuration  1: 1 interface(s), 32 bytes in all"));
        assert!(lines[8].contains("class 0xff (vendor specific) subclass 0x53"));
        assert!(lines[8].ends_with("2 endpoint(s), \"iface\""));
        assert_eq!(lines[9], "      endpoint 0x81 IN  bulk      max packet 512");
        assert_eq!(
            lines[10],
            "      endpoint 0x83 IN  interrupt max packet 16, interval 4 (8 microframes, 1.000 ms)"
        );
        assert_eq!(lines.len(), 11);
    }

    #[test]
    fn the_builtin_profile_is_described_in_full() {
        let p = Profile::builtin_fast();
        let text = describe(&p, "fast-flatbed (built in)").unwrap();
        for want in [
            "profile          fast-flatbed (built in)",
            "USB device (as enumerated over the in-process bus)",
            "      endpoint 0x81 IN  bulk      max packet 512",
            "      endpoint 0x02 OUT bulk      max packet 512",
            "\nProtocol\n",
            "\nOptics\n",
            "\nTiming\n",
            "\nFaults\n  none\n",
            "\nCost of a default job",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert_eq!(text, describe(&p, "fast-flatbed (built in)").unwrap());
    }
}
