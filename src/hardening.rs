//! The process's own protection against other local users: it is made
//! non-dumpable, so the kernel writes no core dump of it and refuses
//! `ptrace` and `/proc/<pid>/mem`, `environ`, `maps`... to every uid but
//! root (those `/proc/<pid>/` entries then belong to root). The token, the
//! secret_id and the local KEKs live in this process's memory.
//!
//! This is the crate's only `unsafe` code (the crate root denies it
//! everywhere else): one foreign call with integer arguments.

/// Marks the process non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`). Call it
/// after `environ::scrub`, which rewrites the environment block through
/// `/proc/self/mem`: once non-dumpable, a non-root process may no longer
/// open its own `/proc/self/mem`. Threads started later inherit nothing
/// here: the flag is per process (per `mm`).
pub fn make_non_dumpable() -> Result<(), String> {
    // SAFETY: prctl(PR_SET_DUMPABLE, arg2) reads only its integer
    // arguments and changes one flag of the calling process; it touches no
    // memory of ours. The unused arguments are passed as 0 as prctl(2)
    // asks. The return value is checked below.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_DUMPABLE,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(format!(
            "prctl(PR_SET_DUMPABLE, 0) failed: {}",
            std::io::Error::last_os_error()
        ))
    }
}

// No unit test: it would make the whole unit-test process non-dumpable,
// and other tests read /proc/self. `hardening::the_plugin_is_not_dumpable`
// (tests/integration) checks the running plugin from outside.
