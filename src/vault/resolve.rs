//! Name resolution for the Vault nodes, without a thread per request.
//!
//! ureq's default resolver, once a timeout is set, resolves every request
//! on a new thread (IP literals and pooled connections included), and a
//! lookup stuck in a DNS stall outlives the call's budget. Here an IP
//! literal is used as it is, a name is looked up at most once per
//! [`VAULT_DNS_CACHE_TTL`], and lookups run on at most
//! [`VAULT_DNS_MAX_LOOKUPS`] threads at once in the whole process; past
//! that cap a call uses the last answer it has, or fails at once.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{mpsc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

use crate::limits::{VAULT_DNS_CACHE_TTL, VAULT_DNS_MAX_LOOKUPS, VAULT_DNS_STACK};
use crate::permits::Permits;

/// Addresses ureq keeps per resolution (`ResolvedSocketAddrs` holds 16).
const MAX_ADDRS: usize = 16;

/// Lookup threads running now, in the whole process, capped.
fn lookup_slots() -> &'static Permits {
    static SLOTS: OnceLock<Permits> = OnceLock::new();
    SLOTS.get_or_init(|| Permits::new(VAULT_DNS_MAX_LOOKUPS))
}

/// One node's resolver. With `pinned`, every URL resolves to that address
/// (the TLS server name override: the URL carries the name, the pin the
/// address); without it, the URL's own host is resolved.
#[derive(Debug)]
pub struct NodeResolver {
    pinned: Option<Uri>,
    cache: Mutex<Option<Cached>>,
}

#[derive(Debug, Clone)]
struct Cached {
    host_port: String,
    addrs: Vec<SocketAddr>,
    until: Instant,
}

impl NodeResolver {
    pub fn new(pinned: Option<Uri>) -> NodeResolver {
        NodeResolver {
            pinned,
            cache: Mutex::new(None),
        }
    }

    /// `host:port` and, for an IP literal, the address itself.
    fn target(uri: &Uri) -> Option<(String, Option<SocketAddr>)> {
        let authority = uri.authority()?;
        let port = authority.port_u16().or_else(|| match uri.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        })?;
        let host = authority.host();
        let literal = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, port));
        Some((format!("{host}:{port}"), literal))
    }

    fn lookup(&self, host_port: &str, timeout: &NextTimeout) -> Result<Vec<SocketAddr>, ureq::Error> {
        let stale = {
            let c = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            match c.as_ref().filter(|c| c.host_port == host_port) {
                Some(c) if Instant::now() < c.until => return Ok(c.addrs.clone()),
                Some(c) => Some(c.addrs.clone()),
                None => None,
            }
        };
        let Some(slot) = lookup_slots().try_acquire() else {
            log::debug!(
                "vault: {VAULT_DNS_MAX_LOOKUPS} DNS lookups already running; not starting another for {host_port}"
            );
            return stale.ok_or(ureq::Error::HostNotFound);
        };
        let (tx, rx) = mpsc::sync_channel(1);
        let name = host_port.to_owned();
        crate::metrics::metrics().dns_lookup();
        let spawned = std::thread::Builder::new()
            .name("vault-dns".into())
            .stack_size(VAULT_DNS_STACK)
            .spawn(move || {
                let _slot = slot;
                let r = name.to_socket_addrs().map(|a| a.collect::<Vec<_>>());
                let _ = tx.send(r);
            });
        if spawned.is_err() {
            return stale.ok_or(ureq::Error::HostNotFound);
        }
        let wait = if timeout.after.is_not_happening() {
            VAULT_DNS_CACHE_TTL
        } else {
            *timeout.after
        };
        let addrs = match rx.recv_timeout(wait) {
            Ok(Ok(a)) if !a.is_empty() => a,
            Ok(_) => return stale.ok_or(ureq::Error::HostNotFound),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return stale.ok_or(ureq::Error::Timeout(timeout.reason));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return stale.ok_or(ureq::Error::HostNotFound),
        };
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) = Some(Cached {
            host_port: host_port.to_owned(),
            addrs: addrs.clone(),
            until: Instant::now() + VAULT_DNS_CACHE_TTL,
        });
        Ok(addrs)
    }
}

impl Resolver for NodeResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let uri = self.pinned.as_ref().unwrap_or(uri);
        let (host_port, literal) = NodeResolver::target(uri).ok_or(ureq::Error::HostNotFound)?;
        let found = match literal {
            Some(a) => vec![a],
            None => self.lookup(&host_port, &timeout)?,
        };
        let mut out = self.empty();
        for a in config.ip_family().keep_wanted(found.into_iter()).take(MAX_ADDRS) {
            out.push(a);
        }
        if out.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookups_started() -> u64 {
        crate::metrics::metrics().dns_lookups()
    }

    fn resolve(r: &NodeResolver, url: &str) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let uri: Uri = url.parse().unwrap();
        let cfg = ureq::Agent::config_builder().build();
        r.resolve(&uri, &cfg, NextTimeout::default())
    }

    /// IP literals never start a lookup; a name is looked up once and then
    /// served from the cache.
    #[test]
    fn literals_need_no_thread_and_names_are_cached() {
        let r = NodeResolver::new(None);
        let before = lookups_started();
        for url in [
            "http://127.0.0.1:8200/v1/x",
            "https://[::1]:8200/v1/x",
            "https://10.1.2.3/v1/x",
        ] {
            let a = resolve(&r, url).unwrap();
            assert_eq!(a.len(), 1, "{url}");
        }
        assert_eq!(resolve(&r, "https://10.1.2.3/v1/x").unwrap()[0].port(), 443);
        assert_eq!(lookups_started(), before, "a lookup for an IP literal");
        // A pinned node resolves every URL to its address.
        let pinned = NodeResolver::new(Some("https://127.0.0.2:8201".parse().unwrap()));
        let a = resolve(&pinned, "https://vault.internal:8201/v1/x").unwrap();
        assert_eq!(a[0], "127.0.0.2:8201".parse().unwrap());
        // `localhost` is a name: one lookup, then the cache.
        let named = NodeResolver::new(None);
        let start = lookups_started();
        for _ in 0..5 {
            assert!(!resolve(&named, "http://localhost:8200/v1/x").unwrap().is_empty());
        }
        let used = lookups_started() - start;
        assert!(used <= 1, "{used} lookups for one name within the cache time");
    }
}
