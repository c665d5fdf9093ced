//! MD5 of many streams at once. The agent hashes every part it sends and the hub every part it
//! receives, 16 parts at a time by default, and MD5 was the largest CPU cost of both: one stream
//! is a chain of dependent steps (~700 MB/s a core whatever the code). Independent streams can
//! share the 16 lanes of an AVX-512 register (or two groups of 8 in AVX2 registers) instead, so the threads that have bytes to hash
//! queue them, and whoever finds nobody hashing hashes everything queued in one batch (flat
//! combining; no thread of its own). While the hashing keeps up, a stream is hashed alone, by the
//! `md5-asm` kernel; once it falls behind, the queue grows and the next batch fills more lanes:
//! the cost per byte falls as the load rises. Without AVX2 (or off x86-64) every stream is
//! hashed alone.
//!
//! A crate of its own so that debug builds (the test suite's) optimise it like the other
//! dependencies: SIMD intrinsics unoptimised are function calls, and the kernels ran slower
//! than the scalar one.
//!
//! [`Md5::update`] blocks until its bytes are hashed: call it where blocking is allowed (the
//! blocking pool), as the reads and writes it follows are. [`Md5::update_later`] hands owned
//! bytes over and returns at once: they are hashed by whoever waits next (the stream's next
//! update, its [`Md5::finalize`], or another stream's), together with what else is queued by
//! then. A sender that only needs the digest once the storage answered (to compare it with the
//! ETag) hands each read over as it sends it: the parts sent meanwhile queue theirs, and the
//! lanes fill. Waiting blocks too.

use std::cell::UnsafeCell;
use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// Below this, bytes are hashed by the caller at once: queueing would cost more than it saves.
const ALONE: usize = 4096;

const INIT: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];

/// One stream's MD5.
pub struct Md5 {
    /// The chaining state, shared with the job of [`Md5::update_later`] until it is hashed.
    state: Arc<State>,
    /// The bytes of a block not complete yet.
    buffer: [u8; 64],
    buffered: usize,
    len: u64,
    /// The ticket of the last job handed over and not waited for yet (a stream's jobs are
    /// hashed in order: once it is done, all are).
    pending: Option<u64>,
}

/// A stream's chaining state: written by the hasher of its job while one is pending, by the
/// stream otherwise (never both: the stream waits for its job first).
struct State(UnsafeCell<[u32; 4]>);

// SAFETY: see `State`; the queue's lock orders the hasher's writes before the stream's reads.
unsafe impl Sync for State {}

impl Default for Md5 {
    fn default() -> Self {
        Md5::new()
    }
}

impl Md5 {
    pub fn new() -> Md5 {
        Md5 {
            state: Arc::new(State(UnsafeCell::new(INIT))),
            buffer: [0; 64],
            buffered: 0,
            len: 0,
            pending: None,
        }
    }

    /// Waits for the job handed over, if any; then the state is the stream's own.
    fn settle(&mut self) -> &mut [u32; 4] {
        if let Some(ticket) = self.pending.take() {
            lanes().wait(ticket);
        }
        // SAFETY: no job of this stream is pending (see `State`).
        unsafe { &mut *self.state.0.get() }
    }

    /// Completes the partial block with the first bytes of `bytes` (handing it to
    /// [`Md5::blocks_later`] once whole); how many bytes it took.
    fn fill(&mut self, bytes: &[u8]) -> usize {
        self.len += bytes.len() as u64;
        if self.buffered == 0 {
            return 0;
        }
        let take = bytes.len().min(64 - self.buffered);
        self.buffer[self.buffered..self.buffered + take].copy_from_slice(&bytes[..take]);
        self.buffered += take;
        if self.buffered == 64 {
            self.buffered = 0;
            self.blocks_later(bytes::Bytes::copy_from_slice(&self.buffer));
        }
        take
    }

    /// Keeps the bytes after the whole blocks for the next update.
    fn keep(&mut self, tail: &[u8]) {
        if tail.is_empty() {
            return; // (a partial block still being filled stays)
        }
        debug_assert_eq!(self.buffered, 0, "a tail only follows whole blocks");
        self.buffer[..tail.len()].copy_from_slice(tail);
        self.buffered = tail.len();
    }

    /// Adds `bytes` to the stream, hashed together with the other streams' bytes queued at the
    /// same time. Blocks until they are hashed.
    pub fn update(&mut self, bytes: &[u8]) {
        let bytes = &bytes[self.fill(bytes)..];
        let whole = bytes.len() / 64 * 64;
        if whole >= ALONE {
            self.settle();
            let lanes = lanes();
            // SAFETY: waited for right after: `bytes` outlives the job.
            if let Some(ticket) = unsafe { lanes.submit(&self.state, &bytes[..whole], None, None) }
            {
                lanes.wait(ticket);
            }
        } else if whole > 0 {
            compress(self.settle(), &bytes[..whole]);
        }
        self.keep(&bytes[whole..]);
    }

    /// Adds `bytes` to the stream without waiting for them to be hashed (see the module's
    /// documentation): never blocks. They are queued behind the stream's bytes handed over
    /// before; the stream's next [`Md5::update`], [`Md5::wait`] or [`Md5::finalize`] waits for
    /// them all. Bytes handed over and not waited for stay in memory: a caller with many bytes
    /// to hash waits now and then.
    pub fn update_later(&mut self, bytes: bytes::Bytes) {
        let from = self.fill(&bytes);
        let whole = (bytes.len() - from) / 64 * 64;
        self.blocks_later(bytes.slice(from..from + whole));
        self.keep(&bytes[from + whole..]);
    }

