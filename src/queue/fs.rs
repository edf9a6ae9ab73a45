//! Filesystem checks before anything is written: the directory is ours (0700, not a
//! link, not another user's), and so is every file in it (0600).

use std::fs::{self, OpenOptions};
use std::path::Path;

use crate::error::{Error, Kind, Result};

/// Creates the queue directory (0700) if it does not exist, and refuses one that is a
/// symbolic link or belongs to another user.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    // Before the first write of any kind: settings, queue, directory.
    crate::fsize::ignore_sigxfsz_under_a_file_size_limit();
    match fs::symlink_metadata(dir) {
        Ok(_) => check_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut b = fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
            b.create(dir).map_err(|e| Error::io(dir, e))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                    .map_err(|e| Error::io(dir, e))?;
            }
            Ok(())
        }
        Err(e) => Err(Error::io(dir, e)),
    }
}

pub(crate) fn check_dir(dir: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(dir).map_err(|e| Error::io(dir, e))?;
    if meta.file_type().is_symlink() {
        return Err(Kind::Symlink(dir.to_path_buf()).into());
    }
    if !meta.is_dir() {
        return Err(Kind::NotADirectory(dir.to_path_buf()).into());
    }
    check_owner(dir, &meta)
}

pub(super) fn check_file(path: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.file_type().is_symlink() {
        return Err(Kind::Symlink(path.to_path_buf()).into());
    }
    check_owner(path, &meta)
}

#[cfg(unix)]
pub(super) fn check_owner(path: &Path, meta: &fs::Metadata) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let me = crate::sys::euid();
    if meta.uid() != me {
        return Err(Kind::ForeignOwner {
            path: path.to_path_buf(),
            uid: meta.uid(),
        }
        .into());
    }
    Ok(())
}

#[cfg(not(unix))]
pub(super) fn check_owner(_path: &Path, _meta: &fs::Metadata) -> Result<()> {
    Ok(())
}

pub(super) fn create_file(path: &Path) -> Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => check_file(path),
        Err(e) => Err(Error::io(path, e)),
    }
}
