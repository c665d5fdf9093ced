//! ASC MHL v2: the hash-list history that DITs, labs and post houses use to prove that a folder
//! holds what was sealed. A history is an `ascmhl/` folder at the root of the folder it covers:
//! one `.mhl` file per generation and `ascmhl_chain.xml`, which names every generation with the
//! C4 ID of its bytes so that a modified generation is detected.
//!
//! What this module does:
//! - [`seal`] adds a generation: every file is hashed (and checked against the history when it is
//!   already in it: `verified` or `failed`), new files are `original`; folder content and
//!   structure hashes as the reference implementation computes them.
//! - [`verify`] checks a folder against its history: altered, missing and new files.
//! - [`HashList::build`] makes a generation from hashes computed elsewhere (while the bytes were
//!   sent), without reading the files again.
//!
//! Nested histories (an `ascmhl/` folder below the root) are not followed; ignore patterns are
//! matched as names (`.DS_Store`), folder names (`ascmhl/`) or `*`/`?` globs on a name.
//! Interoperability is tested both ways against the ASC's reference tool (`ascmhl`).

mod hash;
mod xml;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use hash::{HashFormat, Hasher, hash_data, hash_file};
pub use xml::{ChainLink, DirHash, Entry, FileHash, HashList};

/// The history's folder, at the root of what it covers.
pub const FOLDER: &str = "ascmhl";
/// The chain file inside it.
pub const CHAIN: &str = "ascmhl_chain.xml";
/// What a new history ignores (the reference implementation's defaults).
pub const DEFAULT_IGNORE: [&str; 3] = [".DS_Store", "ascmhl", "ascmhl/"];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0}: no ASC MHL history here (no ascmhl/ascmhl_chain.xml); create one with `masv seal`"
    )]
    NoHistory(PathBuf),
    #[error("{file}: not a valid ASC MHL file: {reason}")]
    Malformed { file: PathBuf, reason: String },
    #[error(
        "{file}: this generation was modified after it was sealed: its C4 ID is {actual}, the chain \
         (ascmhl_chain.xml) recorded {expected}"
    )]
    Modified {
        file: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{0}: the file name is not UTF-8, which an ASC MHL manifest cannot list; rename it")]
    NotUtf8(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A file whose hash is not the one its history recorded first.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Altered {
    pub path: String,
    pub format: String,
    pub expected: String,
    pub actual: String,
}

/// What a folder holds compared with its history.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Report {
    /// Files whose hash matched.
    pub verified: usize,
    pub altered: Vec<Altered>,
    /// In the history, not in the folder.
    pub missing: Vec<String>,
    /// In the folder, not in the history.
    pub new: Vec<String>,
}

impl Report {
    /// Nothing altered, missing or new.
    pub fn ok(&self) -> bool {
        self.altered.is_empty() && self.missing.is_empty() && self.new.is_empty()
    }
}

/// The generations of a folder's history, in order.
pub struct History {
    generations: Vec<(ChainLink, HashList)>,
}

impl History {
    /// Reads `root/ascmhl/`, checking every generation against the chain. A folder without a
    /// history has an empty one.
    pub fn load(root: &Path) -> Result<History, Error> {
        let folder = root.join(FOLDER);
        let chain_path = folder.join(CHAIN);
        let text = match std::fs::read_to_string(&chain_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(History {
                    generations: Vec::new(),
                });
            }
            Err(e) => return Err(io(&chain_path)(e)),
        };
        let links = xml::parse_chain(&text).map_err(|reason| Error::Malformed {
            file: chain_path.clone(),
            reason,
        })?;
        let mut generations = Vec::new();
        for link in links {
            let file = folder.join(&link.file);
            let bytes = std::fs::read(&file).map_err(io(&file))?;
            let actual = hash_data(HashFormat::C4, &bytes);
            if actual != link.c4 {
                return Err(Error::Modified {
                    file,
                    expected: link.c4,
                    actual,
                });
            }
            let list = std::str::from_utf8(&bytes)
                .map_err(|e| e.to_string())
                .and_then(HashList::parse)
                .map_err(|reason| Error::Malformed {
                    file: file.clone(),
                    reason,
                })?;
            generations.push((link, list));
        }
        Ok(History { generations })
    }

    pub fn is_empty(&self) -> bool {
        self.generations.is_empty()
    }

    /// The first hash recorded as `original` for `path` (relative, `/`-separated).
    pub fn original(&self, path: &str) -> Option<&FileHash> {
        self.generations.iter().find_map(|(_, list)| {
            list.entries.iter().find_map(|e| match e {
                Entry::File {
                    path: p, hashes, ..
                } if p == path => hashes
                    .iter()
                    .find(|h| h.action.as_deref() == Some("original")),
                _ => None,
            })
        })
    }

    fn paths(&self) -> BTreeSet<String> {
        let mut paths = BTreeSet::new();
        for (_, list) in &self.generations {
            for e in &list.entries {
                if let Entry::File { path, .. } = e {
                    paths.insert(path.clone());
                }
            }
        }
        paths
    }

    fn ignore(&self) -> Vec<String> {
        match self.generations.last() {
            Some((_, list)) if !list.ignore.is_empty() => list.ignore.clone(),
            _ => DEFAULT_IGNORE.iter().map(|s| s.to_string()).collect(),
        }
    }
}

