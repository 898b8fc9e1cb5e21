//! Progress on stderr for work that takes a while: `run` (a bar over the scenario runs; it
//! matters for `exec:` drivers, real-time transports and SANE backends) and `record` (a
//! spinner). Nothing is drawn for work that ends within [`SHOW_AFTER`], nothing ever when
//! stderr is not a terminal, and stdout is never touched: a table or JSON is byte for byte the
//! same with or without a bar.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Work that ends sooner draws nothing.
pub const SHOW_AFTER: Duration = Duration::from_secs(2);

/// A bar over `runs` scenario runs, hidden until [`SHOW_AFTER`] (and for good unless stderr
/// is a terminal, or when `quiet`).
pub fn runs_bar(runs: u64, quiet: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(runs), ProgressDrawTarget::hidden());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {pos}/{len} scenario runs [{elapsed}] {wide_bar} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    if !quiet {
        show_later(&bar);
    }
    bar
}

/// A spinner saying `what`, hidden until [`SHOW_AFTER`] (for good unless stderr is a
/// terminal).
pub fn spinner(what: String) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(what);
    show_later(&bar);
    bar
}

/// Draws `bar` on stderr from [`SHOW_AFTER`] on, if stderr is a terminal and the bar is not
/// finished by then.
fn show_later(bar: &ProgressBar) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let weak = bar.downgrade();
    std::thread::spawn(move || {
        std::thread::sleep(SHOW_AFTER);
        if let Some(bar) = weak.upgrade() {
            if !bar.is_finished() {
                bar.set_draw_target(ProgressDrawTarget::stderr());
                bar.enable_steady_tick(Duration::from_millis(120));
            }
        }
    });
}
