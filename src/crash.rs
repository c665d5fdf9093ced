//! Named crash points in the transfer core, for the fault-injection tests: each sits between a
//! side effect (a rename, a declaration, a finalize, a commit) and the record of it, where a
//! crash is most likely to lose or repeat something.
//!
//! `MASV_CRASH_AT=NAME` (or `NAME@N`, the N-th time the point is reached) makes the process
//! abort there, as `kill -9` or a power cut would stop it: no unwinding, no flush. Points exist
//! only in debug builds (`debug_assertions`): a release build has none and reads no variable.

/// Every crash point, in the order a transfer meets them. The crash-point test aborts the agent
/// at each in turn; a test checks that this list and the points in the code agree.
pub const POINTS: &[&str] = &[
    // Downloads.
    "download.planned",
    "download.chunk.written",
    "download.chunks.synced",
    "download.chunk.committed",
    "download.file.synced",
    "download.file.renamed",
    "download.files.synced",
    "download.file.complete",
    // Uploads.
    "upload.file.declaring",
    "upload.file.declared",
    "upload.multipart.opened",
    "upload.part.sent",
    "upload.part.committed",
    "upload.file.finalized",
    "upload.package.finalizing",
    "upload.package.finalized",
    // Post-transfer actions: the end of a transfer recorded with its event, not yet delivered;
    // an action done, not yet recorded as delivered.
    "transfer.ended",
    "actions.delivery.sent",
];

/// Aborts the process if `MASV_CRASH_AT` names this point (and this is the time asked for).
#[macro_export]
macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(debug_assertions)]
        $crate::crash::reached($name);
    };
}

#[cfg(debug_assertions)]
#[doc(hidden)]
pub fn reached(name: &str) {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let target = TARGET.get_or_init(|| {
        let spec = std::env::var("MASV_CRASH_AT").ok()?;
        let (point, nth) = match spec.split_once('@') {
            Some((p, n)) => (p.to_owned(), n.parse().unwrap_or(1)),
            None => (spec, 1),
        };
        assert!(
            POINTS.contains(&point.as_str()),
            "MASV_CRASH_AT={point}: no such crash point; see masv_agent::crash::POINTS"
        );
        Some((point, nth.max(1)))
    });
    if let Some((point, nth)) = target
        && point == name
        && COUNT.fetch_add(1, Ordering::SeqCst) + 1 == *nth
    {
        eprintln!("crash point {name} reached: aborting");
        std::process::abort();
    }
}
