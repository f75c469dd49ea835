//! Command line: turns raw arguments into a command with a resolved config
//! in one step, runs it, and turns any error into one stderr line and an
//! exit code (0 ok, 1 failed while running, 2 bad usage or configuration).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use crate::config::{self, Config, Sources};

const VERSION_LINE: &str = concat!("trousseau ", env!("CARGO_PKG_VERSION"));

const HELP: &str = "\
trousseau: Kubernetes KMS plugin (KMS v2 and v1beta1) backed by Vault/OpenBao transit

kube-apiserver sends each data key (DEK) over a Unix socket; trousseau has Vault's
transit engine encrypt it with a key that never leaves Vault.

USAGE:
    trousseau serve --transit-key NAME [OPTIONS]   serve both KMS APIs on a Unix socket
    trousseau check --transit-key NAME [OPTIONS]   preflight: Vault, auth, key, encrypt, decrypt
                                                   (same options as serve)
    trousseau probe [--socket PATH]                call a running plugin as the apiserver does
    trousseau --version | --help

Run `trousseau serve --help` for every serve option.
";

const SERVE_HELP: &str = "\
trousseau serve: serve KMS v2 and v1beta1 on a Unix socket
trousseau check: with the same options, check step by step that serve would work
(Vault reachable and unsealed, TLS, authentication, the transit key, encrypt,
decrypt, a round trip, each --decrypt-key); prints what to fix; exits 1 on failure

