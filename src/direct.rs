//! Direct I/O, shared by the agent's downloads and the hub's storage: buffers aligned for
//! `O_DIRECT`, a pool that keeps them between ranges (allocating and zeroing megabytes per
//! range was a tenth of a download's CPU), a writer that lays a stream of bytes down from an
//! offset (whole blocks with `O_DIRECT`, straight from the buffer to the disk, the rest through
//! the page cache), and large positional reads into pooled buffers.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use rustix::io::Errno;

/// Direct I/O wants buffers, file offsets and lengths aligned to the device's logical block;
/// 4 KiB covers the common ones.
pub const ALIGN: usize = 4096;

/// A byte buffer whose start is aligned for direct I/O (a plain `Vec` with the slack in front).
pub struct AlignedBuffer {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuffer {
    pub fn new(capacity: usize) -> AlignedBuffer {
        let raw = vec![0u8; capacity + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        AlignedBuffer { raw, start, len: 0 }
    }

    pub fn capacity(&self) -> usize {
        self.raw.len() - ALIGN
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bytes(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    /// The whole capacity, aligned, to read into (the length is left as it is).
    pub fn space_mut(&mut self) -> &mut [u8] {
        let capacity = self.capacity();
        &mut self.raw[self.start..self.start + capacity]
    }

    /// Adds bytes at the end (the buffer grows if they do not fit).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > self.capacity() {
            let mut bigger = AlignedBuffer::new((self.len + bytes.len()).max(2 * self.capacity()));
            bigger.push(self.bytes());
            *self = bigger;
        }
        let at = self.start + self.len;
        self.raw[at..at + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Drops the first `n` bytes, moving the rest to the (aligned) front.
    pub fn consume(&mut self, n: usize) {
        let (start, len) = (self.start, self.len);
        self.raw.copy_within(start + n..start + len, start);
        self.len -= n;
    }

    /// The whole capacity as a slice to read into; `set_len` then says how much was read.
    fn spare(&mut self) -> &mut [u8] {
        let (start, end) = (self.start, self.start + self.capacity());
        &mut self.raw[start..end]
    }

    /// Says how many bytes of the buffer hold data (after reading into [`AlignedBuffer::space_mut`]).
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity(), "an aligned buffer holds what fits");
        self.len = len;
    }
}

/// Aligned buffers of one size, kept for reuse: a buffer taken is given back when dropped
/// (up to `keep` of them are kept; more than that in use at once are simply freed).
#[derive(Clone)]
pub struct BufferPool {
    free: Arc<Mutex<Vec<AlignedBuffer>>>,
    capacity: usize,
    keep: usize,
}

impl BufferPool {
    pub fn new(capacity: usize, keep: usize) -> BufferPool {
        BufferPool {
            free: Arc::new(Mutex::new(Vec::new())),
            capacity,
            keep,
        }
    }

    /// An empty buffer of the pool's capacity: a kept one if there is one.
    pub fn take(&self) -> PooledBuffer {
        let kept = self
            .free
            .lock()
            .expect("the pool's lock is never poisoned")
            .pop();
        PooledBuffer {
            buffer: Some(kept.unwrap_or_else(|| AlignedBuffer::new(self.capacity))),
            pool: self.clone(),
        }
    }

