//! What a hostile environment or a hostile answer must not get out of the
//! plugin: secrets in its logs at any level, traffic sent to a proxy it was
//! not told to use, a token sent to where a redirect points.

use crate::harness::*;
use std::time::Duration;

/// The plugin's `/metrics` text.
fn metrics_of(p: &Plugin) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let url = format!("{}/metrics", p.http);
    agent.get(&url).call().unwrap().body_mut().read_to_string().unwrap()
}

/// The proxy variables HTTP clients commonly honour, both spellings.
const PROXY_VARS: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// At `RUST_LOG=trace` (what the harness always sets), a v2 and a v1 round
/// trip and a Status leave no token, plaintext or DEK in the log, in any
/// form. (ureq-proto's trace output hex-dumps every byte sent, the token
/// header and the transit body included, unless the plugin caps it.)
#[test]
fn trace_logging_shows_no_secret() {
    let dir = TempDir::new("trace-log");
    let bao = Bao::dev(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let c = p.client();
    round_trip_v2(&c);
    let pt = b"a v1 plaintext of some length, secret".to_vec();
    let cipher = encrypt_v1(&c, &pt).unwrap();
    assert_eq!(decrypt_v1(&c, &cipher).unwrap(), pt);
    assert_eq!(status(&c).healthz, "ok");
    let log = p.log_text();
    // The log is at trace: our own debug lines are there.
    assert!(log.contains("op=encrypt"), "{log}");
    p.assert_no_secrets_in_log();
}

/// HTTPS_PROXY, HTTP_PROXY and ALL_PROXY pointing at a listener of ours
/// are ignored: the listener sees no connection, the round trip works, and
/// the log says the variables were ignored.
#[test]
fn ambient_proxy_variables_are_ignored() {
    let dir = TempDir::new("ambient-proxy");
    let bao = Bao::dev(dir.path());
    let trap = Recorder::start();
    let env: Vec<(&str, &str)> = PROXY_VARS.iter().map(|v| (*v, trap.addr.as_str())).collect();
    let p = Plugin::start_with_env(dir.path(), &bao.addr, &bao.token, &[], &env);
    let c = p.client();
    round_trip_v2(&c);
    assert_eq!(status(&c).healthz, "ok");
    assert_eq!(trap.connections(), 0, "the plugin used an ambient proxy");
    let log = p.log_text();
    assert!(log.contains("set but ignored"), "{log}");
}

/// `--vault-proxy` is used for every call (the CONNECT proxy of ours sees
/// the tunnels) and named in the start-up log.
#[test]
fn an_explicit_vault_proxy_is_used() {
    let dir = TempDir::new("vault-proxy");
    let bao = Bao::dev(dir.path());
    let proxy = ConnectProxy::start();
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &["--vault-proxy", &proxy.addr]);
    let c = p.client();
    round_trip_v2(&c);
    assert!(proxy.tunnels() >= 1, "no tunnel through --vault-proxy");
    let log = p.log_text();
    assert!(log.contains(&format!("through the proxy {}", proxy.addr)), "{log}");
}

/// A 307 to an address that is not a configured node is not followed: a
/// listener of ours behind the redirect sees no connection (so neither
/// the token nor a DEK), the call fails over to the next configured node,
/// and the log says why the redirect was refused.
#[test]
fn a_redirect_to_an_unconfigured_host_is_not_followed() {
    let dir = TempDir::new("redirect-away");
    let bao = Bao::dev(dir.path());
    let trap = Recorder::start();
    let redirector = Redirector::start(&trap.addr);
    let addrs = format!("{},{}", redirector.addr, bao.addr);
    let p = Plugin::start(dir.path(), &addrs, &bao.token, &[]);
    let c = p.client();
    round_trip_v2(&c);
    assert!(redirector.requests() >= 1, "the redirector was never asked");
    assert_eq!(trap.connections(), 0, "followed a redirect to {}", trap.addr);
    assert!(!String::from_utf8_lossy(&trap.received()).contains(&bao.token));
    let log = p.log_text();
    assert!(log.contains("not a configured node"), "{log}");
}

