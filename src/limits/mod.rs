//! Every bound the plugin enforces, in one place, with where each number
//! comes from. Defaults that operators may change live in `config`. The
//! gRPC server's own bounds against its clients are in [`grpc`], re-exported
//! here.

mod grpc;
pub use grpc::*;

use std::time::Duration;

/// kube-apiserver's default KMS call deadline (EncryptionConfiguration
/// `timeout`, `apiserver/pkg/apis/apiserver/v1/defaults.go`). An answer after
/// it counts as a failure, so our own Vault budget stays below it.
pub const APISERVER_DEFAULT_DEADLINE: Duration = Duration::from_secs(3);

/// Largest plaintext accepted for Encrypt. v2 sends a 32-byte seed; v1 sends
/// a 32-byte DEK (or "ping" from its health check). 64 KiB leaves room for
/// any sane caller while keeping a hostile one from making Vault work hard.
pub const MAX_PLAINTEXT: usize = 64 * 1024;

/// KMS v2: Encrypt's ciphertext must be at most 1024 bytes
/// (`kmsv2/envelope.go`), and so must `key_id`.
pub const V2_MAX_CIPHERTEXT: usize = 1024;

/// Largest KMS v2 plaintext we send to Vault. The apiserver sends a 32-byte
/// seed; Vault's answer is `vault:vN:` and the base64 of nonce (12 bytes),
/// the purpose tag (16, `wire::purpose`), plaintext and tag (16 bytes), so
/// 512 bytes give about 760 bytes of ciphertext, safely under
/// [`V2_MAX_CIPHERTEXT`]. Larger inputs are refused
/// before any Vault call.
pub const V2_MAX_PLAINTEXT: usize = 512;
pub const V2_MAX_KEY_ID: usize = 1024;

/// KMS v1: the encrypted DEK is stored behind a uint16 length prefix.
pub const V1_MAX_CIPHER: usize = 65_535;

/// Largest KMS v1 plaintext, so that what Encrypt returns always fits
/// [`V1_MAX_CIPHER`] and Decrypt takes it back: the cipher is
/// `vault-transit:<mount>/<key>:vault:vN:` (at most 555 bytes with the
/// longest names and a 19-digit version) and the base64 of nonce (12), the
/// purpose tag (16, `wire::purpose`), plaintext and tag (16). 47 KiB of
/// plaintext make 64,232 bytes of base64, 64,787 in all (a unit test of
/// `wire` checks the sum).
pub const V1_MAX_PLAINTEXT: usize = 47 * 1024;

/// Largest gRPC message we accept on the socket: the biggest legal request
/// is a v1 Decrypt (64 KiB cipher) or a v2 Decrypt with 32 KiB of
/// annotations; 256 KiB covers both with margin.
pub const MAX_GRPC_MESSAGE: usize = 256 * 1024;

/// Largest Vault response body we read. Transit answers for one DEK are a
/// few hundred bytes, the largest legitimate one (a v1 Decrypt of a 47 KiB
/// plaintext) about 64 KiB, error pages from proxies a few KiB, and
/// `check`'s read of a key with thousands of versions under 256 KiB. It
/// bounds what a hostile answer can make each request hold.
pub const MAX_VAULT_RESPONSE: u64 = 256 * 1024;

/// Each HTTP connection's read and write buffers (ureq's default is 128 KiB
/// each, 256 KiB per connection, 64 MiB for a pool of 256): Vault's answer
/// heads are a few hundred bytes and bodies stream through, so 16 KiB each
/// keeps a full pool near 8 MiB. Also the longest answer head accepted.
pub const VAULT_IO_BUFFER: usize = 16 * 1024;

/// How long a successful health check (a real transit encrypt + decrypt) is
/// reused by Status. The apiserver polls Status every 60 s while healthy and
/// wants a KEK rotation visible within about a minute; 10 s keeps Vault
/// traffic from Status at most 2 calls per 10 s however often Status is
/// called, and a rotation visible within 10 s.
pub const HEALTHY_CHECK_TTL: Duration = Duration::from_secs(10);

