//! One flow-log record, parsed by its format from a line of text (or a Parquet row turned into
//! tokens). Every field may be `-`; a value that does not fit its field is an error naming both.

use std::net::{IpAddr, Ipv4Addr};

use crate::field::Field;
use crate::format::LogFormat;

/// `action`: whether security groups and network ACLs let the traffic through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `ACCEPT`
    Accept,
    /// `REJECT`
    Reject,
}

/// `log-status`: whether the window holds data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStatus {
    /// `OK`: records as usual.
    Ok,
    /// `NODATA`: no traffic to or from the interface in the window.
    NoData,
    /// `SKIPDATA`: some records of the window were skipped; the map has a gap there.
    SkipData,
}

/// `flow-direction`, relative to the interface that captured the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowDirection {
    /// `ingress`
    Ingress,
    /// `egress`
    Egress,
}

/// `type`: the kind of traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrafficType {
    /// `IPv4`
    Ipv4,
    /// `IPv6`
    Ipv6,
    /// `EFA` (Elastic Fabric Adapter)
    Efa,
}

/// A parsed record. Fields absent from the format or given as `-` are `None`. Identifiers are
/// kept as the bytes of the line (AWS writes them in ASCII); they become text only where they
/// are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs, reason = "each field is the AWS field of the same name")]
pub struct Record<'a> {
    pub version: Option<u8>,
    pub account_id: Option<&'a [u8]>,
    pub interface_id: Option<&'a [u8]>,
    pub srcaddr: Option<IpAddr>,
    pub dstaddr: Option<IpAddr>,
    pub srcport: Option<u16>,
    pub dstport: Option<u16>,
    pub protocol: Option<u8>,
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
    /// Unix seconds (a millisecond value has been divided by 1000; see `millis`).
    pub start: Option<u64>,
    pub end: Option<u64>,
    pub action: Option<Action>,
    pub log_status: Option<LogStatus>,
    pub vpc_id: Option<&'a [u8]>,
    pub subnet_id: Option<&'a [u8]>,
    pub instance_id: Option<&'a [u8]>,
    pub tcp_flags: Option<u8>,
    pub traffic_type: Option<TrafficType>,
    pub pkt_srcaddr: Option<IpAddr>,
    pub pkt_dstaddr: Option<IpAddr>,
    pub region: Option<&'a [u8]>,
    pub az_id: Option<&'a [u8]>,
    pub pkt_src_aws_service: Option<&'a [u8]>,
    pub pkt_dst_aws_service: Option<&'a [u8]>,
    pub flow_direction: Option<FlowDirection>,
    pub traffic_path: Option<u8>,
    pub resource_type: Option<&'a [u8]>,
    pub tgw_id: Option<&'a [u8]>,
    pub tgw_attachment_id: Option<&'a [u8]>,
    pub tgw_pair_attachment_id: Option<&'a [u8]>,
    pub packets_lost: Option<u64>,
    pub ecs_cluster_name: Option<&'a [u8]>,
    pub ecs_service_name: Option<&'a [u8]>,
    pub reject_reason: Option<&'a [u8]>,
    pub encryption_status: Option<u8>,
    /// `start` or `end` was given in milliseconds and has been converted.
    pub millis: bool,
}

impl Record<'_> {
    /// The address of the packet's sender: `pkt-srcaddr` where present, else `srcaddr`.
    pub fn source(&self) -> Option<IpAddr> {
        self.pkt_srcaddr.or(self.srcaddr)
    }

    /// The address of the packet's receiver: `pkt-dstaddr` where present, else `dstaddr`.
    pub fn destination(&self) -> Option<IpAddr> {
        self.pkt_dstaddr.or(self.dstaddr)
    }

    /// Whether the record is a coverage marker (NODATA or SKIPDATA) rather than traffic.
    pub fn is_coverage_marker(&self) -> bool {
        matches!(self.log_status, Some(LogStatus::NoData | LogStatus::SkipData))
    }
}

