//! Where webhooks may be sent (server-side request forgery rules).
//!
//! - A target URL is `http` or `https`, at most [`URL_CHARS_MAX`] characters, with a
//!   host, without user information (a password in a URL would be stored and shown in
//!   the clear) and without a fragment.
//! - By default only public addresses are reachable: loopback, private, shared (CGNAT),
//!   link-local, unique-local, documentation, benchmarking, reserved, and the IPv6
//!   forms that embed such an IPv4 address (mapped, NAT64, 6to4) are refused.
//!   `--webhook-allow-cidrs` opens networks that would otherwise be refused (an internal
//!   receiver, or 127.0.0.1/32 in tests).
//! - Never reachable, whatever the allow-list says: the unspecified address, broadcast,
//!   multicast, and the cloud metadata endpoints.
//! - `--webhook-allow-hosts`, when set, restricts the host names themselves
//!   (`hooks.example.com`, or `*.example.com` for its subdomains).
//!
//! An IP literal in a URL is checked when the subscription is created (and again at
//! each delivery). A host name is checked at each delivery: it is resolved, every
//! address it resolves to must pass, and the connection goes to those very addresses
//! (the resolver hands them to the client), so a name cannot pass the check with one
//! address and be connected with another (DNS rebinding).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use url::{Host, Url};

/// The longest target URL.
pub const URL_CHARS_MAX: usize = 2048;
/// Most entries in each allow-list.
pub const ALLOW_ENTRIES_MAX: usize = 256;
/// The longest host name.
const HOST_CHARS_MAX: usize = 253;

/// Why a target was refused. The messages name the rule, never the URL (it may hold a
/// token in its query).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not a URL.
    #[error("url is not a valid absolute URL")]
    Malformed,
    /// Over [`URL_CHARS_MAX`].
    #[error("url is longer than 2048 characters")]
    TooLong,
    /// Neither http nor https.
    #[error("url must be http or https")]
    Scheme,
    /// `user:password@`.
    #[error("url must not contain user information")]
    UserInfo,
    /// `#fragment`.
    #[error("url must not contain a fragment")]
    Fragment,
    /// No host.
    #[error("url has no host")]
    NoHost,
    /// The host name is not in `--webhook-allow-hosts`.
    #[error("the host is not in the webhook host allow-list")]
    HostNotAllowed,
    /// An address the policy refuses.
    #[error("the target address is not allowed ({0})")]
    Address(&'static str),
}

/// A network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `address` or `address/prefix`.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = address.parse().ok()?;
        let max = match network {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
        };
        Some(Cidr { network, prefix })
    }

    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Cidr {
        Cidr {
            network: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(ip) & mask == u32::from(net) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(ip) & mask == u128::from(net) & mask
            }
            (IpAddr::V4(_), IpAddr::V6(_)) | (IpAddr::V6(_), IpAddr::V4(_)) => false,
        }
    }
}

/// IPv4 ranges that are not the public internet, with the reason given when refused.
const V4_NOT_PUBLIC: &[(Cidr, &str)] = &[
    (Cidr::v4(0, 0, 0, 0, 8), "this-network"),
    (Cidr::v4(10, 0, 0, 0, 8), "private"),
    (Cidr::v4(100, 64, 0, 0, 10), "shared"),
    (Cidr::v4(127, 0, 0, 0, 8), "loopback"),
    (Cidr::v4(169, 254, 0, 0, 16), "link-local"),
    (Cidr::v4(172, 16, 0, 0, 12), "private"),
    (Cidr::v4(192, 0, 0, 0, 24), "reserved"),
    (Cidr::v4(192, 0, 2, 0, 24), "documentation"),
    (Cidr::v4(192, 88, 99, 0, 24), "reserved"),
    (Cidr::v4(192, 168, 0, 0, 16), "private"),
    (Cidr::v4(198, 18, 0, 0, 15), "benchmarking"),
    (Cidr::v4(198, 51, 100, 0, 24), "documentation"),
    (Cidr::v4(203, 0, 113, 0, 24), "documentation"),
    (Cidr::v4(240, 0, 0, 0, 4), "reserved"),
];