Each option can be given as a flag, in the JSON file named by --config (same key
without the dashes, e.g. {\"transit-key\": \"kube\"}), or for some through the
environment. Precedence: flag, then environment, then file, then default.

OPTIONS:
    --socket PATH            Unix socket to serve on; `unix://` prefix accepted. A lock
                             on PATH.lock beside it keeps a second plugin off the path
                             [default: /var/run/kmsplugin/kms.sock]
    --vault-addr URL[,URL]   Vault/OpenBao address, e.g. https://vault:8200; repeat it or
                             separate with commas to list every node of a cluster: the
                             node that answers is preferred, and a down, sealed or
                             failing node is skipped within the same request
                             [env: VAULT_ADDR]
    --transit-mount NAME     transit secrets engine mount  [default: transit]
    --transit-key NAME       transit key that encrypts DEKs (required)
    --decrypt-key NAME       an older transit key (same mount) whose ciphertexts must
                             keep decrypting after --transit-key changed; repeatable

  Authentication (the session is checked at start, renewed before it expires,
  and renewed by a new login when renewal is refused or the max TTL is near):
    --auth-method METHOD     token, approle, cert, jwt or kubernetes  [default: token]
    --auth-mount PATH        where the auth method is mounted  [default: the method's name]
    --auth-role NAME         role to log in as (jwt and kubernetes: required; cert: optional)
    --vault-token-file PATH  token method: file holding the token, re-read when it
                             changes (Vault Agent sink); else VAULT_TOKEN is used
    --approle-role-id-file PATH    approle: file holding the role_id
    --approle-secret-id-file PATH  approle: file holding the secret_id (re-read at each login)
    --jwt-file PATH          jwt: file holding the JWT; kubernetes: the service-account
                             token [default for kubernetes:
                             /var/run/secrets/kubernetes.io/serviceaccount/token]

  TLS and namespaces:
    --vault-namespace NS     Vault Enterprise namespace  [env: VAULT_NAMESPACE]
    --vault-cacert PATH      PEM CA bundle that signed Vault's certificate  [env: VAULT_CACERT]
    --vault-client-cert PATH PEM client certificate presented to Vault (cert auth or a
                             listener that requires one)  [env: VAULT_CLIENT_CERT]
    --vault-client-key PATH  its PEM private key  [env: VAULT_CLIENT_KEY]
    --vault-tls-server-name NAME
                             verify Vault's certificate for NAME instead of the
                             address's host  [env: VAULT_TLS_SERVER_NAME]
    --vault-skip-verify      do not verify Vault's TLS certificate (dangerous; logged
                             loudly)  [env: VAULT_SKIP_VERIFY]
    --vault-proxy URL        reach Vault through this HTTP proxy (http://host:port);
                             without it no proxy is used, whatever HTTPS_PROXY,
                             HTTP_PROXY or ALL_PROXY say  [env: VAULT_PROXY_ADDR]

  Limits:
    --vault-timeout DUR      budget for one request's Vault work (all nodes tried and a
                             retry after a fresh login included), e.g. 2s or 500ms; keep it
                             below the EncryptionConfiguration timeout (3s default)
                             [default: 2s]
    --max-in-flight N        requests handled at once; more get RESOURCE_EXHAUSTED
                             [default: 256]
    --coalesce[=BOOL]        send concurrent Encrypts (or Decrypts) for one key that
                             arrive while its transit calls are in flight as one
                             batch_input call; a request alone goes out at once,
                             and so does one whose budget cannot afford the wait;
                             false sends every request alone [default: true]
    --local-kek[=BOOL]       seal DEKs in the plugin with a random AES-256-GCM key
                             kept in memory and wrapped once by transit: no Vault
                             call per Encrypt; see docs/local-kek.md [default: false]
    --local-kek-max-uses N   DEKs one local KEK seals before a new one is made
                             [default: 1000000]
    --local-kek-max-age DUR  age at which a new local KEK is made  [default: 60m]
    --shutdown-timeout DUR   time in-flight requests get to finish after SIGTERM
                             [default: 5s]
    --http-addr IP:PORT      serve /livez, /readyz, /healthz and /metrics there; empty
                             turns them off  [default: 127.0.0.1:8787]
    --config FILE            JSON file with any of the keys above, each at most once

ENVIRONMENT:
    VAULT_TOKEN              token method: the token (when --vault-token-file is not given)
    RUST_LOG                 log level: error, warn, info (default), debug, trace;
                             the HTTP and TLS libraries never log below info

The Vault token needs only \"update\" on <mount>/encrypt/<key> and <mount>/decrypt/<key>
(and on <mount>/decrypt/<old> for each --decrypt-key), plus Vault's default policy
(auth/token/lookup-self and renew-self).
Tokens, DEKs and plaintexts never appear in logs or error messages.

EXAMPLE:
    VAULT_ADDR=https://vault:8200 VAULT_TOKEN=... \\
      trousseau serve --transit-key kube --socket /var/run/kmsplugin/kms.sock
";

const PROBE_HELP: &str = "\
trousseau probe: call a running plugin as kube-apiserver would

Runs v2 Status, Encrypt and Decrypt of a random 32-byte DEK, then v1beta1 Version,
Encrypt and Decrypt, printing one line per step. Exits non-zero if any step fails.

OPTIONS:
    --socket PATH     plugin socket  [default: /var/run/kmsplugin/kms.sock]
    --timeout DUR     deadline per call, like the apiserver's  [default: 3s]
";

/// A usage or configuration error (exit 2) or a runtime failure (exit 1).
enum Failure {
    Usage(String),
    Runtime(String),
}

/// Entry point for `main`: returns the process exit code.
pub fn run(args: Vec<OsString>) -> i32 {
    // serve logs its life at info; the one-shot commands print their own
    // report and log only warnings.
    let serving = args.first().is_some_and(|a| a == "serve");
    crate::logging::init(if serving { "info" } else { "warn" });
    match run_inner(args) {
        Ok(()) => 0,
        Err(Failure::Usage(m)) => {
            eprintln!("trousseau: {m}");
            2
        }
        Err(Failure::Runtime(m)) => {
            eprintln!("trousseau: {m}");
            1
        }
    }
}

fn run_inner(args: Vec<OsString>) -> Result<(), Failure> {
    let mut args: Vec<String> = args
        .into_iter()
        .map(|a| {
            a.into_string()
                .map_err(|a| Failure::Usage(format!("argument {a:?} is not valid UTF-8")))
        })
        .collect::<Result<_, _>>()?;
    if args.is_empty() {
        print!("{HELP}");
        return Err(Failure::Usage("no command given".into()));
    }
    let cmd = args.remove(0);
    match cmd.as_str() {
        "--version" | "-V" | "version" => {
            println!("{VERSION_LINE}");
            Ok(())
        }
        "--help" | "-h" | "help" => {
            print!("{HELP}");
            Ok(())
        }
        "serve" | "check" => {
            if wants_help(&args) {
                print!("{SERVE_HELP}");
                return Ok(());
            }
            let flags = parse_flags(&args, &["vault-skip-verify", "coalesce", "local-kek"])?;
            let env = |k: &str| std::env::var(k).ok();
            let cfg = Config::resolve(&Sources {
                flags: &flags,
                env: &env,
            })
            .map_err(|e| Failure::Usage(e.to_string()))?;
            // Read once into the config; gone from /proc/<pid>/environ from
            // here on (before any thread starts).
            if let crate::environ::Scrubbed::UnsetOnly(why) = crate::environ::scrub("VAULT_TOKEN") {
                log::warn!(
                    "VAULT_TOKEN was unset but stays readable in /proc/self/environ ({why}); prefer --vault-token-file"
                );
            }
            // Right after the scrub (which writes /proc/self/mem, closed to
            // a non-root process once it is non-dumpable) and before any
            // credential file is read or any thread starts: no core dump,
            // and no ptrace or /proc/<pid>/mem by another uid.
            if let Err(e) = crate::hardening::make_non_dumpable() {
                log::warn!("{e}; a core dump or another process of this uid could read the token");
            }
            if cmd == "check" {
                return crate::tools::check::run(&cfg).map_err(Failure::Runtime);
            }
            crate::daemon::serve(cfg).map_err(|e| Failure::Runtime(e.to_string()))
        }
        "probe" => {
            if wants_help(&args) {
                print!("{PROBE_HELP}");
                return Ok(());
            }
            let flags = parse_flags(&args, &[])?;
            let mut socket = PathBuf::from(config::DEFAULT_SOCKET);
            let mut timeout = crate::limits::APISERVER_DEFAULT_DEADLINE;
            for (k, v) in &flags {
                match k.as_str() {
                    "socket" => {
                        socket = config::parse_socket(v).map_err(|m| Failure::Usage(format!("--socket: {m}")))?
                    }
                    "timeout" => {
                        timeout = config::parse_duration(v).map_err(|m| Failure::Usage(format!("--timeout: {m}")))?
                    }
                    other => {
                        return Err(Failure::Usage(format!(
                            "unknown flag --{other} (see `trousseau probe --help`)"
                        )))
                    }
                }
            }
            crate::tools::probe::run(&socket, timeout).map_err(Failure::Runtime)
        }
        other => Err(Failure::Usage(format!(
            "unknown command {other:?} (see `trousseau --help`)"
        ))),
    }
}

fn wants_help(args: &[String]) -> bool {
    args.iter().any(|a| a == "--help" || a == "-h")
}

/// `--key value` and `--key=value` pairs; `bool_keys` may stand alone
/// (meaning true). A key given twice is an error, not a silent override.
fn parse_flags(args: &[String], bool_keys: &[&str]) -> Result<BTreeMap<String, String>, Failure> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(flag) = a.strip_prefix("--") else {
            return Err(Failure::Usage(format!(
                "unexpected argument {a:?}; options look like --key value"
            )));
        };
        let (key, value) = match flag.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None if bool_keys.contains(&flag) => (flag.to_owned(), "true".to_owned()),
            None => match it.next() {
                Some(v) => (flag.to_owned(), v.clone()),
                None => return Err(Failure::Usage(format!("--{flag} needs a value"))),
            },
        };
        if key.is_empty() {
            return Err(Failure::Usage(format!("malformed option {a:?}")));
        }
        match out.get_mut(&key) {
            Some(prev) if config::MULTI_KEYS.contains(&key.as_str()) => {
                prev.push(',');
                prev.push_str(&value);
            }
            Some(_) => return Err(Failure::Usage(format!("--{key} given more than once"))),
            None => {
                out.insert(key, value);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn flags_forms() {
        let f = parse_flags(
            &s(&["--socket", "/a", "--transit-key=k", "--vault-skip-verify"]),
            &["vault-skip-verify"],
        )
        .ok()
        .unwrap();
        assert_eq!(f.get("socket").unwrap(), "/a");
        assert_eq!(f.get("transit-key").unwrap(), "k");
        assert_eq!(f.get("vault-skip-verify").unwrap(), "true");
    }

    #[test]
    fn flags_errors() {
        let msg = |r: Result<BTreeMap<String, String>, Failure>| match r {
            Err(Failure::Usage(m)) => m,
            _ => panic!("expected a usage error"),
        };
        assert!(msg(parse_flags(&s(&["--socket"]), &[])).contains("needs a value"));
        assert!(msg(parse_flags(&s(&["stray"]), &[])).contains("unexpected argument"));
        assert!(msg(parse_flags(&s(&["--a", "1", "--a", "2"]), &[])).contains("more than once"));
        let f = parse_flags(&s(&["--vault-addr", "http://a:1", "--vault-addr=http://b:1"]), &[])
            .ok()
            .unwrap();
        assert_eq!(
            f.get("vault-addr").unwrap(),
            "http://a:1,http://b:1",
            "repeatable keys accumulate"
        );
        assert!(msg(parse_flags(&s(&["--=x"]), &[])).contains("malformed"));
    }

    #[test]
    fn help_mentions_every_config_key() {
        for (k, _) in config::KEYS {
            assert!(
                SERVE_HELP.contains(&format!("--{k}")),
                "--{k} missing from serve --help"
            );
        }
    }
}
