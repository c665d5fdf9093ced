//! Whole-file hashes computed while a transfer moves the file's bytes. xxh64, MD5 and SHA are
//! sequential, while parts and ranges go in parallel and out of order, so a file's hash is a
//! [`Feed`] that takes the file's bytes in order from two sources:
//! - whoever moves them in order from the hash's position: a download's range writer hashes
//!   what it just wrote straight from its buffer (a file of one range, most files of a
//!   many-file package, is hashed without being read again);
//! - one sequential read of the file for the rest, kept just behind the bytes the transfer has
//!   moved: an upload's hash reads what its parts just read (from the page cache) and never
//!   races ahead on a slow link; a download's reads what its ranges wrote, up to the first
//!   range not written yet. The ranges write what the hash has not reached through the page
//!   cache (the rest goes to the disk directly), so this read finds it in memory instead of
//!   taking the disk from the writes; it drops each block from the cache once hashed.
//!
//! Reads and hashing run on the blocking pool, off the runtime: the read behind is one task
//! there, reading and hashing block after block.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::task::AbortOnDropHandle;

use crate::direct::BufferPool;
use crate::mhl::{HashFormat, Hasher};

/// The reads of the file, in blocks of this size.
const READ: usize = 2 << 20;
/// How often a hash that caught up with the transfer looks again, unless woken before.
const PACE: Duration = Duration::from_millis(5);

/// The read blocks, kept between files (zeroing a fresh block per file cost more than hashing
/// a small file).
static BLOCKS: LazyLock<BufferPool> = LazyLock::new(|| BufferPool::new(READ, 8));

/// A hash being computed; aborted when dropped. Its answer is `FORMAT:DIGEST`.
pub(super) type Digest = AbortOnDropHandle<Result<String, String>>;

/// A file's hash, fed its bytes in order by whoever has them.
pub(super) struct Feed {
    format: HashFormat,
    size: u64,
    state: Mutex<Fed>,
    /// Woken when the bytes the reader may read grow.
    more: Notify,
}

struct Fed {
    hasher: Option<Hasher>,
    /// How many of the file's first bytes are hashed.
    pos: u64,
}

impl Feed {
    pub(super) fn new(format: HashFormat, size: u64) -> Arc<Feed> {
        Arc::new(Feed {
            format,
            size,
            state: Mutex::new(Fed {
                hasher: Some(Hasher::new(format)),
                pos: 0,
            }),
            more: Notify::new(),
        })
    }

    fn fed(&self) -> std::sync::MutexGuard<'_, Fed> {
        self.state.lock().expect("a feed's lock is never poisoned")
    }

    /// How many of the file's first bytes are hashed.
    pub(super) fn position(&self) -> u64 {
        self.fed().pos
    }

    /// The file's `bytes` at `offset`: what continues the hashed start is hashed (bytes hashed
    /// already are skipped, as when a range is fetched again); bytes further on are left to the
    /// read of the file. Hashing holds the lock: the bytes go in in order.
    pub(super) fn offer(&self, offset: u64, bytes: &[u8]) {
        let mut fed = self.fed();
        let end = offset + bytes.len() as u64;
        if offset > fed.pos || end <= fed.pos {
            return;
        }
        let new = &bytes[(fed.pos - offset) as usize..];
        if let Some(hasher) = fed.hasher.as_mut() {
            hasher.update(new);
        }
        fed.pos = end;
    }

    /// Says that the bytes the reader may read grew.
    pub(super) fn wake(&self) {
        self.more.notify_one();
    }

    /// The answer, `FORMAT:DIGEST`, once every byte is hashed (taken once).
    pub(super) fn answer(&self) -> Option<String> {
        let mut fed = self.fed();
        if fed.pos < self.size {
            return None;
        }
        let hasher = fed.hasher.take()?;
        Some(format!("{}:{}", self.format, hasher.finish()))
    }
}

/// Where a transfer writes a stream of a file's bytes in order, from `at`: shows each batch to
/// the file's [`Feed`], if it has one, once written.
pub(super) struct Tap {
    pub feed: Option<Arc<Feed>>,
    pub at: u64,
}

impl Tap {
    /// Whether the next bytes go past the file's hashed start: the read behind will read them
    /// again, so they are best written through the page cache.
    pub(super) fn ahead(&self) -> bool {
        self.feed
            .as_ref()
            .is_some_and(|feed| feed.position() < self.at)
    }

    pub(super) fn written(&mut self, bytes: &[u8]) {
        if let Some(feed) = &self.feed {
            feed.offer(self.at, bytes);
        }
        self.at += bytes.len() as u64;
    }
}

/// What to read: a file to open, or one open already (a download's part file, renamed or not:
/// its ranges wrote what the hash had not reached through the page cache, where this read finds
/// it, then drops it once hashed).
pub(super) enum Source {
    Path(String),
    Open { file: Arc<File>, name: String },
}

