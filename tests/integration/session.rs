//! Session keeping against a real OpenBao: short-lived AppRole tokens under
//! load, a token file replaced and the old token revoked, a secret_id
//! rotated on disk, and transit key migration with --decrypt-key.

use crate::harness::*;
use grpcio::RpcStatusCode;
use std::path::Path;
use std::time::{Duration, Instant};

const LOGIN: &str = "auth/approle/login";
const RENEW: &str = "auth/token/renew-self";

fn spawn_with(dir: &Path, addr: &str, token: &str, args: &[String]) -> Plugin {
    let sock = dir.join("run/kms.sock");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut p = Plugin::spawn_raw(dir, &sock, addr, token, &args);
    p.wait_for_socket();
    p
}

fn approle_args(role: &AppRole, key: &str) -> Vec<String> {
    let mut a = vec!["--transit-key".to_owned(), key.to_owned()];
    a.extend(role.plugin_args());
    a
}

fn assert_no_failures(what: &str, outs: &[Outcome]) {
    let f = Figures(outs);
    eprintln!("[{what}] {}", f.summary());
    assert_eq!(f.wrong(), 0, "[{what}] wrong plaintexts");
    assert!(f.ok() > 0, "[{what}] no round trip at all");
    assert_eq!(f.failed(), 0, "[{what}] failures: {:?}", f.error_samples());
}

/// Tokens live 4 s and at most 10 s: over 30 s of load the plugin must
/// renew and log in again several times without a single failed request.
#[test]
fn approle_token_churn_under_load() {
    let dir = TempDir::new("churn");
    let (bao, audit) = Bao::dev_audited(dir.path());
    let audit = AuditLog(audit);
    let role = AppRole::setup(
        &bao,
        dir.path(),
        "kms-churn",
        &transit_policy(&["kube"], &["kube"]),
        serde_json::json!({"token_ttl": "4s", "token_max_ttl": "10s"}),
    );
    let mut p = spawn_with(dir.path(), &bao.addr, "", &approle_args(&role, "kube"));
    let load = Load::start(&p.socket, 4);
    load.run_for(Duration::from_secs(30));
    let outs = load.stop();
    assert!(p.try_exit().is_none(), "the plugin exited:\n{}", p.log_text());
    let logins = audit.ok_responses(LOGIN);
    eprintln!(
        "[churn] logins ok {logins} failed {}; renewals ok {} failed {}",
        audit.failed_responses(LOGIN),
        audit.ok_responses(RENEW),
        audit.failed_responses(RENEW)
    );
    assert_no_failures("churn", &outs);
    // 30 s of successful requests with tokens that live at most 10 s.
    assert!(logins >= 3, "only {logins} logins in 30 s with a 10 s max TTL");
    // About one per max TTL; four clients logging in each on their own
    // would make several per cycle.
    assert!(
        logins <= 8,
        "{logins} logins in 30 s: concurrent requests must share one"
    );
    let secret_id = std::fs::read_to_string(&role.secret_id_file).unwrap();
    let log = p.log_text();
    assert!(!log.contains(secret_id.trim()), "secret_id in the log");
    assert!(!log.contains(&bao.token), "root token in the log");
}

/// Vault Agent replaces the token file by rename; the old token is revoked
/// right after. Twice, under load: no request fails.
#[test]
fn token_file_replaced_by_rename_then_old_token_revoked() {
    let dir = TempDir::new("tokfile");
    let bao = Bao::dev(dir.path());
    let hcl = transit_policy(&["kube"], &["kube"]);
    let first = token_with(&bao, "kms-file", &hcl, "1h");
    let file = dir.path().join("vault-token");
    write_atomic(&file, &first);
    let args = vec![
        "--transit-key".to_owned(),
        "kube".to_owned(),
        "--vault-token-file".to_owned(),
        file.display().to_string(),
    ];
    let mut p = spawn_with(dir.path(), &bao.addr, "", &args);
    let load = Load::start(&p.socket, 4);
    load.run_for(Duration::from_secs(3));
    let mut old = first;
    let mut tokens = vec![old.clone()];
    for (round, trailing) in [(1, ""), (2, "\n")] {
        let new = token_with(&bao, "kms-file", &hcl, "1h");
        write_atomic(&file, &format!("{new}{trailing}"));
        revoke_token(&bao, &old);
        let (s, _) = vault_call(&bao.addr, &old, "GET", "auth/token/lookup-self", None);
        assert_eq!(s, 403, "token of round {round} not revoked");
        load.run_for(Duration::from_secs(4));
        tokens.push(new.clone());
        old = new;
    }
    let outs = load.stop();
    assert!(p.try_exit().is_none(), "the plugin exited:\n{}", p.log_text());
    assert_no_failures("token file", &outs);
    let log = p.log_text();
    for t in &tokens {
        assert!(!log.contains(t.as_str()), "a token in the log");
    }
}

