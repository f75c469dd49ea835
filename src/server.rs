//! The gRPC server: both KMS services on one Unix socket, each request on
//! its own OS thread under a cap, and the SIGTERM drain.

mod v1;
mod v2;

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use grpcio::{ChannelBuilder, EnvBuilder, RpcContext, RpcStatus, ServerBuilder, ServerCredentials, UnarySink};

use crate::config::Config;
use crate::envelope::KeyName;
use crate::kms::{Kms, KmsError};
use crate::limits::{MAX_GRPC_MESSAGE, WORKER_STACK};
use crate::session::Session;
use crate::vault::VaultClient;
use crate::{proto, socket};

pub use v1::API_VERSION as V1_API_VERSION;
pub use v2::API_VERSION as V2_API_VERSION;

/// gRPC completion-queue threads. Handlers only hand work to a new thread,
/// so two (one per core of a typical control-plane VM) are plenty.
const GRPC_CQ_COUNT: usize = 2;
/// After the drain deadline, how long gRPC gets to cancel what is left.
const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// State every handler shares.
#[derive(Clone)]
pub struct Shared(Arc<Inner>);

struct Inner {
    kms: Kms,
    in_flight: AtomicUsize,
    max_in_flight: usize,
}

/// One slot of the in-flight cap, released on drop (also on panic).
struct Permit(Shared);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0 .0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    pub fn new(kms: Kms, max_in_flight: usize) -> Shared {
        Shared(Arc::new(Inner {
            kms,
            in_flight: AtomicUsize::new(0),
            max_in_flight,
        }))
    }

    pub fn kms(&self) -> &Kms {
        &self.0.kms
    }

    pub fn in_flight(&self) -> usize {
        self.0.in_flight.load(Ordering::Acquire)
    }

    fn try_acquire(&self) -> Option<Permit> {
        let inner = &self.0;
        let mut cur = inner.in_flight.load(Ordering::Acquire);
        loop {
            if cur >= inner.max_in_flight {
                return None;
            }
            match inner
                .in_flight
                .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(Permit(self.clone())),
                Err(now) => cur = now,
            }
        }
    }
}

/// Sends a reply from the completion-queue thread (no Vault call involved).
fn reply_inline<Resp: Send + 'static>(ctx: &RpcContext<'_>, sink: UnarySink<Resp>, r: Result<Resp, RpcStatus>) {
    let f = match r {
        Ok(resp) => sink.success(resp),
        Err(status) => sink.fail(status),
    };
    ctx.spawn(async move {
        if let Err(e) = f.await {
            log::debug!("reply not delivered: {e}");
        }
    });
}

/// Logs a request's outcome and counts it in the metrics.
fn log_outcome(api: &'static str, op: &'static str, uid: &str, start: Instant, r: Result<(), &KmsError>) {
    let took = start.elapsed();
    crate::metrics::metrics().request(api, op, r.map_or_else(|e| e.class(), |()| "ok"), took);
    let ms = took.as_secs_f64() * 1000.0;
    let uid = log_safe_uid(uid);
    match r {
        Ok(()) => log::debug!("api={api} op={op} uid={uid} latency_ms={ms:.1} outcome=ok"),
        Err(e) => log::warn!(
            "api={api} op={op} uid={uid} latency_ms={ms:.1} outcome={} error=\"{e}\"",
            e.class()
        ),
    }
}