fn ignored(patterns: &[String], name: &str, is_dir: bool) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('/') {
        Some(dir) => is_dir && matches(dir, name),
        None => matches(p, name),
    })
}

fn matches(pattern: &str, name: &str) -> bool {
    if pattern.contains(['*', '?', '[']) {
        glob::Pattern::new(pattern).is_ok_and(|g| g.matches(name))
    } else {
        pattern == name
    }
}

/// A file found in the folder.
struct Found {
    path: String,
    abs: PathBuf,
    size: u64,
    modified: Option<DateTime<Utc>>,
}

/// Every file and folder under `root` (not following symbolic links), minus the ignored ones.
fn walk(root: &Path, patterns: &[String]) -> Result<(Vec<Found>, Vec<String>), Error> {
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let abs = entry.path();
            let name = entry
                .file_name()
                .into_string()
                .map_err(|_| Error::NotUtf8(abs.clone()))?;
            let meta = std::fs::symlink_metadata(&abs).map_err(io(&abs))?;
            if ignored(patterns, &name, meta.is_dir()) || meta.file_type().is_symlink() {
                continue;
            }
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if meta.is_dir() {
                dirs.push(path.clone());
                stack.push((abs, path));
            } else if meta.is_file() {
                files.push(Found {
                    path,
                    abs,
                    size: meta.len(),
                    modified: meta.modified().ok().map(DateTime::<Utc>::from),
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((files, dirs))
}

/// Hashes a file once in several formats.
fn hash_file_in(path: &Path, formats: &[HashFormat]) -> Result<Vec<String>, Error> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let mut hashers: Vec<Hasher> = formats.iter().map(|&f| Hasher::new(f)).collect();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            return Ok(hashers.into_iter().map(Hasher::finish).collect());
        }
        for h in &mut hashers {
            h.update(&buf[..n]);
        }
    }
}

/// Checks `root` against its history.
pub fn verify(root: &Path) -> Result<Report, Error> {
    let history = History::load(root)?;
    if history.is_empty() {
        return Err(Error::NoHistory(root.to_path_buf()));
    }
    let (files, _) = walk(root, &history.ignore())?;
    let mut report = Report::default();
    let mut missing = history.paths();
    for f in &files {
        missing.remove(&f.path);
        let Some(original) = history.original(&f.path) else {
            report.new.push(f.path.clone());
            continue;
        };
        let actual = hash_file(&f.abs, original.format).map_err(io(&f.abs))?;
        if actual == original.digest {
            report.verified += 1;
        } else {
            report.altered.push(Altered {
                path: f.path.clone(),
                format: original.format.to_string(),
                expected: original.digest.clone(),
                actual,
            });
        }
    }
    report.missing = missing.into_iter().collect();
    Ok(report)
}

/// A new generation, written.
#[derive(Debug, Serialize)]
pub struct Sealed {
    /// The generation's file, relative to the folder (`ascmhl/0002_…mhl`).
    pub generation: String,
    pub sequence: u32,
    /// How the folder compared with its earlier generations (all files `new` the first time).
    pub report: Report,
}

/// Hashes every file of `root` in `format`, compares those already in the history with their
/// original hash, and writes the new generation (even when something failed: the generation
/// records it, as the reference implementation does).
pub fn seal(root: &Path, format: HashFormat) -> Result<Sealed, Error> {
    let history = History::load(root)?;
    let patterns = history.ignore();
    let (files, dirs) = walk(root, &patterns)?;
    let mut report = Report::default();
    let mut missing = history.paths();
    let mut records = Vec::with_capacity(files.len());
    for f in files {
        missing.remove(&f.path);
        let original = history.original(&f.path).cloned();
        let mut formats = vec![format];
        if let Some(o) = &original
            && o.format != format
        {
            formats.push(o.format);
        }
        let digests = hash_file_in(&f.abs, &formats)?;
        let mut hashes = Vec::new();
        match &original {
            None => {
                report.new.push(f.path.clone());
                hashes.push(FileHash {
                    format,
                    digest: digests[0].clone(),
                    action: Some("original".into()),
                });
            }
            Some(o) => {
                let actual = &digests[formats.iter().position(|&x| x == o.format).unwrap_or(0)];
                let action = if *actual == o.digest {
                    report.verified += 1;
                    "verified"
                } else {
                    report.altered.push(Altered {
                        path: f.path.clone(),
                        format: o.format.to_string(),
                        expected: o.digest.clone(),
                        actual: actual.clone(),
                    });
                    "failed"
                };
                for (i, &fmt) in formats.iter().enumerate() {
                    // A format the history did not have yet is as good as the check it came with.
                    let action = if fmt == o.format { action } else { "original" };
                    hashes.push(FileHash {
                        format: fmt,
                        digest: digests[i].clone(),
                        action: Some(action.into()),
                    });
                }
            }
        }
        records.push(FileRecord {
            path: f.path,
            size: f.size,
            modified: f.modified,
            hashes,
        });
    }
    report.missing = missing.into_iter().collect();
    let list = HashList::build(records, &dirs, format, "in-place", patterns);
    let (generation, sequence) = write_generation(root, &folder_name(root), &history, &list)?;
    Ok(Sealed {
        generation,
        sequence,
        report,
    })
}

