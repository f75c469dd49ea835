//! The Unix socket's lifecycle: make its directory, tell a stale socket
//! (left by a crash) from a live one, create it already restricted, remove
//! it at exit.
//!
//! The socket is bound inside a private directory (mode 0700) next to its
//! final path, set to 0600 there, and only then renamed into place: at no
//! moment can another local user connect to it, whatever the umask, and no
//! chmod ever runs on a path someone else could have replaced with a
//! symlink (a symlink at the final path is refused, and `rename` replaces
//! rather than follows one).
//!
//! gRPC core unlinks whatever sits at the path before it binds, so the
//! live-socket check here is what stops a second plugin from silently
//! stealing the socket of a running one.
//!
//! Two plugins never both believe they serve one path: each first takes
//! an exclusive `flock` on a lock file beside the socket (`<socket>.lock`,
//! never removed, so every plugin locks the same inode) and holds it from
//! before the stale check until it has withdrawn its socket. And a plugin
//! removes only the socket it bound (same device and inode), so one that
//! finishes draining cannot delete its successor's.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::limits::{SOCKET_CLAIM_POLL, SOCKET_CLAIM_WAIT};

/// Socket file mode: only the owner (root, or the user both plugin and
/// apiserver run as) may connect.
pub const SOCKET_MODE: u32 = 0o600;
/// Mode for a socket directory we create ourselves. Group/other keep search
/// permission so a hostPath shared with the apiserver stays traversable;
/// the socket's own 0600 mode guards access.
pub const DIR_MODE: u32 = 0o755;

#[derive(Debug)]
pub struct SocketError(pub String);

impl fmt::Display for SocketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "socket: {}", self.0)
    }
}

impl std::error::Error for SocketError {}

/// The lock that makes this process the one plugin serving on a path;
/// released when dropped (or when the process ends, however it ends).
pub struct Claim {
    _lock: File,
}

/// The lock file for the socket at `path`: `<path>.lock`.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".lock");
    path.with_file_name(name)
}

/// Takes the lock beside `path`, creating the directory and the lock file
/// if needed. Another plugin holding it is either serving (the socket
/// accepts: refused at once) or starting up or draining (waited for, up to
/// [`SOCKET_CLAIM_WAIT`]).
pub fn claim(path: &Path) -> Result<Claim, SocketError> {
    make_dir(path)?;
    let lp = lock_path(path);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        // Not through a symlink someone put there, and never waiting on
        // a FIFO.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&lp)
        .map_err(|e| SocketError(format!("cannot open the lock file {}: {e}", lp.display())))?;
    match f.metadata() {
        Ok(m) if m.file_type().is_file() => {}
        _ => {
            return Err(SocketError(format!(
                "{} is not a regular file; refusing to use it as the socket's lock",
                lp.display()
            )))
        }
    }
    let until = Instant::now() + SOCKET_CLAIM_WAIT;
    let mut waited = false;
    loop {
        match f.try_lock() {
            Ok(()) => {
                if waited {
                    log::info!("took {} once the other plugin let go of it", lp.display());
                }
                return Ok(Claim { _lock: f });
            }
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => {
                return Err(SocketError(format!("cannot lock {}: {e}", lp.display())));
            }
        }
        if UnixStream::connect(path).is_ok() {
            return Err(SocketError(format!(
                "another process is serving on {}; stop it first or choose another --socket",
                path.display()
            )));
        }
        if Instant::now() >= until {
            return Err(SocketError(format!(
                "another plugin has held {} for over {SOCKET_CLAIM_WAIT:?} without serving on {} (starting up or draining); stop it first or choose another --socket",
                lp.display(),
                path.display()
            )));
        }
        if !waited {
            log::info!(
                "another plugin holds {} (starting up or draining); waiting for it",
                lp.display()
            );
            waited = true;
        }
        std::thread::sleep(SOCKET_CLAIM_POLL);
    }
}

/// Creates the socket's parent directory if it does not exist.
fn make_dir(path: &Path) -> Result<(), SocketError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(|e| SocketError(format!("cannot create directory {}: {e}", dir.display())))?;
            log::info!("created socket directory {}", dir.display());
        } else if !dir.is_dir() {
            return Err(SocketError(format!("{} is not a directory", dir.display())));
        }
    }
    Ok(())
}

