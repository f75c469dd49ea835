//! Round-trip benchmark: Encrypt+Decrypt of a 32-byte DEK through the
//! plugin's socket (KMS v2) versus the same two transit calls made directly
//! to Vault with a keep-alive HTTP client, at several concurrencies.
//! Run through `scripts/bench.sh`, which starts OpenBao and the plugin.
//!
//! usage: bench --socket PATH --vault-addr URL --key NAME [--round-trips N]
//!        (token from VAULT_TOKEN)

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use trousseau::proto::v2;
use trousseau::tools::probe::{random_dek, KmsClient};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn plugin_round_trip(c: &KmsClient, pt: &[u8]) -> Result<(), String> {
    let mut e = v2::EncryptRequest::new();
    e.plaintext = pt.to_vec();
    e.uid = "bench".into();
    let r = c.v2.encrypt(&e, c.opt()).map_err(|e| e.to_string())?;
    let mut d = v2::DecryptRequest::new();
    d.ciphertext = r.ciphertext;
    d.key_id = r.key_id;
    d.uid = "bench".into();
    let back = c.v2.decrypt(&d, c.opt()).map_err(|e| e.to_string())?;
    if back.plaintext != pt {
        return Err("plaintext mismatch".into());
    }
    Ok(())
}

struct Direct {
    agent: ureq::Agent,
    addr: String,
    key: String,
    token: String,
}

impl Direct {
    fn post(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value, String> {
        let mut r = self
            .agent
            .post(format!("{}/v1/transit/{path}/{}", self.addr, self.key))
            .header("X-Vault-Token", &self.token)
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
        let text = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
        serde_json::from_str(&text).map_err(|e| e.to_string())
    }

    fn round_trip(&self, pt: &[u8]) -> Result<(), String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let e = self.post("encrypt", serde_json::json!({ "plaintext": b64.encode(pt) }))?;
        let ct = e["data"]["ciphertext"].as_str().ok_or("no ciphertext")?.to_owned();
        let d = self.post("decrypt", serde_json::json!({ "ciphertext": ct }))?;
        let back = b64
            .decode(d["data"]["plaintext"].as_str().ok_or("no plaintext")?)
            .map_err(|e| e.to_string())?;
        if back != pt {
            return Err("plaintext mismatch".into());
        }
        Ok(())
    }
}

/// Runs `total` round trips spread over `conc` threads; returns
/// (round trips per second, p50, p99).
fn run<F>(conc: usize, total: usize, f: Arc<F>) -> (f64, Duration, Duration)
where
    F: Fn() -> Result<(), String> + Send + Sync + 'static,
{
    let per = total / conc;
    let start = Instant::now();
    let handles: Vec<_> = (0..conc)
        .map(|_| {
            let f = f.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(per);
                for _ in 0..per {
                    let t = Instant::now();
                    if let Err(e) = f() {
                        eprintln!("round trip failed: {e}");
                        std::process::exit(1);
                    }
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all: Vec<Duration> = handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect();
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    (all.len() as f64 / secs, pct(0.5), pct(0.99))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(socket), Some(addr), Some(key)) =
        (arg(&args, "--socket"), arg(&args, "--vault-addr"), arg(&args, "--key"))
    else {
        eprintln!("usage: bench --socket PATH --vault-addr URL --key NAME [--round-trips N]");
        std::process::exit(2);
    };
    let total: usize = arg(&args, "--round-trips").and_then(|n| n.parse().ok()).unwrap_or(2000);
    // `--burst N`: only plugin round trips, N at once (scripts/bench-memory.sh).
    let burst: Option<usize> = arg(&args, "--burst").and_then(|n| n.parse().ok());
    let token = std::env::var("VAULT_TOKEN").unwrap_or_default();
    let client = Arc::new(KmsClient::connect(
        std::path::Path::new(&socket),
        Duration::from_secs(3),
    ));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(3)))
        .max_idle_connections_per_host(64)
        .build()
        .into();
    let direct = Arc::new(Direct {
        agent,
        addr,
        key,
        token,
    });
    let pt = Arc::new(random_dek().unwrap_or_else(|_| vec![7u8; 32]));

    if let Some(conc) = burst {
        // Any failed round trip ends the run with status 1 (see `run`).
        let (c, p) = (client.clone(), pt.clone());
        let (ops, p50, p99) = run(conc, total, Arc::new(move || plugin_round_trip(&c, &p)));
        println!(
            "burst: {total} round trips, {conc} at once, none failed: {ops:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
        return;
    }

    // Warm up connections on both paths.
    for _ in 0..50 {
        let _ = plugin_round_trip(&client, &pt);
        let _ = direct.round_trip(&pt);
    }
    println!("{total} round trips (Encrypt + Decrypt of a 32-byte DEK) per row");
    println!(
        "{:<28} {:>4} {:>14} {:>10} {:>10}",
        "path", "conc", "round trips/s", "p50 ms", "p99 ms"
    );
    for conc in [1usize, 16] {
        let (c, p) = (client.clone(), pt.clone());
        let (ops, p50, p99) = run(conc, total, Arc::new(move || plugin_round_trip(&c, &p)));
        println!(
            "{:<28} {:>4} {:>14.0} {:>10.2} {:>10.2}",
            "plugin (gRPC socket, v2)",
            conc,
            ops,
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
        let (d, p) = (direct.clone(), pt.clone());
        let (ops, p50, p99) = run(conc, total, Arc::new(move || d.round_trip(&p)));
        println!(
            "{:<28} {:>4} {:>14.0} {:>10.2} {:>10.2}",
            "direct transit (HTTP)",
            conc,
            ops,
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
}
