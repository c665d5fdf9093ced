//! Live progress of a transfer: bytes done (whole transfer and per file) and current speed.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Speed is measured over this window.
const WINDOW: Duration = Duration::from_secs(3);

pub struct Progress {
    done: AtomicU64,
    files: Vec<AtomicU64>,
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl Progress {
    /// `files[i]` is what file `i` already has (committed chunks).
    pub fn new(files: &[u64]) -> Progress {
        Progress {
            done: AtomicU64::new(files.iter().sum()),
            files: files.iter().map(|b| AtomicU64::new(*b)).collect(),
            samples: Mutex::new(VecDeque::new()),
        }
    }

    pub fn add(&self, file: usize, bytes: u64) {
        let total = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if let Some(f) = self.files.get(file) {
            f.fetch_add(bytes, Ordering::Relaxed);
        }
        let mut samples = self
            .samples
            .lock()
            .expect("progress lock is never poisoned");
        let now = Instant::now();
        samples.push_back((now, total));
        while samples.len() > 2
            && samples
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > WINDOW)
        {
            samples.pop_front();
        }
    }

    /// Takes back bytes of a chunk that failed midway and will be fetched again.
    pub fn undo(&self, file: usize, bytes: u64) {
        self.done.fetch_sub(bytes, Ordering::Relaxed);
        if let Some(f) = self.files.get(file) {
            f.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    pub fn file_done(&self, file: usize) -> Option<u64> {
        self.files.get(file).map(|f| f.load(Ordering::Relaxed))
    }

    /// Bytes per second over the last few seconds; 0 when nothing moved lately.
    pub fn speed(&self) -> u64 {
        let samples = self
            .samples
            .lock()
            .expect("progress lock is never poisoned");
        let (Some((t0, b0)), Some((t1, b1))) = (samples.front(), samples.back()) else {
            return 0;
        };
        if t1.elapsed() > WINDOW {
            return 0;
        }
        let span = t1.duration_since(*t0).as_secs_f64().max(0.5);
        // A later sample may hold less: bytes taken back (`undo`), or two adds that sampled
        // their totals in the other order.
        (b1.saturating_sub(*b0) as f64 / span) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A part that failed midway takes its bytes back: the rate is never negative (it
    /// overflowed, panicking the API's thread while it held the lock, and every later call).
    #[test]
    fn bytes_taken_back_leave_a_rate_of_at_least_zero() {
        let progress = Progress::new(&[0]);
        progress.add(0, 1000);
        progress.undo(0, 1000);
        progress.add(0, 10);
        assert_eq!(progress.speed(), 0);
        assert_eq!(progress.file_done(0), Some(10));
    }
}