/// Makes `path` ready to bind: creates the parent directory if needed and
/// removes a stale socket. Refuses if a live process serves on it or if the
/// path is something other than a socket.
/// Called with the [`Claim`] held, so no other plugin is between this
/// check and the publishing rename.
pub fn prepare(path: &Path, _claim: &Claim) -> Result<(), SocketError> {
    make_dir(path)?;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(SocketError(format!("cannot inspect {}: {e}", path.display()))),
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError(format!(
            "{} exists and is not a socket; refusing to replace it (remove it or choose another --socket)",
            path.display()
        )));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(SocketError(format!(
            "another process is serving on {}; stop it first or choose another --socket",
            path.display()
        ))),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path)
                .map_err(|e| SocketError(format!("cannot remove stale socket {}: {e}", path.display())))?;
            log::warn!("removed stale socket {} (nothing was listening on it)", path.display());
            Ok(())
        }
        Err(e) => Err(SocketError(format!(
            "cannot tell whether {} is in use: {e}",
            path.display()
        ))),
    }
}

/// Longest `sun_path` a socket can be bound at (108 bytes with its NUL).
const MAX_SUN_PATH: usize = 107;

/// Where the socket is bound before it is published: `<dir>/.trousseau-<pid>/kms.sock`.
pub struct Staging {
    dir: PathBuf,
    path: PathBuf,
}

impl Staging {
    /// Creates the private directory next to `final_path`. `None` when the
    /// staged path would be too long to bind (the socket is then bound in
    /// place and restricted right after; see [`publish`]).
    pub fn create(final_path: &Path) -> Result<Option<Staging>, SocketError> {
        let parent = final_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = parent.join(format!(".trousseau-{}", std::process::id()));
        let path = dir.join("kms.sock");
        if path.as_os_str().len() > MAX_SUN_PATH {
            return Ok(None);
        }
        // Left over from a crashed run with the same pid: ours to remove.
        if std::fs::symlink_metadata(&dir).is_ok() {
            let _ = std::fs::remove_file(&path);
            std::fs::remove_dir(&dir)
                .map_err(|e| SocketError(format!("cannot remove old staging directory {}: {e}", dir.display())))?;
        }
        std::fs::DirBuilder::new()
            .mode(STAGING_MODE)
            .create(&dir)
            .map_err(|e| SocketError(format!("cannot create {}: {e}", dir.display())))?;
        // DirBuilder's mode is filtered by the umask; make it exact.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(STAGING_MODE))
            .map_err(|e| SocketError(format!("cannot chmod {}: {e}", dir.display())))?;
        Ok(Some(Staging { dir, path }))
    }

