//! Device profiles: the data that makes one emulated scanner differ from another.
//!
//! A profile is a JSON file in `fixtures/profiles/` that fixes the USB identity and endpoint sizes
//! ([`UsbConfig`]), what the optics can scan ([`Optics`], including an optional sheet feeder,
//! [`Adf`](crate::engine::Adf)), how long everything takes ([`Timing`]), which faults to inject
//! ([`Fault`]) and the protocol the device speaks ([`PersonalityConfig`]). The engine's parts
//! ([`Optics`], [`Timing`]) are defined by the engine (`engine::config`); the profile composes
//! them.
//! Every object rejects unknown fields, and every error names `file:line:column`:
//!
//! ```text
//! fixtures/profiles/x.json:12:5: unknown field `foo`, expected one of `warmup_us`, ...
//! ```
//!
//! Values are checked after parsing ([`Profile::validate`]); a validation error points at the
//! first occurrence of the offending field's name in the file.
//!
//! Schema (fields marked *required* have no default):
//!
//! ```json
//! {
//!   "name": "a4-flatbed-300",                       // required
//!   "description": "...",                           // default ""
//!   "usb": {
//!     "vid": "0x5ca1", "pid": "0x0300",             // required; "0x..." hex string or integer
//!     "manufacturer": "scanlab", "product": "...", "serial": "...",
//!     "speed": "high",                              // full | high | super | unlimited
//!     "bulk_max_packet": 512, "interrupt_max_packet": 16, "interrupt_interval": 4
//!   },
//!   "optics": {
//!     "optical_dpi": 600, "resolutions": [75, 150, 300, 600],
//!     "max_width_px": 5100, "max_height_px": 7020,  // at optical_dpi; required
//!     "modes": ["lineart", "gray8", "gray16", "color24", "color48"],
//!     "flatbed": true,                              // false for sheet-fed scanners
//!     "adf": null                                   // or { "capacity": 50, "loaded_sheets": 10, "page_feed_us": 900000 }
//!   },
//!   "timing": { "warmup_us": 800000, "line_period_us": 1700, "band_lines": 64,
//!               "motor_stop_us": 40000, "jitter_us": 0, "jitter_seed": 1, "buffer_bands": 4 },
//!   "faults": [ { "kind": "stall", "page": 0, "band": 3 } ]
//! }
//! ```

use std::fmt;
use std::path::Path;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::engine::{Fault, Optics, ScanEngine, ScanMode, Timing};
use crate::personality::esci::EsciConfig;
use crate::personality::EndpointSizes;
use crate::usb::speed::Speed;

/// The JSON text of the built-in fast profile, `fixtures/profiles/fast-flatbed.json`.
pub const BUILTIN_FAST_JSON: &str = include_str!("../../fixtures/profiles/fast-flatbed.json");

/// A complete device profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Profile {
    /// Short name, by convention the file name without `.json`. Required.
    pub name: String,
    /// Free text for humans. Default: empty.
    #[serde(default)]
    pub description: String,
    /// USB identity and endpoint sizes. Required (only `vid` and `pid` have no default).
    pub usb: UsbConfig,
    /// What the scanner can scan. Required.
    pub optics: Optics,
    /// How long things take. Default: [`Timing::default`].
    #[serde(default)]
    pub timing: Timing,
    /// Faults to inject, in any order. Default: none.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// The protocol the device speaks on the wire. Default: [`PersonalityConfig::Native`].
    #[serde(default, skip_serializing_if = "PersonalityConfig::is_native")]
    pub personality: PersonalityConfig,
}

/// The protocol a device speaks (a profile's `personality` object): the project's own
/// (`emulator/PROTOCOL.md`) or a real scanner's. Every personality runs on the same scan engine,
/// bus and faults; [`crate::personality`] implements them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "protocol", deny_unknown_fields)]
#[non_exhaustive]
pub enum PersonalityConfig {
    /// The native protocol: vendor control requests, bands on bulk IN, events on interrupt IN.
    #[default]
    #[serde(rename = "native")]
    Native,
    /// Epson ESC/I over bulk IN and OUT (`emulator/PROTOCOL-ESCI.md`), as Epson's flatbeds
    /// speak it and SANE's `epson2` backend drives it.
    #[serde(rename = "escI")]
    EscI(EsciConfig),
}

impl PersonalityConfig {
    /// True for the native protocol.
    pub fn is_native(&self) -> bool {
        matches!(self, PersonalityConfig::Native)
    }
}

