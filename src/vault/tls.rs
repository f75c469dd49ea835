//! Building the HTTP agents that reach Vault: trusted roots, the client
//! certificate, timeouts and pools, and the TLS server name override.
//!
//! ureq verifies a certificate against the URL's host. To verify against
//! `--vault-tls-server-name` instead, a node's URL carries that name as its
//! host and the node's agent resolves every name to the node's real
//! address. Each node has its own agent for this reason, and its own
//! resolver (`resolve`: no thread for an IP literal, a cache for names).

use std::sync::Arc;

use ureq::http::Uri;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};
use ureq::unversioned::transport::{Connector, DefaultConnector};

use super::bounded::CallerBound;
use super::resolve::NodeResolver;
use ureq::Proxy;

use super::transport::Node;
use super::Settings;
use crate::limits::{
    MAX_PEM_FILE, VAULT_CONNECT_TIMEOUT, VAULT_IO_BUFFER, VAULT_MAX_CONNECTIONS, VAULT_MAX_IDLE_AGE,
    VAULT_MAX_IDLE_CONNECTIONS,
};

/// Trusted roots, client certificate and verification switch, once.
pub fn tls_config(cfg: &Settings) -> Result<TlsConfig, String> {
    let mut tls = TlsConfig::builder();
    if let Some(path) = &cfg.cacert {
        let certs = read_pem(path, "CA file")?.0;
        if certs.is_empty() {
            return Err(format!("CA file {} holds no PEM certificate", path.display()));
        }
        tls = tls.root_certs(RootCerts::Specific(Arc::new(certs)));
    }
    if let (Some(cert), Some(key)) = (&cfg.client_cert, &cfg.client_key) {
        let chain = read_pem(cert, "client certificate")?.0;
        if chain.is_empty() {
            return Err(format!(
                "client certificate {} holds no PEM certificate",
                cert.display()
            ));
        }
        let Some(private) = read_pem(key, "client key")?.1 else {
            return Err(format!(
                "client key {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                key.display()
            ));
        };
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, private)));
    }
    if cfg.skip_verify {
        tls = tls.disable_verification(true);
    }
    Ok(tls.build())
}

/// Certificates and the first private key in a PEM file. Errors name the
/// file but never quote its content.
fn read_pem(
    path: &std::path::Path,
    what: &str,
) -> Result<(Vec<Certificate<'static>>, Option<PrivateKey<'static>>), String> {
    // Opened without blocking, regular files only, bounded (`files`): a
    // FIFO or a device at the path must not hang start-up.
    let pem = crate::files::read_small(path, MAX_PEM_FILE)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    let pem = pem.as_bytes();
    let mut certs = Vec::new();
    let mut key = None;
    for item in ureq::tls::parse_pem(pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(PemItem::PrivateKey(k)) if key.is_none() => key = Some(k),
            Ok(_) => {}
            Err(_) => return Err(format!("{what} {} is not valid PEM", path.display())),
        }
    }
    Ok((certs, key))
}

/// The proxy of `--vault-proxy`, or none. ureq's default would read the
/// proxy environment variables; an explicit `None` is what turns that off.
pub fn proxy(cfg: &Settings) -> Result<Option<Proxy>, String> {
    cfg.proxy
        .as_deref()
        .map(|p| Proxy::new(p).map_err(|e| format!("--vault-proxy {p}: {e}")))
        .transpose()
}

/// A configured node: the base URL requests use for `addr` and the agent
/// that sends them. With a server name, the URL's host is that name and the
/// agent connects to `addr`'s host; without one, both are `addr`.
pub fn node(cfg: &Settings, tls: &TlsConfig, proxy: Option<&Proxy>, addr: &str) -> Result<Node, String> {
    let agent_config = agent_config(cfg, tls, proxy);
    let (base, pinned) = match (&cfg.tls_server_name, addr.strip_prefix("https://")) {
        (Some(name), Some(_)) => {
            let real: Uri = addr.parse().map_err(|e| format!("vault address {addr}: {e}"))?;
            let port = real.port_u16().unwrap_or(443);
            (format!("https://{name}:{port}"), Some(real))
        }
        _ => (addr.to_owned(), None),
    };
    let agent = ureq::Agent::with_parts(
        agent_config,
        DefaultConnector::default().chain(CallerBound),
        NodeResolver::new(pinned),
    );
    Ok(Node {
        addr: addr.to_owned(),
        base,
        agent,
        slots: crate::permits::Permits::new(VAULT_MAX_CONNECTIONS),
    })
}

/// No redirects followed by ureq (the client decides), statuses as values,
/// the call budget, a keep-alive pool, and no proxy but the configured one.
fn agent_config(cfg: &Settings, tls: &TlsConfig, proxy: Option<&Proxy>) -> ureq::config::Config {
    ureq::Agent::config_builder()
        .proxy(proxy.cloned())
        .http_status_as_error(false)
        .max_redirects(0)
        .tls_config(tls.clone())
        .timeout_global(Some(cfg.timeout))
        .timeout_connect(Some(VAULT_CONNECT_TIMEOUT.min(cfg.timeout)))
        .input_buffer_size(VAULT_IO_BUFFER)
        .output_buffer_size(VAULT_IO_BUFFER)
        .max_response_header_size(VAULT_IO_BUFFER)
        .max_idle_connections(VAULT_MAX_IDLE_CONNECTIONS)
        .max_idle_connections_per_host(VAULT_MAX_IDLE_CONNECTIONS)
        .max_idle_age(VAULT_MAX_IDLE_AGE)
        .user_agent(concat!("trousseau/", env!("CARGO_PKG_VERSION")))
        .build()
}
