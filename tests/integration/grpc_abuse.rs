//! Hostile gRPC clients on the plugin's socket (issue 21): a client that
//! never accepts replies, half-open streams, compressed bodies. The
//! attacker is the raw HTTP/2 client in `h2_raw`; the legitimate calls go
//! through the real grpcio client, against a real OpenBao.

use std::path::Path;
use std::time::{Duration, Instant};

use grpcio::{ChannelBuilder, CompressionAlgorithms, EnvBuilder, RpcStatusCode};
use protobuf::Message;

use crate::h2_raw::{grpc_frame, H2Conn};
use crate::harness::*;

const ENCRYPT: &str = "/v2.KeyManagementService/Encrypt";

/// The plugin's `kms-worker` threads right now.
fn workers(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "kms-worker"))
        .count()
}

/// The plugin's resident memory in MiB.
fn rss_mib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

/// A well-formed Encrypt request body (a gRPC frame around the message).
fn encrypt_body() -> Vec<u8> {
    let mut r = v2::EncryptRequest::new();
    r.plaintext = vec![7u8; 32];
    r.uid = "attacker".into();
    grpc_frame(&r.write_to_bytes().unwrap(), false, None)
}

/// `n` Encrypts on connections whose stream window is 0, so none of the
/// replies can be delivered; `per_conn` streams per connection.
fn zero_window_calls(socket: &Path, n: usize, per_conn: usize) -> Vec<H2Conn> {
    let body = encrypt_body();
    let mut conns = Vec::new();
    for i in 0..n {
        if i % per_conn == 0 {
            conns.push(H2Conn::connect(socket, 0, true).expect("attacker connects"));
        }
        let c = conns.last_mut().unwrap();
        c.call(ENCRYPT, &[], Some(&body), true).expect("attacker sends");
    }
    conns
}

/// Legitimate Encrypts one after another; returns how many failed, with the
/// first error.
fn legit_encrypts(c: &KmsClient, n: usize) -> (usize, Option<String>) {
    let mut failed = 0;
    let mut first = None;
    for _ in 0..n {
        if let Err(e) = encrypt_v2(c, &dek()) {
            failed += 1;
            first.get_or_insert_with(|| format!("{e:?}"));
        }
    }
    (failed, first)
}

