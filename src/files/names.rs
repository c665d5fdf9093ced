//! Names from a package made safe for the local platform, and package paths that cannot climb.

use std::path::PathBuf;

use super::FilesError;

/// Whose naming rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Unix,
    Windows,
}

impl Platform {
    pub const LOCAL: Platform = if cfg!(windows) {
        Platform::Windows
    } else {
        Platform::Unix
    };
}

/// Longest component most filesystems hold (bytes).
pub(super) const MAX_COMPONENT: usize = 255;

const WINDOWS_RESERVED: [&str; 22] = [
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// One path component as received, cleaned for this platform: `None` when nothing usable is
/// left (empty, `.`, `..`).
pub fn clean_name(name: &str) -> Option<String> {
    clean_name_for(Platform::LOCAL, name)
}

/// [`clean_name`] under `platform`'s rules: control characters and separators removed (on
/// Windows also `<>:"/\|?*`, trailing dots and spaces, and reserved device names get a `_`), and
/// the result cut to 255 bytes on a character boundary, keeping a short extension.
pub fn clean_name_for(platform: Platform, name: &str) -> Option<String> {
    let forbidden: &[char] = match platform {
        Platform::Unix => &['/'],
        Platform::Windows => &['<', '>', ':', '"', '/', '\\', '|', '?', '*'],
    };
    let mut cleaned: String = name
        .chars()
        .filter(|c| !c.is_control() && !forbidden.contains(c))
        .collect();
    if platform == Platform::Windows {
        cleaned = cleaned.trim_end_matches(['.', ' ']).to_owned();
        let stem = cleaned
            .split('.')
            .next()
            .unwrap_or("")
            .trim_end()
            .to_ascii_uppercase();
        if WINDOWS_RESERVED.contains(&stem.as_str()) {
            cleaned.insert(0, '_');
        }
    }
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        return None;
    }
    Some(truncate(cleaned))
}

fn truncate(name: String) -> String {
    if name.len() <= MAX_COMPONENT {
        return name;
    }
    let ext = name
        .rfind('.')
        .filter(|&i| i > 0 && name.len() - i <= 16)
        .map(|i| name[i..].to_owned())
        .unwrap_or_default();
    let mut cut = MAX_COMPONENT - ext.len();
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{ext}", &name[..cut])
}

/// The `n`-th name for a file whose name is taken (`n` ≥ 2): `stem (n).ext`, within the 255
/// bytes a name may have (the stem is cut, the number and extension kept).
pub fn numbered_name(name: &str, n: u32) -> String {
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 && name.len() - i <= 16 => name.split_at(i),
        _ => (name, ""),
    };
    let tail = format!(" ({n}){ext}");
    let mut cut = stem.len().min(MAX_COMPONENT.saturating_sub(tail.len()));
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{tail}", &stem[..cut])
}

/// Where a package entry goes under the destination: its folder `path` (`/`- or
/// `\\`-separated; `""` or `"/"` is the root) and its `name`, every component cleaned.
///
/// Only what would leave the destination on this platform is refused, never cleaned into
/// something else: `..`, NUL, and on Windows a drive (`C:x`, `C:\\x`). On Unix a first
/// component like `C:` or `a:b.txt` is an ordinary name and is kept. An absolute path
/// (`/abs/x`, `\\abs\\x`) is taken as relative to the destination (`DEST/abs/x`): its leading
/// separators are dropped like empty components, so it can never reach outside.
pub fn package_relative_path(path: &str, name: &str) -> Result<PathBuf, FilesError> {
    package_relative_path_for(Platform::LOCAL, path, name)
}

/// [`package_relative_path`] under `platform`'s rules.
pub fn package_relative_path_for(
    platform: Platform,
    path: &str,
    name: &str,
) -> Result<PathBuf, FilesError> {
    let refuse = |reason: &str| FilesError::Refused {
        name: format!("{path}/{name}"),
        reason: reason.to_owned(),
    };
    if path.contains('\0') || name.contains('\0') {
        return Err(refuse("it contains a NUL byte"));
    }
    let drive = |s: &str| {
        let b = s.as_bytes();
        b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
    };
    let mut rel = PathBuf::new();
    let parts = path.split(['/', '\\']).chain(name.split(['/', '\\']));
    for part in parts {
        if part.is_empty() || part == "." {
            continue;
        }
        if part == ".." {
            return Err(refuse("it climbs out of the destination with .."));
        }
        if platform == Platform::Windows && rel.as_os_str().is_empty() && drive(part) {
            return Err(refuse("it names a drive"));
        }
        let cleaned = clean_name_for(platform, part)
            .ok_or_else(|| refuse("a component has no usable characters"))?;
        rel.push(cleaned);
    }
    if rel.as_os_str().is_empty() {
        return Err(refuse("it has no name"));
    }
    Ok(rel)
}
