//! Where standby reaches a VM's QMP monitor or guest agent: a unix socket
//! on this host, or a chardev on TCP with TLS on a hypervisor elsewhere
//! (QEMU's `tls-creds-x509`; the server's certificate always verified).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Result;
use crate::qga::Agent;
use crate::qmp::Qmp;
use crate::tls::TlsConfig;

/// A QMP or guest-agent socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A unix socket on this host.
    Unix(PathBuf),
    /// `host:port` over TLS.
    Tls { addr: String, tls: TlsConfig },
}

impl Endpoint {
    /// True for a socket on this host.
    pub fn is_local(&self) -> bool {
        matches!(self, Endpoint::Unix(_))
    }

    /// False when nothing listens on this local socket now (no QEMU runs
    /// there: no file, or a dead QEMU's); true for a remote endpoint (only
    /// connecting tells).
    pub fn listening(&self) -> bool {
        match self {
            Endpoint::Unix(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
            Endpoint::Tls { .. } => true,
        }
    }

    /// Connects to QMP here (a unix socket is retried while QEMU starts,
    /// up to `timeout`).
    pub fn qmp(&self, timeout: Duration) -> Result<Qmp> {
        match self {
            Endpoint::Unix(p) => Qmp::connect_unix(p, timeout),
            Endpoint::Tls { addr, tls } => Qmp::connect_tls(addr, tls),
        }
    }

    /// Connects to the guest agent here and synchronises, retrying until
    /// `timeout` while the guest's agent is not up yet.
    pub fn agent(&self, timeout: Duration) -> Result<Agent> {
        match self {
            Endpoint::Unix(p) => Agent::connect_unix(p, timeout),
            Endpoint::Tls { addr, tls } => Agent::connect_tls(addr, tls, timeout),
        }
    }

    /// As command-line arguments for another process (the thaw guard):
    /// `unix PATH` or `tls ADDR CA SERVER_NAME [CERT KEY]`. Paths only,
    /// never key material.
    pub fn to_args(&self) -> Vec<OsString> {
        match self {
            Endpoint::Unix(p) => vec!["unix".into(), p.into()],
            Endpoint::Tls { addr, tls } => {
                let mut v: Vec<OsString> = vec![
                    "tls".into(),
                    addr.into(),
                    (&tls.ca).into(),
                    (&tls.server_name).into(),
                ];
                if let Some((cert, key)) = &tls.client {
                    v.push(cert.into());
                    v.push(key.into());
                }
                v
            }
        }
    }

    /// Reads what [`Endpoint::to_args`] wrote; None when malformed.
    pub fn from_args(args: impl IntoIterator<Item = OsString>) -> Option<Endpoint> {
        let mut args = args.into_iter();
        match args.next()?.to_str()? {
            "unix" => Some(Endpoint::Unix(args.next()?.into())),
            "tls" => {
                let addr = args.next()?.into_string().ok()?;
                let ca = PathBuf::from(args.next()?);
                let server_name = args.next()?.into_string().ok()?;
                let client = match (args.next(), args.next()) {
                    (Some(c), Some(k)) => Some((c.into(), k.into())),
                    _ => None,
                };
                Some(Endpoint::Tls {
                    addr,
                    tls: TlsConfig {
                        ca,
                        server_name,
                        client,
                    },
                })
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
            Endpoint::Tls { addr, .. } => write!(f, "tcp://{addr} (TLS)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        for e in [
            Endpoint::Unix("/run/qemu/db.qga".into()),
            Endpoint::Tls {
                addr: "10.0.0.5:4445".into(),
                tls: TlsConfig {
                    ca: "/pki/ca.pem".into(),
                    server_name: "hv1".into(),
                    client: None,
                },
            },
            Endpoint::Tls {
                addr: "[::1]:4445".into(),
                tls: TlsConfig {
                    ca: "/pki/ca.pem".into(),
                    server_name: "::1".into(),
                    client: Some(("/pki/c.pem".into(), "/pki/k.pem".into())),
                },
            },
        ] {
            assert_eq!(Endpoint::from_args(e.to_args()), Some(e));
        }
        assert_eq!(Endpoint::from_args(vec![OsString::from("ssh")]), None);
    }
}
