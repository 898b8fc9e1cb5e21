//! The driver's process: spawning it with three pipes, reading its stdout as bounded lines on a
//! thread, writing its stdin from another (so a driver that stops reading cannot block the
//! runner), collecting its stderr, and making it exit.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Duration as WallDuration;

use super::ExternalConfig;

/// What the stdout thread hands over.
pub(super) enum Incoming {
    Line(Vec<u8>),
    TooLong { limit: usize },
    Eof,
    ReadError(std::io::Error),
}

/// Reads `\n`-terminated lines of at most `limit` bytes; refuses a longer one as soon as it
/// passes the limit, without buffering it.
pub(super) fn read_lines(out: impl Read, limit: usize, tx: Sender<Incoming>) {
    let mut reader = BufReader::with_capacity(64 * 1024, out);
    loop {
        let mut line = Vec::new();
        loop {
            let buf = match reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = tx.send(Incoming::ReadError(e));
                    return;
                }
            };
            if buf.is_empty() {
                if !line.is_empty() {
                    let _ = tx.send(Incoming::Line(line));
                }
                let _ = tx.send(Incoming::Eof);
                return;
            }
            let (take, end) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (i, true),
                None => (buf.len(), false),
            };
            if line.len() + take > limit {
                let _ = tx.send(Incoming::TooLong { limit });
                return;
            }
            line.extend_from_slice(&buf[..take]);
            reader.consume(take + usize::from(end));
            if end {
                break;
            }
        }
        if tx.send(Incoming::Line(line)).is_err() {
            return;
        }
    }
}

/// Collects stderr lines (each cut to `line_bytes`, at most `max_lines` kept).
pub(super) fn collect_stderr(err: impl Read, max_lines: usize, line_bytes: usize) -> Vec<String> {
    let mut reader = BufReader::new(err);
    let mut lines = Vec::new();
    let mut dropped = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // Reads at most line_bytes + 1 bytes of the line, then skips the rest of it.
        let n = match (&mut reader)
            .take(line_bytes as u64 + 1)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let complete = buf.last() == Some(&b'\n');
        if !complete && n > line_bytes {
            let mut sink = Vec::new();
            loop {
                sink.clear();
                match (&mut reader).take(64 * 1024).read_until(b'\n', &mut sink) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if sink.last() == Some(&b'\n') => break,
                    Ok(_) => {}
                }
            }
        }
        let end = buf.len().min(line_bytes);
        let text = String::from_utf8_lossy(&buf[..end]);
        let text = text.trim_end_matches(['\n', '\r']).to_string();
        if lines.len() < max_lines {
            lines.push(text);
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        lines.push(format!("({dropped} more stderr lines not kept)"));
    }
    lines
}

pub(super) struct Process {
    pub(super) child: Child,
    /// Lines to write to the driver's stdin (a thread writes them, so a driver that stops
    /// reading cannot block the runner). Dropping it closes stdin.
    pub(super) stdin: Option<Sender<Vec<u8>>>,
    pub(super) stdout: Receiver<Incoming>,
}

impl Process {
    pub(super) fn spawn(
        argv: &[String],
        config: &ExternalConfig,
    ) -> std::io::Result<(Process, StderrLog)> {
        let mut cmd = Command::new(&argv[0]);
        // A process group of its own: Ctrl-C in the terminal reaches the runner, which finishes
        // the run under way, and not the driver in the middle of it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other("pipes of the child were not set up"));
        };
        let (line_tx, line_rx) = mpsc::channel();
        let limit = config.max_line_bytes;
        std::thread::spawn(move || read_lines(stdout, limit, line_tx));
        let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || write_lines(stdin, in_rx));
        let (max_lines, line_bytes) = (config.max_log_lines, config.max_log_line_bytes);
        let (log_tx, log_rx) = mpsc::channel();
        let handle = std::thread::spawn(move || {
            let _ = log_tx.send(collect_stderr(stderr, max_lines, line_bytes));
        });
        Ok((
            Process {
                child,
                stdin: Some(in_tx),
                stdout: line_rx,
            },
            StderrLog {
                lines: log_rx,
                _thread: handle,
            },
        ))
    }

    /// Kills the process if it still runs and reaps it.
    pub(super) fn kill(&mut self) -> Option<ExitStatus> {
        self.stdin = None;
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }

    /// Waits up to `grace` for the process to exit by itself.
    pub(super) fn wait_exit(&mut self, grace: WallDuration) -> Option<ExitStatus> {
        let start = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if start.elapsed() >= grace {
                return None;
            }
            std::thread::sleep(WallDuration::from_millis(1));
        }
    }
}

fn write_lines(mut stdin: ChildStdin, rx: Receiver<Vec<u8>>) {
    for line in rx {
        if stdin.write_all(&line).and_then(|()| stdin.flush()).is_err() {
            return;
        }
    }
}

/// The stderr collector of one process.
pub(super) struct StderrLog {
    pub(super) lines: Receiver<Vec<String>>,
    _thread: JoinHandle<()>,
}

pub(super) fn describe_exit(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("killed by signal {sig}");
        }
    }
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "exited".to_string(),
    }
}

/// True if `program` names an existing file, or a file in one of `PATH`'s directories.
pub(super) fn program_exists(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_refused_without_buffering_them() {
        let (tx, rx) = mpsc::channel();
        let mut input = b"{\"a\":1}\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 10_000));
        input.push(b'\n');
        read_lines(&input[..], 100, tx);
        assert!(matches!(rx.recv(), Ok(Incoming::Line(l)) if l == b"{\"a\":1}"));
        assert!(matches!(rx.recv(), Ok(Incoming::TooLong { limit: 100 })));
        assert!(rx.recv().is_err());
    }

    #[test]
    fn stderr_lines_are_cut_and_counted() {
        let mut input = Vec::new();
        input.extend(std::iter::repeat_n(b'y', 50));
        input.extend(b"\nshort\nthird\nfourth\n");
        let lines = collect_stderr(&input[..], 3, 10);
        assert_eq!(
            lines,
            vec![
                "yyyyyyyyyy",
                "short",
                "third",
                "(1 more stderr lines not kept)"
            ]
        );
    }
}
