//! The noise gate: internet scans, backscatter and the one-packet answers to them are traffic, but
//! not requirements. They are summarised per target and never become edges.

use serde::Serialize;

use crate::record::Action;

/// What kind of noise a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoiseKind {
    /// Unsolicited probes from the internet (SYN or flagless one-packet records, rejected probes).
    Scan,
    /// Replies to spoofed traffic arriving from the internet (lone SYN-ACK or RST packets).
    Backscatter,
    /// One-packet answers sent back to the internet (RSTs and SYN-ACKs to scanners).
    ScanReply,
    /// An internet "client" whose every record had at most two packets: a probe, not a session.
    Probe,
}

/// The facts of one record that the gate looks at.
#[derive(Clone, Copy, Debug)]
pub struct NoiseFacts {
    /// IANA protocol number.
    pub protocol: u8,
    /// Packets in the record, if known.
    pub packets: Option<u64>,
    /// `tcp-flags`, if known.
    pub tcp_flags: Option<u8>,
    /// `action`, if known.
    pub action: Option<Action>,
    /// The sender is a public address the user has not named.
    pub source_public: bool,
    /// The receiver is a public address the user has not named.
    pub destination_public: bool,
}

/// Classifies a record as noise, or not.
pub fn classify(facts: &NoiseFacts) -> Option<NoiseKind> {
    if facts.source_public == facts.destination_public {
        return None; // noise crosses the edge of the estate
    }
    let inbound = facts.source_public;
    let rejected = facts.action == Some(Action::Reject);
    let one_packet = facts.packets == Some(1);
    match facts.protocol {
        6 => {
            let flags = facts.tcp_flags.unwrap_or(0);
            if one_packet {
                if !inbound {
                    return Some(NoiseKind::ScanReply);
                }
                let answer = flags & 0x12 == 0x12 || flags & 0x04 != 0;
                return Some(if answer { NoiseKind::Backscatter } else { NoiseKind::Scan });
            }
            let few = facts.packets.is_some_and(|p| p <= 3);
            if inbound && rejected && few && flags & 0x10 == 0 {
                return Some(if flags & 0x04 != 0 { NoiseKind::Backscatter } else { NoiseKind::Scan });
            }
            None
        }
        _ => (inbound && rejected).then_some(NoiseKind::Scan),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(protocol: u8, packets: u64, flags: Option<u8>, action: Action, inbound: bool) -> NoiseFacts {
        NoiseFacts {
            protocol,
            packets: Some(packets),
            tcp_flags: flags,
            action: Some(action),
            source_public: inbound,
            destination_public: !inbound,
        }
    }

    #[test]
    fn one_packet_syn_from_the_internet_is_a_scan() {
        assert_eq!(classify(&facts(6, 1, Some(2), Action::Reject, true)), Some(NoiseKind::Scan));
        assert_eq!(classify(&facts(6, 1, None, Action::Accept, true)), Some(NoiseKind::Scan));
    }

    #[test]
    fn lone_syn_ack_or_rst_is_backscatter() {
        assert_eq!(classify(&facts(6, 1, Some(18), Action::Reject, true)), Some(NoiseKind::Backscatter));
        assert_eq!(classify(&facts(6, 1, Some(4), Action::Reject, true)), Some(NoiseKind::Backscatter));
    }

    #[test]
    fn our_one_packet_answer_is_a_scan_reply() {
        assert_eq!(classify(&facts(6, 1, Some(4), Action::Accept, false)), Some(NoiseKind::ScanReply));
    }

    #[test]
    fn real_sessions_and_internal_traffic_pass() {
        assert_eq!(classify(&facts(6, 8, Some(2), Action::Accept, true)), None);
        assert_eq!(classify(&facts(6, 20, Some(18), Action::Accept, false)), None);
        let mut internal = facts(6, 1, Some(2), Action::Reject, true);
        internal.source_public = false;
        assert_eq!(classify(&internal), None);
        assert_eq!(classify(&facts(17, 1, None, Action::Accept, true)), None, "a DNS answer");
    }

    #[test]
    fn rejected_probes_of_other_protocols_are_scans() {
        assert_eq!(classify(&facts(17, 1, None, Action::Reject, true)), Some(NoiseKind::Scan));
        assert_eq!(classify(&facts(1, 4, None, Action::Reject, true)), Some(NoiseKind::Scan));
        assert_eq!(classify(&facts(6, 3, Some(2), Action::Reject, true)), Some(NoiseKind::Scan), "SYN retries");
    }
}