/// Cloud metadata endpoints: refused even inside an allowed network.
const METADATA: &[IpAddr] = &[
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
];

/// The IPv4 address an IPv6 address stands for, where it embeds one: IPv4-mapped
/// (`::ffff:a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let segments = ip.segments();
    let low =
        |s: &[u16]| Ipv4Addr::new((s[0] >> 8) as u8, s[0] as u8, (s[1] >> 8) as u8, s[1] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low(&segments[6..]));
    }
    if segments[0] == 0x2002 {
        return Some(low(&segments[1..3]));
    }
    None
}

/// Why `ip` can never be a target, whatever the allow-list: unspecified, broadcast,
/// multicast, metadata.
fn never(ip: IpAddr) -> Option<&'static str> {
    if METADATA.contains(&ip) {
        return Some("metadata");
    }
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_unspecified() {
                Some("unspecified")
            } else if v4.is_broadcast() {
                Some("broadcast")
            } else if v4.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else {
                embedded_v4(v6).and_then(|v4| never(IpAddr::V4(v4)))
            }
        }
    }
}

/// Why `ip` is not a public internet address, if it is not.
fn not_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => V4_NOT_PUBLIC
            .iter()
            .find(|(cidr, _)| cidr.contains(IpAddr::V4(v4)))
            .map(|(_, reason)| *reason),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return not_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if first & 0xfe00 == 0xfc00 {
                Some("unique-local")
            } else if first & 0xffc0 == 0xfe80 || first & 0xffc0 == 0xfec0 {
                Some("link-local")
            } else if v6.segments()[..2] == [0x2001, 0x0db8] {
                Some("documentation")
            } else if v6.segments()[..2] == [0x2001, 0] {
                // Teredo: the IPv4 behind it cannot be checked.
                Some("reserved")
            } else if v6.segments()[..4] == [0x100, 0, 0, 0]
                || v6.segments()[..3] == [0x64, 0xff9b, 1]
                || v6.segments()[..6] == [0, 0, 0, 0, 0, 0]
            {
                // Discard-only, local-use NAT64, and IPv4-compatible (deprecated).
                Some("reserved")
            } else {
                None
            }
        }
    }
}

/// A host name pattern of `--webhook-allow-hosts`: `hooks.example.com` (that host) or
/// `*.example.com` (its subdomains, not itself).
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    Subdomains(String),
}

