//! A SANE trace as JSON lines, both ways: what `--traces` writes ([`SaneTrace::to_json_lines`])
//! and what `scanconform report` reads back ([`SaneTrace::from_json_lines`]).
//!
//! Every line is `{"at_us", "actor", "event", "fields"}`: a call (actor `app`, the event is the
//! call's name, fields its arguments, `seq` and `thread`), its return (actor `driver`, event
//! `<call>-return`, fields `seq` and the outcome), a device note (actor `device`, the note's
//! name, `value` and `detail`) or a measured cancel latency (actor `runner`, `cancel-latency`).
//! Frames checked against the device's pattern are not written: the verdict beside the trace
//! already holds what they decided.

use serde_json::json;

use super::{frame_name, Call, CancelLatency, DeviceEvent, Op, Outcome, SaneTrace, Thread};
use crate::sane::ffi::{Parameters, Status};

/// A line of a SANE trace that cannot be read back; `Display` is `line N: what`.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct TraceParseError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub what: LineError,
}

/// What is wrong with one line of a SANE trace.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// Not JSON.
    #[error("column {}: {source}", .source.column())]
    Json {
        /// Why.
        source: serde_json::Error,
    },
    /// A field is missing or of another type.
    #[error("no {kind} \"{key}\"")]
    Missing {
        /// The field.
        key: &'static str,
        /// What it should hold (`number`, `text`, `flag`, ...).
        kind: &'static str,
    },
    /// A name the trace format does not have (a thread, a call, a status, a frame format, a
    /// device note).
    #[error("unknown {what} {name:?}")]
    Unknown {
        /// What kind of name.
        what: &'static str,
        /// The name found.
        name: String,
    },
    /// Calls out of order.
    #[error("call {seq} follows {calls} calls: calls must come in order")]
    OutOfOrder {
        /// The call's seq.
        seq: usize,
        /// The calls read so far.
        calls: usize,
    },
    /// A return of a call that was not made, or of another call.
    #[error("{event} is not the return of a call made before it")]
    StrayReturn {
        /// The event.
        event: String,
    },
    /// An event of another trace model (a WIA trace, or an unknown actor).
    #[error("{event} by {actor} is not a SANE trace event")]
    NotSane {
        /// The event.
        event: String,
        /// Its actor.
        actor: String,
    },
}

/// The call event's fields of `op` (besides `seq` and `thread`).
fn args(op: &Op) -> serde_json::Value {
    match op {
        Op::Open(d) => json!({ "device": d }),
        Op::SetOption(n, v) => json!({ "name": n, "value": v }),
        Op::Read(max) => json!({ "max": max }),
        Op::SetIoMode(nb) => json!({ "non_blocking": nb }),
        Op::WaitReadable(fd) | Op::FdCheck(fd) => json!({ "fd": fd }),
        _ => json!({}),
    }
}

impl SaneTrace {
    /// JSON lines: a call event (actor `app`) and a return event (actor `driver`) per call,
    /// the device's notes (actor `device`) and a `cancel-latency` event (actor `runner`) per
    /// entry of `latency` (the run's `analysis::cancel_latencies`), ordered by
    /// time (call before return on ties).
    pub fn to_json_lines(&self, latency: &[CancelLatency]) -> String {
        let mut events: Vec<(u64, usize, u8, serde_json::Value)> = Vec::new();
        for c in &self.calls {
            let mut call = args(&c.op);
            call["seq"] = json!(c.seq);
            call["thread"] = json!(c.thread.name());
            events.push((
                c.call_us,
                c.seq,
                0,
                json!({"at_us": c.call_us, "actor": "app", "event": c.op.name(), "fields": call}),
            ));
            let o = &c.outcome;
            let mut ret = json!({ "seq": c.seq });
            if let Some(st) = o.status {
                ret["status"] = json!(st.name());
            }
            if let Some(len) = o.len {
                ret["len"] = json!(len);
            }
            if let Some(fd) = o.fd {
                ret["fd"] = json!(fd);
            }
            if let Some(f) = o.flag {
                ret["flag"] = json!(f);
            }
            if let Some(p) = &o.params {
                ret["params"] = json!({
                    "format": frame_name(p.format),
                    "last_frame": p.last_frame,
                    "bytes_per_line": p.bytes_per_line,
                    "pixels_per_line": p.pixels_per_line,
                    "lines": p.lines,
                    "depth": p.depth,
                });
            }
            if let Some(n) = &o.note {
                ret["note"] = json!(n);
            }
            events.push((
                c.ret_us,
                c.seq,
                1,
                json!({"at_us": c.ret_us, "actor": "driver", "event": format!("{}-return", c.op.name()), "fields": ret}),
            ));
        }
        for (i, d) in self.device.iter().enumerate() {
            events.push((
                d.at_us,
                i,
                2,
                json!({"at_us": d.at_us, "actor": "device", "event": d.kind.name(), "fields": {"value": d.value, "detail": d.detail}}),
            ));
        }
        for l in latency {
            let at = self.calls.get(l.cancel_seq).map_or(0, |c| c.call_us);
            events.push((
                at,
                l.cancel_seq,
                3,
                json!({"at_us": at, "actor": "runner", "event": "cancel-latency", "fields": {"seq": l.cancel_seq, "blocks": l.blocks, "ended_by": l.ended_by, "after_us": l.after_us}}),
            ));
        }
        events.sort_by_key(|e| (e.0, e.2, e.1));
        let mut out = String::new();
        for (_, _, _, v) in events {
            out.push_str(&v.to_string());
            out.push('\n');
        }
        out
    }

