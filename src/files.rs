//! Files on disk, safely: names from a package cleaned for this platform, package paths that
//! can never climb out of the destination, folders walked with `openat(O_NOFOLLOW)` so that a
//! symlink planted inside the destination is refused instead of followed, preallocated `.part`
//! files written by position from many tasks at once, and ownership.

mod names;
mod walk;

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::num::NonZeroU64;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustix::fs::{Advice, AtFlags, FallocateFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::direct::{DirectFile, PooledBuffer, Writer};

pub use names::{Platform, clean_name, clean_name_for, numbered_name, package_relative_path};
pub use walk::{LocalEntry, is_ignored, walk_upload_roots};

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("refusing {name:?}: {reason}")]
    Refused { name: String, reason: String },
    #[error(
        "refusing to follow the symlink {path} inside the destination; remove it or choose another destination"
    )]
    Symlink { path: PathBuf },
    #[error("no space left on the device for {path}; free some space and resume")]
    NoSpace { path: PathBuf },
    #[error(
        "not permitted to give {path} to uid {uid:?} gid {gid:?}; run the agent as root or grant it CAP_CHOWN (systemd: examples/systemd/chown.conf)"
    )]
    NotPermitted {
        path: PathBuf,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl FilesError {
    fn io(path: &Path, errno: Errno) -> FilesError {
        match errno {
            Errno::NOSPC | Errno::DQUOT => FilesError::NoSpace {
                path: path.to_path_buf(),
            },
            Errno::LOOP => FilesError::Symlink {
                path: path.to_path_buf(),
            },
            e => FilesError::Io {
                path: path.to_path_buf(),
                source: io::Error::from(e),
            },
        }
    }
}

/// A destination folder; everything it creates stays under it.
pub struct Destination {
    root: PathBuf,
    fd: Arc<OwnedFd>,
}

const DIR_MODE: u32 = 0o755;
const FILE_MODE: u32 = 0o644;

fn open_dir_at(dir: impl AsFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn is_symlink_at(dir: impl AsFd, name: &OsStr) -> bool {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink)
        .unwrap_or(false)
}

/// The plain names of a relative path; anything else (`..`, `/`, `C:`) is refused.
fn plain_components(rel: &Path) -> Result<Vec<&OsStr>, FilesError> {
    rel.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => Err(FilesError::Refused {
                name: rel.display().to_string(),
                reason: "only plain names may be joined under a destination".into(),
            }),
        })
        .collect()
}

impl Destination {
    /// Opens `root`, creating it (and its parents) when missing. The root itself may be a
    /// symlink (an operator's choice); nothing below it may.
    pub fn open(root: &Path) -> Result<Destination, FilesError> {
        std::fs::create_dir_all(root).map_err(|source| FilesError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        Self::open_existing(root)
    }

    pub fn open_existing(root: &Path) -> Result<Destination, FilesError> {
        let fd = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| FilesError::io(root, e))?;
        Ok(Destination {
            root: root.to_path_buf(),
            fd: Arc::new(fd),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Walks `rel` from the root, creating what is missing when `create`; returns the folder's
    /// descriptor.
    fn walk(&self, rel: &Path, create: bool) -> Result<OwnedFd, FilesError> {
        let mut dir = rustix::io::dup(&*self.fd).map_err(|e| FilesError::io(&self.root, e))?;
        let mut at = self.root.clone();
        for name in plain_components(rel)? {
            at.push(name);
            let next = match open_dir_at(&dir, name) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(DIR_MODE)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(FilesError::io(&at, e)),
                    }
                    open_dir_at(&dir, name).map_err(|e| FilesError::io(&at, e))?
                }
                Err(Errno::LOOP | Errno::NOTDIR) if is_symlink_at(&dir, name) => {
                    return Err(FilesError::Symlink { path: at });
                }
                Err(e) => return Err(FilesError::io(&at, e)),
            };
            dir = next;
        }
        Ok(dir)
    }

    /// Creates the folders of `rel` under the root.
    pub fn create_dirs(&self, rel: &Path) -> Result<(), FilesError> {
        self.walk(rel, true).map(drop)
    }

