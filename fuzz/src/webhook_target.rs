//! `webhook_target`: webhook URLs against `TargetPolicy::check_url` (the SSRF rules of
//! `ledger_api::webhooks::target`), under the default policy, allow lists of networks
//! and of hosts, and allow lists read from the input.
//!
//! What must hold: building a policy and checking a URL never panic; an accepted URL is
//! http or https, has a host, no user information, no fragment, and at most
//! `URL_CHARS_MAX` characters; and when its host is an IP literal, the address is
//! public by the rules the module documents (checked here independently of it) unless an
//! allowed network holds it, and never a metadata endpoint, the unspecified address,
//! broadcast or multicast (nor their IPv4-mapped, NAT64 and 6to4 forms), allowed or not.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use arbitrary::Unstructured;
use ledger_api::webhooks::target::{TargetPolicy, URL_CHARS_MAX};
use url::Host;

/// The fixed policies: allowed networks, allowed hosts.
pub const POLICIES: &[(&[&str], &[&str])] = &[
    (&[], &[]),
    (
        &["127.0.0.1/32", "10.20.0.0/16", "169.254.0.0/16", "::1"],
        &[],
    ),
    (&["0.0.0.0/0", "::/0"], &[]),
    (&[], &["hooks.example.com", "*.partner.test"]),
];

/// How the rest of the input becomes a URL.
pub const MODES: &[(&str, &str)] = &[
    ("", ""),
    ("http://", "/"),
    ("https://[", "]/"),
    ("http://", ""),
];

/// Most allow-list entries read from the input.
const ENTRIES_MAX: usize = 4;

fn owned(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn fixed_policies() -> &'static [TargetPolicy] {
    static BUILT: OnceLock<Vec<TargetPolicy>> = OnceLock::new();
    BUILT.get_or_init(|| {
        POLICIES
            .iter()
            .map(
                |(cidrs, hosts)| match TargetPolicy::new(&owned(cidrs), &owned(hosts)) {
                    Ok(policy) => policy,
                    Err(e) => panic!("fixed policy {cidrs:?} {hosts:?}: {e}"),
                },
            )
            .collect()
    })
}

/// An allowed network, parsed here as the flag documents it (`address` or
/// `address/prefix`).
#[derive(Debug, Clone, Copy)]
struct Network {
    address: IpAddr,
    prefix: u32,
}

impl Network {
    fn parse(text: &str) -> Option<Network> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().ok()?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u32>().ok().filter(|p| *p <= max)?,
        };
        Some(Network { address, prefix })
    }

    fn holds(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let shift = 32 - self.prefix;
                u64::from(u32::from(net)) >> shift == u64::from(u32::from(ip)) >> shift
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let shift = 128 - self.prefix;
                let (net, ip) = (u128::from(net), u128::from(ip));
                shift == 128 || net >> shift == ip >> shift
            }
            (IpAddr::V4(_), IpAddr::V6(_)) | (IpAddr::V6(_), IpAddr::V4(_)) => false,
        }
    }
}

fn in_v4(ip: Ipv4Addr, network: [u8; 4], prefix: u32) -> bool {
    Network {
        address: IpAddr::V4(Ipv4Addr::from(network)),
        prefix,
    }
    .holds(IpAddr::V4(ip))
}

/// The IPv4 address an IPv6 address stands for: mapped, NAT64 (64:ff9b::/96), 6to4.
fn embedded(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    if let Some(v4) = ip.to_ipv4_mapped() {
        Some(v4)
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some(v4(s[6], s[7]))
    } else if s[0] == 0x2002 {
        Some(v4(s[1], s[2]))
    } else {
        None
    }
}

const METADATA: &[IpAddr] = &[
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
];

/// Never a target: metadata, unspecified, broadcast, multicast (and embedded forms).
fn never(ip: IpAddr) -> Option<&'static str> {
    if METADATA.contains(&ip) {
        return Some("metadata");
    }
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => Some("unspecified"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("broadcast"),
        IpAddr::V4(v4) if v4.is_multicast() => Some("multicast"),
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) if v6.is_unspecified() => Some("unspecified"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("multicast"),
        IpAddr::V6(v6) => embedded(v6).and_then(|v4| never(IpAddr::V4(v4))),
    }
}

/// Not the public internet, by the rules the module documents.
fn not_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let reserved = in_v4(v4, [0, 0, 0, 0], 8)
                || in_v4(v4, [192, 0, 0, 0], 24)
                || in_v4(v4, [192, 88, 99, 0], 24)
                || in_v4(v4, [240, 0, 0, 0], 4);
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private")
            } else if in_v4(v4, [100, 64, 0, 0], 10) {
                Some("shared")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.is_documentation() {
                Some("documentation")
            } else if in_v4(v4, [198, 18, 0, 0], 15) {
                Some("benchmarking")
            } else if reserved {
                Some("reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if let Some(v4) = embedded(v6) {
                not_public(IpAddr::V4(v4))
            } else if v6.is_loopback() {
                Some("loopback")
            } else if first & 0xfe00 == 0xfc00 {
                Some("unique-local")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6.segments()[..2] == [0x2001, 0x0db8] {
                Some("documentation")
            } else {
                None
            }
        }
    }
}