    /// Where to bind.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the staging directory (and a socket still in it).
    fn discard(&self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Mode of the staging directory: nobody but us may look inside.
const STAGING_MODE: u32 = 0o700;

/// The socket this plugin bound, by device and inode: what it may remove.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    dev: u64,
    ino: u64,
    in_place: bool,
}

impl Bound {
    /// Bound at its final path (too long to stage): gRPC core itself
    /// unlinks that path when the server shuts down, so the [`Claim`] must
    /// be held until the drain is over.
    pub fn in_place(&self) -> bool {
        self.in_place
    }
}

/// Sets the bound socket to [`SOCKET_MODE`] and moves it to `final_path`,
/// with the [`Claim`] held. With a staging directory the chmod happens
/// where no one else can reach, then the rename makes it visible already
/// restricted; without one (a path too long to stage), it is restricted in
/// place right after binding (and removed again if that fails).
pub fn publish(staging: Option<&Staging>, final_path: &Path, _claim: &Claim) -> Result<Bound, SocketError> {
    let Some(st) = staging else {
        log::warn!(
            "socket path {} is too long to bind in a private directory first; it is restricted to {SOCKET_MODE:o} right after binding",
            final_path.display()
        );
        return match restrict(final_path) {
            Ok((dev, ino)) => Ok(Bound {
                dev,
                ino,
                in_place: true,
            }),
            Err(e) => {
                // Bound there by us under the claim: ours to remove.
                if std::fs::symlink_metadata(final_path).is_ok_and(|m| m.file_type().is_socket()) {
                    let _ = std::fs::remove_file(final_path);
                }
                Err(e)
            }
        };
    };
    let moved = restrict(&st.path).and_then(|(dev, ino)| {
        std::fs::rename(&st.path, final_path)
            .map(|()| Bound {
                dev,
                ino,
                in_place: false,
            })
            .map_err(|e| {
                SocketError(format!(
                    "cannot move the socket into place at {}: {e}",
                    final_path.display()
                ))
            })
    });
    st.discard();
    moved
}

/// Sets a socket's mode to [`SOCKET_MODE`], refusing to follow a symlink;
/// returns its device and inode.
fn restrict(path: &Path) -> Result<(u64, u64), SocketError> {
    let meta =
        std::fs::symlink_metadata(path).map_err(|e| SocketError(format!("cannot inspect {}: {e}", path.display())))?;
    if !meta.file_type().is_socket() {
        return Err(SocketError(format!(
            "{} is not a socket; not changing its mode",
            path.display()
        )));
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(|e| SocketError(format!("cannot chmod {}: {e}", path.display())))?;
    Ok((meta.dev(), meta.ino()))
}

/// Removes a staging directory left behind when start-up failed.
pub fn discard(staging: Option<&Staging>) {
    if let Some(st) = staging {
        st.discard();
    }
}

/// Removes the socket this plugin bound, called with the [`Claim`] still
/// held (so no other plugin can have published in between). A missing
/// file is fine (gRPC may have removed it already); anything else at the
/// path (another inode, not a socket) is left alone and logged. Returns
/// whether it removed the socket.
pub fn withdraw(path: &Path, bound: &Bound, _claim: &Claim) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() && m.dev() == bound.dev && m.ino() == bound.ino => {
            match std::fs::remove_file(path) {
                Ok(()) => true,
                Err(e) => {
                    log::warn!("cannot remove socket {}: {e}", path.display());
                    false
                }
            }
        }
        Ok(_) => {
            log::warn!(
                "{} is no longer the socket this plugin bound; left alone",
                path.display()
            );
            false
        }
        Err(e) if e.kind() == ErrorKind::NotFound => false,
        Err(e) => {
            log::warn!("cannot inspect socket {}: {e}", path.display());
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("trousseau-sock-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn creates_directory() {
        let d = tmp("mkdir");
        let p = d.join("a/b/kms.sock");
        let c = claim(&p).unwrap();
        prepare(&p, &c).unwrap();
        assert!(p.parent().unwrap().is_dir());
        assert!(d.join("a/b/kms.sock.lock").is_file());
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The lock is exclusive while held and free again once dropped; a
    /// symlink at the lock path is refused.
    #[test]
    fn a_claim_is_exclusive_until_dropped() {
        let d = tmp("claim");
        let p = d.join("kms.sock");
        let first = claim(&p).unwrap();
        let other = std::fs::File::open(lock_path(&p)).unwrap();
        assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
        drop(first);
        other.try_lock().unwrap();
        drop(other);
        // A symlink at the lock path is not followed.
        let q = d.join("q.sock");
        std::os::unix::fs::symlink(d.join("elsewhere"), lock_path(&q)).unwrap();
        assert!(claim(&q).is_err());
        assert!(!d.join("elsewhere").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// Only the socket bound (same inode) is withdrawn: one bound later at
    /// the same path is left alone, and so is a file.
    #[test]
    fn withdraw_removes_only_the_socket_it_bound() {
        let d = tmp("withdraw");
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("kms.sock");
        let c = claim(&p).unwrap();
        let first = UnixListener::bind(&p).unwrap();
        let (dev, ino) = restrict(&p).unwrap();
        let mine = Bound {
            dev,
            ino,
            in_place: true,
        };
        // Someone else's socket replaces ours at the path.
        std::fs::remove_file(&p).unwrap();
        let _second = UnixListener::bind(&p).unwrap();
        assert!(!withdraw(&p, &mine, &c));
        assert!(p.exists(), "another socket was removed");
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, b"x").unwrap();
        assert!(!withdraw(&p, &mine, &c));
        assert!(p.exists());
        std::fs::remove_file(&p).unwrap();
        drop(first);
        let _l = UnixListener::bind(&p).unwrap();
        let (dev, ino) = restrict(&p).unwrap();
        assert!(withdraw(
            &p,
            &Bound {
                dev,
                ino,
                in_place: true
            },
            &c
        ));
        assert!(!p.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stale_removed_live_refused_file_refused() {
        let d = tmp("states");
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("kms.sock");
        let c = claim(&p).unwrap();
        {
            let _l = UnixListener::bind(&p).unwrap();
            let e = prepare(&p, &c).unwrap_err();
            assert!(e.0.contains("another process is serving"), "{e}");
        }
        // Listener dropped: the file stays, nothing listens.
        assert!(p.exists());
        prepare(&p, &c).unwrap();
        assert!(!p.exists());
        std::fs::write(&p, b"not a socket").unwrap();
        let e = prepare(&p, &c).unwrap_err();
        assert!(e.0.contains("not a socket"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