    /// Gives the folder `rel` (`""`: the root) `mode` and then `uid`/`gid`, through its
    /// descriptor, reached without following a symlink. `Ok(false)` when it is not there (a
    /// file of the package that never arrived), or when it already has that owner.
    pub fn give_folder(
        &self,
        rel: &Path,
        uid: Option<u32>,
        gid: Option<u32>,
        mode: Option<u32>,
    ) -> Result<bool, FilesError> {
        let path = self.root.join(rel);
        let dir = match self.walk(rel, false) {
            Ok(dir) => dir,
            Err(FilesError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let stat = rustix::fs::fstat(&dir).map_err(|e| FilesError::io(&path, e))?;
        let owned = (uid.is_some() || gid.is_some())
            && uid.is_none_or(|u| u == stat.st_uid)
            && gid.is_none_or(|g| g == stat.st_gid);
        if owned {
            return Ok(false);
        }
        if let Some(mode) = mode {
            rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode))
                .map_err(|e| FilesError::io(&path, e))?;
        }
        give(&dir, &path, uid, gid)?;
        Ok(true)
    }

    /// Opens (never truncating) the part file of `rel` for the writer `tag`, preallocated to
    /// `size` bytes; `create` makes it when missing (only a file with work left does); `direct`
    /// also opens it for direct I/O, where the file system has it. The folders of `rel` must
    /// exist.
    pub fn part_file(
        &self,
        rel: &Path,
        tag: &str,
        size: u64,
        create: bool,
        direct: bool,
    ) -> Result<PartFile, FilesError> {
        let final_name = file_name(rel)?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        let dir = self.walk(parent, false)?;
        let part_name = temp_name(&final_name, tag);
        let final_path = self.root.join(rel);
        let part_path = final_path.with_file_name(&part_name);
        let mut flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if create {
            flags |= OFlags::CREATE;
        }
        let fd = rustix::fs::openat(&dir, &part_name, flags, Mode::from_raw_mode(FILE_MODE))
            .map_err(|e| match e {
                Errno::LOOP => FilesError::Symlink {
                    path: part_path.clone(),
                },
                e => FilesError::io(&part_path, e),
            })?;
        let file = File::from(fd);
        let len = file
            .metadata()
            .map_err(|source| FilesError::Io {
                path: part_path.clone(),
                source,
            })?
            .len();
        // Every file, small ones too: a full disk fails the file before a byte is written,
        // instead of half-filling it and leaving no room for the package's other files.
        if len < size {
            preallocate(&file, size).map_err(|e| FilesError::io(&part_path, e))?;
        }
        // A second descriptor for direct I/O, where the file system has it (not tmpfs, say):
        // ranges are written through it, and the file's hash reads them back through it.
        let direct = if !direct {
            None
        } else {
            rustix::fs::openat(
                &dir,
                &part_name,
                OFlags::RDWR | OFlags::DIRECT | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ok()
            .map(|fd| Arc::new(File::from(fd)))
        };
        Ok(PartFile {
            file: DirectFile {
                buffered: Arc::new(file),
                direct,
            },
            dir: Arc::new(dir),
            part_name,
            final_name,
            final_path,
        })
    }

    /// Where the file `rel` of writer `tag` stands on disk: its part file is there, or (no part
    /// file) `rel` itself is a plain file of `size` bytes: the part was renamed into place.
    pub fn probe(&self, rel: &Path, tag: &str, size: u64) -> Result<OnDisk, FilesError> {
        let final_name = file_name(rel)?;
        let dir = match self.walk(rel.parent().unwrap_or(Path::new("")), false) {
            Ok(dir) => dir,
            Err(FilesError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(OnDisk::Neither);
            }
            Err(e) => return Err(e),
        };
        let stat = |name: &OsStr| match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(FilesError::io(&self.root.join(rel), e)),
        };
        let regular = |st: &rustix::fs::Stat| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
        };
        if stat(&temp_name(&final_name, tag))?.is_some_and(|st| regular(&st)) {
            return Ok(OnDisk::Part);
        }
        if stat(&final_name)?.is_some_and(|st| regular(&st) && st.st_size as u64 == size) {
            // Renamed before a crash: make the rename durable before it is recorded.
            sync_dir(&dir).map_err(|e| FilesError::io(&self.root.join(rel), e))?;
            return Ok(OnDisk::Final);
        }
        Ok(OnDisk::Neither)
    }

    /// Removes the part file of `rel` for writer `tag`, and `rel` itself unless `keep_final`,
    /// if they are plain files under the root.
    pub fn remove_file(&self, rel: &Path, tag: &str, keep_final: bool) -> Result<(), FilesError> {
        let Some(name) = rel.file_name() else {
            return Ok(());
        };
        let dir = match self.walk(rel.parent().unwrap_or(Path::new("")), false) {
            Ok(dir) => dir,
            Err(FilesError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let part = temp_name(name, tag);
        let names: &[&OsStr] = if keep_final {
            &[part.as_os_str()]
        } else {
            &[name, part.as_os_str()]
        };
        for n in names {
            match rustix::fs::unlinkat(&dir, *n, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(FilesError::io(&self.root.join(rel), e)),
            }
        }
        Ok(())
    }

    /// Removes the folder `rel` if it is empty (and not a symlink).
    pub fn remove_empty_dir(&self, rel: &Path) -> Result<(), FilesError> {
        let Some(name) = rel.file_name() else {
            return Ok(());
        };
        let dir = self.walk(rel.parent().unwrap_or(Path::new("")), false)?;
        match rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT | Errno::NOTEMPTY | Errno::EXIST | Errno::NOTDIR) => Ok(()),
            Err(e) => Err(FilesError::io(&self.root.join(rel), e)),
        }
    }
}

