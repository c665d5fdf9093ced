//! The last hour of transfer rates: one sample a second of the bytes downloaded and uploaded
//! (from the byte counters) and the limits in force then, in a fixed ring. The dashboard draws
//! its chart from it (`GET /api/v1/throughput`, then the live stream). 3,600 samples of 56
//! bytes: about 200 KiB, whatever the agent does.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// How many samples are kept: an hour of one a second.
pub const CAPACITY: usize = 3600;

/// One second of traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Unix seconds at the end of the second measured.
    pub at: i64,
    /// Bytes per second received by downloads.
    pub download: u64,
    /// Bytes per second accepted from uploads.
    pub upload: u64,
    /// The limits in force (bytes per second), `None`: unlimited.
    pub download_limit: Option<u64>,
    pub upload_limit: Option<u64>,
}

/// The ring of samples and what the next one is measured from; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Throughput {
    inner: Arc<Mutex<Ring>>,
}

#[derive(Debug, Default)]
struct Ring {
    samples: VecDeque<Sample>,
    /// The counters and the time of the previous reading.
    last: Option<(i64, u64, u64)>,
}

impl Throughput {
    /// Records the counters read at `at_ms` (Unix ms) with the limits then in force; the rate is
    /// the difference from the previous reading (the first reading only sets the start).
    pub fn record(
        &self,
        at_ms: i64,
        (downloaded, uploaded): (u64, u64),
        (download_limit, upload_limit): (Option<u64>, Option<u64>),
    ) -> Option<Sample> {
        let mut ring = self
            .inner
            .lock()
            .expect("throughput lock is never poisoned");
        let last = ring.last.replace((at_ms, downloaded, uploaded));
        let (then, down0, up0) = last?;
        let elapsed_ms = (at_ms - then).max(1) as u64;
        let per_second = |now: u64, before: u64| now.saturating_sub(before) * 1000 / elapsed_ms;
        let sample = Sample {
            at: at_ms.div_euclid(1000),
            download: per_second(downloaded, down0),
            upload: per_second(uploaded, up0),
            download_limit,
            upload_limit,
        };
        if ring.samples.len() == CAPACITY {
            ring.samples.pop_front();
        }
        ring.samples.push_back(sample);
        Some(sample)
    }

    /// The newest sample.
    pub fn latest(&self) -> Option<Sample> {
        let ring = self
            .inner
            .lock()
            .expect("throughput lock is never poisoned");
        ring.samples.back().copied()
    }

    /// Every sample kept, oldest first.
    pub fn history(&self) -> Vec<Sample> {
        let ring = self
            .inner
            .lock()
            .expect("throughput lock is never poisoned");
        ring.samples.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_differences_per_second_and_the_ring_keeps_one_hour() {
        let t = Throughput::default();
        assert_eq!(t.record(0, (0, 0), (None, None)), None, "the first reading");
        let s = t.record(2000, (4000, 1000), (Some(5), None)).unwrap();
        assert_eq!((s.at, s.download, s.upload), (2, 2000, 500));
        assert_eq!(s.download_limit, Some(5));
        // A counter never goes back, but a new engine's would start again at zero.
        let s = t.record(3000, (0, 1000), (None, None)).unwrap();
        assert_eq!((s.download, s.upload), (0, 0));
        for i in 0..(CAPACITY as i64 + 10) {
            t.record(4000 + i * 1000, (0, 0), (None, None));
        }
        let kept = t.history();
        assert_eq!(kept.len(), CAPACITY);
        assert_eq!(kept.last().unwrap().at, 4 + CAPACITY as i64 + 9);
        assert!(kept.windows(2).all(|w| w[1].at == w[0].at + 1));
    }
}
