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
    drop(conns);
    let (failed, err) = legit_encrypts(&c, 5);
    assert_eq!(failed, 0, "after the attack: {err:?}");
}
