//! The gRPC layer: both KMS services on one Unix socket, each request on its
//! own OS thread (parked between requests: [`workers`]) under the in-flight
//! cap ([`dispatch`]), its outcome logged
//! and counted, its error mapped to a status in one place ([`status`]).
//! The adapters ([`v1`], [`v2`]) translate messages and nothing else.

mod replies;
mod status;
mod v1;
mod v2;
mod workers;

use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use grpcio::{
    ChannelBuilder, EnvBuilder, ResourceQuota, RpcContext, RpcStatus, ServerBuilder, ServerCredentials, UnarySink,
};

use crate::kms::{Kms, KmsError};
use crate::limits::MAX_LOGGED_UID;
use crate::limits::{CANCEL_GRACE, GRPC_CQ_COUNT, MAX_GRPC_MESSAGE};
use crate::limits::{
    GRPC_MAX_CONNECTION_AGE, GRPC_MAX_CONNECTION_AGE_GRACE, GRPC_MAX_STREAMS_PER_CONNECTION, GRPC_MEMORY_QUOTA,
    GRPC_REQUEST_SLOTS_PER_CQ,
};
use crate::proto;
use status::to_rpc_status;

pub use v1::API_VERSION as V1_API_VERSION;
pub use v2::API_VERSION as V2_API_VERSION;

/// The cap on requests handled at once (`--max-in-flight`) and their
/// count, which `/metrics` also reads.
pub type InFlight = crate::permits::Permits;

/// What every handler shares: the core, the in-flight cap and the
/// request threads.
#[derive(Clone)]
pub struct Shared {
    kms: Arc<Kms>,
    in_flight: InFlight,
    workers: workers::Workers,
}

impl Shared {
    pub fn new(kms: Arc<Kms>, in_flight: InFlight) -> Shared {
        Shared {
            kms,
            in_flight,
            workers: workers::Workers::default(),
        }
    }
}

/// Sends a reply from the completion-queue thread (no Vault call involved).
fn reply_inline<Resp: Send + 'static>(sink: UnarySink<Resp>, r: Result<Resp, RpcStatus>, label: replies::Label) {
    let f = match r {
        Ok(resp) => sink.success(resp),
        Err(status) => sink.fail(status),
    };
    replies::watch(Box::pin(f), None, label);
}

/// Logs a request's outcome and counts it in the metrics.
fn log_outcome(api: &'static str, op: &'static str, uid: &str, start: Instant, r: Result<(), &KmsError>) {
    let took = start.elapsed();
    crate::metrics::metrics().request(api, op, r.map_or_else(|e| e.class(), |()| "ok"), took);
    let ms = took.as_secs_f64() * 1000.0;
    let uid = log_safe_uid(uid);
    match r {
        Ok(()) => log::debug!("api={api} op={op} uid={uid} latency_ms={ms:.1} outcome=ok"),
        Err(e) => match crate::logging::warn_repeat((api, op, e.class())) {
            Some(quiet) => {
                if quiet > 0 {
                    log::warn!(
                        "api={api} op={op} outcome={}: {quiet} more like this were logged at debug only",
                        e.class()
                    );
                }
                log::warn!(
                    "api={api} op={op} uid={uid} latency_ms={ms:.1} outcome={} error=\"{e}\"",
                    e.class()
                );
            }
            None => log::debug!(
                "api={api} op={op} uid={uid} latency_ms={ms:.1} outcome={} error=\"{e}\"",
                e.class()
            ),
        },
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
        reply_inline(sink, Err(to_rpc_status(&e)), replies::Label::new(api, op, &uid));
    };
    if ctx.deadline().exceeded() {
        return refuse(KmsError::DeadlineExceeded, sink);
    }
    let Some(permit) = shared.in_flight.try_acquire() else {
        return refuse(KmsError::Overloaded(shared.in_flight.max()), sink);
    };
    let kms = shared.kms.clone();
    let deadline = ctx.deadline();
    let started = shared.workers.run(move || {
        // A panic (a bug) fails only this request, with INTERNAL, and
        // is counted; the permit is released either way.
        // The work ends once the apiserver's deadline has passed
        // (`caller`), or at --vault-timeout, whichever comes first.
        let serve = || crate::caller::serve(move || deadline.exceeded(), || work(&kms));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(serve)).unwrap_or_else(|_| {
            crate::metrics::metrics().panicked("request");
            Err(KmsError::Internal(
                "the plugin failed unexpectedly on this request (a bug: see the log)".into(),
            ))
        });
        log_outcome(api, op, &uid, start, result.as_ref().map(|_| ()));
        let f = match result {
            Ok(resp) => sink.success(resp),
            Err(e) => sink.fail(to_rpc_status(&e)),
        };
        // The reply is written here, on this thread. Its completion and the
        // permit go to `replies`, which keeps them until gRPC core has
        // delivered the reply or gives up on it after
        // REPLY_DELIVERY_TIMEOUT; this thread is free for the next request
        // (counted parked before the hand-over: `workers::Leftover`).
        let label = replies::Label::new(api, op, &uid);
        Some(Box::new(move || replies::watch(Box::pin(f), Some(permit), label)) as workers::Leftover)
    });
    if let Err(e) = started {
        // The job (sink included) was dropped: gRPC cancels the call.
        log::error!("api={api} op={op} cannot start a worker thread: {e}");
    }
}

