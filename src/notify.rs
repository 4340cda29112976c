//! systemd's readiness protocol (`Type=notify`), over the `sd-notify` crate.
//!
//! Without `NOTIFY_SOCKET` (not under systemd) every call does nothing.

pub use sd_notify::NotifyState;

/// Sends `states` (e.g. `[NotifyState::Ready]`) to systemd, if it is
/// listening. A failure is logged, never fatal: the daemon works without.
pub fn notify(states: &[NotifyState<'_>]) {
    let sent = match abstract_socket_name() {
        Some(name) => send_abstract(&name, states),
        None => sd_notify::notify(states),
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// `RELOADING=1` with the `MONOTONIC_USEC` that systemd requires with it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(e) => tracing::warn!(error = %e, "cannot read the monotonic clock"),
    }
}

/// The name of an abstract socket (`NOTIFY_SOCKET=@name`, as sd_notify(3)
/// allows): the crate would take it for a file path.
fn abstract_socket_name() -> Option<Vec<u8>> {
    let path = std::env::var_os("NOTIFY_SOCKET")?;
    path.as_encoded_bytes()
        .strip_prefix(b"@")
        .map(<[u8]>::to_vec)
}

/// The crate's message (one `KEY=VALUE` line per state) to an abstract socket.
fn send_abstract(name: &[u8], states: &[NotifyState<'_>]) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let message: String = states.iter().map(|s| format!("{s}\n")).collect();
    let addr = SocketAddr::from_abstract_name(name)?;
    UnixDatagram::unbound()?.send_to_addr(message.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn sends_to_a_path_and_to_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let name = format!("assignd-test-{}", std::process::id());
        let abstract_listener = {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
            UnixDatagram::bind_addr(&addr).unwrap()
        };
        // SAFETY of set_var: this is the only test in the crate touching NOTIFY_SOCKET.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        reloading();
        unsafe { std::env::set_var("NOTIFY_SOCKET", format!("@{name}")) };
        notify(&[NotifyState::Watchdog, NotifyState::Status("busy")]);
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };

        let mut buf = [0u8; 128];
        let n = listener.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(text.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{text}");
        let usec: u64 = text.lines().nth(1).unwrap()[15..].parse().unwrap();
        assert!(usec > 0, "{text}");
        let n = abstract_listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1\nSTATUS=busy\n");
    }
}
