//! Certificates made at test time by the real `openssl`, and `curl` and
//! `openssl s_client` to talk to a listener through them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The names every certificate here is valid for.
pub const SAN: &str = "subjectAltName=IP:127.0.0.1,DNS:assignd.example.com";

/// A private key's algorithm and the PEM form its file takes.
#[derive(Debug, Clone, Copy)]
pub enum KeyKind {
    /// `BEGIN PRIVATE KEY`, what `openssl req -newkey ec` writes.
    EcPkcs8,
    /// `BEGIN EC PRIVATE KEY`.
    EcSec1,
    RsaPkcs8,
    /// `BEGIN RSA PRIVATE KEY`.
    RsaPkcs1,
}

/// A certificate (chain) file, its key file, and the certificate a client
/// trusts to accept it.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// Runs `openssl ARGS` in `dir`; panics with its output unless it succeeds.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl {args:?}: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn newkey(kind: KeyKind) -> Vec<&'static str> {
    match kind {
        KeyKind::EcPkcs8 | KeyKind::EcSec1 => {
            vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        }
        KeyKind::RsaPkcs8 | KeyKind::RsaPkcs1 => vec!["-newkey", "rsa:2048"],
    }
}

/// A self-signed certificate `name` (CN), valid for [`SAN`], in `dir`.
pub fn self_signed(dir: &Path, name: &str, kind: KeyKind) -> Pair {
    let (cert, key) = (format!("{name}.crt"), format!("{name}.key"));
    let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
    args.extend(newkey(kind));
    let subj = format!("/CN={name}");
    args.extend([
        "-keyout", &key, "-out", &cert, "-subj", &subj, "-addext", SAN,
    ]);
    openssl(dir, &args);
    reform_key(dir, &key, kind);
    Pair {
        cert: dir.join(&cert),
        key: dir.join(&key),
        ca: dir.join(&cert),
    }
}

/// A leaf `name` signed by a CA of its own: the cert file holds the leaf
/// and then the CA, as certbot's `fullchain.pem` does; clients trust the CA.
pub fn chain(dir: &Path, name: &str) -> Pair {
    let ca = self_signed(dir, &format!("{name}-ca"), KeyKind::EcPkcs8);
    let (leaf, key, csr) = (
        format!("{name}.leaf.crt"),
        format!("{name}.key"),
        format!("{name}.csr"),
    );
    let mut args = vec!["req", "-new", "-nodes"];
    args.extend(newkey(KeyKind::EcPkcs8));
    let subj = format!("/CN={name}");
    args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
    openssl(dir, &args);
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(&ext, format!("{SAN}\n")).unwrap();
    let (ca_cert, ca_key) = (ca.cert.to_str().unwrap(), ca.key.to_str().unwrap());
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            ca_cert,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &leaf,
            "-extfile",
            ext.to_str().unwrap(),
        ],
    );
    let full = dir.join(format!("{name}.crt"));
    let text = std::fs::read_to_string(dir.join(&leaf)).unwrap()
        + &std::fs::read_to_string(&ca.cert).unwrap();
    std::fs::write(&full, text).unwrap();
    Pair {
        cert: full,
        key: dir.join(&key),
        ca: ca.cert,
    }
}

/// Rewrites a PKCS#8 key file in the older form `kind` asks for.
fn reform_key(dir: &Path, key: &str, kind: KeyKind) {
    match kind {
        KeyKind::EcSec1 => openssl(dir, &["ec", "-in", key, "-out", key]),
        KeyKind::RsaPkcs1 => openssl(dir, &["rsa", "-in", key, "-traditional", "-out", key]),
        KeyKind::EcPkcs8 | KeyKind::RsaPkcs8 => {}
    }
}

/// What curl got: whether it succeeded, the status, the body, HTTP version.
#[derive(Debug)]
pub struct Reply {
    pub ok: bool,
    pub status: u16,
    pub version: String,
    pub body: String,
    pub stderr: String,
}

/// `curl ARGS` (silent, errors shown, at most `max_time` s).
pub async fn curl(max_time: u64, args: &[&str]) -> Reply {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", &max_time.to_string()])
        .args(["-w", "\n%{http_code} %{http_version}"])
        .args(args)
        .output()
        .await
        .expect("curl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, last) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let mut last = last.split(' ');
    Reply {
        ok: out.status.success(),
        status: last.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        version: last.next().unwrap_or("").to_string(),
        body: body.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// GET `url` trusting only `ca`.
pub async fn get(ca: &Path, url: &str) -> Reply {
    curl(15, &["--cacert", ca.to_str().unwrap(), url]).await
}

/// What a TLS client sees at `addr` (host:port): the served certificate's
/// subject and the ALPN protocol agreed when it offers h2 and http/1.1.
pub async fn handshake_info(addr: &str) -> String {
    let script = format!(
        "openssl s_client -connect {addr} -servername assignd.example.com -alpn h2,http/1.1 \
         </dev/null 2>/dev/null | tee /dev/stderr | openssl x509 -noout -subject; true"
    );
    let out = tokio::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}