/// What [`Destination::probe`] found of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDisk {
    /// The writer's part file is there.
    Part,
    /// No part file, and the final name holds a plain file of the planned size.
    Final,
    /// Neither: whatever was written is gone.
    Neither,
}

fn file_name(rel: &Path) -> Result<OsString, FilesError> {
    rel.file_name()
        .map(OsStr::to_os_string)
        .ok_or_else(|| FilesError::Refused {
            name: rel.display().to_string(),
            reason: "a file needs a name".into(),
        })
}

/// The temporary name under which writer `tag` (a transfer and a file of it) writes the file
/// `final_name`: `NAME.TAG.part`, the name cut (on a character boundary) so that the whole
/// fits the 255 bytes a name may have. The tag makes it unique whatever the cut: two writers
/// never share a part file, and no name of a package can be a part file of another entry.
pub fn temp_name(final_name: &OsStr, tag: &str) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let suffix = format!(".{tag}.part");
    let bytes = final_name.as_bytes();
    let mut cut = bytes
        .len()
        .min(names::MAX_COMPONENT.saturating_sub(suffix.len()));
    if let Ok(text) = std::str::from_utf8(bytes) {
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
    }
    let mut name = bytes[..cut].to_vec();
    name.extend_from_slice(suffix.as_bytes());
    OsString::from_vec(name)
}

/// Syncs a folder (its entries: a rename in it becomes durable). File systems that cannot sync
/// a folder (some network shares) have nothing more to offer: that is not an error.
fn sync_dir(dir: impl AsFd) -> Result<(), Errno> {
    match rustix::fs::fsync(dir) {
        Ok(()) | Err(Errno::INVAL | Errno::NOTSUP | Errno::BADF) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Syncs the folders that `parts` were renamed in, each folder once however many of them it
/// holds: their renames are durable when this returns.
pub fn sync_folders(parts: &[PartFile]) -> Result<(), FilesError> {
    let mut synced = std::collections::HashSet::new();
    for part in parts {
        let at = |e| FilesError::io(&part.final_path, e);
        let stat = rustix::fs::fstat(&*part.dir).map_err(at)?;
        if synced.insert((stat.st_dev, stat.st_ino)) {
            sync_dir(&*part.dir).map_err(at)?;
        }
    }
    Ok(())
}

fn preallocate(file: &File, size: u64) -> Result<(), Errno> {
    match rustix::fs::fallocate(file, FallocateFlags::empty(), 0, size) {
        Ok(()) => Ok(()),
        // Filesystems without fallocate (some network shares): a sparse file of the right size.
        Err(Errno::OPNOTSUPP | Errno::NOSYS) => file
            .set_len(size)
            .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO)),
        Err(e) => Err(e),
    }
}

/// A preallocated `.part` file: positional writes from any number of tasks, then `finish`.
#[derive(Clone)]
pub struct PartFile {
    /// Also opened with `O_DIRECT`, if asked and the file system allows it.
    file: DirectFile,
    dir: Arc<OwnedFd>,
    part_name: OsString,
    final_name: OsString,
    final_path: PathBuf,
}

