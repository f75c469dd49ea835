//! The process's logger: env_logger reading `RUST_LOG`, behind a cap on
//! every library's records. Only our own targets (`trousseau::...`) log
//! below info; the HTTP and TLS libraries' debug and trace output (ureq-proto
//! hex-dumps every byte it sends, the token header and the DEK included) is
//! dropped whatever `RUST_LOG` asks for, so no log level shows a secret.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Instant;

use log::{Level, Log, Metadata, Record};

use crate::limits::{LOG_REPEATS_PER_WINDOW, LOG_REPEAT_WINDOW};

/// The most a library's records may say. Their info and above is about
/// connections and failures, not content; below it they dump headers and
/// bodies.
const FOREIGN_MAX_LEVEL: Level = Level::Info;

/// Our own records, by target (the module path the `log` macros set).
fn is_ours(target: &str) -> bool {
    target == "trousseau" || target.starts_with("trousseau::")
}

fn allowed(m: &Metadata<'_>) -> bool {
    is_ours(m.target()) || m.level() <= FOREIGN_MAX_LEVEL
}

/// env_logger's filter and format, with libraries capped.
struct Capped {
    inner: env_logger::Logger,
}

impl Log for Capped {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        allowed(m) && self.inner.enabled(m)
    }

    fn log(&self, r: &Record<'_>) {
        if allowed(r.metadata()) {
            self.inner.log(r);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Installs the logger once: `RUST_LOG` if set, else `default_level`.
pub fn init(default_level: &str) {
    let env = env_logger::Env::default().default_filter_or(default_level);
    // gRPC core keeps printing its own errors to stderr (GRPC_VERBOSITY,
    // ERROR by default): redirecting them into `log` would also pour its
    // debug chatter into `RUST_LOG=debug`.
    let inner = env_logger::Builder::from_env(env).format_timestamp_millis().build();
    let max = inner.filter();
    let logger: &'static Capped = Box::leak(Box::new(Capped { inner }));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(max);
    }
}

/// What a repeated failure is keyed by: API, operation, error class.
pub type RepeatKey = (&'static str, &'static str, &'static str);

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    logged: u32,
    quiet: u64,
}

/// Whether to log this occurrence of `key` at warn: `Some(n)` when yes,
/// `n` being how many were kept quiet since the last line; `None` when it
/// goes to debug instead ([`LOG_REPEATS_PER_WINDOW`] per
/// [`LOG_REPEAT_WINDOW`]).
pub fn warn_repeat(key: RepeatKey) -> Option<u64> {
    static WINDOWS: OnceLock<Mutex<HashMap<RepeatKey, Window>>> = OnceLock::new();
    let windows = WINDOWS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut w = windows.lock().unwrap_or_else(PoisonError::into_inner);
    decide(&mut w, key, Instant::now())
}

fn decide(windows: &mut HashMap<RepeatKey, Window>, key: RepeatKey, now: Instant) -> Option<u64> {
    let w = windows.entry(key).or_insert(Window {
        start: now,
        logged: 0,
        quiet: 0,
    });
    if now.saturating_duration_since(w.start) >= LOG_REPEAT_WINDOW {
        let quiet = w.quiet;
        *w = Window {
            start: now,
            logged: 1,
            quiet: 0,
        };
        return Some(quiet);
    }
    if w.logged < LOG_REPEATS_PER_WINDOW {
        w.logged += 1;
        Some(0)
    } else {
        w.quiet = w.quiet.saturating_add(1);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(target: &str, level: Level) -> bool {
        allowed(&Metadata::builder().target(target).level(level).build())
    }

    #[test]
    fn repeats_are_capped_per_window_and_counted() {
        let mut w = HashMap::new();
        let k = ("v2", "decrypt", "vault_unavailable");
        let t0 = Instant::now();
        let logged: Vec<_> = (0..20).map(|_| decide(&mut w, k, t0)).collect();
        assert_eq!(
            logged.iter().filter(|r| r.is_some()).count(),
            LOG_REPEATS_PER_WINDOW as usize
        );
        // Another key has its own allowance.
        assert_eq!(decide(&mut w, ("v2", "encrypt", "vault_unavailable"), t0), Some(0));
        // The next window's first line says how many were kept quiet.
        assert_eq!(decide(&mut w, k, t0 + LOG_REPEAT_WINDOW), Some(15));
        assert_eq!(decide(&mut w, k, t0 + LOG_REPEAT_WINDOW), Some(0));
    }

    #[test]
    fn libraries_stop_at_info_and_ours_go_to_trace() {
        for lib in ["ureq", "ureq_proto::client", "rustls::conn", "grpcio", "trousseaux"] {
            assert!(!meta(lib, Level::Trace) && !meta(lib, Level::Debug), "{lib}");
            assert!(meta(lib, Level::Info) && meta(lib, Level::Warn), "{lib}");
        }
        for ours in ["trousseau", "trousseau::vault::transport"] {
            assert!(meta(ours, Level::Trace) && meta(ours, Level::Debug), "{ours}");
        }
    }
}