/// How long a failed health check is reused. The apiserver polls every 10 s while
/// failing; 1 s lets recovery show at the next poll while bounding a burst
/// of Status calls to one check per second.
pub const FAILING_CHECK_TTL: Duration = Duration::from_secs(1);

/// The fixed, non-secret plaintext the health check encrypts (its value
/// predates the name "health check"; it is only ever sent to Vault).
pub const HEALTH_CHECK_PLAINTEXT: &[u8] = b"trousseau-health-probe";

/// Thread stack for one request. A ureq call (rustls handshake included)
/// needs far less than Rust's 2 MiB default; 1 MiB keeps a wide margin
/// while halving the address space a full in-flight cap reserves.
pub const WORKER_STACK: usize = 1024 * 1024;

/// How long a request thread stays parked for the next request before it
/// exits. A busy apiserver sends the next call within milliseconds, so
/// 10 s keeps every thread of a burst for the one after it; an idle plugin
/// (Status every 60 s) is back to no parked threads, and to its idle RSS,
/// 10 s after its last burst.
pub const WORKER_IDLE_EXIT: Duration = Duration::from_secs(10);

/// gRPC completion-queue threads. Handlers only hand work to a new thread,
/// so two (one per core of a typical control-plane VM) are plenty.
pub const GRPC_CQ_COUNT: usize = 2;
/// After the drain deadline, how long gRPC gets to cancel what is left.
pub const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// Connection setup (TCP + TLS) gets at most this much of a call's budget:
/// a healthy Vault on the control plane's network connects in milliseconds,
/// and a dead node must fail fast enough to try the next one in time.
pub const VAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);

/// Calls sent to one Vault node at once, each on its own connection;
/// further calls wait for a free one within their budget. Each connection
/// costs its TLS state and two [`VAULT_IO_BUFFER`]s (about 60 KiB), so 256
/// of them under a 256-wide burst would take the plugin past the static
/// pod's memory target on connections alone. 32 keep a Vault node's cores
/// busy (16 direct calls at once already kept a loopback OpenBao at both
/// cores of our 2-core VM: docs/performance.md), and a control plane's
/// apiserver, which caches DEKs, sends a few calls a second.
pub const VAULT_MAX_CONNECTIONS: usize = 32;

/// Idle keep-alive connections kept per node: all of them, so a burst
/// reuses its connections instead of opening and closing them.
pub const VAULT_MAX_IDLE_CONNECTIONS: usize = VAULT_MAX_CONNECTIONS;

/// How long an idle connection is reused. Longer than the apiserver's 60 s
/// between Status calls, so a quiet plugin keeps its connection (and its TLS
/// session) instead of handshaking each minute; shorter than Vault's own
/// idle timeout (the listener's `http_idle_timeout`, 5 min by default), so the plugin, not
/// Vault, closes it. A connection the server or a load balancer closed
/// sooner is noticed when it is taken from the pool (ureq probes it) and a
/// new one is opened.
pub const VAULT_MAX_IDLE_AGE: Duration = Duration::from_secs(270);

/// Requests answered at once, each on its own thread (a finished head
/// only: heads are read by one thread, see [`HTTP_MAX_PENDING_HEADS`]).
/// Probes and a scraper need a handful; the cap keeps a flood of finished
/// requests from taking threads from KMS requests. More get 503 at once.
pub const HTTP_MAX_CONNECTIONS: usize = 128;

/// Of [`HTTP_MAX_CONNECTIONS`], the answer threads only `/livez` may take:
/// `/readyz` callers wait on the health check (up to the Vault budget)
/// while Vault is slow, and must not leave kubelet's liveness probe
/// without a thread. A `/livez` answer is one connect to our own socket
/// (microseconds), so 8 cover any number of kubelets.
pub const HTTP_LIVEZ_RESERVE: usize = 8;