/// USB identity, bus speed and endpoint sizes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct UsbConfig {
    /// Vendor ID. Required; `"0x5ca1"` or a plain integer.
    #[serde(deserialize_with = "de_hex_u16", serialize_with = "ser_hex_u16")]
    pub vid: u16,
    /// Product ID. Required; `"0x0300"` or a plain integer.
    #[serde(deserialize_with = "de_hex_u16", serialize_with = "ser_hex_u16")]
    pub pid: u16,
    /// Manufacturer string descriptor. Default: `"scanlab"`.
    #[serde(default = "default_manufacturer")]
    pub manufacturer: String,
    /// Product string descriptor. Default: `"scanemu"`.
    #[serde(default = "default_product")]
    pub product: String,
    /// Serial number string descriptor. Default: `"0001"`.
    #[serde(default = "default_serial")]
    pub serial: String,
    /// Bus speed. Default: `high`.
    #[serde(default)]
    pub speed: Speed,
    /// Max packet size of the bulk endpoints: a power of two, at least 8 and at most
    /// [`Speed::max_bulk_packet`]. Default: 512.
    #[serde(default = "default_bulk_max_packet")]
    pub bulk_max_packet: u16,
    /// Max packet size of the interrupt IN endpoint: 1..=64 at full speed, 1..=1024 otherwise.
    /// Default: 16.
    #[serde(default = "default_interrupt_max_packet")]
    pub interrupt_max_packet: u16,
    /// `bInterval` of the interrupt IN endpoint: 1..=255 (frames) at full speed, 1..=16
    /// (2^(n-1) microframes) otherwise. Default: 4.
    #[serde(default = "default_interrupt_interval")]
    pub interrupt_interval: u8,
}

fn default_manufacturer() -> String {
    "scanlab".into()
}
fn default_product() -> String {
    "scanemu".into()
}
fn default_serial() -> String {
    "0001".into()
}
fn default_bulk_max_packet() -> u16 {
    512
}
fn default_interrupt_max_packet() -> u16 {
    16
}
fn default_interrupt_interval() -> u8 {
    4
}

fn ser_hex_u16<S: Serializer>(v: &u16, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#06x}"))
}

