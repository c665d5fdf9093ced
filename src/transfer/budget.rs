//! The global connection budget: at most N requests in flight across every transfer, and when
//! several wait, the one of highest priority (then the oldest) goes first.

use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

#[derive(Clone)]
pub struct Budget {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    available: usize,
    waiters: BinaryHeap<Waiter>,
    next_seq: u64,
}

struct Waiter {
    priority: i64,
    seq: u64,
    wake: oneshot::Sender<Permit>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        (self.priority, self.seq) == (other.priority, other.seq)
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    /// Highest priority first, then first come.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

/// One connection's worth of budget; given back when dropped.
pub struct Permit {
    budget: Option<Budget>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(budget) = self.budget.take() {
            budget.release();
        }
    }
}

impl Budget {
    pub fn new(connections: usize) -> Budget {
        Budget {
            inner: Arc::new(Mutex::new(Inner {
                available: connections.max(1),
                waiters: BinaryHeap::new(),
                next_seq: 0,
            })),
        }
    }

    /// Waits for a connection. Dropping the future gives up the place in the queue.
    pub async fn acquire(&self, priority: i64) -> Permit {
        let wait = {
            let mut inner = self.inner.lock().expect("budget lock is never poisoned");
            if inner.available > 0 && inner.waiters.is_empty() {
                inner.available -= 1;
                return Permit {
                    budget: Some(self.clone()),
                };
            }
            let (wake, wait) = oneshot::channel();
            let seq = inner.next_seq;
            inner.next_seq += 1;
            inner.waiters.push(Waiter {
                priority,
                seq,
                wake,
            });
            wait
        };
        // The sender lives in the queue until a permit is handed over, so this cannot fail
        // while the budget exists; if it somehow does, a fresh wait would deadlock, so take one.
        // (Made only then: a permit made and dropped unused would add a connection.)
        wait.await.unwrap_or_else(|_| Permit {
            budget: Some(self.clone()),
        })
    }

    /// How many requests are waiting for a connection.
    pub fn waiting(&self) -> usize {
        let inner = self.inner.lock().expect("budget lock is never poisoned");
        inner.waiters.iter().filter(|w| !w.wake.is_closed()).count()
    }

    /// Hands a freed connection to the best waiter still waiting, or back to the pool.
    fn release(&self) {
        let mut inner = self.inner.lock().expect("budget lock is never poisoned");
        while let Some(waiter) = inner.waiters.pop() {
            let permit = Permit {
                budget: Some(self.clone()),
            };
            match waiter.wake.send(permit) {
                Ok(()) => return,
                // That waiter gave up: keep the permit from releasing again, try the next one.
                Err(mut permit) => permit.budget = None,
            }
        }
        inner.available += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn higher_priority_waiters_go_first() {
        let budget = Budget::new(1);
        let held = budget.acquire(0).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, priority) in [("low", 0), ("high", 10), ("mid", 5)] {
            let (budget, order) = (budget.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = budget.acquire(priority).await;
                order.lock().unwrap().push(name);
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["high", "mid", "low"]);
    }

    #[tokio::test]
    async fn permits_handed_to_waiters_keep_the_count() {
        let budget = Budget::new(1);
        let held = budget.acquire(0).await;
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.acquire(0).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(held);
        let handed = waiter.await.unwrap();
        // The one connection is taken: nobody else gets one until it is given back.
        let more = tokio::time::timeout(Duration::from_millis(50), budget.acquire(0)).await;
        assert!(more.is_err(), "a second permit out of a budget of one");
        drop(handed);
        let again = tokio::time::timeout(Duration::from_secs(1), budget.acquire(0)).await;
        assert!(again.is_ok());
        let more = tokio::time::timeout(Duration::from_millis(50), budget.acquire(0)).await;
        assert!(more.is_err(), "still one permit after a round trip");
    }

    #[tokio::test]
    async fn abandoned_waits_do_not_leak_permits() {
        let budget = Budget::new(1);
        let held = budget.acquire(0).await;
        let gave_up = tokio::time::timeout(Duration::from_millis(10), budget.acquire(0)).await;
        assert!(gave_up.is_err());
        drop(held);
        let again = tokio::time::timeout(Duration::from_secs(1), budget.acquire(0)).await;
        assert!(again.is_ok(), "the permit came back to the pool");
    }
}
