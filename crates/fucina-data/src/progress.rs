//! One progress-bar style for every long data pass, so the CLI looks uniform.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte-counting bar on stderr; hidden (but still safe to update) when
/// `enabled` is false, so callers never branch on it.
pub(crate) fn bytes_bar(total: u64, enabled: bool, message: &'static str) -> ProgressBar {
    let target = if enabled {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>12} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} ({eta})",
    ) {
        bar.set_style(style);
    }
    bar.set_message(message);
    bar
}
