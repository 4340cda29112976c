//! Who a request comes from: the TCP peer, or, when the peer is one of
//! `[http] trusted_proxies`, the address that proxy names in
//! `X-Forwarded-For`. Per-client limits (connections, sign-in attempts)
//! count by it; a header from anyone else is ignored, so a stranger cannot
//! pose as many clients, or as another one.

use std::net::{IpAddr, Ipv6Addr};

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

/// The address a request is counted against; the listener puts it in
/// every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    /// What limits count by: an IPv4 address, or an IPv6 /64 (one host
    /// usually holds a whole /64, so its addresses count as one).
    pub fn key(self) -> IpAddr {
        match self.0 {
            IpAddr::V4(_) => self.0,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let s = v6.segments();
                    IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
                }
            },
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Always set by the listener; a router driven without it (unit
        // tests) counts every request as one unknown client.
        Ok(parts
            .extensions
            .get::<ClientAddr>()
            .copied()
            .unwrap_or(ClientAddr(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))))
    }
}

/// `[http] trusted_proxies`: the proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Nets written in the IPv4-mapped form (`::ffff:10.0.0.0/104`) are
    /// taken as the IPv4 nets they stand for: peers are compared unmapped.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets.into_iter().map(unmap_net).collect())
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = unmap(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The client behind `peer`: `peer` itself unless it is a trusted
    /// proxy; then the rightmost `X-Forwarded-For` address that is not a
    /// trusted proxy (the ones left of it were written by the client and
    /// prove nothing). A malformed header counts as the proxy itself.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> ClientAddr {
        let peer = unmap(peer);
        if !self.trusts(peer) {
            return ClientAddr(peer);
        }
        let mut hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        hops.reverse();
        let mut client = peer;
        for hop in hops {
            match hop.parse::<IpAddr>().map(unmap) {
                Ok(ip) if self.trusts(ip) => client = ip,
                Ok(ip) => return ClientAddr(ip),
                Err(_) => return ClientAddr(client),
            }
        }
        ClientAddr(client)
    }
}

fn unmap_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`, as a dual-stack
/// socket reports it) is the IPv4 address.
pub(super) fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
        let proxies = TrustedProxies::new(vec!["127.0.0.1/32".parse().unwrap()]);
        let spoof = headers(&["203.0.113.9"]);
        assert_eq!(
            proxies.client(ip("198.51.100.7"), &spoof).0,
            ip("198.51.100.7")
        );
        assert_eq!(proxies.client(ip("127.0.0.1"), &spoof).0, ip("203.0.113.9"));
        // The client's own prefix is not believed: the proxy appended the
        // address it saw, the rightmost untrusted one.
        let chain = headers(&["10.9.9.9, 203.0.113.9"]);
        assert_eq!(proxies.client(ip("127.0.0.1"), &chain).0, ip("203.0.113.9"));
        let two_proxies = TrustedProxies::new(vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ]);
        let through = headers(&["203.0.113.9", "10.1.2.3"]);
        assert_eq!(
            two_proxies.client(ip("127.0.0.1"), &through).0,
            ip("203.0.113.9")
        );
        assert_eq!(
            proxies.client(ip("127.0.0.1"), &headers(&["junk"])).0,
            ip("127.0.0.1")
        );
        assert_eq!(
            proxies.client(ip("127.0.0.1"), &HeaderMap::new()).0,
            ip("127.0.0.1")
        );
        assert_eq!(
            proxies.client(ip("::ffff:127.0.0.1"), &spoof).0,
            ip("203.0.113.9")
        );
    }

    #[test]
    fn an_ipv6_host_counts_as_its_slash_64() {
        let a = ClientAddr(ip("2001:db8:1:2:aaaa::1")).key();
        let b = ClientAddr(ip("2001:db8:1:2:bbbb::2")).key();
        let c = ClientAddr(ip("2001:db8:1:3::1")).key();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(ClientAddr(ip("::ffff:192.0.2.1")).key(), ip("192.0.2.1"));
    }
}