    /// Whole blocks of the stream, hashed at once when they are few and nothing of the stream
    /// is queued, queued otherwise.
    fn blocks_later(&mut self, blocks: bytes::Bytes) {
        if blocks.is_empty() {
            return;
        }
        if self.pending.is_none() && blocks.len() < ALONE {
            // SAFETY: no job of this stream is pending (see `State`).
            return compress(unsafe { &mut *self.state.0.get() }, &blocks);
        }
        // SAFETY: the job owns its bytes; the state is left to the hasher until waited for.
        // The stream's job before it is nobody's to wait for any more.
        let ticket =
            unsafe { lanes().submit(&self.state, &blocks, Some(blocks.clone()), self.pending) };
        self.pending = ticket.or(self.pending);
    }

    /// Returns once every byte handed over is hashed.
    pub fn wait(&mut self) {
        self.settle();
    }

    /// The digest of the bytes added so far (more may be added after).
    pub fn finalize(&mut self) -> [u8; 16] {
        let mut state = *self.settle();
        let mut last = [0u8; 128];
        last[..self.buffered].copy_from_slice(&self.buffer[..self.buffered]);
        last[self.buffered] = 0x80;
        let blocks = if self.buffered < 56 { 1 } else { 2 };
        last[blocks * 64 - 8..blocks * 64].copy_from_slice(&(self.len * 8).to_le_bytes());
        compress(&mut state, &last[..blocks * 64]);
        let mut digest = [0u8; 16];
        for (out, word) in digest.chunks_exact_mut(4).zip(state) {
            out.copy_from_slice(&word.to_le_bytes());
        }
        digest
    }
}

impl Drop for Md5 {
    fn drop(&mut self) {
        if let Some(ticket) = self.pending.take() {
            lanes().abandon(ticket);
        }
    }
}

/// One stream's whole blocks (`bytes.len()` a multiple of 64), alone.
fn compress(state: &mut [u32; 4], bytes: &[u8]) {
    let (blocks, rest) = bytes.as_chunks::<64>();
    debug_assert!(rest.is_empty());
    #[cfg(target_arch = "x86_64")]
    md5_asm::compress(state, blocks);
    #[cfg(not(target_arch = "x86_64"))]
    blocks
        .iter()
        .for_each(|block| portable::compress(state, block));
}

/// The whole blocks of one stream waiting to be hashed: its bytes are the job's own (`owner`)
/// or the caller's, who waits in [`Lanes::wait`] until the job's ticket is done; the state is
/// the stream's (see `State`).
struct Job {
    ticket: u64,
    state: Arc<State>,
    bytes: *const u8,
    blocks: usize,
    #[allow(dead_code)] // kept for its bytes
    owner: Option<bytes::Bytes>,
}

impl Job {
    fn state(&self) -> *mut [u32; 4] {
        self.state.0.get()
    }
}

// SAFETY: a job is only read by the one thread that hashes it (see `Job`).
unsafe impl Send for Job {}

#[derive(Default)]
struct Queue {
    /// Queued, not taken by a hasher yet.
    jobs: Vec<Job>,
    /// The ticket the next job gets.
    next: u64,
    /// The tickets hashed whose callers have not seen it yet.
    finished: Vec<u64>,
    /// Someone is hashing.
    busy: bool,
    /// The tickets of jobs whose streams are gone, not hashed yet.
    abandoned: std::collections::HashSet<u64>,
    /// A hashing panicked: the waiters' states are lost.
    poisoned: bool,
}

struct Lanes {
    /// AVX-512 or AVX2 is there: batches go through [`x16::compress`].
    wide: bool,
    queue: Mutex<Queue>,
    hashed: Condvar,
}

fn lanes() -> &'static Lanes {
    static LANES: OnceLock<Lanes> = OnceLock::new();
    LANES.get_or_init(|| Lanes {
        wide: x16::available(),
        queue: Mutex::new(Queue::default()),
        hashed: Condvar::new(),
    })
}

impl Lanes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .expect("the MD5 queue's lock is never poisoned")
    }

    /// Queues `bytes` (whole blocks) of the stream `state`; its ticket, for [`Lanes::wait`],
    /// or none when they were hashed at once (no AVX-512). `replaces`: the stream's job queued
    /// before, which nobody will wait for (this one's end is its end too).
    ///
    /// # Safety
    /// Without an `owner` holding them, `bytes` must outlive the wait for the ticket; the
    /// stream's state must not be touched until then.
    unsafe fn submit(
        &self,
        state: &Arc<State>,
        bytes: &[u8],
        owner: Option<bytes::Bytes>,
        replaces: Option<u64>,
    ) -> Option<u64> {
        if !self.wide {
            // SAFETY: the caller leaves the state to us.
            compress(unsafe { &mut *state.0.get() }, bytes);
            return None;
        }
        let mut queue = self.lock();
        if let Some(before) = replaces {
            queue.forget(before);
        }
        let ticket = queue.next;
        queue.next += 1;
        queue.jobs.push(Job {
            ticket,
            state: state.clone(),
            bytes: bytes.as_ptr(),
            blocks: bytes.len() / 64,
            owner,
        });
        Some(ticket)
    }

    /// Returns once the job `ticket` is hashed: hashing it, and whatever is queued meanwhile,
    /// when nobody else is.
    fn wait(&self, ticket: u64) {
        let mut queue = self.lock();
        loop {
            assert!(!queue.poisoned, "hashing a batch of MD5 streams panicked");
            if let Some(at) = queue.finished.iter().position(|t| *t == ticket) {
                queue.finished.swap_remove(at);
                return;
            }
            if queue.busy {
                queue = self
                    .hashed
                    .wait(queue)
                    .expect("the MD5 queue's lock is never poisoned");
                continue;
            }
            // Nobody hashes: this thread does, its own job and whatever is queued meanwhile,
            // until its own is done (then it finishes the jobs it took and hands over).
            queue.busy = true;
            drop(queue);
            let unwinding = Unwinding(self);
            let mut own_done = false;
            run(|finished| {
                let mut queue = self.lock();
                if !finished.is_empty() {
                    own_done |= finished.contains(&ticket);
                    for t in finished {
                        // Nobody waits for an abandoned job's ticket.
                        if !queue.abandoned.remove(t) {
                            queue.finished.push(*t);
                        }
                    }
                    self.hashed.notify_all();
                }
                if own_done {
                    Vec::new()
                } else {
                    std::mem::take(&mut queue.jobs)
                }
            });
            std::mem::forget(unwinding);
            queue = self.lock();
            queue.busy = false;
            self.hashed.notify_all();
        }
    }

    /// The stream of the job `ticket` is gone: nobody will wait for it.
    fn abandon(&self, ticket: u64) {
        self.lock().forget(ticket);
    }
}