impl PartFile {
    /// The file, open for reading what was written (it stays open across the rename), through
    /// the page cache.
    pub fn reader(&self) -> Arc<std::fs::File> {
        self.file.buffered.clone()
    }

    pub fn write_all_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.file.buffered.write_all_at(buf, offset)
    }

    /// What a failed write of the file means for the user: a full disk named as such.
    pub fn write_error(&self, e: io::Error) -> FilesError {
        match Errno::from_io_error(&e) {
            Some(errno) => FilesError::io(&self.final_path, errno),
            None => FilesError::Io {
                path: self.final_path.clone(),
                source: e,
            },
        }
    }

    /// A writer of the bytes from `offset` on, into `buffer`, full once `batch` bytes are
    /// gathered (the buffer should hold more, for what arrives after that).
    pub fn range_writer(&self, offset: u64, batch: usize, buffer: PooledBuffer) -> Writer {
        Writer::new(self.file.clone(), offset, batch, buffer)
    }

    /// Starts writing a finished range out to disk without waiting for it, so the sync in
    /// [`PartFile::finish`] finds little left to do and dirty pages do not pile up.
    pub fn start_writeback(&self, offset: u64, len: u64) {
        // DONTNEED starts writeback of the range's dirty pages (and drops its clean ones; those
        // written for the file's hash to read are dirty still, and stay until it has read
        // them). Only advice: a failure changes nothing but timing.
        let _ = rustix::fs::fadvise(
            &*self.file.buffered,
            offset,
            NonZeroU64::new(len),
            Advice::DontNeed,
        );
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.buffered.sync_data()
    }

    /// Sets the modification time, gives the file to `uid`/`gid`, and syncs it: what must be
    /// true of its bytes and attributes before [`PartFile::rename`] puts it in place. The owner
    /// goes last: once the file is given away, changing its time would take more than
    /// CAP_CHOWN.
    pub fn seal(
        &self,
        mtime: Option<SystemTime>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<(), FilesError> {
        let io_err = |source| FilesError::Io {
            path: self.final_path.clone(),
            source,
        };
        if let Some(mtime) = mtime {
            self.file.buffered.set_modified(mtime).map_err(io_err)?;
        }
        self.set_owner(uid, gid)?;
        self.file.buffered.sync_all().map_err(io_err)
    }

    /// Renames the part to its final name (replacing a file there, never a symlink). Returns
    /// the final path. The rename is durable only once its folder is synced: [`sync_folders`].
    pub fn rename(&self) -> Result<PathBuf, FilesError> {
        if is_symlink_at(&*self.dir, &self.final_name) {
            return Err(FilesError::Symlink {
                path: self.final_path.clone(),
            });
        }
        rustix::fs::renameat(&*self.dir, &self.part_name, &*self.dir, &self.final_name)
            .map_err(|e| FilesError::io(&self.final_path, e))
            .map(|()| self.final_path.clone())
    }

    /// Sets the file's permission bits through its descriptor.
    pub fn set_mode(&self, mode: u32) -> Result<(), FilesError> {
        rustix::fs::fchmod(&*self.file.buffered, Mode::from_raw_mode(mode))
            .map_err(|e| FilesError::io(&self.final_path, e))
    }

    /// Gives the file to `uid`/`gid` through its descriptor.
    fn set_owner(&self, uid: Option<u32>, gid: Option<u32>) -> Result<(), FilesError> {
        give(&*self.file.buffered, &self.final_path, uid, gid)
    }
}

/// Gives what `fd` is (named `path` in errors) to `uid`/`gid`, either may be left alone,
/// through the descriptor: no path, so nothing to follow.
fn give(fd: impl AsFd, path: &Path, uid: Option<u32>, gid: Option<u32>) -> Result<(), FilesError> {
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    rustix::fs::fchown(
        fd,
        uid.map(rustix::process::Uid::from_raw),
        gid.map(rustix::process::Gid::from_raw),
    )
    .map_err(|e| match e {
        Errno::PERM => FilesError::NotPermitted {
            path: path.to_path_buf(),
            uid,
            gid,
        },
        e => FilesError::io(path, e),
    })
}

/// Bytes free for an unprivileged writer on the filesystem holding `dir`.
pub fn available_space(dir: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(dir).map_err(io::Error::from)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

#[cfg(test)]
mod tests;
