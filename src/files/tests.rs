use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::*;

#[test]
fn hostile_package_paths_are_refused() {
    for platform in [Platform::Unix, Platform::Windows] {
        for (path, name) in [
            ("", "../../etc/passwd"),
            ("../..", "x"),
            ("a/../../b", "x"),
            ("..\\..", "x"),
            ("", "a\0b"),
            ("", ".."),
        ] {
            assert!(
                names::package_relative_path_for(platform, path, name).is_err(),
                "{platform:?} {path:?} {name:?}"
            );
        }
        // Absolute paths are re-rooted under the destination, on every platform.
        assert_eq!(
            names::package_relative_path_for(platform, "/abs/olute", "x").unwrap(),
            Path::new("abs/olute/x")
        );
        assert_eq!(
            names::package_relative_path_for(platform, "\\abs", "x").unwrap(),
            Path::new("abs/x")
        );
    }
    // Drives leave the destination on Windows only.
    for (path, name) in [
        ("C:\\Windows", "x"),
        ("", "C:\\evil.txt"),
        ("/", "D:x"),
        ("", "a:b.txt"),
    ] {
        let refused = names::package_relative_path_for(Platform::Windows, path, name).unwrap_err();
        assert!(refused.to_string().contains("drive"), "{refused}");
    }
    // On Unix a `C:` first component is a name like any other.
    assert_eq!(
        names::package_relative_path_for(Platform::Unix, "", "a:b.txt").unwrap(),
        Path::new("a:b.txt")
    );
    assert_eq!(
        names::package_relative_path_for(Platform::Unix, "C:", "x").unwrap(),
        Path::new("C:/x")
    );
    assert_eq!(
        names::package_relative_path_for(Platform::Unix, "", "C:\\evil.txt").unwrap(),
        Path::new("C:/evil.txt")
    );
    assert_eq!(
        package_relative_path("", "a.mov").unwrap(),
        Path::new("a.mov")
    );
    assert_eq!(
        package_relative_path("/", "a\u{7}b").unwrap(),
        Path::new("ab")
    );
    assert_eq!(
        package_relative_path("x\\y", "z").unwrap(),
        Path::new("x/y/z")
    );
}

#[test]
fn names_are_cleaned_per_platform_and_cut_on_char_boundaries() {
    assert_eq!(
        clean_name_for(Platform::Windows, "a<b>:c?.txt. ").unwrap(),
        "abc.txt"
    );
    assert_eq!(
        clean_name_for(Platform::Windows, "con.txt").unwrap(),
        "_con.txt"
    );
    assert_eq!(clean_name_for(Platform::Unix, "a:b").unwrap(), "a:b");
    assert!(clean_name_for(Platform::Unix, "..").is_none());
    let long = format!("{}.mov", "é".repeat(200));
    let cut = clean_name(&long).unwrap();
    assert!(cut.len() <= 255 && cut.ends_with(".mov"), "{}", cut.len());
}

#[test]
fn a_symlink_inside_the_destination_is_never_followed() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("evil")).unwrap();
    let dest = Destination::open(root.path()).unwrap();
    assert!(matches!(
        dest.create_dirs(Path::new("evil/sub")),
        Err(FilesError::Symlink { .. })
    ));
    assert!(matches!(
        dest.part_file(Path::new("evil/x"), "t1", 3, true, false),
        Err(FilesError::Symlink { .. })
    ));
    // A symlink where the part file or the final file goes.
    std::os::unix::fs::symlink(outside.path().join("t"), root.path().join("f.t1.part")).unwrap();
    assert!(matches!(
        dest.part_file(Path::new("f"), "t1", 3, true, false),
        Err(FilesError::Symlink { .. })
    ));
    let part = dest
        .part_file(Path::new("g"), "t1", 3, true, false)
        .unwrap();
    std::os::unix::fs::symlink(outside.path().join("u"), root.path().join("g")).unwrap();
    assert!(matches!(
        part.seal(None, None, None).and_then(|()| part.rename()),
        Err(FilesError::Symlink { .. })
    ));
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing written outside"
    );
}

#[test]
fn part_files_take_parallel_writes_resume_without_truncating_and_finish() {
    let root = tempfile::tempdir().unwrap();
    let dest = Destination::open(&root.path().join("new")).unwrap();
    dest.create_dirs(Path::new("a/b")).unwrap();
    assert!(root.path().join("new/a/b").is_dir());
    let part = dest
        .part_file(Path::new("a/b/f.bin"), "t1", 4 * 1024, true, false)
        .unwrap();
    assert_eq!(
        std::fs::metadata(root.path().join("new/a/b/f.bin.t1.part"))
            .unwrap()
            .len(),
        4096
    );
    std::thread::scope(|s| {
        for i in 0..4u8 {
            let part = part.clone();
            s.spawn(move || part.write_all_at(u64::from(i) * 1024, &[i; 1024]).unwrap());
        }
    });
    drop(part);
    let again = dest
        .part_file(Path::new("a/b/f.bin"), "t1", 4 * 1024, false, false)
        .unwrap();
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    again.seal(Some(mtime), None, None).unwrap();
    assert_eq!(
        dest.probe(Path::new("a/b/f.bin"), "t1", 4096).unwrap(),
        OnDisk::Part
    );
    let done = again.rename().unwrap();
    // Renamed: found in place (a restart records it complete, never makes a new part file).
    assert_eq!(
        dest.probe(Path::new("a/b/f.bin"), "t1", 4096).unwrap(),
        OnDisk::Final
    );
    assert_eq!(
        dest.probe(Path::new("a/b/f.bin"), "t1", 4095).unwrap(),
        OnDisk::Neither,
        "a file of another size is not this one"
    );
    assert!(matches!(
        dest.part_file(Path::new("a/b/f.bin"), "t1", 4096, false, false),
        Err(FilesError::Io { .. })
    ));
    let bytes = std::fs::read(&done).unwrap();
    assert_eq!(bytes[0], 0);
    assert_eq!(bytes[3 * 1024], 3, "resuming kept what was written");
    assert_eq!(std::fs::metadata(&done).unwrap().modified().unwrap(), mtime);
    dest.remove_file(Path::new("a/b/f.bin"), "t1", false)
        .unwrap();
    dest.remove_empty_dir(Path::new("a/b")).unwrap();
    assert!(!root.path().join("new/a/b").exists());
}

