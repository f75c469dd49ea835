//! `trousseau probe`: talks to a running plugin the way kube-apiserver does
//! (v2 Status, Encrypt and Decrypt of a random 32-byte seed; v1 Version,
//! Encrypt and Decrypt) and reports what it saw. Also the client the
//! integration tests and the quickstart use.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpcio::{CallOption, ChannelBuilder, EnvBuilder};

use crate::grpc::{V1_API_VERSION, V2_API_VERSION};
use crate::proto::{v1beta1, v2};

/// Clients for both services over one channel, like the apiserver's.
pub struct KmsClient {
    pub v2: v2::Client,
    pub v1: v1beta1::Client,
    timeout: Duration,
}

impl KmsClient {
    /// Connects lazily to `unix:<path>`; calls wait for the socket until
    /// their deadline, as the apiserver's do (`WaitForReady`).
    pub fn connect(socket: &Path, timeout: Duration) -> KmsClient {
        let env = Arc::new(EnvBuilder::new().cq_count(1).name_prefix("probe-cq").build());
        let ch = ChannelBuilder::new(env)
            .default_authority("localhost")
            .connect(&format!("unix:{}", socket.display()));
        KmsClient {
            v2: v2::Client::new(ch.clone()),
            v1: v1beta1::Client::new(ch),
            timeout,
        }
    }

    /// Call options: the apiserver's deadline and wait-for-ready.
    pub fn opt(&self) -> CallOption {
        CallOption::default().timeout(self.timeout).wait_for_ready(true)
    }
}

/// 32 random bytes, like the apiserver's DEK seed.
pub fn random_dek() -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// Runs the probe; prints one line per step; `Ok(())` when all passed.
pub fn run(socket: &Path, timeout: Duration) -> Result<(), String> {
    let c = KmsClient::connect(socket, timeout);
    let mut failures = 0;
    let mut step = |name: &str, r: Result<String, String>| match r {
        Ok(msg) => println!("ok    {name:<16} {msg}"),
        Err(msg) => {
            failures += 1;
            println!("FAIL  {name:<16} {msg}");
        }
    };
    let ms = |t: Instant| format!("{:.1} ms", t.elapsed().as_secs_f64() * 1000.0);

    let t = Instant::now();
    let status = c.v2.status(&v2::StatusRequest::new(), c.opt());
    step(
        "v2 Status",
        match &status {
            Ok(s) if s.healthz == "ok" && s.version == V2_API_VERSION && !s.key_id.is_empty() => Ok(format!(
                "version={} healthz=ok key_id={} ({})",
                s.version,
                s.key_id,
                ms(t)
            )),
            Ok(s) => Err(format!(
                "version={:?} healthz={:?} key_id={:?}",
                s.version, s.healthz, s.key_id
            )),
            Err(e) => Err(e.to_string()),
        },
    );

    let dek = random_dek().map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    let mut req = v2::EncryptRequest::new();
    req.plaintext = dek.clone();
    req.uid = format!("probe-{}", std::process::id());
    let t = Instant::now();
    let enc = c.v2.encrypt(&req, c.opt());
    let status_kid = status.as_ref().map(|s| s.key_id.clone()).unwrap_or_default();
    step(
        "v2 Encrypt",
        match &enc {
            Ok(r) if r.key_id != status_kid && !status_kid.is_empty() => {
                Err(format!("key_id {} differs from Status's {status_kid}", r.key_id))
            }
            Ok(r) => Ok(format!(
                "{} bytes of ciphertext, key_id={} ({})",
                r.ciphertext.len(),
                r.key_id,
                ms(t)
            )),
            Err(e) => Err(e.to_string()),
        },
    );
    if let Ok(enc) = &enc {
        let mut req = v2::DecryptRequest::new();
        req.ciphertext = enc.ciphertext.clone();
        req.key_id = enc.key_id.clone();
        req.annotations = enc.annotations.clone();
        req.uid = format!("probe-{}", std::process::id());
        let t = Instant::now();
        step(
            "v2 Decrypt",
            match c.v2.decrypt(&req, c.opt()) {
                Ok(r) if r.plaintext == dek => Ok(format!("round trip matches ({})", ms(t))),
                Ok(_) => Err("plaintext differs from what was encrypted".into()),
                Err(e) => Err(e.to_string()),
            },
        );
    }

    let mut vreq = v1beta1::VersionRequest::new();
    vreq.version = V1_API_VERSION.into();
    step(
        "v1beta1 Version",
        match c.v1.version(&vreq, c.opt()) {
            Ok(v) if v.version == V1_API_VERSION => Ok(format!("{} {}", v.runtime_name, v.runtime_version)),
            Ok(v) => Err(format!("version {:?}", v.version)),
            Err(e) => Err(e.to_string()),
        },
    );
    let mut ereq = v1beta1::EncryptRequest::new();
    ereq.version = V1_API_VERSION.into();
    ereq.plain = dek.clone();
    let t = Instant::now();
    let enc = c.v1.encrypt(&ereq, c.opt());
    step(
        "v1beta1 Encrypt",
        match &enc {
            Ok(r) => Ok(format!("{} bytes of cipher ({})", r.cipher.len(), ms(t))),
            Err(e) => Err(e.to_string()),
        },
    );
    if let Ok(enc) = enc {
        let mut dreq = v1beta1::DecryptRequest::new();
        dreq.version = V1_API_VERSION.into();
        dreq.cipher = enc.cipher;
        let t = Instant::now();
        step(
            "v1beta1 Decrypt",
            match c.v1.decrypt(&dreq, c.opt()) {
                Ok(r) if r.plain == dek => Ok(format!("round trip matches ({})", ms(t))),
                Ok(_) => Err("plaintext differs from what was encrypted".into()),
                Err(e) => Err(e.to_string()),
            },
        );
    }
    if failures == 0 {
        Ok(())
    } else {
        Err(format!("{failures} step(s) failed"))
    }
}
