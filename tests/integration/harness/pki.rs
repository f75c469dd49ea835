//! A throwaway PKI made with the openssl CLI: a CA, server certs for an
//! OpenBao TLS listener, a client cert for cert auth, and an unrelated CA.

use std::path::{Path, PathBuf};
use std::process::Command;

/// PEM files in `dir`; keys are unencrypted PKCS#8 ("PRIVATE KEY").
pub struct Pki {
    pub ca: PathBuf,
    /// Server cert with SANs IP:127.0.0.1, DNS:localhost and DNS:`dns_name`.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// Server cert with the single SAN DNS:`dns_name` (no IP, no localhost):
    /// reached as https://127.0.0.1, it verifies only under that name.
    pub dns_only_cert: PathBuf,
    pub dns_only_key: PathBuf,
    /// Client cert (CN `trousseau-plugin`, EKU clientAuth) from the same CA.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A second CA that signed nothing here: the wrong CA to pin.
    pub other_ca: PathBuf,
    pub dns_name: String,
}

pub const CLIENT_CN: &str = "trousseau-plugin";

impl Pki {
    pub fn new(dir: &Path, dns_name: &str) -> Pki {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        let p = |n: &str| dir.join(n);
        let (ca, ca_key) = (p("ca.pem"), p("ca.key"));
        self_signed_ca(&ca, &ca_key, "trousseau test CA");
        let (other_ca, other_key) = (p("other-ca.pem"), p("other-ca.key"));
        self_signed_ca(&other_ca, &other_key, "unrelated test CA");

        // webpki (rustls) and Go both want a CA:FALSE leaf with a fitting EKU
        // and names only in subjectAltName (the CN is ignored).
        let leaf = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                    subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";
        let server_ext =
            format!("{leaf}extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:{dns_name}\n");
        let dns_only_ext = format!("{leaf}extendedKeyUsage=serverAuth\nsubjectAltName=DNS:{dns_name}\n");
        let client_ext = format!("{leaf}extendedKeyUsage=clientAuth\n");
        let pki = Pki {
            server_cert: p("server.pem"),
            server_key: p("server.key"),
            dns_only_cert: p("dns-only.pem"),
            dns_only_key: p("dns-only.key"),
            client_cert: p("client.pem"),
            client_key: p("client.key"),
            ca,
            other_ca,
            dns_name: dns_name.to_owned(),
        };
        let sign =
            |cert: &Path, key: &Path, cn: &str, ext: &str| signed_leaf(&dir, &pki.ca, &ca_key, cert, key, cn, ext);
        sign(&pki.server_cert, &pki.server_key, "openbao test server", &server_ext);
        sign(&pki.dns_only_cert, &pki.dns_only_key, dns_name, &dns_only_ext);
        sign(&pki.client_cert, &pki.client_key, CLIENT_CN, &client_ext);
        pki
    }

    /// A client that trusts only this CA and, if asked, presents the client
    /// cert: the harness's own check of what the plugin must do.
    pub fn agent(&self, with_client_cert: bool) -> ureq::Agent {
        use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
        let ca = Certificate::from_pem(&std::fs::read(&self.ca).unwrap()).unwrap();
        let mut tls = TlsConfig::builder().root_certs(RootCerts::new_with_certs(&[ca]));
        if with_client_cert {
            let cert = Certificate::from_pem(&std::fs::read(&self.client_cert).unwrap()).unwrap();
            let key = PrivateKey::from_pem(&std::fs::read(&self.client_key).unwrap()).unwrap();
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
        }
        ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(10)))
            .build()
            .into()
    }
}

/// Runs openssl; panics with its stderr on failure.
pub(crate) fn openssl(args: &[String]) {
    let out = Command::new("openssl").args(args).output().expect("openssl CLI");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn strs(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// `openssl req` arguments for a new unencrypted P-256 key written to `key`.
fn new_p256_key(key: &Path) -> Vec<String> {
    let mut a = strs(&[
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
    ]);
    a.push(path(key));
    a
}

fn self_signed_ca(cert: &Path, key: &Path, cn: &str) {
    let mut a = strs(&["req", "-x509"]);
    a.extend(new_p256_key(key));
    a.extend(strs(&[
        "-days",
        "2",
        "-subj",
        &format!("/CN={cn}"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        &path(cert),
    ]));
    openssl(&a);
}

fn signed_leaf(dir: &Path, ca: &Path, ca_key: &Path, cert: &Path, key: &Path, cn: &str, ext: &str) {
    let stem = cert.file_stem().unwrap().to_string_lossy().into_owned();
    let (csr, ext_file) = (dir.join(format!("{stem}.csr")), dir.join(format!("{stem}.ext")));
    std::fs::write(&ext_file, ext).unwrap();
    let mut a = strs(&["req", "-new"]);
    a.extend(new_p256_key(key));
    a.extend(strs(&["-subj", &format!("/CN={cn}"), "-out", &path(&csr)]));
    openssl(&a);
    // A random serial: two certs from one CA must not share one.
    let serial = trousseau::tools::probe::random_dek().unwrap()[..8]
        .iter()
        .fold(String::from("0x"), |s, b| s + &format!("{b:02x}"));
    openssl(&strs(&[
        "x509",
        "-req",
        "-in",
        &path(&csr),
        "-CA",
        &path(ca),
        "-CAkey",
        &path(ca_key),
        "-set_serial",
        &serial,
        "-days",
        "2",
        "-extfile",
        &path(&ext_file),
        "-out",
        &path(cert),
    ]));
}