/// Connections still sending their request heads, held by the one head
/// reader as non-blocking sockets (one descriptor and at most
/// [`HTTP_MAX_HEAD`] bytes each, no thread). When full, the oldest is
/// closed: a client that connects and never finishes its head (400 of
/// them reconnecting in a loop in our test) only ever pushes out another
/// such client, while a probe, whose head arrives with its connection,
/// is read the moment it is accepted. 256 descriptors stay well inside a
/// 1024 descriptor limit beside gRPC's and Vault's.
pub const HTTP_MAX_PENDING_HEADS: usize = 256;

/// How often the head reader reads the heads still waiting (a new
/// connection is read at once). A head split over several packets waits
/// at most this much longer; 256 waiting heads cost 256 reads per pass,
/// about 100 µs, so 5 ms keeps a full line near 2% of a core.
pub const HTTP_HEAD_POLL: Duration = Duration::from_millis(5);

/// The whole request head must arrive within this: kubelet and Prometheus
/// send theirs at once (a few hundred bytes), and kubelet's probe gives up
/// after 1 s by default anyway.
pub const HTTP_HEAD_TIMEOUT: Duration = Duration::from_secs(1);

/// Writing the answer gets this long: Prometheus waits 10 s for a scrape,
/// and a `/readyz` that runs a health check needs up to the Vault budget.
pub const HTTP_IO_TIMEOUT: Duration = Duration::from_secs(5);

/// After a failed `accept` (out of file descriptors, say) the listener
/// waits this long before the next, doubling up to
/// [`HTTP_ACCEPT_BACKOFF_MAX`]: a persistent error must not spin a core.
pub const HTTP_ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
pub const HTTP_ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How long a starting plugin waits for the lock beside its socket
/// (`socket::claim`) while another plugin holds it without serving: one
/// starting up holds it for the few milliseconds between its stale check
/// and its rename; one draining releases it as soon as it has withdrawn
/// its socket, or (a socket too long to stage, which gRPC core unlinks
/// itself at shutdown) once the default 5 s drain and 1 s grace are over.
/// 10 s covers both; past it the plugin exits with a message saying so.
pub const SOCKET_CLAIM_WAIT: Duration = Duration::from_secs(10);
/// How often the lock and the socket are looked at meanwhile: 50 ms makes
/// a handover nearly immediate at 20 cheap syscalls a second.
pub const SOCKET_CLAIM_POLL: Duration = Duration::from_millis(50);

/// A probe's or scraper's request head is a few hundred bytes.
pub const HTTP_MAX_HEAD: usize = 8 * 1024;

/// A renewal that grants this much less than asked means the max TTL is
/// near (Vault grants exactly the increment otherwise, in whole seconds).
pub const SESSION_CAP_SLACK: Duration = Duration::from_secs(1);

/// After `lookup-self` confirmed that a refused token is still valid (so
/// the 403 came from the policy, not the token), further 403s within this
/// long are not checked again: a policy mistake then costs Vault one extra
/// call per second, not one per request, and no new tokens.
pub const SESSION_VERIFIED_FOR: Duration = Duration::from_secs(1);

/// Keeper back-off after a failed renewal or login: from 1 s, doubling, to
/// 30 s, so an outage costs Vault at most one attempt per 30 s once long.
pub const SESSION_RETRY_MIN: Duration = Duration::from_secs(1);
/// The back-off's ceiling (see [`SESSION_RETRY_MIN`]).
pub const SESSION_RETRY_MAX: Duration = Duration::from_secs(30);

/// How often the keeper wakes when nothing expires (root tokens, periodic
/// checks of a token whose lease is unknown).
pub const SESSION_IDLE_WAKE: Duration = Duration::from_secs(300);

/// The longest token lease believed from Vault: ten years. Vault's own
/// ceiling (`max_lease_ttl`) defaults to 32 days; anything longer than this
/// is a bug or a hostile answer, and is taken as this much so that no
/// arithmetic on it can overflow.
pub const VAULT_MAX_LEASE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// How long the session keeper waits before it is restarted after a
/// panic: long enough not to spin on a panic that repeats, short enough
/// that a renewal due soon still happens.
pub const SESSION_KEEPER_RESTART: Duration = Duration::from_secs(1);

