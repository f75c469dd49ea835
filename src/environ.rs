//! Takes a credential out of the process environment once it has been read.
//!
//! `std::env::remove_var` alone is not enough: it drops the entry from the
//! C library's `environ` array, but `/proc/<pid>/environ` (readable by the
//! same user, root and anything with ptrace rights, and kept in core dumps)
//! shows the block the kernel copied onto the stack at `exec`, and that block
//! still holds the bytes. So after unsetting the variable this overwrites its
//! value in that block with NUL bytes, through `/proc/self/mem` (the block's
//! bounds are `env_start`/`env_end` in `/proc/self/stat`). That is plain file
//! I/O on our own memory: no `unsafe` in this crate, and no Rust value points
//! into that block (`std::env::var` copies what it returns).
//!
//! Call it before any other thread is started: the environment is
//! process-wide and unsynchronised in the C library.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};

/// The most of the initial environment block this reads. Linux caps a
/// single argument or environment string at 32 pages (MAX_ARG_STRLEN,
/// 128 KiB) and the whole of argv + envp at a quarter of the stack limit;
/// a control-plane pod's environment is a few KiB, so 1 MiB covers any
/// real one without reading an unbounded range.
const MAX_ENV_BLOCK: u64 = 1 << 20;

/// What became of a variable.
#[derive(Debug, PartialEq, Eq)]
pub enum Scrubbed {
    /// It was not set: nothing to do.
    NotSet,
    /// Unset, and its value overwritten in the initial environment block.
    Erased,
    /// Unset, but the initial block could not be rewritten (the reason, with
    /// no part of the value): `/proc/<pid>/environ` still shows it.
    UnsetOnly(String),
}

/// Unsets `name` and erases its value from the initial environment block.
pub fn scrub(name: &str) -> Scrubbed {
    if std::env::var_os(name).is_none() {
        return Scrubbed::NotSet;
    }
    std::env::remove_var(name);
    match erase_in_block(name) {
        Ok(()) => Scrubbed::Erased,
        Err(why) => Scrubbed::UnsetOnly(why),
    }
}

fn erase_in_block(name: &str) -> Result<(), String> {
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| format!("cannot read /proc/self/stat: {e}"))?;
    let (start, end) = env_bounds(&stat).ok_or("/proc/self/stat has no environment bounds")?;
    let len = end.saturating_sub(start).min(MAX_ENV_BLOCK);
    let mut mem = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/self/mem")
        .map_err(|e| format!("cannot open /proc/self/mem: {e}"))?;
    let mut block = vec![0u8; usize::try_from(len).map_err(|_| "environment block too large")?];
    mem.seek(SeekFrom::Start(start))
        .and_then(|_| mem.read_exact(&mut block))
        .map_err(|e| format!("cannot read the environment block: {e}"))?;
    let ranges = value_ranges(&block, name);
    if ranges.is_empty() {
        // Set by the process itself, not inherited: nothing in the block.
        return Ok(());
    }
    for (off, n) in ranges {
        let at = start.saturating_add(off as u64);
        mem.seek(SeekFrom::Start(at))
            .and_then(|_| mem.write_all(&vec![0u8; n]))
            .map_err(|e| format!("cannot overwrite the environment block: {e}"))?;
    }
    Ok(())
}

/// `env_start` and `env_end` (fields 50 and 51) of a `/proc/<pid>/stat`
/// line. The command name (field 2) is in parentheses and may itself hold
/// spaces and parentheses, so fields are counted after the last `)`.
fn env_bounds(stat: &str) -> Option<(u64, u64)> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    // The first field after the name is field 3 (state).
    let mut fields = rest.split_whitespace().skip(50 - 3);
    let start = fields.next()?.parse().ok()?;
    let end = fields.next()?.parse().ok()?;
    (start < end).then_some((start, end))
}

/// Offsets and lengths of the values of every `name=value` entry in a
/// NUL-separated environment block.
fn value_ranges(block: &[u8], name: &str) -> Vec<(usize, usize)> {
    let mut prefix = name.as_bytes().to_vec();
    prefix.push(b'=');
    let mut out = Vec::new();
    let mut off = 0;
    for entry in block.split(|b| *b == 0) {
        if entry.starts_with(&prefix) && entry.len() > prefix.len() {
            out.push((off + prefix.len(), entry.len() - prefix.len()));
        }
        off += entry.len() + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_read_after_the_command_name() {
        // A command name with spaces and a ')' of its own; fields 3..=52.
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[50 - 3] = "1000".into();
        fields[51 - 3] = "1200".into();
        let line = format!("42 (a) b (c)) {}\n", fields.join(" "));
        assert_eq!(env_bounds(&line), Some((1000, 1200)));
        assert_eq!(env_bounds("42 (short) S 1 2"), None);
        let reversed = line.replace(" 1000 ", " 1300 ");
        assert_eq!(env_bounds(&reversed), None, "start after end");
    }

    #[test]
    fn only_the_named_values_are_found() {
        let block = b"PATH=/bin\0VAULT_TOKEN=s.abc\0VAULT_TOKEN_FILE=x\0VAULT_TOKEN=\0VAULT_TOKEN=zz\0";
        let ranges = value_ranges(block, "VAULT_TOKEN");
        let values: Vec<&[u8]> = ranges.iter().map(|&(o, n)| &block[o..o + n]).collect();
        assert_eq!(values, vec![&b"s.abc"[..], &b"zz"[..]]);
    }

    #[test]
    fn a_variable_is_erased_from_this_process() {
        // The test binary's own block holds no such variable, so this
        // checks the unset and that the bounds parse on this kernel.
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(env_bounds(&stat).is_some(), "{stat}");
        std::env::set_var("TROUSSEAU_SCRUB_TEST", "value");
        assert_eq!(scrub("TROUSSEAU_SCRUB_TEST"), Scrubbed::Erased);
        assert!(std::env::var_os("TROUSSEAU_SCRUB_TEST").is_none());
        assert_eq!(scrub("TROUSSEAU_SCRUB_TEST"), Scrubbed::NotSet);
    }
}
