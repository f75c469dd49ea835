//! Vault HA: the plugin given several addresses of a real three-node
//! OpenBao raft cluster. The active node killed under load, a sealed node
//! and a dead or hanging address first in the list, a standby's 307.

use crate::harness::*;
use std::time::{Duration, Instant};

/// How long the plugin may take to serve again after the active node dies.
const RECOVERY_BOUND: Duration = Duration::from_secs(60);

fn kms_token(c: &Cluster) -> String {
    c.token_with_policy("kms", &transit_policy(&["kube"], &["kube"]))
}

fn wait_status_ok(c: &KmsClient, within: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let s = status(c);
        if s.healthz == "ok" {
            return t.elapsed();
        }
        assert!(t.elapsed() < within, "Status not ok after {within:?}: {}", s.healthz);
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Four clients round-trip continuously; the active node (first in the
/// plugin's list) is killed. No wrong plaintext ever, the plugin never
/// exits, and it serves again within `RECOVERY_BOUND`, then without failures.
fn leader_loss_under_load(name: &str, opts: ClusterOpts) {
    let dir = TempDir::new(name);
    let mut c = Cluster::start_with(dir.path(), opts);
    let leader = c.leader_index().expect("an active node");
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let list = c.addr_list_in(&[leader, others[0], others[1]]);
    let token = kms_token(&c);
    let mut p = Plugin::start(dir.path(), &list, &token, &[]);
    let kc = p.client();
    assert_eq!(status(&kc).healthz, "ok");
    let pt = dek();
    let before = encrypt_v2(&kc, &pt).unwrap();

    let load = Load::start(&p.socket, 4);
    load.run_for(Duration::from_secs(3));
    let warm = load.snapshot();
    let wf = Figures(&warm);
    assert!(
        wf.ok() > 0 && wf.failed() == 0,
        "before the kill: {}; {:?}",
        wf.summary(),
        wf.error_samples()
    );

    let kill = Instant::now();
    c.stop(leader);
    let new_leader = loop {
        load.check();
        if let Some(i) = c.leader_index().filter(|&i| i != leader) {
            break i;
        }
        assert!(
            kill.elapsed() < RECOVERY_BOUND,
            "no new active node after {RECOVERY_BOUND:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let election = kill.elapsed();
    let first_ok = loop {
        load.check();
        if let Some(d) = Figures(&load.snapshot()).first_ok_started_after(kill) {
            break d;
        }
        assert!(
            kill.elapsed() < RECOVERY_BOUND,
            "no successful round trip {RECOVERY_BOUND:?} after the active node died: {:?}",
            Figures(&load.snapshot()).error_samples()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Some seconds more; the last three must be free of failures.
    load.run_for(Duration::from_secs(3));
    let tail = Instant::now();
    load.run_for(Duration::from_secs(3));
    let outs = load.stop();
    assert!(p.try_exit().is_none(), "the plugin exited:\n{}", p.log_text());

    let f = Figures(&outs);
    let during = Figures(&outs).failed_started_between(kill, kill + first_ok);
    let after_kill = Figures(&outs).failed_started_between(kill, tail);
    let in_tail = Figures(&outs).failed_started_between(tail, tail + Duration::from_secs(3600));
    eprintln!(
        "[{name}] node {leader} killed; node {new_leader} active after {election:?}; first round trip \
         started after the kill succeeded {first_ok:?} after it; failed round trips: {during} before that, \
         {after_kill} between the kill and the last 3 s, {in_tail} in the last 3 s; overall {}; errors {:?}",
        f.summary(),
        f.error_samples()
    );
    assert_eq!(f.wrong(), 0);
    assert!(first_ok < RECOVERY_BOUND);
    assert_eq!(
        in_tail,
        0,
        "failures {:?} after recovery: {:?}",
        tail.duration_since(kill),
        f.error_samples()
    );
    let st = wait_status_ok(&kc, Duration::from_secs(30));
    eprintln!("[{name}] Status ok {st:?} after the load stopped");
    assert_eq!(decrypt_v2(&kc, &before.ciphertext, &before.key_id).unwrap(), pt);
    assert!(p.try_exit().is_none());
}

/// Standbys forward every request to the active node (standby reads off):
/// while there is no active node they cannot serve, so the plugin must ride
/// out the election.
#[test]
fn leader_killed_under_load_standbys_forwarding() {
    leader_loss_under_load(
        "ha-leader-fwd",
        ClusterOpts {
            disable_standby_reads: true,
        },
    );
}

/// OpenBao's default: standbys answer transit requests themselves.
#[test]
fn leader_killed_under_load_standby_reads() {
    leader_loss_under_load("ha-leader-reads", ClusterOpts::default());
}

/// A node restarted and left sealed answers 503 to everything; first in the
/// list, it is skipped and every round trip succeeds.
#[test]
fn sealed_node_first_in_the_list_is_skipped() {
    let dir = TempDir::new("ha-sealed");
    let mut c = Cluster::start(dir.path());
    let leader = c.leader_index().expect("an active node");
    let sealed = (0..3).find(|&i| i != leader).unwrap();
    let third = (0..3).find(|&i| i != leader && i != sealed).unwrap();
    c.restart(sealed, false);
    assert_eq!(c.health(sealed), 503, "node {sealed} should be sealed");
    let token = kms_token(&c);
    let list = c.addr_list_in(&[sealed, leader, third]);
    let mut p = Plugin::start(dir.path(), &list, &token, &[]);
    let kc = p.client();
    let mut lat = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        round_trip_v2(&kc);
        lat.push(t.elapsed());
    }
    let pt = dek();
    let cipher = encrypt_v1(&kc, &pt).unwrap();
    assert_eq!(decrypt_v1(&kc, &cipher).unwrap(), pt);
    let st = wait_status_ok(&kc, Duration::from_secs(15));
    eprintln!(
        "sealed node {sealed} first: 30 round trips ok, max {:?}, Status ok after {st:?}",
        lat.iter().max().unwrap()
    );
    assert_eq!(c.health(sealed), 503, "still sealed: the requests went elsewhere");
    assert!(p.try_exit().is_none());
}

/// A port nothing listens on, first in the list: each request moves on to
/// the next address at once. Then a port that accepts and never answers,
/// first: each request moves on after `--vault-timeout`, inside the
/// apiserver's deadline.
#[test]
fn dead_or_hanging_address_first_in_the_list() {
    let dir = TempDir::new("ha-dead");
    let bao = Bao::dev(dir.path());
    let dead = format!("http://127.0.0.1:{}", free_port());
    let p = Plugin::start(dir.path(), &format!("{dead},{}", bao.addr), &bao.token, &[]);
    let kc = p.client();
    let mut lat = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        round_trip_v2(&kc);
        lat.push(t.elapsed());
    }
    let st = wait_status_ok(&kc, Duration::from_secs(15));
    eprintln!(
        "dead port first: 20 round trips ok, max {:?}; Status ok after {st:?}",
        lat.iter().max().unwrap()
    );
    drop(p);

    let hole = BlackHole::start();
    let dir2 = TempDir::new("ha-hole");
    let t = Instant::now();
    let mut p = Plugin::start(
        dir2.path(),
        &format!("{},{}", hole.addr, bao.addr),
        &bao.token,
        &["--vault-timeout", "1s"],
    );
    let started = t.elapsed();
    let kc = p.client();
    let mut lat = Vec::new();
    for _ in 0..5 {
        let pt = dek();
        let t = Instant::now();
        let e = encrypt_v2(&kc, &pt).expect("encrypt with a hanging node first");
        lat.push(t.elapsed());
        let t = Instant::now();
        let got = decrypt_v2(&kc, &e.ciphertext, &e.key_id).expect("decrypt with a hanging node first");
        lat.push(t.elapsed());
        assert_eq!(got, pt);
    }
    eprintln!("hanging port first (--vault-timeout 1s): socket up after {started:?}; 10 calls ok, latencies {lat:?}");
    assert!(p.try_exit().is_none());
    drop(p);

    // A node that answered at first and then hangs: a request gives it its
    // share of --vault-timeout, then moves on to the next node.
    let proxy = FaultProxy::start(&bao.addr);
    let dir3 = TempDir::new("ha-slow");
    let mut p = Plugin::start(
        dir3.path(),
        &format!("{},{}", proxy.addr, bao.addr),
        &bao.token,
        &["--vault-timeout", "1s"],
    );
    let kc = p.client();
    round_trip_v2(&kc);
    let before = proxy.requests();
    assert!(before > 0, "the first node was not used");
    proxy.set_delay(Duration::from_millis(2500));
    let mut lat = Vec::new();
    for _ in 0..5 {
        let pt = dek();
        let t = Instant::now();
        let e = encrypt_v2(&kc, &pt).expect("encrypt with the first node hanging");
        lat.push(t.elapsed());
        let t = Instant::now();
        let got = decrypt_v2(&kc, &e.ciphertext, &e.key_id).expect("decrypt with the first node hanging");
        lat.push(t.elapsed());
        assert_eq!(got, pt);
    }
    assert!(proxy.requests() > before, "the plugin never tried the hanging node");
    eprintln!(
        "first node hangs after start (--vault-timeout 1s): 10 calls ok, latencies {lat:?}; \
         {} requests went to the hanging node after it hung",
        proxy.requests() - before
    );
    assert!(p.try_exit().is_none());
}

/// A standby asked not to forward answers 307 to the active node's
/// api_addr; the plugin follows it when that address is a configured node,
/// and not otherwise.
#[test]
fn standby_redirect_is_followed() {
    let dir = TempDir::new("ha-307");
    let c = Cluster::start_with(
        dir.path(),
        ClusterOpts {
            disable_standby_reads: true,
        },
    );
    let leader = c.leader_index().expect("an active node");
    let standby = (0..3).find(|&i| i != leader).unwrap();
    let token = kms_token(&c);
    let proxy = FaultProxy::start(c.addr(standby));
    proxy.set_mode(ProxyMode::NoForwarding);
    // Given only the standby, the plugin does not follow its 307 to an
    // address that is not configured: it refuses to start, saying why.
    let alone = dir.path().join("alone");
    std::fs::create_dir_all(&alone).unwrap();
    let mut lone = Plugin::spawn(&alone, &alone.join("kms.sock"), &proxy.addr, &token, &[]);
    assert_eq!(lone.wait_exit(Duration::from_secs(20)).code(), Some(1));
    let log = lone.log_text();
    assert!(log.contains("not a configured node"), "{log}");
    drop(lone);
    // Listed after the standby, the active node is where the 307 is followed.
    let addrs = format!("{},{}", proxy.addr, c.addr(leader));
    let p = Plugin::start(dir.path(), &addrs, &token, &[]);
    let kc = p.client();
    for _ in 0..10 {
        round_trip_v2(&kc);
    }
    eprintln!(
        "via standby {standby} (307 to node {leader}): 10 round trips ok; {} POSTs reached the \
         standby, {} answers were 307s",
        proxy.requests(),
        proxy.redirects()
    );
    assert!(proxy.redirects() >= 1, "the plugin never met a 307");
}
