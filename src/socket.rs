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

use std::fmt;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

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

/// Makes `path` ready to bind: creates the parent directory if needed and
/// removes a stale socket. Refuses if a live process serves on it or if the
/// path is something other than a socket.
pub fn prepare(path: &Path) -> Result<(), SocketError> {
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

/// Sets the bound socket to [`SOCKET_MODE`] and moves it to `final_path`.
/// With a staging directory the chmod happens where no one else can reach,
/// then the rename makes it visible already restricted; without one (a
/// path too long to stage), it is restricted in place right after binding.
pub fn publish(staging: Option<&Staging>, final_path: &Path) -> Result<(), SocketError> {
    let Some(st) = staging else {
        log::warn!(
            "socket path {} is too long to bind in a private directory first; it is restricted to {SOCKET_MODE:o} right after binding",
            final_path.display()
        );
        return restrict(final_path);
    };
    let moved = restrict(&st.path).and_then(|()| {
        std::fs::rename(&st.path, final_path).map_err(|e| {
            SocketError(format!(
                "cannot move the socket into place at {}: {e}",
                final_path.display()
            ))
        })
    });
    st.discard();
    moved
}

/// Sets a socket's mode to [`SOCKET_MODE`], refusing to follow a symlink.
fn restrict(path: &Path) -> Result<(), SocketError> {
    let meta =
        std::fs::symlink_metadata(path).map_err(|e| SocketError(format!("cannot inspect {}: {e}", path.display())))?;
    if !meta.file_type().is_socket() {
        return Err(SocketError(format!(
            "{} is not a socket; not changing its mode",
            path.display()
        )));
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(|e| SocketError(format!("cannot chmod {}: {e}", path.display())))
}

/// Removes a staging directory left behind when start-up failed.
pub fn discard(staging: Option<&Staging>) {
    if let Some(st) = staging {
        st.discard();
    }
}

/// Removes the socket at exit; a missing file is fine (gRPC may have
/// removed it already), anything that is not a socket is left alone.
pub fn remove(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if let Err(e) = std::fs::remove_file(path) {
                log::warn!("cannot remove socket {}: {e}", path.display());
            }
        }
        _ => {}
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
        prepare(&p).unwrap();
        assert!(p.parent().unwrap().is_dir());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stale_removed_live_refused_file_refused() {
        let d = tmp("states");
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("kms.sock");
        {
            let _l = UnixListener::bind(&p).unwrap();
            let e = prepare(&p).unwrap_err();
            assert!(e.0.contains("another process is serving"), "{e}");
        }
        // Listener dropped: the file stays, nothing listens.
        assert!(p.exists());
        prepare(&p).unwrap();
        assert!(!p.exists());
        std::fs::write(&p, b"not a socket").unwrap();
        let e = prepare(&p).unwrap_err();
        assert!(e.0.contains("not a socket"), "{e}");
        remove(&p);
        assert!(p.exists(), "remove() must leave non-sockets alone");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
