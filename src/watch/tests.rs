use std::io::Write;

use super::*;

fn spec(root: &Path, mode: WatchMode, settle_ms: u64) -> WatchSpec {
    WatchSpec {
        root: root.to_path_buf(),
        recursive: true,
        mode,
        settle: Duration::from_millis(settle_ms),
        filter: Arc::new(|rel: &Path| rel.extension().is_none_or(|x| x != "tmp")),
    }
}

/// The next settled file (`Quiet` passed over).
async fn next(rx: &mut mpsc::Receiver<Watched>, within: Duration) -> Option<Settled> {
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, rx.recv())
            .await
            .ok()
            .flatten()?
        {
            Watched::Settled(s) => return Some(s),
            Watched::Quiet => continue,
            Watched::Trouble(e) => panic!("a settled file, not trouble: {e}"),
        }
    }
}

/// The event loop without inotify: the test hands it the events (or none) itself.
fn scripted(
    root: &Path,
) -> (
    EventQueue,
    Arc<AtomicBool>,
    mpsc::Receiver<Watched>,
    CancellationToken,
) {
    let (events, incoming) = mpsc::channel(2);
    let overflow = Arc::new(AtomicBool::new(false));
    let (out, rx) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    tokio::spawn(run_events(
        spec(root, WatchMode::Events, 100),
        Box::new(()),
        incoming,
        overflow.clone(),
        out,
        cancel.clone(),
    ));
    (events, overflow, rx, cancel)
}

#[tokio::test]
async fn an_inotify_overflow_or_a_full_queue_rescans_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (events, overflow, mut rx, cancel) = scripted(dir.path());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Files that no event named are unknown until something says events were lost.
    std::fs::write(dir.path().join("a.txt"), b"a").unwrap();
    assert!(next(&mut rx, Duration::from_millis(500)).await.is_none());
    // The kernel's queue overflowed (IN_Q_OVERFLOW arrives as a Rescan flag).
    let rescan = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
    events.send(Ok(rescan)).await.unwrap();
    let found = next(&mut rx, Duration::from_secs(2)).await.unwrap();
    assert_eq!(found.path, dir.path().join("a.txt"));

    // Our own queue full: the callback drops the event and flags the loss.
    std::fs::write(dir.path().join("b.txt"), b"b").unwrap();
    let (full, _never_read) = mpsc::channel(1);
    full.try_send(Ok(notify::Event::new(EventKind::Any)))
        .unwrap();
    let callback = hand_on(full, overflow.clone());
    callback(Ok(notify::Event::new(EventKind::Any)));
    assert!(overflow.load(Ordering::Relaxed), "the loss is flagged");
    let found = next(&mut rx, Duration::from_secs(2)).await.unwrap();
    assert_eq!(found.path, dir.path().join("b.txt"));
    assert!(
        next(&mut rx, Duration::from_millis(400)).await.is_none(),
        "a.txt is not reported again"
    );
    cancel.cancel();
}

#[tokio::test]
async fn the_watch_limit_reached_later_is_reported_and_the_tree_still_scanned() {
    let dir = tempfile::tempdir().unwrap();
    let (events, _overflow, mut rx, cancel) = scripted(dir.path());
    // inotify refused a folder created after the start (notify maps ENOSPC to this).
    std::fs::create_dir(dir.path().join("new")).unwrap();
    std::fs::write(dir.path().join("new/c.txt"), b"c").unwrap();
    let refused =
        notify::Error::new(notify::ErrorKind::MaxFilesWatch).add_path(dir.path().join("new"));
    events.send(Err(refused)).await.unwrap();
    let Some(Watched::Trouble(trouble)) = tokio::time::timeout(Duration::from_secs(2), rx.recv())
        .await
        .unwrap()
    else {
        panic!("the watch limit is reported first")
    };
    assert!(
        trouble
            .to_string()
            .contains("sysctl -w fs.inotify.max_user_watches="),
        "{trouble}"
    );
    let found = next(&mut rx, Duration::from_secs(2)).await.unwrap();
    assert_eq!(found.path, dir.path().join("new/c.txt"));
    cancel.cancel();
}

#[tokio::test]
async fn a_file_written_in_bursts_is_reported_once_after_the_quiet_period() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let (mut rx, _task) = watch(spec(dir.path(), WatchMode::Events, 400), cancel.clone()).unwrap();
    let path = dir.path().join("clip.mov");
    let mut file = std::fs::File::create(&path).unwrap();
    for _ in 0..5 {
        file.write_all(&[1u8; 4096]).unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    drop(file);
    assert!(
        next(&mut rx, Duration::from_millis(200)).await.is_none(),
        "not before the quiet period"
    );
    let settled = next(&mut rx, Duration::from_secs(5))
        .await
        .expect("settled after the quiet period");
    assert_eq!((settled.path.clone(), settled.size), (path, 5 * 4096));
    assert!(
        matches!(rx.recv().await, Some(Watched::Quiet)),
        "nothing else pending: the folder is quiet"
    );
    assert!(
        next(&mut rx, Duration::from_millis(800)).await.is_none(),
        "once"
    );
    cancel.cancel();
}