/// Anything v1 Encrypt returns, v1 Decrypt accepts: the largest plaintext
/// v1 takes round trips, one byte more is refused before any Vault call,
/// and the plugin keeps serving.
#[test]
fn v1_limits_agree_between_encrypt_and_decrypt() {
    let dir = TempDir::new("v1-limits");
    let bao = Bao::dev(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let c = p.client();
    let max = trousseau::limits::V1_MAX_PLAINTEXT;
    let pt: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
    let cipher = encrypt_v1(&c, &pt).expect("the largest v1 plaintext");
    assert!(
        cipher.len() <= trousseau::limits::V1_MAX_CIPHER,
        "{} bytes",
        cipher.len()
    );
    assert_eq!(decrypt_v1(&c, &cipher).expect("decrypt of what encrypt returned"), pt);
    let (code, msg) = rpc_err(encrypt_v1(&c, &vec![7u8; max + 1]));
    assert_eq!(code, grpcio::RpcStatusCode::INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains(&max.to_string()), "{msg}");
    round_trip_v2(&c);
}

/// With Vault at an IP literal (as every test here has it), a hundred
/// calls start no DNS lookup thread at all: `/metrics` counts none.
#[test]
fn ip_literal_nodes_need_no_lookup_thread() {
    let dir = TempDir::new("no-dns");
    let bao = Bao::dev(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let c = p.client();
    for _ in 0..50 {
        round_trip_v2(&c);
    }
    let text = metrics_of(&p);
    assert!(text.contains("trousseau_vault_dns_lookups_total 0\n"), "{text}");
}

/// Under umask 000 the socket is still never reachable by another user:
/// it is bound inside a private 0700 directory (what /proc/<pid>/net/unix
/// shows as its bound path), restricted to 0600 there, and only then
/// renamed into place; the staging directory is gone afterwards.
#[test]
fn the_socket_is_bound_privately_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("umask");
    let bao = Bao::dev(dir.path());
    let run = dir.path().join("run");
    let socket = run.join("kms.sock");
    let log_path = dir.path().join("plugin-umask.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let http = format!("127.0.0.1:{}", free_port());
    let mut child = std::process::Command::new("sh")
        .args(["-c", "umask 000 && exec \"$0\" \"$@\"", plugin_bin(), "serve"])
        .arg("--socket")
        .arg(&socket)
        .args(["--transit-key", "kube", "--http-addr", &http])
        .env_clear()
        .env("VAULT_ADDR", &bao.addr)
        .env("VAULT_TOKEN", &bao.token)
        .env("RUST_LOG", "debug")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_for("socket under umask 000", Duration::from_secs(30), || {
        socket.exists().then_some(())
    });
    let mode = std::fs::symlink_metadata(&socket).unwrap().permissions().mode() & 0o777;
    let mut entries: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    let lock_mode = std::fs::metadata(run.join("kms.sock.lock")).map(|m| m.permissions().mode() & 0o777);
    let unix = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap_or_default();
    let run_prefix = run.to_str().unwrap().to_owned();
    let bound: Vec<String> = unix
        .lines()
        .filter_map(|l| l.split_whitespace().nth(7))
        .filter(|p| p.starts_with(&run_prefix))
        .map(str::to_owned)
        .collect();
    let c = KmsClient::connect(&socket, DEADLINE);
    let served = encrypt_v2(&c, &dek()).is_ok();
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert_eq!(mode, 0o600, "socket mode under umask 000; log:\n{log}");
    // The socket and its lock file (socket::claim), nothing else.
    assert_eq!(
        entries,
        vec!["kms.sock".to_owned(), "kms.sock.lock".to_owned()],
        "staging left behind"
    );
    assert_eq!(lock_mode.ok(), Some(0o600), "lock file mode under umask 000");
    assert!(
        !bound.is_empty() && bound.iter().all(|p| p.contains("/.trousseau-")),
        "bound at {bound:?}, not in a private directory"
    );
    assert!(served, "no Encrypt through the published socket; log:\n{log}");
}

/// A symlink at the socket path is refused, and its target is untouched.
#[test]
fn a_symlink_at_the_socket_path_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("symlink-socket");
    let bao = Bao::dev(dir.path());
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let target = dir.path().join("precious");
    std::fs::write(&target, b"keep me").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    let socket = run.join("kms.sock");
    std::os::unix::fs::symlink(&target, &socket).unwrap();
    let mut p = Plugin::spawn(dir.path(), &socket, &bao.addr, &bao.token, &[]);
    let st = p.wait_exit(Duration::from_secs(20));
    assert!(!st.success());
    let log = p.log_text();
    assert!(log.contains("is not a socket"), "{log}");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o644);
    assert!(std::fs::symlink_metadata(&socket).unwrap().file_type().is_symlink());
}

