//! A transit key's identity is (name, creation time, version): a key
//! rotated, then deleted and created again, or restored from an older
//! backup, moves Status and Encrypt to the new identity together, downwards
//! included, and with `--local-kek` a new KEK wraps what is sealed after it,
//! so a second plugin sharing the OpenBao (another control-plane node, or
//! this one after a restart) opens every DEK written since (issue 21, #3).

use std::time::{Duration, Instant};

use super::harness::*;

const ANNOTATION: &str = "local-kek.trousseau.io";

/// The `@<created>` of a key id, as a number.
fn created_of(key_id: &str) -> u64 {
    let (_, t) = key_id
        .split_once('@')
        .unwrap_or_else(|| panic!("no creation time in {key_id}"));
    t.parse().unwrap_or_else(|_| panic!("bad creation time in {key_id}"))
}

/// Status's key id once it differs from `old`, within one health check
/// and a margin (HEALTHY_CHECK_TTL is 10 s).
fn status_moves_on(c: &KmsClient, old: &str) -> String {
    let t = Instant::now();
    loop {
        let id = status(c).key_id;
        if id != old {
            return id;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "Status still reports {id} {:?} after the key changed",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Encrypts a fresh DEK on `writer`; checks that its key id is Status's
/// and, with the local KEK, that the KEK was wrapped by that version; then
/// opens it on `reader`.
fn written_and_read_elsewhere(writer: &KmsClient, reader: &KmsClient, expect_version: u64) -> String {
    let pt = dek();
    let e = encrypt_v2(writer, &pt).unwrap();
    let s = status(writer);
    assert_eq!(e.key_id, s.key_id, "Encrypt's key id must equal Status's");
    assert!(
        key_id_base(&e.key_id).ends_with(&format!(":v{expect_version}")),
        "{}",
        e.key_id
    );
    if let Some(w) = e.annotations.get(ANNOTATION) {
        let w = String::from_utf8_lossy(w);
        assert!(
            w.starts_with(&format!("vault:v{expect_version}:")),
            "KEK wrapped by a version the key no longer has: {}",
            &w[..w.len().min(12)]
        );
    }
    let got = decrypt_v2_with(reader, &e.ciphertext, &e.key_id, &e.annotations);
    assert_eq!(
        got.as_deref().map_err(|e| format!("{e:?}")),
        Ok(pt.as_slice()),
        "a second plugin cannot open a DEK written after the key changed"
    );
    e.key_id
}

fn delete_key(bao: &Bao, key: &str) {
    vault_ok(
        &bao.addr,
        &bao.token,
        "POST",
        &format!("transit/keys/{key}/config"),
        Some(serde_json::json!({ "deletion_allowed": true })),
    );
    vault_ok(&bao.addr, &bao.token, "DELETE", &format!("transit/keys/{key}"), None);
}

/// Two plugins on one OpenBao, with or without the local KEK.
fn two_plugins(flags: &[&str], before: impl FnOnce(&Bao)) -> (TempDir, TempDir, Bao, Plugin, Plugin) {
    let (da, db) = (TempDir::new("identity-a"), TempDir::new("identity-b"));
    let bao = Bao::dev(da.path());
    before(&bao);
    let a = Plugin::start(da.path(), &bao.addr, &bao.token, flags);
    let b = Plugin::start(db.path(), &bao.addr, &bao.token, flags);
    (da, db, bao, a, b)
}

fn a_key_deleted_after_rotations_and_created_again(flags: &[&str]) {
    let (_da, _db, bao, a, b) = two_plugins(flags, |bao| {
        bao.rotate("kube");
        bao.rotate("kube");
    });
    let (ca, cb) = (a.client(), b.client());
    let old = written_and_read_elsewhere(&ca, &cb, 3);

    // Vault keeps creation times in whole seconds.
    std::thread::sleep(Duration::from_millis(1100));
    delete_key(&bao, "kube");
    bao.create_key("kube");

    if flags.contains(&"--local-kek") {
        // Sealing makes no Vault call: without any Status call, the first
        // Encrypt after a health check's lifetime (HEALTHY_CHECK_TTL, 10 s)
        // must check the key again before it seals.
        std::thread::sleep(Duration::from_millis(10_500));
        written_and_read_elsewhere(&ca, &cb, 1);
    }
    let fresh = status_moves_on(&ca, &old);
    assert!(
        fresh.starts_with("vault-transit:transit/kube:v1@"),
        "Status must follow the key down to v1: {fresh}"
    );
    assert!(created_of(&fresh) > created_of(&old), "{fresh} vs {old}");
    written_and_read_elsewhere(&ca, &cb, 1);
    // And the other way round: B has noticed too, or does on its Encrypt.
    written_and_read_elsewhere(&cb, &ca, 1);
    a.assert_no_secrets_in_log();
}

#[test]
fn a_recreated_key_after_rotations_moves_status_and_encrypt_down_to_v1() {
    a_key_deleted_after_rotations_and_created_again(&[]);
}

#[test]
fn a_recreated_key_after_rotations_gets_a_new_local_kek_that_other_plugins_open() {
    a_key_deleted_after_rotations_and_created_again(&["--local-kek"]);
}

/// A key restored from a backup taken at v2, after it had reached v3:
/// v3 is gone, v2 (with its own creation time) is current again.
#[test]
fn a_key_restored_from_an_older_backup_is_followed_downwards() {
    let (_da, _db, bao, a, b) = two_plugins(&["--local-kek"], |_| {});
    let (ca, cb) = (a.client(), b.client());
    vault_ok(
        &bao.addr,
        &bao.token,
        "POST",
        "transit/keys/kube/config",
        Some(serde_json::json!({ "exportable": true, "allow_plaintext_backup": true })),
    );
    std::thread::sleep(Duration::from_millis(1100));
    bao.rotate("kube");
    let (_, backup) = vault_call(&bao.addr, &bao.token, "GET", "transit/backup/kube", None);
    let backup = backup["data"]["backup"]
        .as_str()
        .expect("transit/backup answered no backup")
        .to_owned();
    let v2 = written_and_read_elsewhere(&ca, &cb, 2);
    std::thread::sleep(Duration::from_millis(1100));
    bao.rotate("kube");
    let v3 = status_moves_on(&ca, &v2);
    assert!(key_id_base(&v3).ends_with(":v3"), "{v3}");
    written_and_read_elsewhere(&ca, &cb, 3);

    vault_ok(
        &bao.addr,
        &bao.token,
        "POST",
        "transit/restore/kube",
        Some(serde_json::json!({ "backup": backup, "force": true })),
    );
    let back = status_moves_on(&ca, &v3);
    assert_eq!(back, v2, "Status must go back to the restored v2's key id");
    written_and_read_elsewhere(&ca, &cb, 2);
    written_and_read_elsewhere(&cb, &ca, 2);
}