/// How long a Vault node's name resolves to the same addresses: a node
/// that moved (a pod rescheduled) is found within 30 s, the TTL CoreDNS's
/// `cache 30` gives cluster names too, while a busy plugin looks each name
/// up at most twice a minute instead of once per request.
pub const VAULT_DNS_CACHE_TTL: Duration = Duration::from_secs(30);

/// Lookup threads running at once in the whole process. Each node needs
/// one at a time; four cover a few nodes whose caches expire together,
/// and under a DNS stall no more than four threads wait on it (calls past
/// the cap use the last answer or fail at once).
pub const VAULT_DNS_MAX_LOOKUPS: usize = 4;

/// Stack of a lookup thread: getaddrinfo with glibc's NSS modules needs
/// more than a minimal stack, far less than the 2 MiB default.
pub const VAULT_DNS_STACK: usize = 256 * 1024;

/// A failure that repeats (the same API, operation and error class) is
/// logged at warn at most this many times per [`LOG_REPEAT_WINDOW`]; the
/// rest go to debug and are counted in one line when the window ends. An
/// outage under a cold start (thousands of failing Decrypts) then writes a
/// few lines a minute, not thousands.
pub const LOG_REPEATS_PER_WINDOW: u32 = 5;
pub const LOG_REPEAT_WINDOW: Duration = Duration::from_secs(10);

/// How much of a call's budget the node tried first (the one that answered
/// last) leaves for each other node. The preferred node is almost always
/// the active one, so it gets most of the budget: a healthy but slow
/// active node (a loaded cluster, a far region) must not time out because
/// dead nodes were given equal shares. 250 ms is enough for one transit
/// call to a healthy node over a fresh TLS connection on a LAN (tens of
/// milliseconds) with room for load; the reserve never exceeds half the
/// budget.
pub const VAULT_FAILOVER_RESERVE: Duration = Duration::from_millis(250);

/// While a request's Vault answer is awaited, how often the client asks
/// whether the caller (the apiserver) is still waiting (`caller`): the
/// work for a request ends at most this long after its gRPC deadline. A
/// transit call on a LAN takes a few ms, so a waiting thread wakes at most
/// 20 times a second, and only while Vault is slow to answer.
pub const CALLER_POLL: Duration = Duration::from_millis(50);

/// Below this much time left, another node is not tried: no Vault call
/// completes in less (a loopback transit call takes about 0.5 ms, a LAN
/// one a few ms), and the error at hand is more useful than a timeout.
pub const VAULT_MIN_ATTEMPT: Duration = Duration::from_millis(20);

/// Pause between passes over a cluster's nodes when none could serve. A
/// raft election took about 2 s in our tests (OpenBao 2.7, three nodes on
/// loopback, performance_multiplier 1) and takes longer with default
/// timing; polling every 200 ms lets a request that meets an election
/// succeed soon after it, while costing each node at most 5 calls a second
/// per waiting request.
pub const VAULT_ROUND_PAUSE: Duration = Duration::from_millis(200);

/// A standby's Location is its active node's api_addr plus our path; a
/// few hundred bytes. Longer ones are not followed.
pub const VAULT_MAX_LOCATION: usize = 2048;

/// Vault error strings are short; cap what we copy into a message.
pub const VAULT_MAX_ERROR_TEXT: usize = 300;

/// One string of Vault's `errors` list in a message: Vault's own are a
/// few dozen characters ("cipher: message authentication failed", "1
/// error occurred: * permission denied"); longer ones are cut.
pub const VAULT_MAX_ERROR_ITEM: usize = 160;

/// An error string with a run of this many characters of the base64
/// alphabets, mixing upper and lower case, is withheld: it may be request
/// material (a 32-byte DEK is 44 characters of base64, a legacy token 24
/// after its `s.`, a ciphertext's body longer). 20 is 15 bytes of base64;
/// Vault's own error strings have no such runs (words, and paths in lower
/// case).
pub const VAULT_ERROR_ENCODED_RUN: usize = 20;

