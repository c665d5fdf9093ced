//! The systemd notify protocol (sd_notify(3)): datagrams like `READY=1` sent to the socket
//! named by `$NOTIFY_SOCKET` (a path, or an abstract name when it starts with `@`), and the
//! watchdog interval from `$WATCHDOG_USEC`. Without `$NOTIFY_SOCKET` (not started by systemd)
//! every call does nothing.

use std::ffi::OsStr;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

/// Where state changes are reported.
pub struct Notifier {
    socket: Option<(UnixDatagram, Target)>,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` asks for (none when unset or unusable).
    pub fn from_env() -> Notifier {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(name) => Notifier::to(&name),
            None => Notifier { socket: None },
        }
    }

    /// A notifier of the socket `name` (`/path` or `@abstract`).
    fn to(name: &OsStr) -> Notifier {
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(name);
        let target = match bytes.split_first() {
            Some((b'@', rest)) => Some(Target::Abstract(rest.to_vec())),
            Some((b'/', _)) => Some(Target::Path(PathBuf::from(name))),
            _ => {
                tracing::warn!(socket = ?name, "NOTIFY_SOCKET is neither a path nor an abstract name; systemd will not hear from the agent");
                None
            }
        };
        let socket = target.and_then(|target| match UnixDatagram::unbound() {
            Ok(socket) => Some((socket, target)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot open a socket to notify systemd");
                None
            }
        });
        Notifier { socket }
    }

    /// Sends `state` (`READY=1`, `STOPPING=1`, `WATCHDOG=1`, `STATUS=…`, newline-separated).
    pub fn notify(&self, state: &str) {
        let Some((socket, target)) = &self.socket else {
            return;
        };
        let sent = match target {
            Target::Path(path) => socket.send_to(state.as_bytes(), path),
            Target::Abstract(name) => {
                abstract_address(name).and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
            }
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, state, "cannot notify systemd");
        }
    }

    /// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when the watchdog is on and
    /// meant for this process.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.socket.as_ref()?;
        if let Some(pid) = std::env::var("WATCHDOG_PID").ok()
            && pid.trim() != std::process::id().to_string()
        {
            return None;
        }
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}

#[cfg(target_os = "linux")]
fn abstract_address(name: &[u8]) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_address(_: &[u8]) -> std::io::Result<std::os::unix::net::SocketAddr> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract socket names exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).expect("a notification arrives");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn notifications_reach_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        Notifier::to(path.as_os_str()).notify("READY=1");
        assert_eq!(received(&socket), "READY=1");

        #[cfg(target_os = "linux")]
        {
            let name = format!("masv-agent-test-{}", std::process::id());
            let socket =
                UnixDatagram::bind_addr(&abstract_address(name.as_bytes()).unwrap()).unwrap();
            Notifier::to(OsStr::new(&format!("@{name}"))).notify("STOPPING=1");
            assert_eq!(received(&socket), "STOPPING=1");
        }
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_there_is_no_watchdog() {
        let notifier = Notifier::to(OsStr::new("relative/path"));
        notifier.notify("READY=1");
        assert!(notifier.watchdog_interval().is_none());
    }
}