    /// Reads back what [`SaneTrace::to_json_lines`] wrote: the calls with their outcomes, the
    /// device's notes and the cancel latencies. Blank lines are skipped; anything else that is
    /// not such an event is an error naming its line.
    pub fn from_json_lines(text: &str) -> Result<(SaneTrace, Vec<CancelLatency>), TraceParseError> {
        let mut trace = SaneTrace::default();
        let mut latency = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let fail = |what: LineError| TraceParseError { line: i + 1, what };
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|source| fail(LineError::Json { source }))?;
            let at_us = v["at_us"].as_u64().ok_or(LineError::Missing {
                key: "at_us",
                kind: "number",
            });
            let event = v["event"].as_str().ok_or(LineError::Missing {
                key: "event",
                kind: "text",
            });
            let (at_us, event) = (at_us.map_err(fail)?, event.map_err(fail)?);
            let fields = &v["fields"];
            let mut read = || -> Result<(), LineError> {
                match v["actor"].as_str() {
                    Some("app") => {
                        let seq = number(fields, "seq")?;
                        if seq != trace.calls.len() {
                            return Err(LineError::OutOfOrder {
                                seq,
                                calls: trace.calls.len(),
                            });
                        }
                        trace.calls.push(Call {
                            seq,
                            thread: thread(fields)?,
                            op: op(event, fields)?,
                            call_us: at_us,
                            ret_us: at_us,
                            outcome: Outcome::default(),
                        });
                    }
                    Some("driver") => {
                        let seq = number(fields, "seq")?;
                        let call = trace
                            .calls
                            .get_mut(seq)
                            .filter(|c| event == format!("{}-return", c.op.name()))
                            .ok_or_else(|| LineError::StrayReturn {
                                event: event.to_string(),
                            })?;
                        call.ret_us = at_us;
                        call.outcome = outcome(fields)?;
                    }
                    Some("device") => trace.device.push(DeviceEvent {
                        at_us,
                        kind: event.parse().map_err(|_| LineError::Unknown {
                            what: "device note",
                            name: event.to_string(),
                        })?,
                        value: fields["value"].as_u64().unwrap_or(0),
                        detail: fields["detail"].as_str().unwrap_or("").to_string(),
                    }),
                    Some("runner") if event == "cancel-latency" => latency.push(CancelLatency {
                        cancel_seq: number(fields, "seq")?,
                        blocks: u32::try_from(number(fields, "blocks")?).map_err(|_| {
                            LineError::Missing {
                                key: "blocks",
                                kind: "32-bit number",
                            }
                        })?,
                        ended_by: fields["ended_by"].as_str().unwrap_or("").to_string(),
                        after_us: fields["after_us"].as_u64(),
                    }),
                    other => {
                        return Err(LineError::NotSane {
                            event: event.to_string(),
                            actor: other.unwrap_or("no actor").to_string(),
                        })
                    }
                }
                Ok(())
            };
            read().map_err(fail)?;
        }
        Ok((trace, latency))
    }
}

