//! Where to send: a peer's address written `AET@host:port`, and AE titles, validated when parsed (1–16
//! printable ASCII characters without backslash; a host name or IP address; a port in 1..=65535) so that a bad
//! `[delivery] pacs` or `--to` fails with one clear line before anything is attempted.

use std::str::FromStr;

use serde::Serialize;

/// A DICOM Application Entity title: 1–16 characters of printable ASCII without backslash, not all spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct AeTitle(String);

impl AeTitle {
    pub fn new(s: &str) -> Result<AeTitle, PeerAddrError> {
        let t = s.trim_matches(' ');
        if t.is_empty() {
            return Err(PeerAddrError::AeTitle { title: s.into(), reason: "empty" });
        }
        if t.len() > 16 {
            return Err(PeerAddrError::AeTitle { title: s.into(), reason: "longer than 16 characters" });
        }
        if t.chars().any(|c| c == '\\' || !(' '..='~').contains(&c)) {
            return Err(PeerAddrError::AeTitle {
                title: s.escape_default().to_string(),
                reason: "only printable ASCII without backslash is allowed",
            });
        }
        Ok(AeTitle(t.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AeTitle {
    type Err = PeerAddrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AeTitle::new(s)
    }
}

impl std::fmt::Display for AeTitle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A peer written `AET@host:port` (an IPv6 host in brackets: `PACS@[::1]:104`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerAddr {
    pub ae_title: AeTitle,
    pub host: String,
    pub port: u16,
}

/// Why a peer address or AE title is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerAddrError {
    #[error("peer `{0}`: expected AET@host:port")]
    Shape(String),
    #[error("AE title `{title}`: {reason}")]
    AeTitle { title: String, reason: &'static str },
    #[error("peer `{addr}`: {reason}")]
    Host { addr: String, reason: &'static str },
    #[error("peer `{addr}`: port `{port}` is not a number in 1..=65535")]
    Port { addr: String, port: String },
}

impl FromStr for PeerAddr {
    type Err = PeerAddrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (aet, hostport) = s.rsplit_once('@').ok_or_else(|| PeerAddrError::Shape(s.into()))?;
        let (host, port) = hostport.rsplit_once(':').ok_or_else(|| PeerAddrError::Shape(s.into()))?;
        let ae_title = AeTitle::new(aet)?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let bad_host = |reason| PeerAddrError::Host { addr: s.into(), reason };
        if host.is_empty() {
            return Err(bad_host("empty host"));
        }
        if host.len() > 253 || !host.chars().all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c)) {
            return Err(bad_host("the host must be a name or an IP address"));
        }
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(PeerAddrError::Port { addr: s.into(), port: port.into() }),
        };
        Ok(PeerAddr { ae_title, host: host.to_string(), port })
    }
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}@[{}]:{}", self.ae_title, self.host, self.port)
        } else {
            write!(f, "{}@{}:{}", self.ae_title, self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_addresses_parse_and_refuse_clearly() {
        let p: PeerAddr = "ORTHANC@127.0.0.1:4242".parse().expect("parse");
        assert_eq!((p.ae_title.as_str(), p.host.as_str(), p.port), ("ORTHANC", "127.0.0.1", 4242));
        assert_eq!(p.to_string(), "ORTHANC@127.0.0.1:4242");
        let v6: PeerAddr = "PACS@[::1]:104".parse().expect("v6");
        assert_eq!((v6.host.as_str(), v6.to_string().as_str()), ("::1", "PACS@[::1]:104"));
        let err = |s: &str| s.parse::<PeerAddr>().unwrap_err().to_string();
        assert_eq!(err("pacs.example:104"), "peer `pacs.example:104`: expected AET@host:port");
        assert_eq!(err("A@host"), "peer `A@host`: expected AET@host:port");
        assert!(err("ABCDEFGHIJKLMNOPQ@h:1").contains("longer than 16"));
        assert!(err("A\\B@h:1").contains("without backslash"));
        assert!(err("A\u{7}B@h:1").contains("printable ASCII"));
        assert!(err("   @h:1").contains("empty"));
        assert!(err("A@:1").contains("empty host"));
        assert!(err("A@h/x:1").contains("name or an IP"));
        assert!(err("A@h:0").contains("port `0`"));
        assert!(err("A@h:70000").contains("port `70000`"));
        assert_eq!(AeTitle::new(" LDAE ").expect("trim").as_str(), "LDAE");
    }
}