#[test]
fn folders_are_given_away_as_root_and_the_error_says_why_otherwise() {
    let root = tempfile::tempdir().unwrap();
    let dest = Destination::open(root.path()).unwrap();
    dest.create_dirs(Path::new("a/b")).unwrap();
    let path = root.path().join("a/b");
    let missing = dest.give_folder(Path::new("a/none"), Some(12345), Some(12346), Some(0o750));
    assert!(
        !missing.unwrap(),
        "a folder that is not there is passed over"
    );
    let result = dest.give_folder(Path::new("a/b"), Some(12345), Some(12346), Some(0o750));
    assert_eq!(
        std::fs::metadata(&path).unwrap().mode() & 0o777,
        0o750,
        "the mode is set first, while the folder is still the agent's"
    );
    if rustix::process::geteuid().is_root() {
        assert!(result.unwrap());
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (12345, 12346));
        let again = dest.give_folder(Path::new("a/b"), Some(12345), Some(12346), Some(0o750));
        assert!(!again.unwrap(), "a folder already given is left alone");
    } else {
        let err = result.unwrap_err();
        assert!(matches!(err, FilesError::NotPermitted { .. }));
        assert!(err.to_string().contains("CAP_CHOWN"));
    }
    assert!(available_space(root.path()).unwrap() > 0);
}

#[test]
fn range_writers_land_every_byte_in_place_aligned_or_not() {
    let root = tempfile::tempdir().unwrap();
    let dest = Destination::open(root.path()).unwrap();
    // Pieces of awkward sizes, as the network hands them over.
    let pieces: Vec<Vec<u8>> = (0..700u32)
        .map(|i| vec![(i % 251) as u8; (i * 37 % 5000) as usize])
        .collect();
    let range: Vec<u8> = pieces.concat();
    let len = range.len() as u64;
    // One range at an aligned offset (direct I/O where the disk has it), one at an odd one.
    let (aligned, odd) = (8192u64, 8192 + len + 123);
    let pool = crate::direct::BufferPool::new(128 * 1024, 2);
    let size = odd + len + 10;
    let part = dest
        .part_file(Path::new("r.bin"), "t1", size, true, true)
        .unwrap();
    for offset in [aligned, odd] {
        let mut writer = part.range_writer(offset, 64 * 1024, pool.take());
        for piece in &pieces {
            writer.push(piece);
            if writer.is_full() {
                writer.flush(&mut |_| {}).unwrap();
            }
        }
        writer.finish(&mut |_| {}).unwrap();
    }
    part.start_writeback(0, odd + len);
    part.seal(None, None, None).unwrap();
    let bytes = std::fs::read(part.rename().unwrap()).unwrap();
    assert_eq!(bytes.len() as u64, size);
    assert!(bytes[..aligned as usize].iter().all(|b| *b == 0));
    assert!(
        bytes[(aligned + len) as usize..odd as usize]
            .iter()
            .all(|b| *b == 0)
    );
    assert!(bytes[aligned as usize..][..len as usize] == range[..]);
    assert!(bytes[odd as usize..][..len as usize] == range[..]);
}

#[test]
fn temporary_names_fit_and_never_collide() {
    use std::os::unix::ffi::OsStrExt;
    for len in [1usize, 200, 250, 251, 255] {
        let name = "n".repeat(len);
        let temp = temp_name(OsStr::new(&name), "0123abcd-17");
        assert!(temp.as_bytes().len() <= 255, "{len}: {temp:?}");
        assert!(temp.as_bytes().ends_with(b".0123abcd-17.part"));
    }
    // Cut on a character boundary.
    let cjk = "映".repeat(85);
    let temp = temp_name(OsStr::new(&cjk), "0123abcd-1");
    assert!(temp.to_str().is_some() && temp.as_bytes().len() <= 255);
    assert_ne!(
        temp_name(OsStr::new(&cjk), "0123abcd-1"),
        temp_name(OsStr::new(&cjk), "0123abcd-2")
    );
}

#[test]
fn numbered_names_keep_the_extension_and_fit() {
    assert_eq!(numbered_name("clip.mov", 2), "clip (2).mov");
    assert_eq!(numbered_name("README", 3), "README (3)");
    assert_eq!(numbered_name(".hidden", 2), ".hidden (2)");
    let long = format!("{}.mov", "映".repeat(83));
    let numbered = numbered_name(&long, 2);
    assert!(
        numbered.len() <= 255 && numbered.ends_with(" (2).mov"),
        "{numbered}"
    );
}
