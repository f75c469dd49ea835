//! What other local users and processes on the node can do to a running
//! plugin (issue 21): starve its HTTP endpoints, race it for its socket,
//! swap a FIFO in for its token file, read its memory; and a config file
//! that says one thing twice.

use crate::harness::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// kubelet's default probe timeout (`timeoutSeconds: 1`).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// One GET as a probe sends it: the status line, or why there was none,
/// and how long it took. Everything is bounded by `limit`.
fn probe(hostport: &str, path: &str, limit: Duration) -> (Result<String, String>, Duration) {
    let t = Instant::now();
    let got = (|| {
        let addr = hostport.parse().map_err(|e| format!("{e}"))?;
        let mut s = TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("connect: {e}"))?;
        let left = limit.saturating_sub(t.elapsed()).max(Duration::from_millis(1));
        s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: kube-probe/1.33\r\n\r\n").as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).map_err(|e| format!("read: {e}"))?;
        Ok(String::from_utf8_lossy(&head).into_owned())
    })();
    (got, t.elapsed())
}

/// 400 clients that reconnect in a loop and each send a partial request
/// head (held until the plugin closes it) do not starve `/livez`: asked 36
/// times meanwhile, it answers 200 each time within kubelet's 1 s probe
/// timeout.
#[test]
fn livez_answers_while_400_clients_hold_partial_heads() {
    let dir = TempDir::new("livez-flood");
    let bao = Bao::dev(dir.path());
    let p = Plugin::start(dir.path(), &bao.addr, &bao.token, &[]);
    let hostport = p.http.trim_start_matches("http://").to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let connections = Arc::new(AtomicU64::new(0));
    let flood: Vec<_> = (0..400)
        .map(|_| {
            let (stop, hostport, n) = (stop.clone(), hostport.clone(), connections.clone());
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let addr = hostport.parse().unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
                            std::thread::sleep(Duration::from_millis(1));
                            continue;
                        };
                        n.fetch_add(1, Ordering::Relaxed);
                        if s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n").is_err() {
                            continue;
                        }
                        // Hold the connection until the plugin closes it.
                        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                        let mut sink = [0u8; 256];
                        while !stop.load(Ordering::Relaxed) {
                            match s.read(&mut sink) {
                                Ok(0) => break,
                                Ok(_) => {}
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                                Err(_) => break,
                            }
                        }
                    }
                })
                .unwrap()
        })
        .collect();
    // Let the flood fill whatever it can fill.
    std::thread::sleep(Duration::from_millis(1500));
    let before = connections.load(Ordering::Relaxed);
    let started = Instant::now();
    let answers: Vec<_> = (0..36)
        .map(|_| {
            let a = probe(&hostport, "/livez", PROBE_TIMEOUT);
            std::thread::sleep(Duration::from_millis(100));
            a
        })
        .collect();
    let flood_rate = (connections.load(Ordering::Relaxed) - before) as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in flood {
        let _ = t.join();
    }
    let ok = answers
        .iter()
        .filter(|(r, took)| r.as_deref() == Ok("HTTP/1.1 200") && *took < PROBE_TIMEOUT)
        .count();
    let slowest = answers.iter().map(|(_, t)| *t).max().unwrap_or_default();
    eprintln!("/livez under the flood ({flood_rate:.0} connections/s): {ok} of 36 answered 200 within 1 s, slowest {slowest:?}");
    // kubelet restarts a container after failureThreshold (3 by default)
    // failed probes in a row. A single probe can still meet the kernel's
    // listen backlog full under 40,000 connections/s on 2 shared cores (a
    // dropped SYN is resent after 1 s: seen once, 35 of 36 in a CI run);
    // the old plugin answered none.
    let mut run = 0;
    let mut worst_run = 0;
    for (r, took) in &answers {
        let good = r.as_deref() == Ok("HTTP/1.1 200") && *took < PROBE_TIMEOUT;
        run = if good { 0 } else { run + 1 };
        worst_run = worst_run.max(run);
    }
    assert!(
        worst_run < 3 && ok >= 33,
        "{ok} of 36, {worst_run} failed in a row: {answers:?}"
    );
    // And after it, the plugin is still whole.
    assert_eq!(
        probe(&hostport, "/readyz", Duration::from_secs(3)).0.as_deref(),
        Ok("HTTP/1.1 200")
    );
}

