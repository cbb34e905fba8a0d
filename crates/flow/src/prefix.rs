//! CIDR prefixes and a longest-prefix-match table flattened into sorted, disjoint ranges, so a
//! lookup on the hot path is one binary search.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IPv4 or IPv6 network in CIDR notation; host bits must be zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

/// Why a CIDR string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a CIDR prefix: {reason}")]
pub struct PrefixError {
    input: String,
    reason: &'static str,
}

impl Prefix {
    /// A prefix covering exactly one address.
    pub fn host(addr: IpAddr) -> Self {
        Self { addr, len: if addr.is_ipv4() { 32 } else { 128 } }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn length(&self) -> u8 {
        self.len
    }

    /// Whether the prefix is a single host.
    pub fn is_host(&self) -> bool {
        self.len == if self.addr.is_ipv4() { 32 } else { 128 }
    }

    /// Whether `addr` lies inside the prefix.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let (first, last) = self.range();
        match (self.addr, addr) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                let key = key(addr);
                first <= key && key <= last
            }
            _ => false,
        }
    }

    /// The prefix length in the shared 128-bit key space (IPv4 lives in `::ffff:0:0/96`).
    fn table_len(&self) -> u8 {
        if self.addr.is_ipv4() { self.len + 96 } else { self.len }
    }

    /// The host bits of the prefix, as a mask.
    fn host_mask(&self) -> u128 {
        let bits = if self.addr.is_ipv4() { 32 } else { 128 };
        let host_bits = u32::from(bits - self.len);
        if host_bits >= 128 { u128::MAX } else { (1u128 << host_bits) - 1 }
    }

    /// The first and last address of the prefix as keys of the table.
    fn range(&self) -> (u128, u128) {
        let first = key(self.addr);
        (first, first | self.host_mask())
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| PrefixError { input: s.chars().take(64).collect(), reason };
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => {
                let addr: IpAddr = a.parse().map_err(|_| err("bad address"))?;
                let len: u8 = l.parse().map_err(|_| err("bad prefix length"))?;
                (addr, len)
            }
            None => {
                let addr: IpAddr = s.parse().map_err(|_| err("bad address"))?;
                return Ok(Self::host(addr));
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(err("prefix length too long"));
        }
        let prefix = Self { addr, len };
        if key(addr) & prefix.host_mask() != 0 {
            return Err(err("host bits are set"));
        }
        Ok(prefix)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl serde::Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// IPv4 keys live in the IPv4-mapped IPv6 space so that both families share one table.
fn key(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => 0xffff_0000_0000 | u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// A longest-prefix-match table from prefixes to values of type `T`.
#[derive(Debug, Clone)]
pub struct PrefixTable<T> {
    starts: Vec<u128>,
    ends: Vec<u128>,
    values: Vec<T>,
}

impl<T> Default for PrefixTable<T> {
    fn default() -> Self {
        Self { starts: Vec::new(), ends: Vec::new(), values: Vec::new() }
    }
}

impl<T: Clone> PrefixTable<T> {
    /// Builds the table. Where prefixes overlap the longest wins; for equal prefixes, the first.
    pub fn build(mut entries: Vec<(Prefix, T)>) -> Self {
        // Paint the shortest prefixes first, so longer ones overwrite them.
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by_key(|&i| entries.get(i).map_or(0, |(p, _)| p.table_len()));
        let mut painted: std::collections::BTreeMap<u128, (u128, T)> = std::collections::BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        let mut taken: Vec<Option<(Prefix, T)>> = entries.drain(..).map(Some).collect();
        for i in order {
            let Some((prefix, value)) = taken.get_mut(i).and_then(Option::take) else {
                continue;
            };
            if !seen.insert(prefix) {
                continue;
            }
            let (first, last) = prefix.range();
            // Cut every painted range that overlaps [first, last].
            let overlapping: Vec<u128> =
                painted.range(..=last).filter(|(_, (end, _))| *end >= first).map(|(s, _)| *s).collect();
            for start in overlapping {
                if let Some((end, old)) = painted.remove(&start) {
                    if start < first {
                        painted.insert(start, (first - 1, old.clone()));
                    }
                    if end > last {
                        painted.insert(last + 1, (end, old));
                    }
                }
            }
            painted.insert(first, (last, value));
        }
        let mut table = Self::default();
        for (start, (end, value)) in painted {
            table.starts.push(start);
            table.ends.push(end);
            table.values.push(value);
        }
        table
    }

    /// The value of the longest prefix containing `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<&T> {
        let key = key(addr);
        let index = self.starts.partition_point(|&s| s <= key).checked_sub(1)?;
        if *self.ends.get(index)? >= key { self.values.get(index) } else { None }
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_contains() {
        assert!(p("10.0.0.0/8").contains(ip("10.1.2.3")));
        assert!(!p("10.0.0.0/8").contains(ip("11.0.0.0")));
        assert!(p("0.0.0.0/0").contains(ip("1.2.3.4")));
        assert!(!p("0.0.0.0/0").contains(ip("::1")));
        assert!(p("2001:db8::/32").contains(ip("2001:db8::1")));
        assert_eq!(p("10.0.0.5"), Prefix::host(ip("10.0.0.5")));
        assert!("10.0.0.1/8".parse::<Prefix>().is_err());
        assert!("10.0.0.0/33".parse::<Prefix>().is_err());
        assert!("nope/8".parse::<Prefix>().is_err());
    }

    #[test]
    fn longest_prefix_wins_whatever_the_order() {
        let entries = vec![(p("10.0.1.0/24"), "subnet"), (p("10.0.0.0/8"), "vpc"), (p("10.0.1.7/32"), "host")];
        for rotation in 0..3 {
            let mut e = entries.clone();
            e.rotate_left(rotation);
            let t = PrefixTable::build(e);
            assert_eq!(t.lookup(ip("10.0.1.7")), Some(&"host"));
            assert_eq!(t.lookup(ip("10.0.1.8")), Some(&"subnet"));
            assert_eq!(t.lookup(ip("10.0.2.1")), Some(&"vpc"));
            assert_eq!(t.lookup(ip("10.0.0.255")), Some(&"vpc"));
            assert_eq!(t.lookup(ip("11.0.0.0")), None);
            assert_eq!(t.lookup(ip("::ffff:10.0.1.7")), Some(&"host"), "v4-mapped shares the table");
        }
    }

    #[test]
    fn ipv6_and_default_route() {
        let t = PrefixTable::build(vec![(p("::/0"), 1), (p("2001:db8::/32"), 2), (p("0.0.0.0/0"), 3)]);
        assert_eq!(t.lookup(ip("2001:db8::1")), Some(&2));
        assert_eq!(t.lookup(ip("2001:db9::1")), Some(&1));
        assert_eq!(t.lookup(ip("8.8.8.8")), Some(&3));
    }
}
