//! Files that hold secrets: the redb store, TLS private keys and key files named in the config.
//!
//! Whoever can read the store or a key can mint a token for any account, so these files are
//! created readable by the gateway's own user alone, whatever the umask, and an existing one that
//! other local users can read or write is refused at start-up with the path, the mode and the
//! command that fixes it, as ssh refuses a private key that others can read.
//!
//! Two rules ([`Rule`]):
//! - [`Rule::OwnerOnly`] for the store: no permission bits for group or other (0600, 0400).
//! - [`Rule::KeyFile`] for keys the operator provides: the same, except that a file owned by root
//!   may also be group-readable (0640), which is how Debian's `ssl-cert` group and Kubernetes
//!   secret volumes with an `fsGroup` share keys with a service. PostgreSQL applies the same
//!   rule to its server key.
//!
//! Everything here is a no-op off Unix, where the mode bits do not exist.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Which permissions an existing file may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Readable and writable by its owner only.
    OwnerOnly,
    /// Owner only, or root-owned and at most group-readable.
    KeyFile,
}

/// A secret file that other users can reach, or whose mode could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PermissionError {
    #[error(
        "{what} {path} is accessible by other users (mode {mode:04o}); it holds secrets: run \
         `chmod {fix:o} {path}`"
    )]
    TooOpen {
        what: &'static str,
        path: String,
        mode: u32,
        fix: u32,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: io::Error,
    },
}

/// Checks that the file at `path` (following symlinks) is not reachable by other users under
/// `rule`. `what` names the file in the message ("store file", "TLS key").
pub fn check(path: &Path, what: &'static str, rule: Rule) -> Result<(), PermissionError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).map_err(|source| PermissionError::Io {
            what,
            path: path.display().to_string(),
            source,
        })?;
        let mode = meta.mode() & 0o7777;
        if let Some(fix) = too_open(mode, meta.uid(), rule) {
            return Err(PermissionError::TooOpen {
                what,
                path: path.display().to_string(),
                mode,
                fix,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (path, what, rule);
    Ok(())
}

/// The mode to suggest (the owner's bits alone) if `mode` is too open for a file owned by
/// `uid`, else `None`.
fn too_open(mode: u32, uid: u32, rule: Rule) -> Option<u32> {
    let allowed_group_bits = match rule {
        Rule::KeyFile if uid == 0 => 0o040,
        _ => 0,
    };
    let other = mode & 0o007;
    let group = mode & 0o070 & !allowed_group_bits;
    if other == 0 && group == 0 {
        return None;
    }
    Some(mode & 0o700)
}

/// Creates `dir` and any missing parents; each directory this creates is readable by the owner
/// only (0700), whatever the umask. Directories that exist are left as they are.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut at = Some(dir);
    while let Some(p) = at.filter(|p| !p.as_os_str().is_empty()) {
        if p.exists() {
            break;
        }
        missing.push(p.to_owned());
        at = p.parent();
    }
    for p in missing.iter().rev() {
        match std::fs::create_dir(p) {
            Ok(()) => set_mode(p, 0o700)?,
            // Created by another process meanwhile: theirs to set.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Creates a new, empty file readable and writable by the owner only (0600), whatever the
/// umask. Fails if it exists.
pub fn create_new(path: &Path) -> io::Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let file = opts.open(path)?;
    // The umask may have taken the owner's bits away too (umask 0277): set the mode exactly.
    set_mode(path, 0o600)?;
    Ok(file)
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn owner_only_refuses_any_group_or_other_bit() {
        for mode in [0o600, 0o400, 0o700, 0o200] {
            assert_eq!(too_open(mode, 1000, Rule::OwnerOnly), None, "{mode:o}");
            assert_eq!(too_open(mode, 0, Rule::OwnerOnly), None, "{mode:o}");
        }
        for (mode, fix) in [
            (0o644, 0o600),
            (0o640, 0o600),
            (0o606, 0o600),
            (0o666, 0o600),
        ] {
            assert_eq!(too_open(mode, 1000, Rule::OwnerOnly), Some(fix), "{mode:o}");
            assert_eq!(too_open(mode, 0, Rule::OwnerOnly), Some(fix), "{mode:o}");
        }
    }

    #[test]
    fn key_files_may_be_group_readable_when_root_owns_them() {
        assert_eq!(too_open(0o640, 0, Rule::KeyFile), None);
        assert_eq!(too_open(0o440, 0, Rule::KeyFile), None);
        assert_eq!(too_open(0o640, 1000, Rule::KeyFile), Some(0o600));
        assert_eq!(too_open(0o660, 0, Rule::KeyFile), Some(0o600));
        assert_eq!(too_open(0o644, 0, Rule::KeyFile), Some(0o600));
    }

    #[test]
    fn creates_private_files_and_directories_and_names_open_ones() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        create_dir_all(&nested).unwrap();
        for d in [dir.path().join("a"), nested.clone()] {
            let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        let file = nested.join("f");
        create_new(&file).unwrap();
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            create_new(&file).is_err(),
            "an existing file is not replaced"
        );
        check(&file, "store file", Rule::OwnerOnly).unwrap();

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = check(&file, "store file", Rule::OwnerOnly)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&file.display().to_string()), "{e}");
        assert!(e.contains("0644"), "{e}");
        assert!(e.contains("chmod 600"), "{e}");
    }
}
