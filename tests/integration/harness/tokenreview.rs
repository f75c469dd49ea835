//! A stand-in for kube-apiserver's TokenReview API on loopback, so that
//! OpenBao's kubernetes auth can verify service-account JWTs we sign.
//!
//! OpenBao 2.7 needs, on `auth/<mount>/config`: `kubernetes_host` = this
//! server's http:// URL, `disable_local_ca_jwt = true` and then some PEM in
//! `kubernetes_ca_cert` (it refuses the config without one, even though a
//! plain-http host never uses it). Without `token_reviewer_jwt` it sends the
//! login JWT itself as the bearer token. Its request is
//! `POST /apis/authentication.k8s.io/v1/tokenreviews` with a body like
//! `{"metadata":{},"spec":{"token":JWT},"status":{"user":{}}}`; it wants
//! `status.authenticated` and `status.user.username` =
//! `system:serviceaccount:<ns>:<name>` matching the JWT's claims.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::jwt::{now, JwtSigner};

pub const TOKENREVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

/// Answers TokenReviews like kube-apiserver: the caller's bearer token and
/// the reviewed token must both be JWTs signed by `signer`'s key.
pub struct TokenReviewServer {
    /// `http://127.0.0.1:PORT`, for `kubernetes_host`.
    pub addr: String,
    reviews: Arc<AtomicU64>,
    authenticated: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl TokenReviewServer {
    pub fn start(signer: &JwtSigner) -> TokenReviewServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let signer = Arc::new(signer.clone());
        let reviews = Arc::new(AtomicU64::new(0));
        let authenticated = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, a, s) = (reviews.clone(), authenticated.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (signer, r, a) = (signer.clone(), r.clone(), a.clone());
                        std::thread::spawn(move || {
                            let _ = serve(conn, &signer, &r, &a);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TokenReviewServer {
            addr: format!("http://127.0.0.1:{port}"),
            reviews,
            authenticated,
            stop,
        }
    }

    /// TokenReview requests answered (from an authorised caller).
    pub fn reviews(&self) -> u64 {
        self.reviews.load(Ordering::SeqCst)
    }

    /// Of those, the ones answered `authenticated: true`.
    pub fn authenticated(&self) -> u64 {
        self.authenticated.load(Ordering::SeqCst)
    }
}

impl Drop for TokenReviewServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Claims of a projected service-account token as the kubelet mounts it at
/// /var/run/secrets/kubernetes.io/serviceaccount/token (valid for an hour).
pub fn service_account_claims(namespace: &str, name: &str, uid: &str) -> Value {
    let t = now();
    json!({
        "iss": "https://kubernetes.default.svc.cluster.local",
        "aud": ["https://kubernetes.default.svc.cluster.local"],
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
        "iat": t, "nbf": t, "exp": t + 3600,
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": {"name": name, "uid": uid}
        }
    })
}

/// (namespace, name, uid) from either the projected (nested) or the legacy
/// secret-based (flat) claim layout.
fn service_account(c: &Value) -> Option<(String, String, String)> {
    let k = &c["kubernetes.io"];
    let flat = |n: &str| {
        c[format!("kubernetes.io/serviceaccount/{n}")]
            .as_str()
            .map(str::to_owned)
    };
    let ns = k["namespace"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| flat("namespace"))?;
    let name = k["serviceaccount"]["name"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| flat("service-account.name"))?;
    let uid = k["serviceaccount"]["uid"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| flat("service-account.uid"))?;
    Some((ns, name, uid))
}

/// The TokenReview `status` for `token`.
fn review(signer: &JwtSigner, token: &str, audiences: &[Value]) -> Value {
    let unauth = |why: &str| json!({"authenticated": false, "user": {}, "error": why});
    let Some(claims) = signer.verify(token) else {
        return unauth("[invalid bearer token, square/go-jose: error in cryptographic primitive]");
    };
    if claims["exp"].as_u64().is_some_and(|exp| exp < now()) {
        return unauth("[invalid bearer token, service account token has expired]");
    }
    let Some((ns, name, uid)) = service_account(&claims) else {
        return unauth("[invalid bearer token, not a service account token]");
    };
    // With audiences asked for, the token's `aud` must contain one of them.
    let token_aud: Vec<Value> = match &claims["aud"] {
        Value::Array(a) => a.clone(),
        Value::String(s) => vec![Value::String(s.clone())],
        _ => vec![],
    };
    let granted: Vec<Value> = audiences.iter().filter(|a| token_aud.contains(a)).cloned().collect();
    if !audiences.is_empty() && granted.is_empty() {
        return unauth("[invalid bearer token, token audiences is invalid]");
    }
    json!({
        "authenticated": true,
        "user": {
            "username": format!("system:serviceaccount:{ns}:{name}"),
            "uid": uid,
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"]
        },
        "audiences": granted
    })
}

fn serve(conn: TcpStream, signer: &JwtSigner, reviews: &AtomicU64, authenticated: &AtomicU64) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (mut len, mut bearer) = (0usize, None::<String>);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((&h, ""));
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => len = v.trim().parse().unwrap_or(0),
            "authorization" => bearer = v.trim().strip_prefix("Bearer ").map(str::to_owned),
            _ => {}
        }
    }
    let mut body = vec![0; len.min(1 << 20)];
    r.read_exact(&mut body)?;

    let (code, answer) = if method != "POST" || path != TOKENREVIEW_PATH {
        (
            404,
            k8s_status(404, "NotFound", "the server could not find the requested resource"),
        )
    } else if bearer.as_deref().and_then(|b| signer.verify(b)).is_none() {
        // The apiserver authenticates its caller before anything else.
        (401, k8s_status(401, "Unauthorized", "Unauthorized"))
    } else {
        let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let token = req["spec"]["token"].as_str().unwrap_or("");
        let audiences = req["spec"]["audiences"].as_array().cloned().unwrap_or_default();
        let status = review(signer, token, &audiences);
        reviews.fetch_add(1, Ordering::SeqCst);
        if status["authenticated"] == true {
            authenticated.fetch_add(1, Ordering::SeqCst);
        }
        let mut spec = req["spec"].clone();
        if spec.is_null() {
            spec = json!({});
        }
        let out = json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": spec,
            "status": status
        });
        // Create answers 201, whether or not the token authenticated.
        (201, out)
    };
    let text = answer.to_string();
    let reason = match code {
        201 => "Created",
        401 => "Unauthorized",
        _ => "Not Found",
    };
    let mut w = conn;
    write!(
        w,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    w.flush()
}

fn k8s_status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}
