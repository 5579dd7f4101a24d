//! Where a fetch may go: the pure rules, used by `config::compile` (refuses a tenant URL with
//! a reason) and by the fetcher (refuses a connection to an internal address).

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};
use url::{Host, Url};

/// Which addresses a fetch may connect to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reach {
    /// Public addresses only: a tenant's URL.
    Public,
    /// Any address: URLs the server's owner wrote (trusted issuers, upstream providers), or
    /// tenant URLs the owner allowed to reach internal addresses.
    Any,
}

/// `spec.outbound` of an AuthorizationServer, as compiled.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OutboundConfig {
    /// URL prefixes a tenant-written URL (an AuthClient's `jwksUri`) must start with.
    #[serde(default)]
    pub allowed_url_prefixes: Vec<String>,
    /// Tenant URLs may reach loopback, private and link-local addresses.
    #[serde(default)]
    pub allow_internal_addresses: bool,
}

impl OutboundConfig {
    /// How far a fetch of a tenant URL of this server may reach.
    pub fn client_reach(&self) -> Reach {
        if self.allow_internal_addresses { Reach::Any } else { Reach::Public }
    }
}

/// Addresses a tenant URL must not reach unless the server's owner allows it: loopback,
/// private, shared (CGNAT), link-local (cloud metadata at 169.254.169.254 and fd00:ec2::254),
/// unspecified, multicast, broadcast and reserved ranges, also inside IPv4-mapped and NAT64
/// IPv6 addresses.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let s = v6.segments();
            // 64:ff9b::/96, the NAT64 well-known prefix, carries an IPv4 address.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return is_internal_v4(Ipv4Addr::new(a, b, c, d));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
                || s[..2] == [0x2001, 0xdb8] // documentation
        }
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT), 100.64.0.0/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

/// The address a URL's host names literally (an IP, or `localhost`).
fn literal_address(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        Host::Domain(d) if d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost") => {
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        }
        Host::Domain(_) => None,
    }
}

/// Refuses a URL whose host is literally an address `reach` does not allow.
pub fn check_literal_address(url: &Url, reach: Reach) -> Result<(), String> {
    match literal_address(url) {
        Some(ip) if reach == Reach::Public && is_internal(ip) => Err(format!(
            "{ip} is a loopback, private, link-local or otherwise internal address (spec.outbound.allowInternalAddresses of the server allows them)"
        )),
        _ => Ok(()),
    }
}

/// `url` starts with `prefix`: same scheme, host and port, and the path continues the
/// prefix's path at a segment boundary (so `https://k.example/a` is not a prefix of
/// `https://k.example/ab` nor of `https://k.example.evil.net/a`).
fn has_prefix(url: &Url, prefix: &Url) -> bool {
    if url.scheme() != prefix.scheme()
        || url.host_str() != prefix.host_str()
        || url.port_or_known_default() != prefix.port_or_known_default()
    {
        return false;
    }
    let (path, want) = (url.path(), prefix.path());
    want.ends_with('/') && path.starts_with(want)
        || path == want
        || path.strip_prefix(want).is_some_and(|rest| rest.starts_with('/'))
}

/// Checks a URL a tenant wrote (an AuthClient's `jwksUri`) against the server's outbound
/// rules; returns the URL as it will be fetched (parsed and normalised), or why it is refused.
pub fn check_tenant_url(raw: &str, outbound: &OutboundConfig) -> Result<String, String> {
    let url = Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    let loopback = literal_address(&url).is_some_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return Err(format!("{raw:?} must be an https URL (http only on localhost)")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{raw:?} must not carry credentials"));
    }
    if url.fragment().is_some() {
        return Err(format!("{raw:?} must not have a fragment"));
    }
    let allowed = outbound
        .allowed_url_prefixes
        .iter()
        .filter_map(|p| Url::parse(p).ok().filter(|p| p.query().is_none() && p.fragment().is_none()))
        .any(|p| has_prefix(&url, &p));
    if !allowed {
        return Err(format!(
            "{raw:?} is not under any URL prefix in spec.outbound.allowedUrlPrefixes of the server (ask its owner to add one, or register the keys inline in authentication.jwks)"
        ));
    }
    check_literal_address(&url, outbound.client_reach()).map_err(|why| format!("{raw:?}: {why}"))?;
    Ok(url.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(prefixes: &[&str], internal: bool) -> OutboundConfig {
        OutboundConfig {
            allowed_url_prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
            allow_internal_addresses: internal,
        }
    }

    #[test]
    fn internal_ranges_include_cloud_metadata_and_mapped_forms() {
        for ip in [
            "169.254.169.254",
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn nothing_is_allowed_by_default() {
        let why = check_tenant_url("https://keys.example.com/jwks", &OutboundConfig::default()).unwrap_err();
        assert!(why.contains("spec.outbound.allowedUrlPrefixes"), "{why}");
    }

    #[test]
    fn prefixes_match_on_scheme_host_port_and_whole_path_segments() {
        let o = allow(&["https://keys.example.com/team-a", "https://other.example.com/"], false);
        assert!(check_tenant_url("https://keys.example.com/team-a/jwks.json", &o).is_ok());
        assert!(check_tenant_url("https://keys.example.com/team-a", &o).is_ok());
        assert!(check_tenant_url("https://other.example.com/anything", &o).is_ok());
        for refused in [
            "https://keys.example.com/team-ab/jwks.json",
            "https://keys.example.com.evil.net/team-a/jwks",
            "https://keys.example.com:8443/team-a/jwks",
            "http://keys.example.com/team-a/jwks",
            "https://keys.example.com/team-a/../team-b/jwks",
            "https://user:pw@keys.example.com/team-a/jwks",
            "ftp://keys.example.com/team-a/jwks",
            "not a url",
        ] {
            assert!(check_tenant_url(refused, &o).is_err(), "{refused}");
        }
        assert_eq!(
            check_tenant_url("https://KEYS.example.com/team-a/x/../jwks", &o).unwrap(),
            "https://keys.example.com/team-a/jwks"
        );
    }

    #[test]
    fn internal_addresses_need_the_owners_permission_even_when_listed() {
        let o = allow(&["https://169.254.169.254/", "http://127.0.0.1:9000/", "https://[fd00:ec2::254]/"], false);
        for url in
            ["https://169.254.169.254/latest/meta-data", "http://127.0.0.1:9000/jwks", "https://[fd00:ec2::254]/x"]
        {
            let why = check_tenant_url(url, &o).unwrap_err();
            assert!(why.contains("allowInternalAddresses"), "{why}");
        }
        let o = allow(&["http://127.0.0.1:9000/"], true);
        assert!(check_tenant_url("http://127.0.0.1:9000/jwks", &o).is_ok());
    }
}
