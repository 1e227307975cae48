//! Where Web Push may send: a subscription's endpoint is a URL a client chose, so without a
//! guard the service would make requests for anyone to anything it can reach (its own
//! network, the cloud metadata address). An endpoint must be `https` on a host that
//! resolves to public addresses only, optionally from an allow-list of push services; the
//! connection goes to the addresses that were checked (no second lookup an attacker's DNS
//! could answer differently), and redirects are not followed.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Why an endpoint is refused; the text is what a client (and the stored delivery) sees,
/// the same whatever was probed, so it tells nothing about the network behind.
pub const REFUSED: &str = "the subscription endpoint is not an allowed push service";

/// Which push endpoints are allowed.
#[derive(Debug, Clone, Default)]
pub struct EndpointPolicy {
    /// `http://` endpoints too (local test endpoints).
    pub allow_http: bool,
    /// Loopback and private addresses too (local test endpoints).
    pub allow_private: bool,
    /// Hosts allowed (`push.example.com`, or `*.example.com` for its subdomains); empty: any
    /// public host.
    pub allowed_hosts: Vec<String>,
}

impl EndpointPolicy {
    /// The endpoint's URL when its scheme, host and (for an address literal) address are
    /// allowed. Names are checked when they are resolved ([`EndpointPolicy::resolve`]).
    pub fn check_url(&self, endpoint: &str) -> Result<http::Uri, &'static str> {
        let uri: http::Uri = endpoint.parse().map_err(|_| REFUSED)?;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if self.allow_http => {}
            _ => return Err(REFUSED),
        }
        let host = uri.host().ok_or(REFUSED)?;
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(REFUSED);
        }
        if !self.host_allowed(host) {
            return Err(REFUSED);
        }
        if let Some(ip) = literal(host)
            && !self.address_allowed(ip)
        {
            return Err(REFUSED);
        }
        Ok(uri)
    }

    /// The addresses of `host` if every one of them is allowed. A name that resolves to a
    /// single forbidden address among public ones is refused whole: which address a
    /// connection picks is not ours to choose.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, &'static str> {
        if let Some(ip) = literal(host) {
            return if self.address_allowed(ip) { Ok(vec![SocketAddr::new(ip, port)]) } else { Err(REFUSED) };
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await.map_err(|_| REFUSED)?.collect();
        if addrs.is_empty() || addrs.iter().any(|a| !self.address_allowed(a.ip())) {
            return Err(REFUSED);
        }
        Ok(addrs)
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allowed_hosts.is_empty()
            || self.allowed_hosts.iter().any(|allowed| match allowed.strip_prefix("*.") {
                Some(parent) => host.strip_suffix(parent).is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
                None => host == allowed.to_ascii_lowercase(),
            })
    }

    fn address_allowed(&self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip)
    }

    /// A resolver for the HTTP client that hands out only the addresses this policy
    /// allows, so the connection goes where the check said.
    pub fn resolver(&self) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver { policy: self.clone() })
    }
}

/// See [`EndpointPolicy::resolver`].
#[derive(Debug)]
pub struct GuardedResolver {
    policy: EndpointPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            // The port is replaced by the client's own; 0 only satisfies the lookup.
            let addrs = policy.resolve(name.as_str(), 0).await.map_err(|_| Box::new(Refused))?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The resolver's refusal, told apart from other connection failures by its type.
#[derive(Debug)]
pub struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REFUSED)
    }
}

impl std::error::Error for Refused {}

/// Whether the guard refused the connection that failed with `error`.
pub fn refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(c) = cause {
        if c.is::<Refused>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// An IP address written as the host (`[::1]` included).
fn literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// Whether `ip` is an address of the public internet: not loopback, private, shared (CGNAT),
/// link-local (the cloud metadata service lives there), multicast, documentation,
/// benchmarking, reserved or unspecified, in either family (an IPv4 address mapped or
/// translated into IPv6 is judged as IPv4).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                return is_public_v4(Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8));
            }
            is_public_v6(v6)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
        || ip.segments()[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible (deprecated) and the like
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2001:db8::1",
        ] {
            assert!(!is_public(ip(private)), "{private} is not public");
        }
        for public in ["8.8.8.8", "142.250.74.106", "2a00:1450:4001:80b::200a", "::ffff:8.8.8.8"] {
            assert!(is_public(ip(public)), "{public} is public");
        }
    }

    #[tokio::test]
    async fn endpoints_on_private_networks_are_refused_by_address_and_by_name() {
        let policy = EndpointPolicy::default();
        for endpoint in [
            "https://127.0.0.1/push/1",
            "https://10.0.0.1/push/1",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]:8443/push",
            "https://[::ffff:10.0.0.1]/push",
            "http://push.example.com/x",
            "ftp://push.example.com/x",
            "https://user@push.example.com/x",
            "not a url",
        ] {
            assert_eq!(policy.check_url(endpoint).err(), Some(REFUSED), "{endpoint}");
        }
        // A name is judged by what it resolves to.
        assert_eq!(policy.resolve("localhost", 443).await.err(), Some(REFUSED));
        assert!(policy.check_url("https://push.example.com/x").is_ok());

        let local = EndpointPolicy { allow_http: true, allow_private: true, ..Default::default() };
        assert!(local.check_url("http://127.0.0.1:9000/push/1").is_ok());
        assert!(local.resolve("localhost", 443).await.is_ok());
    }

    #[test]
    fn an_allow_list_names_hosts_or_their_subdomains() {
        let policy = EndpointPolicy {
            allowed_hosts: vec!["fcm.googleapis.com".into(), "*.push.services.mozilla.com".into()],
            ..Default::default()
        };
        assert!(policy.check_url("https://fcm.googleapis.com/fcm/send/x").is_ok());
        assert!(policy.check_url("https://updates.push.services.mozilla.com/wpush/v2/x").is_ok());
        for refused in [
            "https://push.services.mozilla.com/x",
            "https://evilpush.services.mozilla.com/x",
            "https://fcm.googleapis.com.evil.example/x",
            "https://example.com/x",
        ] {
            assert_eq!(policy.check_url(refused).err(), Some(REFUSED), "{refused}");
        }
    }
}