/// The running gRPC server.
pub struct Server(grpcio::Server);

impl Server {
    /// Builds both services and starts serving on the Unix socket `path`
    /// (which must not exist yet).
    pub fn start(path: &Path, shared: Shared) -> Result<Server, String> {
        let env = Arc::new(EnvBuilder::new().cq_count(GRPC_CQ_COUNT).name_prefix("grpc-cq").build());
        let int = |v: usize| i32::try_from(v).unwrap_or(i32::MAX);
        let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
        let quota = ResourceQuota::new(Some("trousseau-grpc")).resize_memory(GRPC_MEMORY_QUOTA);
        let args = ChannelBuilder::new(env.clone())
            .max_receive_message_len(int(MAX_GRPC_MESSAGE))
            .max_send_message_len(int(MAX_GRPC_MESSAGE))
            .max_concurrent_stream(int(GRPC_MAX_STREAMS_PER_CONNECTION))
            .set_resource_quota(quota)
            // Identity only: core cancels a call that names another
            // encoding (UNIMPLEMENTED) when its headers arrive, before any
            // body is inflated; and never inflates one either.
            .raw_cfg_int(c"grpc.compression_enabled_algorithms_bitset".into(), 1)
            .raw_cfg_int(c"grpc.per_message_decompression".into(), 0)
            .raw_cfg_int(c"grpc.max_connection_age_ms".into(), ms(GRPC_MAX_CONNECTION_AGE))
            .raw_cfg_int(
                c"grpc.max_connection_age_grace_ms".into(),
                ms(GRPC_MAX_CONNECTION_AGE_GRACE),
            )
            .build_args();
        let mut server = ServerBuilder::new(env)
            .channel_args(args)
            .requests_slot_per_cq(GRPC_REQUEST_SLOTS_PER_CQ)
            .register_service(proto::v2::create_service(v2::V2(shared.clone())))
            .register_service(proto::v1beta1::create_service(v1::V1(shared)))
            .build()
            .map_err(|e| format!("cannot build gRPC server: {e}"))?;
        let addr = format!("unix:{}", path.display());
        server
            .add_listening_port(addr.as_str(), ServerCredentials::insecure())
            .map_err(|_| {
                format!(
                    "cannot bind unix socket {}: check that its directory is writable by this user (see the gRPC log line above)",
                    path.display()
                )
            })?;
        server.start();
        Ok(Server(server))
    }

    /// Stops taking calls and waits up to `grace` for those in flight; then
    /// cancels what is left and gives gRPC [`CANCEL_GRACE`] to do it.
    /// Returns whether everything finished within `grace`.
    pub fn drain(mut self, grace: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        let shutdown = self.0.shutdown();
        let _ = std::thread::Builder::new().name("shutdown".into()).spawn(move || {
            let _ = futures_executor::block_on(shutdown);
            let _ = tx.send(());
        });
        if rx.recv_timeout(grace).is_ok() {
            return true;
        }
        self.0.cancel_all_calls();
        let _ = rx.recv_timeout(CANCEL_GRACE);
        false
    }
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
}