/// Why a line is not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The line has a different number of fields than its format.
    #[error("expected {expected} fields, found {found}")]
    FieldCount {
        /// Columns of the format.
        expected: usize,
        /// Tokens on the line.
        found: usize,
    },
    /// A value does not fit its field.
    #[error("field `{field}` has invalid value `{value}`: {reason}")]
    BadValue {
        /// The field.
        field: Field,
        /// The offending value, cut to 64 characters.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Seconds above this are taken to be milliseconds (flowlogs-reader observed such values).
const MAX_SECONDS: u64 = (1 << 31) - 1;

/// Parses lines of one format. Reuses its buffers, so keep one per input.
#[derive(Debug, Clone)]
pub struct LineParser {
    columns: Vec<Option<Field>>,
    /// Where each token of the current line starts and ends; one slot per column.
    spans: Vec<(usize, usize)>,
}

/// What the tokenizer noticed about a line besides its records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineShape {
    /// Fields were separated by more than one space, or the line had leading/trailing blanks.
    pub irregular_spacing: bool,
    /// A CloudWatch Logs export timestamp preceded the record and was dropped.
    pub cloudwatch_timestamp: bool,
}

impl LineParser {
    /// A parser for `format`.
    pub fn new(format: &LogFormat) -> Self {
        let columns = format.columns().to_vec();
        Self { spans: vec![(0, 0); columns.len()], columns }
    }

