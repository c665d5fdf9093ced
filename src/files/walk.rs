//! What an upload sends from the paths it was given: files and folders walked recursively with
//! their layout kept, junk skipped, symlinks never followed out of their root.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::FilesError;

/// Names never sent, at any depth (Windows and macOS litter, Final Cut caches).
const IGNORED: [&str; 3] = ["desktop.ini", ".DS_Store", ".fcpcache"];

pub fn is_ignored(name: &str) -> bool {
    IGNORED.iter().any(|i| i.eq_ignore_ascii_case(name))
}

/// One thing to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEntry {
    /// Where it is on disk.
    pub source: PathBuf,
    /// The folder inside the package (`/`-separated, `""` for the root).
    pub package_path: String,
    pub name: String,
    pub size: u64,
    pub modified: Option<SystemTime>,
    /// An empty folder, sent so the recipient gets it too.
    pub directory: bool,
}

fn io_error(path: &Path, source: std::io::Error) -> FilesError {
    FilesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn utf8_name(path: &Path) -> Result<String, FilesError> {
    let name = path.file_name().ok_or_else(|| FilesError::Refused {
        name: path.display().to_string(),
        reason: "it has no file name to send".into(),
    })?;
    name.to_str()
        .map(str::to_owned)
        .ok_or_else(|| FilesError::Refused {
            name: path.display().to_string(),
            reason: "its name is not valid UTF-8; rename it".into(),
        })
}

/// Checks a file can be read now, so a bad path fails when the upload is created.
fn readable_file(path: &Path) -> Result<std::fs::Metadata, FilesError> {
    let file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    file.metadata().map_err(|e| io_error(path, e))
}

/// Walks the given roots (absolute paths of files or folders). A folder keeps its own name as
/// the top folder in the package. Errors name the path: missing, unreadable, not UTF-8.
pub fn walk_upload_roots(roots: &[PathBuf]) -> Result<Vec<LocalEntry>, FilesError> {
    let mut entries = Vec::new();
    for root in roots {
        if !root.is_absolute() {
            return Err(FilesError::Refused {
                name: root.display().to_string(),
                reason: "upload paths must be absolute".into(),
            });
        }
        if root.as_os_str().as_encoded_bytes().contains(&0) {
            return Err(FilesError::Refused {
                name: root.display().to_string(),
                reason: "the path contains a NUL byte".into(),
            });
        }
        // The root itself may be a symlink: the operator named it.
        let meta = std::fs::metadata(root).map_err(|e| io_error(root, e))?;
        let name = utf8_name(root)?;
        if !meta.is_dir() && !meta.is_file() {
            return Err(FilesError::Refused {
                name: root.display().to_string(),
                reason: "it is not a regular file or a folder (a device, socket or pipe); give files or folders to send".into(),
            });
        }
        // /proc and /sys hold "regular" files whose size says nothing of what reading gives.
        let real = std::fs::canonicalize(root).map_err(|e| io_error(root, e))?;
        if [Path::new("/proc"), Path::new("/sys")]
            .iter()
            .any(|p| real.starts_with(p))
        {
            return Err(FilesError::Refused {
                name: root.display().to_string(),
                reason: format!(
                    "it is in {}, a kernel interface, not files to send",
                    real.components().take(2).collect::<PathBuf>().display()
                ),
            });
        }
        if meta.is_dir() {
            let top = std::fs::canonicalize(root).map_err(|e| io_error(root, e))?;
            walk_dir(&top, root, &name, &mut entries)?;
        } else {
            let meta = readable_file(root)?;
            entries.push(LocalEntry {
                source: root.clone(),
                package_path: String::new(),
                name,
                size: meta.len(),
                modified: meta.modified().ok(),
                directory: false,
            });
        }
    }
    Ok(entries)
}

fn walk_dir(
    top: &Path,
    dir: &Path,
    package_path: &str,
    out: &mut Vec<LocalEntry>,
) -> Result<(), FilesError> {
    let mut children: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| io_error(dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| io_error(dir, e))?;
    children.sort_by_key(|c| c.file_name());
    let before = out.len();
    for child in children {
        let path = child.path();
        let name = utf8_name(&path)?;
        if is_ignored(&name) {
            continue;
        }
        let kind = child.file_type().map_err(|e| io_error(&path, e))?;
        if kind.is_symlink() {
            // Followed only to a file inside the root; folders are not followed (no cycles).
            let inside =
                std::fs::canonicalize(&path).is_ok_and(|t| t.starts_with(top) && t.is_file());
            if !inside {
                tracing::warn!(path = %path.display(), "skipping a symlink that leads out of the upload's folder");
                continue;
            }
        }
        if kind.is_dir() {
            walk_dir(top, &path, &format!("{package_path}/{name}"), out)?;
        } else {
            let meta = readable_file(&path)?;
            if !meta.is_file() {
                continue; // sockets, fifos, devices
            }
            out.push(LocalEntry {
                source: path,
                package_path: package_path.to_owned(),
                name,
                size: meta.len(),
                modified: meta.modified().ok(),
                directory: false,
            });
        }
    }
    if out.len() == before {
        let (parent, name) = package_path.rsplit_once('/').unwrap_or(("", package_path));
        out.push(LocalEntry {
            source: dir.to_path_buf(),
            package_path: parent.to_owned(),
            name: name.to_owned(),
            size: 0,
            modified: None,
            directory: true,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_keep_their_layout_skip_junk_and_stay_inside() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let root = tmp.path().join("Footage");
        std::fs::create_dir_all(root.join("day1/.fcpcache")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::write(root.join("day1/a.mov"), b"aaaa").unwrap();
        std::fs::write(root.join("day1/.fcpcache/x"), b"x").unwrap();
        std::fs::write(root.join(".DS_Store"), b"x").unwrap();
        std::fs::write(root.join("day1/Desktop.ini"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("leak")).unwrap();
        std::os::unix::fs::symlink(root.join("day1/a.mov"), root.join("alias.mov")).unwrap();
        let single = tmp.path().join("notes.txt");
        std::fs::write(&single, b"n").unwrap();

        let entries = walk_upload_roots(&[root.clone(), single.clone()]).unwrap();
        let shown: Vec<(String, String, bool)> = entries
            .iter()
            .map(|e| (e.package_path.clone(), e.name.clone(), e.directory))
            .collect();
        assert_eq!(
            shown,
            [
                ("Footage".into(), "alias.mov".into(), false),
                ("Footage/day1".into(), "a.mov".into(), false),
                ("Footage".into(), "empty".into(), true),
                ("".into(), "notes.txt".into(), false),
            ]
        );
        assert_eq!(entries[1].size, 4);
    }

    #[test]
    fn devices_kernel_files_and_nul_bytes_are_refused_by_name() {
        for (path, why) in [
            ("/dev/zero", "not a regular file"),
            ("/proc/self/mem", "kernel interface"),
            ("/proc/self", "kernel interface"),
            ("/tmp/a\0b", "NUL"),
        ] {
            let err = walk_upload_roots(&[PathBuf::from(path)]).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, FilesError::Refused { .. }), "{path}: {text}");
            assert!(text.contains(why), "{path}: {text}");
            assert!(
                text.contains(&path.replace('\0', "")[..4]),
                "{path}: {text}"
            );
        }
    }

    #[test]
    fn missing_and_relative_paths_are_named_in_the_error() {
        let err = walk_upload_roots(&[PathBuf::from("/no/such/file")]).unwrap_err();
        assert!(err.to_string().contains("/no/such/file"), "{err}");
        assert!(walk_upload_roots(&[PathBuf::from("relative")]).is_err());
    }
}
