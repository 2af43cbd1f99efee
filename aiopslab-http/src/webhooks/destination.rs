//! Where a completion webhook may go: the guard against server-side request
//! forgery (SSRF) through `callback_url`.
//!
//! A `callback_url` is chosen by whoever submits a task, and the server POSTs
//! to it from inside its own network. Unless the operator allows it
//! ([`WebhookConfig::allow_private_destinations`](super::WebhookConfig::allow_private_destinations),
//! `--webhook-allow-private-destinations`), the deliverer refuses every
//! destination that is not a public unicast address ([`forbidden_reason`]):
//! loopback, private (RFC 1918), unique-local (`fc00::/7`), shared
//! (RFC 6598), link-local (`169.254.0.0/16`, `fe80::/10`), cloud metadata
//! addresses, unspecified, multicast, broadcast, reserved and documentation
//! ranges, and IPv6 forms that embed one of those IPv4 addresses
//! (IPv4-mapped, IPv4-compatible, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`).
//!
//! The check is made on the **resolved** address at delivery time: the
//! deliverer's HTTP client resolves names with [`GuardedResolver`], which
//! refuses a name when *any* of its addresses is forbidden and otherwise
//! hands the client exactly the addresses it checked — the client connects
//! to those and never resolves the name again, so a DNS answer that changes
//! between the check and the connection (DNS rebinding) cannot slip a
//! private address in. IP literals (including the forms URL parsing turns
//! into one, such as `http://2130706433/` for `127.0.0.1`) are checked before
//! the request is made, since the client does not resolve them. A refused
//! delivery is a permanent failure: it is recorded as an attempt with the
//! reason and never retried.
//!
//! At task creation the API refuses (400 naming `callback_url`) what it can
//! tell without a DNS lookup ([`literal_destination_error`]): literal
//! forbidden addresses and the `localhost` names.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// Why a destination address may not receive webhooks, or `None` when it is
/// a public unicast address.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, d] = ip.octets();
    Some(match (a, b, c, d) {
        (169, 254, 169, 254) => "a cloud metadata address (169.254.169.254)",
        (100, 100, 100, 200) => "a cloud metadata address (100.100.100.200)",
        (0, 0, 0, 0) => "the unspecified address",
        (0, ..) => "a \"this network\" address (0.0.0.0/8)",
        (127, ..) => "a loopback address (127.0.0.0/8)",
        (10, ..) => "a private address (10.0.0.0/8, RFC 1918)",
        (172, 16..=31, ..) => "a private address (172.16.0.0/12, RFC 1918)",
        (192, 168, ..) => "a private address (192.168.0.0/16, RFC 1918)",
        (100, 64..=127, ..) => "a shared address (100.64.0.0/10, RFC 6598)",
        (169, 254, ..) => "a link-local address (169.254.0.0/16)",
        (192, 0, 0, _) => "an IETF protocol address (192.0.0.0/24)",
        (192, 0, 2, _) | (198, 51, 100, _) | (203, 0, 113, _) => "a documentation address (TEST-NET)",
        (198, 18..=19, ..) => "a benchmarking address (198.18.0.0/15)",
        (255, 255, 255, 255) => "the broadcast address",
        (224..=239, ..) => "a multicast address (224.0.0.0/4)",
        (240..=255, ..) => "a reserved address (240.0.0.0/4)",
        _ => return None,
    })
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    if ip.is_unspecified() {
        return Some("the unspecified address (::)");
    }
    if ip.is_loopback() {
        return Some("a loopback address (::1)");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reason(v4).map(|_| "an IPv4-mapped address of a forbidden IPv4 address");
    }
    let embedded_v4 = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    Some(match segments {
        // ::a.b.c.d (deprecated IPv4-compatible form; :: and ::1 are handled above).
        [0, 0, 0, 0, 0, 0, _, _] => "an IPv4-compatible address (::/96, deprecated)",
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => {
            return v4_reason(embedded_v4(high, low))
                .map(|_| "a NAT64 address (64:ff9b::/96) of a forbidden IPv4 address")
        }
        [0x2002, high, low, ..] => {
            return v4_reason(embedded_v4(high, low)).map(|_| "a 6to4 address (2002::/16) of a forbidden IPv4 address")
        }
        [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254] => "a cloud metadata address (fd00:ec2::254)",
        [first, ..] if first & 0xfe00 == 0xfc00 => "a unique-local address (fc00::/7)",
        [first, ..] if first & 0xffc0 == 0xfe80 => "a link-local address (fe80::/10)",
        [first, ..] if first & 0xffc0 == 0xfec0 => "a site-local address (fec0::/10, deprecated)",
        [first, ..] if first & 0xff00 == 0xff00 => "a multicast address (ff00::/8)",
        [0x2001, 0x0db8, ..] => "a documentation address (2001:db8::/32)",
        [0x0100, 0, 0, 0, ..] => "a discard-only address (100::/64)",
        _ => return None,
    })
}

/// A destination the deliverer will not POST to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedDestination {
    /// The host as the URL names it.
    pub host: String,
    /// The forbidden address it is or resolves to.
    pub address: IpAddr,
    /// Why that address is forbidden (see [`forbidden_reason`]).
    pub reason: &'static str,
}

impl fmt::Display for RefusedDestination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        if host == self.address.to_string() {
            write!(f, "refused: callback_url points at {}, {}", self.address, self.reason)?;
        } else {
            write!(
                f,
                "refused: callback_url host {host} resolves to {}, {}",
                self.address, self.reason
            )?;
        }
        f.write_str(
            "; webhooks are not sent to loopback, private, link-local, metadata or other non-public addresses \
             unless the server runs with --webhook-allow-private-destinations",
        )
    }
}

