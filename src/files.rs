//! Small local files the plugin reads while it runs (credential files) or
//! at start (the config file), read so that no file can block it.
//!
//! A plain `open` of a named pipe waits until some process opens it for
//! writing, and a read of a pipe or device waits for data: a FIFO renamed
//! over `--vault-token-file` would stop every request that re-reads the
//! file, for good. So the file is opened with `O_NONBLOCK` (an open that
//! never waits), checked to be a regular file on the descriptor itself
//! (no window between the check and the read), and read up to a bound.
//! `O_NONBLOCK` changes nothing for a regular file's reads.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Opens `path` for reading without waiting, and only if it is a regular
/// file (symlinks are followed, as Kubernetes mounts Secrets through
/// them). Errors say what the path is, never what it holds.
pub fn open_regular(path: &Path) -> Result<File, String> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot open: {e}"))?;
    let t = f.metadata().map_err(|e| format!("cannot inspect: {e}"))?.file_type();
    if t.is_file() {
        return Ok(f);
    }
    let kind = if t.is_dir() {
        "Is a directory"
    } else if t.is_fifo() {
        "a named pipe (FIFO)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a file"
    };
    Err(format!("{kind}, not a regular file; refused (reading it could block)"))
}

/// Reads a regular file of at most `max` bytes as UTF-8 text.
pub fn read_small(path: &Path, max: u64) -> Result<String, String> {
    let f = open_regular(path)?;
    let len = f.metadata().map_err(|e| format!("cannot inspect: {e}"))?.len();
    if len > max {
        return Err(format!("larger than {max} bytes"));
    }
    let mut s = String::new();
    // The file may grow between the check and the read: read at most one
    // byte past the bound to tell.
    f.take(max + 1)
        .read_to_string(&mut s)
        .map_err(|e| format!("cannot read as UTF-8 text: {e}"))?;
    if s.len() as u64 > max {
        zeroize::Zeroize::zeroize(&mut s);
        return Err(format!("larger than {max} bytes"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("trousseau-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A FIFO with no writer, a directory, a device: refused at once, never
    /// waited on; a regular file and a symlink to one are read.
    #[test]
    fn only_regular_files_are_read_and_nothing_blocks() {
        let d = tmp("kinds");
        let fifo = d.join("fifo");
        let st = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(st.success());
        let t = std::time::Instant::now();
        let e = read_small(&fifo, 100).unwrap_err();
        assert!(e.contains("named pipe"), "{e}");
        assert!(t.elapsed() < std::time::Duration::from_secs(1), "{:?}", t.elapsed());
        assert!(read_small(&d, 100).unwrap_err().contains("Is a directory"));
        assert!(read_small(Path::new("/dev/zero"), 100)
            .unwrap_err()
            .contains("a device"));
        let f = d.join("f");
        std::fs::write(&f, "abc\n").unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert_eq!(read_small(&link, 100).unwrap(), "abc\n");
        assert!(read_small(&f, 3).unwrap_err().contains("larger than 3 bytes"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
