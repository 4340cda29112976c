//! `[http]`: the listener's keys and their checks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::diag::SourceError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    pub listen: Option<SocketAddr>,
    pub webhook_key_file: Option<PathBuf>,
    pub intake_token_file: Option<PathBuf>,
    /// Opens the console (`/console/`) to whoever has this token.
    pub console_token_file: Option<PathBuf>,
    /// How HelpCrunch and browsers reach the listener (`https://…` behind a
    /// TLS proxy): the webhook address `check` prints; https makes the
    /// console's cookie `Secure`.
    pub public_url: Option<Spanned<String>>,
    /// Peers whose `X-Forwarded-For` names the client that per-client
    /// limits count by; by default a proxy on the same host.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// With `tls_key_file`, the listener serves HTTPS itself; both or
    /// neither (validated at load).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

/// The listener's certificate chain and private key files, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Http {
    /// The certificate and key, when the listener serves TLS itself.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }

    /// Checks what serde cannot: `public_url`'s form, TLS files both or neither.
    pub(super) fn validate(&self, path: &Path, text: &str) -> Result<(), SourceError> {
        if let Some(url) = &self.public_url
            && let Err(why) = public_url(url.get_ref())
        {
            return Err(SourceError::new(path, text, url.span(), why));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            let (given, missing) = match self.tls_cert_file {
                Some(_) => ("tls_cert_file", "tls_key_file"),
                None => ("tls_key_file", "tls_cert_file"),
            };
            return Err(SourceError::new(
                path,
                text,
                0..0,
                format!(
                    "[http] {given} is set but {missing} is not: serving TLS takes both the certificate chain and its private key"
                ),
            ));
        }
        Ok(())
    }
}

impl Default for Http {
    fn default() -> Self {
        Self {
            listen: None,
            webhook_key_file: None,
            intake_token_file: None,
            console_token_file: None,
            public_url: None,
            trusted_proxies: vec![
                ipnet::IpNet::from(std::net::IpAddr::from([127, 0, 0, 1])),
                ipnet::IpNet::from(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
            ],
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl Http {
    /// `[http] public_url` without a trailing `/`, if set.
    pub fn public_url(&self) -> Option<&str> {
        let url = self.public_url.as_ref()?.get_ref();
        Some(url.trim_end_matches('/'))
    }

    /// The address HelpCrunch posts its webhooks to, if `public_url` is set.
    pub fn webhook_url(&self) -> Option<String> {
        Some(format!("{}/webhooks/helpcrunch", self.public_url()?))
    }

    /// Whether browsers reach the console over HTTPS.
    pub fn public_https(&self) -> bool {
        self.public_url().is_some_and(|u| u.starts_with("https://"))
    }
}

/// Checks `[http] public_url`: an absolute http(s) url naming a host, with
/// no query or fragment (webhook paths are appended to it).
fn public_url(url: &str) -> Result<(), String> {
    let form = "http.public_url must be an absolute http:// or https:// url, such as \
                https://assignd.example.com";
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{form}: `{url}`: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || !url.contains("://") {
        return Err(format!("{form}; `{url}` is not"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{form}; `{url}` names no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("{form}; `{url}` has a query or fragment"));
    }
    Ok(())
}