    /// Parses one line (without its line ending).
    pub fn parse<'a>(&mut self, line: &'a [u8]) -> Result<(Record<'a>, LineShape), RecordError> {
        let mut record = Record::default();
        let shape = self.parse_into(line, &mut record)?;
        Ok((record, shape))
    }

    /// Parses one line into `record`, avoiding moving the record around.
    /// `record` must be fresh (`Record::default()`): only the fields of the line are set.
    pub fn parse_into<'a>(&mut self, line: &'a [u8], record: &mut Record<'a>) -> Result<LineShape, RecordError> {
        if self.parse_regular(line, record).is_some() {
            return Ok(LineShape::default());
        }
        // Anything unusual (a CloudWatch prefix, runs of blanks, a wrong field count, a bad
        // value): start again on the general path, which says exactly what is wrong.
        *record = Record::default();
        self.parse_general(line, record)
    }

    /// The general path: tokens first (any spacing, a CloudWatch prefix), then fields.
    fn parse_general<'a>(&mut self, line: &'a [u8], record: &mut Record<'a>) -> Result<LineShape, RecordError> {
        let (found, shape) = self.split(line);
        // A wrong number of fields says more than the first bad value it caused.
        if found != self.columns.len() {
            return Err(RecordError::FieldCount { expected: self.columns.len(), found });
        }
        let (mut src_token, mut dst_token): (&[u8], &[u8]) = (&[], &[]);
        for (&(start, end), field) in self.spans.iter().zip(&self.columns) {
            let Some(field) = *field else { continue };
            let token = line.get(start..end).unwrap_or_default();
            set_token(record, field, token, &mut src_token, &mut dst_token)
                .map_err(|reason| bad(field, token, reason))?;
        }
        Ok(shape)
    }

    /// The fast path for the lines AWS writes: one space between fields, the right number of
    /// them, every value valid. Tokens are found as they are parsed (a number's digits end at the
    /// space), in one pass. `None` as soon as anything is unusual; `record` is then half-set and
    /// the caller starts over on the general path.
    fn parse_regular<'a>(&self, line: &'a [u8], record: &mut Record<'a>) -> Option<()> {
        let mut rest = line;
        let (mut src_token, mut dst_token): (&[u8], &[u8]) = (&[], &[]);
        let last = self.columns.len().checked_sub(1)?;
        for (index, column) in self.columns.iter().enumerate() {
            let first = *rest.first()?;
            let len = if first == b'-' && rest.get(1).is_none_or(|b| *b == b' ') {
                1 // `-`: no value
            } else {
                match column {
                    Some(field @ (Field::Version | Field::Protocol | Field::TcpFlags | Field::TrafficPath)) => {
                        let (value, len) = leading_number(rest)?;
                        let value = u8::try_from(value).ok();
                        match field {
                            Field::Version => record.version = value,
                            Field::Protocol => record.protocol = value,
                            Field::TcpFlags => record.tcp_flags = value,
                            _ => record.traffic_path = value,
                        }
                        value?;
                        len
                    }
                    Some(Field::SrcPort) => {
                        let (value, len) = leading_number(rest)?;
                        record.srcport = Some(u16::try_from(value).ok()?);
                        len
                    }
                    Some(Field::DstPort) => {
                        let (value, len) = leading_number(rest)?;
                        record.dstport = Some(u16::try_from(value).ok()?);
                        len
                    }
                    Some(Field::Packets) => {
                        let (value, len) = leading_number(rest)?;
                        record.packets = Some(value);
                        len
                    }
                    Some(Field::Bytes) => {
                        let (value, len) = leading_number(rest)?;
                        record.bytes = Some(value);
                        len
                    }
                    Some(field @ (Field::Start | Field::End)) => {
                        let (value, len) = leading_number(rest)?;
                        let value = seconds(value, record);
                        if *field == Field::Start {
                            record.start = Some(value);
                        } else {
                            record.end = Some(value);
                        }
                        len
                    }
                    // Identifiers: kept as they are, no check needed.
                    Some(
                        field @ (Field::AccountId
                        | Field::InterfaceId
                        | Field::VpcId
                        | Field::SubnetId
                        | Field::InstanceId
                        | Field::Region
                        | Field::AzId),
                    ) => {
                        let len = token_len(rest);
                        let token = Some(rest.get(..len)?);
                        match field {
                            Field::AccountId => record.account_id = token,
                            Field::InterfaceId => record.interface_id = token,
                            Field::VpcId => record.vpc_id = token,
                            Field::SubnetId => record.subnet_id = token,
                            Field::InstanceId => record.instance_id = token,
                            Field::Region => record.region = token,
                            _ => record.az_id = token,
                        }
                        len
                    }
                    Some(field) => {
                        let len = token_len(rest);
                        set_token(record, *field, rest.get(..len)?, &mut src_token, &mut dst_token).ok()?;
                        len
                    }
                    None => token_len(rest),
                }
            };
            // Exactly one space between tokens, none at the end; no empty token.
            if len == 0 {
                return None;
            }
            if index == last {
                if len != rest.len() {
                    return None;
                }
            } else {
                if rest.get(len) != Some(&b' ') {
                    return None;
                }
                rest = rest.get(len + 1..)?;
            }
        }
        Some(())
    }

    /// Finds the tokens of `line` (into `self.spans`, as far as there are slots) and returns how
    /// many there are. One pass: blanks are found eight bytes at a time (SWAR, one bit per blank).
    fn split(&mut self, line: &[u8]) -> (usize, LineShape) {
        let mut shape = LineShape::default();
        let n = line.len();
        // A CloudWatch Logs export puts a timestamp before the record: step over it.
        let mut start = 0;
        if line.first().is_some_and(u8::is_ascii_digit)
            && let Some(space) = line.iter().take(40).position(|b| *b == b' ')
            && is_cloudwatch_timestamp(line.get(..space).unwrap_or_default())
        {
            shape.cloudwatch_timestamp = true;
            start = space + 1;
        }
        let skip = start;
        let mut found = 0;
        let spans = &mut self.spans;
        let mut blank = |pos: usize| {
            if pos == start {
                shape.irregular_spacing = true; // a run of blanks, or a leading one
            } else {
                if let Some(span) = spans.get_mut(found) {
                    *span = (start, pos);
                }
                found += 1;
            }
            start = pos + 1;
        };
        let mut base = skip;
        let mut words = line.get(skip..).unwrap_or_default().chunks_exact(8);
        for word in &mut words {
            let mut mask = blank_mask(u64::from_le_bytes(word.try_into().unwrap_or_default()));
            while mask != 0 {
                blank(base + (mask.trailing_zeros() / 8) as usize);
                mask &= mask - 1;
            }
            base += 8;
        }
        for (i, b) in words.remainder().iter().enumerate() {
            if *b == b' ' {
                blank(base + i);
            }
        }
        if start < n {
            if let Some(span) = self.spans.get_mut(found) {
                *span = (start, n);
            }
            found += 1;
        } else if n > 0 {
            shape.irregular_spacing = true;
        }
        (found, shape)
    }
}

