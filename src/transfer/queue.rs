//! A job's work: chunks or parts ready to go, and those waiting for a retry. A worker takes the
//! next ready item; one whose try failed for a transient reason waits here, not in the worker,
//! so the worker goes on with other items meanwhile (at 30 % storage faults, a worker sleeping
//! through each backoff would leave the connections idle).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

pub(super) struct WorkQueue<T> {
    items: Mutex<Items<T>>,
}

struct Items<T> {
    ready: VecDeque<T>,
    /// Items and when they may go again.
    later: Vec<(Instant, T)>,
}

pub(super) enum Next<T> {
    Item(T),
    /// Nothing is left, ready or waiting.
    Done,
    /// Stopped while waiting for an item to be due.
    Stopped,
}

impl<T> WorkQueue<T> {
    pub fn new(ready: VecDeque<T>) -> WorkQueue<T> {
        WorkQueue {
            items: Mutex::new(Items {
                ready,
                later: Vec::new(),
            }),
        }
    }

    /// Items ready now.
    pub fn len(&self) -> usize {
        self.lock().ready.len()
    }

    /// Puts `item` back, to go again at `at`.
    pub fn retry_at(&self, item: T, at: Instant) {
        self.lock().later.push((at, item));
    }

    /// The next item: one whose retry is due first, else the next ready one; waits (stopped by
    /// `stop`) while only items not due yet are left.
    pub async fn next(&self, stop: &[&CancellationToken]) -> Next<T> {
        loop {
            let due_at = {
                let mut items = self.lock();
                let now = Instant::now();
                if let Some(i) = items.later.iter().position(|(at, _)| *at <= now) {
                    return Next::Item(items.later.swap_remove(i).1);
                }
                if let Some(item) = items.ready.pop_front() {
                    return Next::Item(item);
                }
                match items.later.iter().map(|(at, _)| *at).min() {
                    Some(at) => at,
                    None => return Next::Done,
                }
            };
            let sleep = tokio::time::sleep_until(due_at.into());
            tokio::select! {
                _ = sleep => {}
                _ = stopped(stop) => return Next::Stopped,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Items<T>> {
        self.items.lock().expect("queue lock is never poisoned")
    }
}

/// Completes when any of `tokens` is cancelled.
async fn stopped(tokens: &[&CancellationToken]) {
    let waits = tokens.iter().map(|t| Box::pin(t.cancelled()));
    futures_util::future::select_all(waits).await;
}
