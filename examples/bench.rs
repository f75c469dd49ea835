//! The benchmark client (run through `scripts/bench.sh`, which starts
//! OpenBao and the plugins): drives running plugins as kube-apiserver does
//! (KMS v2 and v1 Encrypt and Decrypt of 32-byte DEKs over the socket) and
//! the same load straight at transit over keep-alive HTTP, in one run, and
//! prints side by side: requests/s, p50, p99, the ratio to direct transit,
//! the plugin's CPU per call, its RSS and its Vault calls per 1,000
//! requests, and each plugin's transit calls per 10,000 Encrypts. Then a
//! v1 cold start: N sequential Decrypts of distinct ciphertexts, the way
//! the apiserver refills its cache after a restart (with `--local-kek`,
//! through the plugin that sealed them and through one without their KEKs).
//!
//! usage: bench --vault-addr URL --key NAME
//!              --plugin LABEL=SOCKET,PID,METRICS_ADDR [--plugin ...]
//!              [--seconds S] [--conc 1,16,64] [--cold-start N]
//!        bench --socket PATH --round-trips N --burst C   (memory and soak)
//!        bench --plugin LABEL=SOCKET,PID,METRICS_ADDR ... --idle-gap S [--rounds N]
//!              (the first Encrypt after S idle seconds, scripts/bench-idle.sh)
//!        (token from VAULT_TOKEN)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use trousseau::proto::{v1beta1, v2};
use trousseau::tools::probe::{random_dek, KmsClient};

type Failure = String;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn args_all(args: &[String], name: &str) -> Vec<String> {
    args.windows(2)
        .filter(|w| w.first().is_some_and(|a| a == name))
        .filter_map(|w| w.get(1).cloned())
        .collect()
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("bench: {msg}");
    std::process::exit(1);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Encrypt,
    Decrypt,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Encrypt => "encrypt",
            Op::Decrypt => "decrypt",
        }
    }
}

/// Transit straight over HTTP, as a client without the plugin would call it.
struct Direct {
    agent: ureq::Agent,
    addr: String,
    key: String,
    token: String,
}

impl Direct {
    fn post(&self, op: &str, body: serde_json::Value) -> Result<serde_json::Value, Failure> {
        let mut r = self
            .agent
            .post(format!("{}/v1/transit/{op}/{}", self.addr, self.key))
            .header("X-Vault-Token", &self.token)
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
        let text = r.body_mut().read_to_string().map_err(|e| e.to_string())?;
        serde_json::from_str(&text).map_err(|e| e.to_string())
    }

    fn encrypt(&self, pt: &[u8]) -> Result<String, Failure> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let e = self.post("encrypt", serde_json::json!({ "plaintext": b64.encode(pt) }))?;
        Ok(e["data"]["ciphertext"].as_str().ok_or("no ciphertext")?.to_owned())
    }

    fn decrypt(&self, ct: &str) -> Result<Vec<u8>, Failure> {
        let d = self.post("decrypt", serde_json::json!({ "ciphertext": ct }))?;
        base64::engine::general_purpose::STANDARD
            .decode(d["data"]["plaintext"].as_str().ok_or("no plaintext")?)
            .map_err(|e| e.to_string())
    }
}

/// One running plugin: its socket's client, its pid (CPU, RSS) and its
/// metrics address (Vault calls).
struct Plugin {
    label: String,
    client: KmsClient,
    pid: u32,
    metrics: String,
}

impl Plugin {
    fn v2_encrypt(&self, pt: &[u8]) -> Result<V2Ct, Failure> {
        let mut e = v2::EncryptRequest::new();
        e.plaintext = pt.to_vec();
        e.uid = "bench".into();
        let r = self
            .client
            .v2
            .encrypt(&e, self.client.opt())
            .map_err(|e| e.to_string())?;
        Ok(V2Ct {
            ciphertext: r.ciphertext,
            key_id: r.key_id,
            annotations: r.annotations,
        })
    }