/// 64 clients that connect and drip a byte at a time (reconnecting when
/// cut off) do not starve the HTTP endpoints: `/livez` keeps answering 200
/// within kubelet's 1 s probe timeout throughout.
#[test]
fn livez_answers_under_64_slow_clients() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = TempDir::new("slow-http");
    let bao = Bao::dev(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let hostport = p.http.trim_start_matches("http://").to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let drippers: Vec<_> = (0..64)
        .map(|_| {
            let (stop, hostport) = (stop.clone(), hostport.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = std::net::TcpStream::connect(&hostport) else {
                        continue;
                    };
                    for b in b"GET /livez HTTP/1.1\r\n".iter().cycle() {
                        if stop.load(Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut answers = Vec::new();
    for _ in 0..10 {
        let t = std::time::Instant::now();
        let got = std::net::TcpStream::connect(&hostport).ok().and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
            s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head).ok()?;
            Some(String::from_utf8_lossy(&head).into_owned())
        });
        answers.push((got, t.elapsed()));
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for d in drippers {
        let _ = d.join();
    }
    for (got, took) in &answers {
        assert_eq!(got.as_deref(), Some("HTTP/1.1 200"), "answers {answers:?}");
        assert!(*took < Duration::from_secs(1), "answers {answers:?}");
    }
}

/// A node that answers 200 with a body that is not JSON (a proxy's or load
/// balancer's page) is skipped like a failing one: the call fails over to
/// the next configured node.
#[test]
fn a_success_status_with_a_garbage_body_fails_over() {
    let dir = TempDir::new("garbled-2xx");
    let bao = Bao::dev(dir.path());
    let page = Recorder::start_answering(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 21\r\nconnection: close\r\n\r\n<html>welcome</html>\n",
    );
    let addrs = format!("{},{}", page.addr, bao.addr);
    let p = Plugin::start(dir.path(), &addrs, &bao.token, &[]);
    let c = p.client();
    round_trip_v2(&c);
    assert!(page.connections() >= 1, "the garbling node was never tried");
    let log = p.log_text();
    assert!(log.contains("not JSON"), "{log}");
}

/// The signature grpcio's Marshaller requires (`&T` with `T = Vec<u8>`).
#[allow(clippy::ptr_arg)]
fn raw_ser(v: &Vec<u8>, buf: &mut grpcio::GrpcSlice) -> grpcio::Result<()> {
    *buf = grpcio::GrpcSlice::from(v.clone());
    Ok(())
}

fn raw_de(mut r: grpcio::MessageReader) -> grpcio::Result<Vec<u8>> {
    use std::io::Read;
    let mut v = Vec::new();
    r.read_to_end(&mut v).map_err(|e| grpcio::Error::Codec(Box::new(e)))?;
    Ok(v)
}

/// v2 Encrypt with raw bytes as its message, whatever they are.
const RAW_V2_ENCRYPT: grpcio::Method<Vec<u8>, Vec<u8>> = grpcio::Method {
    ty: grpcio::MethodType::Unary,
    name: "/v2.KeyManagementService/Encrypt",
    req_mar: grpcio::Marshaller {
        ser: raw_ser,
        de: raw_de,
    },
    resp_mar: grpcio::Marshaller {
        ser: raw_ser,
        de: raw_de,
    },
};

/// A request that is not a valid protobuf message gets an error at once,
/// is counted (`outcome="malformed"`) and logged, and the plugin keeps
/// serving.
#[test]
fn a_malformed_protobuf_is_counted_and_logged() {
    let dir = TempDir::new("malformed-pb");
    let bao = Bao::dev(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let env = std::sync::Arc::new(grpcio::EnvBuilder::new().cq_count(1).build());
    let ch = grpcio::ChannelBuilder::new(env).connect(&format!("unix:{}", p.socket.display()));
    let raw = grpcio::Client::new(ch);
    // Field 1 (plaintext) claims 16 bytes and carries one.
    let r = raw.unary_call(
        &RAW_V2_ENCRYPT,
        &vec![0x0a, 0x10, 0x01],
        grpcio::CallOption::default().timeout(DEADLINE),
    );
    let (code, msg) = rpc_err(r);
    assert_ne!(code, grpcio::RpcStatusCode::DEADLINE_EXCEEDED, "{msg}");
    round_trip_v2(&p.client());
    let text = metrics_of(&p);
    assert!(
        text.contains(r#"trousseau_kms_requests_total{api="v2",operation="encrypt",outcome="malformed"} 1"#),
        "{text}"
    );
    let log = p.log_text();
    assert!(log.contains("op=encrypt outcome=malformed"), "{log}");
}

/// VAULT_TOKEN is read once at start and is then gone from the process's
/// environment as `/proc/<pid>/environ` shows it (what the same user, root
/// and a core dump see): the name stays, its value bytes are zero. The
/// plugin still serves with the token it read.
#[test]
fn the_token_is_erased_from_proc_environ() {
    let dir = TempDir::new("environ");
    let bao = Bao::dev(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let environ = std::fs::read(format!("/proc/{}/environ", p.pid())).unwrap();
    let entries: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    assert!(
        entries.iter().any(|e| *e == b"VAULT_TOKEN="),
        "no emptied VAULT_TOKEN entry in {:?}",
        String::from_utf8_lossy(&environ).replace(&bao.token, "<token>")
    );
    assert!(
        !environ.windows(bao.token.len()).any(|w| w == bao.token.as_bytes()),
        "the token is still in /proc/{}/environ",
        p.pid()
    );
    // Other variables are left as they were.
    assert!(entries.iter().any(|e| e.starts_with(b"RUST_LOG=")), "RUST_LOG went too");
    round_trip_v2(&p.client());
    assert!(!p.log_text().contains("stays readable"), "{}", p.log_text());
}

/// A transit key deleted and created again under the same name starts
/// again at v1; its key ids still differ from the dead key's (they carry
/// the version's creation time), Status reports the new one within one
/// health check, and the log says what happened. Key ids in the form
/// earlier releases wrote (no creation time) still decrypt.
#[test]
fn a_recreated_key_gets_new_key_ids() {
    let dir = TempDir::new("recreated-key");
    let bao = Bao::dev(dir.path());
    let token = bao.token_with_policy("kms", PLUGIN_POLICY);
    let p = Plugin::start(dir.path(), &bao.addr, &token, &[]);
    let c = p.client();
    let pt = dek();
    let first = encrypt_v2(&c, &pt).unwrap();
    let (head, created) = first
        .key_id
        .split_once('@')
        .unwrap_or_else(|| panic!("{}", first.key_id));
    assert_eq!(head, "vault-transit:transit/kube:v1");
    assert!(created.parse::<u64>().unwrap() > 1_700_000_000, "{created}");
    assert_eq!(status(&c).key_id, first.key_id);
    assert_eq!(decrypt_v2(&c, &first.ciphertext, head).unwrap(), pt, "old-form key id");

    // Vault keeps creation times in whole seconds.
    std::thread::sleep(Duration::from_millis(1100));
    vault_ok(
        &bao.addr,
        &bao.token,
        "POST",
        "transit/keys/kube/config",
        Some(serde_json::json!({ "deletion_allowed": true })),
    );
    vault_ok(&bao.addr, &bao.token, "DELETE", "transit/keys/kube", None);
    bao.create_key("kube");

    // Within one health check (HEALTHY_CHECK_TTL, 10 s) Status moves on.
    let t = std::time::Instant::now();
    let fresh = loop {
        let id = status(&c).key_id;
        if id != first.key_id {
            break id;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "Status still reports {id}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(fresh.starts_with("vault-transit:transit/kube:v1@"), "{fresh}");
    let second = encrypt_v2(&c, &pt).unwrap();
    assert_eq!(second.key_id, fresh, "Encrypt and Status agree");
    assert_eq!(decrypt_v2(&c, &second.ciphertext, &second.key_id).unwrap(), pt);
    assert!(
        p.log_text().contains("was deleted and created again"),
        "{}",
        p.log_text()
    );
}

/// With a policy from an earlier release (no read on the key), key ids
/// keep the form without a creation time, Status agrees with Encrypt, and
/// one warning names what to grant.
#[test]
fn without_read_on_the_key_ids_keep_the_old_form() {
    let dir = TempDir::new("no-key-read");
    let bao = Bao::dev(dir.path());
    let token = bao.token_with_policy(
        "kms-old",
        "path \"transit/encrypt/kube\" { capabilities = [\"update\"] }\n\
         path \"transit/decrypt/kube\" { capabilities = [\"update\"] }\n",
    );
    let p = Plugin::start(dir.path(), &bao.addr, &token, &[]);
    let c = p.client();
    let pt = dek();
    let e = encrypt_v2(&c, &pt).unwrap();
    assert_eq!(e.key_id, "vault-transit:transit/kube:v1");
    assert_eq!(decrypt_v2(&c, &e.ciphertext, &e.key_id).unwrap(), pt);
    let s = status(&c);
    assert_eq!((s.healthz.as_str(), s.key_id.as_str()), ("ok", e.key_id.as_str()));
    round_trip_v2(&c);
    let log = p.log_text();
    let warned = log.matches("grant \"read\" on transit/keys/kube").count();
    assert_eq!(warned, 1, "{log}");
}