/// Writes `list` as the first generation of a new history in `root/ascmhl/` (replacing any
/// there), its file named after `root_name`; returns the generation's path, relative to `root`.
pub fn write_new_history(root: &Path, root_name: &str, list: &HashList) -> Result<String, Error> {
    let folder = root.join(FOLDER);
    match std::fs::remove_dir_all(&folder) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&folder)(e)),
        _ => {}
    }
    let empty = History {
        generations: Vec::new(),
    };
    let name: String = root_name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "-. ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok(write_generation(root, &name, &empty, list)?.0)
}

/// A file to list in a generation, hashed elsewhere.
#[derive(Debug, Clone)]
pub struct FileRecord {
    /// Relative, `/`-separated.
    pub path: String,
    pub size: u64,
    pub modified: Option<DateTime<Utc>>,
    /// At least one hash in the generation's format.
    pub hashes: Vec<FileHash>,
}

impl HashList {
    /// A generation of `files` (and the folders in `dirs`, empty ones included), with folder
    /// content and structure hashes in `format`, listed in the reference implementation's order:
    /// post-order, each folder's subfolders first, then its files, then the folder itself.
    pub fn build(
        files: Vec<FileRecord>,
        dirs: &[String],
        format: HashFormat,
        process: &str,
        ignore: Vec<String>,
    ) -> HashList {
        let mut subdirs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let add_dir = |path: &str, subdirs: &mut BTreeMap<String, BTreeSet<String>>| {
            let mut parent = String::new();
            for part in path.split('/') {
                let child = if parent.is_empty() {
                    part.to_string()
                } else {
                    format!("{parent}/{part}")
                };
                subdirs.entry(parent).or_default().insert(child.clone());
                subdirs.entry(child.clone()).or_default();
                parent = child;
            }
        };
        subdirs.entry(String::new()).or_default();
        for d in dirs {
            add_dir(d, &mut subdirs);
        }
        let mut in_dir: HashMap<String, Vec<FileRecord>> = HashMap::new();
        for f in files {
            let parent = f
                .path
                .rsplit_once('/')
                .map(|(p, _)| p.to_string())
                .unwrap_or_default();
            if !parent.is_empty() {
                add_dir(&parent, &mut subdirs);
            }
            in_dir.entry(parent).or_default().push(f);
        }
        let mut entries = Vec::new();
        let root = visit("", &subdirs, &mut in_dir, format, &mut entries);
        HashList {
            created: Utc::now(),
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "localhost".into()),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            process: process.into(),
            root: vec![root],
            ignore,
            entries,
        }
    }
}

fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn visit(
    dir: &str,
    subdirs: &BTreeMap<String, BTreeSet<String>>,
    in_dir: &mut HashMap<String, Vec<FileRecord>>,
    format: HashFormat,
    entries: &mut Vec<Entry>,
) -> DirHash {
    let mut children: BTreeMap<String, DirChild> = BTreeMap::new();
    for sub in subdirs.get(dir).into_iter().flatten() {
        let h = visit(sub, subdirs, in_dir, format, entries);
        children.insert(name_of(sub).to_string(), DirChild::Dir(h));
    }
    let mut files = in_dir.remove(dir).unwrap_or_default();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    for f in files {
        let digest = f
            .hashes
            .iter()
            .find(|h| h.format == format)
            .map(|h| h.digest.clone())
            .unwrap_or_default();
        children.insert(name_of(&f.path).to_string(), DirChild::File(digest));
        entries.push(Entry::File {
            path: f.path,
            size: f.size,
            modified: f.modified,
            hashes: f.hashes,
        });
    }
    let mut content = Vec::new();
    let mut structure = Vec::new();
    for (name, child) in &children {
        let (c, s) = match child {
            DirChild::File(d) => (d.clone(), d.clone()),
            DirChild::Dir(h) => (h.content.clone(), h.structure.clone()),
        };
        content.push(c);
        let mut named = name.as_bytes().to_vec();
        named.extend(format.digest_bytes(&s).unwrap_or_default());
        structure.push(hash_data(format, &named));
    }
    let h = DirHash {
        format,
        content: hash::hash_of_list(format, content),
        structure: hash::hash_of_list(format, structure),
    };
    if !dir.is_empty() {
        entries.push(Entry::Dir {
            path: dir.to_string(),
            modified: None,
            hashes: vec![h.clone()],
        });
    }
    h
}