/// Feeds `feed` by reading `source` from the hash's position, no further than `ahead` bytes
/// past `moved()`, until every byte is hashed; the answer is the feed's.
///
/// One task on the blocking pool reads and hashes block after block (it holds a thread of the
/// pool while it waits for the transfer). A hand-off to the pool per block, a read and a hash
/// each in a task of their own, made a 2 GiB upload 1.16 to 1.35 times as long hashed on 2 busy
/// cores (`scripts/bench-hash.py`); likely the hash fell behind and the file's finalize waited
/// for it.
pub(super) fn read_behind(
    feed: Arc<Feed>,
    source: Source,
    ahead: u64,
    moved: impl Fn() -> u64 + Send + Sync + 'static,
) -> Digest {
    AbortOnDropHandle::new(tokio::spawn(async move {
        // Set when this task is aborted (its handle dropped): the blocking loop stops.
        struct StopOnDrop(Arc<AtomicBool>);
        impl Drop for StopOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let _stop = StopOnDrop(stop.clone());
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let (file, name, drop_hashed) = match source {
                Source::Open { file, name } => (file, name, true),
                Source::Path(path) => {
                    let file = File::open(&path)
                        .map_err(|e| format!("{path} cannot be read to hash it: {e}"))?;
                    (Arc::new(file), path, false)
                }
            };
            let size = feed.size;
            let mut block = BLOCKS.take();
            loop {
                if stop.load(Ordering::Acquire) {
                    return Err(format!("hashing {name} was stopped"));
                }
                let pos = feed.position();
                if pos >= size {
                    break;
                }
                let allowed = moved().saturating_add(ahead).min(size);
                if pos >= allowed {
                    runtime.block_on(async {
                        let _ = tokio::time::timeout(PACE, feed.more.notified()).await;
                    });
                    continue;
                }
                let want = (allowed - pos).min(READ as u64) as usize;
                let n = file
                    .read_at(&mut block.space_mut()[..want], pos)
                    .map_err(|e| format!("{name} cannot be read to hash it: {e}"))?;
                if n == 0 {
                    return Err(format!("{name} is shorter than its {size} bytes"));
                }
                block.set_len(n);
                feed.offer(pos, block.bytes());
                if drop_hashed {
                    // Only advice: a failure changes nothing but the cache's use.
                    let len = std::num::NonZeroU64::new(n as u64);
                    let _ = rustix::fs::fadvise(&*file, pos, len, rustix::fs::Advice::DontNeed);
                }
                block.set_len(0);
            }
            feed.answer()
                .ok_or_else(|| format!("{name} was hashed twice"))
        })
        .await
        .map_err(|e| e.to_string())?
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::direct::ALIGN;
    use crate::mhl::hash_data;

    fn bytes(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Bytes offered again (a range fetched again after it was cut) are hashed once; bytes
    /// beyond the hashed start wait for the read.
    #[test]
    fn a_feed_hashes_each_byte_once_in_order() {
        let data = bytes(100);
        let feed = Feed::new(HashFormat::Xxh64, 100);
        feed.offer(0, &data[..10]);
        feed.offer(40, &data[40..60]);
        assert_eq!(feed.position(), 10);
        feed.offer(5, &data[5..30]);
        feed.offer(0, &data[..20]);
        assert_eq!(feed.position(), 30);
        assert_eq!(feed.answer(), None, "not every byte is hashed");
        feed.offer(30, &data[30..100]);
        let expected = format!("xxh64:{}", hash_data(HashFormat::Xxh64, &data));
        assert_eq!(feed.answer(), Some(expected));
        assert_eq!(feed.answer(), None, "the answer is taken once");
    }

    /// The read behind a transfer hashes what the writers left, up to what is moved, and
    /// waits for more: here the first bytes are fed by a writer, the rest read from the file
    /// (blocks of several reads, an end that is no multiple of a disk block).
    #[tokio::test(flavor = "multi_thread")]
    async fn the_read_behind_the_transfer_hashes_what_the_writers_left() {
        let data = bytes(2 * READ + 3 * ALIGN + 5);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip");
        std::fs::write(&path, &data).unwrap();
        let feed = Feed::new(HashFormat::Md5, data.len() as u64);
        feed.offer(0, &data[..ALIGN + 1]);
        let moved = Arc::new(std::sync::atomic::AtomicU64::new(READ as u64));
        let seen = moved.clone();
        let digest = read_behind(
            feed.clone(),
            Source::Path(path.display().to_string()),
            0,
            move || seen.load(std::sync::atomic::Ordering::Acquire),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(feed.position(), READ as u64, "no further than the transfer");
        moved.store(data.len() as u64, std::sync::atomic::Ordering::Release);
        feed.wake();
        let answer = digest.await.unwrap().unwrap();
        assert_eq!(answer, format!("md5:{}", hash_data(HashFormat::Md5, &data)));
    }
}