/// Parses arbitrary bytes as a text flow log (a header line if the first line is one, else the
/// default format) and discards the result: the fuzz target and its corpus replay call this.
pub fn fuzz_line(data: &[u8]) {
    let mut lines = data.split(|b| *b == b'\n');
    let first = lines.next().unwrap_or_default();
    let header = std::str::from_utf8(first).ok().filter(|l| crate::format::looks_like_header(l));
    let format = header.and_then(|h| LogFormat::from_header(h).ok()).unwrap_or_else(LogFormat::default_v2);
    let mut parser = LineParser::new(&format);
    let rest: Vec<&[u8]> = if header.is_some() { lines.collect() } else { data.split(|b| *b == b'\n').collect() };
    for line in rest {
        let _ = parser.parse(line);
    }
}

/// The length of the token at the start of `rest`: up to the first space, eight bytes at a time.
#[inline]
fn token_len(rest: &[u8]) -> usize {
    let mut words = rest.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let mask = blank_mask(u64::from_le_bytes(word.try_into().unwrap_or_default()));
        if mask != 0 {
            return offset + (mask.trailing_zeros() / 8) as usize;
        }
        offset += 8;
    }
    offset + words.remainder().iter().position(|b| *b == b' ').unwrap_or(words.remainder().len())
}

/// The number whose digits start `rest` and end at a space or the end: (value, digits). `None`
/// for anything else, and for more than 19 digits (left to the general path).
#[inline]
fn leading_number(rest: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in rest.iter().enumerate() {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return (b == b' ' && (1..=19).contains(&i)).then_some((value, i));
        }
        value = value.wrapping_mul(10).wrapping_add(u64::from(digit));
    }
    (1..=19).contains(&rest.len()).then_some((value, rest.len()))
}

/// One high bit per byte of `word` that is a space (AWS separates fields by spaces only).
#[inline]
fn blank_mask(word: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const SPACES: u64 = 0x2020_2020_2020_2020;
    // Exact zero-byte detection (no false positives), for x = word ^ SPACES.
    let x = word ^ SPACES;
    !((x & LOW7).wrapping_add(LOW7) | x | LOW7)
}

fn is_cloudwatch_timestamp(token: &[u8]) -> bool {
    // 2019-08-26T19:53:44.000Z
    token.len() >= 20
        && token.get(4) == Some(&b'-')
        && token.get(10) == Some(&b'T')
        && token.last() == Some(&b'Z')
        && token.first().is_some_and(u8::is_ascii_digit)
}

/// Eight ASCII digits (first digit in the lowest byte) as a number, or `None` if any byte is not a
/// digit: SWAR, a handful of instructions instead of a loop.
#[inline]
fn eight_digits(word: u64) -> Option<u64> {
    // Every byte in 0x30..=0x39: high nibble 3, and adding 6 must not carry into the high nibble.
    let digits =
        (word & 0xf0f0_f0f0_f0f0_f0f0) | (((word.wrapping_add(0x0606_0606_0606_0606)) & 0xf0f0_f0f0_f0f0_f0f0) >> 4);
    if digits != 0x3333_3333_3333_3333 {
        return None;
    }
    let mut v = word - 0x3030_3030_3030_3030;
    v = (v * 10) + (v >> 8); // pairs of digits in the even bytes
    v = ((v & 0x0000_00ff_0000_00ff).wrapping_mul(100 + (1_000_000 << 32))
        + ((v >> 16) & 0x0000_00ff_0000_00ff).wrapping_mul(1 + (10_000 << 32)))
        >> 32;
    Some(v)
}

#[cold]
#[inline(never)]
fn bad(field: Field, token: &[u8], reason: &'static str) -> RecordError {
    let value: String = String::from_utf8_lossy(token).chars().take(64).collect();
    RecordError::BadValue { field, value, reason }
}

/// Why a token does not fit its field; the caller names the field and the value.
type Reason = &'static str;