fn de_hex_u16<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    struct HexU16;
    impl Visitor<'_> for HexU16 {
        type Value = u16;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a 16-bit id as a \"0x....\" string or an integer")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u16, E> {
            u16::try_from(v).map_err(|_| E::custom(format!("id {v} does not fit in 16 bits")))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u16, E> {
            u16::try_from(v).map_err(|_| E::custom(format!("id {v} does not fit in 16 bits")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u16, E> {
            let digits = v
                .strip_prefix("0x")
                .or_else(|| v.strip_prefix("0X"))
                .ok_or_else(|| E::custom(format!("id {v:?} must start with 0x")))?;
            u16::from_str_radix(digits, 16)
                .map_err(|_| E::custom(format!("id {v:?} is not a 16-bit hex number")))
        }
    }
    d.deserialize_any(HexU16)
}

impl UsbConfig {
    /// The endpoint packet sizes a personality allocates with.
    pub fn endpoint_sizes(&self) -> EndpointSizes {
        EndpointSizes {
            bulk_max_packet: self.bulk_max_packet,
            interrupt_max_packet: self.interrupt_max_packet,
            interrupt_interval: self.interrupt_interval,
        }
    }
}

/// Why a profile could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("{path}: cannot read profile: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The text is not valid JSON or does not match the schema.
    #[error("{origin}:{line}:{column}: {message}")]
    Parse {
        /// The file name (or other origin) given to the parser.
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, as serde_json put it, without its position suffix.
        message: String,
    },
    /// The profile parsed but a value is out of range.
    #[error("{origin}:{line}:{column}: invalid {field}: {message}")]
    Invalid {
        /// The file name (or other origin).
        origin: String,
        /// 1-based line of the field's first occurrence (1 if not found).
        line: usize,
        /// 1-based column of the field's first occurrence (1 if not found).
        column: usize,
        /// Dotted path of the field, e.g. `timing.band_lines`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// A value out of range, before it is placed in a file ([`ProfileError::Invalid`] adds the
/// position).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct Violation {
    /// Dotted path of the field, e.g. `timing.band_lines`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl Profile {
    /// Parses and validates a profile. `origin` names the text in errors (usually its path).
    pub fn from_json_str(text: &str, origin: &str) -> Result<Profile, ProfileError> {
        let profile: Profile = serde_json::from_str(text).map_err(|e| {
            let full = e.to_string();
            let suffix = format!(" at line {} column {}", e.line(), e.column());
            let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
            ProfileError::Parse {
                origin: origin.to_string(),
                line: e.line(),
                column: e.column(),
                message,
            }
        })?;
        if let Err(Violation { field, message }) = profile.check() {
            let leaf = field.rsplit('.').next().unwrap_or(&field);
            let (line, column) = locate_key(text, leaf).unwrap_or((1, 1));
            return Err(ProfileError::Invalid {
                origin: origin.to_string(),
                line,
                column,
                field,
                message,
            });
        }
        Ok(profile)
    }

    /// Reads, parses and validates the profile at `path`.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Profile::from_json_str(&text, &path.display().to_string())
    }

    /// The built-in profile for tests: `fixtures/profiles/fast-flatbed.json`, compiled in.
    ///
    /// A 256 x 256 px glass at 100 dpi optical, 2 ms warm-up, 50 us per line, 16-line bands,
    /// 500 us motor stop, no jitter, no feeder.
    pub fn builtin_fast() -> Profile {
        Profile::from_json_str(BUILTIN_FAST_JSON, "fixtures/profiles/fast-flatbed.json")
            .expect("the built-in profile is valid")
    }

    /// An idle scan engine with this profile's optics, timing and faults.
    pub fn engine(&self) -> ScanEngine {
        ScanEngine::new(&self.optics, &self.timing, &self.faults)
    }

    /// Checks value ranges that the schema alone cannot express.
    ///
    /// [`Profile::from_json_str`] turns the [`Violation`] into [`ProfileError::Invalid`] with a
    /// position.
    pub fn validate(&self) -> Result<(), Violation> {
        self.check()
    }

    fn check(&self) -> Result<(), Violation> {
        fn bad(field: &str, message: String) -> Result<(), Violation> {
            Err(Violation {
                field: field.to_string(),
                message,
            })
        }
        let usb = &self.usb;
        let max_bulk = usb.speed.max_bulk_packet();
        let b = usb.bulk_max_packet;
        if !b.is_power_of_two() || b < 8 || b > max_bulk {
            return bad(
                "usb.bulk_max_packet",
                format!(
                    "{b} is not a power of two in 8..={max_bulk} (the limit at {:?} speed)",
                    usb.speed
                ),
            );
        }
        let (max_int, max_interval) = match usb.speed {
            Speed::Full => (64, 255),
            _ => (1024, 16),
        };
        // Events are 8 bytes and must fit one interrupt packet.
        if usb.interrupt_max_packet < 8 || usb.interrupt_max_packet > max_int {
            return bad(
                "usb.interrupt_max_packet",
                format!("{} is not in 8..={max_int}", usb.interrupt_max_packet),
            );
        }
        if usb.interrupt_interval == 0 || usb.interrupt_interval > max_interval {
            return bad(
                "usb.interrupt_interval",
                format!("{} is not in 1..={max_interval}", usb.interrupt_interval),
            );
        }
        let o = &self.optics;
        if o.optical_dpi == 0 {
            return bad("optics.optical_dpi", "must be non-zero".into());
        }
        if o.resolutions.is_empty() || o.resolutions.contains(&0) {
            return bad(
                "optics.resolutions",
                "must be non-empty and non-zero".into(),
            );
        }
        // A 2^20-pixel side is over 40 m at 600 dpi; the cap keeps every size product in range.
        const MAX_SIDE_PX: u32 = 1 << 20;
        if o.max_width_px == 0 || o.max_width_px > MAX_SIDE_PX {
            return bad(
                "optics.max_width_px",
                format!("{} is not in 1..={MAX_SIDE_PX}", o.max_width_px),
            );
        }
        if o.max_height_px == 0 || o.max_height_px > MAX_SIDE_PX {
            return bad(
                "optics.max_height_px",
                format!("{} is not in 1..={MAX_SIDE_PX}", o.max_height_px),
            );
        }
        if o.modes.is_empty() {
            return bad("optics.modes", "must list at least one mode".into());
        }
        if !o.flatbed && o.adf.is_none() {
            return bad(
                "optics.flatbed",
                "a device without a flatbed needs an adf".into(),
            );
        }
        if let Some(adf) = &o.adf {
            if adf.capacity == 0 {
                return bad("optics.adf.capacity", "must be non-zero".into());
            }
            if adf.loaded_sheets > adf.capacity {
                return bad(
                    "optics.adf.loaded_sheets",
                    format!(
                        "{} exceeds the capacity {}",
                        adf.loaded_sheets, adf.capacity
                    ),
                );
            }
        }
        let t = &self.timing;
        if t.line_period_us == 0 {
            return bad("timing.line_period_us", "must be non-zero".into());
        }
        if t.band_lines == 0 {
            return bad("timing.band_lines", "must be non-zero".into());
        }
        if t.buffer_bands == 0 {
            return bad("timing.buffer_bands", "must be non-zero".into());
        }
        if let PersonalityConfig::EscI(esci) = &self.personality {
            if esci.model.is_empty()
                || esci.model.len() > 16
                || !esci
                    .model
                    .bytes()
                    .all(|b| b.is_ascii_graphic() || b == b' ')
            {
                return bad(
                    "personality.model",
                    format!("{:?} is not 1 to 16 printable ASCII characters", esci.model),
                );
            }
            if let Some(mode) = o
                .modes
                .iter()
                .find(|m| !matches!(m, ScanMode::Lineart | ScanMode::Gray8 | ScanMode::Color24))
            {
                return bad(
                    "optics.modes",
                    format!("ESC/I devices scan lineart, gray8 and color24, not {mode:?}"),
                );
            }
            if o.max_height_px < o.max_width_px {
                return bad(
                    "optics.max_height_px",
                    "an ESC/I flatbed must be at least as long as it is wide (hosts treat a \
                     wider area as a firmware quirk)"
                        .into(),
                );
            }
            if o.adf.is_some() || !o.flatbed {
                return bad(
                    "optics.adf",
                    "the ESC/I personality emulates a flatbed without option units".into(),
                );
            }
            if o.resolutions.iter().any(|&r| r > o.optical_dpi) {
                return bad(
                    "optics.resolutions",
                    "ESC/I resolutions must not exceed the optical resolution".into(),
                );
            }
        }
        Ok(())
    }
}

/// 1-based line and column of the first `"key"` in `text`.
fn locate_key(text: &str, key: &str) -> Option<(usize, usize)> {
    let at = text.find(&format!("\"{key}\""))?;
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Some((line, column))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_fast_parses() {
        let p = Profile::builtin_fast();
        assert_eq!(p.name, "fast-flatbed");
        assert_eq!(p.timing.band_lines, 16);
        assert!(p.optics.adf.is_none());
    }

    #[test]
    fn unknown_field_names_position() {
        let text = "{\n  \"name\": \"x\",\n  \"foo\": 1\n}";
        let err = Profile::from_json_str(text, "x.json")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("x.json:3:"), "{err}");
        assert!(err.contains("unknown field `foo`"), "{err}");
        assert!(!err.contains(" at line "), "{err}");
    }

    #[test]
    fn hex_and_integer_ids() {
        let base: serde_json::Value = serde_json::from_str(BUILTIN_FAST_JSON).unwrap();
        let mut v = base.clone();
        v["usb"]["vid"] = serde_json::json!(4660);
        v["usb"]["pid"] = serde_json::json!("0xBEEF");
        let p = Profile::from_json_str(&v.to_string(), "t").unwrap();
        assert_eq!((p.usb.vid, p.usb.pid), (0x1234, 0xbeef));
        v["usb"]["vid"] = serde_json::json!("1234");
        assert!(Profile::from_json_str(&v.to_string(), "t").is_err());
        v["usb"]["vid"] = serde_json::json!(70000);
        assert!(Profile::from_json_str(&v.to_string(), "t").is_err());
    }

    #[test]
    fn validation_points_at_field() {
        let text = BUILTIN_FAST_JSON.replace("\"band_lines\": 16", "\"band_lines\": 0");
        let err = Profile::from_json_str(&text, "f.json").unwrap_err();
        let (line, _) = locate_key(&text, "band_lines").unwrap();
        assert!(
            err.to_string().starts_with(&format!("f.json:{line}:")),
            "{err}"
        );
        assert!(
            err.to_string().contains("invalid timing.band_lines"),
            "{err}"
        );

        let text =
            BUILTIN_FAST_JSON.replace("\"bulk_max_packet\": 512", "\"bulk_max_packet\": 1024");
        let err = Profile::from_json_str(&text, "f.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("usb.bulk_max_packet"), "{err}");
        let text =
            BUILTIN_FAST_JSON.replace("\"bulk_max_packet\": 512", "\"bulk_max_packet\": 100");
        assert!(Profile::from_json_str(&text, "f.json").is_err());
    }

    #[test]
    fn serializes_ids_as_hex() {
        let p = Profile::builtin_fast();
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.contains("\"vid\":\"0x5ca1\""), "{text}");
        assert_eq!(Profile::from_json_str(&text, "t").unwrap(), p);
    }
}
