use super::*;
use std::time::Duration;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/assignd/assignd.toml"), text)
}

#[test]
fn defaults_are_the_documented_ones() {
    let c = parse("").unwrap();
    assert_eq!(c.helpcrunch.rate_limit.requests.get(), 120);
    assert_eq!(c.helpcrunch.rate_limit.per.0, Duration::from_secs(60));
    assert_eq!(c.helpcrunch.rate_limit.burst().get(), 1);
    assert_eq!(c.worker.concurrency.get(), 4);
    assert_eq!(c.worker.poll_interval.0, Duration::from_secs(5));
    assert_eq!(c.worker.fetch_chat, FetchChat::Auto);
    assert_eq!(c.database.synchronous, Synchronous::Full);
    assert!(c.http.listen.is_none());
}

#[test]
fn the_spec_example_parses() {
    let text = r#"
[helpcrunch]
base_url = "https://api.helpcrunch.com/v1"
api_key_file = "/etc/assignd/api-key"
timeout = "10s"

[helpcrunch.rate_limit]
requests = 120
per = "1m"
burst = 1

[database]
url = "sqlite:///var/lib/assignd/assignd.db"
synchronous = "full"
retention = "30d"

[rules]
path = "/etc/assignd/rules"

[worker]
concurrency = 4
poll_interval = "500ms"
lease = "60s"
max_attempts = 10
fetch_chat = "auto"
reassign = false

[http]
listen = "127.0.0.1:9187"
webhook_key_file = "/etc/assignd/webhook-key"
intake_token_file = "/etc/assignd/intake-token"

[load]
refresh = "5m"

[poller]
enabled = false
interval = "30s"

[log]
format = "text"
"#;
    let c = parse(text).unwrap();
    assert_eq!(
        c.database_file(),
        PathBuf::from("/var/lib/assignd/assignd.db")
    );
    assert_eq!(c.http.listen.unwrap().port(), 9187);
}

