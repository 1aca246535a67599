//! Opening files that untrusted input names: the model itself, its external-data files, a
//! `.npy` matrix.
//!
//! A model file is untrusted: it can name any path as the location of its external data. The
//! rules, checked on the file system rather than on the text of the path:
//! * the location is relative, made of plain names (no `..`, no root, no drive prefix);
//! * no component of it, walked from the model's real folder, is a symbolic link;
//! * the file is a regular file (no FIFO, device, socket or folder) with one hard link (a hard
//!   link could make a file from anywhere appear inside the folder);
//! * the file opened is the file checked: it is opened with `O_NOFOLLOW | O_NONBLOCK` and its
//!   device and inode are compared with the ones checked, so a swap in between is refused, and
//!   a FIFO cannot block the open;
//! * its real path lies inside the model's real folder.
//!
//! Files the user names directly (the model path, a `.npy` path) may be symbolic links, but
//! must be regular files, and are read only up to a size limit: `/dev/zero` or a FIFO given as
//! a model is an error, not a hang or an unbounded read.

use crate::error::{Error, Result};
use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Opens a file without following a symbolic link in its last component and without
/// blocking on a FIFO.
fn open_no_block(path: &Path, follow: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut flags = libc::O_NONBLOCK;
        if !follow {
            flags |= libc::O_NOFOLLOW;
        }
        o.custom_flags(flags);
    }
    #[cfg(not(unix))]
    let _ = follow;
    o.open(path)
}

/// What kind of non-regular file this is, for messages.
fn kind_of(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    if t.is_symlink() {
        return "a symbolic link";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

/// Opens a file the user named (symbolic links followed) and checks that it is a regular
/// file of at most `max_bytes` bytes. Returns the file and its length.
pub(crate) fn open_user_file(path: &Path, max_bytes: u64) -> std::io::Result<(File, u64)> {
    use std::io::{Error as IoError, ErrorKind};
    let file = open_no_block(path, true)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(IoError::new(
            ErrorKind::InvalidInput,
            format!("{}, not a regular file", kind_of(&meta)),
        ));
    }
    if meta.len() > max_bytes {
        return Err(IoError::new(
            ErrorKind::InvalidInput,
            format!("{} bytes, over the limit of {max_bytes}", meta.len()),
        ));
    }
    Ok((file, meta.len()))
}

/// Reads a file opened by [`open_user_file`] (`len` bytes by its metadata); at most
/// `max_bytes` are read even if the file grows meanwhile.
pub(crate) fn read_opened(file: File, len: u64, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(len.min(max_bytes) as usize);
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("grew past the limit of {max_bytes} bytes while being read"),
        ));
    }
    Ok(bytes)
}

/// Reads a whole file the user named (see [`open_user_file`]).
pub(crate) fn read_user_file(path: &Path, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    let (file, len) = open_user_file(path, max_bytes)?;
    read_opened(file, len, max_bytes)
}

/// Opens `location` (as written in a model) inside the real folder `folder` under the rules
/// of the module docs. `what` names the tensor in errors; `source` the model.
pub(crate) fn open_inside(
    folder: &Path,
    location: &str,
    source: &str,
    what: &str,
) -> Result<(File, PathBuf)> {
    let refuse = |why: String| {
        Error::model(
            source,
            format!("{what}: external data location {why}; refused"),
        )
    };
    if location.is_empty() || location.contains('\0') {
        return Err(refuse(format!("'{location}' is empty or contains NUL")));
    }
    let rel = Path::new(location);
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(refuse(format!(
            "'{location}' is absolute or leaves the model's folder"
        )));
    }
    let cannot_open = |path: &Path, e: std::io::Error| {
        Error::model(
            source,
            format!(
                "{what}: cannot open external data file '{}': {e}",
                path.display()
            ),
        )
    };
    // Walk from the real folder: no component may be a symbolic link.
    let mut path = folder.to_path_buf();
    let mut last = None;
    for c in rel.components() {
        if let Component::Normal(name) = c {
            path.push(name);
            let meta = std::fs::symlink_metadata(&path).map_err(|e| cannot_open(&path, e))?;
            if meta.file_type().is_symlink() {
                return Err(refuse(format!(
                    "'{location}' passes through the symbolic link '{}'",
                    path.display()
                )));
            }
            last = Some(meta);
        }
    }
    let meta = last.ok_or_else(|| refuse(format!("'{location}' names the folder itself")))?;
    if !meta.is_file() {
        return Err(refuse(format!("'{location}' is {}", kind_of(&meta))));
    }
    check_single_link(&meta, location, &refuse)?;
    let file = open_no_block(&path, false).map_err(|e| cannot_open(&path, e))?;
    let opened = file
        .metadata()
        .map_err(|e| Error::model(source, format!("{what}: cannot inspect '{location}': {e}")))?;
    if !opened.is_file() || !same_file(&meta, &opened) {
        return Err(refuse(format!(
            "'{location}' changed between its check and its opening"
        )));
    }
    check_single_link(&opened, location, &refuse)?;
    // Defence in depth: the real path must still lie inside the real folder.
    let real = path
        .canonicalize()
        .map_err(|e| Error::model(source, format!("{what}: cannot resolve '{location}': {e}")))?;
    if !real.starts_with(folder) {
        return Err(refuse(format!(
            "'{location}' resolves to '{}', outside the model's folder",
            real.display()
        )));
    }
    Ok((file, real))
}

#[cfg(unix)]
fn check_single_link(
    meta: &Metadata,
    location: &str,
    refuse: &dyn Fn(String) -> Error,
) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if meta.nlink() > 1 {
        return Err(refuse(format!(
            "'{location}' has {} hard links (it may be a file from outside the folder)",
            meta.nlink()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_single_link(_: &Metadata, _: &str, _: &dyn Fn(String) -> Error) -> Result<()> {
    Ok(())
}

#[cfg(unix)]
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    a.len() == b.len()
}