enum DirChild {
    File(String),
    Dir(DirHash),
}

/// The name of the folder a history covers, as generation file names carry it.
fn folder_name(root: &Path) -> String {
    root.canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "root".into())
}

/// The bytes of a new generation and of the chain that names it, for a history that has `after`
/// generations already: `("ascmhl/NAME", contents)`, e.g. to add to a package.
pub fn generation_files(
    root_name: &str,
    history: &History,
    list: &HashList,
) -> [(String, Vec<u8>); 2] {
    let sequence = history.generations.len() as u32 + 1;
    let name = format!(
        "{sequence:04}_{root_name}_{}.mhl",
        list.created.format("%Y-%m-%d_%H%M%SZ")
    );
    let bytes = list.to_xml().into_bytes();
    let mut links: Vec<ChainLink> = history.generations.iter().map(|(l, _)| l.clone()).collect();
    links.push(ChainLink {
        sequence,
        file: name.clone(),
        c4: hash_data(HashFormat::C4, &bytes),
    });
    [
        (format!("{FOLDER}/{name}"), bytes),
        (
            format!("{FOLDER}/{CHAIN}"),
            xml::chain_to_xml(&links).into_bytes(),
        ),
    ]
}

/// Writes the generation then the chain, each durably and atomically (a crash leaves either the
/// old chain or the new one; a generation file the chain does not name is ignored).
fn write_generation(
    root: &Path,
    root_name: &str,
    history: &History,
    list: &HashList,
) -> Result<(String, u32), Error> {
    let folder = root.join(FOLDER);
    std::fs::create_dir_all(&folder).map_err(io(&folder))?;
    let files = generation_files(root_name, history, list);
    for (rel, bytes) in &files {
        let path = root.join(rel);
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
    }
    std::fs::File::open(&folder)
        .and_then(|d| d.sync_all())
        .map_err(io(&folder))?;
    Ok((files[0].0.clone(), history.generations.len() as u32 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_folder_verifies_and_reports_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sub/empty")).unwrap();
        std::fs::write(root.join("a.txt"), "hello\n").unwrap();
        std::fs::write(root.join("sub/b.bin"), [7u8; 3000]).unwrap();
        std::fs::write(root.join(".DS_Store"), "x").unwrap();

        let first = seal(root, HashFormat::Xxh64).unwrap();
        assert_eq!(first.sequence, 1);
        assert!(
            first.generation.starts_with("ascmhl/0001_"),
            "{}",
            first.generation
        );
        assert_eq!(
            verify(root).unwrap(),
            Report {
                verified: 2,
                ..Report::default()
            }
        );

        std::fs::write(root.join("a.txt"), "changed\n").unwrap();
        std::fs::remove_file(root.join("sub/b.bin")).unwrap();
        std::fs::write(root.join("sub/c.txt"), "new").unwrap();
        let report = verify(root).unwrap();
        assert_eq!(report.verified, 0);
        assert_eq!(report.altered.len(), 1);
        assert_eq!(report.altered[0].path, "a.txt");
        assert_eq!(report.altered[0].expected, "e4c191d091bd8853");
        assert_eq!(report.missing, ["sub/b.bin"]);
        assert_eq!(report.new, ["sub/c.txt"]);

        let second = seal(root, HashFormat::Xxh64).unwrap();
        assert_eq!(second.sequence, 2);
        assert_eq!(second.report.altered.len(), 1);
        let text = std::fs::read_to_string(root.join(&second.generation)).unwrap();
        assert!(text.contains("action=\"failed\""), "{text}");
    }

    #[test]
    fn a_modified_generation_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "a").unwrap();
        let sealed = seal(dir.path(), HashFormat::Md5).unwrap();
        let path = dir.path().join(&sealed.generation);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("in-place", "in-placE")).unwrap();
        let err = verify(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Modified { .. }), "{err}");
        assert!(
            err.to_string().contains("modified after it was sealed"),
            "{err}"
        );
    }

    #[test]
    fn a_folder_without_history_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = verify(dir.path()).unwrap_err();
        assert!(err.to_string().contains("masv seal"), "{err}");
    }
}