/// The secret_id on disk is replaced and the old one destroyed; once the
/// plugin's token is revoked it must log in again with the new secret_id.
#[test]
fn rotated_secret_id_is_read_at_the_next_login() {
    let dir = TempDir::new("secretid");
    let (bao, audit) = Bao::dev_audited(dir.path());
    let audit = AuditLog(audit);
    let role = AppRole::setup(
        &bao,
        dir.path(),
        "kms-sid",
        &transit_policy(&["kube"], &["kube"]),
        serde_json::json!({"token_ttl": "1h", "token_max_ttl": "2h"}),
    );
    let mut p = spawn_with(dir.path(), &bao.addr, "", &approle_args(&role, "kube"));
    let kc = p.client();
    round_trip_v2(&kc);
    assert_eq!(audit.ok_responses(LOGIN), 1, "one login for the first requests");

    let old = std::fs::read_to_string(&role.secret_id_file).unwrap();
    let new = role.new_secret_id(&bao);
    write_atomic(&role.secret_id_file, &new);
    role.destroy_secret_id(&bao, &old);
    let (s, _) = role.login(&bao, &old);
    assert!(s == 400 || s == 403, "the old secret_id still logs in: {s}");
    let failed_before = audit.failed_responses(LOGIN); // that check's own

    let accessors = accessors_with_policy(&bao, &role.policy);
    assert_eq!(accessors.len(), 1, "the plugin's token: {accessors:?}");
    revoke_accessor(&bao, &accessors[0]);

    let t = Instant::now();
    for _ in 0..10 {
        round_trip_v2(&kc);
    }
    let pt = dek();
    let cipher = encrypt_v1(&kc, &pt).unwrap();
    assert_eq!(decrypt_v1(&kc, &cipher).unwrap(), pt);
    eprintln!(
        "[secret_id] 11 round trips after the revocation in {:?}; logins ok {}, failed {} \
         (the test's own check with the destroyed secret_id: {failed_before})",
        t.elapsed(),
        audit.ok_responses(LOGIN),
        audit.failed_responses(LOGIN)
    );
    assert_eq!(audit.ok_responses(LOGIN), 2, "exactly one new login");
    assert_eq!(
        audit.failed_responses(LOGIN),
        failed_before,
        "the plugin tried the destroyed secret_id"
    );
    assert_eq!(status(&kc).healthz, "ok");
    assert!(p.try_exit().is_none());
    assert!(!p.log_text().contains(new.trim()), "secret_id in the log");
}

/// Moving to a new transit key: ciphertexts of the old key keep decrypting
/// with --decrypt-key, new ones use the new key, and without --decrypt-key
/// an old ciphertext is a clear INVALID_ARGUMENT, never a wrong plaintext.
#[test]
fn key_migration_with_decrypt_key() {
    let dir = TempDir::new("migrate");
    let bao = Bao::dev(dir.path());
    bao.create_key("old");
    bao.create_key("new");
    let pt = dek();

    let t_old = token_with(&bao, "kms-old", &transit_policy(&["old"], &["old"]), "1h");
    let p = spawn_with(dir.path(), &bao.addr, &t_old, &["--transit-key".into(), "old".into()]);
    let kc = p.client();
    let v2_old = encrypt_v2(&kc, &pt).unwrap();
    assert_eq!(key_id_base(&v2_old.key_id), "vault-transit:transit/old:v1");
    let v1_old = encrypt_v1(&kc, &pt).unwrap();
    assert!(v1_old.starts_with(b"vault-transit:transit/old:"));
    drop(p);

    // Decrypt only on `old`: the plugin must never encrypt with it again.
    let t_new = token_with(&bao, "kms-new", &transit_policy(&["new"], &["new", "old"]), "1h");
    let dir2 = TempDir::new("migrate-2");
    let args: Vec<String> = ["--transit-key", "new", "--decrypt-key", "old"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let p = spawn_with(dir2.path(), &bao.addr, &t_new, &args);
    let kc = p.client();
    assert_eq!(decrypt_v2(&kc, &v2_old.ciphertext, &v2_old.key_id).unwrap(), pt);
    assert_eq!(decrypt_v1(&kc, &v1_old).unwrap(), pt);
    let s = status(&kc);
    assert_eq!(s.healthz, "ok");
    assert_eq!(key_id_base(&s.key_id), "vault-transit:transit/new:v1");
    let e = encrypt_v2(&kc, &pt).unwrap();
    assert_eq!(key_id_base(&e.key_id), "vault-transit:transit/new:v1");
    assert_eq!(decrypt_v2(&kc, &e.ciphertext, &e.key_id).unwrap(), pt);
    let c1 = encrypt_v1(&kc, &pt).unwrap();
    assert!(
        c1.starts_with(b"vault-transit:transit/new:"),
        "{}",
        String::from_utf8_lossy(&c1)
    );
    assert_eq!(decrypt_v1(&kc, &c1).unwrap(), pt);
    drop(p);

    // Without --decrypt-key: refused, naming the key.
    let dir3 = TempDir::new("migrate-3");
    let p = spawn_with(dir3.path(), &bao.addr, &t_new, &["--transit-key".into(), "new".into()]);
    let kc = p.client();
    let (code, msg) = rpc_err(decrypt_v2(&kc, &v2_old.ciphertext, &v2_old.key_id));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("transit/old"), "{msg}");
    let (code, msg) = rpc_err(decrypt_v1(&kc, &v1_old));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("transit/old"), "{msg}");
    // The new key's ciphertexts are unaffected.
    assert_eq!(decrypt_v2(&kc, &e.ciphertext, &e.key_id).unwrap(), pt);
}

