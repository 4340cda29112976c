//! Secrets (API key, webhook key, intake and console tokens, the database
//! password) and where they come from.
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
pub const DATABASE_PASSWORD: SecretSpec = SecretSpec {
    credential: "database-password",
    env: "ASSIGND_DATABASE_PASSWORD",
};

/// Where a secret was found: errors name the place, never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Credential(PathBuf),
    File(PathBuf),
    Env(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Credential(path) => write!(f, "the credential {}", path.display()),
            Origin::File(path) => write!(f, "the file {}", path.display()),
            Origin::Env(name) => write!(f, "the environment variable {name}"),
        }
    }
}

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
    Ok(find(spec, file)?.map(|(secret, _)| secret))
}

/// [`load`], also saying where the secret was found.
pub fn find(
    spec: SecretSpec,
    file: Option<&Path>,
) -> Result<Option<(Secret, Origin)>, SecretError> {
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    find_in(
        spec,
        credentials.as_deref(),
        file,
        std::env::var(spec.env).ok(),
    )
}

/// The lookup order itself, over a credentials directory and an environment
/// value given by the caller (so that tests need not change the process's).
fn find_in(
    spec: SecretSpec,
    credentials: Option<&Path>,
    file: Option<&Path>,
    env: Option<String>,
) -> Result<Option<(Secret, Origin)>, SecretError> {
    if let Some(path) = credentials.map(|dir| dir.join(spec.credential))
        && path.exists()
    {
        return Ok(Some((read_file(spec, &path)?, Origin::Credential(path))));
    }
    if let Some(path) = file {
        return Ok(Some((
            read_file(spec, path)?,
            Origin::File(path.to_path_buf()),
        )));
    }
    Ok(env
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .map(|v| (Secret(v), Origin::Env(spec.env))))
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

    #[test]
    fn the_credential_wins_then_the_file_then_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "from-file\n").unwrap();
        let env = || Some("from-env".to_string());
        let spec = DATABASE_PASSWORD;
        let found = |c: Option<&Path>, f: Option<&Path>, e: Option<String>| {
            find_in(spec, c, f, e)
                .unwrap()
                .map(|(s, o)| (s.expose().to_string(), o))
        };
        assert_eq!(
            found(Some(&creds), Some(&file), env()),
            Some(("from-file".into(), Origin::File(file.clone()))),
            "a credentials directory without this credential falls through"
        );
        let cred = creds.join("database-password");
        std::fs::write(&cred, "from-credential").unwrap();
        assert_eq!(
            found(Some(&creds), Some(&file), env()),
            Some(("from-credential".into(), Origin::Credential(cred)))
        );
        assert_eq!(
            found(None, None, env()),
            Some(("from-env".into(), Origin::Env("ASSIGND_DATABASE_PASSWORD")))
        );
        assert_eq!(found(None, None, Some("  ".into())), None);
    }

    #[test]
    fn a_missing_file_is_named_and_never_falls_through() {
        let missing = Path::new("/nonexistent/assignd/database-password");
        let err = find_in(DATABASE_PASSWORD, None, Some(missing), Some("env".into()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/assignd/database-password"),
            "{err}"
        );
        assert!(
            err.starts_with("cannot read the database-password"),
            "{err}"
        );
    }
}
