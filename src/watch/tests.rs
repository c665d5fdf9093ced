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

async fn next(rx: &mut mpsc::Receiver<Settled>, within: Duration) -> Option<Settled> {
    tokio::time::timeout(within, rx.recv()).await.ok().flatten()
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
