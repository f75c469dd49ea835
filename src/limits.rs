//! Every bound the plugin enforces, in one place, with where each number
//! comes from. Defaults that operators may change live in `config`.

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
/// plaintext and tag (16 bytes), so 512 bytes give about 740 bytes of
/// ciphertext, safely under [`V2_MAX_CIPHERTEXT`]. Larger inputs are refused
/// before any Vault call.
pub const V2_MAX_PLAINTEXT: usize = 512;
pub const V2_MAX_KEY_ID: usize = 1024;

/// KMS v1: the encrypted DEK is stored behind a uint16 length prefix.
pub const V1_MAX_CIPHER: usize = 65_535;

/// Largest gRPC message we accept on the socket: the biggest legal request
/// is a v1 Decrypt (64 KiB cipher) or a v2 Decrypt with 32 KiB of
/// annotations; 256 KiB covers both with margin.
pub const MAX_GRPC_MESSAGE: usize = 256 * 1024;

/// Largest Vault response body we read. Transit answers for one DEK are a
/// few hundred bytes; error pages from proxies can be a few KiB.
pub const MAX_VAULT_RESPONSE: u64 = 1024 * 1024;

/// How long a successful health probe (a real transit encrypt + decrypt) is
/// reused by Status. The apiserver polls Status every 60 s while healthy and
/// wants a KEK rotation visible within about a minute; 10 s keeps Vault
/// traffic from Status at most 2 calls per 10 s however often Status is
/// called, and a rotation visible within 10 s.
pub const HEALTHY_PROBE_TTL: Duration = Duration::from_secs(10);

/// How long a failed probe is reused. The apiserver polls every 10 s while
/// failing; 1 s lets recovery show at the next poll while bounding a burst
/// of Status calls to one probe per second.
pub const FAILING_PROBE_TTL: Duration = Duration::from_secs(1);

/// Bytes of the fixed, non-secret plaintext the health probe encrypts.
pub const PROBE_PLAINTEXT: &[u8] = b"trousseau-health-probe";

/// Thread stack for one request. A ureq call (rustls handshake included)
/// needs far less than Rust's 2 MiB default; 1 MiB keeps a wide margin
/// while halving the address space a full in-flight cap reserves.
pub const WORKER_STACK: usize = 1024 * 1024;

/// gRPC completion-queue threads. Handlers only hand work to a new thread,
/// so two (one per core of a typical control-plane VM) are plenty.
pub const GRPC_CQ_COUNT: usize = 2;
/// After the drain deadline, how long gRPC gets to cancel what is left.
pub const CANCEL_GRACE: Duration = Duration::from_secs(1);