    /// How many buffers wait for reuse.
    pub fn kept(&self) -> usize {
        self.free
            .lock()
            .expect("the pool's lock is never poisoned")
            .len()
    }
}

/// A buffer of a [`BufferPool`], back in the pool when dropped.
pub struct PooledBuffer {
    buffer: Option<AlignedBuffer>,
    pool: BufferPool,
}

impl std::ops::Deref for PooledBuffer {
    type Target = AlignedBuffer;
    fn deref(&self) -> &AlignedBuffer {
        self.buffer.as_ref().expect("taken only on drop")
    }
}

impl std::ops::DerefMut for PooledBuffer {
    fn deref_mut(&mut self) -> &mut AlignedBuffer {
        self.buffer.as_mut().expect("taken only on drop")
    }
}

/// The buffer's bytes: a read's answer handed to the HTTP server as `Bytes` without a copy.
impl AsRef<[u8]> for PooledBuffer {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let Some(mut buffer) = self.buffer.take() else {
            return;
        };
        // A buffer that grew is not of the pool's size any more.
        if buffer.capacity() != self.pool.capacity {
            return;
        }
        buffer.len = 0;
        let mut free = self
            .pool
            .free
            .lock()
            .expect("the pool's lock is never poisoned");
        if free.len() < self.pool.keep {
            free.push(buffer);
        }
    }
}

/// A file open twice: through the page cache, and with `O_DIRECT` where the file system has
/// it (not tmpfs, say).
#[derive(Clone)]
pub struct DirectFile {
    pub buffered: Arc<File>,
    pub direct: Option<Arc<File>>,
}

impl DirectFile {
    /// Writes `bytes` at `offset`: the whole blocks with direct I/O where the file has it and
    /// both `offset` and the memory are block-aligned, the rest (a last partial block; all of
    /// it otherwise, or when the device wants a larger alignment than ours) through the page
    /// cache.
    pub fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let blocks = bytes.len() / ALIGN * ALIGN;
        let aligned =
            offset.is_multiple_of(ALIGN as u64) && (bytes.as_ptr() as usize).is_multiple_of(ALIGN);
        if let Some(direct) = self.direct.as_ref().filter(|_| aligned && blocks > 0) {
            match direct.write_all_at(&bytes[..blocks], offset) {
                Ok(()) if blocks == bytes.len() => return Ok(()),
                Ok(()) => {
                    return self
                        .buffered
                        .write_all_at(&bytes[blocks..], offset + blocks as u64);
                }
                Err(e) if e.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => {}
                Err(e) => return Err(e),
            }
        }
        self.buffered.write_all_at(bytes, offset)
    }
}

/// The bytes of a stream, laid down in order from an offset of a file: gathered into an
/// aligned buffer, written with direct I/O (no copy into the page cache, nothing left for the
/// final sync to write out) where the file has it and the offset is block-aligned, through the
/// page cache otherwise (and for a last partial block).
pub struct Writer {
    file: DirectFile,
    offset: u64,
    batch: usize,
    buffer: PooledBuffer,
    /// Write through the page cache, even where direct I/O could go ([`Writer::keep_cached`]).
    cached: bool,
}

impl Writer {
    /// A writer from `offset`, full once `batch` bytes are gathered; `buffer` should hold more
    /// than `batch` (what arrives after the batch is full), or it grows.
    pub fn new(file: DirectFile, offset: u64, batch: usize, buffer: PooledBuffer) -> Writer {
        Writer {
            file,
            offset,
            batch,
            buffer,
            cached: false,
        }
    }

    /// Whether what is written next goes through the page cache, where it stays a while,
    /// rather than straight to the disk: for bytes about to be read again.
    pub fn keep_cached(&mut self, cached: bool) {
        self.cached = cached;
    }

    /// Where the next byte goes.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Adds bytes to write.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.push(bytes);
    }

    /// Whether a batch is gathered: time to [`Writer::flush`].
    pub fn is_full(&self) -> bool {
        self.buffer.len >= self.batch
    }

    /// Writes the whole blocks gathered so far (a partial block waits for more bytes), showing
    /// them to `written` once they are written.
    pub fn flush(&mut self, written: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        let blocks = self.buffer.len / ALIGN * ALIGN;
        self.write(blocks, written)
    }

    /// Writes everything gathered; returns the offset after the last byte.
    pub fn finish(mut self, written: &mut dyn FnMut(&[u8])) -> io::Result<u64> {
        let all = self.buffer.len;
        self.write(all, written)?;
        Ok(self.offset)
    }

    fn write(&mut self, len: usize, written: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let bytes = &self.buffer.bytes()[..len];
        if self.cached {
            self.file.buffered.write_all_at(bytes, self.offset)?;
        } else {
            self.file.write_all_at(bytes, self.offset)?;
        }
        written(bytes);
        self.offset += len as u64;
        self.buffer.consume(len);
        Ok(())
    }
}

