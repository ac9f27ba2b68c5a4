//! The system-metrics sampler: a thread per run that takes a sample of the machine and the
//! process ([`crate::sysmetrics::Sampler`]) every interval and puts it in the run's buffer.

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::buffer::RunState;
use crate::model::now_us;

pub(super) fn spawn_sampler(
    shared: Arc<RunState>,
    every: Duration,
) -> (JoinHandle<()>, mpsc::Sender<()>) {
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("runql-sysmetrics".into())
        .spawn(move || {
            let mut sampler = crate::sysmetrics::Sampler::new();
            loop {
                match stop_rx.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {
                        let ts = now_us();
                        let samples = sampler.sample();
                        let mut b = shared.lock();
                        b.system
                            .extend(samples.into_iter().map(|(k, v)| (k, ts, v)));
                    }
                    _ => return,
                }
            }
        });
    match handle {
        Ok(h) => (h, stop_tx),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the system metrics sampler");
            (std::thread::spawn(|| {}), stop_tx)
        }
    }
}
