//! Secrets (API key, webhook key, intake and console tokens) and where
//! they come from.
//!
//! Lookup order, first found wins: the systemd credential
//! (`$CREDENTIALS_DIRECTORY/<name>`), the `*_file` named in the config, then an
//! environment variable. A [`Secret`] never prints its value: `Debug` and
//! `Display` are redacted, so it cannot leak through a log line or an error.

use std::fmt;
use std::path::{Path, PathBuf};

/// A secret value; only [`Secret::expose`] gives the text.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The value, for the one place that must send it (an HTTP header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where one kind of secret may be found.
#[derive(Debug, Clone, Copy)]
pub struct SecretSpec {
    /// The systemd credential name (`LoadCredential=<name>:...`).
    pub credential: &'static str,
    /// The environment variable consulted last.
    pub env: &'static str,
}

pub const API_KEY: SecretSpec = SecretSpec {
    credential: "helpcrunch-api-key",
    env: "HELPCRUNCH_API_KEY",
};
pub const WEBHOOK_KEY: SecretSpec = SecretSpec {
    credential: "webhook-key",
    env: "HELPCRUNCH_WEBHOOK_KEY",
};
pub const INTAKE_TOKEN: SecretSpec = SecretSpec {
    credential: "intake-token",
    env: "ASSIGND_INTAKE_TOKEN",
};
pub const CONSOLE_TOKEN: SecretSpec = SecretSpec {
    credential: "console-token",
    env: "ASSIGND_CONSOLE_TOKEN",
};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the {what} from {path}: {source}")]
    Unreadable {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the {what} in {path} is empty")]
    Empty { what: &'static str, path: PathBuf },
}

/// Finds a secret by `spec`, trying the credential, then `file`, then the
/// environment. `Ok(None)` when none of them is set.
pub fn load(spec: SecretSpec, file: Option<&Path>) -> Result<Option<Secret>, SecretError> {
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let path = Path::new(&dir).join(spec.credential);
        if path.exists() {
            return read_file(spec, &path).map(Some);
        }
    }
    if let Some(path) = file {
        return read_file(spec, path).map(Some);
    }
    Ok(std::env::var(spec.env)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .map(Secret))
}

fn read_file(spec: SecretSpec, path: &Path) -> Result<Secret, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::Unreadable {
        what: spec.credential,
        path: path.to_path_buf(),
        source,
    })?;
    let value = text.trim();
    if value.is_empty() {
        return Err(SecretError::Empty {
            what: spec.credential,
            path: path.to_path_buf(),
        });
    }
    Ok(Secret(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("canary-1234");
        assert!(!format!("{s:?} {s}").contains("canary"));
    }

    #[test]
    fn file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "abc\n").unwrap();
        let spec = SecretSpec {
            credential: "no-such-credential-xyz",
            env: "ASSIGND_TEST_NO_SUCH_ENV",
        };
        assert_eq!(load(spec, Some(&p)).unwrap().unwrap().expose(), "abc");
        std::fs::write(&p, "\n").unwrap();
        assert!(matches!(
            load(spec, Some(&p)),
            Err(SecretError::Empty { .. })
        ));
        assert!(load(spec, None).unwrap().is_none());
    }
}
