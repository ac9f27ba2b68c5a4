//! A spinner on standard error for anything that takes more than a second — shown only on a
//! terminal, only after that second, and gone without a trace when the work ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shown while alive; dropped when the work is done.
pub struct Spinner {
    bar: ProgressBar,
    done: Arc<AtomicBool>,
}

/// Waits this long before showing anything.
const DELAY: Duration = Duration::from_secs(1);

impl Spinner {
    pub fn start(message: impl Into<String>) -> Spinner {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message.into());
        let done = Arc::new(AtomicBool::new(false));
        let (b, d) = (bar.clone(), done.clone());
        std::thread::spawn(move || {
            std::thread::sleep(DELAY);
            if !d.load(Ordering::Relaxed) {
                // Hidden by indicatif itself when standard error is not a terminal.
                b.set_draw_target(ProgressDrawTarget::stderr());
                b.enable_steady_tick(Duration::from_millis(100));
            }
        });
        Spinner { bar, done }
    }

    /// Says what is being done now.
    pub fn set_message(&self, message: impl Into<String>) {
        self.bar.set_message(message.into());
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        self.bar.finish_and_clear();
    }
}