/// The apiserver sends a UUID; anything else is cut to [`MAX_LOGGED_UID`]
/// characters of `[A-Za-z0-9-_.]` so a caller cannot forge log lines.
fn log_safe_uid(uid: &str) -> String {
    if uid.is_empty() {
        return "-".to_owned();
    }
    uid.chars()
        .take(MAX_LOGGED_UID)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// A UUID is 36 characters; leave room for other request-id schemes.
const MAX_LOGGED_UID: usize = 64;

/// Runs `work` on its own thread under the in-flight cap and replies.
fn dispatch<Resp, F>(
    ctx: &RpcContext<'_>,
    sink: UnarySink<Resp>,
    shared: &Shared,
    api: &'static str,
    op: &'static str,
    uid: String,
    work: F,
) where
    Resp: Send + 'static,
    F: FnOnce(&Kms) -> Result<Resp, KmsError> + Send + 'static,
{
    let start = Instant::now();
    let refuse = |e: KmsError, sink: UnarySink<Resp>| {
        log_outcome(api, op, &uid, start, Err(&e));
        reply_inline(ctx, sink, Err(e.to_rpc_status()));
    };
    if ctx.deadline().exceeded() {
        return refuse(KmsError::DeadlineExceeded, sink);
    }
    let Some(permit) = shared.try_acquire() else {
        return refuse(KmsError::Overloaded(shared.0.max_in_flight), sink);
    };
    let shared2 = shared.clone();
    let uid2 = uid.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("kms-{op}"))
        .stack_size(WORKER_STACK)
        .spawn(move || {
            let _permit = permit;
            let result = work(&shared2.0.kms);
            log_outcome(api, op, &uid2, start, result.as_ref().map(|_| ()));
            let f = match result {
                Ok(resp) => sink.success(resp),
                Err(e) => sink.fail(e.to_rpc_status()),
            };
            if let Err(e) = futures_executor::block_on(f) {
                log::debug!("api={api} op={op} uid={uid2} reply not delivered: {e}");
            }
        });
    if let Err(e) = spawned {
        // The closure (sink included) was dropped: gRPC cancels the call.
        log::error!("api={api} op={op} uid={uid} cannot start a worker thread: {e}");
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

/// Serves until SIGTERM or SIGINT, then drains and removes the socket.
pub fn serve(cfg: Config) -> Result<(), ServeError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    // Registered first: a SIGTERM during start-up must also drain cleanly.
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(|e| ServeError(format!("cannot install signal handlers: {e}")))?;

    log::info!("trousseau {} starting: {}", env!("CARGO_PKG_VERSION"), cfg.summary());
    if cfg.vault_skip_verify {
        log::warn!("TLS VERIFICATION OF VAULT IS DISABLED (VAULT_SKIP_VERIFY / --vault-skip-verify): anyone on the path can read DEKs and the token. Use --vault-cacert instead.");
    }
    for addr in &cfg.vault_addrs {
        if addr.starts_with("http://") && !is_loopback_url(addr) {
            log::warn!("vault address {addr} is plain HTTP: the token and DEKs cross the network unencrypted");
        }
    }
    if cfg.vault_timeout >= crate::limits::APISERVER_DEFAULT_DEADLINE {
        log::warn!("--vault-timeout {:?} is not below the apiserver's default KMS timeout (3s); raise the EncryptionConfiguration timeout to match", cfg.vault_timeout);
    }

    let vault = VaultClient::new(&cfg).map_err(|e| ServeError(format!("vault client: {e}")))?;
    // Before the socket exists: bad credentials, an unreachable Vault or a
    // wrong CA stop the plugin here with a message saying which.
    let session = Session::start(cfg.auth.clone(), vault.clone(), cfg.vault_timeout).map_err(ServeError)?;
    session
        .spawn_keeper()
        .map_err(|e| ServeError(format!("cannot start the session keeper thread: {e}")))?;
    let key_name = |key: &String| KeyName {
        mount: cfg.transit_mount.clone(),
        key: key.clone(),
    };
    let kms = Kms::new(
        vault,
        session,
        key_name(&cfg.transit_key),
        cfg.decrypt_keys.iter().map(key_name).collect(),
        cfg.vault_timeout,
    );
    let shared = Shared::new(kms, cfg.max_in_flight);

    let http = cfg.http_addr.map(crate::http::bind).transpose().map_err(ServeError)?;
    socket::prepare(&cfg.socket).map_err(|e| ServeError(e.to_string()))?;
    let env = Arc::new(EnvBuilder::new().cq_count(GRPC_CQ_COUNT).name_prefix("grpc-cq").build());
    let max_msg = i32::try_from(MAX_GRPC_MESSAGE).unwrap_or(i32::MAX);
    let args = ChannelBuilder::new(env.clone())
        .max_receive_message_len(max_msg)
        .max_send_message_len(max_msg)
        .build_args();
    let mut server = ServerBuilder::new(env)
        .channel_args(args)
        .register_service(proto::v2::create_service(v2::V2(shared.clone())))
        .register_service(proto::v1beta1::create_service(v1::V1(shared.clone())))
        .build()
        .map_err(|e| ServeError(format!("cannot build gRPC server: {e}")))?;
    let addr = format!("unix:{}", cfg.socket.display());
    server
        .add_listening_port(addr.as_str(), ServerCredentials::insecure())
        .map_err(|_| {
            ServeError(format!(
                "cannot bind unix socket {}: check that its directory is writable by this user (see the gRPC log line above)",
                cfg.socket.display()
            ))
        })?;
    server.start();
    if let Err(e) = socket::restrict(&cfg.socket) {
        socket::remove(&cfg.socket);
        return Err(ServeError(e.to_string()));
    }
    log::info!("serving KMS v2 and v1beta1 on unix://{}", cfg.socket.display());
    if let (Some(listener), Some(addr)) = (http, cfg.http_addr) {
        match crate::http::spawn(listener, shared.clone(), cfg.socket.clone()) {
            Ok(()) => log::info!("serving /livez /readyz /healthz /metrics on http://{addr}"),
            Err(e) => log::error!("cannot start the HTTP endpoints on {addr}: {e}"),
        }
    }

    // First health probe in the background: logs whether Vault and the key
    // work without delaying the socket the apiserver waits for.
    let probe_shared = shared.clone();
    let _ = std::thread::Builder::new().name("first-probe".into()).spawn(move || {
        let r = probe_shared.0.kms.status();
        match r.healthy {
            Ok(()) => log::info!("vault check ok: current key {}", r.key_id.unwrap_or_default()),
            Err(why) => log::warn!("vault check failed (serving anyway; Status reports unhealthy): {why}"),
        }
    });

    let sig = signals.forever().next();
    log::info!(
        "received {}; draining {} in-flight requests (at most {:?})",
        if sig == Some(SIGINT) { "SIGINT" } else { "SIGTERM" },
        shared.in_flight(),
        cfg.shutdown_timeout
    );

    let deadline = Instant::now() + cfg.shutdown_timeout;
    let (tx, rx) = mpsc::channel();
    let shutdown = server.shutdown();
    let _ = std::thread::Builder::new().name("shutdown".into()).spawn(move || {
        let _ = futures_executor::block_on(shutdown);
        let _ = tx.send(());
    });
    let drained = rx.recv_timeout(cfg.shutdown_timeout).is_ok();
    if !drained {
        log::warn!(
            "{} requests still in flight after {:?}; cancelling them",
            shared.in_flight(),
            cfg.shutdown_timeout
        );
        server.cancel_all_calls();
        let _ = rx.recv_timeout(CANCEL_GRACE);
    }
    // Worker threads finish their bookkeeping right after replying.
    while shared.in_flight() > 0 && Instant::now() < deadline + CANCEL_GRACE {
        std::thread::sleep(Duration::from_millis(10));
    }
    socket::remove(&cfg.socket);
    log::info!("stopped; socket {} removed", cfg.socket.display());
    Ok(())
}

fn is_loopback_url(addr: &str) -> bool {
    let authority = addr.split("://").nth(1).unwrap_or("");
    if authority.starts_with("[::1]") {
        return true;
    }
    let host = authority.split(':').next().unwrap_or("");
    host == "localhost" || (host.starts_with("127.") && host.split('.').count() == 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_cannot_forge_log_lines() {
        assert_eq!(log_safe_uid(""), "-");
        assert_eq!(
            log_safe_uid("0b8e2c9e-6a0e-4a53-9d3e-1c4f7a2b9c11"),
            "0b8e2c9e-6a0e-4a53-9d3e-1c4f7a2b9c11"
        );
        assert_eq!(log_safe_uid("x\nFAKE op=decrypt"), "x?FAKE?op?decrypt");
        assert_eq!(log_safe_uid(&"a".repeat(500)).len(), MAX_LOGGED_UID);
    }

    #[test]
    fn loopback_detection() {
        assert!(is_loopback_url("http://127.0.0.1:8200"));
        assert!(is_loopback_url("http://localhost:8200"));
        assert!(is_loopback_url("http://[::1]:8200"));
        assert!(!is_loopback_url("http://vault.example:8200"));
        assert!(!is_loopback_url("http://localhost.evil.example:8200"));
        assert!(!is_loopback_url("http://127.0.0.1.evil.example:8200"));
    }
}
