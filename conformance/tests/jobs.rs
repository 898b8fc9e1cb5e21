//! `scanconform run --jobs N`: runs in parallel give the same output, byte for byte, as one at a
//! time: stdout (table and JSON), the `--traces` folder, JUnit, the HTML report and the pcap
//! captures, for built-in drivers and for an `exec:` driver (one process per run).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scanconform-jobs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every file under `dir`, by its path inside `dir`, with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Runs `scanconform run ARGS --jobs N` with every output into a folder of its own; returns
/// stdout and every file written.
fn run_with_jobs(name: &str, args: &[&str], jobs: u32) -> (Vec<u8>, BTreeMap<PathBuf, Vec<u8>>) {
    let out = temp_dir(&format!("{name}-{jobs}"));
    let o = Command::new(env!("CARGO_BIN_EXE_scanconform"))
        .current_dir(root())
        // The report's header says when the runs were made: the same instant for both.
        .env("SOURCE_DATE_EPOCH", "1764806400")
        .arg("run")
        .args(args)
        .args(["--jobs", &jobs.to_string()])
        .arg("--traces")
        .arg(out.join("traces"))
        .arg("--junit")
        .arg(out.join("junit.xml"))
        .arg("--report")
        .arg(out.join("report.html"))
        .arg("--pcap")
        .arg(out.join("pcap"))
        .output()
        .expect("scanconform runs");
    assert!(
        o.status.code() == Some(0) || o.status.code() == Some(1),
        "{name} --jobs {jobs}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let written = files(&out);
    let _ = std::fs::remove_dir_all(&out);
    (o.stdout, written)
}

fn assert_same_output(name: &str, args: &[&str]) {
    let (stdout1, files1) = run_with_jobs(name, args, 1);
    let (stdout2, files2) = run_with_jobs(name, args, 2);
    assert!(
        files1.keys().any(|p| p.starts_with("traces"))
            && files1.keys().any(|p| p.starts_with("pcap"))
            && files1.contains_key(Path::new("junit.xml"))
            && files1.contains_key(Path::new("report.html")),
        "{name}: an output is missing: {:?}",
        files1.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        String::from_utf8_lossy(&stdout1),
        String::from_utf8_lossy(&stdout2),
        "{name}: stdout differs between --jobs 1 and --jobs 2"
    );
    assert_eq!(
        files1.keys().collect::<Vec<_>>(),
        files2.keys().collect::<Vec<_>>(),
        "{name}: not the same files"
    );
    for (path, bytes) in &files1 {
        assert!(
            bytes == &files2[path],
            "{name}: {} differs between --jobs 1 and --jobs 2",
            path.display()
        );
    }
}

#[test]
fn the_whole_catalog_gives_the_same_output_with_two_jobs() {
    assert_same_output("reference", &["--driver", "reference"]);
}

#[test]
fn json_output_and_a_failing_mutant_are_the_same_with_two_jobs() {
    assert_same_output(
        "mutant-json",
        &["--driver", "mutant-no-status-poll", "--format", "json"],
    );
}

#[test]
fn an_exec_driver_gives_the_same_output_with_two_jobs() {
    assert_same_output(
        "exec",
        &[
            "--driver",
            "exec:python3 -S conformance/examples/readahead_driver.py",
            "--filter",
            "cancel-io/*",
        ],
    );
}