#[test]
fn unknown_key_is_located_and_suggested() {
    let err = parse("[worker]\nconcurrency = 2\npoll_intervall = \"1s\"\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("/etc/assignd/assignd.toml:3:1:"), "{msg}");
    assert!(msg.contains("did you mean `poll_interval`"), "{msg}");
}

#[test]
fn a_lease_must_outlast_a_call_by_a_second() {
    let msg = parse("[worker]\nlease = \"10500ms\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("worker.lease (10.5s) must exceed helpcrunch.timeout (10s) by at least 1s"),
        "{msg}"
    );
    let c = parse("[helpcrunch]\ntimeout = \"4s\"\n[worker]\nlease = \"5s\"\n").unwrap();
    assert_eq!(c.worker.lease.0, std::time::Duration::from_secs(5));
}

#[test]
fn bad_values_are_located() {
    let cases: [(&str, &[&str]); 4] = [
        (
            "[worker]\nlease = \"10 parsecs\"\n",
            &["/etc/assignd/assignd.toml:2:9:"],
        ),
        (
            "[helpcrunch.rate_limit]\nrequests = 5\nburst = 6\n",
            &["/etc/assignd/assignd.toml:3:9:"],
        ),
        ("[worker]\nconcurrency = 0\n", &[":2:15:"]),
        (
            "[database]\nurl = \"sqlite::memory:\"\n",
            &[":2:7:", "must name a file"],
        ),
    ];
    for (text, wanted) in cases {
        let msg = parse(text).unwrap_err().to_string();
        for w in wanted {
            // A full path must begin the message; other parts are in it.
            let found = if w.starts_with('/') {
                msg.starts_with(w)
            } else {
                msg.contains(w)
            };
            assert!(found, "{msg} lacks {w}");
        }
    }
}

#[test]
fn the_database_defaults_to_the_state_directory_then_var_lib() {
    assert_eq!(
        default_database_file(Some(PathBuf::from("/var/lib/assignd"))),
        PathBuf::from("/var/lib/assignd/assignd.db")
    );
    assert_eq!(
        default_database_file(Some(PathBuf::from("/srv/state"))),
        PathBuf::from("/srv/state/assignd.db")
    );
    // Outside systemd: never the working directory.
    assert_eq!(
        default_database_file(None),
        PathBuf::from("/var/lib/assignd/assignd.db")
    );
    // `[database] url` wins, and then no default directory is needed.
    let c = parse("[database]\nurl = \"sqlite:///srv/a.db\"\n").unwrap();
    assert_eq!(c.database_file(), PathBuf::from("/srv/a.db"));
    assert_eq!(c.missing_default_database_dir(), None);
}

#[test]
fn relative_paths_follow_the_config_file() {
    let c =
        parse("[rules]\npath = \"rules\"\n[database]\nurl = \"sqlite://state/a.db\"\n").unwrap();
    assert_eq!(c.rules.path, PathBuf::from("/etc/assignd/rules"));
    assert_eq!(c.database_file(), PathBuf::from("/etc/assignd/state/a.db"));
}

#[test]
fn a_postgres_password_never_prints_in_any_form() {
    for url in [
        "postgres://app:canary-PW-1@db.example/assignd",
        "postgres://app@db.example/assignd?password=canary-PW-1&sslmode=require",
        "postgresql://app@db.example/assignd?sslmode=require&Password=canary-PW-1",
        "postgres://app@db.example/assignd?sslpassword=canary-PW-1",
    ] {
        let text = format!("[database]\nurl = \"{url}\"\n");
        let c = parse(&text).unwrap();
        let DatabaseLocation::Postgres(pg) = c.database() else {
            panic!("{url}: not PostgreSQL");
        };
        let shown = format!("{pg} {pg:?} {}", c.database());
        assert!(!shown.contains("canary-PW"), "{shown}");
        assert!(shown.contains("********"), "{shown}");
        assert_eq!(pg.expose(), url, "the driver gets the url whole");
    }
    let c = parse("[database]\nurl = \"postgres://app@db/x?sslmode=require\"\n").unwrap();
    assert_eq!(
        c.database().to_string(),
        "postgres://app@db/x?sslmode=require"
    );
}

#[test]
fn public_url_must_be_an_absolute_http_url() {
    let with = |url: &str| parse(&format!("[http]\npublic_url = \"{url}\"\n"));
    let c = with("https://assignd.example.com/").unwrap();
    assert_eq!(
        c.http.webhook_url().as_deref(),
        Some("https://assignd.example.com/webhooks/helpcrunch")
    );
    assert!(c.http.public_https());
    let c = with("http://10.0.0.5:9187/assignd").unwrap();
    assert_eq!(
        c.http.webhook_url().as_deref(),
        Some("http://10.0.0.5:9187/assignd/webhooks/helpcrunch")
    );
    assert!(!c.http.public_https());
    assert_eq!(parse("").unwrap().http.webhook_url(), None);
    for bad in [
        "assignd.example.com",
        "ftp://assignd.example.com",
        "https://",
        "/console",
        "https://a.example.com/?x=1",
    ] {
        let e = with(bad).unwrap_err().to_string();
        assert!(e.contains("absolute http:// or https:// url"), "{bad}: {e}");
        assert!(e.contains(":2:14:"), "{bad}: {e}");
    }
}

#[test]
fn tls_takes_both_files_resolved_against_the_config() {
    let c = parse("[http]\ntls_cert_file = \"tls/cert.pem\"\ntls_key_file = \"/keys/key.pem\"\n")
        .unwrap();
    let files = c.http.tls_files().unwrap();
    assert_eq!(files.cert, PathBuf::from("/etc/assignd/tls/cert.pem"));
    assert_eq!(files.key, PathBuf::from("/keys/key.pem"));
    assert!(parse("").unwrap().http.tls_files().is_none());
    for (given, missing) in [
        ("tls_cert_file", "tls_key_file"),
        ("tls_key_file", "tls_cert_file"),
    ] {
        let msg = parse(&format!("[http]\n{given} = \"x.pem\"\n"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(&format!("[http] {given} is set but {missing} is not")),
            "{msg}"
        );
    }
}

#[test]
fn a_password_file_follows_the_config_file_and_never_the_url() {
    let c =
        parse("[database]\nurl = \"postgres://app@db/x\"\npassword_file = \"db-pw\"\n").unwrap();
    assert_eq!(
        c.database.password_file,
        Some(PathBuf::from("/etc/assignd/db-pw"))
    );
    let DatabaseLocation::Postgres(pg) = c.database() else {
        panic!("not PostgreSQL");
    };
    assert_eq!(pg.expose(), "postgres://app@db/x");
    assert!(
        pg.password().is_none(),
        "looked up only to open the database"
    );
}

#[test]
fn a_password_file_beside_sqlite_is_refused() {
    for text in [
        "[database]\npassword_file = \"db-pw\"\n",
        "[database]\nurl = \"sqlite://a.db\"\npassword_file = \"db-pw\"\n",
    ] {
        let msg = parse(text).unwrap_err().to_string();
        assert!(msg.starts_with("/etc/assignd/assignd.toml:"), "{msg}");
        assert!(msg.contains("password_file"), "{msg}");
        assert!(msg.contains("SQLite"), "{msg}");
    }
}

#[test]
fn a_pooler_travels_with_the_postgres_url_and_is_refused_with_sqlite() {
    let c = parse("[database]\nurl = \"postgres://app@db/x\"\npooler = \"pgbouncer\"\n").unwrap();
    let DatabaseLocation::Postgres(pg) = c.database() else {
        panic!("not PostgreSQL");
    };
    assert_eq!(pg.pooler(), Pooler::Pgbouncer);
    let c = parse("[database]\nurl = \"postgres://app@db/x\"\n").unwrap();
    let DatabaseLocation::Postgres(pg) = c.database() else {
        panic!("not PostgreSQL");
    };
    assert_eq!(pg.pooler(), Pooler::None, "none unless configured");
    let err = parse("[database]\npooler = \"pgbouncer\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("database.pooler is set, but the database is SQLite"),
        "{err}"
    );
    let err = parse("[database]\nurl = \"postgres://app@db/x\"\npooler = \"pgpool\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("pgbouncer"),
        "the known values are named: {err}"
    );
}
