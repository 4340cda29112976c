//! HTTPS served by the listener itself (`[http] tls_cert_file` and
//! `tls_key_file`): rustls on the ring provider reqwest already pulls in
//! (no C build beyond ring's own), HTTP/1.1 only.
//!
//! The certificate is read at start and again on SIGHUP; a new pair that
//! does not load leaves the old one serving, so a botched renewal never
//! takes the listener down. Errors name the file and never quote its
//! contents: a key file's bytes are a secret.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

pub use crate::config::TlsFiles;

/// A client gets this long from its TCP connect to a finished handshake,
/// holding a connection slot meanwhile. A few round trips take well under
/// a second even on a poor mobile link; a client that sends nothing is
/// dropped when this runs out.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read [http] {key} {}: {source}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("[http] {key} {}: {why}", path.display())]
    Pem {
        key: &'static str,
        path: PathBuf,
        why: &'static str,
    },
    #[error(
        "[http] tls_cert_file {} and tls_key_file {} do not make a usable pair: {why}",
        cert.display(),
        key.display()
    )]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        why: String,
    },
}

/// The listener's TLS configuration, swapped whole on reload: a handshake
/// uses the one current when its connection was accepted.
pub struct ServerTls {
    current: RwLock<(TlsFiles, Arc<ServerConfig>)>,
}

impl ServerTls {
    /// Reads and checks `files`.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let config = server_config(&files)?;
        Ok(Self {
            current: RwLock::new((files, config)),
        })
    }

    /// Reads the certificate and key again: `files` when the config now
    /// names others, else the same files. On error the old pair stays.
    pub fn reload(&self, files: Option<TlsFiles>) -> Result<TlsFiles, TlsError> {
        let files = files.unwrap_or_else(|| self.files());
        let config = server_config(&files)?;
        *self.current.write().expect("tls lock") = (files.clone(), config);
        Ok(files)
    }

    /// The files the serving pair was read from.
    pub fn files(&self) -> TlsFiles {
        self.current.read().expect("tls lock").0.clone()
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.read().expect("tls lock").1.clone())
    }
}

/// An accepted connection as hyper reads it: TLS, or plain behind a proxy.
pub(super) type Io = Either<TcpStream, TlsStream<TcpStream>>;

/// Completes the TLS handshake on `stream` when the listener serves TLS,
/// within [`HANDSHAKE_TIMEOUT`]; None if the client fails or stalls it, or
/// `shutdown` comes first. Run in the connection's own task, so that a
/// slow client delays only itself.
pub(super) async fn handshake(
    tls: Option<Arc<ServerTls>>,
    stream: TcpStream,
    shutdown: CancellationToken,
) -> Option<Io> {
    let Some(tls) = tls else {
        return Some(Either::Left(stream));
    };
    let accept = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream));
    tokio::select! {
        done = accept => match done {
            Ok(Ok(stream)) => Some(Either::Right(stream)),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
                None
            }
        },
        _ = shutdown.cancelled() => None,
    }
}

/// A rustls server configuration for `files`: the chain as given, the
/// key checked against the leaf certificate, ALPN `http/1.1` only.
fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_chain(&files.cert)?;
    let key = read_key(&files.key)?;
    let pair = |e: rustls::Error| TlsError::Pair {
        cert: files.cert.clone(),
        key: files.key.clone(),
        why: e.to_string(),
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(pair)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(pair)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

const CERT_KEY: &str = "tls_cert_file";
const KEY_KEY: &str = "tls_key_file";

/// Every `CERTIFICATE` block of the file, leaf first; other blocks (a key
/// bundled into the same file) are skipped.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = read(CERT_KEY, path)?;
    let chain = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(CERT_KEY, path, &e))?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            key: CERT_KEY,
            path: path.to_path_buf(),
            why: "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        });
    }
    Ok(chain)
}

/// The file's first private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read(KEY_KEY, path)?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::Pem {
            key: KEY_KEY,
            path: path.to_path_buf(),
            why: "holds no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
        },
        e => pem_error(KEY_KEY, path, &e),
    })
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

/// What is wrong with a PEM file, in words that quote none of it: the
/// parser's own messages may carry a line of a key.
fn pem_error(key: &'static str, path: &Path, e: &pem::Error) -> TlsError {
    let why = match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line",
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a PEM block is not valid base64",
        pem::Error::NoItemsFound => "holds nothing of the expected kind",
        _ => "is not a readable PEM file",
    };
    TlsError::Pem {
        key,
        path: path.to_path_buf(),
        why,
    }
}

#[cfg(test)]
mod tests;