#[inline]
fn number(token: &[u8]) -> Result<u64, Reason> {
    const NOT_A_NUMBER: Reason = "not a number";
    if token.is_empty() || token.len() > 20 {
        return Err(NOT_A_NUMBER);
    }
    if token.len() <= 19 {
        // Nineteen digits cannot overflow a u64: no checks in the loop. The last eight digits
        // (timestamps have ten) are read as one word.
        let (head, tail) = if token.len() >= 8 { token.split_at(token.len() - 8) } else { (token, &[][..]) };
        let mut value: u64 = 0;
        for &b in head {
            let digit = b.wrapping_sub(b'0');
            if digit > 9 {
                return Err(NOT_A_NUMBER);
            }
            value = value * 10 + u64::from(digit);
        }
        if let Ok(word) = <[u8; 8]>::try_from(tail) {
            match eight_digits(u64::from_le_bytes(word)) {
                Some(low) => value = value * 100_000_000 + low,
                None => return Err(NOT_A_NUMBER),
            }
        }
        return Ok(value);
    }
    let mut value: u64 = 0;
    for &b in token {
        if !b.is_ascii_digit() {
            return Err(NOT_A_NUMBER);
        }
        value = value.checked_mul(10).and_then(|v| v.checked_add(u64::from(b - b'0'))).ok_or("number out of range")?;
    }
    Ok(value)
}

#[inline]
fn small<T: TryFrom<u64>>(token: &[u8], reason: Reason) -> Result<T, Reason> {
    T::try_from(number(token)?).map_err(|_| reason)
}

fn address(token: &[u8]) -> Result<IpAddr, Reason> {
    if let Some(v4) = parse_ipv4(token) {
        return Ok(IpAddr::V4(v4));
    }
    std::str::from_utf8(token).map_err(|_| "not UTF-8")?.parse::<IpAddr>().map_err(|_| "not an IP address")
}

/// A fast dotted-quad parser for the hot path; anything unusual (leading zeros included) returns
/// `None` and falls through to the standard parser, which decides.
#[inline]
fn parse_ipv4(token: &[u8]) -> Option<Ipv4Addr> {
    if !(7..=15).contains(&token.len()) {
        return None;
    }
    let mut octets = [0u8; 4];
    let mut bytes = token.iter();
    for (index, octet) in octets.iter_mut().enumerate() {
        let first = bytes.next()?.wrapping_sub(b'0');
        if first > 9 {
            return None;
        }
        let mut value = u16::from(first);
        let mut digits = 1;
        loop {
            match bytes.next() {
                Some(b'.') if index < 3 => break,
                None if index == 3 => break,
                Some(&b) => {
                    let digit = b.wrapping_sub(b'0');
                    if digit > 9 || digits == 3 || value == 0 {
                        return None;
                    }
                    value = value * 10 + u16::from(digit);
                    digits += 1;
                }
                None => return None,
            }
        }
        *octet = u8::try_from(value).ok()?;
    }
    Some(Ipv4Addr::from(octets))
}

fn timestamp(token: &[u8], record: &mut Record<'_>) -> Result<u64, Reason> {
    Ok(seconds(number(token)?, record))
}

/// A `start` or `end` value in seconds: one given in milliseconds is converted, and flagged.
#[inline]
fn seconds(value: u64, record: &mut Record<'_>) -> u64 {
    if value > MAX_SECONDS {
        record.millis = true;
        value / 1000
    } else {
        value
    }
}

/// Sets an address-or-other field from `token`. `pkt-srcaddr`/`pkt-dstaddr` usually repeat
/// `srcaddr`/`dstaddr`: the tokens are compared, not parsed again. Both parse paths use this.
#[inline(always)]
fn set_token<'a>(
    record: &mut Record<'a>,
    field: Field,
    token: &'a [u8],
    src_token: &mut &'a [u8],
    dst_token: &mut &'a [u8],
) -> Result<(), Reason> {
    match field {
        Field::SrcAddr => *src_token = token,
        Field::DstAddr => *dst_token = token,
        Field::PktSrcAddr if token == *src_token && record.srcaddr.is_some() => {
            record.pkt_srcaddr = record.srcaddr;
            return Ok(());
        }
        Field::PktDstAddr if token == *dst_token && record.dstaddr.is_some() => {
            record.pkt_dstaddr = record.dstaddr;
            return Ok(());
        }
        _ => {}
    }
    set_field(record, field, token)
}

