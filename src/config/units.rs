//! Small value types the config file is written in: durations (`15m`, `7d`), sizes (`16KiB`)
//! and IP networks (`10.0.0.0/8`), each with a parser that says what it expected.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

/// Parses `500ms`, `30s`, `15m`, `12h`, `7d` (and combinations such as `1h30m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?} ({e}); write it like 30s, 15m, 7d"))
}

/// Parses a byte size: a bare number of bytes or a number with `B`, `KB`, `KiB`, `MB`, `MiB`,
/// `GB` or `GiB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {text:?}; write it like 16KiB, 10MiB or 65536"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1024,
        "MB" => 1000 * 1000,
        "MiB" => 1024 * 1024,
        "GB" => 1000 * 1000 * 1000,
        "GiB" => 1024 * 1024 * 1024,
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {text:?} (use B, KB, KiB, MB, MiB, GB or GiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// Parses a rate: `10/min`, `5/s`, `100/h`, `20/30s` (count per duration); `off` is `None`.
pub fn parse_rate(text: &str) -> Result<Option<(u32, Duration)>, String> {
    let t = text.trim();
    if t == "off" {
        return Ok(None);
    }
    let bad = || format!("invalid rate {text:?}; write it like 10/min, 5/s, 100/h or off");
    let (count, per) = t.split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    if count == 0 {
        return Err(format!(
            "rate {text:?} allows nothing; use off to disable the limit"
        ));
    }
    let per = match per.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86_400),
        other => parse_duration(other).map_err(|_| bad())?,
    };
    if per.is_zero() {
        return Err(bad());
    }
    Ok(Some((count, per)))
}

/// A size as written in YAML: either a plain integer or a string with a unit.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub enum SizeText {
    /// A number of bytes.
    Bytes(u64),
    /// A number with a unit.
    Text(String),
}

impl SizeText {
    /// The size in bytes.
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            SizeText::Bytes(n) => Ok(*n),
            SizeText::Text(t) => parse_size(t),
        }
    }
}

/// A count that may also be written as a word (`workers: auto`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
pub enum CountText {
    Count(u64),
    Text(String),
}

/// An IP network in CIDR notation; a bare address means a single host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is inside this network. IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Folds an IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) to plain IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            || format!("invalid network {s:?}; write it like 10.0.0.0/8, 127.0.0.1 or ::1/128");
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr = canonical(IpAddr::from_str(addr).map_err(|_| bad())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("fifteen").is_err());
        assert!(parse_duration("15").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(
            parse_rate("10/min"),
            Ok(Some((10, Duration::from_secs(60))))
        );
        assert_eq!(parse_rate("5/s"), Ok(Some((5, Duration::from_secs(1)))));
        assert_eq!(
            parse_rate("20/30s"),
            Ok(Some((20, Duration::from_secs(30))))
        );
        assert_eq!(parse_rate("off"), Ok(None));
        assert!(parse_rate("0/min").is_err());
        assert!(parse_rate("ten/min").is_err());
        assert!(parse_rate("10").is_err());
        assert!(parse_rate("10/fortnight").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16KiB"), Ok(16384));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("65536"), Ok(65536));
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn networks() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.9.9.9".parse().unwrap()));
        let host: IpNet = "127.0.0.1".parse().unwrap();
        assert!(host.contains("127.0.0.1".parse().unwrap()));
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        let v6: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("banana".parse::<IpNet>().is_err());
    }
}
