//! RS256 JWTs signed with an RSA key made by the openssl CLI.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;

use super::pki::openssl;

/// An RSA key pair in `dir`, signing RS256 JWTs.
#[derive(Clone)]
pub struct JwtSigner {
    pub key: PathBuf,
    pub public_key: PathBuf,
    /// The public key as PEM (SubjectPublicKeyInfo), e.g. for Vault's
    /// `jwt_validation_pubkeys`.
    pub public_pem: String,
    dir: PathBuf,
}

impl JwtSigner {
    pub fn new(dir: &Path) -> JwtSigner {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = dir.join(format!("jwt-{}", N.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&dir).unwrap();
        let (key, public_key) = (dir.join("signer.key"), dir.join("signer.pub"));
        let s = |p: &Path| p.display().to_string();
        openssl(&[
            "genpkey".into(),
            "-algorithm".into(),
            "RSA".into(),
            "-pkeyopt".into(),
            "rsa_keygen_bits:2048".into(),
            "-out".into(),
            s(&key),
        ]);
        openssl(&[
            "pkey".into(),
            "-in".into(),
            s(&key),
            "-pubout".into(),
            "-out".into(),
            s(&public_key),
        ]);
        let public_pem = std::fs::read_to_string(&public_key).unwrap();
        JwtSigner {
            key,
            public_key,
            public_pem,
            dir,
        }
    }

    /// `header.payload.signature`, each part base64url without padding; the
    /// signature is RSASSA-PKCS1-v1_5 over SHA-256 of `header.payload`.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "trousseau-test"});
        let input = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let sig = pipe_openssl(&["dgst", "-sha256", "-sign", &self.key.display().to_string()], &input);
        let jwt = format!("{input}.{}", B64URL.encode(sig));
        super::secrets::remember(&jwt);
        jwt
    }

    /// The claims of `jwt` if its RS256 signature verifies with this key
    /// (expiry is not checked).
    pub fn verify(&self, jwt: &str) -> Option<serde_json::Value> {
        static N: AtomicU64 = AtomicU64::new(0);
        let (input, sig) = jwt.rsplit_once('.')?;
        let (_, payload) = input.split_once('.')?;
        let sig_file = self.dir.join(format!("sig-{}", N.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(&sig_file, B64URL.decode(sig).ok()?).unwrap();
        let out = run_openssl(
            &[
                "dgst",
                "-sha256",
                "-verify",
                &self.public_key.display().to_string(),
                "-signature",
                &sig_file.display().to_string(),
            ],
            input,
        );
        let _ = std::fs::remove_file(&sig_file);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&B64URL.decode(payload).ok()?).ok()
    }
}

/// Seconds since the Unix epoch, for `iat`/`nbf`/`exp`.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn run_openssl(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl CLI");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn pipe_openssl(args: &[&str], stdin: &str) -> Vec<u8> {
    let out = run_openssl(args, stdin);
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