/// A token that is valid but whose policy refuses an operation is not
/// replaced: the plugin checks it with lookup-self, answers
/// PERMISSION_DENIED, and logs in no more (no token pile-up in Vault).
#[test]
fn policy_refusal_does_not_trigger_logins() {
    let dir = TempDir::new("policy-refusal");
    let (bao, audit) = Bao::dev_audited(dir.path());
    let audit = AuditLog(audit);
    // Encrypt allowed, decrypt not.
    let role = AppRole::setup(
        &bao,
        dir.path(),
        "kms-half",
        &transit_policy(&["kube"], &[]),
        serde_json::json!({"token_ttl": "1h"}),
    );
    let p = spawn_with(dir.path(), &bao.addr, "", &approle_args(&role, "kube"));
    let kc = p.client();
    let e = encrypt_v2(&kc, &dek()).unwrap();
    for _ in 0..20 {
        let (code, msg) = rpc_err(decrypt_v2(&kc, &e.ciphertext, &e.key_id));
        assert_eq!(code, RpcStatusCode::PERMISSION_DENIED, "{msg}");
        assert!(msg.contains("transit/decrypt/kube"), "{msg}");
    }
    let lookups = audit.ok_responses("auth/token/lookup-self");
    eprintln!(
        "[policy refusal] 20 denied decrypts: logins {}, lookup-self {lookups}",
        audit.ok_responses(LOGIN)
    );
    assert_eq!(audit.ok_responses(LOGIN), 1, "only the start-up login");
    // The start-up check plus at most one per second of denied requests.
    assert!(lookups <= 5, "{lookups} lookup-self calls");
}

/// A bare `vault:vN:` v1 cipher (stored by older plugins, naming no key)
/// of the old key still decrypts after the primary key changed, through
/// --decrypt-key; the primary key refuses it first, and Vault's
/// authenticated encryption means no wrong plaintext can come of that.
#[test]
fn bare_v1_cipher_of_an_old_key_decrypts_with_decrypt_key() {
    let dir = TempDir::new("bare-v1");
    let bao = Bao::dev(dir.path());
    bao.create_key("old");
    bao.create_key("new");
    let pt = dek();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&pt);
    let v = vault_ok(
        &bao.addr,
        &bao.token,
        "POST",
        "transit/encrypt/old",
        Some(serde_json::json!({ "plaintext": b64 })),
    );
    let bare = v["data"]["ciphertext"].as_str().unwrap().as_bytes().to_vec();
    assert!(bare.starts_with(b"vault:v1:"));

    let t = token_with(&bao, "kms-bare", &transit_policy(&["new"], &["new", "old"]), "1h");
    let args: Vec<String> = ["--transit-key", "new", "--decrypt-key", "old"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let p = spawn_with(dir.path(), &bao.addr, &t, &args);
    let kc = p.client();
    assert_eq!(decrypt_v1(&kc, &bare).unwrap(), pt);
    drop(p);

    let dir2 = TempDir::new("bare-v1-2");
    let p = spawn_with(dir2.path(), &bao.addr, &t, &["--transit-key".into(), "new".into()]);
    let (code, msg) = rpc_err(decrypt_v1(&p.client(), &bare));
    assert_eq!(code, RpcStatusCode::INVALID_ARGUMENT, "without --decrypt-key: {msg}");
}

/// The plugin's token is revoked while 8 clients keep calling: the requests
/// that meet the 403 share one check and one login, and none fails.
#[test]
fn revoked_token_under_concurrent_load_costs_one_login() {
    let dir = TempDir::new("revoke-concurrent");
    let (bao, audit) = Bao::dev_audited(dir.path());
    let audit = AuditLog(audit);
    let role = AppRole::setup(
        &bao,
        dir.path(),
        "kms-revoke",
        &transit_policy(&["kube"], &["kube"]),
        serde_json::json!({"token_ttl": "1h"}),
    );
    let mut p = spawn_with(dir.path(), &bao.addr, "", &approle_args(&role, "kube"));
    let load = Load::start(&p.socket, 8);
    load.run_for(Duration::from_secs(2));
    let accessors = accessors_with_policy(&bao, &role.policy);
    assert_eq!(accessors.len(), 1, "the plugin's token: {accessors:?}");
    revoke_accessor(&bao, &accessors[0]);
    load.run_for(Duration::from_secs(3));
    let outs = load.stop();
    assert!(p.try_exit().is_none(), "the plugin exited:\n{}", p.log_text());
    eprintln!("[revoke under load] logins ok {}", audit.ok_responses(LOGIN));
    assert_no_failures("revoke under load", &outs);
    assert_eq!(audit.ok_responses(LOGIN), 2, "the start-up login and exactly one more");
}