    fn v2_decrypt(&self, ct: &V2Ct) -> Result<Vec<u8>, Failure> {
        let mut d = v2::DecryptRequest::new();
        d.ciphertext = ct.ciphertext.clone();
        d.key_id = ct.key_id.clone();
        // As the apiserver does: the annotations stored with the ciphertext
        // (the wrapped local KEK, with --local-kek) go back with it.
        d.annotations = ct.annotations.clone();
        d.uid = "bench".into();
        Ok(self
            .client
            .v2
            .decrypt(&d, self.client.opt())
            .map_err(|e| e.to_string())?
            .plaintext)
    }

    fn v1_encrypt(&self, pt: &[u8]) -> Result<Vec<u8>, Failure> {
        let mut e = v1beta1::EncryptRequest::new();
        e.version = "v1beta1".into();
        e.plain = pt.to_vec();
        Ok(self
            .client
            .v1
            .encrypt(&e, self.client.opt())
            .map_err(|e| e.to_string())?
            .cipher)
    }

    fn v1_decrypt(&self, cipher: &[u8]) -> Result<Vec<u8>, Failure> {
        let mut d = v1beta1::DecryptRequest::new();
        d.version = "v1beta1".into();
        d.cipher = cipher.to_vec();
        Ok(self
            .client
            .v1
            .decrypt(&d, self.client.opt())
            .map_err(|e| e.to_string())?
            .plain)
    }

