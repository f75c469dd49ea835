//! `trousseau serve`: the composition root, the one place that knows every
//! part. Start-up order (signals, warnings, Vault client, session, core,
//! HTTP listener, socket, gRPC), the first health check, and the drain on
//! SIGTERM or SIGINT.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::kms::{Gauges, KekPolicy, Kms, StatusReport};
use crate::limits::CANCEL_GRACE;
use crate::session::Session;
use crate::vault::VaultClient;
use crate::wire::KeyName;
use crate::{grpc, ops, socket};

/// What the HTTP endpoints see: the core's health and gauges and the
/// in-flight count, not the gRPC state.
struct View {
    kms: Arc<Kms>,
    in_flight: grpc::InFlight,
}

impl ops::http::Observed for View {
    fn status(&self) -> StatusReport {
        self.kms.status()
    }
    fn gauges(&self) -> Gauges {
        self.kms.gauges()
    }
    fn in_flight(&self) -> usize {
        self.in_flight.count()
    }
}

/// A failure that stops `serve` from starting.
#[derive(Debug)]
pub struct ServeError(pub String);

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The proxy variables HTTP clients commonly honour; the plugin does not.
const AMBIENT_PROXY_VARS: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Serves until SIGTERM or SIGINT, then drains and removes the socket.
pub fn serve(cfg: Config) -> Result<(), ServeError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    // Registered first: a SIGTERM during start-up must also drain cleanly.
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(|e| ServeError(format!("cannot install signal handlers: {e}")))?;

    log::info!("trousseau {} starting: {}", env!("CARGO_PKG_VERSION"), cfg.summary());
    if cfg.vault.skip_verify {
        log::warn!("TLS VERIFICATION OF VAULT IS DISABLED (VAULT_SKIP_VERIFY / --vault-skip-verify): anyone on the path can read DEKs and the token. Use --vault-cacert instead.");
    }
    for addr in &cfg.vault.addrs {
        if addr.starts_with("http://") && !is_loopback_url(addr) {
            log::warn!("vault address {addr} is plain HTTP: the token and DEKs cross the network unencrypted");
        }
    }
    match &cfg.vault.proxy {
        Some(p) => log::info!("vault: every node is reached through the proxy {p} (--vault-proxy)"),
        None => {
            let ambient: Vec<&str> = AMBIENT_PROXY_VARS
                .iter()
                .copied()
                .filter(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
                .collect();
            if !ambient.is_empty() {
                log::info!(
                    "vault: {} set but ignored: Vault is reached directly unless --vault-proxy (VAULT_PROXY_ADDR) names a proxy",
                    ambient.join(", ")
                );
            }
        }
    }
    let mut secrets = cfg.auth.credential_files();
    if let Some(key) = &cfg.vault.client_key {
        secrets.push(("--vault-client-key", key.as_path()));
    }
    for (flag, path) in secrets {
        warn_if_loose(flag, path);
    }
    if cfg.vault.timeout >= crate::limits::APISERVER_DEFAULT_DEADLINE {
        log::warn!("--vault-timeout {:?} is not below the apiserver's default KMS timeout (3s); raise the EncryptionConfiguration timeout to match", cfg.vault.timeout);
    }

    let vault = VaultClient::new(&cfg.vault).map_err(|e| ServeError(format!("vault client: {e}")))?;
    // Before the socket exists: bad credentials, an unreachable Vault or a
    // wrong CA stop the plugin here with a message saying which.
    let session = Session::start(cfg.auth.clone(), vault.clone(), cfg.vault.timeout).map_err(ServeError)?;
    session
        .spawn_keeper()
        .map_err(|e| ServeError(format!("cannot start the session keeper thread: {e}")))?;
    let key_name = |key: &String| KeyName {
        mount: cfg.transit_mount.clone(),
        key: key.clone(),
    };
    let kms = Arc::new(Kms::new(
        vault,
        session,
        key_name(&cfg.transit_key),
        cfg.decrypt_keys.iter().map(key_name).collect(),
        cfg.vault.timeout,
        cfg.coalesce,
        cfg.local_kek.then_some(KekPolicy {
            max_uses: cfg.local_kek_max_uses,
            max_age: cfg.local_kek_max_age,
        }),
    ));
    let in_flight = grpc::InFlight::new(cfg.max_in_flight);

    let http = cfg.http_addr.map(ops::http::bind).transpose().map_err(ServeError)?;
    // From here until the socket is withdrawn, no other plugin may touch
    // the path: the lock beside it says who serves there.
    let claim = socket::claim(&cfg.socket).map_err(|e| ServeError(e.to_string()))?;
    socket::prepare(&cfg.socket, &claim).map_err(|e| ServeError(e.to_string()))?;
    // Bound in a private directory, restricted, then renamed into place.
    let staging = socket::Staging::create(&cfg.socket).map_err(|e| ServeError(e.to_string()))?;
    let bind_at = staging.as_ref().map_or(cfg.socket.as_path(), |s| s.path());
    let server = match grpc::Server::start(bind_at, grpc::Shared::new(kms.clone(), in_flight.clone())) {
        Ok(s) => s,
        Err(e) => {
            socket::discard(staging.as_ref());
            return Err(ServeError(e));
        }
    };
    let bound = socket::publish(staging.as_ref(), &cfg.socket, &claim).map_err(|e| ServeError(e.to_string()))?;
    log::info!("serving KMS v2 and v1beta1 on unix://{}", cfg.socket.display());
    if let (Some(listener), Some(addr)) = (http, cfg.http_addr) {
        let view = Arc::new(View {
            kms: kms.clone(),
            in_flight: in_flight.clone(),
        });
        match ops::http::spawn(listener, view, cfg.socket.clone()) {
            Ok(()) => log::info!("serving /livez /readyz /healthz /metrics on http://{addr}"),
            Err(e) => log::error!("cannot start the HTTP endpoints on {addr}: {e}"),
        }
    }

    // First health check in the background: logs whether Vault and the key
    // work without delaying the socket the apiserver waits for.
    let check_kms = kms.clone();
    let _ = std::thread::Builder::new().name("first-check".into()).spawn(move || {
        let r = check_kms.status();
        match r.healthy {
            Ok(()) => log::info!("vault check ok: current key {}", r.key_id.unwrap_or_default()),
            Err(why) => log::warn!("vault check failed (serving anyway; Status reports unhealthy): {why}"),
        }
    });

    let sig = signals.forever().next();
    // New connections end here: the socket this plugin bound (and only
    // that one) is removed, and the lock goes to a successor at once, so
    // it can serve while this one drains. A socket bound in place is
    // unlinked by gRPC core itself at shutdown: then the lock is kept
    // until the drain is over.
    let withdrawn = socket::withdraw(&cfg.socket, &bound, &claim);
    let claim = if bound.in_place() {
        Some(claim)
    } else {
        drop(claim);
        None
    };
    log::info!(
        "received {}; draining {} in-flight requests (at most {:?}){}",
        if sig == Some(SIGINT) { "SIGINT" } else { "SIGTERM" },
        in_flight.count(),
        cfg.shutdown_timeout,
        if withdrawn {
            "; socket removed, new connections go to a successor"
        } else {
            ""
        }
    );

    let deadline = Instant::now() + cfg.shutdown_timeout;
    if !server.drain(cfg.shutdown_timeout) {
        log::warn!(
            "{} requests were still in flight after {:?}; cancelled them",
            in_flight.count(),
            cfg.shutdown_timeout
        );
    }
    // Worker threads finish their bookkeeping right after replying.
    while in_flight.count() > 0 && Instant::now() < deadline + CANCEL_GRACE {
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(claim);
    log::info!("stopped");
    Ok(())
}

/// A credential file that group or others may read or write is logged at
/// start: it works, but anyone with that access holds the credential.
fn warn_if_loose(flag: &str, path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            log::warn!(
                "{flag} {} is open to group or others (mode {mode:03o}); restrict it to 0600 or 0400",
                path.display()
            );
        }
    }
}

