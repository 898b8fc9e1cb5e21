//! SIGINT and SIGTERM during `scanconform run` and `scanconform record`, sent by PID (and, as
//! a terminal's Ctrl-C does, to the whole process group): the runs under way are finished, no
//! further run starts, every output of the finished runs is written and whole (table rows,
//! JUnit with the rest skipped as not run, the HTML report, a trace and verdict per finished
//! run, one complete pcap per finished run, never an empty one), one line on stderr says what
//! was written, and the exit status is 130 (SIGINT) or 143 (SIGTERM).
//!
//! The driver is the Python port of the reference driver, started through a shell that waits
//! a little first, so the catalog takes long enough to be interrupted mid-way; waits are
//! bounded only to fail instead of hanging.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An exec: driver that takes a while per run: a shell that sleeps, then the Python reference.
const SLOW_DRIVER: &str =
    "exec:sh -c 'sleep 0.3; exec python3 conformance/examples/reference_driver.py'";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scanconform-signals-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn python_present() -> bool {
    Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `scanconform ARGS` in a process group of its own, stdout piped, stderr to `err`.
fn start(args: &[&str], err: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_scanconform"))
        .current_dir(root())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(err).unwrap())
        .process_group(0)
        .spawn()
        .expect("scanconform starts")
}

/// `kill -SIG TARGET` (a PID, or `-PGID` for the group).
fn kill(sig: &str, target: &str) {
    let ok = Command::new("kill")
        .args([sig, "--", target])
        .status()
        .expect("kill runs");
    assert!(ok.success(), "kill {sig} {target}");
}

/// Waits (bounded) for `child` to exit; its exit code.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("scanconform did not exit within {limit:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                files(&p, ext, out);
            } else if p.to_string_lossy().ends_with(ext) {
                out.push(p);
            }
        }
    }
}

/// A usbmon pcap that is whole: the global header, then records none of which is cut short;
/// its record count.
fn whole_pcap(path: &Path) -> usize {
    let b = std::fs::read(path).unwrap();
    assert!(b.len() >= 24, "{}: {} bytes", path.display(), b.len());
    assert_eq!(
        &b[0..4],
        &0xa1b2_c3d4u32.to_le_bytes(),
        "{}",
        path.display()
    );
    let (mut at, mut n) = (24, 0);
    while at < b.len() {
        assert!(
            at + 16 <= b.len(),
            "{}: a record header is cut",
            path.display()
        );
        let incl = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
        at += 16 + incl;
        n += 1;
    }
    assert_eq!(
        at,
        b.len(),
        "{}: the last record is cut short",
        path.display()
    );
    n
}

