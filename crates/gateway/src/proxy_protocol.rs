//! The PROXY protocol header (HAProxy's, versions 1 and 2) the gateway sends first on a TCP
//! service's upstream connection when the service asks for it (`proxy_protocol = "v1"` or
//! `"v2"`): without it the service sees every client as the gateway's own address. The header
//! carries the client's address and the address it reached the gateway at; version 2 also
//! carries the service's name (`PP2_TYPE_AUTHORITY`) and the tunnel's audit record
//! (`PP2_TYPE_UNIQUE_ID`, `<gateway id>:<line>`), so a service's own log leads to the decision
//! that let the client in. A pure function: it takes addresses and names, does no IO.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Which PROXY protocol version a TCP service's upstream expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// The human-readable line (`PROXY TCP4 …\r\n`): addresses only.
    V1,
    /// The binary header, with the service's name and the audit record as TLVs.
    V2,
}

/// The largest `PP2_TYPE_UNIQUE_ID` value the specification allows.
pub const MAX_UNIQUE_ID: usize = 128;

/// The 12 bytes that open every version 2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2, command PROXY (the addresses are a relayed client's, not the sender's own).
const V2_PROXY_COMMAND: u8 = 0x21;
/// Address family and transport: TCP over IPv4, TCP over IPv6.
const V2_TCP4: u8 = 0x11;
const V2_TCP6: u8 = 0x21;
const PP2_TYPE_AUTHORITY: u8 = 0x02;
const PP2_TYPE_UNIQUE_ID: u8 = 0x05;

/// What the header names besides the two addresses (version 2 only).
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    /// The service's host name, as the client asked for it (SNI).
    pub authority: &'a str,
    /// The tunnel's decision record: `<gateway id>:<line in the audit log>`.
    pub unique_id: &'a str,
}

/// The header for a connection from `source` (the client) to `destination` (the gateway's
/// listener). Two addresses of different families (an IPv4 client on an IPv6 listener) are both
/// written as IPv6, IPv4-mapped. A name too long for its field is an error, never cut.
pub fn header(
    version: ProxyProtocol,
    source: SocketAddr,
    destination: SocketAddr,
    names: Names<'_>,
) -> Result<Vec<u8>, String> {
    let (source_ip, destination_ip) = same_family(source.ip(), destination.ip());
    match version {
        ProxyProtocol::V1 => {
            let family = if source_ip.is_ipv4() { "TCP4" } else { "TCP6" };
            Ok(format!("PROXY {family} {source_ip} {destination_ip} {} {}\r\n", source.port(), destination.port())
                .into_bytes())
        }
        ProxyProtocol::V2 => {
            if names.unique_id.len() > MAX_UNIQUE_ID {
                return Err(format!("unique id of {} bytes, past the {MAX_UNIQUE_ID} allowed", names.unique_id.len()));
            }
            let mut body = Vec::with_capacity(36 + 6 + names.authority.len() + names.unique_id.len());
            let family = match (source_ip, destination_ip) {
                (IpAddr::V4(from), IpAddr::V4(to)) => {
                    body.extend_from_slice(&from.octets());
                    body.extend_from_slice(&to.octets());
                    V2_TCP4
                }
                (from, to) => {
                    body.extend_from_slice(&as_v6(from).octets());
                    body.extend_from_slice(&as_v6(to).octets());
                    V2_TCP6
                }
            };
            body.extend_from_slice(&source.port().to_be_bytes());
            body.extend_from_slice(&destination.port().to_be_bytes());
            for (kind, value) in [(PP2_TYPE_AUTHORITY, names.authority), (PP2_TYPE_UNIQUE_ID, names.unique_id)] {
                let length = u16::try_from(value.len()).map_err(|_| format!("TLV {kind:#04x} too long"))?;
                body.push(kind);
                body.extend_from_slice(&length.to_be_bytes());
                body.extend_from_slice(value.as_bytes());
            }
            let length = u16::try_from(body.len()).map_err(|_| "header too long".to_owned())?;
            let mut out = Vec::with_capacity(16 + body.len());
            out.extend_from_slice(&V2_SIGNATURE);
            out.push(V2_PROXY_COMMAND);
            out.push(family);
            out.extend_from_slice(&length.to_be_bytes());
            out.extend_from_slice(&body);
            Ok(out)
        }
    }
}