/// Whether a Vault address names this machine: an IP literal in
/// 127.0.0.0/8, `[::1]`, or `localhost`. A name is never taken for an
/// address by its look (`127.0.attacker.example` resolves wherever its
/// owner wants), and an address with userinfo is not loopback.
fn is_loopback_url(addr: &str) -> bool {
    let Some((_, rest)) = addr.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return false;
    }
    let host = match authority.strip_prefix('[') {
        // [v6]:port: the literal is what the brackets hold.
        Some(v6) => match v6.split_once(']') {
            Some((h, tail)) if tail.is_empty() || tail.starts_with(':') => h,
            _ => return false,
        },
        None => authority.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        assert!(is_loopback_url("http://127.0.0.1:8200"));
        assert!(is_loopback_url("http://localhost:8200"));
        assert!(is_loopback_url("http://[::1]:8200"));
        assert!(!is_loopback_url("http://vault.example:8200"));
        assert!(!is_loopback_url("http://localhost.evil.example:8200"));
        assert!(!is_loopback_url("http://127.0.0.1.evil.example:8200"));
        assert!(is_loopback_url("http://127.1.2.3:8200/"));
        assert!(is_loopback_url("http://127.0.0.1"));
        assert!(is_loopback_url("http://[::1]"));
        // Names that look like loopback addresses are names.
        for name in [
            "http://127.0.attacker.example:8200",
            "http://127.0.0.example:8200",
            "http://127.a.b.c",
            "http://127.0.0.1x:8200",
            "http://[::1].evil.example:8200",
            "http://[::2]:8200",
            "http://127.0.0.1@vault.example:8200",
            "http://10.0.0.1:8200",
            "http://0.0.0.0:8200",
            "127.0.0.1:8200",
            "http://",
        ] {
            assert!(!is_loopback_url(name), "{name}");
        }
    }
}