/// Sets `field` of `record` from `token`, or says why the token does not fit.
fn set_field<'a>(record: &mut Record<'a>, field: Field, token: &'a [u8]) -> Result<(), Reason> {
    if token == b"-" {
        return Ok(());
    }
    match field {
        Field::Version => record.version = Some(small(token, "version out of range")?),
        Field::AccountId => record.account_id = Some(token),
        Field::InterfaceId => record.interface_id = Some(token),
        Field::SrcAddr => record.srcaddr = Some(address(token)?),
        Field::DstAddr => record.dstaddr = Some(address(token)?),
        Field::PktSrcAddr => record.pkt_srcaddr = Some(address(token)?),
        Field::PktDstAddr => record.pkt_dstaddr = Some(address(token)?),
        Field::SrcPort => record.srcport = Some(small(token, "port above 65535")?),
        Field::DstPort => record.dstport = Some(small(token, "port above 65535")?),
        Field::Protocol => record.protocol = Some(small(token, "protocol above 255")?),
        Field::Packets => record.packets = Some(number(token)?),
        Field::Bytes => record.bytes = Some(number(token)?),
        Field::Start => record.start = Some(timestamp(token, record)?),
        Field::End => record.end = Some(timestamp(token, record)?),
        Field::Action => {
            record.action = Some(match token {
                b"ACCEPT" => Action::Accept,
                b"REJECT" => Action::Reject,
                _ => return Err("expected ACCEPT or REJECT"),
            });
        }
        Field::LogStatus => {
            record.log_status = Some(match token {
                b"OK" => LogStatus::Ok,
                b"NODATA" => LogStatus::NoData,
                b"SKIPDATA" => LogStatus::SkipData,
                _ => return Err("expected OK, NODATA or SKIPDATA"),
            });
        }
        Field::VpcId => record.vpc_id = Some(token),
        Field::SubnetId => record.subnet_id = Some(token),
        Field::InstanceId => record.instance_id = Some(token),
        Field::TcpFlags => record.tcp_flags = Some(small(token, "tcp-flags above 255")?),
        Field::Type => {
            record.traffic_type = Some(match token {
                b"IPv4" => TrafficType::Ipv4,
                b"IPv6" => TrafficType::Ipv6,
                b"EFA" => TrafficType::Efa,
                _ => return Err("expected IPv4, IPv6 or EFA"),
            });
        }
        Field::Region => record.region = Some(token),
        Field::AzId => record.az_id = Some(token),
        Field::PktSrcAwsService => record.pkt_src_aws_service = Some(token),
        Field::PktDstAwsService => record.pkt_dst_aws_service = Some(token),
        Field::FlowDirection => {
            record.flow_direction = Some(match token {
                b"ingress" => FlowDirection::Ingress,
                b"egress" => FlowDirection::Egress,
                _ => return Err("expected ingress or egress"),
            });
        }
        Field::TrafficPath => record.traffic_path = Some(small(token, "traffic-path above 255")?),
        Field::ResourceType => record.resource_type = Some(token),
        Field::TgwId => record.tgw_id = Some(token),
        Field::TgwAttachmentId => record.tgw_attachment_id = Some(token),
        Field::TgwPairAttachmentId => record.tgw_pair_attachment_id = Some(token),
        Field::PacketsLostNoRoute
        | Field::PacketsLostBlackhole
        | Field::PacketsLostMtuExceeded
        | Field::PacketsLostTtlExpired => {
            let lost = number(token)?;
            record.packets_lost = Some(record.packets_lost.unwrap_or(0).saturating_add(lost));
        }
        Field::EcsClusterName => record.ecs_cluster_name = Some(token),
        Field::EcsServiceName => record.ecs_service_name = Some(token),
        Field::RejectReason => record.reject_reason = Some(token),
        Field::EncryptionStatus => {
            let status: u8 = small(token, "expected 0 to 3")?;
            if status > 3 {
                return Err("expected 0 to 3");
            }
            record.encryption_status = Some(status);
        }
        Field::SublocationType
        | Field::SublocationId
        | Field::TgwSrcVpcAccountId
        | Field::TgwDstVpcAccountId
        | Field::TgwSrcVpcId
        | Field::TgwDstVpcId
        | Field::TgwSrcSubnetId
        | Field::TgwDstSubnetId
        | Field::TgwSrcEni
        | Field::TgwDstEni
        | Field::TgwSrcAzId
        | Field::TgwDstAzId
        | Field::EcsClusterArn
        | Field::EcsContainerInstanceArn
        | Field::EcsContainerInstanceId
        | Field::EcsContainerId
        | Field::EcsSecondContainerId
        | Field::EcsTaskDefinitionArn
        | Field::EcsTaskArn
        | Field::EcsTaskId
        | Field::ResourceId => {
            // Opaque identifiers: carried by AWS for context, not needed for the map.
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(header: &str, line: &str) -> Result<Record<'static>, RecordError> {
        let format = LogFormat::from_header(header).unwrap();
        let line: &'static str = Box::leak(line.to_owned().into_boxed_str());
        LineParser::new(&format).parse(line.as_bytes()).map(|(r, _)| r)
    }

    #[test]
    fn default_format_record() {
        let r = parse(
            "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status",
            "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK",
        )
        .unwrap();
        assert_eq!(r.srcaddr, Some("172.31.16.139".parse().unwrap()));
        assert_eq!(r.dstport, Some(22));
        assert_eq!(r.protocol, Some(6));
        assert_eq!(r.bytes, Some(4249));
        assert_eq!(r.action, Some(Action::Accept));
        assert_eq!(r.log_status, Some(LogStatus::Ok));
        assert!(!r.millis);
    }

    #[test]
    fn dash_in_every_field_is_none() {
        let header = Field::ALL.iter().map(|f| f.name()).collect::<Vec<_>>().join(" ");
        let line = vec!["-"; Field::ALL.len()].join(" ");
        assert_eq!(parse(&header, &line).unwrap(), Record::default());
    }

    #[test]
    fn runs_of_spaces_and_cloudwatch_prefix() {
        let format = LogFormat::from_header("srcaddr dstaddr srcport").unwrap();
        let mut p = LineParser::new(&format);
        let (r, shape) = p.parse(b"10.0.0.1  10.0.0.2 443").unwrap();
        assert!(shape.irregular_spacing);
        assert_eq!(r.srcport, Some(443));
        let (_, shape) = p.parse(b"10.0.0.1 10.0.0.2 443").unwrap();
        assert!(!shape.irregular_spacing);
        let (r, shape) = p.parse(b"2019-08-26T19:53:44.000Z 10.0.0.1 10.0.0.2 443").unwrap();
        assert!(shape.cloudwatch_timestamp);
        assert_eq!(r.srcport, Some(443));
    }

    #[test]
    fn milliseconds_are_converted_and_flagged() {
        let r = parse("start end", "1566848875000 1566848933000").unwrap();
        assert_eq!(r.start, Some(1_566_848_875));
        assert!(r.millis);
    }

    #[test]
    fn bad_values_name_field_and_value() {
        let err = parse("srcaddr dstport", "10.0.0.1 70000").unwrap_err();
        assert_eq!(err.to_string(), "field `dstport` has invalid value `70000`: port above 65535");
        let err = parse("srcaddr dstport", "10.0.0.300 80").unwrap_err();
        assert!(err.to_string().contains("`srcaddr`"), "{err}");
        let err = parse("action", "MAYBE").unwrap_err();
        assert!(err.to_string().contains("expected ACCEPT or REJECT"));
        let err = parse("srcaddr dstport", "10.0.0.1").unwrap_err();
        assert_eq!(err, RecordError::FieldCount { expected: 2, found: 1 });
        assert!(parse("bytes", "99999999999999999999999").is_err());
    }

    /// The fast path accepts a line only when the general path gives the same record.
    #[test]
    fn fast_path_agrees_with_the_general_path() {
        let header = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status vpc-id subnet-id instance-id tcp-flags type pkt-srcaddr pkt-dstaddr region az-id sublocation-type sublocation-id pkt-src-aws-service pkt-dst-aws-service flow-direction traffic-path";
        let base: Vec<&str> = "5 123456789012 eni-0a 10.0.2.13 10.0.3.10 47224 50051 6 40 15840 1764600571 1764600573 ACCEPT OK vpc-0a subnet-0b i-0c 3 IPv4 10.0.2.13 10.0.3.10 us-east-1 use1-az1 - - - - egress 1".split(' ').collect();
        let pool = [
            "-",
            "0",
            "00",
            "255",
            "256",
            "65535",
            "65536",
            "1566848875000",
            "9999999999999999999",
            "99999999999999999999",
            "184467440737095516150",
            "1.2.3.4",
            "01.2.3.4",
            "::1",
            "2001:db8::1",
            "abc",
            "ACCEPT",
            "REJECT",
            "NODATA",
            "IPv6",
            "ingress",
            "x-",
            "-x",
            "1-",
            "",
        ];
        let mut parser = LineParser::new(&LogFormat::from_header(header).unwrap());
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut fast_taken = 0;
        for round in 0..20_000 {
            let mut tokens = base.clone();
            let changes = if round == 0 { 0 } else { 1 + (rng % 3) as usize };
            for _ in 0..changes {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let at = (rng % tokens.len() as u64) as usize;
                tokens[at] = pool[((rng >> 32) % pool.len() as u64) as usize];
            }
            let line = tokens.join(" ");
            let mut fast = Record::default();
            let general = parser.clone().parse_general(line.as_bytes(), &mut Record::default()).map(|_| ());
            let mut expected = Record::default();
            let _ = parser.parse_general(line.as_bytes(), &mut expected);
            if parser.parse_regular(line.as_bytes(), &mut fast).is_some() {
                fast_taken += 1;
                assert!(general.is_ok(), "fast path accepted what the general path refuses: {line}");
                assert_eq!(fast, expected, "{line}");
            }
            // And through the public entry point, whatever path it takes.
            let mut via_entry = Record::default();
            let entry = parser.parse_into(line.as_bytes(), &mut via_entry).map(|_| ());
            assert_eq!(entry.is_ok(), general.is_ok(), "{line}");
            if entry.is_ok() {
                assert_eq!(via_entry, expected, "{line}");
            }
        }
        assert!(fast_taken > 1000, "the fast path is taken for ordinary lines ({fast_taken})");
    }

    #[test]
    fn blank_mask_finds_exactly_the_spaces() {
        for word in
            [*b"ab cd\tef", *b"        ", *b"\x00\x01 !\x1f\x21\xa0\x20", *b"12345678", *b"\xa0\xa0 \x20\x60\xe0\x00 "]
        {
            let mask = blank_mask(u64::from_le_bytes(word));
            for (i, b) in word.iter().enumerate() {
                let marked = mask & (0x80 << (8 * i)) != 0;
                assert_eq!(marked, *b == b' ', "byte {i} of {word:?}");
            }
        }
    }

    #[test]
    fn eight_digits_agrees_with_the_loop() {
        for s in ["00000000", "12345678", "99999999", "10000000", "00000001", "1566848875"] {
            let token = s.as_bytes();
            assert_eq!(number(token).unwrap(), s.parse::<u64>().unwrap(), "{s}");
        }
        for s in ["1234567a", "12345:78", "/2345678", "1234 678", "12345678\u{1}"] {
            assert!(number(s.as_bytes()).is_err(), "{s}");
        }
        let mut rng = 0x1234_5678_u64;
        for _ in 0..10_000 {
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let n = rng % 10_000_000_000_000_000;
            assert_eq!(number(n.to_string().as_bytes()).unwrap(), n);
        }
    }

    #[test]
    fn ipv4_fast_path_agrees_with_std() {
        for s in [
            "0.0.0.0",
            "10.0.0.1",
            "255.255.255.255",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1.2.3.00",
            "256.1.1.1",
            "1.2.3.2555",
            "1..2.3",
            "1.2.3.4.",
            ".1.2.3.4",
            "1.2.3.-",
            "",
        ] {
            assert_eq!(parse_ipv4(s.as_bytes()), s.parse::<Ipv4Addr>().ok(), "{s}");
            // Random strings over the alphabet of addresses.
            let mut rng = 0x9e37_79b9_u64;
            for _ in 0..200_000 {
                rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let len = (rng >> 60) as usize;
                let s: String = (0..len).map(|i| b"0123456789.2.5"[((rng >> (4 * i)) % 14) as usize] as char).collect();
                assert_eq!(parse_ipv4(s.as_bytes()), s.parse::<Ipv4Addr>().ok(), "{s}");
            }
        }
    }

    #[test]
    fn ipv6_addresses() {
        let r = parse("srcaddr", "2001:db8:1234:a100:8d6e:3477:df66:f105").unwrap();
        assert!(matches!(r.srcaddr, Some(IpAddr::V6(_))));
    }
}