/// Issue 21, defect 1: replies a client never accepts must not keep a
/// worker thread from its next request (the old plugin parked a worker on
/// each, and handed it the next request: some legitimate calls then hung
/// until their deadline).
#[test]
fn undeliverable_replies_do_not_hold_up_other_requests() {
    let dir = TempDir::new("zero-window");
    let bao = Bao::dev(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let c = p.client();
    encrypt_v2(&c, &dek()).expect("warm-up Encrypt");

    let attack = zero_window_calls(&p.socket, 16, 16);
    // Let every attacker request run and park its worker.
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let (failed, first) = legit_encrypts(&c, 20);
    eprintln!(
        "20 Encrypts beside 16 undeliverable replies: {failed} failed in {:?}",
        t.elapsed()
    );
    assert_eq!(
        failed, 0,
        "legitimate Encrypts failed beside undeliverable replies: {first:?}"
    );
    assert_eq!(status(&c).healthz, "ok");
    drop(attack);
}

/// Issue 21, defect 1: a flood of undeliverable replies is bounded by the
/// in-flight cap (threads and permits), each permit comes back once the
/// reply is abandoned (REPLY_DELIVERY_TIMEOUT, 5 s) while the attacker is
/// still connected, and waves more than WORKER_IDLE_EXIT (10 s) apart do
/// not add threads beyond the cap (the old plugin's parked threads left
/// the count and kept waiting, so each wave added more).
#[test]
fn undeliverable_replies_stay_within_the_cap_and_are_abandoned() {
    const CAP: usize = 32;
    let dir = TempDir::new("zero-window-flood");
    let bao = Bao::dev(dir.path());
    let cap = CAP.to_string();
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &["--max-in-flight", &cap]);
    let c = p.client();
    encrypt_v2(&c, &dek()).expect("warm-up Encrypt");
    let pid = p.pid();

    let mut conns = zero_window_calls(&p.socket, 3 * CAP, CAP);
    std::thread::sleep(Duration::from_secs(1));
    let first = workers(pid);
    // The permits come back while the attacker stays connected: Encrypt is
    // served again within the abandon bound (5 s plus a 1 s tick) and margin.
    let t = Instant::now();
    let recovered = loop {
        if encrypt_v2(&c, &dek()).is_ok() {
            break Some(t.elapsed());
        }
        if t.elapsed() > Duration::from_secs(9) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    // A second wave after the parked threads' idle time (10 s).
    std::thread::sleep(Duration::from_secs(11).saturating_sub(t.elapsed()));
    conns.extend(zero_window_calls(&p.socket, 3 * CAP, CAP));
    std::thread::sleep(Duration::from_secs(1));
    let second = workers(pid);
    eprintln!(
        "cap {CAP}: kms-worker threads {first} after wave 1, {second} after wave 2; Encrypt served again after {recovered:?}"
    );
    assert!(first <= CAP && second <= CAP, "threads past the cap: {first}, {second}");
    assert!(recovered.is_some(), "Encrypt still refused 9 s into the attack");
    // Once the attacker leaves, its calls are cancelled and the permits
    // come back (at the latest when the second wave's replies are abandoned).
    drop(conns);
    let t = Instant::now();
    while encrypt_v2(&c, &dek()).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "Encrypt still refused 10 s after the attack"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let (failed, err) = legit_encrypts(&c, 5);
    assert_eq!(failed, 0, "after the attack: {err:?}");
}

/// `n` streams that open and then stall: HEADERS only (`body` None) or a
/// message prefix that claims more than is sent; `per_conn` streams per
/// connection; SETTINGS never acknowledged, so gRPC core applies none of
/// its own limits to these connections (the worst case).
fn stalled_streams(socket: &Path, n: usize, per_conn: usize, body: Option<&[u8]>) -> Vec<H2Conn> {
    let mut conns: Vec<H2Conn> = Vec::new();
    let mut on_last = per_conn;
    let mut failed = 0;
    for _ in 0..n {
        if on_last == per_conn {
            match H2Conn::connect(socket, 65_535, false) {
                Ok(c) => conns.push(c),
                Err(e) => {
                    eprintln!("attacker connection {} refused: {e}", conns.len());
                    break;
                }
            }
            on_last = 0;
        }
        let Some(c) = conns.last_mut() else { break };
        on_last += 1;
        if c.call(ENCRYPT, &[], body, false).is_err() {
            // The plugin closed this connection (a bound hit): go on on a new one.
            failed += 1;
            conns.pop();
            on_last = per_conn;
        }
    }
    eprintln!(
        "attacker: {} connections open, {failed} closed by the plugin",
        conns.len()
    );
    conns
}

/// Issue 21, defect 2: streams that send HEADERS and nothing more must not
/// take the request slots legitimate calls need (the old plugin: about
/// 2,100 of them and every call timed out). Their memory is NOT bounded
/// yet (20,000 take the plugin past 300 MiB, old and new; 3,000, about 66 MiB, already blocked the old plugin): gRPC core 1.56
/// does not count a call's first arena zone in the memory quota, and
/// applies MAX_CONCURRENT_STREAMS only to clients that acknowledge its
/// SETTINGS. The RSS is printed, not asserted, until that is fixed.
#[test]
fn half_open_streams_do_not_block_calls() {
    let dir = TempDir::new("half-open");
    let bao = Bao::dev(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let c = p.client();
    encrypt_v2(&c, &dek()).expect("warm-up Encrypt");
    let pid = p.pid();
    eprintln!("RSS before: {} MiB", rss_mib(pid));

    let t = Instant::now();
    let attack = stalled_streams(&p.socket, 3_000, 1_000, None);
    eprintln!("3,000 half-open streams sent in {:?}", t.elapsed());
    std::thread::sleep(Duration::from_millis(500));
    let (failed, first) = legit_encrypts(&c, 10);
    let st = c.v2.status(&v2::StatusRequest::new(), c.opt());
    let rss = rss_mib(pid);
    eprintln!(
        "beside 3,000 half-open streams: {failed} of 10 Encrypts failed, Status ok={}, RSS {rss} MiB",
        st.is_ok()
    );
    assert_eq!(
        failed, 0,
        "legitimate Encrypts failed beside half-open streams: {first:?}"
    );
    assert!(st.is_ok(), "Status failed: {st:?}");
    drop(attack);
}

/// The manifests' memory limit is 128 Mi; the plugin must stay under it
/// with room for the rest of its work.
const MEMORY_BOUND_MIB: u64 = 100;

/// Issue 21, defect 2: bodies that stall after 60 KiB each must not add up
/// past the memory limit (2,000 of them took the old plugin to 154 MB).
#[test]
fn stalled_bodies_stay_under_the_memory_limit() {
    let dir = TempDir::new("stalled-bodies");
    let bao = Bao::dev(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let c = p.client();
    encrypt_v2(&c, &dek()).expect("warm-up Encrypt");
    let pid = p.pid();

    // A message prefix claiming 200 KiB (under the 256 KiB limit), then 60 KiB.
    let body = grpc_frame(&vec![0u8; 60 * 1024], false, Some(200 * 1024));
    let t = Instant::now();
    let attack = stalled_streams(&p.socket, 2_000, 10, Some(&body));
    eprintln!(
        "2,000 stalled bodies sent in {:?} on {} connections still open",
        t.elapsed(),
        attack.len()
    );
    std::thread::sleep(Duration::from_millis(500));
    let (failed, first) = legit_encrypts(&c, 10);
    let rss = rss_mib(pid);
    eprintln!("beside 2,000 stalled 60 KiB bodies: {failed} of 10 Encrypts failed, RSS {rss} MiB");
    assert!(rss < MEMORY_BOUND_MIB, "RSS {rss} MiB");
    assert_eq!(failed, 0, "legitimate Encrypts failed beside stalled bodies: {first:?}");
    drop(attack);
}

/// Issue 21, defect 2: the message size limit applied to the compressed
/// size, so a small gzip body inflated to hundreds of MB. The apiserver
/// never compresses: a compressed request is refused before it is inflated.
#[test]
fn compressed_requests_are_refused_before_inflating() {
    let dir = TempDir::new("gzip");
    let bao = Bao::dev(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let c = p.client();
    encrypt_v2(&c, &dek()).expect("warm-up Encrypt");
    let pid = p.pid();

    // Eight bombs at once: 47 KiB of gzip each (within the 64 KiB stream
    // window a client may fill before the server grants more), 48 MiB inflated.
    let out = std::process::Command::new(test_python())
        .args([
            "-c",
            "import gzip,sys; sys.stdout.buffer.write(gzip.compress(bytes(48 << 20), 9))",
        ])
        .output()
        .expect("python3");
    assert!(out.status.success());
    let bomb = grpc_frame(&out.stdout, true, None);
    eprintln!("bomb: {} bytes of gzip", out.stdout.len());
    let mut conns = Vec::new();
    for _ in 0..8 {
        let mut conn = H2Conn::connect(&p.socket, 65_535, true).expect("attacker connects");
        conn.call(ENCRYPT, &[("grpc-encoding", "gzip")], Some(&bomb), true)
            .expect("send");
        conns.push(conn);
    }
    let mut peak = 0;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        peak = peak.max(rss_mib(pid));
    }
    eprintln!("eight gzip bombs: peak RSS {peak} MiB");
    drop(conns);
    // A real gRPC client that compresses what it sends.
    let env = std::sync::Arc::new(EnvBuilder::new().cq_count(1).build());
    let ch = ChannelBuilder::new(env)
        .default_compression_algorithm(CompressionAlgorithms::GRPC_COMPRESS_GZIP)
        .connect(&format!("unix:{}", p.socket.display()));
    let gz = v2::Client::new(ch);
    let mut req = v2::EncryptRequest::new();
    req.plaintext = dek();
    req.uid = "gzip".into();
    let r = gz.encrypt(&req, c.opt());
    eprintln!("gzip Encrypt: {:?}", r.as_ref().map(|_| "ok"));
    let (code, msg) = rpc_err(r);
    assert_eq!(code, RpcStatusCode::UNIMPLEMENTED, "{msg}");

    assert!(peak < MEMORY_BOUND_MIB, "RSS {peak} MiB");
    encrypt_v2(&c, &dek()).expect("Encrypt after the bombs");
}