/// Checks one URL under one policy; panics when an accepted URL breaks a rule.
fn check(policy: &TargetPolicy, allowed: &[Network], text: &str) -> bool {
    let Ok(url) = policy.check_url(text) else {
        return false;
    };
    let broken = if !matches!(url.scheme(), "http" | "https") {
        Some("a scheme other than http and https".to_owned())
    } else if !url.username().is_empty() || url.password().is_some() {
        Some("user information".to_owned())
    } else if url.fragment().is_some() {
        Some("a fragment".to_owned())
    } else if url.as_str().len() > URL_CHARS_MAX || text.len() > URL_CHARS_MAX {
        Some("over the length limit".to_owned())
    } else {
        let ip = match url.host() {
            None => panic_on(text, &url, "no host"),
            Some(Host::Domain(_)) => None,
            Some(Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        };
        ip.and_then(|ip| {
            if let Some(reason) = never(ip) {
                return Some(format!("{ip}: {reason}"));
            }
            let mapped = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
                IpAddr::V4(_) => None,
            };
            let allowed = allowed
                .iter()
                .any(|n| n.holds(ip) || mapped.is_some_and(|m| n.holds(m)));
            match not_public(ip) {
                Some(reason) if !allowed => Some(format!("{ip}: {reason}, not allowed")),
                Some(_) | None => None,
            }
        })
    };
    match broken {
        Some(what) => panic_on(text, &url, &what),
        None => true,
    }
}

fn panic_on(text: &str, url: &url::Url, what: &str) -> ! {
    panic!("check_url accepted {text:?} (as {url}) with {what}")
}

/// `webhook_target`: one byte picks the policy (the fixed ones, or allow lists read from
/// the input), one the mode (`MODES`: the rest as it is, as a host, as an IPv6 literal),
/// the rest is the URL. Returns whether it was accepted.
pub fn webhook_target(data: &[u8]) -> bool {
    let mut u = Unstructured::new(data);
    let choice = u.choose_index(POLICIES.len() + 1).unwrap_or(0);
    let built;
    let (policy, allowed): (&TargetPolicy, Vec<Network>) = match POLICIES.get(choice) {
        Some((cidrs, _)) => (
            &fixed_policies()[choice],
            cidrs.iter().filter_map(|c| Network::parse(c)).collect(),
        ),
        None => {
            let count = u.choose_index(ENTRIES_MAX + 1).unwrap_or(0);
            let mut cidrs = Vec::new();
            let mut hosts = Vec::new();
            for n in 0..count {
                let len = usize::from(u.int_in_range(0..=u8::MAX).unwrap_or(0)).min(u.len());
                let entry = String::from_utf8_lossy(u.bytes(len).unwrap_or_default()).into_owned();
                if n % 2 == 0 {
                    cidrs.push(entry);
                } else {
                    hosts.push(entry);
                }
            }
            built = match TargetPolicy::new(&cidrs, &hosts) {
                Ok(policy) => policy,
                Err(_) => return false,
            };
            let allowed = cidrs.iter().filter_map(|c| Network::parse(c)).collect();
            (&built, allowed)
        }
    };
    let (before, after) = MODES[u.choose_index(MODES.len()).unwrap_or(0)];
    let rest = u.take_rest();
    let text = format!("{before}{}{after}", String::from_utf8_lossy(rest));
    let _ = policy.check_host_name(&text);
    check(policy, &allowed, &text)
}

/// The input that `webhook_target` reads as `url` in `mode` under the fixed policy
/// `policy` (for seeds).
pub fn encode(policy: u8, mode: u8, url: &str) -> Vec<u8> {
    let mut out = vec![policy, mode];
    out.extend_from_slice(url.as_bytes());
    out
}

/// Seed URLs: the module's own examples and their near misses.
pub const SEED_URLS: &[&str] = &[
    "https://hooks.example.com/in?x=1",
    "http://localhost:8080/",
    "ftp://example.com/",
    "https://user:pw@example.com/",
    "https://example.com/#top",
    "http://127.0.0.1:9/",
    "http://2130706433/",
    "http://0x7f.1/",
    "http://0177.0.0.1/",
    "http://[::1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:a9fe:a9fe::1]/",
    "http://[fd00:ec2::254]/",
    "http://169.254.169.254/latest",
    "http://10.0.0.1/",
    "http://100.64.0.1/",
    "http://[fe80::1%25eth0]/",
    "https://93.184.216.34/",
    "https://[2606:2800:220:1:248:1893:25c8:1946]/",
    "https://HOOKS.example.com./x",
    "https://a.partner.test/",
];
