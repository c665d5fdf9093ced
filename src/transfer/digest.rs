//! Whole-file hashes computed while a transfer moves the file's bytes: one sequential read of
//! the file, kept just behind the bytes the transfer has moved (it reads what the parts just
//! read, from the page cache, and never races ahead on a slow link). A hash of a multi-part
//! file cannot be fed by the parts themselves: they go in parallel, and xxh64, MD5 and SHA are
//! sequential.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use tokio_util::task::AbortOnDropHandle;

use crate::mhl::{HashFormat, Hasher};

const READ: usize = 1 << 20;
/// How often a hash that caught up with the transfer looks again.
const PACE: Duration = Duration::from_millis(20);

/// A hash being computed; aborted when dropped. Its answer is `FORMAT:DIGEST`.
pub(super) type Digest = AbortOnDropHandle<Result<String, String>>;

/// Hashes `path` (`size` bytes) in `format`, reading no further than `ahead` bytes past
/// `moved()`, the bytes of the file the transfer has moved so far.
pub(super) fn spawn(
    path: String,
    size: u64,
    format: HashFormat,
    ahead: u64,
    moved: impl Fn() -> u64 + Send + Sync + 'static,
) -> Digest {
    let moved = Arc::new(moved);
    AbortOnDropHandle::new(tokio::spawn(async move {
        let fail = |e: std::io::Error| format!("{path} cannot be read to hash it: {e}");
        let mut file = tokio::fs::File::open(&path).await.map_err(fail)?;
        let mut hasher = Hasher::new(format);
        let mut buf = vec![0u8; READ];
        let mut pos = 0u64;
        while pos < size {
            let allowed = moved().saturating_add(ahead).min(size);
            if pos >= allowed {
                tokio::time::sleep(PACE).await;
                continue;
            }
            let want = (allowed - pos).min(READ as u64) as usize;
            let n = file.read(&mut buf[..want]).await.map_err(fail)?;
            if n == 0 {
                return Err(format!("{path} is shorter than its {size} bytes"));
            }
            hasher.update(&buf[..n]);
            pos += n as u64;
        }
        Ok(format!("{format}:{}", hasher.finish()))
    }))
}