fn number(fields: &serde_json::Value, key: &'static str) -> Result<usize, LineError> {
    fields[key]
        .as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or(LineError::Missing {
            key,
            kind: "number",
        })
}

fn int(fields: &serde_json::Value, key: &'static str) -> Result<i32, LineError> {
    fields[key]
        .as_i64()
        .and_then(|n| i32::try_from(n).ok())
        .ok_or(LineError::Missing {
            key,
            kind: "integer",
        })
}

fn text(fields: &serde_json::Value, key: &'static str) -> Result<String, LineError> {
    fields[key]
        .as_str()
        .map(str::to_string)
        .ok_or(LineError::Missing { key, kind: "text" })
}

fn flag(fields: &serde_json::Value, key: &'static str) -> Result<bool, LineError> {
    fields[key]
        .as_bool()
        .ok_or(LineError::Missing { key, kind: "flag" })
}

fn unknown(what: &'static str, name: &str) -> LineError {
    LineError::Unknown {
        what,
        name: name.to_string(),
    }
}

fn thread(fields: &serde_json::Value) -> Result<Thread, LineError> {
    match text(fields, "thread")?.as_str() {
        "app" => Ok(Thread::App),
        "reader" => Ok(Thread::Reader),
        "canceller" => Ok(Thread::Canceller),
        other => Err(unknown("thread", other)),
    }
}

fn op(event: &str, f: &serde_json::Value) -> Result<Op, LineError> {
    Ok(match event {
        "init" => Op::Init,
        "open" => Op::Open(text(f, "device")?),
        "set-option" => Op::SetOption(text(f, "name")?, text(f, "value")?),
        "get-parameters" => Op::GetParameters,
        "start" => Op::Start,
        "read" => Op::Read(
            u32::try_from(number(f, "max")?).map_err(|_| LineError::Missing {
                key: "max",
                kind: "32-bit number",
            })?,
        ),
        "cancel" => Op::Cancel,
        "cancel-from-signal" => Op::SignalCancel,
        "set-io-mode" => Op::SetIoMode(flag(f, "non_blocking")?),
        "get-select-fd" => Op::GetSelectFd,
        "wait-readable" => Op::WaitReadable(int(f, "fd")?),
        "fd-check" => Op::FdCheck(int(f, "fd")?),
        "close" => Op::Close,
        "exit" => Op::Exit,
        other => return Err(unknown("SANE call", other)),
    })
}

fn outcome(f: &serde_json::Value) -> Result<Outcome, LineError> {
    let status = match f["status"].as_str() {
        None => None,
        Some(name) => Some(status(name)?),
    };
    let params = match f.get("params") {
        None => None,
        Some(p) => Some(Parameters {
            format: frame_format(&text(p, "format")?)?,
            last_frame: flag(p, "last_frame")?,
            bytes_per_line: int(p, "bytes_per_line")?,
            pixels_per_line: int(p, "pixels_per_line")?,
            lines: int(p, "lines")?,
            depth: int(p, "depth")?,
        }),
    };
    Ok(Outcome {
        status,
        len: f.get("len").map(|_| int(f, "len")).transpose()?,
        fd: f.get("fd").map(|_| int(f, "fd")).transpose()?,
        flag: f["flag"].as_bool(),
        params,
        note: f["note"].as_str().map(str::to_string),
    })
}

/// A status as [`Status::name`] writes it (`IO_ERROR`, `STATUS_42`).
fn status(name: &str) -> Result<Status, LineError> {
    if let Some(s) = Status::from_name(name) {
        return Ok(s);
    }
    name.strip_prefix("STATUS_")
        .and_then(|n| n.parse().ok())
        .map(Status)
        .ok_or_else(|| unknown("status", name))
}

/// A frame format as [`frame_name`] writes it.
fn frame_format(name: &str) -> Result<i32, LineError> {
    (0..5)
        .find(|f| frame_name(*f) == name)
        .or_else(|| name.parse().ok())
        .ok_or_else(|| unknown("frame format", name))
}

#[cfg(test)]
mod tests {
    use scanemu::personality::NoteKind;

    use super::*;