/// Runs the catalog with every output, sends `sig` to `target` once the first row is out,
/// and checks what is left.
fn interrupted_run(name: &str, sig: &str, to_group: bool, status: i32) {
    if !python_present() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "python3 missing"
        );
        println!("skipped: python3 is not installed");
        return;
    }
    let d = temp_dir(name);
    let (junit, report, traces, pcap, err) = (
        d.join("junit.xml"),
        d.join("report.html"),
        d.join("traces"),
        d.join("pcap"),
        d.join("stderr"),
    );
    let mut child = start(
        &[
            "run",
            "--driver",
            SLOW_DRIVER,
            "--jobs",
            "2",
            "--junit",
            junit.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
            "--traces",
            traces.to_str().unwrap(),
            "--pcap",
            pcap.to_str().unwrap(),
        ],
        &err,
    );
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut stdout = String::new();
    // The header, then the first row: the run is under way.
    for _ in 0..2 {
        out.read_line(&mut stdout).unwrap();
    }
    let pid = child.id().to_string();
    let target = if to_group { format!("-{pid}") } else { pid };
    kill(sig, &target);
    out.read_to_string(&mut stdout).unwrap();
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), Some(status));
    let err = std::fs::read_to_string(&err).unwrap();

    // One line on stderr, naming every output.
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "stderr:\n{err}");
    let signal = if status == 130 { "SIGINT" } else { "SIGTERM" };
    assert!(
        lines[0].starts_with(&format!("scanconform: interrupted by {signal}: ")),
        "{err}"
    );
    for p in [&junit, &report, &traces, &pcap] {
        assert!(lines[0].contains(&p.display().to_string()), "{err}");
    }

    // The table holds the finished runs; the summary counts them and the ones not run.
    let rows = stdout
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("driver "))
        .filter(|l| l.contains(" pass ") || l.contains(" FAIL "))
        .count();
    assert!(
        !stdout.contains(" FAIL "),
        "a finished run failed:\n{stdout}"
    );
    assert!(rows >= 1, "{stdout}");
    assert!(
        stdout.contains(&format!("interrupted by {signal}: ")),
        "{stdout}"
    );

    // JUnit: every finished run passed, every other one is skipped as not run (or abandoned,
    // when its driver process was starting as the group's signal came: such a run is not
    // judged).
    let xml = std::fs::read_to_string(&junit).expect("JUnit written");
    let doc = roxmltree::Document::parse(&xml).expect("JUnit is XML");
    let cases: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    let not_run = cases
        .iter()
        .filter(|c| {
            c.children().any(|k| {
                let m = k.attribute("message").unwrap_or("");
                k.has_tag_name("skipped")
                    && (m == format!("not run: interrupted by {signal}")
                        || m == format!("abandoned: its driver process faulted after {signal}"))
            })
        })
        .count();
    assert_eq!(cases.len() - not_run, rows, "finished runs in JUnit");
    assert!(not_run > 0, "the signal came before the end of the catalog");

    // A trace and a verdict per finished run; a whole, non-empty pcap per finished run.
    let (mut t, mut v, mut p) = (Vec::new(), Vec::new(), Vec::new());
    files(&traces, ".jsonl", &mut t);
    files(&traces, ".verdict.json", &mut v);
    files(&pcap, ".pcap", &mut p);
    assert_eq!((t.len(), v.len(), p.len()), (rows, rows, rows));
    for f in &p {
        assert!(whole_pcap(f) > 4, "{}\n{stdout}", f.display());
    }
    let html = std::fs::read_to_string(&report).expect("report written");
    assert!(
        html.contains(&format!("{rows} runs")),
        "report counts the finished runs"
    );
    assert!(
        html.contains(&format!("interrupted by {signal}")),
        "the report says it was interrupted"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn sigint_by_pid_during_run_writes_every_output_of_the_finished_runs_and_exits_130() {
    interrupted_run("int", "-INT", false, 130);
}

#[test]
fn sigterm_to_the_process_group_during_run_exits_143_and_the_driver_is_not_hit() {
    // As Ctrl-C reaches a terminal's whole foreground group: the driver processes are in a
    // group of their own, so the run under way finishes with a pass, not a killed driver.
    interrupted_run("term", "-TERM", true, 143);
}

#[test]
fn sigint_during_record_finishes_the_recording_and_exits_130() {
    if !python_present() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "python3 missing"
        );
        println!("skipped: python3 is not installed");
        return;
    }
    let d = temp_dir("record");
    let out = d.join("rec");
    let err = d.join("stderr");
    let mut child = start(
        &[
            "record",
            "--driver",
            "exec:sh -c 'sleep 1; exec python3 conformance/examples/reference_driver.py'",
            "--scenario",
            "fixtures/recordings/scenarios/replay/complete-gray8.json",
            "--out",
            out.to_str().unwrap(),
        ],
        &err,
    );
    // The driver is still starting (it sleeps a second first).
    std::thread::sleep(Duration::from_millis(300));
    kill("-INT", &child.id().to_string());
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert_eq!(wait_exit(&mut child, Duration::from_secs(60)), Some(130));
    let err = std::fs::read_to_string(&err).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "scanconform: interrupted by SIGINT: the recording under way was finished; wrote "
        ) && err.contains(&out.display().to_string()),
        "{err}"
    );
    assert!(
        stdout.starts_with("recorded replay/complete-gray8"),
        "{stdout}"
    );
    let rec = scanemu::capture::recording::Recording::load(&out).expect("a whole recording");
    assert!(!rec.transactions.is_empty());
    let mut p = Vec::new();
    files(&out, ".pcap", &mut p);
    assert!(!p.is_empty(), "the recording has its capture");
    for f in &p {
        whole_pcap(f);
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn sigint_and_sigterm_during_a_sane_run_write_junit_and_exit_130_143() {
    if let Err(e) = scanconform::sane::target::resolve("test") {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "the SANE test backend is missing: {e}"
        );
        println!("skipped: {e}");
        return;
    }
    // SIGTERM too: the test backend's reader task resets SIGTERM to its default action.
    for (sig, name, status) in [("-INT", "SIGINT", 130), ("-TERM", "SIGTERM", 143)] {
        let d = temp_dir(&format!("sane{sig}"));
        let (junit, err) = (d.join("junit.xml"), d.join("stderr"));
        let mut child = start(
            &[
                "run",
                "--driver",
                "sane:test",
                "--junit",
                junit.to_str().unwrap(),
            ],
            &err,
        );
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut stdout = String::new();
        // The preamble, the header, then the first row.
        for _ in 0..3 {
            out.read_line(&mut stdout).unwrap();
        }
        kill(sig, &child.id().to_string());
        out.read_to_string(&mut stdout).unwrap();
        assert_eq!(
            wait_exit(&mut child, Duration::from_secs(60)),
            Some(status),
            "{stdout}"
        );
        let err = std::fs::read_to_string(&err).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("scanconform: interrupted by {name}: "))
                && err.contains("JUnit "),
            "{err}"
        );
        let xml = std::fs::read_to_string(&junit).expect("JUnit written");
        assert!(
            xml.contains(&format!("not run: interrupted by {name}")),
            "{xml}"
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