/// An error string that holds this many characters in a row of one of the
/// request's values (a plaintext, ciphertext, secret_id, JWT, or the
/// token) is withheld: 12 characters of base64 are 9 bytes, far beyond
/// chance, and a UUID's (a secret_id's) longest group is 12.
pub const VAULT_ERROR_QUOTE_WINDOW: usize = 12;

/// A UUID is 36 characters; leave room for other request-id schemes.
pub const MAX_LOGGED_UID: usize = 64;

/// A config file is a few hundred bytes; refuse anything absurd.
pub const MAX_CONFIG_FILE: u64 = 1024 * 1024;

/// A PEM file (`--vault-cacert`, `--vault-client-cert`, `--vault-client-key`):
/// Debian's whole CA bundle is about 220 KiB; 1 MiB refuses anything absurd.
pub const MAX_PEM_FILE: u64 = 1024 * 1024;

/// A Vault token is about 100 bytes, a role_id or secret_id 36, a
/// service-account JWT 1-2 KiB; 64 KiB refuses anything absurd.
pub const MAX_CREDENTIAL_FILE: u64 = 64 * 1024;

/// Longest transit key name accepted (Vault's own names are short; this
/// only refuses absurd input).
pub const MAX_KEY_NAME: usize = 256;

/// Longest transit mount path accepted, for the same reason. With both
/// bounds a key id is at most 549 bytes, inside [`V2_MAX_KEY_ID`].
pub const MAX_MOUNT_PATH: usize = 256;

/// How much of a refused value an error message quotes: enough to
/// recognise it, never a 64 KiB name in a log line.
pub const MAX_ECHOED_VALUE: usize = 64;

/// A request whose coalesced batch is already in Vault waits this long past
/// its own deadline for the result (`kms::coalesce`): the batch's call is
/// bounded by the deadline of its oldest request, which is no later, so
/// this only covers the time to hand results over on a loaded machine.
pub const COALESCE_WAIT_GRACE: Duration = Duration::from_millis(250);

/// Encrypts one local KEK (`--local-kek`) seals before it is replaced, by
/// default. Each seal draws a random 96-bit nonce; NIST SP 800-38D §8.3
/// caps a key used so at 2^32 invocations (nonce collision odds then about
/// 2^-33). 1,000,000 (about 2^20) keeps the odds near q²/2^97 = 2^-57 and
/// costs one transit encrypt per million DEKs, far inside the target of at
/// most 2 Vault calls per 10,000 Encrypts.
pub const DEFAULT_LOCAL_KEK_MAX_USES: u64 = 1_000_000;

/// The most `--local-kek-max-uses` accepts: 2^24, still 256 times below
/// the 2^32 bound above (collision odds about 2^-49).
pub const MAX_LOCAL_KEK_MAX_USES: u64 = 1 << 24;

/// How long one local KEK seals new DEKs, by default: an hour bounds what
/// a copy of the plugin's memory yields (the DEKs sealed under the keys it
/// still holds) to recent writes' keys, plus the cached older KEKs, at the
/// cost of 24 transit encrypts a day.
pub const DEFAULT_LOCAL_KEK_MAX_AGE: Duration = Duration::from_secs(3600);

/// The range `--local-kek-max-age` accepts.
pub const MIN_LOCAL_KEK_MAX_AGE: Duration = Duration::from_secs(1);
pub const MAX_LOCAL_KEK_MAX_AGE: Duration = Duration::from_secs(86_400);

/// Unwrapped local KEKs kept for Decrypt (the current one included). One
/// KEK is made per rotation, so with the defaults 256 hold more than ten
/// days of them; an entry is about 600 bytes (the expanded AES key and the
/// wrapped text), 150 KiB when full. A KEK not held costs one transit
/// decrypt; the least recently used one is dropped first.
pub const LOCAL_KEK_CACHE: usize = 256;

/// The local KEK: an AES-256 key.
pub const LOCAL_KEK_LEN: usize = 32;
