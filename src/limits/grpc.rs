//! The gRPC server's bounds against what its clients do: replies they do
//! not accept, streams they open, memory and connection age (issue 21).

use std::time::Duration;

/// How long a reply written to a client may wait for the client to accept
/// it (its HTTP/2 flow-control window) before the call is cancelled and
/// its in-flight permit released. A KMS reply is at most 64 KiB (a v1
/// cipher), within HTTP/2's initial 64 KiB window, so a client that reads
/// at all has it in milliseconds; the apiserver's own deadline (3 s by
/// default) cancels its calls sooner anyway. Only a client that never
/// reads (a window left at 0) meets this bound, and it cannot hold a
/// permit longer.
pub const REPLY_DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The `grpc-replies` thread, which abandons overdue replies, sleeps at
/// least this long between rounds: a busy plugin wakes it about once a
/// second, not once per reply, and a reply is abandoned at most this much
/// after [`REPLY_DELIVERY_TIMEOUT`].
pub const REPLY_REAP_TICK: Duration = Duration::from_secs(1);

/// Stack of the `grpc-replies` thread: it only drops futures and logs.
pub const REPLY_REAPER_STACK: usize = 256 * 1024;

/// Streams one connection may have open at once (HTTP/2
/// SETTINGS_MAX_CONCURRENT_STREAMS; gRPC core's default is unlimited).
/// The apiserver multiplexes all its calls on one connection, and calls
/// past `--max-in-flight` (256 by default) are refused at once, so 1024
/// never delays it. gRPC core 1.56 applies it only to clients that
/// acknowledge the server's SETTINGS: the memory quota below is the bound
/// for the others.
pub const GRPC_MAX_STREAMS_PER_CONNECTION: usize = 1024;

/// Memory gRPC core may use for connections, streams and their buffers
/// (a ResourceQuota; core's default is unlimited). Past it core stops
/// growing flow-control windows, sends GOAWAY to idle connections and
/// cancels streams at random ("Buffers full"). The shipped manifests
/// limit the container to 128 Mi and the plugin idles near 20 MiB; 32 MiB
/// for gRPC leaves room for the workers' stacks and Vault connections.
pub const GRPC_MEMORY_QUOTA: usize = 32 * 1024 * 1024;

/// Calls each completion queue is ready to take before their messages
/// have arrived (grpcio's `requests_slot_per_cq`, 1024 by default). A
/// unary call holds a slot from its headers to its message, so 2 x 1024
/// streams that send headers only took every slot and every later call
/// waited (issue 21). 2 x 2048 slots double that: calls are served beside
/// 3,000 such streams (measured: RSS 66 MiB; the old plugin timed out all
/// 10 Encrypts and Status). Each half-open stream costs about 16 KiB, so a
/// slot count is a trade of idle memory against how many streams it
/// takes to block calls: 2 x 4096 cost 1.1 MiB more idle RSS than this in
/// a release build and pushed the concurrency-64 peak further past its
/// target (docs/performance.md), 2 x 16384 cost 11 MiB. This raises the
/// bar, it is not a bound: gRPC core 1.56 counts too little of a half-open
/// stream in the memory quota to cancel them, and only
/// [`GRPC_MAX_CONNECTION_AGE`] ends them.
pub const GRPC_REQUEST_SLOTS_PER_CQ: usize = 2 * 1024;

/// How long a connection lives before gRPC core asks the client to open a
/// new one (GOAWAY; core adds +/-10% jitter). gRPC core 1.56 has no
/// timeout for a stream whose message never arrives, nor one for a call
/// without a deadline; closing every connection at this age plus
/// [`GRPC_MAX_CONNECTION_AGE_GRACE`] is its bound on both. The
/// apiserver's gRPC client reconnects on GOAWAY by itself and its calls
/// in flight finish on the old connection, so once a minute costs it one
/// new Unix-socket connection.
pub const GRPC_MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);

/// After the GOAWAY, how long calls still in flight on the old connection
/// get before it is closed: longer than the apiserver's calls take (its
/// default deadline is 3 s, [`super::APISERVER_DEFAULT_DEADLINE`]) by a wide
/// margin.
pub const GRPC_MAX_CONNECTION_AGE_GRACE: Duration = Duration::from_secs(30);