impl HostPattern {
    fn parse(text: &str) -> Option<HostPattern> {
        let text = text.trim().trim_end_matches('.').to_ascii_lowercase();
        let (pattern, name) = match text.strip_prefix("*.") {
            Some(rest) => (HostPattern::Subdomains(rest.to_owned()), rest.to_owned()),
            None => (HostPattern::Exact(text.clone()), text),
        };
        let valid = !name.is_empty()
            && name.len() <= HOST_CHARS_MAX
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        valid.then_some(pattern)
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host == name,
            HostPattern::Subdomains(name) => host
                .strip_suffix(name.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

/// The configured target rules.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    allow_cidrs: Vec<Cidr>,
    allow_hosts: Vec<HostPattern>,
}

impl TargetPolicy {
    /// The rules from the two allow-lists; `Err` names the first bad entry's position.
    pub fn new(allow_cidrs: &[String], allow_hosts: &[String]) -> Result<Self, String> {
        if allow_cidrs.len() > ALLOW_ENTRIES_MAX || allow_hosts.len() > ALLOW_ENTRIES_MAX {
            return Err(format!("at most {ALLOW_ENTRIES_MAX} entries"));
        }
        let cidrs = allow_cidrs
            .iter()
            .filter(|e| !e.trim().is_empty())
            .enumerate()
            .map(|(n, e)| {
                Cidr::parse(e).ok_or_else(|| {
                    format!(
                        "--webhook-allow-cidrs: entry {} is not an address or CIDR",
                        n + 1
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let hosts = allow_hosts
            .iter()
            .filter(|e| !e.trim().is_empty())
            .enumerate()
            .map(|(n, e)| {
                HostPattern::parse(e).ok_or_else(|| {
                    format!(
                        "--webhook-allow-hosts: entry {} is not a host name or *.domain",
                        n + 1
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            allow_cidrs: cidrs,
            allow_hosts: hosts,
        })
    }

    /// Whether an address may be connected to; `Err` names the rule that refuses it.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), &'static str> {
        if let Some(reason) = never(ip) {
            return Err(reason);
        }
        if self.allow_cidrs.iter().any(|cidr| cidr.contains(ip)) {
            return Ok(());
        }
        // An IPv4-mapped address is allowed as the IPv4 address it stands for.
        if let IpAddr::V6(v6) = ip {
            if let Some(v4) = v6.to_ipv4_mapped() {
                if self
                    .allow_cidrs
                    .iter()
                    .any(|cidr| cidr.contains(IpAddr::V4(v4)))
                {
                    return Ok(());
                }
            }
        }
        match not_public(ip) {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }

    /// Whether a host name passes `--webhook-allow-hosts` (any name when it is empty).
    pub fn check_host_name(&self, host: &str) -> Result<(), TargetError> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if self.allow_hosts.is_empty() || self.allow_hosts.iter().any(|p| p.matches(&host)) {
            Ok(())
        } else {
            Err(TargetError::HostNotAllowed)
        }
    }

    /// Checks a target URL as far as it can be checked without resolving it: its
    /// shape, its host against the host allow-list, and an IP literal against the
    /// address rules. Returns the URL in its normalised form.
    pub fn check_url(&self, text: &str) -> Result<Url, TargetError> {
        if text.len() > URL_CHARS_MAX {
            return Err(TargetError::TooLong);
        }
        let url = Url::parse(text).map_err(|_| TargetError::Malformed)?;
        if url.as_str().len() > URL_CHARS_MAX {
            return Err(TargetError::TooLong);
        }
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TargetError::Scheme);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(TargetError::UserInfo);
        }
        if url.fragment().is_some() {
            return Err(TargetError::Fragment);
        }
        match url.host() {
            None => Err(TargetError::NoHost),
            Some(Host::Domain(name)) => {
                self.check_host_name(name)?;
                Ok(url)
            }
            Some(Host::Ipv4(v4)) => {
                self.check_host_name(&v4.to_string())?;
                self.check_ip(IpAddr::V4(v4))
                    .map_err(TargetError::Address)?;
                Ok(url)
            }
            Some(Host::Ipv6(v6)) => {
                self.check_host_name(&v6.to_string())?;
                self.check_ip(IpAddr::V6(v6))
                    .map_err(TargetError::Address)?;
                Ok(url)
            }
        }
    }
}

/// The address rule broken by a resolved name (the error a [`CheckedResolver`] fails
/// with, found again in the client's error chain).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the target address is not allowed ({0})")]
pub struct AddressRefused(pub &'static str);

/// The name resolved to no address.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the host name resolved to no address")]
pub struct NoAddress;

/// The HTTP client's resolver: resolves with the system resolver, refuses the whole
/// name if any of its addresses breaks the policy, and hands the client exactly the
/// addresses it checked.
#[derive(Debug, Clone)]
pub struct CheckedResolver {
    policy: Arc<TargetPolicy>,
}

impl CheckedResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: Arc<TargetPolicy>) -> Self {
        Self { policy }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.policy);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            if policy.check_host_name(&host).is_err() {
                return Err(Box::new(AddressRefused("host")) as BoxError);
            }
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| Box::new(e) as BoxError)?
                .collect();
            if addresses.is_empty() {
                return Err(Box::new(NoAddress) as BoxError);
            }
            for address in &addresses {
                if let Err(reason) = policy.check_ip(address.ip()) {
                    return Err(Box::new(AddressRefused(reason)) as BoxError);
                }
            }
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(cidrs: &[&str], hosts: &[&str]) -> TargetPolicy {
        let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        TargetPolicy::new(&owned(cidrs), &owned(hosts)).expect("policy")
    }

    fn check(policy: &TargetPolicy, ip: &str, expected: Result<(), &'static str>) {
        let address: IpAddr = ip.parse().expect("ip");
        assert_eq!(policy.check_ip(address), expected, "{ip}");
    }

    #[test]
    fn addresses_by_default() {
        let p = policy(&[], &[]);
        check(&p, "93.184.216.34", Ok(()));
        check(&p, "2606:2800:220:1:248:1893:25c8:1946", Ok(()));
        check(&p, "127.0.0.1", Err("loopback"));
        check(&p, "127.1.2.3", Err("loopback"));
        check(&p, "::1", Err("loopback"));
        check(&p, "10.0.0.1", Err("private"));
        check(&p, "172.16.0.1", Err("private"));
        check(&p, "172.31.255.255", Err("private"));
        check(&p, "172.32.0.1", Ok(()));
        check(&p, "192.168.1.1", Err("private"));
        check(&p, "100.64.0.1", Err("shared"));
        check(&p, "169.254.1.1", Err("link-local"));
        check(&p, "169.254.169.254", Err("metadata"));
        check(&p, "100.100.100.200", Err("metadata"));
        check(&p, "fd00:ec2::254", Err("metadata"));
        check(&p, "0.0.0.0", Err("unspecified"));
        check(&p, "::", Err("unspecified"));
        check(&p, "255.255.255.255", Err("broadcast"));
        check(&p, "224.0.0.1", Err("multicast"));
        check(&p, "ff02::1", Err("multicast"));
        check(&p, "fc00::1", Err("unique-local"));
        check(&p, "fd12:3456::1", Err("unique-local"));
        check(&p, "fe80::1", Err("link-local"));
        check(&p, "2001:db8::1", Err("documentation"));
        check(&p, "2001:0:4136:e378::1", Err("reserved"));
        check(&p, "::ffff:127.0.0.1", Err("loopback"));
        check(&p, "::ffff:10.1.2.3", Err("private"));
        check(&p, "::ffff:169.254.169.254", Err("metadata"));
        check(&p, "::ffff:93.184.216.34", Ok(()));
        check(&p, "64:ff9b::a9fe:a9fe", Err("metadata"));
        check(&p, "64:ff9b::c0a8:0101", Err("private"));
        check(&p, "2002:7f00:0001::1", Err("loopback"));
        check(&p, "::127.0.0.1", Err("reserved"));
        check(&p, "240.0.0.1", Err("reserved"));
        check(&p, "198.18.0.1", Err("benchmarking"));
    }

    #[test]
    fn the_allow_list_opens_networks_but_never_metadata() {
        let p = policy(
            &["127.0.0.1/32", "10.20.0.0/16", "169.254.0.0/16", "::1"],
            &[],
        );
        check(&p, "127.0.0.1", Ok(()));
        check(&p, "::ffff:127.0.0.1", Ok(()));
        check(&p, "127.0.0.2", Err("loopback"));
        check(&p, "10.20.3.4", Ok(()));
        check(&p, "10.21.0.1", Err("private"));
        check(&p, "::1", Ok(()));
        check(&p, "169.254.1.1", Ok(()));
        check(&p, "169.254.169.254", Err("metadata"));
        let everything = policy(&["0.0.0.0/0", "::/0"], &[]);
        check(&everything, "169.254.169.254", Err("metadata"));
        check(&everything, "0.0.0.0", Err("unspecified"));
        check(&everything, "224.0.0.1", Err("multicast"));
        check(&everything, "10.0.0.1", Ok(()));
    }

    #[test]
    fn bad_allow_list_entries_are_refused() {
        let owned = |s: &str| vec![s.to_owned()];
        assert!(TargetPolicy::new(&owned("10.0.0.0/33"), &[]).is_err());
        assert!(TargetPolicy::new(&owned("not-an-ip"), &[]).is_err());
        assert!(TargetPolicy::new(&owned("::1/129"), &[]).is_err());
        assert!(TargetPolicy::new(&[], &owned("bad host!")).is_err());
        assert!(TargetPolicy::new(&[], &owned("*.")).is_err());
        assert!(TargetPolicy::new(&owned("10.0.0.0/8"), &owned("*.example.com")).is_ok());
    }

    #[test]
    fn urls() {
        let p = policy(&[], &[]);
        let check = |url: &str, expected: Result<(), TargetError>| {
            assert_eq!(p.check_url(url).map(|_| ()), expected, "{url}");
        };
        check("https://hooks.example.com/in?x=1", Ok(()));
        check("http://localhost:8080/", Ok(()));
        check("ftp://example.com/", Err(TargetError::Scheme));
        check("file:///etc/passwd", Err(TargetError::Scheme));
        check("not a url", Err(TargetError::Malformed));
        check("/relative", Err(TargetError::Malformed));
        check("https://user:pw@example.com/", Err(TargetError::UserInfo));
        check("https://user@example.com/", Err(TargetError::UserInfo));
        check("https://example.com/#top", Err(TargetError::Fragment));
        check("http://127.0.0.1:9/", Err(TargetError::Address("loopback")));
        check("http://2130706433/", Err(TargetError::Address("loopback")));
        check("http://0x7f.1/", Err(TargetError::Address("loopback")));
        check("http://[::1]/", Err(TargetError::Address("loopback")));
        check(
            "http://[::ffff:7f00:1]/",
            Err(TargetError::Address("loopback")),
        );
        check(
            "http://169.254.169.254/latest",
            Err(TargetError::Address("metadata")),
        );
        check("http://10.0.0.1/", Err(TargetError::Address("private")));
        let long = format!("https://example.com/{}", "a".repeat(URL_CHARS_MAX));
        check(&long, Err(TargetError::TooLong));
    }

    #[test]
    fn host_allow_list() {
        let p = policy(&[], &["hooks.example.com", "*.partner.test"]);
        assert_eq!(
            p.check_url("https://hooks.example.com/x").map(|_| ()),
            Ok(())
        );
        assert_eq!(
            p.check_url("https://HOOKS.example.com./x").map(|_| ()),
            Ok(())
        );
        assert_eq!(p.check_url("https://a.partner.test/").map(|_| ()), Ok(()));
        assert_eq!(
            p.check_url("https://partner.test/").map(|_| ()),
            Err(TargetError::HostNotAllowed)
        );
        assert_eq!(
            p.check_url("https://evilpartner.test/").map(|_| ()),
            Err(TargetError::HostNotAllowed)
        );
        assert_eq!(
            p.check_url("https://example.com/").map(|_| ()),
            Err(TargetError::HostNotAllowed)
        );
        assert_eq!(
            p.check_url("https://93.184.216.34/").map(|_| ()),
            Err(TargetError::HostNotAllowed)
        );
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_with_a_refused_address() {
        use reqwest::dns::Resolve;
        let resolver = CheckedResolver::new(Arc::new(policy(&[], &[])));
        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        let error = match resolver.resolve(name).await {
            Ok(_) => panic!("localhost resolved to an allowed address"),
            Err(error) => error,
        };
        assert!(error.downcast_ref::<AddressRefused>().is_some(), "{error}");
        let open = CheckedResolver::new(Arc::new(policy(&["127.0.0.0/8", "::1"], &[])));
        let name: reqwest::dns::Name = "localhost".parse().expect("name");
        let addresses: Vec<SocketAddr> = match open.resolve(name).await {
            Ok(addresses) => addresses.collect(),
            Err(error) => panic!("{error}"),
        };
        assert!(!addresses.is_empty());
        assert!(addresses.iter().all(|a| a.ip().is_loopback()));
    }
}
