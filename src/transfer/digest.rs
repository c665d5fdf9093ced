//! Whole-file hashes computed while a transfer moves the file's bytes: one sequential read of
//! the file, kept just behind the bytes the transfer has moved: an upload's hash reads what its
//! parts just read (from the page cache) and never races ahead on a slow link; a download's
//! reads what its ranges just wrote, up to the first range not written yet. The parts and
//! ranges themselves cannot feed the hash: they go in parallel, out of order, and xxh64, MD5 and
//! SHA are sequential. Reads and hashing run on the blocking pool, off the runtime.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::AbortOnDropHandle;

use crate::direct::{ALIGN, AlignedBuffer};
use crate::mhl::{HashFormat, Hasher};

const READ: usize = 1 << 20;
/// How often a hash that caught up with the transfer looks again.
const PACE: Duration = Duration::from_millis(5);

/// A hash being computed; aborted when dropped. Its answer is `FORMAT:DIGEST`.
pub(super) type Digest = AbortOnDropHandle<Result<String, String>>;

/// What to hash: a file to open, or one open already (a download's part file, renamed or not,
/// with its direct-I/O descriptor when it has one: what its ranges wrote with direct I/O is read
/// back the same way, not through the page cache, whose read-ahead would cache, then have
/// invalidated, pages the next ranges are about to write).
pub(super) enum Source {
    Path(String),
    Open {
        file: Arc<File>,
        direct: Option<Arc<File>>,
        name: String,
    },
}

/// Hashes the `size` bytes of `source` in `format`, reading no further than `ahead` bytes past
/// `moved()`, the bytes of the file the transfer has moved (or written in order) so far.
pub(super) fn spawn(
    source: Source,
    size: u64,
    format: HashFormat,
    ahead: u64,
    moved: impl Fn() -> u64 + Send + Sync + 'static,
) -> Digest {
    AbortOnDropHandle::new(tokio::spawn(async move {
        let (file, direct, name) = match source {
            Source::Open { file, direct, name } => (file, direct, name),
            Source::Path(path) => {
                let opened = path.clone();
                let file = tokio::task::spawn_blocking(move || File::open(opened))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("{path} cannot be read to hash it: {e}"))?;
                (Arc::new(file), None, path)
            }
        };
        let mut state = (Hasher::new(format), AlignedBuffer::new(READ));
        let mut pos = 0u64;
        while pos < size {
            let allowed = moved().saturating_add(ahead).min(size);
            if pos >= allowed {
                tokio::time::sleep(PACE).await;
                continue;
            }
            let want = (allowed - pos).min(READ as u64) as usize;
            // Whole aligned blocks from an aligned offset go direct; a last partial block
            // through the page cache.
            let blocks = want / ALIGN * ALIGN;
            let (f, want) = match &direct {
                Some(d) if blocks > 0 && pos.is_multiple_of(ALIGN as u64) => (d.clone(), blocks),
                _ => (file.clone(), want),
            };
            let (hasher, mut buf) = state;
            let read = tokio::task::spawn_blocking(move || {
                let space = buf.space_mut();
                let n = f.read_at(&mut space[..want], pos);
                if let Ok(n) = n {
                    let mut hasher = hasher;
                    hasher.update(&buf.space_mut()[..n]);
                    return (Ok(n), hasher, buf);
                }
                (n, hasher, buf)
            })
            .await
            .map_err(|e| e.to_string())?;
            let (n, hasher, buf) = read;
            let n = n.map_err(|e| format!("{name} cannot be read to hash it: {e}"))?;
            if n == 0 {
                return Err(format!("{name} is shorter than its {size} bytes"));
            }
            pos += n as u64;
            state = (hasher, buf);
        }
        Ok(format!("{format}:{}", state.0.finish()))
    }))
}
