//! Load errors: which file, what is wrong, and never the file's bytes.
//! A valid pair (and the handshake) is tested with openssl-made
//! certificates in tests/tls.rs.

use super::*;

/// Looks like a key's base64; must never appear in an error.
const SECRET: &str = "c2VjcmV0LWtleS1tYXRlcmlhbC1kby1ub3QtbG9n";

fn files(dir: &Path, cert: &str, key: &str) -> TlsFiles {
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, cert).unwrap();
    std::fs::write(&files.key, key).unwrap();
    files
}

fn error(cert: &str, key: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let err = ServerTls::load(files(dir.path(), cert, key))
        .err()
        .expect("must not load");
    let msg = err.to_string();
    assert!(!msg.contains(SECRET), "key material in: {msg}");
    msg
}

/// Well-formed PEM whose contents are not a certificate: it parses as a
/// block, and fails only where rustls reads it.
fn block(label: &str, body: &str) -> String {
    format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
}

#[test]
fn a_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = ServerTls::load(TlsFiles {
        cert: dir.path().join("absent.pem"),
        key: dir.path().join("key.pem"),
    })
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.starts_with("cannot read [http] tls_cert_file "),
        "{err}"
    );
    assert!(err.contains("absent.pem"), "{err}");
}

#[test]
fn a_cert_file_without_a_certificate_says_so() {
    let msg = error("not pem at all\n", &block("PRIVATE KEY", SECRET));
    assert!(msg.contains("tls_cert_file"), "{msg}");
    assert!(msg.contains("holds no PEM certificate"), "{msg}");
}

#[test]
fn malformed_pem_is_described_without_quoting_it() {
    let cert = block("CERTIFICATE", "AAAA");
    let unterminated = format!("-----BEGIN PRIVATE KEY-----\n{SECRET}\n");
    let msg = error(&cert, &unterminated);
    assert!(msg.contains("[http] tls_key_file"), "{msg}");
    assert!(msg.contains("no END line"), "{msg}");
    let not_base64 = block("PRIVATE KEY", &format!("{SECRET}!!!"));
    let msg = error(&cert, &not_base64);
    assert!(msg.contains("not valid base64"), "{msg}");
}

#[test]
fn a_key_file_without_a_key_says_which_kinds_are_read() {
    let msg = error(&block("CERTIFICATE", "AAAA"), &block("CERTIFICATE", "AAAA"));
    assert!(msg.contains("tls_key_file"), "{msg}");
    assert!(msg.contains("holds no PEM private key"), "{msg}");
}

#[test]
fn a_key_rustls_cannot_use_is_a_pair_error_naming_both_files() {
    let msg = error(&block("CERTIFICATE", "AAAA"), &block("PRIVATE KEY", SECRET));
    assert!(msg.contains("tls_cert_file"), "{msg}");
    assert!(msg.contains("tls_key_file"), "{msg}");
    assert!(msg.contains("do not make a usable pair"), "{msg}");
}
