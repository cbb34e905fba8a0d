//! Orientation: which side of a flow is the client and which the server. Pure functions over the
//! evidence, strongest first: TCP flags, inventory knowledge, port statistics, port ranges.

use serde::Serialize;

/// The evidence an orientation rests on, from strongest to weakest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Basis {
    /// A SYN or SYN-ACK in `tcp-flags`, in the record itself or carried over from the handshake
    /// seen for the same server address and port.
    TcpFlags,
    /// The inventory says which side listens.
    Inventory,
    /// Fan-in: one address and port talks to many peer ports, the other to one.
    PortStats,
    /// Port ranges (well-known and registered against ephemeral): a last resort.
    PortRange,
    /// Protocols without ports (ICMP and others): the side that sent first.
    FirstSeen,
}

impl Basis {
    /// All bases, strongest first.
    pub const ALL: [Basis; 5] =
        [Basis::TcpFlags, Basis::Inventory, Basis::PortStats, Basis::PortRange, Basis::FirstSeen];

    /// How far to trust an orientation on this basis.
    pub fn confidence(self) -> Confidence {
        match self {
            Basis::TcpFlags | Basis::Inventory => Confidence::High,
            Basis::PortStats => Confidence::Medium,
            Basis::PortRange | Basis::FirstSeen => Confidence::Low,
        }
    }

    /// The kebab-case name used in the map.
    pub fn name(self) -> &'static str {
        match self {
            Basis::TcpFlags => "tcp-flags",
            Basis::Inventory => "inventory",
            Basis::PortStats => "port-stats",
            Basis::PortRange => "port-range",
            Basis::FirstSeen => "first-seen",
        }
    }
}

/// How far an orientation can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Confidence {
    /// From the handshake or the inventory.
    High,
    /// From port statistics.
    Medium,
    /// From port ranges or ordering alone.
    Low,
}

/// Which side of a record is the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerSide {
    /// The record's source sent from the service port.
    Source,
    /// The record's destination is the service.
    Destination,
}

/// TCP, UDP, SCTP and UDP-Lite carry ports; other protocols are oriented without them.
pub fn has_ports(protocol: u8) -> bool {
    matches!(protocol, 6 | 17 | 132 | 136)
}

/// TCP flags: a SYN without ACK comes from the client, a SYN-ACK from the server.
pub fn by_tcp_flags(flags: u8) -> Option<ServerSide> {
    match flags & 0x12 {
        0x02 => Some(ServerSide::Destination),
        0x12 => Some(ServerSide::Source),
        _ => None,
    }
}

/// Whether a record's flags prove that its source listens (it answered a SYN).
pub fn proves_listener(flags: u8) -> bool {
    flags & 0x12 == 0x12
}

/// Fan-in: the side whose (address, port) talks to several peers while the other talks to one.
pub fn by_fan_in(source_peers: u32, destination_peers: u32) -> Option<ServerSide> {
    match (source_peers, destination_peers) {
        (s, d) if s >= 2 && d <= 1 => Some(ServerSide::Source),
        (s, d) if d >= 2 && s <= 1 => Some(ServerSide::Destination),
        (s, d) if s >= 4 * d.max(1) && s >= 8 => Some(ServerSide::Source),
        (s, d) if d >= 4 * s.max(1) && d >= 8 => Some(ServerSide::Destination),
        _ => None,
    }
}

/// Linux (32768–60999) and IANA (49152–65535) ephemeral ranges together.
pub fn is_ephemeral(port: u16) -> bool {
    port >= 32768
}

/// Port ranges, always an answer: a well-known port (< 1024) against any other is the server; a
/// registered port against an ephemeral one is the server; otherwise the lower port. Equal ports
/// leave it to `source_first`, which the caller derives from a symmetric order of the addresses.
pub fn by_port_range(source_port: u16, destination_port: u16, source_first: bool) -> ServerSide {
    let (s, d) = (source_port, destination_port);
    if s == d {
        return if source_first { ServerSide::Destination } else { ServerSide::Source };
    }
    if (s < 1024) != (d < 1024) {
        return if s < 1024 { ServerSide::Source } else { ServerSide::Destination };
    }
    if is_ephemeral(s) != is_ephemeral(d) {
        return if is_ephemeral(d) { ServerSide::Source } else { ServerSide::Destination };
    }
    if s < d { ServerSide::Source } else { ServerSide::Destination }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_as_aws_documents_them() {
        assert_eq!(by_tcp_flags(2), Some(ServerSide::Destination));
        assert_eq!(by_tcp_flags(18), Some(ServerSide::Source));
        assert_eq!(by_tcp_flags(3), Some(ServerSide::Destination), "SYN+FIN on a short connection");
        assert_eq!(by_tcp_flags(19), Some(ServerSide::Source), "SYN-ACK+FIN");
        for f in [0, 1, 4, 5, 16] {
            assert_eq!(by_tcp_flags(f), None, "{f}");
        }
        assert!(proves_listener(19));
        assert!(!proves_listener(2));
    }

    #[test]
    fn fan_in() {
        assert_eq!(by_fan_in(1, 30), Some(ServerSide::Destination));
        assert_eq!(by_fan_in(30, 1), Some(ServerSide::Source));
        assert_eq!(by_fan_in(1, 1), None);
        assert_eq!(by_fan_in(3, 3), None);
        assert_eq!(by_fan_in(40, 3), Some(ServerSide::Source));
    }

    #[test]
    fn port_ranges() {
        assert_eq!(by_port_range(51000, 443, true), ServerSide::Destination);
        assert_eq!(by_port_range(443, 51000, true), ServerSide::Source);
        assert_eq!(by_port_range(5432, 40000, true), ServerSide::Source);
        assert_eq!(by_port_range(8080, 9090, true), ServerSide::Source);
        assert_eq!(by_port_range(123, 123, true), ServerSide::Destination);
        assert_eq!(by_port_range(123, 123, false), ServerSide::Source);
        assert_eq!(by_port_range(1023, 1024, true), ServerSide::Source);
    }

    #[test]
    fn bases_are_ordered_by_strength() {
        let mut sorted = Basis::ALL;
        sorted.sort();
        assert_eq!(sorted, Basis::ALL);
        assert_eq!(Basis::PortRange.confidence(), Confidence::Low);
    }
}
