//! The only code that speaks HTTP to Vault. [`VaultClient`] is the facade:
//! one pooled, keep-alive ureq agent per configured node, every call bounded
//! by a deadline. Its calls live by Vault API area:
//!
//! - `transit`: encrypt and decrypt (the plugin's own work), read-key;
//! - `token`: login, lookup-self, renew-self (the session's);
//! - `sys`: each node's health (`check`'s);
//! - `transport`: node preference and failover, a standby's 307, sending
//!   and reading a bounded answer;
//! - `answer`: reading Vault's answers into our types (no HTTP: fuzzed);
//! - `error`: what a failure was and what to do about it;
//! - `tls` and `settings`: how the agents are built and from what;
//!   `resolve`: their name resolution (no thread per request), `bounded`:
//!   their waits cut short when the caller has gone.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

mod answer;
mod bounded;
mod error;
mod resolve;
mod settings;
mod sys;
mod tls;
mod token;
mod transit;
mod transport;

pub use answer::{KeyInfo, Lease, LoginToken, NodeHealth};
pub use error::{VaultError, VaultErrorClass};
pub use settings::{parse_addr, Settings};
pub use sys::NodeAnswer;
use transport::Node;

/// A blocking Vault client over one or more nodes. Cheap to clone and share
/// across threads: each agent's pool is internally synchronised and no lock
/// is held here.
#[derive(Clone)]
pub struct VaultClient {
    inner: Arc<Inner>,
}

struct Inner {
    nodes: Vec<Node>,
    /// Index of the node that answered last: tried first.
    preferred: AtomicUsize,
    namespace: Option<String>,
}

impl fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addrs: Vec<&str> = self.inner.nodes.iter().map(|n| n.addr.as_str()).collect();
        f.debug_struct("VaultClient")
            .field("addrs", &addrs)
            .field("namespace", &self.inner.namespace)
            .finish()
    }
}

impl VaultClient {
    /// Builds one agent per node: TLS roots, client certificate, timeouts,
    /// pool. Fails on an unreadable CA, certificate or key.
    pub fn new(cfg: &Settings) -> Result<VaultClient, String> {
        let tls = tls::tls_config(cfg)?;
        let proxy = tls::proxy(cfg)?;
        let mut nodes = Vec::with_capacity(cfg.addrs.len());
        for addr in &cfg.addrs {
            nodes.push(tls::node(cfg, &tls, proxy.as_ref(), addr)?);
        }
        if nodes.is_empty() {
            return Err("no Vault address configured".into());
        }
        Ok(VaultClient {
            inner: Arc::new(Inner {
                nodes,
                preferred: AtomicUsize::new(0),
                namespace: cfg.namespace.clone(),
            }),
        })
    }

    /// The address of the node requests go to first.
    pub fn preferred_addr(&self) -> &str {
        let i = self.inner.preferred.load(Ordering::Relaxed);
        self.inner.nodes.get(i).map(|n| n.addr.as_str()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_credentials() {
        let cfg = crate::config::tests::sample_config();
        let c = VaultClient::new(&cfg.vault).unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains("topsecret") && d.contains("127.0.0.1:8200"), "{d}");
    }
}
