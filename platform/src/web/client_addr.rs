//! The client's address, as throttles, audit details and request logs key it.
//!
//! Behind a reverse proxy every request's TCP peer is the proxy, so throttles keyed on it would
//! put every customer in one bucket. The address in a forwarding header is believed only when the
//! TCP peer is one of `server.trusted_proxies`, and only in the one header they are configured to
//! set (`server.forwarded_header`). The header is read right to left, skipping hops that are
//! themselves trusted proxies: the first untrusted hop is the client. Entries to its left were
//! written by the client and are ignored, so a spoofed `X-Forwarded-For: 1.2.3.4` buys nothing.

use std::net::IpAddr;

use actix_web::HttpRequest;
use actix_web::http::header::HeaderMap;
use actix_web::web;

use crate::Platform;
use crate::config::{CidrList, ForwardedHeader};

/// At most this many hops are examined (a header is bounded by actix's header limits anyway).
const MAX_HOPS: usize = 32;

/// What a throttle counts `address` (as [`client_ip`] gives it) as: an IPv4 address is itself,
/// an IPv6 address counts as its /64. One subscriber (a home line, a phone, a rented server) is
/// routed at least a /64 and may send from any address in it, so per-address allowances keyed
/// on the whole address would give one attacker 2^64 of them.
pub fn throttle_unit(address: &str) -> std::borrow::Cow<'_, str> {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => {
            let s = v6.segments();
            let network = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{network}/64").into()
        }
        _ => address.into(),
    }
}

/// The client's address for `req` (see the module docs); `"unknown"` when there is no peer.
pub fn client_ip(req: &HttpRequest) -> String {
    let peer = req.peer_addr().map(|a| a.ip());
    let resolved = match req.app_data::<web::Data<Platform>>() {
        Some(p) => resolve(
            peer,
            req.headers(),
            &p.settings.server.trusted_proxies,
            p.settings.server.forwarded_header,
        ),
        None => peer,
    };
    resolved.map_or_else(|| "unknown".to_string(), |ip| ip.to_canonical().to_string())
}

/// The client address given the TCP `peer`, the request headers and the proxy configuration.
pub fn resolve(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &CidrList,
    header: ForwardedHeader,
) -> Option<IpAddr> {
    let mut client = peer?;
    if !trusted.contains(client) {
        return Some(client);
    }
    let hops = forwarded_hops(headers, header);
    for hop in hops.iter().rev().take(MAX_HOPS) {
        // A hop a trusted proxy could not name (garbage, `unknown`, obfuscated): nothing beyond
        // it can be attributed, so the last proxy that spoke is the client as far as we know.
        let Some(ip) = hop else {
            return Some(client);
        };
        client = *ip;
        if !trusted.contains(client) {
            return Some(client);
        }
    }
    Some(client)
}

