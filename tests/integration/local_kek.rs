//! The local KEK (`--local-kek`, docs/local-kek.md) against a real
//! OpenBao: DEKs sealed in the plugin under a KEK that transit wraps once;
//! the KEK rotated by uses, by age and by a transit key rotation; every
//! sealed DEK opened by any plugin (fresh, flag off, after an OpenBao
//! restart) at one unwrap per KEK, and never for the wrong input; a KEK
//! due while Vault is down fails Encrypt and Status until Vault is back.

use crate::harness::*;
use base64::Engine as _;
use grpcio::RpcStatusCode;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ANNOTATION: &str = "local-kek.trousseau.io";
const V1_PREFIX: &str = "vault-transit-kek:";
/// What AES-GCM adds around a DEK: a 12-byte nonce and a 16-byte tag.
const SEAL_OVERHEAD: usize = 12 + 16;
/// Open's refusal of a sealed DEK that its KEK does not authenticate.
const NOT_AUTHENTIC: &str = "does not authenticate under the KEK stored with it";

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

fn rotations(p: &Plugin, reason: &str) -> f64 {
    metric_sum(
        p,
        &format!("trousseau_local_kek_rotations_total{{reason=\"{reason}\"}}"),
    )
}

fn unwraps(p: &Plugin) -> f64 {
    metric_sum(p, "trousseau_local_kek_unwraps_total")
}

/// Transit calls of `op` (`encrypt` or `decrypt`, single or batch) the
/// plugin made, whatever Vault answered.
fn transit_calls(p: &Plugin, op: &str) -> f64 {
    metric_sum(p, &format!("trousseau_vault_requests_total{{endpoint=\"{op}\""))
}

/// A DEK that names its caller and round, so a misdelivered one is seen.
fn own_dek(caller: usize, round: usize) -> Vec<u8> {
    let mut pt = dek();
    pt[..8].copy_from_slice(&(caller as u32).to_be_bytes().repeat(2));
    pt[8..16].copy_from_slice(&(round as u64).to_be_bytes());
    pt
}

fn annotated(wrapped: &str) -> HashMap<String, Vec<u8>> {
    HashMap::from([(ANNOTATION.to_owned(), wrapped.as_bytes().to_vec())])
}

fn wrapped_v2(e: &v2::EncryptResponse) -> String {
    let w = e.annotations.get(ANNOTATION).expect("no local-kek annotation");
    String::from_utf8(w.clone()).unwrap()
}

/// A local-KEK v1 cipher's transit key, wrapped KEK and sealed DEK.
fn v1_parts(cipher: &[u8]) -> (String, String, Vec<u8>) {
    let s = std::str::from_utf8(cipher).unwrap();
    let rest = s
        .strip_prefix(V1_PREFIX)
        .unwrap_or_else(|| panic!("not a local-KEK cipher: {s}"));
    let (key, rest) = rest.split_once(':').unwrap();
    let (wrapped, sealed) = rest.rsplit_once(':').unwrap();
    (key.to_owned(), wrapped.to_owned(), b64().decode(sealed).unwrap())
}

fn v1_cipher(key: &str, wrapped: &str, sealed: &[u8]) -> Vec<u8> {
    format!("{V1_PREFIX}{key}:{wrapped}:{}", b64().encode(sealed)).into_bytes()
}

fn flipped(b: &[u8], i: usize) -> Vec<u8> {
    let mut t = b.to_vec();
    let i = i % t.len();
    t[i] ^= 0x01;
    t
}

/// A DEK sealed by a local-KEK plugin through either API.
enum Sealed {
    V2(v2::EncryptResponse),
    V1(Vec<u8>),
}