/// The two addresses in one family: IPv4-mapped IPv6 read as the IPv4 it is, then IPv4 as
/// IPv6 when the other one is IPv6.
fn same_family(source: IpAddr, destination: IpAddr) -> (IpAddr, IpAddr) {
    match (source.to_canonical(), destination.to_canonical()) {
        (from @ IpAddr::V4(_), to @ IpAddr::V4(_)) => (from, to),
        (from, to) => (IpAddr::V6(as_v6(from)), IpAddr::V6(as_v6(to))),
    }
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: Names<'static> = Names { authority: "db.internal", unique_id: "gw-1:42" };

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn version_1_is_one_line_with_both_addresses() {
        let line = header(ProxyProtocol::V1, at("192.0.2.7:56324"), at("10.0.0.1:8443"), NAMES).unwrap();
        assert_eq!(line, b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 8443\r\n");
        let line = header(ProxyProtocol::V1, at("[2001:db8::7]:1"), at("[::1]:8443"), NAMES).unwrap();
        assert_eq!(line, b"PROXY TCP6 2001:db8::7 ::1 1 8443\r\n");
    }

    #[test]
    fn a_mapped_client_on_an_ipv6_listener_is_the_ipv4_client_it_is() {
        let line = header(ProxyProtocol::V1, at("[::ffff:192.0.2.7]:5"), at("[::ffff:10.0.0.1]:6"), NAMES).unwrap();
        assert_eq!(line, b"PROXY TCP4 192.0.2.7 10.0.0.1 5 6\r\n");
        // Mixed families: both as IPv6 (the IPv4 one mapped), never one of each.
        let line = header(ProxyProtocol::V1, at("192.0.2.7:5"), at("[2001:db8::1]:6"), NAMES).unwrap();
        assert_eq!(line, b"PROXY TCP6 ::ffff:192.0.2.7 2001:db8::1 5 6\r\n");
    }

    #[test]
    fn version_2_ipv4_layout_with_authority_and_unique_id() {
        let bytes = header(ProxyProtocol::V2, at("192.0.2.7:56324"), at("10.0.0.1:8443"), NAMES).unwrap();
        let mut expected = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        expected.extend_from_slice(&[0x21, 0x11]);
        let tlvs = 3 + "db.internal".len() + 3 + "gw-1:42".len();
        expected.extend_from_slice(&u16::try_from(12 + tlvs).unwrap().to_be_bytes());
        expected.extend_from_slice(&[192, 0, 2, 7, 10, 0, 0, 1]);
        expected.extend_from_slice(&56324u16.to_be_bytes());
        expected.extend_from_slice(&8443u16.to_be_bytes());
        expected.extend_from_slice(&[0x02, 0, 11]);
        expected.extend_from_slice(b"db.internal");
        expected.extend_from_slice(&[0x05, 0, 7]);
        expected.extend_from_slice(b"gw-1:42");
        assert_eq!(bytes, expected);
    }

    #[test]
    fn version_2_ipv6_addresses_take_sixteen_bytes_each() {
        let bytes = header(ProxyProtocol::V2, at("192.0.2.7:1"), at("[2001:db8::1]:2"), NAMES).unwrap();
        assert_eq!(bytes.get(13), Some(&0x21));
        let length = u16::from_be_bytes([bytes[14], bytes[15]]) as usize;
        assert_eq!(bytes.len(), 16 + length);
        assert_eq!(&bytes[16..32], &"::ffff:192.0.2.7".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(&bytes[32..48], &"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(&bytes[48..52], &[0, 1, 0, 2]);
    }

    #[test]
    fn a_unique_id_past_128_bytes_is_an_error_not_cut() {
        let long = "g".repeat(MAX_UNIQUE_ID + 1);
        let names = Names { authority: "db.internal", unique_id: &long };
        let error = header(ProxyProtocol::V2, at("192.0.2.7:1"), at("10.0.0.1:2"), names).unwrap_err();
        assert!(error.contains("129 bytes"), "{error}");
        let exact = "g".repeat(MAX_UNIQUE_ID);
        let names = Names { authority: "db.internal", unique_id: &exact };
        assert!(header(ProxyProtocol::V2, at("192.0.2.7:1"), at("10.0.0.1:2"), names).is_ok());
    }
}
