//! Who a request is from (`http.trusted_proxies`): a request whose peer is a trusted proxy
//! is attributed to the right-most untrusted hop of its `Forwarded` (RFC 7239) or, when it
//! has none, `X-Forwarded-For` header; a request from anyone else is attributed to its
//! peer, whatever headers it carries (they are forgeable).
//!
//! Pure: header values in, an address out.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

/// Most header values of each kind kept for one request (a longer chain is cut at its
/// right end, which is the part that matters).
const MAX_VALUES: usize = 16;

/// The client address a request is attributed to, put on every routed request by
/// `output::shared::http_serve` (limits, logs and the API guard use it, never the raw peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// `http.trusted_proxies` (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Arc<[IpNet]>,
}

/// The forwarding headers of one request, as they came.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwarding {
    forwarded: Vec<String>,
    x_forwarded_for: Vec<String>,
}

impl Forwarding {
    /// Keeps `value` if `name` is `Forwarded` or `X-Forwarded-For` (any case).
    pub fn add_header(&mut self, name: &str, value: &[u8]) {
        let list = if name.eq_ignore_ascii_case("forwarded") {
            &mut self.forwarded
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            &mut self.x_forwarded_for
        } else {
            return;
        };
        if list.len() < MAX_VALUES {
            list.push(String::from_utf8_lossy(value).into_owned());
        }
    }

    /// The forwarding headers of `headers`.
    pub fn from_headers(headers: &axum::http::HeaderMap) -> Forwarding {
        let mut forwarding = Forwarding::default();
        for name in ["forwarded", "x-forwarded-for"] {
            for value in headers.get_all(name) {
                forwarding.add_header(name, value.as_bytes());
            }
        }
        forwarding
    }

    /// The hops the headers name, left (the original client) to right (the last proxy);
    /// an entry that is no address (`unknown`, an obfuscated `_name`) is `None`.
    fn hops(&self) -> Vec<Option<IpAddr>> {
        if !self.forwarded.is_empty() {
            return self
                .forwarded
                .iter()
                .flat_map(|value| value.split(','))
                .map(forwarded_for)
                .collect();
        }
        self.x_forwarded_for
            .iter()
            .flat_map(|value| value.split(','))
            .map(|hop| parse_node(hop.trim()))
            .collect()
    }
}

impl TrustedProxies {
    /// Trusts the networks `nets`.
    pub fn new(nets: &[IpNet]) -> TrustedProxies {
        TrustedProxies { nets: nets.into() }
    }

    /// Whether `ip` is a trusted proxy (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The address a request from `peer` with `forwarding` is attributed to: `peer` unless
    /// it is trusted; then, walking the hops from the right, the first one that is not
    /// trusted. A hop that is no address stops the walk at the last trusted one (the proxy
    /// vouches for nothing further); all hops trusted: the left-most.
    pub fn client(&self, peer: IpAddr, forwarding: &Forwarding) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for hop in forwarding.hops().into_iter().rev() {
            let Some(hop) = hop.map(canonical) else {
                return client;
            };
            client = hop;
            if !self.trusts(hop) {
                return hop;
            }
        }
        client
    }
}

/// The `for=` node of one `Forwarded` element (`for=192.0.2.60;proto=http;by=…`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        parse_node(value.trim().trim_matches('"'))
    })
}

/// An address with or without a port: `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`,
/// `[2001:db8::1]:80`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, port) = node.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse().ok()
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> Forwarding {
        let mut forwarding = Forwarding::default();
        for (name, value) in pairs {
            forwarding.add_header(name, value.as_bytes());
        }
        forwarding
    }

    proptest::proptest! {
        /// Any header bytes give an address (the peer or one the headers name), never a
        /// panic.
        #[test]
        fn any_forwarding_header_is_read_without_panic(
            forwarded in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80), 0..4),
            xff in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80), 0..4),
        ) {
            let proxies = TrustedProxies::new(&["0.0.0.0/0".parse().unwrap()]);
            let mut forwarding = Forwarding::default();
            for value in &forwarded {
                forwarding.add_header("Forwarded", value);
            }
            for value in &xff {
                forwarding.add_header("X-Forwarded-For", value);
            }
            let _client = proxies.client(ip("10.0.0.1"), &forwarding);
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let proxies = TrustedProxies::new(&["10.0.0.0/8".parse().unwrap()]);
        let forged = headers(&[("X-Forwarded-For", "1.2.3.4"), ("Forwarded", "for=5.6.7.8")]);
        assert_eq!(
            proxies.client(ip("203.0.113.9"), &forged),
            ip("203.0.113.9")
        );
        let none = TrustedProxies::default();
        assert_eq!(none.client(ip("10.0.0.1"), &forged), ip("10.0.0.1"));
    }

    #[test]
    fn a_trusted_proxy_names_the_right_most_untrusted_hop() {
        let proxies =
            TrustedProxies::new(&["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]);
        // the client forged its left part; the proxies appended the real hops
        let xff = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.1.1")]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &xff), ip("198.51.100.7"));
        assert_eq!(
            proxies.client(ip("::ffff:10.0.0.2"), &xff),
            ip("198.51.100.7")
        );
        // several header lines are one list
        let split = headers(&[
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-For", "198.51.100.7:5555"),
        ]);
        assert_eq!(proxies.client(ip("::1"), &split), ip("198.51.100.7"));
        // Forwarded wins over X-Forwarded-For
        let both = headers(&[
            (
                "Forwarded",
                "for=192.0.2.43, for=\"[2001:db8:cafe::17]:4711\";proto=https",
            ),
            ("X-Forwarded-For", "198.51.100.7"),
        ]);
        assert_eq!(
            proxies.client(ip("10.0.0.2"), &both),
            ip("2001:db8:cafe::17")
        );
        // all hops trusted: the left-most; no header: the proxy itself
        let inner = headers(&[("X-Forwarded-For", "10.9.9.9, 10.1.1.1")]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &inner), ip("10.9.9.9"));
        assert_eq!(
            proxies.client(ip("10.0.0.2"), &Forwarding::default()),
            ip("10.0.0.2")
        );
        // a hop that is no address: the last trusted one
        let hidden = headers(&[("Forwarded", "for=198.51.100.7, for=unknown, for=10.1.1.1")]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &hidden), ip("10.1.1.1"));
        let junk = headers(&[("X-Forwarded-For", "not an address")]);
        assert_eq!(proxies.client(ip("10.0.0.2"), &junk), ip("10.0.0.2"));
    }
}
