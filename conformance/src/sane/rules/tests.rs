//! Hand-built traces for the SANE rules that no backend at hand fails: one passing and one
//! failing run each.

use super::check_all;
use crate::sane::ffi::{Parameters, Status};
use crate::sane::scenario::SaneScenario;
use crate::sane::trace::{Call, Op, Outcome, SaneTrace, Thread};
use crate::verdict::RuleStatus;

/// A script of calls, each 10 us long, one after the other.
struct Script {
    calls: Vec<Call>,
}

impl Script {
    fn new() -> Script {
        Script { calls: Vec::new() }
    }

    fn call(&mut self, op: Op, outcome: Outcome) -> &mut Script {
        let seq = self.calls.len();
        let at = seq as u64 * 10;
        self.calls.push(Call {
            seq,
            thread: Thread::App,
            op,
            call_us: at,
            ret_us: at + 5,
            outcome,
        });
        self
    }

    fn status(&mut self, op: Op, status: Status) -> &mut Script {
        self.call(
            op,
            Outcome {
                status: Some(status),
                ..Outcome::default()
            },
        )
    }

    fn void(&mut self, op: Op) -> &mut Script {
        self.call(op, Outcome::default())
    }

    /// get-parameters of a one-frame gray image.
    fn params(&mut self) -> &mut Script {
        self.call(
            Op::GetParameters,
            Outcome {
                status: Some(Status::GOOD),
                params: Some(Parameters {
                    format: 0,
                    last_frame: true,
                    bytes_per_line: 10,
                    pixels_per_line: 10,
                    lines: 2,
                    depth: 8,
                }),
                ..Outcome::default()
            },
        )
    }

    /// A read returning `status` with `len` bytes.
    fn read(&mut self, status: Status, len: i32) -> &mut Script {
        self.call(
            Op::Read(65536),
            Outcome {
                status: Some(status),
                len: Some(len),
                ..Outcome::default()
            },
        )
    }

    /// start, parameters, the whole frame, EOF.
    fn frame(&mut self) -> &mut Script {
        self.status(Op::Start, Status::GOOD)
            .params()
            .read(Status::GOOD, 20)
            .read(Status::EOF, 0)
    }

    fn status_of(&self, id: &str) -> RuleStatus {
        let trace = SaneTrace {
            calls: self.calls.clone(),
            device: Vec::new(),
            frames: Vec::new(),
        };
        let scenario: SaneScenario = serde_json::from_value(serde_json::json!({
            "kind": "sane",
            "description": "unit test",
            "rules": [id],
            "steps": [],
        }))
        .expect("a scenario");
        check_all(&trace, &scenario)
            .into_iter()
            .find(|r| r.id == id)
            .expect("the rule")
            .status
    }
}

fn failure(status: RuleStatus) -> String {
    match status {
        RuleStatus::Fail { message, .. } => message,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn next_image_starts_after_eof_without_cancel() {
    let mut s = Script::new();
    s.frame().frame().void(Op::Cancel);
    assert_eq!(s.status_of("SANE-NEXT-IMAGE"), RuleStatus::Pass);

    // The backend still thinks it is scanning.
    let mut s = Script::new();
    s.frame().status(Op::Start, Status::INVAL);
    let m = failure(s.status_of("SANE-NEXT-IMAGE"));
    assert!(
        m.contains("sane_start after the last frame's EOF, without sane_cancel, returned INVAL"),
        "{m}"
    );

    // It starts, but the image ends in an error.
    let mut s = Script::new();
    s.frame()
        .status(Op::Start, Status::GOOD)
        .params()
        .read(Status::IO_ERROR, 0);
    let m = failure(s.status_of("SANE-NEXT-IMAGE"));
    assert!(m.contains("ended with IO_ERROR instead of EOF"), "{m}");

    // With the final cancel in between, it is SANE-EOF-THEN-CANCEL's business.
    let mut s = Script::new();
    s.frame().void(Op::Cancel).frame();
    assert_eq!(s.status_of("SANE-NEXT-IMAGE"), RuleStatus::NotApplicable);
}

#[test]
fn reopen_after_close_scans_again() {
    let open = || Op::Open("0".into());
    let mut s = Script::new();
    s.frame()
        .void(Op::Close)
        .status(open(), Status::GOOD)
        .frame()
        .void(Op::Cancel);
    assert_eq!(s.status_of("SANE-REOPEN-AFTER-CLOSE"), RuleStatus::Pass);

    // The next session's sane_open fails (brother4 hung there).
    let mut s = Script::new();
    s.status(Op::Start, Status::GOOD)
        .read(Status::GOOD, 10)
        .void(Op::Cancel)
        .void(Op::Close)
        .status(open(), Status::IO_ERROR);
    let m = failure(s.status_of("SANE-REOPEN-AFTER-CLOSE"));
    assert!(
        m.contains("sane_open after sane_close returned IO_ERROR"),
        "{m}"
    );

    // It opens, but the first scan is refused.
    let mut s = Script::new();
    s.frame()
        .void(Op::Close)
        .status(open(), Status::GOOD)
        .status(Op::Start, Status::DEVICE_BUSY);
    let m = failure(s.status_of("SANE-REOPEN-AFTER-CLOSE"));
    assert!(
        m.contains("the first sane_start after sane_close and sane_open returned DEVICE_BUSY"),
        "{m}"
    );
}