    /// User + system CPU seconds so far.
    fn cpu(&self) -> f64 {
        cpu_of(&self.pid.to_string())
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Transit encrypt and decrypt calls the plugin made so far (health
    /// checks included), from its /metrics.
    fn vault_calls(&self) -> f64 {
        let text = ureq::get(format!("http://{}/metrics", self.metrics))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default();
        text.lines()
            .filter(|l| {
                l.starts_with("trousseau_vault_requests_total{endpoint=\"encrypt\"")
                    || l.starts_with("trousseau_vault_requests_total{endpoint=\"decrypt\"")
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }
}

/// User + system CPU seconds of process `pid` (or `self`) so far.
fn cpu_of(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which ends at the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 here.
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    // CLK_TCK is 100 on every Linux architecture we build for.
    100.0
}

/// What the apiserver stores of a v2 Encrypt, and sends back to Decrypt.
struct V2Ct {
    ciphertext: Vec<u8>,
    key_id: String,
    annotations: std::collections::HashMap<String, Vec<u8>>,
}

/// A plugin's ciphertexts to decrypt: v2 and v1 ciphers.
type Pools = (Arc<Vec<V2Ct>>, Arc<Vec<Vec<u8>>>);

/// The prefix of a v1 cipher sealed under a local KEK (`--local-kek`).
const V1_LOCAL_PREFIX: &[u8] = b"vault-transit-kek:";

struct Measured {
    ops: f64,
    p50: Duration,
    p99: Duration,
    calls: usize,
    /// This client's own CPU per call, in microseconds: on two cores,
    /// what the client burns is not there for the plugin or OpenBao.
    client_us: f64,
}

/// Runs `f` on `conc` threads for `secs`; any failure ends the run.
fn run<F>(conc: usize, secs: Duration, f: Arc<F>) -> Measured
where
    F: Fn(usize) -> Result<(), Failure> + Send + Sync + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let cpu0 = cpu_of("self");
    let start = Instant::now();
    let handles: Vec<_> = (0..conc)
        .map(|t| {
            let (f, stop) = (f.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    if let Err(e) = f(i) {
                        fail(format!("a call failed: {e}"));
                    }
                    lat.push(at.elapsed());
                    i += conc;
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(secs);
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<Duration> = handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect();
    let took = start.elapsed().as_secs_f64();
    let client_us = (cpu_of("self") - cpu0) * 1e6 / all.len().max(1) as f64;
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    Measured {
        ops: all.len() as f64 / took,
        p50: pct(0.5),
        p99: pct(0.99),
        calls: all.len(),
        client_us,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn header() {
    println!(
        "{:<26} {:>4} {:>9} {:>8} {:>8} {:>8} {:>10} {:>11} {:>8} {:>9}",
        "path", "conc", "req/s", "p50 ms", "p99 ms", "x direct", "CPU us/req", "vault/1000", "RSS KiB", "client us"
    );
}

/// One plugin row: the load, then what it cost the plugin.
fn plugin_row<F>(p: &Plugin, name: &str, conc: usize, secs: Duration, direct: f64, f: Arc<F>) -> (f64, f64)
where
    F: Fn(usize) -> Result<(), Failure> + Send + Sync + 'static,
{
    let (cpu0, calls0) = (p.cpu(), p.vault_calls());
    let m = run(conc, secs, f);
    let (cpu, calls) = (p.cpu() - cpu0, p.vault_calls() - calls0);
    let n = m.calls.max(1) as f64;
    println!(
        "{:<26} {:>4} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>10.0} {:>11.2} {:>8} {:>9.0}",
        format!("{} {name}", p.label),
        conc,
        m.ops,
        ms(m.p50),
        ms(m.p99),
        m.ops / direct.max(1e-9),
        cpu * 1e6 / n,
        calls * 1000.0 / n,
        p.status_kib("VmRSS:"),
        m.client_us
    );
    (m.calls as f64, calls)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let token = std::env::var("VAULT_TOKEN").unwrap_or_default();
    let timeout = Duration::from_secs(3);
    let pt = Arc::new(random_dek().unwrap_or_else(|_| vec![7u8; 32]));

    // `--burst N`: only v2 round trips, N at once, until --round-trips are
    // done (scripts/bench-memory.sh and scripts/soak.sh).
    if let Some(conc) = arg(&args, "--burst").and_then(|n| n.parse::<usize>().ok()) {
        let socket = arg(&args, "--socket").unwrap_or_else(|| fail("--burst needs --socket"));
        let total: usize = arg(&args, "--round-trips").and_then(|n| n.parse().ok()).unwrap_or(2000);
        burst(&socket, conc.max(1), total, timeout, &pt);
        return;
    }

    if let Some(gap) = arg(&args, "--idle-gap").and_then(|s| s.parse::<f64>().ok()) {
        let rounds: usize = arg(&args, "--rounds").and_then(|n| n.parse().ok()).unwrap_or(3);
        let plugins = plugins_from(&args, timeout);
        idle_gap(&plugins, Duration::from_secs_f64(gap), rounds.max(1), &pt);
        return;
    }

    let (Some(addr), Some(key)) = (arg(&args, "--vault-addr"), arg(&args, "--key")) else {
        fail("usage: bench --vault-addr URL --key NAME --plugin LABEL=SOCKET,PID,METRICS_ADDR ... [--seconds S] [--conc 1,16,64] [--cold-start N]");
    };
    let secs = Duration::from_secs_f64(arg(&args, "--seconds").and_then(|s| s.parse().ok()).unwrap_or(5.0));
    let concs: Vec<usize> = arg(&args, "--conc")
        .unwrap_or_else(|| "1,16,64".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let cold: usize = arg(&args, "--cold-start").and_then(|n| n.parse().ok()).unwrap_or(0);
    let plugins = plugins_from(&args, timeout);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .max_idle_connections_per_host(128)
        .build()
        .into();
    let direct = Arc::new(Direct {
        agent,
        addr,
        key,
        token,
    });

    // Ciphertexts to decrypt, 256 of each kind, made through each path
    // (which also warms up connections and threads).
    const POOL: usize = 256;
    let direct_cts: Arc<Vec<String>> = Arc::new(
        (0..POOL)
            .map(|_| direct.encrypt(&pt).unwrap_or_else(|e| fail(e)))
            .collect(),
    );
    let pools: Vec<Pools> = plugins
        .iter()
        .map(|p| {
            let v2: Vec<_> = (0..POOL)
                .map(|_| p.v2_encrypt(&pt).unwrap_or_else(|e| fail(e)))
                .collect();
            let v1: Vec<_> = (0..POOL)
                .map(|_| p.v1_encrypt(&pt).unwrap_or_else(|e| fail(e)))
                .collect();
            (Arc::new(v2), Arc::new(v1))
        })
        .collect();

    println!(
        "{:.0} s per row; 32-byte DEKs; x direct = req/s over direct transit's at that concurrency; CPU and RSS are the plugin's; client us = this client's CPU per call",
        secs.as_secs_f64()
    );
    header();
    // Per plugin: Encrypts done and the transit calls made meanwhile.
    let mut encrypts = vec![(0.0, 0.0); plugins.len()];
    for op in [Op::Encrypt, Op::Decrypt] {
        for &conc in &concs {
            let (d, p, cts) = (direct.clone(), pt.clone(), direct_cts.clone());
            let m = run(
                conc,
                secs,
                Arc::new(move |i: usize| match op {
                    Op::Encrypt => d.encrypt(&p).map(drop),
                    Op::Decrypt => match cts.get(i % POOL) {
                        Some(ct) => check(&d.decrypt(ct)?, &p),
                        None => Err("empty pool".into()),
                    },
                }),
            );
            println!(
                "{:<26} {:>4} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>10} {:>11} {:>8} {:>9.0}",
                format!("direct transit {}", op.name()),
                conc,
                m.ops,
                ms(m.p50),
                ms(m.p99),
                1.0,
                "-",
                1000,
                "-",
                m.client_us
            );
            for (pi, (plugin, (v2_pool, v1_pool))) in plugins.iter().zip(&pools).enumerate() {
                for api in ["v2", "v1"] {
                    let (pl, p, v2_pool, v1_pool) = (plugin.clone(), pt.clone(), v2_pool.clone(), v1_pool.clone());
                    let f = Arc::new(move |i: usize| match (op, api) {
                        (Op::Encrypt, "v2") => pl.v2_encrypt(&p).map(drop),
                        (Op::Encrypt, _) => pl.v1_encrypt(&p).map(drop),
                        (Op::Decrypt, "v2") => match v2_pool.get(i % POOL) {
                            Some(ct) => check(&pl.v2_decrypt(ct)?, &p),
                            None => Err("empty pool".into()),
                        },
                        (Op::Decrypt, _) => match v1_pool.get(i % POOL) {
                            Some(ct) => check(&pl.v1_decrypt(ct)?, &p),
                            None => Err("empty pool".into()),
                        },
                    });
                    let (n, calls) = plugin_row(plugin, &format!("{api} {}", op.name()), conc, secs, m.ops, f);
                    if let (Op::Encrypt, Some(e)) = (op, encrypts.get_mut(pi)) {
                        *e = (e.0 + n, e.1 + calls);
                    }
                }
            }
        }
    }
    for (p, (n, calls)) in plugins.iter().zip(&encrypts) {
        println!(
            "{}: {calls:.0} transit calls (health checks included) over {n:.0} Encrypts = {:.2} per 10,000",
            p.label,
            calls * 10_000.0 / n.max(1.0)
        );
    }
    for p in &plugins {
        println!(
            "{}: RSS now {} KiB, peak (VmHWM) {} KiB",
            p.label,
            p.status_kib("VmRSS:"),
            p.status_kib("VmHWM:")
        );
    }
    if cold > 0 {
        cold_start(&plugins, &direct, &pt, cold);
    }
}

/// The tag a KMS v1 DEK carries in transit (`wire::purpose`).
const V1_DEK_TAG: &[u8; 16] = b"trousseau.dek.v1";

fn check(got: &[u8], want: &[u8]) -> Result<(), Failure> {
    if got == want {
        Ok(())
    } else {
        Err("plaintext mismatch".into())
    }
}

/// N distinct v1 ciphers made through `maker`, 16 at once.
fn make_v1(maker: &Arc<Plugin>, pt: &Arc<Vec<u8>>, n: usize) -> Vec<Vec<u8>> {
    let made = Arc::new(std::sync::Mutex::new(Vec::with_capacity(n)));
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let (maker, made, pt) = (maker.clone(), made.clone(), pt.clone());
            std::thread::spawn(move || {
                for _ in (w..n).step_by(16) {
                    let c = maker.v1_encrypt(&pt).unwrap_or_else(|e| fail(e));
                    made.lock().unwrap_or_else(|e| e.into_inner()).push(c);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let mut made = made.lock().unwrap_or_else(|e| e.into_inner());
    std::mem::take(&mut *made)
}

/// A v1 cold start: N sequential Decrypts of distinct ciphers. Transit
/// ones (made through the first plugin without `--local-kek`) through
/// each such plugin and their transit ciphertexts straight at transit;
/// then, for each plugin with `--local-kek`, N of its ciphers through every
/// plugin that reads them (one that did not make them holds none of their
/// KEKs: its cold cache costs one transit decrypt per KEK).
fn cold_start(plugins: &[Arc<Plugin>], direct: &Direct, pt: &Arc<Vec<u8>>, n: usize) {
    let local: Vec<bool> = plugins
        .iter()
        .map(|p| p.v1_encrypt(pt).is_ok_and(|c| c.starts_with(V1_LOCAL_PREFIX)))
        .collect();
    let Some(maker) = plugins.iter().zip(&local).find(|(_, l)| !**l).map(|(p, _)| p) else {
        return;
    };
    let ciphers = make_v1(maker, pt, n);
    // A v1 cipher is `vault-transit:<mount>/<key>:` and transit's own.
    let transit: Vec<String> = ciphers
        .iter()
        .map(|c| {
            let s = String::from_utf8_lossy(c);
            s.find("vault:v")
                .map(|i| s[i..].to_owned())
                .unwrap_or_else(|| fail("no transit ciphertext in a v1 cipher"))
        })
        .collect();
    println!("v1 cold start: {n} sequential Decrypts of distinct ciphertexts");
    // The time for all N, or the error and how many had succeeded.
    let timed = |f: &dyn Fn(usize) -> Result<(), Failure>| {
        let start = Instant::now();
        for i in 0..n {
            f(i).map_err(|e| (i, e))?;
        }
        Ok::<_, (usize, Failure)>(start.elapsed())
    };
    let d = timed(&|i| match transit.get(i) {
        // Transit holds the plugin's purpose tag before the DEK
        // (src/wire/purpose.rs); a build from before tags has none.
        Some(ct) => {
            let got = direct.decrypt(ct)?;
            check(got.strip_prefix(V1_DEK_TAG.as_slice()).unwrap_or(&got), pt)
        }
        None => Err("missing".into()),
    })
    .unwrap_or_else(|(_, e)| fail(format!("cold start: {e}")));
    println!("  direct transit: {:.2} s", d.as_secs_f64());
    let row = |p: &Plugin, ciphers: &[Vec<u8>], what: &str| {
        let (cpu0, calls0) = (p.cpu(), p.vault_calls());
        let t = match timed(&|i| match ciphers.get(i) {
            Some(c) => check(&p.v1_decrypt(c)?, pt),
            None => Err("missing".into()),
        }) {
            Ok(t) => t,
            // An older build (BEFORE=) does not read local-KEK ciphers.
            Err((0, e)) => return println!("  {} ({what}): cannot decrypt them: {e}", p.label),
            Err((_, e)) => fail(format!("cold start: {e}")),
        };
        println!(
            "  {} ({what}): {:.2} s = {:.3} x direct; CPU {:.0} us per Decrypt; {:.2} vault calls per 1000",
            p.label,
            t.as_secs_f64(),
            t.as_secs_f64() / d.as_secs_f64().max(1e-9),
            (p.cpu() - cpu0) * 1e6 / n as f64,
            (p.vault_calls() - calls0) * 1000.0 / n as f64
        );
    };
    for (p, _) in plugins.iter().zip(&local).filter(|(_, l)| !**l) {
        row(p, &ciphers, "transit ciphers");
    }
    for (maker, _) in plugins.iter().zip(&local).filter(|(_, l)| **l) {
        let sealed = make_v1(maker, pt, n);
        for p in plugins {
            let what = if Arc::ptr_eq(p, maker) {
                "its local-KEK ciphers, KEK cached".to_owned()
            } else {
                format!("{}'s local-KEK ciphers, KEK not cached", maker.label)
            };
            row(p, &sealed, &what);
        }
    }
}

/// The `--plugin LABEL=SOCKET,PID,METRICS_ADDR` arguments, connected.
fn plugins_from(args: &[String], timeout: Duration) -> Vec<Arc<Plugin>> {
    args_all(args, "--plugin")
        .iter()
        .map(|spec| {
            let parsed = spec.split_once('=').and_then(|(label, rest)| {
                let mut it = rest.split(',');
                Some((label, it.next()?, it.next()?.parse::<u32>().ok()?, it.next()?))
            });
            let Some((label, socket, pid, metrics)) = parsed else {
                fail(format!("--plugin {spec}: want LABEL=SOCKET,PID,METRICS_ADDR"));
            };
            Arc::new(Plugin {
                label: label.to_owned(),
                client: KmsClient::connect(std::path::Path::new(socket), timeout),
                pid,
                metrics: metrics.to_owned(),
            })
        })
        .collect()
}

/// The plugin's open sockets (inodes from /proc/PID/fd): a Vault
/// connection opened again shows as one that was not there before.
fn sockets(pid: u32) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .filter(|l| l.starts_with("socket:"))
        .collect()
}

/// `--idle-gap`: per plugin, at the same time, `rounds` times: `gap` of
/// silence, then the timed first Encrypt after it and 5 more right after
/// (warm, median), and whether the plugin opened a new socket meanwhile
/// (a new Vault connection, so a TCP connect and a TLS handshake). What a
/// plugin pays after the apiserver's quiet minute.
fn idle_gap(plugins: &[Arc<Plugin>], gap: Duration, rounds: usize, pt: &Arc<Vec<u8>>) {
    println!(
        "{rounds} rounds of {:.0} s idle, then one Encrypt (first) and 5 more (warm, median); ms, and new sockets:",
        gap.as_secs_f64()
    );
    let handles: Vec<_> = plugins
        .iter()
        .map(|p| {
            let (p, pt) = (p.clone(), pt.clone());
            std::thread::spawn(move || {
                let timed = |p: &Plugin| {
                    let t = Instant::now();
                    p.v2_encrypt(&pt)
                        .unwrap_or_else(|e| fail(format!("{}: encrypt failed: {e}", p.label)));
                    ms(t.elapsed())
                };
                timed(&p);
                let mut out = Vec::new();
                for _ in 0..rounds {
                    let before = sockets(p.pid);
                    std::thread::sleep(gap);
                    let first = timed(&p);
                    let opened = sockets(p.pid).difference(&before).count();
                    let mut warm: Vec<f64> = (0..5).map(|_| timed(&p)).collect();
                    warm.sort_by(f64::total_cmp);
                    out.push((first, warm.get(2).copied().unwrap_or_default(), opened));
                }
                (p.label.clone(), out)
            })
        })
        .collect();
    for h in handles {
        let (label, out) = h.join().unwrap_or_else(|_| fail("a plugin's thread failed"));
        let rows: Vec<String> = out
            .iter()
            .map(|(f, w, n)| format!("{f:.2} / {w:.2} ({n} new)"))
            .collect();
        println!("  {label:<14} first / warm: {}", rows.join(", "));
    }
}

/// `--burst`: v2 round trips, `conc` at once, `total` in all.
fn burst(socket: &str, conc: usize, total: usize, timeout: Duration, pt: &Arc<Vec<u8>>) {
    let client = Arc::new(KmsClient::connect(std::path::Path::new(socket), timeout));
    let per = total / conc;
    let start = Instant::now();
    let handles: Vec<_> = (0..conc)
        .map(|_| {
            let (c, pt) = (client.clone(), pt.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(per);
                for _ in 0..per {
                    let t = Instant::now();
                    let mut e = v2::EncryptRequest::new();
                    e.plaintext = pt.to_vec();
                    e.uid = "bench".into();
                    let r =
                        c.v2.encrypt(&e, c.opt())
                            .unwrap_or_else(|e| fail(format!("round trip failed: {e}")));
                    let mut d = v2::DecryptRequest::new();
                    d.ciphertext = r.ciphertext;
                    d.key_id = r.key_id;
                    d.annotations = r.annotations;
                    d.uid = "bench".into();
                    let back =
                        c.v2.decrypt(&d, c.opt())
                            .unwrap_or_else(|e| fail(format!("round trip failed: {e}")));
                    if back.plaintext != *pt {
                        fail("round trip failed: plaintext mismatch");
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
    println!(
        "burst: {} round trips, {conc} at once, none failed: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
        all.len(),
        all.len() as f64 / secs,
        ms(pct(0.5)),
        ms(pct(0.99))
    );
}