#[tokio::test]
async fn files_present_at_start_nested_ones_and_filters_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
    std::fs::write(dir.path().join("old.txt"), b"old").unwrap();
    std::fs::write(dir.path().join("a/b/deep.txt"), b"deep").unwrap();
    std::fs::write(dir.path().join("skip.tmp"), b"x").unwrap();
    std::fs::write(dir.path().join(".DS_Store"), b"x").unwrap();
    let cancel = CancellationToken::new();
    let (mut rx, _task) = watch(spec(dir.path(), WatchMode::Events, 100), cancel.clone()).unwrap();
    let mut seen = Vec::new();
    while let Some(s) = next(&mut rx, Duration::from_millis(800)).await {
        seen.push(s.path.strip_prefix(dir.path()).unwrap().to_path_buf());
    }
    seen.sort();
    assert_eq!(
        seen,
        [PathBuf::from("a/b/deep.txt"), PathBuf::from("old.txt")]
    );

    let mut flat = spec(dir.path(), WatchMode::Events, 100);
    flat.recursive = false;
    let (mut rx, _task) = watch(flat, cancel.clone()).unwrap();
    let first = next(&mut rx, Duration::from_secs(2)).await.unwrap();
    assert_eq!(first.path, dir.path().join("old.txt"));
    assert!(next(&mut rx, Duration::from_millis(500)).await.is_none());
    cancel.cancel();
}

#[tokio::test]
async fn a_rewritten_file_is_reported_again_and_a_folder_moved_in_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let (mut rx, _task) = watch(spec(dir.path(), WatchMode::Events, 100), cancel.clone()).unwrap();
    std::fs::write(dir.path().join("a.txt"), b"one").unwrap();
    assert_eq!(next(&mut rx, Duration::from_secs(2)).await.unwrap().size, 3);
    std::fs::write(dir.path().join("a.txt"), b"three").unwrap();
    assert_eq!(next(&mut rx, Duration::from_secs(2)).await.unwrap().size, 5);
    // A whole folder renamed in: one event for the folder, none for its files.
    std::fs::create_dir_all(outside.path().join("show/day1")).unwrap();
    std::fs::write(outside.path().join("show/day1/x.mov"), b"x").unwrap();
    std::fs::rename(outside.path().join("show"), dir.path().join("show")).unwrap();
    let moved = next(&mut rx, Duration::from_secs(2)).await.unwrap();
    assert_eq!(moved.path, dir.path().join("show/day1/x.mov"));
    assert!(
        next(&mut rx, Duration::from_millis(500)).await.is_none(),
        "a.txt is not reported again by the rescan"
    );
    cancel.cancel();
}

#[tokio::test]
async fn polling_reports_stable_files_and_waits_for_growing_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stable.bin"), b"s").unwrap();
    let cancel = CancellationToken::new();
    let mode = WatchMode::Poll {
        interval: Duration::from_millis(100),
    };
    let (mut rx, _task) = watch(spec(dir.path(), mode, 300), cancel.clone()).unwrap();
    let growing = dir.path().join("growing.bin");
    let writer = tokio::spawn(async move {
        for i in 0..10 {
            std::fs::write(&growing, vec![0u8; i * 10 + 1]).unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let first = next(&mut rx, Duration::from_secs(3)).await.unwrap();
    assert_eq!(first.path, dir.path().join("stable.bin"));
    writer.await.unwrap();
    let second = next(&mut rx, Duration::from_secs(3)).await.unwrap();
    assert_eq!(
        (
            second.path.file_name().unwrap().to_str().unwrap(),
            second.size
        ),
        ("growing.bin", 91)
    );
    cancel.cancel();
}

#[tokio::test]
async fn thousands_of_files_at_once_are_each_reported_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let (mut rx, _task) = watch(spec(dir.path(), WatchMode::Events, 300), cancel.clone()).unwrap();
    for i in 0..3000 {
        let sub = dir.path().join(format!("d{}", i % 7));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("f{i}")), i.to_string()).unwrap();
    }
    let mut seen = std::collections::HashSet::new();
    while let Some(s) = next(&mut rx, Duration::from_secs(2)).await {
        assert!(seen.insert(s.path.clone()), "twice: {}", s.path.display());
    }
    assert_eq!(seen.len(), 3000);
    cancel.cancel();
}

#[tokio::test]
async fn sweeps_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a"), b"a").unwrap();
    let found = sweep(&spec(dir.path(), WatchMode::Events, 100))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    let missing = spec(&dir.path().join("nope"), WatchMode::Events, 100);
    assert!(matches!(
        watch(missing, CancellationToken::new()),
        Err(WatchError::NotAFolder { .. })
    ));
    let limit = notify_error(
        Path::new("/x"),
        notify::Error::new(notify::ErrorKind::MaxFilesWatch),
    );
    assert!(
        limit.to_string().contains("fs.inotify.max_user_watches"),
        "{limit}"
    );
}
