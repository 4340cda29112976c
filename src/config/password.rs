//! The PostgreSQL password (SPEC §3, "Secrets"): found like every other
//! secret (the credential `database-password`, `[database] password_file`,
//! then `ASSIGND_DATABASE_PASSWORD`) and handed to the driver beside the
//! url, so that no password need be written in the config file.

use super::{Config, DatabaseLocation, PostgresUrl};
use crate::secrets::{self, Origin, Secret, SecretError};

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// Which of two passwords is meant cannot be guessed, and the one in the
    /// url sits in the config file: the operator removes it.
    #[error(
        "the database password is given twice, in [database] url and by {0}: remove it from the url"
    )]
    Twice(Origin),
}

impl Config {
    /// The database to open: [`Config::database`] with the PostgreSQL
    /// password, by the lookup order of [`crate::secrets`]. Every command
    /// and the daemon open the database with this.
    pub fn database_login(&self) -> Result<DatabaseLocation, PasswordError> {
        let file = self.database.password_file.as_deref();
        let found = secrets::find(secrets::DATABASE_PASSWORD, file)?;
        match self.database() {
            DatabaseLocation::Postgres(url) => Ok(DatabaseLocation::Postgres(attach(url, found)?)),
            sqlite => {
                // `password_file` beside SQLite is refused at load; a
                // credential or variable comes from the environment, so
                // it is only pointed out.
                if let Some((_, origin)) = found {
                    tracing::warn!(
                        %origin,
                        "a database password is given, but the database is SQLite, which takes none: it is not used"
                    );
                }
                Ok(sqlite)
            }
        }
    }
}

/// The url with the password found, if any; refused when the url carries
/// one of its own.
fn attach(
    mut url: PostgresUrl,
    found: Option<(Secret, Origin)>,
) -> Result<PostgresUrl, PasswordError> {
    let Some((password, origin)) = found else {
        return Ok(url);
    };
    if url.has_password {
        return Err(PasswordError::Twice(origin));
    }
    url.password = Some(password);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn postgres(url: &str) -> PostgresUrl {
        super::super::postgres_url(url).unwrap()
    }

    fn from_file(value: &str) -> Option<(Secret, Origin)> {
        let path = PathBuf::from("/etc/assignd/database-password");
        Some((Secret::new(value), Origin::File(path)))
    }

    #[test]
    fn the_password_found_goes_to_the_driver_and_nowhere_else() {
        let url = attach(postgres("postgres://app@db/x"), from_file("canary-PW-2")).unwrap();
        assert_eq!(url.password().map(Secret::expose), Some("canary-PW-2"));
        assert_eq!(url.expose(), "postgres://app@db/x");
        let shown = format!("{url} {url:?}");
        assert!(!shown.contains("canary"), "{shown}");
    }

    #[test]
    fn no_password_found_leaves_the_url_alone() {
        let url = attach(postgres("postgres://app:in-url@db/x"), None).unwrap();
        assert!(url.password().is_none());
        assert_eq!(url.expose(), "postgres://app:in-url@db/x");
    }

    #[test]
    fn a_password_in_the_url_and_apart_is_refused_naming_both_places() {
        for url in [
            "postgres://app:canary-URL@db/x",
            "postgres://app@db/x?sslmode=require&password=canary-URL",
        ] {
            let err = attach(postgres(url), from_file("canary-FILE"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("[database] url"), "{err}");
            assert!(err.contains("/etc/assignd/database-password"), "{err}");
            assert!(!err.contains("canary"), "{err}");
        }
    }

    #[test]
    fn a_missing_password_file_is_an_error_naming_it() {
        let text = "[database]\nurl = \"postgres://app@db/x\"\npassword_file = \"no-such-pw\"\n";
        let config = Config::parse(Path::new("/nonexistent/assignd.toml"), text).unwrap();
        let err = config.database_login().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/no-such-pw"), "{err}");
    }
}