/// Every hop of the configured header, in order (all header lines joined, as RFC 9110 allows).
fn forwarded_hops(headers: &HeaderMap, header: ForwardedHeader) -> Vec<Option<IpAddr>> {
    let name = match header {
        ForwardedHeader::XForwardedFor => "x-forwarded-for",
        ForwardedHeader::Forwarded => "forwarded",
    };
    let mut hops = Vec::new();
    for value in headers.get_all(name) {
        // Elements are decoded one by one: a proxy appends the real address to whatever the
        // client sent on the same line, so a non-ASCII byte in the client's part must not make
        // the proxy's own element unreadable.
        for element in value.as_bytes().split(|b| *b == b',') {
            let Ok(element) = std::str::from_utf8(element) else {
                hops.push(None);
                continue;
            };
            hops.push(match header {
                ForwardedHeader::XForwardedFor => parse_node(element),
                ForwardedHeader::Forwarded => element
                    .split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, v)| parse_node(v)),
            });
        }
    }
    hops
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]:4711`, optionally in double quotes (RFC 7239).
fn parse_node(raw: &str) -> Option<IpAddr> {
    let s = raw.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, _) = rest.split_once(']')?;
        return addr
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|a| IpAddr::V6(a).to_canonical());
    }
    let (addr, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn list(s: &str) -> CidrList {
        serde_json::from_value(serde_json::json!(s)).unwrap()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    const XFF: ForwardedHeader = ForwardedHeader::XForwardedFor;

    /// The client address behind `X-Forwarded-For` for a request from `peer`.
    fn client(peer: &str, h: &HeaderMap, trusted: &CidrList) -> Option<IpAddr> {
        resolve(ip(peer), h, trusted, XFF)
    }

    #[test]
    fn headers_from_untrusted_peers_are_ignored() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(client("203.0.113.9", &h, &list("")), ip("203.0.113.9"));
        assert_eq!(
            client("203.0.113.9", &h, &list("10.0.0.0/8")),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted = list("10.0.0.0/8, 192.168.1.1");
        // The client claimed 1.2.3.4; the edge proxy appended the real address 198.51.100.7,
        // an inner trusted proxy appended the edge's.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 198.51.100.7, 10.1.2.3")]);
        assert_eq!(client("192.168.1.1", &h, &trusted), ip("198.51.100.7"));
        // Several header lines are one list.
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(client("10.9.9.9", &h, &trusted), ip("198.51.100.7"));
        // No header: the proxy itself.
        assert_eq!(
            client("10.9.9.9", &HeaderMap::new(), &trusted),
            ip("10.9.9.9")
        );
        // Only trusted hops: the leftmost.
        let h = headers(&[("x-forwarded-for", "10.0.0.5, 10.0.0.6")]);
        assert_eq!(client("10.9.9.9", &h, &trusted), ip("10.0.0.5"));
        // Garbage where the client should be: the last proxy that spoke.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, nonsense, 10.0.0.6")]);
        assert_eq!(client("10.9.9.9", &h, &trusted), ip("10.0.0.6"));
        // A non-ASCII byte in the client's part of the line does not hide the real address.
        let mut h = HeaderMap::new();
        h.insert(
            HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_bytes(b"\xff\xfe, 198.51.100.7").unwrap(),
        );
        assert_eq!(client("10.9.9.9", &h, &trusted), ip("198.51.100.7"));
    }

    #[test]
    fn only_the_configured_header_counts() {
        let trusted = list("10.0.0.0/8");
        let h = headers(&[
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(client("10.0.0.1", &h, &trusted), ip("198.51.100.7"));
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            (
                "forwarded",
                r#"for=5.6.7.8, for="[2001:db8::1]:4711";proto=https, for=10.0.0.2"#,
            ),
        ]);
        assert_eq!(
            resolve(ip("10.0.0.1"), &h, &trusted, ForwardedHeader::Forwarded),
            ip("2001:db8::1")
        );
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(
            resolve(ip("10.0.0.1"), &h, &trusted, ForwardedHeader::Forwarded),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn addresses_are_parsed_as_proxies_write_them() {
        assert_eq!(parse_node(" 192.0.2.1:4711 "), ip("192.0.2.1"));
        assert_eq!(parse_node("\"[2001:db8::1]:80\""), ip("2001:db8::1"));
        assert_eq!(parse_node("::ffff:192.0.2.1"), ip("192.0.2.1"));
        assert_eq!(parse_node("2001:db8::1"), ip("2001:db8::1"));
        assert_eq!(parse_node("_hidden"), None);
        assert_eq!(parse_node("192.0.2.1:notaport"), None);
    }

    #[test]
    fn an_ipv6_client_is_throttled_by_its_64() {
        assert_eq!(throttle_unit("203.0.113.7"), "203.0.113.7");
        assert_eq!(throttle_unit("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(
            throttle_unit("2001:db8:1:2:ffff:1:2:3"),
            "2001:db8:1:2::/64"
        );
        assert_eq!(throttle_unit("2001:db8:1:3::1"), "2001:db8:1:3::/64");
        assert_eq!(throttle_unit("::ffff:192.0.2.1"), "::ffff:192.0.2.1");
        assert_eq!(throttle_unit("unknown"), "unknown");
    }

    #[test]
    fn networks_parse_strictly() {
        let l = list("10.0.0.0/8,::1,2001:db8::/32");
        assert!(l.contains("10.200.1.1".parse().unwrap()));
        assert!(l.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!l.contains("11.0.0.1".parse().unwrap()));
        assert!(l.contains("::1".parse().unwrap()));
        assert!(l.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!l.contains("2001:db9::1".parse().unwrap()));
        assert!(list("0.0.0.0/0").contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.1/8", "10.0.0.0/33", "example.com", "10.0.0.0/x"] {
            assert!(
                serde_json::from_value::<CidrList>(serde_json::json!(bad)).is_err(),
                "{bad}"
            );
        }
    }
}
