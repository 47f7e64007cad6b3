//! Who the client is behind a reverse proxy: `desk.trusted_proxies` ([`Trusted`]) names the
//! proxies whose forwarding headers are believed; the client is the rightmost address in
//! them that is not a trusted proxy. `Forwarded` (RFC 7239) wins over `X-Forwarded-For`
//! when a trusted proxy sends both. A peer that is no trusted proxy is the client, whatever
//! headers it sends. Nothing here refuses a request: the guard does (a desk with no logins
//! answers no proxied request at all).

use std::net::IpAddr;

use axum::http::HeaderMap;

use super::ServerError;

/// The trusted proxies: networks as (address, prefix length).
#[derive(Debug, Clone, Default)]
pub(super) struct Trusted(Vec<(IpAddr, u8)>);

impl Trusted {
    /// Parses `desk.trusted_proxies`: IP addresses (`10.0.0.1`, `::1`) or CIDRs
    /// (`10.0.0.0/8`, `fd00::/8`).
    pub(super) fn parse(list: &[String]) -> Result<Trusted, ServerError> {
        let one = |p: &String| -> Option<(IpAddr, u8)> {
            let (ip, bits) = p.trim().split_once('/').unwrap_or((p.trim(), ""));
            let ip: IpAddr = ip.parse().ok()?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = if bits.is_empty() {
                max
            } else {
                bits.parse().ok().filter(|b| *b <= max)?
            };
            Some((ip, bits))
        };
        list.iter()
            .map(|p| one(p).ok_or_else(|| ServerError::Proxy(p.clone())))
            .collect::<Result<_, _>>()
            .map(Trusted)
    }

    /// Whether `ip` lies in one of the trusted networks (an IPv4-mapped IPv6 address counts
    /// as its IPv4 one).
    pub(super) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|&(net, bits)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix(&n.octets(), &a.octets(), bits),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix(&n.octets(), &a.octets(), bits),
            _ => false,
        })
    }

    /// The client of a request from `peer`: `peer` unless it is a trusted proxy; else, from
    /// right to left in `Forwarded` (or, without it, `X-Forwarded-For`), the first address
    /// that is no trusted proxy. An entry that names no address (`unknown`, an obfuscated
    /// name) stops the walk at the last trusted hop; a header of trusted hops only names its
    /// leftmost.
    pub(super) fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let hops = if headers.contains_key("forwarded") {
            forwarded_for(headers)
        } else {
            x_forwarded_for(headers)
        };
        let mut last = peer;
        for hop in hops.into_iter().rev() {
            match hop {
                Some(ip) if self.contains(ip) => last = ip,
                Some(ip) => return ip,
                None => return last,
            }
        }
        last
    }
}

fn prefix(net: &[u8], addr: &[u8], bits: u8) -> bool {
    let (whole, rest) = (usize::from(bits / 8), bits % 8);
    net[..whole] == addr[..whole]
        && (rest == 0 || {
            let mask = 0xffu8 << (8 - rest);
            net[whole] & mask == addr[whole] & mask
        })
}

/// Whether the request carries a forwarding header (`Forwarded`, `X-Forwarded-*`,
/// `X-Real-IP`): a proxy sent it on.
pub(super) fn proxied(headers: &HeaderMap) -> bool {
    headers.keys().any(|k| {
        let k = k.as_str();
        k == "forwarded" || k.starts_with("x-forwarded-") || k == "x-real-ip"
    })
}

/// An address as a forwarding header writes it: bare, with a port, or in brackets
/// (`"[2001:db8::1]:4711"`), quoted or not.
fn address(v: &str) -> Option<IpAddr> {
    let v = v.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    v.parse::<IpAddr>()
        .ok()
        .or_else(|| v.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

/// The `for=` of each `Forwarded` element, in order (RFC 7239: elements by `,`, pairs by `;`).
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then(|| address(v))
            })
        })
        .map(Option::flatten)
        .collect()
}

fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(address)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_address() {
        let t =
            Trusted::parse(&["127.0.0.1".into(), "10.0.0.0/8".into(), "fd00::/8".into()]).unwrap();
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // A spoofed leftmost entry is never believed: the proxy appended the real one.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.1.2.3")]);
        assert_eq!(t.client(proxy, &h), ip("203.0.113.9"));
        // Forwarded wins over X-Forwarded-For; quoted, bracketed, with ports.
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.1"),
            (
                "forwarded",
                r#"for=1.1.1.1, for="[2001:db8::7]:4711";proto=https"#,
            ),
            ("forwarded", "for=10.0.0.2"),
        ]);
        assert_eq!(t.client(proxy, &h), ip("2001:db8::7"));
        // Unknown stops at the last trusted hop; trusted hops only: the leftmost.
        let h = headers(&[("forwarded", "for=unknown, for=10.0.0.5")]);
        assert_eq!(t.client(proxy, &h), ip("10.0.0.5"));
        let h = headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.5")]);
        assert_eq!(t.client(proxy, &h), ip("10.0.0.9"));
        // A peer that is no trusted proxy is the client, whatever it sends.
        let h = headers(&[("x-forwarded-for", "10.0.0.9")]);
        assert_eq!(t.client(ip("192.0.2.1"), &h), ip("192.0.2.1"));
        assert!(t.contains(ip("::ffff:10.9.9.9")));
        assert!(!t.contains(ip("11.0.0.1")));
        assert!(Trusted::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(Trusted::parse(&["proxy.local".into()]).is_err());
        assert!(proxied(&headers(&[("x-forwarded-proto", "https")])));
        assert!(!proxied(&headers(&[("host", "127.0.0.1")])));
    }
}