impl Queue {
    /// Nobody will wait for the job `ticket`: its end is not to be kept.
    fn forget(&mut self, ticket: u64) {
        match self.finished.iter().position(|t| *t == ticket) {
            Some(at) => drop(self.finished.swap_remove(at)),
            None => drop(self.abandoned.insert(ticket)),
        }
    }
}

/// Blocks a lane runs before the hasher looks for new jobs: a stream that starts while others
/// are hashed joins the lanes within this many blocks (4 KiB: ~20 µs of one stream alone).
const SLICE: usize = 64;

/// Hashes jobs 16 lanes at a time, each lane taking the next job when its own is done. Between
/// slices of [`SLICE`] blocks, `more` is told the tickets just finished and answers the jobs
/// queued since (none: no more), so that streams arriving while one is hashed alone join it in
/// the lanes instead of waiting for it. Returns once every job it was given is done. A job
/// alone in the lanes is hashed alone (16 lanes for one stream would cost more than the
/// scalar kernel).
fn run(mut more: impl FnMut(&[u64]) -> Vec<Job>) {
    // SAFETY (every dereference below): each job's state and bytes stay borrowed by its waiting
    // caller (see `Job`) until its ticket is reported finished; no two jobs share a state (a
    // stream is borrowed mutably while its job waits).
    let bytes = |job: &Job, from: usize| unsafe {
        std::slice::from_raw_parts(job.bytes.add(from * 64), (job.blocks - from) * 64)
    };
    let mut pending = std::collections::VecDeque::new();
    let mut finished = Vec::new();
    let mut taking = true;
    // Per lane: the job and the blocks of it done.
    let mut slots: [Option<(Job, usize)>; x16::LANES] = [const { None }; x16::LANES];
    let mut states = [[0u32; 4]; x16::LANES];
    loop {
        if taking || !finished.is_empty() {
            let new = more(&finished);
            finished.clear();
            taking = !new.is_empty() || taking && slots.iter().any(Option::is_some);
            for job in new {
                if job.blocks == 0 {
                    finished.push(job.ticket);
                } else {
                    pending.push_back(job);
                }
            }
            if !finished.is_empty() {
                continue;
            }
        }
        // Each free lane takes the first job queued whose stream is in no lane: a stream's
        // jobs run one after the other, in the order they were queued.
        for lane in 0..x16::LANES {
            if slots[lane].is_some() {
                continue;
            }
            let free = pending.iter().position(|job: &Job| {
                !slots
                    .iter()
                    .flatten()
                    .any(|(busy, _)| Arc::ptr_eq(&busy.state, &job.state))
            });
            let Some(job) = free.and_then(|at| pending.remove(at)) else {
                break;
            };
            states[lane] = unsafe { *job.state() };
            slots[lane] = Some((job, 0));
        }
        let busy = slots.iter().filter(|slot| slot.is_some()).count();
        if busy == 0 {
            return; // (taking stops once nothing new comes and no lane is busy)
        }
        let step = slots
            .iter()
            .flatten()
            .map(|(job, from)| job.blocks - from)
            .min()
            .expect("lanes are busy")
            .min(SLICE);
        if busy == 1 {
            let lane = slots
                .iter()
                .position(Option::is_some)
                .expect("one lane is busy");
            let (job, from) = slots[lane].as_ref().expect("the busy lane");
            compress(&mut states[lane], &bytes(job, *from)[..step * 64]);
        } else {
            let starts = std::array::from_fn(|lane| {
                slots[lane]
                    .as_ref()
                    .map(|(job, from)| bytes(job, *from).as_ptr())
            });
            // SAFETY: the lanes are there (`Lanes::wide`); each busy lane has `step` blocks
            // from its start.
            unsafe { x16::compress(&mut states, &starts, step) };
        }
        for (slot, state) in slots.iter_mut().zip(&states) {
            if let Some((job, from)) = slot {
                *from += step;
                if *from == job.blocks {
                    unsafe { *job.state() = *state };
                    finished.push(job.ticket);
                    *slot = None;
                }
            }
        }
    }
}

/// Wakes the waiters of a batch whose hashing panicked (they panic too: their states are lost).
struct Unwinding<'a>(&'a Lanes);

impl Drop for Unwinding<'_> {
    fn drop(&mut self) {
        if let Ok(mut queue) = self.0.queue.lock() {
            queue.poisoned = true;
            queue.busy = false;
        }
        self.0.hashed.notify_all();
    }
}

/// MD5 (RFC 1321) of 16 streams at once, one per 32-bit lane of AVX-512 registers; or, where
/// the processor has AVX2 only (AMD before Zen 4, say), of two groups of 8 lanes in AVX2
/// registers, a group skipped when none of its lanes is busy.
#[cfg(target_arch = "x86_64")]
mod x16 {
    use std::arch::x86_64::*;

