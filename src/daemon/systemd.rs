//! The systemd notify protocol (sd_notify(3)): datagrams like `READY=1` sent to the socket
//! named by `$NOTIFY_SOCKET` (a path, or an abstract name when it starts with `@`), and the
//! watchdog interval from `$WATCHDOG_USEC`. Without `$NOTIFY_SOCKET` (not started by systemd)
//! every call does nothing.

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
        let target = match std::env::var_os("NOTIFY_SOCKET") {
            None => None,
            Some(name) => {
                let bytes = std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str());
                match bytes.split_first() {
                    Some((b'@', rest)) => Some(Target::Abstract(rest.to_vec())),
                    Some((b'/', _)) => Some(Target::Path(PathBuf::from(name))),
                    _ => {
                        tracing::warn!(socket = ?name, "NOTIFY_SOCKET is neither a path nor an abstract name; systemd will not hear from the agent");
                        None
                    }
                }
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
            Target::Abstract(name) => abstract_address(name)
                .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr)),
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