/// Reads `len` bytes at `offset` into a buffer of `pool` (fewer only at the end of the file):
/// one large positional read, no copy but the kernel's. The answer is `Bytes` that give the
/// buffer back to the pool once sent. `len` must fit the pool's buffers.
///
/// Through the page cache on purpose: a blob downloaded again (a link sent to several people)
/// is served from memory, and a first read does not take the disk from the receiver's writes
/// when both are on one machine.
pub fn read_at(
    file: &File,
    offset: u64,
    len: usize,
    pool: &BufferPool,
) -> io::Result<bytes::Bytes> {
    let mut buffer = pool.take();
    assert!(len <= buffer.capacity(), "a read fits the pool's buffers");
    let read = read_full(file, &mut buffer.spare()[..len], offset)?;
    buffer.set_len(read);
    Ok(bytes::Bytes::from_owner(buffer))
}

/// Reads until `buf` is full or the file ends; the count read.
fn read_full(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooled_buffers_come_back_and_are_reused() {
        let pool = BufferPool::new(64 * 1024, 2);
        let first = pool.take();
        let address = first.bytes().as_ptr();
        drop(first);
        assert_eq!(pool.kept(), 1);
        let again = pool.take();
        assert_eq!(
            again.bytes().as_ptr(),
            address,
            "the same memory, not a fresh one"
        );
        assert!(again.is_empty());
        // More in use at once than the pool keeps: the extra ones are freed.
        let (a, b, c) = (pool.take(), pool.take(), pool.take());
        drop((again, a, b, c));
        assert_eq!(pool.kept(), 2);
        // A buffer that grew past the pool's size is not kept.
        let mut grown = pool.take();
        grown.push(&vec![1u8; 200 * 1024]);
        let before = pool.kept();
        drop(grown);
        assert_eq!(pool.kept(), before);
    }

    /// Switching between the page cache and direct I/O batch by batch, with batches of every
    /// alignment, lays the stream down byte for byte (and shows each batch once, in order).
    #[test]
    fn a_writer_switching_between_cache_and_disk_writes_every_byte_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let data: Vec<u8> = (0..3 * ALIGN as u32 * 7 + 123)
            .map(|i| (i % 251) as u8)
            .collect();
        let buffered = Arc::new(File::create(&path).unwrap());
        let direct = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
                .open(&path)
                .ok()
                .map(Arc::new)
        };
        let file = DirectFile { buffered, direct };
        let pool = BufferPool::new(4 * ALIGN, 2);
        let mut writer = Writer::new(file, 0, 2 * ALIGN, pool.take());
        let mut shown = Vec::new();
        for (n, piece) in data.chunks(ALIGN + 777).enumerate() {
            writer.keep_cached(n % 2 == 0);
            writer.push(piece);
            if writer.is_full() {
                writer.flush(&mut |b| shown.extend_from_slice(b)).unwrap();
                assert_eq!(writer.offset(), shown.len() as u64);
            }
        }
        let end = writer.finish(&mut |b| shown.extend_from_slice(b)).unwrap();
        assert_eq!(end, data.len() as u64);
        assert_eq!(shown, data);
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn reads_at_any_offset_return_the_bytes_there() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        let pool = BufferPool::new(128 * 1024, 4);
        for (offset, len) in [(0u64, 4096usize), (1, 100), (4095, 70_000), (299_990, 100)] {
            let got = read_at(&file, offset, len, &pool).unwrap();
            let end = (offset as usize + len).min(data.len());
            assert_eq!(&got[..], &data[offset as usize..end], "{offset} {len}");
        }
        assert!(pool.kept() >= 1, "read buffers go back to the pool");
    }
}