impl Sealed {
    fn new(c: &KmsClient, pt: &[u8], v1: bool) -> Sealed {
        if v1 {
            Sealed::V1(encrypt_v1(c, pt).expect("v1 Encrypt"))
        } else {
            Sealed::V2(encrypt_v2(c, pt).expect("v2 Encrypt"))
        }
    }
    fn wrapped(&self) -> String {
        match self {
            Sealed::V2(e) => wrapped_v2(e),
            Sealed::V1(c) => v1_parts(c).1,
        }
    }
    fn open(&self, c: &KmsClient) -> grpcio::Result<Vec<u8>> {
        match self {
            Sealed::V2(e) => open_v2(c, e),
            Sealed::V1(cipher) => decrypt_v1(c, cipher),
        }
    }
}

fn open_v2(c: &KmsClient, e: &v2::EncryptResponse) -> grpcio::Result<Vec<u8>> {
    decrypt_v2_with(c, &e.ciphertext, &e.key_id, &e.annotations)
}

/// `n` fresh DEKs sealed one after another, odd ones through v1 if `mixed`.
fn seal_n(c: &KmsClient, n: usize, mixed: bool) -> Vec<(Vec<u8>, Sealed)> {
    (0..n)
        .map(|i| {
            let pt = dek();
            let s = Sealed::new(c, &pt, mixed && i % 2 == 1);
            (pt, s)
        })
        .collect()
}

/// Each of `made` opens to its own DEK through `c`.
fn open_all(c: &KmsClient, made: &[(Vec<u8>, Sealed)]) {
    for (i, (pt, s)) in made.iter().enumerate() {
        assert_eq!(s.open(c).unwrap_or_else(|e| panic!("#{i}: {e:?}")), *pt, "#{i}");
    }
}

