//! Where pushes and callbacks may go. A server reachable only on loopback may send
//! anywhere (local workers are the point). Any other server never sends to link-local
//! addresses or cloud metadata names, and sends to loopback and private ranges only where
//! an operator allowed them; explicit deny rules win over allow rules.

use std::net::IpAddr;

/// A range of addresses, `10.0.0.0/8` or `fd00::/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    }
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let width = bits(addr).1;
        let prefix = prefix.unwrap_or(width);
        (prefix <= width).then_some(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4-mapped IPv6 address is its IPv4 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let ((net, width), (addr, other)) = (bits(self.addr), bits(ip));
        if width != other {
            return false;
        }
        if self.prefix == 0 {
            return true;
        }
        let shift = u32::from(width - self.prefix);
        (net >> shift) == (addr >> shift)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An allow or deny rule: an address range, or a host name (exact, or `*.suffix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Range(Cidr),
    Host(String),
}

impl Rule {
    pub fn parse(s: &str) -> Result<Rule, String> {
        let s = s.trim();
        if let Some(c) = Cidr::parse(s) {
            return Ok(Rule::Range(c));
        }
        let host = s.trim_end_matches('.').to_ascii_lowercase();
        let name = host.strip_prefix("*.").unwrap_or(&host);
        if s.contains('/') || name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
        {
            return Err(format!(
                "\"{s}\" is neither an address range (10.0.0.0/8) nor a host name (worker.internal, *.svc)"
            ));
        }
        Ok(Rule::Host(host))
    }

    fn matches_host(&self, host: &str) -> bool {
        match self {
            Rule::Host(pattern) => match pattern.strip_prefix("*.") {
                Some(suffix) => host.ends_with(&format!(".{suffix}")),
                None => pattern == host,
            },
            Rule::Range(_) => false,
        }
    }

    fn matches_ip(&self, ip: IpAddr) -> bool {
        matches!(self, Rule::Range(c) if c.contains(ip))
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::Range(c) => c.fmt(f),
            Rule::Host(h) => f.write_str(h),
        }
    }
}

/// Never a target outside local mode: link-local (where cloud metadata services live),
/// "this network", multicast and broadcast.
const ALWAYS_DENIED: &[&str] =
    &["169.254.0.0/16", "fe80::/10", "0.0.0.0/8", "224.0.0.0/4", "255.255.255.255/32", "ff00::/8", "::/128"];
/// Cloud metadata service names.
const METADATA_HOSTS: &[&str] = &["metadata.google.internal", "metadata", "metadata.azure.internal", "instance-data"];
/// Denied unless allowed: loopback, private, carrier-grade NAT and unique-local ranges.
const PRIVATE: &[&str] =
    &["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// Local mode: everything is allowed.
    pub open: bool,
    pub allow: Vec<Rule>,
    pub deny: Vec<Rule>,
}

fn listed(ranges: &'static [&'static str], ip: IpAddr) -> Option<&'static str> {
    ranges.iter().copied().find(|r| Cidr::parse(r).is_some_and(|c| c.contains(ip)))
}

impl EgressPolicy {
    /// Everything allowed: a server reachable only on loopback.
    pub fn open() -> EgressPolicy {
        EgressPolicy { open: true, ..Default::default() }
    }

    /// Whether a host name may be a target before it is resolved (its addresses are
    /// checked when it is). A host that is an IP address is checked as one.
    pub fn check_host(&self, host: &str) -> Result<(), String> {
        if self.open {
            return Ok(());
        }
        let host = host.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.check_ip(&host, ip);
        }
        if METADATA_HOSTS.contains(&host.as_str()) {
            return Err(format!("{host} is a cloud metadata service, which tasks may never reach"));
        }
        if let Some(rule) = self.deny.iter().find(|r| r.matches_host(&host)) {
            return Err(format!("{host} is denied by the egress rule {rule}"));
        }
        Ok(())
    }

    /// Whether `host` may be reached at `ip`, one of its addresses.
    pub fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), String> {
        if self.open {
            return Ok(());
        }
        let what =
            if host.parse::<IpAddr>().is_ok() { format!("{ip} is") } else { format!("{host} resolves to {ip},") };
        if let Some(range) = listed(ALWAYS_DENIED, ip) {
            return Err(format!(
                "{what} in {range}: link-local, metadata and broadcast addresses are never a task's target"
            ));
        }
        if let Some(rule) = self.deny.iter().find(|r| r.matches_ip(ip) || r.matches_host(host)) {
            return Err(format!("{what} denied by the egress rule {rule}"));
        }
        if let Some(range) = listed(PRIVATE, ip)
            && !self.allow.iter().any(|r| r.matches_ip(ip) || r.matches_host(host))
        {
            return Err(format!(
                "{what} a loopback or private address ({range}); allow it with --egress-allow {range} or \
                 --egress-allow {host}"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_contain_their_addresses() {
        let cases = [
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("172.16.0.0/12", "172.31.255.255", true),
            ("172.16.0.0/12", "172.32.0.0", false),
            ("169.254.169.254", "169.254.169.254", true),
            ("169.254.169.254", "169.254.169.253", false),
            ("0.0.0.0/0", "8.8.8.8", true),
            ("0.0.0.0/0", "::1", false),
            ("fe80::/10", "fe80::1", true),
            ("fc00::/7", "fd12::1", true),
            ("127.0.0.0/8", "::ffff:127.0.0.1", true),
        ];
        for (cidr, addr, want) in cases {
            assert_eq!(Cidr::parse(cidr).unwrap().contains(ip(addr)), want, "{cidr} {addr}");
        }
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("10.0.0/8").is_none());
    }

    #[test]
    fn rules_parse_ranges_and_host_names() {
        assert_eq!(Rule::parse("10.0.0.0/8").unwrap(), Rule::Range(Cidr::parse("10.0.0.0/8").unwrap()));
        assert_eq!(Rule::parse("Worker.Internal.").unwrap(), Rule::Host("worker.internal".into()));
        assert_eq!(Rule::parse("*.svc").unwrap(), Rule::Host("*.svc".into()));
        assert!(Rule::parse("10.0.0.0/99").unwrap_err().contains("neither"));
        assert!(Rule::parse("bad host").is_err());
    }

    #[test]
    fn the_default_policy_beyond_loopback() {
        let p = EgressPolicy::default();
        assert!(p.check_ip("api.example", ip("93.184.216.34")).is_ok());
        let err = p.check_ip("169.254.169.254", ip("169.254.169.254")).unwrap_err();
        assert!(err.contains("never a task's target"), "{err}");
        assert!(p.check_host("metadata.google.internal").unwrap_err().contains("metadata"));
        assert!(p.check_host("[fe80::1]").is_err());
        let err = p.check_ip("db.internal", ip("10.1.2.3")).unwrap_err();
        assert!(err.contains("--egress-allow 10.0.0.0/8") && err.contains("--egress-allow db.internal"), "{err}");
        assert!(p.check_host("127.0.0.1").is_err());
        assert!(p.check_host("::ffff:127.0.0.1").is_err(), "a mapped address is its IPv4 address");
        assert!(p.check_host("worker.example").is_ok(), "a name is checked again once resolved");
    }

    #[test]
    fn allow_and_deny_rules() {
        let p = EgressPolicy {
            open: false,
            allow: vec![
                Rule::parse("10.0.0.0/8").unwrap(),
                Rule::parse("worker.internal").unwrap(),
                Rule::parse("169.254.0.0/16").unwrap(),
            ],
            deny: vec![Rule::parse("10.9.0.0/16").unwrap(), Rule::parse("*.blocked.example").unwrap()],
        };
        assert!(p.check_ip("a", ip("10.1.2.3")).is_ok());
        assert!(p.check_ip("worker.internal", ip("192.168.1.5")).is_ok(), "an allowed name may be private");
        assert!(p.check_ip("a", ip("10.9.0.1")).unwrap_err().contains("10.9.0.0/16"), "deny wins over allow");
        assert!(p.check_ip("a", ip("169.254.169.254")).is_err(), "link-local stays denied whatever is allowed");
        assert!(p.check_host("x.blocked.example").unwrap_err().contains("*.blocked.example"));
        assert!(p.check_ip("x.blocked.example", ip("93.184.216.34")).is_err());
        assert!(EgressPolicy::open().check_ip("h", ip("169.254.169.254")).is_ok(), "local mode allows everything");
    }
}