impl std::error::Error for RefusedDestination {}

/// Checks the host of a parsed URL when it is an IP literal (the HTTP client
/// connects to those without resolving them). Names pass: they are checked
/// when they are resolved ([`GuardedResolver`]).
pub fn check_literal_host(url: &Url) -> Result<(), RefusedDestination> {
    let Some(address) = literal_address(url) else {
        return Ok(());
    };
    match forbidden_reason(address) {
        None => Ok(()),
        Some(reason) => Err(RefusedDestination {
            host: url.host_str().unwrap_or_default().to_string(),
            address,
            reason,
        }),
    }
}

/// The host of `url` when it is an IP literal. URL parsing has already
/// normalized every IPv4 spelling (`2130706433`, `0x7f.1`) to dotted form,
/// so a name never parses as an address here.
fn literal_address(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// What the API can refuse at task creation without a DNS lookup: a
/// `callback_url` whose host is a forbidden IP literal (in any spelling URL
/// parsing accepts: `127.0.0.1`, `2130706433`, `0x7f.1`, `[::1]`,
/// `[::ffff:10.0.0.1]`) or a `localhost` name (RFC 6761: always loopback).
/// Returns the message for a 400 naming `callback_url`; `None` when the URL
/// may be accepted (names are checked again, resolved, at delivery).
pub fn literal_destination_error(callback_url: &str) -> Option<String> {
    let url = Url::parse(callback_url).ok()?;
    if let Err(refused) = check_literal_host(&url) {
        return Some(format!(
            "must not point at {} ({}): webhooks go to public addresses only unless the server allows private \
             destinations (--webhook-allow-private-destinations)",
            refused.address, refused.reason
        ));
    }
    if let (None, Some(name)) = (literal_address(&url), url.host_str()) {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name == "localhost" || name.ends_with(".localhost") {
            return Some(format!(
                "must not point at {name} (a loopback name): webhooks go to public addresses only unless the \
                 server allows private destinations (--webhook-allow-private-destinations)"
            ));
        }
    }
    None
}

/// The webhook client's DNS resolver: resolves with the system resolver
/// (`getaddrinfo`, as reqwest does by default) and refuses the name when any
/// address is forbidden, unless private destinations are allowed. The
/// client connects only to the addresses returned here.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuardedResolver {
    /// Pass every address (the operator allowed private destinations).
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private {
                if let Some(refused) = addrs.iter().find_map(|addr| {
                    forbidden_reason(addr.ip()).map(|reason| RefusedDestination {
                        host: host.clone(),
                        address: addr.ip(),
                        reason,
                    })
                }) {
                    return Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The [`RefusedDestination`] somewhere in an error's source chain.
pub(crate) fn refused_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a RefusedDestination> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(refused) = error.downcast_ref::<RefusedDestination>() {
            return Some(refused);
        }
        current = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(ip: &str) -> Option<&'static str> {
        forbidden_reason(ip.parse().unwrap())
    }

    #[test]
    fn non_public_addresses_are_forbidden() {
        for ip in [
            "127.0.0.1",
            "127.255.0.7",
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.100.100.200",
            "192.0.0.192",
            "198.18.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "fc00::1",
            "fd12:3456::1",
            "fd00:ec2::254",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "100::1",
        ] {
            assert!(reason(ip).is_some(), "{ip} must be forbidden");
        }
        assert!(reason("169.254.169.254").unwrap().contains("metadata"));
        assert!(reason("127.0.0.1").unwrap().contains("loopback"));
        assert!(reason("10.0.0.1").unwrap().contains("RFC 1918"));
        assert!(reason("fd00::1").unwrap().contains("unique-local"));
        assert!(reason("fe80::1").unwrap().contains("link-local"));
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.0.1",
            "192.169.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(reason(ip), None, "{ip} is public");
        }
    }

    #[test]
    fn literal_hosts_in_every_spelling_are_refused_at_create() {
        for url in [
            "http://127.0.0.1:9999/hook",
            "http://2130706433/hook",
            "http://0x7f.1/hook",
            "http://0177.0.0.1/hook",
            "http://0.0.0.0/hook",
            "http://[::1]/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.5/hook",
            "https://localhost/hook",
            "http://LOCALHOST./hook",
            "http://api.localhost:8080/hook",
        ] {
            assert!(literal_destination_error(url).is_some(), "{url} must be refused");
        }
        for url in [
            "https://hooks.example.com/aiopslab",
            "http://8.8.8.8/hook",
            "http://[2606:4700:4700::1111]/hook",
            "https://localhost.example.com/hook",
        ] {
            assert_eq!(literal_destination_error(url), None, "{url} may be accepted");
        }
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_forbidden_addresses() {
        let guarded = GuardedResolver::default();
        let error = match guarded.resolve(name("localhost")).await {
            Ok(addrs) => panic!("localhost resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(error) => error,
        };
        let refused = refused_in(error.as_ref()).expect("a RefusedDestination");
        assert_eq!(refused.host, "localhost");
        assert!(refused.address.is_loopback(), "{refused:?}");
        assert!(refused.to_string().contains("--webhook-allow-private-destinations"));

        let open = GuardedResolver { allow_private: true };
        let addrs: Vec<SocketAddr> = match open.resolve(name("localhost")).await {
            Ok(addrs) => addrs.collect(),
            Err(error) => panic!("{error}"),
        };
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }

    fn name(host: &str) -> Name {
        match host.parse() {
            Ok(name) => name,
            Err(_) => panic!("{host} is not a valid name"),
        }
    }
}