#[test]
fn round_trips_and_2000_encrypts_cost_one_transit_encrypt() {
    let dir = TempDir::new("lkek-round");
    let bao = Bao::dev(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &["--local-kek"]);
    let c = Arc::new(p.client());
    // Status waits for the first health check, so none straddles the count.
    let st = status(&c);
    assert_eq!(st.healthz, "ok");
    assert_eq!(key_id_base(&st.key_id), "vault-transit:transit/kube:v1");
    assert!(p.log_text().contains("local_kek=max_uses:1000000,"), "config line");
    let (enc0, dec0) = (transit_calls(&p, "encrypt"), transit_calls(&p, "decrypt"));

    // 8 callers at once, 250 Encrypts each, v2 and v1 alternating.
    let hs: Vec<_> = (0..8)
        .map(|caller| {
            let c = c.clone();
            std::thread::spawn(move || {
                (0..250)
                    .map(|i| {
                        let pt = own_dek(caller, i);
                        let s = Sealed::new(&c, &pt, i % 2 == 1);
                        (pt, s)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let made: Vec<(Vec<u8>, Sealed)> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
    // A health check makes one transit encrypt and one decrypt, a local-KEK
    // Encrypt no decrypt: the difference is what the Encrypts cost.
    let encrypts = transit_calls(&p, "encrypt") - enc0;
    let decrypts = transit_calls(&p, "decrypt") - dec0;
    eprintln!("2000 Encrypts: {encrypts} transit encrypts, {decrypts} transit decrypts");
    assert_eq!(made.len(), 2000);
    assert_eq!(encrypts - decrypts, 1.0, "transit encrypts for 2,000 Encrypts");
    assert_eq!(rotations(&p, "start"), 1.0);

    let wrapped: HashSet<String> = made.iter().map(|(_, s)| s.wrapped()).collect();
    assert_eq!(wrapped.len(), 1, "one KEK seals them all, through both APIs");
    assert!(wrapped.iter().all(|w| w.starts_with("vault:v1:")), "{wrapped:?}");
    for (pt, s) in &made {
        match s {
            Sealed::V2(e) => {
                assert_eq!(e.key_id, st.key_id, "Encrypt's key_id must equal Status's");
                assert!(!e.ciphertext.starts_with(b"vault:"));
                assert_eq!(e.ciphertext.len(), pt.len() + SEAL_OVERHEAD);
                assert_eq!(e.annotations.len(), 1);
            }
            Sealed::V1(cipher) => {
                assert!(cipher.starts_with(b"vault-transit-kek:transit/kube:vault:v1:"));
                assert_eq!(v1_parts(cipher).2.len(), pt.len() + SEAL_OVERHEAD);
            }
        }
    }
    open_all(&c, &made);
    // The apiserver's v1 health check encrypts "ping".
    let ping = encrypt_v1(&c, b"ping").unwrap();
    assert_eq!(decrypt_v1(&c, &ping).unwrap(), b"ping");
    assert_eq!(unwraps(&p), 0.0, "the plugin holds its own KEK");
    let encrypts = transit_calls(&p, "encrypt") - enc0;
    let decrypts = transit_calls(&p, "decrypt") - dec0;
    assert_eq!(
        encrypts - decrypts,
        1.0,
        "2,001 Decrypts and an Encrypt made no transit call"
    );
}

#[test]
fn the_kek_rotates_by_uses_and_a_fresh_plugin_unwraps_each_once() {
    let dir = TempDir::new("lkek-uses");
    let bao = Bao::dev(dir.path());
    let p = Plugin::start(
        dir.path(),
        &bao.addr,
        &bao.token,
        &["--local-kek", "--local-kek-max-uses", "5"],
    );
    let c = p.client();
    let made = seal_n(&c, 23, true);
    let wrapped: Vec<String> = made.iter().map(|(_, s)| s.wrapped()).collect();
    // Encrypt i is sealed by KEK i / 5, v2 and v1 counting alike.
    for i in 1..wrapped.len() {
        assert_eq!(wrapped[i] == wrapped[i - 1], i % 5 != 0, "Encrypt {i}: {wrapped:?}");
    }
    let distinct: HashSet<&String> = wrapped.iter().collect();
    assert_eq!(distinct.len(), 23usize.div_ceil(5));
    assert_eq!(rotations(&p, "start"), 1.0);
    assert_eq!(rotations(&p, "uses"), 4.0);
    assert_eq!(rotations(&p, "age") + rotations(&p, "key"), 0.0);
    open_all(&c, &made);
    assert_eq!(unwraps(&p), 0.0, "the maker holds all five KEKs");

    // A fresh plugin holds none: one unwrap (one transit decrypt) per KEK.
    let dir2 = TempDir::new("lkek-uses-fresh");
    let fresh = Plugin::start(dir2.path(), &bao.addr, &bao.token, &["--local-kek"]);
    let c2 = fresh.client();
    assert_eq!(status(&c2).healthz, "ok");
    let (enc0, dec0) = (transit_calls(&fresh, "encrypt"), transit_calls(&fresh, "decrypt"));
    open_all(&c2, &made);
    assert_eq!(unwraps(&fresh), 5.0);
    let unwrap_calls = (transit_calls(&fresh, "decrypt") - dec0) - (transit_calls(&fresh, "encrypt") - enc0);
    assert_eq!(unwrap_calls, 5.0, "transit decrypts for 23 Decrypts of 5 KEKs");
    open_all(&c2, &made);
    assert_eq!(unwraps(&fresh), 5.0, "a second pass costs no unwrap");
    assert_eq!(rotations(&fresh, "start"), 0.0, "Decrypt makes no KEK");
}

#[test]
fn the_kek_rotates_by_age() {
    let dir = TempDir::new("lkek-age");
    let bao = Bao::dev(dir.path());
    let p = Plugin::start(
        dir.path(),
        &bao.addr,
        &bao.token,
        &["--local-kek", "--local-kek-max-age", "2s"],
    );
    let c = p.client();
    let (pa, pb, pc) = (dek(), dek(), dek());
    let t = Instant::now();
    let a = encrypt_v2(&c, &pa).unwrap();
    let b = encrypt_v2(&c, &pb).unwrap();
    assert_eq!(wrapped_v2(&a), wrapped_v2(&b), "{:?} apart", t.elapsed());
    std::thread::sleep(Duration::from_millis(2500).saturating_sub(t.elapsed()));
    let later = encrypt_v2(&c, &pc).unwrap();
    assert_ne!(wrapped_v2(&later), wrapped_v2(&a), "a KEK 2.5 s old sealed again");
    let v1 = encrypt_v1(&c, &pc).unwrap();
    assert_eq!(v1_parts(&v1).1, wrapped_v2(&later), "the new KEK seals v1 too");
    assert_eq!(rotations(&p, "age"), 1.0);
    assert_eq!(rotations(&p, "start"), 1.0);
    assert_eq!(rotations(&p, "uses") + rotations(&p, "key"), 0.0);
    for (pt, e) in [(&pa, &a), (&pb, &b), (&pc, &later)] {
        assert_eq!(open_v2(&c, e).unwrap(), *pt);
    }
    assert_eq!(decrypt_v1(&c, &v1).unwrap(), pc);
}

#[test]
fn a_transit_key_rotation_rotates_the_kek_and_old_data_still_decrypts() {
    let dir = TempDir::new("lkek-key");
    let bao = Bao::dev(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &["--local-kek"]);
    let c = p.client();
    let before = status(&c).key_id;
    assert_eq!(key_id_base(&before), "vault-transit:transit/kube:v1");
    let pt = dek();
    let old = encrypt_v2(&c, &pt).unwrap();
    let old_v1 = encrypt_v1(&c, &pt).unwrap();
    assert_eq!(old.key_id, before);
    assert!(wrapped_v2(&old).starts_with("vault:v1:"));

    bao.rotate("kube"); // the key Plugin::start serves
    let t = Instant::now();
    let after = wait_for("Status to report key version 2", Duration::from_secs(30), || {
        let s = status(&c);
        assert_eq!(s.healthz, "ok");
        (s.key_id != before).then_some(s.key_id)
    });
    eprintln!("rotation visible in Status after {:?}", t.elapsed());
    assert_eq!(key_id_base(&after), "vault-transit:transit/kube:v2");

    let new = encrypt_v2(&c, &pt).unwrap();
    assert_eq!(new.key_id, after, "Encrypt's key_id must equal Status's after rotation");
    assert!(wrapped_v2(&new).starts_with("vault:v2:"), "{}", wrapped_v2(&new));
    assert_eq!(rotations(&p, "key"), 1.0);
    let new_v1 = encrypt_v1(&c, &pt).unwrap();
    assert!(new_v1.starts_with(b"vault-transit-kek:transit/kube:vault:v2:"));
    assert_eq!(v1_parts(&new_v1).1, wrapped_v2(&new));
    assert_eq!(rotations(&p, "key"), 1.0, "one rotation per key version");
    assert_eq!(rotations(&p, "start"), 1.0);
    for e in [&old, &new] {
        assert_eq!(open_v2(&c, e).unwrap(), pt);
    }
    for cipher in [&old_v1, &new_v1] {
        assert_eq!(decrypt_v1(&c, cipher).unwrap(), pt);
    }
}

#[test]
fn ciphertexts_survive_an_openbao_restart() {
    let dir = TempDir::new("lkek-restart");
    let mut bao = Bao::raft(dir.path());
    let p = Plugin::start(
        dir.path(),
        &bao.addr,
        &bao.token,
        &["--local-kek", "--local-kek-max-uses", "4"],
    );
    let c = p.client();
    let mut made = seal_n(&c, 4, true);
    bao.restart();
    open_all(&c, &made);
    // The KEK is used up: the next Encrypt has the restarted OpenBao wrap
    // a new one.
    let (pt, e) = wait_for("an Encrypt after the restart", Duration::from_secs(30), || {
        let pt = dek();
        encrypt_v2(&c, &pt).ok().map(|e| (pt, e))
    });
    assert_ne!(wrapped_v2(&e), made[0].1.wrapped());
    assert_eq!(rotations(&p, "uses"), 1.0);
    made.push((pt, Sealed::V2(e)));
    open_all(&c, &made);

    // Started after the restart, with the flag off: nothing cached.
    let dir2 = TempDir::new("lkek-restart-fresh");
    let fresh = Plugin::start(dir2.path(), &bao.addr, &bao.token, &[]);
    let c2 = fresh.client();
    open_all(&c2, &made);
    assert_eq!(unwraps(&fresh), 2.0, "one unwrap per KEK");
}

#[test]
fn the_wrong_caller_never_gets_a_plaintext() {
    let dir = TempDir::new("lkek-mix");
    let bao = Bao::dev(dir.path());
    bao.create_key("other");
    // A maker seals every caller's DEKs, 64 per KEK (so several KEKs); a
    // fresh plugin behind a slow proxy serves them, so that the first
    // Decrypts of each KEK unwrap it concurrently, in batches with the
    // foreign KEKs Vault refuses.
    let maker = Plugin::start(
        dir.path(),
        &bao.addr,
        &bao.token,
        &["--local-kek", "--local-kek-max-uses", "64"],
    );
    let mc = maker.client();
    const CALLERS: usize = 64;
    const ROUNDS: usize = 3;
    const STEPS: usize = 13;
    struct Mine {
        pt: Vec<u8>,
        v2: v2::EncryptResponse,
        v1: Vec<u8>,
        /// Another KEK of the maker's, wrapped.
        swapped: String,
        /// 32 random bytes that transit key `other` (not served) wrapped.
        foreign: String,
    }
    let mut mine: Vec<Vec<Mine>> = (0..CALLERS)
        .map(|caller| {
            let other = bao.write(
                "transit/encrypt/other",
                serde_json::json!({ "plaintext": b64().encode(dek()) }),
            );
            let foreign = other["data"]["ciphertext"].as_str().unwrap().to_owned();
            (0..ROUNDS)
                .map(|round| {
                    let pt = own_dek(caller, round);
                    let v2 = encrypt_v2(&mc, &pt).unwrap();
                    let v1 = encrypt_v1(&mc, &pt).unwrap();
                    let foreign = foreign.clone();
                    let swapped = String::new(); // below, once all KEKs are known
                    Mine {
                        pt,
                        v2,
                        v1,
                        swapped,
                        foreign,
                    }
                })
                .collect()
        })
        .collect();
    let keks: HashSet<String> = mine.iter().flatten().map(|m| wrapped_v2(&m.v2)).collect();
    assert_eq!(keks.len(), (CALLERS * ROUNDS * 2).div_ceil(64));
    for m in mine.iter_mut().flatten() {
        let own = wrapped_v2(&m.v2);
        m.swapped = keks.iter().find(|k| **k != own).unwrap().clone();
    }
    let mine: Vec<Arc<Vec<Mine>>> = mine.into_iter().map(Arc::new).collect();

    let proxy = FaultProxy::start(&bao.addr);
    proxy.set_delay(Duration::from_millis(10));
    let dir2 = TempDir::new("lkek-mix-serve");
    let p = Plugin::start(dir2.path(), &proxy.addr, &bao.token, &["--local-kek"]);
    let c = Arc::new(p.client());
    let requests = {
        let c = c.clone();
        callers_at_once(&mine, STEPS, move |caller, round, m, case| {
            let (ct, kid) = (&m.v2.ciphertext, &m.v2.key_id);
            let own = wrapped_v2(&m.v2);
            let (_, own_v1, sealed_v1) = v1_parts(&m.v1);
            let other_kid = kid.replace("transit/kube:", "transit/other:");
            let mut requests = 1;
            let who = format!("caller {caller} round {round} case {case}");
            // Every bad case: INVALID_ARGUMENT, and why.
            let refused = |r: grpcio::Result<Vec<u8>>, why: &str| {
                let (code, msg) = rpc_err(r);
                assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{who}: {msg}");
                assert!(msg.contains(why), "{who}: {msg:?} lacks {why:?}");
            };
            // Callers take the cases in different orders.
            match case {
                0 => assert_eq!(open_v2(&c, &m.v2).expect(&who), m.pt),
                1 => refused(
                    decrypt_v2_with(&c, &flipped(ct, caller + round), kid, &m.v2.annotations),
                    NOT_AUTHENTIC,
                ),
                2 => refused(decrypt_v2_with(&c, ct, kid, &annotated(&m.swapped)), NOT_AUTHENTIC),
                // `other`'s wrapping under this plugin's key: Vault's check with `kube` fails.
                3 => refused(decrypt_v2_with(&c, ct, kid, &annotated(&m.foreign)), "HTTP 400"),
                4 => refused(
                    decrypt_v2_with(&c, ct, &other_kid, &m.v2.annotations),
                    "belongs to transit key transit/other",
                ),
                5 => assert_eq!(decrypt_v1(&c, &m.v1).expect(&who), m.pt),
                6 => refused(
                    decrypt_v1(&c, &v1_cipher("transit/kube", &own_v1, &flipped(&sealed_v1, caller))),
                    NOT_AUTHENTIC,
                ),
                7 => refused(
                    decrypt_v1(&c, &v1_cipher("transit/kube", &m.swapped, &sealed_v1)),
                    NOT_AUTHENTIC,
                ),
                8 => refused(
                    decrypt_v1(&c, &v1_cipher("transit/kube", &m.foreign, &sealed_v1)),
                    "HTTP 400",
                ),
                9 => refused(
                    decrypt_v1(&c, &v1_cipher("transit/other", &m.foreign, &sealed_v1)),
                    "belongs to transit key transit/other",
                ),
                // A v2 sealed DEK as v1, and a v1 one as v2.
                10 => refused(decrypt_v1(&c, &v1_cipher("transit/kube", &own, ct)), NOT_AUTHENTIC),
                11 => refused(decrypt_v2_with(&c, &sealed_v1, kid, &annotated(&own_v1)), NOT_AUTHENTIC),
                _ => {
                    let e = encrypt_v2(&c, &m.pt).expect(&who);
                    assert_eq!(open_v2(&c, &e).expect(&who), m.pt, "{who}");
                    requests += 1;
                }
            }
            requests
        })
    };
    let u = unwraps(&p);
    eprintln!(
        "{requests} requests, {} transit calls, {u} unwraps of {} KEKs",
        proxy.requests(),
        keks.len()
    );
    assert_eq!(requests, CALLERS * ROUNDS * (STEPS + 1));
    // 64 callers asked for each KEK at once: one unwrap each, the others
    // waited for it; later rounds found them cached.
    assert_eq!(u, keks.len() as f64, "unwraps for {} KEKs", keks.len());
    for m in mine.iter().flat_map(|m| m.iter()) {
        assert_eq!(open_v2(&c, &m.v2).unwrap(), m.pt);
        assert_eq!(decrypt_v1(&c, &m.v1).unwrap(), m.pt);
    }
    assert_eq!(unwraps(&p), u, "all KEKs cached");
}

#[test]
fn the_flag_off_opens_local_kek_ciphertexts_and_the_flag_on_opens_transit_ones() {
    let dir = TempDir::new("lkek-on");
    let bao = Bao::dev(dir.path());
    let on = Plugin::start(dir.path(), &bao.addr, &bao.token, &["--local-kek"]);
    let dir2 = TempDir::new("lkek-off");
    let off = Plugin::start(dir2.path(), &bao.addr, &bao.token, &[]);
    let (con, coff) = (on.client(), off.client());
    let pt = dek();

    let local = encrypt_v2(&con, &pt).unwrap();
    let local_v1 = encrypt_v1(&con, &pt).unwrap();
    assert!(local_v1.starts_with(V1_PREFIX.as_bytes()));
    assert_eq!(open_v2(&coff, &local).unwrap(), pt);
    assert_eq!(decrypt_v1(&coff, &local_v1).unwrap(), pt);
    assert_eq!(unwraps(&off), 1.0, "one KEK sealed both");
    // Without its annotation the sealed DEK is no transit ciphertext.
    let (code, msg) = rpc_err(decrypt_v2(&coff, &local.ciphertext, &local.key_id));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{msg}");

    let plain = encrypt_v2(&coff, &pt).unwrap();
    assert!(plain.ciphertext.starts_with(b"vault:v1:") && plain.annotations.is_empty());
    let plain_v1 = encrypt_v1(&coff, &pt).unwrap();
    assert!(plain_v1.starts_with(b"vault-transit:transit/kube:vault:v1:"));
    assert_eq!(decrypt_v2(&con, &plain.ciphertext, &plain.key_id).unwrap(), pt);
    assert_eq!(decrypt_v1(&con, &plain_v1).unwrap(), pt);
    // A bare Vault ciphertext (as older plugins stored) too.
    let r = bao.write(
        "transit/encrypt/kube",
        serde_json::json!({ "plaintext": b64().encode(&pt) }),
    );
    let bare = r["data"]["ciphertext"].as_str().unwrap();
    assert_eq!(decrypt_v1(&con, bare.as_bytes()).unwrap(), pt);
    assert_eq!(unwraps(&on), 0.0);
}

#[test]
fn a_kek_due_while_vault_is_down_fails_encrypt_and_status_until_it_is_back() {
    let dir = TempDir::new("lkek-outage");
    let bao = Bao::dev(dir.path());
    let proxy = FaultProxy::start(&bao.addr);
    let p = Plugin::start(
        dir.path(),
        &proxy.addr,
        &bao.token,
        &["--local-kek", "--local-kek-max-uses", "3", "--vault-timeout", "1s"],
    );
    let c = p.client();
    assert_eq!(status(&c).healthz, "ok");
    let made = seal_n(&c, 3, false);

    proxy.set_mode(ProxyMode::Cut);
    // The KEK is held: its DEKs still open without Vault.
    open_all(&c, &made);
    let t = Instant::now();
    let (code, msg) = rpc_err(encrypt_v2(&c, &dek()));
    assert!(t.elapsed() < DEADLINE, "took {:?}", t.elapsed());
    assert_eq!(code, RpcStatusCode::UNAVAILABLE, "{msg}");
    assert!(msg.contains(&proxy.addr), "{msg}");
    let t = Instant::now();
    let why = wait_for("Status to fail", Duration::from_secs(10), || {
        let s = status(&c);
        (s.healthz != "ok").then_some(s.healthz)
    });
    eprintln!("Status failing after {:?}: {why}", t.elapsed());
    let readyz = agent().get(format!("{}/readyz", p.http)).call().unwrap();
    assert_eq!(readyz.status().as_u16(), 503);
    assert_eq!(metric_sum(&p, "trousseau_ready "), 0.0);

    proxy.set_mode(ProxyMode::Forward);
    let t = Instant::now();
    wait_for("Status to recover", Duration::from_secs(15), || {
        (status(&c).healthz == "ok").then_some(())
    });
    eprintln!("Status ok again after {:?}", t.elapsed());
    // The health check made the KEK, not an Encrypt.
    assert_eq!(rotations(&p, "uses"), 1.0);
    assert_eq!(metric_sum(&p, "trousseau_ready "), 1.0);
    let pt = dek();
    let e = encrypt_v2(&c, &pt).unwrap();
    assert_ne!(wrapped_v2(&e), made[0].1.wrapped());
    assert_eq!(rotations(&p, "uses"), 1.0);
    assert_eq!(rotations(&p, "start"), 1.0);
    assert_eq!(open_v2(&c, &e).unwrap(), pt);
    open_all(&c, &made);
}