/// Plugin A drains after SIGTERM while its replacement B starts on the same
/// path: B serves, and A, when its drain ends, leaves B's socket alone.
#[test]
fn a_draining_plugin_leaves_its_successors_socket_alone() {
    let dir = TempDir::new("handover");
    let bao = Bao::dev(dir.path());
    let proxy = FaultProxy::start(&bao.addr);
    let sock = dir.path().join("run/kms.sock");
    let a_args = [
        "--transit-key",
        "kube",
        "--vault-timeout",
        "5s",
        "--shutdown-timeout",
        "10s",
    ];
    let mut a = Plugin::spawn_raw(dir.path(), &sock, &proxy.addr, &bao.token, &a_args);
    a.wait_for_socket();
    let ca = Arc::new(KmsClient::connect(&sock, Duration::from_secs(8)));
    assert_eq!(status(&ca).healthz, "ok");
    // A's requests now wait on a Vault that answers after 10 s: A's
    // drain lasts until its 5 s Vault budget runs out.
    proxy.set_delay(Duration::from_secs(10));
    let held: Vec<_> = (0..2)
        .map(|_| {
            let ca = ca.clone();
            std::thread::spawn(move || encrypt_v2(&ca, &dek()).is_ok())
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    a.signal("TERM");
    wait_for("A draining", Duration::from_secs(10), || {
        a.log_text().contains("received SIGTERM").then_some(())
    });
    let mut b = Plugin::spawn_raw(dir.path(), &sock, &bao.addr, &bao.token, &["--transit-key", "kube"]);
    wait_for("B serving", Duration::from_secs(20), || {
        if let Some(st) = b.try_exit() {
            panic!("B exited with {st}:\n{}", b.log_text());
        }
        b.log_text().contains("serving KMS v2").then_some(())
    });
    assert!(
        a.try_exit().is_none(),
        "A finished draining before B served; the test proves nothing"
    );
    let st = a.wait_exit(Duration::from_secs(20));
    assert!(st.success(), "A: {st}\n{}", a.log_text());
    for h in held {
        let _ = h.join();
    }
    assert!(
        sock.exists(),
        "A removed B's socket when its drain ended:\n{}",
        a.log_text()
    );
    let cb = b.client();
    round_trip_v2(&cb);
    assert_eq!(status(&cb).healthz, "ok");
}

/// Two plugins started at the same moment on one path: one serves, the
/// other exits saying why, in every trial; stopping the one that serves
/// removes the socket.
#[test]
fn two_plugins_started_at_once_never_both_serve() {
    let dir = TempDir::new("two-at-once");
    let bao = Bao::dev(dir.path());
    for trial in 0..8 {
        let sock = dir.path().join(format!("t{trial}/kms.sock"));
        let args = ["--transit-key", "kube"];
        let mut both = [
            Plugin::spawn_raw(dir.path(), &sock, &bao.addr, &bao.token, &args),
            Plugin::spawn_raw(dir.path(), &sock, &bao.addr, &bao.token, &args),
        ];
        let t = Instant::now();
        let loser = loop {
            if let Some(i) = (0..2).find(|&i| both[i].try_exit().is_some()) {
                break i;
            }
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "trial {trial}: both plugins still run on {} after 15 s:\n{}\n---\n{}",
                sock.display(),
                both[0].log_text(),
                both[1].log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let [p0, p1] = &mut both;
        let (l, w) = if loser == 0 { (p0, p1) } else { (p1, p0) };
        let st = l.wait_exit(Duration::from_secs(1));
        assert!(!st.success(), "trial {trial}: {st}");
        let why = l.log_text();
        assert!(
            why.contains("another process is serving on") || why.contains("without serving on"),
            "trial {trial}: {why}"
        );
        w.wait_for_socket();
        round_trip_v2(&w.client());
        assert!(w.try_exit().is_none(), "trial {trial}: the winner exited too");
        w.signal("TERM");
        assert!(w.wait_exit(Duration::from_secs(15)).success());
        assert!(!sock.exists(), "trial {trial}: socket left behind");
    }
}

/// A named pipe renamed over `--vault-token-file` of a running plugin
/// blocks nothing: Encrypt, Status, `/readyz` and `/metrics` answer with the
/// last good token, the log says why the file was not used, and a regular
/// file with a new token put back afterwards is used (the old token is
/// revoked first, so only the new one can succeed).
#[test]
fn a_fifo_swapped_in_as_the_token_file_blocks_nothing() {
    let dir = TempDir::new("fifo-token");
    let bao = Bao::dev(dir.path());
    let hcl = transit_policy(&["kube"], &["kube"]);
    let first = token_with(&bao, "kms-fifo", &hcl, "1h");
    let file = dir.path().join("vault-token");
    write_atomic(&file, &first);
    let p = Plugin::start(
        dir.path(),
        &bao.addr,
        "",
        &["--vault-token-file", &file.display().to_string()],
    );
    let c = p.client();
    round_trip_v2(&c);
    let hostport = p.http.trim_start_matches("http://").to_owned();

    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    std::fs::rename(&fifo, &file).unwrap();
    let t = Instant::now();
    let e = encrypt_v2(&c, &dek());
    let took_encrypt = t.elapsed();
    assert!(
        e.is_ok(),
        "Encrypt with a FIFO as the token file: {e:?} after {took_encrypt:?}"
    );
    let t = Instant::now();
    assert_eq!(status(&c).healthz, "ok");
    let took_status = t.elapsed();
    for path in ["/readyz", "/metrics"] {
        let (got, took) = probe(&hostport, path, Duration::from_secs(3));
        assert_eq!(got.as_deref(), Ok("HTTP/1.1 200"), "{path} after {took:?}");
    }
    round_trip_v2(&c);
    assert!(
        p.log_text().contains("named pipe (FIFO), not a regular file"),
        "{}",
        p.log_text()
    );
    eprintln!("with a FIFO as the token file: Encrypt {took_encrypt:?}, Status {took_status:?}");

    let second = token_with(&bao, "kms-fifo", &hcl, "1h");
    write_atomic(&file, &second);
    revoke_token(&bao, &first);
    round_trip_v2(&c);
    assert!(p.log_text().contains("changed; using the new token"));
}

/// A config file that gives a key twice stops the plugin at start (exit 2)
/// with a message naming the key; nothing is served.
#[test]
fn a_config_file_with_a_duplicated_key_is_refused() {
    let dir = TempDir::new("dup-key");
    let cfg = dir.path().join("trousseau.json");
    std::fs::write(
        &cfg,
        "{\n  \"transit-key\": \"kube\",\n  \"vault-timeout\": \"2s\",\n  \"transit-key\": \"other\"\n}\n",
    )
    .unwrap();
    let sock = dir.path().join("kms.sock");
    let out = Command::new(plugin_bin())
        .args(["serve", "--config", &cfg.display().to_string(), "--http-addr", ""])
        .args(["--socket", &sock.display().to_string()])
        .env_clear()
        // A closed port: a plugin that accepted the file fails fast here.
        .env("VAULT_ADDR", format!("http://127.0.0.1:{}", free_port()))
        .env("VAULT_TOKEN", "s.dup-key-test")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("key \"transit-key\" appears more than once"), "{err}");
    assert!(err.contains(&cfg.display().to_string()), "{err}");
    assert!(!sock.exists());
}

/// Kills and reaps a child started outside the harness, by its pid.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The running plugin is non-dumpable: the kernel then gives its
/// `/proc/<pid>/` entries to root whatever uid it runs as, and refuses
/// other uids ptrace, `mem` and `environ`, and writes no core dump. Run as
/// `nobody` when the test is root (else as the test's own uid), so the
/// owner tells the two states apart. The token is still erased from the
/// environment block (the scrub runs before the process turns
/// non-dumpable, while it may still write its own `/proc/self/mem`).
#[test]
fn the_plugin_is_not_dumpable() {
    use std::os::unix::process::CommandExt;
    let dir = TempDir::new("dumpable");
    let bao = Bao::dev(dir.path());
    let me = std::fs::metadata("/proc/self").unwrap().uid();
    let uid = if me == 0 { 65534 } else { me };
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::os::unix::fs::chown(&run, Some(uid), Some(uid)).unwrap();
    let sock = run.join("kms.sock");
    let log = dir.path().join("plugin.log");
    let f = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(plugin_bin());
    cmd.args(["serve", "--transit-key", "kube", "--http-addr", ""])
        .args(["--socket", &sock.display().to_string()])
        .env_clear()
        .env("VAULT_ADDR", &bao.addr)
        .env("VAULT_TOKEN", &bao.token)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f);
    if me == 0 {
        cmd.uid(uid).gid(uid);
    }
    let mut child = Reaped(cmd.spawn().unwrap());
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("plugin socket", Duration::from_secs(30), || {
        if let Ok(Some(st)) = child.0.try_wait() {
            panic!("plugin exited with {st}:\n{}", read_log());
        }
        sock.exists().then_some(())
    });
    let pid = child.0.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or_default();
    assert!(
        uid_line.split_whitespace().nth(1) == Some(&uid.to_string()),
        "{uid_line}"
    );
    for entry in ["environ", "mem", "maps"] {
        let owner = std::fs::metadata(format!("/proc/{pid}/{entry}")).unwrap().uid();
        assert_eq!(
            owner, 0,
            "/proc/{pid}/{entry} belongs to uid {owner}: the plugin (uid {uid}) is dumpable"
        );
    }
    if me == 0 {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        assert!(
            !String::from_utf8_lossy(&environ).contains(bao.token.as_str()),
            "the token is still in /proc/{pid}/environ"
        );
    }
    round_trip_v2(&KmsClient::connect(&sock, DEADLINE));
    let text = read_log();
    assert!(
        !text.contains("stays readable") && !text.contains("PR_SET_DUMPABLE"),
        "{text}"
    );
    drop(child);
}

/// A named pipe as `--vault-cacert` (or a client certificate or key) stops
/// the plugin at start with a message naming the file, at once; an open of
/// the FIFO would wait for a writer for good. (Configuration refuses what is
/// not a regular file, and the PEM reader opens without blocking besides,
/// for a file swapped between the two.)
#[test]
fn a_fifo_as_a_pem_file_is_refused_at_start_without_blocking() {
    let dir = TempDir::new("fifo-pem");
    let fifo = dir.path().join("ca.pem");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let sock = dir.path().join("kms.sock");
    let child = Command::new(plugin_bin())
        .args(["serve", "--transit-key", "kube", "--http-addr", ""])
        .args(["--socket", &sock.display().to_string()])
        .args(["--vault-cacert", &fifo.display().to_string()])
        .env_clear()
        .env("VAULT_ADDR", format!("https://127.0.0.1:{}", free_port()))
        .env("VAULT_TOKEN", "s.fifo-pem-test")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reaped(child);
    let status = wait_for("the plugin to exit", Duration::from_secs(10), || {
        child.0.try_wait().unwrap()
    });
    let mut err = String::new();
    child.0.stderr.as_mut().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains(&fifo.display().to_string()), "{err}");
    assert!(!sock.exists());
}
