//! Progress on long work: with stderr on a terminal (a pseudo-terminal from util-linux's
//! `script`), `scanconform run` with a slow `exec:` driver draws a bar on stderr and `record`
//! a spinner; stdout is byte for byte what the same command prints with no terminal, with
//! `--jobs 1` or `--jobs 2` (results in job order); with stderr not a terminal nothing is drawn.

use std::path::{Path, PathBuf};
use std::process::Command;

/// An exec: driver slow enough (a shell that sleeps first) for the bar to show.
const SLOW_DRIVER: &str =
    "exec:sh -c 'sleep 0.3; exec python3 conformance/examples/reference_driver.py'";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "scanconform-progress-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tools_present() -> bool {
    let ok = |c: &str| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ok("script") && ok("python3") {
        return true;
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "script (util-linux) or python3 missing"
    );
    println!("skipped: script (util-linux) or python3 is not installed");
    false
}

/// `scanconform ARGS` with stderr on a pseudo-terminal and stdout into `out`: what the
/// terminal showed.
fn on_a_terminal(args: &[&str], out: &Path) -> String {
    let mut words = vec![env!("CARGO_BIN_EXE_scanconform").to_string()];
    words.extend(args.iter().map(|a| a.to_string()));
    let cmd = format!(
        "{} > {}",
        shell_words::join(&words),
        shell_words::quote(&out.display().to_string())
    );
    let o = Command::new("script")
        .current_dir(root())
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("script runs");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `scanconform ARGS` with no terminal: stdout and stderr.
fn plain(args: &[&str]) -> (Vec<u8>, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_scanconform"))
        .current_dir(root())
        .args(args)
        .output()
        .expect("scanconform runs");
    (o.stdout, String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn a_slow_run_draws_a_bar_on_a_terminal_and_leaves_stdout_alone() {
    if !tools_present() {
        return;
    }
    let d = temp_dir("run");
    let args = [
        "run",
        "--driver",
        SLOW_DRIVER,
        "--service",
        "xp",
        "--filter",
        "callback/*",
    ];
    let (want, err) = plain(&[&args[..], &["--jobs", "1"]].concat());
    assert!(String::from_utf8_lossy(&want).contains("callback/"));
    assert_eq!(err, "", "nothing on stderr without a terminal");
    for jobs in ["1", "2"] {
        let out = d.join(format!("stdout-{jobs}"));
        let tty = on_a_terminal(&[&args[..], &["--jobs", jobs]].concat(), &out);
        assert!(
            tty.contains(" scenario runs [") && tty.contains("\u{1b}[2K"),
            "--jobs {jobs}: no bar on the terminal: {tty:?}"
        );
        assert!(
            !tty.contains("scenario   "),
            "the table went to the terminal"
        );
        assert_eq!(
            String::from_utf8_lossy(&std::fs::read(&out).unwrap()),
            String::from_utf8_lossy(&want),
            "--jobs {jobs}: stdout changed"
        );
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_slow_record_shows_a_spinner_on_a_terminal() {
    if !tools_present() {
        return;
    }
    let d = temp_dir("record");
    let rec = d.join("rec");
    let out = d.join("stdout");
    let tty = on_a_terminal(
        &[
            "record",
            "--driver",
            "exec:sh -c 'sleep 2.5; exec python3 conformance/examples/reference_driver.py'",
            "--scenario",
            "fixtures/recordings/scenarios/replay/complete-gray8.json",
            "--out",
            rec.to_str().unwrap(),
        ],
        &out,
    );
    assert!(
        tty.contains("recording replay/complete-gray8 [xp] with exec:"),
        "no spinner: {tty:?}"
    );
    let stdout = std::fs::read_to_string(&out).unwrap();
    assert!(
        stdout.starts_with("recorded replay/complete-gray8") && stdout.lines().count() == 1,
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&d);
}