    fn sample() -> (SaneTrace, Vec<CancelLatency>) {
        let params = Parameters {
            format: 1,
            last_frame: true,
            bytes_per_line: 30,
            pixels_per_line: 10,
            lines: 4,
            depth: 8,
        };
        let call = |seq, thread, op, call_us, ret_us, outcome| Call {
            seq,
            thread,
            op,
            call_us,
            ret_us,
            outcome,
        };
        let trace = SaneTrace {
            calls: vec![
                call(
                    0,
                    Thread::App,
                    Op::Init,
                    1,
                    2,
                    Outcome {
                        status: Some(Status::GOOD),
                        ..Outcome::default()
                    },
                ),
                call(
                    1,
                    Thread::App,
                    Op::Open("libusb:001:002".into()),
                    3,
                    9,
                    Outcome {
                        status: Some(Status::GOOD),
                        ..Outcome::default()
                    },
                ),
                call(
                    2,
                    Thread::App,
                    Op::SetOption("mode".into(), "Color".into()),
                    10,
                    11,
                    Outcome {
                        status: Some(Status::GOOD),
                        note: Some("kept Color".into()),
                        ..Outcome::default()
                    },
                ),
                call(
                    3,
                    Thread::App,
                    Op::GetParameters,
                    12,
                    13,
                    Outcome {
                        status: Some(Status::GOOD),
                        params: Some(params),
                        ..Outcome::default()
                    },
                ),
                call(
                    4,
                    Thread::Reader,
                    Op::Read(65536),
                    14,
                    90,
                    Outcome {
                        status: Some(Status(42)),
                        len: Some(-7777),
                        ..Outcome::default()
                    },
                ),
                call(
                    5,
                    Thread::Canceller,
                    Op::SignalCancel,
                    60,
                    61,
                    Outcome::default(),
                ),
                call(
                    6,
                    Thread::App,
                    Op::SetIoMode(true),
                    91,
                    92,
                    Outcome {
                        status: Some(Status::UNSUPPORTED),
                        ..Outcome::default()
                    },
                ),
                call(
                    7,
                    Thread::App,
                    Op::GetSelectFd,
                    93,
                    94,
                    Outcome {
                        status: Some(Status::GOOD),
                        fd: Some(7),
                        ..Outcome::default()
                    },
                ),
                call(
                    8,
                    Thread::App,
                    Op::WaitReadable(7),
                    95,
                    96,
                    Outcome {
                        flag: Some(true),
                        ..Outcome::default()
                    },
                ),
                call(
                    9,
                    Thread::App,
                    Op::FdCheck(7),
                    97,
                    98,
                    Outcome {
                        flag: Some(false),
                        ..Outcome::default()
                    },
                ),
                call(10, Thread::App, Op::Exit, 99, 100, Outcome::default()),
            ],
            device: vec![DeviceEvent {
                at_us: 50,
                kind: NoteKind::BlockSent,
                value: 3,
                detail: String::new(),
            }],
            frames: Vec::new(),
        };
        let latency = vec![CancelLatency {
            cancel_seq: 5,
            blocks: 1,
            ended_by: "can".into(),
            after_us: Some(20),
        }];
        (trace, latency)
    }

    #[test]
    fn json_lines_read_back_to_the_same_trace() {
        let (trace, latency) = sample();
        let text = trace.to_json_lines(&latency);
        let (back, back_latency) = SaneTrace::from_json_lines(&text).unwrap();
        assert_eq!(back, trace);
        assert_eq!(back_latency, latency);
        assert_eq!(back.to_json_lines(&back_latency), text);
    }

    #[test]
    fn a_wia_trace_or_a_broken_line_is_an_error_naming_its_line() {
        let wia = r#"{"at_us":0,"actor":"app","event":"acquire","fields":{"n":1,"tymed":128,"buffer":65536}}"#;
        let e = SaneTrace::from_json_lines(wia).unwrap_err().to_string();
        assert!(e.starts_with("line 1: ") && e.contains("seq"), "{e}");
        let (trace, latency) = sample();
        let mut text = trace.to_json_lines(&latency);
        text.push_str("{\"at_us\": 5\n");
        let e = SaneTrace::from_json_lines(&text).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("line {}: ", text.lines().count())),
            "{e}"
        );
    }
}