    pub const LANES: usize = 16;

    pub fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            || std::arch::is_x86_feature_detected!("avx2")
    }

    /// Runs `blocks` blocks of each busy lane (`starts[lane]` is where its blocks are) into
    /// `states`, with AVX-512 where it is there, AVX2 otherwise.
    ///
    /// # Safety
    /// [`available`], and each busy lane's start must have `blocks * 64` bytes.
    pub unsafe fn compress(
        states: &mut [[u32; 4]; LANES],
        starts: &[Option<*const u8>; LANES],
        blocks: usize,
    ) {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F is there; the lanes are the caller's promise.
            return unsafe { compress_512(states, starts, blocks) };
        }
        for group in 0..2 {
            let lanes = group * 8..group * 8 + 8;
            if starts[lanes.clone()].iter().all(Option::is_none) {
                continue;
            }
            let states: &mut [[u32; 4]; 8] = (&mut states[lanes.clone()]).try_into().unwrap();
            let starts: &[Option<*const u8>; 8] = starts[lanes].try_into().unwrap();
            // SAFETY: AVX2 is there (`available`, without AVX-512F); the lanes are the
            // caller's promise.
            unsafe { compress_256(states, starts, blocks) };
        }
    }

    /// What [`compress`] does for 8 lanes, in AVX2 registers: each block's words gathered by
    /// transposing the 8 lanes' blocks (two 8 x 8 transposes of 32-bit words), no gathers.
    ///
    /// # Safety
    /// AVX2 must be there, and each busy lane's start must have `blocks * 64` bytes.
    #[target_feature(enable = "avx2")]
    pub unsafe fn compress_256(
        states: &mut [[u32; 4]; 8],
        starts: &[Option<*const u8>; 8],
        blocks: usize,
    ) {
        let mut at: [*const u8; 8] = starts.map(|start| start.unwrap_or(IDLE.as_ptr()));
        let stride: [usize; 8] = starts.map(|start| if start.is_some() { 64 } else { 0 });
        let word = |i: usize| {
            let lane: [u32; 8] = std::array::from_fn(|lane| states[lane][i]);
            unsafe { _mm256_loadu_si256(lane.as_ptr().cast()) }
        };
        let (mut a, mut b, mut c, mut d) = (word(0), word(1), word(2), word(3));
        let ones = _mm256_set1_epi32(-1);
        macro_rules! f {
            ($b:ident, $c:ident, $d:ident) => {
                _mm256_xor_si256($d, _mm256_and_si256($b, _mm256_xor_si256($c, $d)))
            };
        }
        macro_rules! g {
            ($b:ident, $c:ident, $d:ident) => {
                _mm256_xor_si256($c, _mm256_and_si256($d, _mm256_xor_si256($b, $c)))
            };
        }
        macro_rules! h {
            ($b:ident, $c:ident, $d:ident) => {
                _mm256_xor_si256(_mm256_xor_si256($b, $c), $d)
            };
        }
        macro_rules! i {
            ($b:ident, $c:ident, $d:ident) => {
                _mm256_xor_si256($c, _mm256_or_si256($b, _mm256_xor_si256($d, ones)))
            };
        }
        macro_rules! step {
            ($f:ident, $a:ident, $b:ident, $c:ident, $d:ident, $m:expr, $k:expr, $s:literal) => {
                let t = _mm256_add_epi32(
                    _mm256_add_epi32($a, $f!($b, $c, $d)),
                    _mm256_add_epi32($m, _mm256_set1_epi32($k as i32)),
                );
                $a = _mm256_add_epi32(
                    $b,
                    _mm256_or_si256(
                        _mm256_slli_epi32::<$s>(t),
                        _mm256_srli_epi32::<{ 32 - $s }>(t),
                    ),
                );
            };
        }
        for _ in 0..blocks {
            let mut m = [_mm256_setzero_si256(); 16];
            for half in 0..2 {
                // SAFETY: a busy lane reads its own block (the caller's promise), an idle one
                // `IDLE`, 32 bytes at 0 or 32 of 64.
                let r: [__m256i; 8] = std::array::from_fn(|lane| unsafe {
                    _mm256_loadu_si256(at[lane].add(32 * half).cast())
                });
                let t: [__m256i; 8] = std::array::from_fn(|j| {
                    let (x, y) = (r[j / 2 * 2], r[j / 2 * 2 + 1]);
                    if j % 2 == 0 {
                        _mm256_unpacklo_epi32(x, y)
                    } else {
                        _mm256_unpackhi_epi32(x, y)
                    }
                });
                let u: [__m256i; 8] = std::array::from_fn(|j| {
                    let quad = j / 4 * 4;
                    let (x, y) = (t[quad + j % 4 / 2], t[quad + 2 + j % 4 / 2]);
                    if j % 2 == 0 {
                        _mm256_unpacklo_epi64(x, y)
                    } else {
                        _mm256_unpackhi_epi64(x, y)
                    }
                });
                for w in 0..4 {
                    m[8 * half + w] = _mm256_permute2x128_si256::<0x20>(u[w], u[w + 4]);
                    m[8 * half + w + 4] = _mm256_permute2x128_si256::<0x31>(u[w], u[w + 4]);
                }
            }
            let (a0, b0, c0, d0) = (a, b, c, d);
            step!(f, a, b, c, d, m[0], 0xd76aa478_u32, 7);
            step!(f, d, a, b, c, m[1], 0xe8c7b756_u32, 12);
            step!(f, c, d, a, b, m[2], 0x242070db_u32, 17);
            step!(f, b, c, d, a, m[3], 0xc1bdceee_u32, 22);
            step!(f, a, b, c, d, m[4], 0xf57c0faf_u32, 7);
            step!(f, d, a, b, c, m[5], 0x4787c62a_u32, 12);
            step!(f, c, d, a, b, m[6], 0xa8304613_u32, 17);
            step!(f, b, c, d, a, m[7], 0xfd469501_u32, 22);
            step!(f, a, b, c, d, m[8], 0x698098d8_u32, 7);
            step!(f, d, a, b, c, m[9], 0x8b44f7af_u32, 12);
            step!(f, c, d, a, b, m[10], 0xffff5bb1_u32, 17);
            step!(f, b, c, d, a, m[11], 0x895cd7be_u32, 22);
            step!(f, a, b, c, d, m[12], 0x6b901122_u32, 7);
            step!(f, d, a, b, c, m[13], 0xfd987193_u32, 12);
            step!(f, c, d, a, b, m[14], 0xa679438e_u32, 17);
            step!(f, b, c, d, a, m[15], 0x49b40821_u32, 22);
            step!(g, a, b, c, d, m[1], 0xf61e2562_u32, 5);
            step!(g, d, a, b, c, m[6], 0xc040b340_u32, 9);
            step!(g, c, d, a, b, m[11], 0x265e5a51_u32, 14);
            step!(g, b, c, d, a, m[0], 0xe9b6c7aa_u32, 20);
            step!(g, a, b, c, d, m[5], 0xd62f105d_u32, 5);
            step!(g, d, a, b, c, m[10], 0x02441453_u32, 9);
            step!(g, c, d, a, b, m[15], 0xd8a1e681_u32, 14);
            step!(g, b, c, d, a, m[4], 0xe7d3fbc8_u32, 20);
            step!(g, a, b, c, d, m[9], 0x21e1cde6_u32, 5);
            step!(g, d, a, b, c, m[14], 0xc33707d6_u32, 9);
            step!(g, c, d, a, b, m[3], 0xf4d50d87_u32, 14);
            step!(g, b, c, d, a, m[8], 0x455a14ed_u32, 20);
            step!(g, a, b, c, d, m[13], 0xa9e3e905_u32, 5);
            step!(g, d, a, b, c, m[2], 0xfcefa3f8_u32, 9);
            step!(g, c, d, a, b, m[7], 0x676f02d9_u32, 14);
            step!(g, b, c, d, a, m[12], 0x8d2a4c8a_u32, 20);
            step!(h, a, b, c, d, m[5], 0xfffa3942_u32, 4);
            step!(h, d, a, b, c, m[8], 0x8771f681_u32, 11);
            step!(h, c, d, a, b, m[11], 0x6d9d6122_u32, 16);
            step!(h, b, c, d, a, m[14], 0xfde5380c_u32, 23);
            step!(h, a, b, c, d, m[1], 0xa4beea44_u32, 4);
            step!(h, d, a, b, c, m[4], 0x4bdecfa9_u32, 11);
            step!(h, c, d, a, b, m[7], 0xf6bb4b60_u32, 16);
            step!(h, b, c, d, a, m[10], 0xbebfbc70_u32, 23);
            step!(h, a, b, c, d, m[13], 0x289b7ec6_u32, 4);
            step!(h, d, a, b, c, m[0], 0xeaa127fa_u32, 11);
            step!(h, c, d, a, b, m[3], 0xd4ef3085_u32, 16);
            step!(h, b, c, d, a, m[6], 0x04881d05_u32, 23);
            step!(h, a, b, c, d, m[9], 0xd9d4d039_u32, 4);
            step!(h, d, a, b, c, m[12], 0xe6db99e5_u32, 11);
            step!(h, c, d, a, b, m[15], 0x1fa27cf8_u32, 16);
            step!(h, b, c, d, a, m[2], 0xc4ac5665_u32, 23);
            step!(i, a, b, c, d, m[0], 0xf4292244_u32, 6);
            step!(i, d, a, b, c, m[7], 0x432aff97_u32, 10);
            step!(i, c, d, a, b, m[14], 0xab9423a7_u32, 15);
            step!(i, b, c, d, a, m[5], 0xfc93a039_u32, 21);
            step!(i, a, b, c, d, m[12], 0x655b59c3_u32, 6);
            step!(i, d, a, b, c, m[3], 0x8f0ccc92_u32, 10);
            step!(i, c, d, a, b, m[10], 0xffeff47d_u32, 15);
            step!(i, b, c, d, a, m[1], 0x85845dd1_u32, 21);
            step!(i, a, b, c, d, m[8], 0x6fa87e4f_u32, 6);
            step!(i, d, a, b, c, m[15], 0xfe2ce6e0_u32, 10);
            step!(i, c, d, a, b, m[6], 0xa3014314_u32, 15);
            step!(i, b, c, d, a, m[13], 0x4e0811a1_u32, 21);
            step!(i, a, b, c, d, m[4], 0xf7537e82_u32, 6);
            step!(i, d, a, b, c, m[11], 0xbd3af235_u32, 10);
            step!(i, c, d, a, b, m[2], 0x2ad7d2bb_u32, 15);
            step!(i, b, c, d, a, m[9], 0xeb86d391_u32, 21);
            a = _mm256_add_epi32(a, a0);
            b = _mm256_add_epi32(b, b0);
            c = _mm256_add_epi32(c, c0);
            d = _mm256_add_epi32(d, d0);
            for lane in 0..8 {
                at[lane] = at[lane].wrapping_add(stride[lane]);
            }
        }
        let mut out = [[0u32; 8]; 4];
        for (words, v) in out.iter_mut().zip([a, b, c, d]) {
            unsafe { _mm256_storeu_si256(words.as_mut_ptr().cast(), v) };
        }
        for (lane, state) in states.iter_mut().enumerate() {
            *state = [out[0][lane], out[1][lane], out[2][lane], out[3][lane]];
        }
    }

    /// What an idle lane reads: a block of its own, so that it never reads past anything.
    static IDLE: [u8; 64] = [0; 64];

    /// What [`compress`] does, in AVX-512 registers; idle lanes (`None`) compute nothing
    /// anyone keeps.
    ///
    /// # Safety
    /// AVX-512F must be there, and each busy lane's start must have `blocks * 64` bytes.
    #[target_feature(enable = "avx512f")]
    unsafe fn compress_512(
        states: &mut [[u32; 4]; LANES],
        starts: &[Option<*const u8>; LANES],
        blocks: usize,
    ) {
        // Each lane's words are gathered at `IDLE + offset` (wrapping): an idle lane has offset
        // 0 and stride 0, so it reads `IDLE` over and over.
        let base = IDLE.as_ptr();
        let offsets: [i64; LANES] =
            starts.map(|start| start.map_or(0, |start| (start as i64).wrapping_sub(base as i64)));
        let strides: [i64; LANES] = starts.map(|start| if start.is_some() { 64 } else { 0 });
        let load = |v: &[i64]| unsafe { _mm512_loadu_si512(v.as_ptr().cast()) };
        let (mut low, mut high) = (load(&offsets[..8]), load(&offsets[8..]));
        let (step_low, step_high) = (load(&strides[..8]), load(&strides[8..]));
        let word = |i: usize| {
            let lane: [u32; LANES] = std::array::from_fn(|lane| states[lane][i]);
            unsafe { _mm512_loadu_si512(lane.as_ptr().cast()) }
        };
        let (mut a, mut b, mut c, mut d) = (word(0), word(1), word(2), word(3));
        // Each step's function of b, c and d as a truth table for `vpternlogd`: F (b ? c : d)
        // 0xca, G (d ? b : c) 0xe4, H (b ^ c ^ d) 0x96, I (c ^ (b | !d)) 0x39.
        macro_rules! step {
            ($f:literal, $a:ident, $b:ident, $c:ident, $d:ident, $m:expr, $k:expr, $s:literal) => {
                let t = _mm512_add_epi32(
                    _mm512_add_epi32($a, _mm512_ternarylogic_epi32::<$f>($b, $c, $d)),
                    _mm512_add_epi32($m, _mm512_set1_epi32($k as i32)),
                );
                $a = _mm512_add_epi32($b, _mm512_rol_epi32::<$s>(t));
            };
        }
        for _ in 0..blocks {
            let m: [__m512i; 16] = std::array::from_fn(|w| {
                // SAFETY: a busy lane reads its own block (the caller's promise), an idle one
                // `IDLE`; `base + 4w` stays within `IDLE`.
                unsafe {
                    let at = base.add(4 * w).cast::<i32>();
                    let low = _mm512_i64gather_epi32::<1>(low, at);
                    let high = _mm512_i64gather_epi32::<1>(high, at);
                    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(low), high)
                }
            });
            let (a0, b0, c0, d0) = (a, b, c, d);
            step!(0xca, a, b, c, d, m[0], 0xd76aa478_u32, 7);
            step!(0xca, d, a, b, c, m[1], 0xe8c7b756_u32, 12);
            step!(0xca, c, d, a, b, m[2], 0x242070db_u32, 17);
            step!(0xca, b, c, d, a, m[3], 0xc1bdceee_u32, 22);
            step!(0xca, a, b, c, d, m[4], 0xf57c0faf_u32, 7);
            step!(0xca, d, a, b, c, m[5], 0x4787c62a_u32, 12);
            step!(0xca, c, d, a, b, m[6], 0xa8304613_u32, 17);
            step!(0xca, b, c, d, a, m[7], 0xfd469501_u32, 22);
            step!(0xca, a, b, c, d, m[8], 0x698098d8_u32, 7);
            step!(0xca, d, a, b, c, m[9], 0x8b44f7af_u32, 12);
            step!(0xca, c, d, a, b, m[10], 0xffff5bb1_u32, 17);
            step!(0xca, b, c, d, a, m[11], 0x895cd7be_u32, 22);
            step!(0xca, a, b, c, d, m[12], 0x6b901122_u32, 7);
            step!(0xca, d, a, b, c, m[13], 0xfd987193_u32, 12);
            step!(0xca, c, d, a, b, m[14], 0xa679438e_u32, 17);
            step!(0xca, b, c, d, a, m[15], 0x49b40821_u32, 22);
            step!(0xe4, a, b, c, d, m[1], 0xf61e2562_u32, 5);
            step!(0xe4, d, a, b, c, m[6], 0xc040b340_u32, 9);
            step!(0xe4, c, d, a, b, m[11], 0x265e5a51_u32, 14);
            step!(0xe4, b, c, d, a, m[0], 0xe9b6c7aa_u32, 20);
            step!(0xe4, a, b, c, d, m[5], 0xd62f105d_u32, 5);
            step!(0xe4, d, a, b, c, m[10], 0x02441453_u32, 9);
            step!(0xe4, c, d, a, b, m[15], 0xd8a1e681_u32, 14);
            step!(0xe4, b, c, d, a, m[4], 0xe7d3fbc8_u32, 20);
            step!(0xe4, a, b, c, d, m[9], 0x21e1cde6_u32, 5);
            step!(0xe4, d, a, b, c, m[14], 0xc33707d6_u32, 9);
            step!(0xe4, c, d, a, b, m[3], 0xf4d50d87_u32, 14);
            step!(0xe4, b, c, d, a, m[8], 0x455a14ed_u32, 20);
            step!(0xe4, a, b, c, d, m[13], 0xa9e3e905_u32, 5);
            step!(0xe4, d, a, b, c, m[2], 0xfcefa3f8_u32, 9);
            step!(0xe4, c, d, a, b, m[7], 0x676f02d9_u32, 14);
            step!(0xe4, b, c, d, a, m[12], 0x8d2a4c8a_u32, 20);
            step!(0x96, a, b, c, d, m[5], 0xfffa3942_u32, 4);
            step!(0x96, d, a, b, c, m[8], 0x8771f681_u32, 11);
            step!(0x96, c, d, a, b, m[11], 0x6d9d6122_u32, 16);
            step!(0x96, b, c, d, a, m[14], 0xfde5380c_u32, 23);
            step!(0x96, a, b, c, d, m[1], 0xa4beea44_u32, 4);
            step!(0x96, d, a, b, c, m[4], 0x4bdecfa9_u32, 11);
            step!(0x96, c, d, a, b, m[7], 0xf6bb4b60_u32, 16);
            step!(0x96, b, c, d, a, m[10], 0xbebfbc70_u32, 23);
            step!(0x96, a, b, c, d, m[13], 0x289b7ec6_u32, 4);
            step!(0x96, d, a, b, c, m[0], 0xeaa127fa_u32, 11);
            step!(0x96, c, d, a, b, m[3], 0xd4ef3085_u32, 16);
            step!(0x96, b, c, d, a, m[6], 0x04881d05_u32, 23);
            step!(0x96, a, b, c, d, m[9], 0xd9d4d039_u32, 4);
            step!(0x96, d, a, b, c, m[12], 0xe6db99e5_u32, 11);
            step!(0x96, c, d, a, b, m[15], 0x1fa27cf8_u32, 16);
            step!(0x96, b, c, d, a, m[2], 0xc4ac5665_u32, 23);
            step!(0x39, a, b, c, d, m[0], 0xf4292244_u32, 6);
            step!(0x39, d, a, b, c, m[7], 0x432aff97_u32, 10);
            step!(0x39, c, d, a, b, m[14], 0xab9423a7_u32, 15);
            step!(0x39, b, c, d, a, m[5], 0xfc93a039_u32, 21);
            step!(0x39, a, b, c, d, m[12], 0x655b59c3_u32, 6);
            step!(0x39, d, a, b, c, m[3], 0x8f0ccc92_u32, 10);
            step!(0x39, c, d, a, b, m[10], 0xffeff47d_u32, 15);
            step!(0x39, b, c, d, a, m[1], 0x85845dd1_u32, 21);
            step!(0x39, a, b, c, d, m[8], 0x6fa87e4f_u32, 6);
            step!(0x39, d, a, b, c, m[15], 0xfe2ce6e0_u32, 10);
            step!(0x39, c, d, a, b, m[6], 0xa3014314_u32, 15);
            step!(0x39, b, c, d, a, m[13], 0x4e0811a1_u32, 21);
            step!(0x39, a, b, c, d, m[4], 0xf7537e82_u32, 6);
            step!(0x39, d, a, b, c, m[11], 0xbd3af235_u32, 10);
            step!(0x39, c, d, a, b, m[2], 0x2ad7d2bb_u32, 15);
            step!(0x39, b, c, d, a, m[9], 0xeb86d391_u32, 21);
            a = _mm512_add_epi32(a, a0);
            b = _mm512_add_epi32(b, b0);
            c = _mm512_add_epi32(c, c0);
            d = _mm512_add_epi32(d, d0);
            low = _mm512_add_epi64(low, step_low);
            high = _mm512_add_epi64(high, step_high);
        }
        let mut out = [[0u32; LANES]; 4];
        for (words, v) in out.iter_mut().zip([a, b, c, d]) {
            unsafe { _mm512_storeu_si512(words.as_mut_ptr().cast(), v) };
        }
        for (lane, state) in states.iter_mut().enumerate() {
            *state = [out[0][lane], out[1][lane], out[2][lane], out[3][lane]];
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x16 {
    pub const LANES: usize = 16;

    pub fn available() -> bool {
        false
    }

    /// Never called: [`available`] is false.
    pub unsafe fn compress(_: &mut [[u32; 4]; LANES], _: &[Option<*const u8>; LANES], _: usize) {
        unreachable!("no MD5 lanes off x86-64")
    }
}

/// One block of one stream in plain Rust, where `md5-asm` is not (off x86-64).
#[cfg(not(target_arch = "x86_64"))]
mod portable {
    const K: [u32; 64] = [
        0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613,
        0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193,
        0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d,
        0x02441453, 0xd8a1e681, 0xe7d3fbc8, 0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed,
        0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122,
        0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
        0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665, 0xf4292244,
        0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
        0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb,
        0xeb86d391,
    ];
    const S: [u32; 16] = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];

    pub fn compress(state: &mut [u32; 4], block: &[u8; 64]) {
        let m: [u32; 16] = std::array::from_fn(|w| {
            u32::from_le_bytes(block[4 * w..4 * w + 4].try_into().unwrap())
        });
        let [mut a, mut b, mut c, mut d] = *state;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let t = a.wrapping_add(f).wrapping_add(K[i]).wrapping_add(m[g]);
            (a, d, c) = (d, c, b);
            b = b.wrapping_add(t.rotate_left(S[i / 16 * 4 + i % 4]));
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d]) {
            *s = s.wrapping_add(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Digest as _;

    fn reference(bytes: &[u8]) -> [u8; 16] {
        md5::Md5::digest(bytes).into()
    }

    /// Random bytes from a seed (xorshift): reproducible without a generator crate's API.
    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn one_stream_in_pieces_of_every_size_is_the_md5_of_its_bytes() {
        let data = bytes(1, 300_000);
        let shared = bytes::Bytes::from(data.clone());
        for piece in [1, 63, 64, 65, 4095, 4096, 4097, 65_536, 100_003, 300_000] {
            for later in [false, true] {
                let mut md5 = Md5::new();
                for (i, chunk) in data.chunks(piece).enumerate() {
                    if later {
                        md5.update_later(shared.slice(i * piece..i * piece + chunk.len()));
                    } else {
                        md5.update(chunk);
                    }
                }
                assert_eq!(
                    md5.finalize(),
                    reference(&data),
                    "pieces of {piece} bytes, hashed later: {later}"
                );
            }
        }
        assert_eq!(Md5::new().finalize(), reference(b""));
    }

    /// The AVX2 kernel alone (the batch test above runs the AVX-512 one where the processor
    /// has it): 8 lanes, some idle, over several blocks, each busy lane's state the scalar
    /// kernel's; idle lanes read nothing of anyone's.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_lanes_give_each_stream_the_state_of_the_scalar_kernel() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let blocks = 5;
        let data: Vec<Vec<u8>> = (0..8u64).map(|t| bytes(t + 7, blocks * 64)).collect();
        for idle in [vec![], vec![3], vec![0, 1, 2, 4, 5, 6, 7], vec![1, 6]] {
            let mut states: [[u32; 4]; 8] =
                std::array::from_fn(|lane| [lane as u32, 0x1234, 0xfeed, 0xbeef ^ lane as u32]);
            let before = states;
            let starts: [Option<*const u8>; 8] =
                std::array::from_fn(|lane| (!idle.contains(&lane)).then(|| data[lane].as_ptr()));
            unsafe { x16::compress_256(&mut states, &starts, blocks) };
            for lane in (0..8).filter(|lane| !idle.contains(lane)) {
                let mut alone = before[lane];
                compress(&mut alone, &data[lane]);
                assert_eq!(states[lane], alone, "lane {lane}, idle {idle:?}");
            }
        }
    }

    /// A batch as the lanes take it: more streams than lanes, of lengths from none to many
    /// blocks, so lanes run together, refill as their streams end, and finish a last stream
    /// alone. Each state must be the one the scalar kernel gives.
    #[test]
    fn a_batch_through_the_lanes_gives_each_stream_its_own_state() {
        assert!(
            lanes().wide || !cfg!(target_arch = "x86_64") || !x16::available(),
            "AVX-512 or AVX2 is there but the lanes do not use it"
        );
        if !x16::available() {
            return;
        }
        let data: Vec<Vec<u8>> = (0..37u64)
            .map(|t| {
                bytes(
                    t + 100,
                    ((t * 37 + 5) % 41) as usize * 64 + t as usize % 3 * 64_000,
                )
            })
            .collect();
        let states: Vec<Arc<State>> = (0..data.len())
            .map(|_| Arc::new(State(UnsafeCell::new(INIT))))
            .collect();
        let mut jobs: Vec<Job> = states
            .iter()
            .zip(&data)
            .enumerate()
            .map(|(ticket, (state, bytes))| Job {
                ticket: ticket as u64,
                state: state.clone(),
                bytes: bytes.as_ptr(),
                blocks: bytes.len() / 64,
                owner: None,
            })
            .collect();
        // Given in instalments, as if queued while the first ones are hashed: one alone, then
        // three, then the rest.
        let mut finished = Vec::new();
        let mut asked = 0;
        run(|done| {
            finished.extend_from_slice(done);
            asked += 1;
            let take = match asked {
                1 => 1,
                2 => 3,
                _ => jobs.len(),
            };
            jobs.drain(..take.min(jobs.len())).collect()
        });
        finished.sort();
        assert_eq!(finished, (0..data.len() as u64).collect::<Vec<_>>());
        for (t, (state, bytes)) in states.iter().zip(&data).enumerate() {
            let mut alone = INIT;
            compress(&mut alone, bytes);
            assert_eq!(
                unsafe { *state.0.get() },
                alone,
                "stream {t} of {} blocks",
                bytes.len() / 64
            );
        }
    }

    /// Many threads at once, each a stream fed in pieces of its own odd sizes: batches mix
    /// streams of different lengths and offsets in one block, and each stream's digest must be
    /// its own.
    #[test]
    fn streams_hashed_together_each_get_their_own_md5() {
        let threads: Vec<_> = (0..24u64)
            .map(|t| {
                std::thread::spawn(move || {
                    let data = bytes(t + 7, 1_000_000 + t as usize * 4_099);
                    let piece = 4_096 + (t as usize * 7_919) % 70_000;
                    let mut md5 = Md5::new();
                    // Odd streams hand their bytes over (hashed later), a stream in four also
                    // mixes in bytes hashed at once; every fifth leaves a stream with bytes
                    // handed over and never waited for.
                    let shared = bytes::Bytes::from(data.clone());
                    for (i, chunk) in data.chunks(piece).enumerate() {
                        if t % 2 == 1 && !(t % 4 == 3 && i % 2 == 0) {
                            let from = i * piece;
                            md5.update_later(shared.slice(from..from + chunk.len()));
                        } else {
                            md5.update(chunk);
                        }
                    }
                    if t % 5 == 0 {
                        let mut gone = Md5::new();
                        gone.update_later(shared.clone());
                    }
                    assert_eq!(md5.finalize(), reference(&data), "stream {t}");
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("a stream's thread");
        }
        // Every ticket was waited for or abandoned: none is left behind.
        let mut settle = Md5::new();
        settle.update(&bytes(1, 8192));
        let queue = lanes().lock();
        assert!(
            queue.abandoned.is_empty() && queue.finished.is_empty(),
            "{} abandoned and {} finished tickets left",
            queue.abandoned.len(),
            queue.finished.len()
        );
    }
}
