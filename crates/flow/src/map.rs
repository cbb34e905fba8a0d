//! The traffic map: its documented, versioned schema (`docs/map-schema.md`) and the final step
//! that turns a merged [`Partial`] into it — held connections oriented, vantage points
//! de-duplicated, addresses named, everything sorted so that the same input gives the same bytes.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::aggregate::{EdgeAcc, EdgeKey, InterfaceAcc, NO_TIME, NoiseAcc, NoiseKey, Partial, ViewAcc};
use crate::format::LogKind;
use crate::inventory::{AssetKind, Endpoint, Inventory, is_public};
use crate::noise::NoiseKind;
use crate::orient::{Basis, Confidence};
use crate::sketch::hash_u64;
use crate::source::InputInfo;

/// The schema identifier written into every map.
pub const SCHEMA: &str = "zerogate.traffic-map/v1";

/// A traffic map: assets, who talks to whom, noise, coverage and what was dropped.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TrafficMap {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The first and last time any record covers.
    pub window: Window,
    /// The inputs read, in the order given.
    pub inputs: Vec<InputSummary>,
    /// Every asset the inventory names or the flows show, sorted by id.
    pub assets: Vec<AssetEntry>,
    /// Oriented edges, sorted by client, server, protocol and port.
    pub edges: Vec<Edge>,
    /// Scans, backscatter and probes: summarised per target, never edges.
    pub noise: NoiseSummary,
    /// What the inputs cover and what they cannot show.
    pub coverage: Coverage,
    /// Input that could not be used, and why.
    pub dropped: Dropped,
}

/// A time window in RFC 3339 (UTC).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Window {
    /// Earliest `start`.
    pub first_seen: Option<String>,
    /// Latest `end`.
    pub last_seen: Option<String>,
}

/// One input and what it held.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InputSummary {
    /// Path as given (or found under a directory); `-` for standard input.
    pub path: String,
    /// `gzip`, `parquet` or `none`.
    pub compression: String,
    /// What the S3 key says, if the path follows an S3 delivery layout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<crate::source::S3Key>,
    /// The formats seen, in `LogFormat` syntax.
    pub formats: Vec<String>,
    /// `vpc` and/or `transit-gateway`.
    pub kinds: Vec<LogKind>,
    /// `version` values seen.
    pub versions: Vec<u8>,
    /// Lines read, header lines included.
    pub lines: u64,
    /// Records parsed.
    pub records: u64,
    /// Records or lines refused.
    pub bad: u64,
    /// `ACCEPT` records.
    pub accepted: u64,
    /// `REJECT` records.
    pub rejected: u64,
    /// Which traffic the flow log captures, as far as its records show.
    pub traffic_type: String,
    /// The input could not be read at all.
    pub unreadable: bool,
    /// The input ended early (a truncated gzip member, a read error).
    pub truncated: bool,
}

/// An asset: a named thing, an unknown private address, an AWS service or the internet.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AssetEntry {
    /// Stable id (`i-…`, `eni-…`, a CSV name, `ip:10.0.0.5`, `aws:S3`, `internet`).
    pub id: String,
    /// Readable name, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What it is.
    pub kind: AssetKind,
    /// AWS interface type of a network interface.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface_type: Option<String>,
    /// Tags.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// VPC, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    /// Subnet, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// Addresses or networks (from the inventory, or observed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Network interfaces.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    /// `describe-instances`, `describe-network-interfaces`, `csv`, `ip-ranges`, `flow-log`.
    pub source: String,
    /// Edges in which it is the client.
    pub client_edges: u64,
    /// Edges in which it is the server.
    pub server_edges: u64,
}

/// One oriented edge: clients of one asset using one service of another.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Edge {
    /// Client asset id.
    pub client: String,
    /// Server asset id.
    pub server: String,
    /// IANA protocol number (255: the format has no `protocol`).
    pub protocol: u8,
    /// `tcp`, `udp`, `icmp`, … or the number.
    pub protocol_name: String,
    /// Server port (0 for protocols without ports).
    pub port: u16,
    /// Raw records, from every vantage point.
    pub records: u64,
    /// Connections: distinct client address and port pairs (estimated above 128).
    pub connections: u64,
    /// Whether `connections` is exact.
    pub connections_exact: bool,
    /// Distinct client addresses.
    pub client_addresses: u64,
    /// Packets, counted once (from one vantage class).
    pub packets: u64,
    /// Bytes, counted once (from one vantage class).
    pub bytes: u64,
    /// Earliest `start`.
    pub first_seen: Option<String>,
    /// Latest `end`.
    pub last_seen: Option<String>,
    /// Raw `ACCEPT` records.
    pub accepted: u64,
    /// Raw `REJECT` records.
    pub rejected: u64,
    /// How the client and server sides were told apart.
    pub orientation: Orientation,
    /// Where packets and bytes were counted.
    pub vantage: Vantage,
    /// Raw records per hour of day (UTC), 0 to 23: the edge's baseline.
    pub hours: [u64; 24],
    /// Days (UTC) with at least one record: how regular the edge is, where `first_seen` and
    /// `last_seen` only give its span (a weekly batch job spans 21 days but is seen on 4).
    pub days_seen: u64,
    /// Those days, as ISO 8601 dates and closed date intervals (`2025-12-01/2025-12-05`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub active_days: Vec<String>,
}

/// Sorted, distinct day numbers as dates and runs of consecutive dates.
pub fn day_ranges(days: &[u32]) -> Vec<String> {
    let date = |day: u32| {
        let mut text = rfc3339(u64::from(day) * 86_400);
        text.truncate(10);
        text
    };
    let mut out = Vec::new();
    let mut rest = days.iter().copied().peekable();
    while let Some(start) = rest.next() {
        let mut end = start;
        while rest.peek() == Some(&end.saturating_add(1)) {
            end = rest.next().unwrap_or(end);
        }
        out.push(if end == start { date(start) } else { format!("{}/{}", date(start), date(end)) });
    }
    out
}

/// The day numbers of [`day_ranges`]' text; `None` when an entry is not a date or interval.
pub fn parse_day_ranges(ranges: &[String]) -> Option<Vec<u32>> {
    let day = |text: &str| -> Option<u32> { u32::try_from(parse_rfc3339(&format!("{text}T00:00:00Z"))? / 86_400).ok() };
    let mut out = Vec::new();
    for range in ranges {
        let (start, end) = match range.split_once('/') {
            Some((a, b)) => (day(a)?, day(b)?),
            None => (day(range)?, day(range)?),
        };
        // A range wider than the span of any flow-log retention is not one of ours.
        if end < start || end - start > 3660 {
            return None;
        }
        out.extend(start..=end);
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// How an edge was oriented.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Orientation {
    /// The strongest basis among the edge's records.
    pub basis: Basis,
    /// Confidence of that basis.
    pub confidence: Confidence,
    /// Records per basis.
    pub records_by_basis: BTreeMap<String, u64>,
}

/// The class of vantage point whose view of an edge was counted.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Vantage {
    /// The server's own network interfaces.
    ServerInterface,
    /// The client's own network interfaces.
    ClientInterface,
    /// An interface of either end (which one could not be told).
    EndpointInterface,
    /// NAT gateway, Transit Gateway or endpoint interfaces that forward the traffic.
    Intermediate,
    /// Transit Gateway attachments (TGW flow logs).
    TransitGateway,
}

/// Noise, summarised.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct NoiseSummary {
    /// Noise records in all.
    pub records: u64,
    /// Records per kind.
    pub by_kind: BTreeMap<String, u64>,
    /// Per target, protocol and kind.
    pub targets: Vec<NoiseTarget>,
}

/// Noise aimed at (or answered by) one asset.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NoiseTarget {
    /// The asset in the estate.
    pub target: String,
    /// IANA protocol number.
    pub protocol: u8,
    /// Scan, backscatter, scan reply or probe.
    pub kind: NoiseKind,
    /// Records.
    pub records: u64,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Records rejected by security groups or NACLs.
    pub rejected: u64,
    /// Distinct internet addresses involved (estimated above 128).
    pub sources: u64,
    /// Distinct ports of the target involved (estimated above 128).
    pub ports: u64,
    /// Earliest `start`.
    pub first_seen: Option<String>,
    /// Latest `end`.
    pub last_seen: Option<String>,
}

/// Coverage: what the inputs show and what they cannot.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct Coverage {
    /// Records parsed.
    pub records: u64,
    /// Records with traffic (not NODATA or SKIPDATA).
    pub traffic_records: u64,
    /// NODATA records: windows without traffic.
    pub nodata_records: u64,
    /// SKIPDATA records: windows where AWS skipped records; the map has gaps there.
    pub skipdata_records: u64,
    /// Records classified as noise.
    pub noise_records: u64,
    /// Records of the translated (NAT gateway to internet) leg, counted on the untranslated leg.
    pub nat_translated_records: u64,
    /// Traffic records without addresses or protocol in their format.
    pub unmappable_records: u64,
    /// Records whose `start`/`end` were milliseconds.
    pub millisecond_timestamps: u64,
    /// Lines whose fields were separated by more than one space.
    pub irregular_spacing_lines: u64,
    /// Lines carrying a CloudWatch Logs export timestamp.
    pub cloudwatch_prefixed_lines: u64,
    /// Flows flow logs never show; a policy built from the map must allow them explicitly.
    pub never_logged: Vec<String>,
    /// Vantage points (network interfaces and TGW attachments), sorted by id.
    pub interfaces: Vec<InterfaceCoverage>,
}

/// One vantage point.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InterfaceCoverage {
    /// Interface or attachment id.
    pub id: String,
    /// `network-interface` or `transit-gateway-attachment`.
    pub kind: String,
    /// Traffic records.
    pub records: u64,
    /// NODATA records.
    pub nodata: u64,
    /// SKIPDATA records.
    pub skipdata: u64,
    /// The earliest SKIPDATA windows (`start`, `end`), at most 32.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipdata_windows: Vec<[Option<String>; 2]>,
    /// The interface's own addresses, where the records tell them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub own_addresses: Vec<String>,
    /// Instance it is attached to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// `instance-id` was `-`: NAT gateway, TGW, endpoint or other requester-managed interface.
    pub requester_managed: bool,
    /// Records where the packet's addresses differ from the interface's: it forwards traffic.
    pub forwarded_records: u64,
    /// VPC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    /// Subnet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// Account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// Region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Availability zone id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub az_id: Option<String>,
    /// ECS service whose task owns it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ecs_service: Option<String>,
    /// Earliest record.
    pub first_seen: Option<String>,
    /// Latest record.
    pub last_seen: Option<String>,
}

/// What was dropped.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct Dropped {
    /// Lines, records or inputs refused.
    pub problems: u64,
    /// Count per reason.
    pub by_reason: BTreeMap<String, u64>,
    /// The first problems of each input, in input and line order.
    pub examples: Vec<ProblemEntry>,
    /// Fields in headers that this build does not know (ignored).
    pub unknown_fields: Vec<String>,
}

/// One problem.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProblemEntry {
    /// Input path.
    pub input: String,
    /// Line or row (0: the input as a whole).
    pub line: u64,
    /// Why.
    pub reason: String,
}

/// Flows that AWS never logs (VPC user guide, flow log limitations).
const NEVER_LOGGED: &[&str] = &[
    "Amazon DNS server (Route 53 Resolver at the VPC base address + 2)",
    "instance metadata service 169.254.169.254",
    "Amazon Time Sync Service 169.254.169.123",
    "DHCP",
    "Windows license activation",
    "traffic to the VPC router's reserved address",
    "mirrored traffic",
    "traffic between an endpoint interface and a Network Load Balancer interface",
];

/// A well-known name for an IANA protocol number.
pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        51 => "ah".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        255 => "unknown".into(),
        n => n.to_string(),
    }
}

/// Formats Unix seconds as RFC 3339 in UTC.
pub fn rfc3339(ts: u64) -> String {
    let secs = ts % 86_400;
    let (year, month, day) = zerogate_civil::civil_from_days(i64::try_from(ts / 86_400).unwrap_or(i64::MAX));
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, (secs % 3600) / 60, secs % 60)
}

/// Unix seconds of an RFC 3339 UTC time as [`rfc3339`] writes it (`YYYY-MM-DDTHH:MM:SSZ`).
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 20 || b.get(4) != Some(&b'-') || b.get(10) != Some(&b'T') || b.get(19) != Some(&b'Z') {
        return None;
    }
    let num = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = zerogate_civil::days_from_civil(year, u32::try_from(month).ok()?, u32::try_from(day).ok()?);
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
}

fn time(ts: u64) -> Option<String> {
    (ts != NO_TIME && ts != 0).then(|| rfc3339(ts))
}

/// A per-edge, per-class view sum.
#[derive(Default, Clone, Copy)]
struct ClassViews {
    server: ViewAcc,
    client: ViewAcc,
    endpoint: ViewAcc,
    intermediate: ViewAcc,
    tgw: ViewAcc,
    translated: ViewAcc,
}

fn add(a: &mut ViewAcc, b: &ViewAcc) {
    a.records += b.records;
    a.packets = a.packets.saturating_add(b.packets);
    a.bytes = a.bytes.saturating_add(b.bytes);
    a.ingress_packets = a.ingress_packets.saturating_add(b.ingress_packets);
    a.ingress_bytes = a.ingress_bytes.saturating_add(b.ingress_bytes);
    a.ingress_records += b.ingress_records;
}

fn max_view(a: &mut ViewAcc, b: &ViewAcc) {
    if (b.bytes, b.packets, b.records) > (a.bytes, a.packets, a.records) {
        *a = *b;
    }
}

impl ClassViews {
    fn merge(&mut self, other: &ClassViews) {
        add(&mut self.server, &other.server);
        add(&mut self.client, &other.client);
        max_view(&mut self.endpoint, &other.endpoint);
        add(&mut self.intermediate, &other.intermediate);
        add(&mut self.tgw, &other.tgw);
        add(&mut self.translated, &other.translated);
    }

    /// The view whose count to report: the largest, preferring the ends' own interfaces.
    fn chosen(&self) -> Option<(Vantage, ViewAcc)> {
        let tgw = if self.tgw.ingress_records > 0 {
            ViewAcc { packets: self.tgw.ingress_packets, bytes: self.tgw.ingress_bytes, ..self.tgw }
        } else {
            self.tgw
        };
        let candidates = [
            (Vantage::ServerInterface, self.server),
            (Vantage::ClientInterface, self.client),
            (Vantage::EndpointInterface, self.endpoint),
            (Vantage::Intermediate, self.intermediate),
            (Vantage::TransitGateway, tgw),
        ];
        let mut best: Option<(Vantage, ViewAcc)> = None;
        for (vantage, view) in candidates {
            if view.records == 0 {
                continue;
            }
            let better =
                best.is_none_or(|(_, b)| (view.bytes, view.packets, view.records) > (b.bytes, b.packets, b.records));
            if better {
                best = Some((vantage, view));
            }
        }
        best
    }
}

/// An edge by final asset ids: client, server, protocol, port.
type FinalKey = (String, String, u8, u16);

/// Turns the merged partial into the traffic map.
pub fn finalize(mut partial: Partial, inventory: &Inventory, inputs: &[InputInfo]) -> TrafficMap {
    partial.flush_input();
    partial.resolve_held(inventory);
    let interfaces = &partial.interfaces;

    // Addresses that are an interface's own: named after the instance or interface.
    let mut learned: BTreeMap<IpAddr, &InterfaceAcc> = BTreeMap::new();
    for iface in interfaces.values() {
        if iface.transit_gateway {
            continue;
        }
        for own in [iface.own_v4.single(), iface.own_v6.single()].into_iter().flatten() {
            learned
                .entry(own)
                .and_modify(|e| {
                    if iface.id < e.id {
                        *e = iface;
                    }
                })
                .or_insert(iface);
        }
    }
    let mut namer = Namer { inventory, learned: &learned, seen: BTreeMap::new() };

    // Per edge: class views from every vantage point.
    let mut class_views: BTreeMap<EdgeKey, ClassViews> = BTreeMap::new();
    for (key, acc) in &partial.edges {
        for (vantage, view) in &acc.views {
            let class = classify_view(key, interfaces.get(vantage), inventory);
            let entry = class_views.entry(*key).or_default();
            match class {
                Some(Vantage::ServerInterface) => add(&mut entry.server, view),
                Some(Vantage::ClientInterface) => add(&mut entry.client, view),
                Some(Vantage::EndpointInterface) => max_view(&mut entry.endpoint, view),
                Some(Vantage::Intermediate) => add(&mut entry.intermediate, view),
                Some(Vantage::TransitGateway) => add(&mut entry.tgw, view),
                None => add(&mut entry.translated, view),
            }
        }
    }

    // Re-key by final asset ids; merge what collapses.
    let mut final_edges: BTreeMap<FinalKey, (EdgeAcc, ClassViews)> = BTreeMap::new();
    let mut nat_translated = 0;
    let mut noise: BTreeMap<NoiseKey, NoiseAcc> = partial.noise.drain().collect();
    for (key, acc) in partial.edges.drain() {
        let views = class_views.get(&key).copied().unwrap_or_default();
        if views.chosen().is_none() {
            // Only the NAT gateway's translated leg saw it: the untranslated leg counts it.
            nat_translated += views.translated.records;
            continue;
        }
        nat_translated += views.translated.records;
        if key.client.is_public_unnamed() && !acc.handshake && acc.max_packets <= 2 {
            let bucket = noise
                .entry(NoiseKey { target: key.server, protocol: key.protocol, kind: NoiseKind::Probe })
                .or_default();
            let mut probe = NoiseAcc {
                records: acc.records,
                first: acc.first,
                last: acc.last,
                rejected: acc.rejected,
                ..NoiseAcc::default()
            };
            probe.sources.merge(&acc.client_addresses);
            probe.ports.insert(hash_u64(u64::from(key.port)));
            if let Some((_, v)) = views.chosen() {
                probe.packets = v.packets;
                probe.bytes = v.bytes;
            }
            bucket.merge(&probe);
            partial.totals.noise += acc.records;
            continue;
        }
        let client = namer.name(key.client);
        let server = namer.name(key.server);
        let slot = final_edges
            .entry((client, server, key.protocol, key.port))
            .or_insert_with(|| (EdgeAcc::default(), ClassViews::default()));
        slot.0.merge(&acc);
        slot.1.merge(&views);
    }

    let mut edges = Vec::with_capacity(final_edges.len());
    let mut client_edges: BTreeMap<String, u64> = BTreeMap::new();
    let mut server_edges: BTreeMap<String, u64> = BTreeMap::new();
    for ((client, server, protocol, port), (acc, views)) in final_edges {
        let Some((vantage, view)) = views.chosen() else {
            continue;
        };
        *client_edges.entry(client.clone()).or_default() += 1;
        *server_edges.entry(server.clone()).or_default() += 1;
        let basis = Basis::ALL
            .into_iter()
            .find(|b| acc.basis.get(*b as usize).is_some_and(|n| *n > 0))
            .unwrap_or(Basis::PortRange);
        let records_by_basis = Basis::ALL
            .into_iter()
            .filter_map(|b| acc.basis.get(b as usize).filter(|n| **n > 0).map(|n| (b.name().to_owned(), *n)))
            .collect();
        edges.push(Edge {
            client,
            server,
            protocol,
            protocol_name: protocol_name(protocol),
            port,
            records: acc.records,
            connections: acc.connections.count(),
            connections_exact: acc.connections.is_exact(),
            client_addresses: acc.client_addresses.count(),
            packets: view.packets,
            bytes: view.bytes,
            first_seen: time(acc.first),
            last_seen: time(acc.last),
            accepted: acc.accepted,
            rejected: acc.rejected,
            orientation: Orientation { basis, confidence: basis.confidence(), records_by_basis },
            vantage,
            hours: acc.hours,
            days_seen: acc.days.as_slice().len() as u64,
            active_days: day_ranges(acc.days.as_slice()),
        });
    }

    let mut noise_summary = NoiseSummary::default();
    for (key, acc) in noise {
        noise_summary.records += acc.records;
        let kind_name =
            serde_json::to_value(key.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        *noise_summary.by_kind.entry(kind_name).or_default() += acc.records;
        noise_summary.targets.push(NoiseTarget {
            target: namer.name(key.target),
            protocol: key.protocol,
            kind: key.kind,
            records: acc.records,
            packets: acc.packets,
            bytes: acc.bytes,
            rejected: acc.rejected,
            sources: acc.sources.count(),
            ports: acc.ports.count(),
            first_seen: time(acc.first),
            last_seen: time(acc.last),
        });
    }
    noise_summary.targets.sort_by(|a, b| (&a.target, a.protocol, a.kind).cmp(&(&b.target, b.protocol, b.kind)));

    let assets = namer.assets(&client_edges, &server_edges);

    let mut iface_list: Vec<InterfaceCoverage> = interfaces.values().map(interface_coverage).collect();
    iface_list.sort_by(|a, b| (&a.id, &a.kind).cmp(&(&b.id, &b.kind)));

    let t = &partial.totals;
    let coverage = Coverage {
        records: t.records,
        traffic_records: t.traffic,
        nodata_records: t.nodata,
        skipdata_records: t.skipdata,
        noise_records: t.noise,
        nat_translated_records: nat_translated,
        unmappable_records: t.unmappable,
        millisecond_timestamps: t.millisecond_timestamps,
        irregular_spacing_lines: t.irregular_spacing,
        cloudwatch_prefixed_lines: t.cloudwatch_prefixed,
        never_logged: NEVER_LOGGED.iter().map(|s| (*s).to_owned()).collect(),
        interfaces: iface_list,
    };

    let mut problems = std::mem::take(&mut partial.problems);
    problems.sort();
    let dropped = Dropped {
        problems: t.bad,
        by_reason: partial.problem_reasons.clone(),
        examples: problems
            .into_iter()
            .map(|p| ProblemEntry {
                input: inputs.get(p.input).map(|i| i.path.clone()).unwrap_or_default(),
                line: p.line,
                reason: p.reason,
            })
            .collect(),
        unknown_fields: partial.unknown_fields.iter().cloned().collect(),
    };

    let mut first = NO_TIME;
    let mut last = 0;
    let inputs = inputs
        .iter()
        .enumerate()
        .map(|(i, info)| {
            let acc = partial.inputs.get(&i).cloned().unwrap_or_default();
            if acc.records > 0 {
                first = first.min(acc.first);
                last = last.max(acc.last);
            }
            let traffic_type = match (acc.accepted > 0, acc.rejected > 0) {
                (true, true) => "accept-and-reject",
                (true, false) => "accept-only",
                (false, true) => "reject-only",
                (false, false) => "unknown",
            };
            InputSummary {
                path: info.path.clone(),
                compression: acc.compression.unwrap_or("none").to_owned(),
                s3: info.s3.clone(),
                formats: acc.formats.iter().cloned().collect(),
                kinds: acc.kinds.iter().copied().collect(),
                versions: acc.versions.iter().copied().collect(),
                lines: acc.lines,
                records: acc.records,
                bad: acc.bad,
                accepted: acc.accepted,
                rejected: acc.rejected,
                traffic_type: traffic_type.to_owned(),
                unreadable: acc.unreadable,
                truncated: acc.truncated,
            }
        })
        .collect();

    TrafficMap {
        schema: SCHEMA.to_owned(),
        window: Window { first_seen: time(first), last_seen: time(last) },
        inputs,
        assets,
        edges,
        noise: noise_summary,
        coverage,
        dropped,
    }
}

/// Which vantage class a view belongs to; `None` for the translated leg of a NAT gateway.
fn classify_view(key: &EdgeKey, iface: Option<&InterfaceAcc>, inventory: &Inventory) -> Option<Vantage> {
    let Some(iface) = iface else {
        return Some(Vantage::EndpointInterface);
    };
    if iface.transit_gateway {
        return Some(Vantage::TransitGateway);
    }
    let forwarding_type = inventory
        .asset_of_interface(&iface.id)
        .and_then(|a| inventory.assets().get(a as usize))
        .and_then(|a| a.interface_type.as_deref())
        .is_some_and(|t| {
            matches!(t, "nat_gateway" | "transit_gateway" | "gateway_load_balancer_endpoint" | "vpc_endpoint")
        });
    let forwards = iface.forwarding > 0 || iface.requester_managed || forwarding_type;
    let own: Vec<Endpoint> = [iface.own_v4.single(), iface.own_v6.single()]
        .into_iter()
        .flatten()
        .map(|a| inventory.resolve(a, None))
        .collect();
    let is_client = own.contains(&key.client);
    let is_server = own.contains(&key.server);
    match (is_client, is_server) {
        (true, true) => Some(Vantage::EndpointInterface),
        (true, false) | (false, true) if forwards => None,
        (true, false) => Some(Vantage::ClientInterface),
        (false, true) => Some(Vantage::ServerInterface),
        (false, false) if forwards || !own.is_empty() => Some(Vantage::Intermediate),
        (false, false) => Some(Vantage::EndpointInterface),
    }
}

fn interface_coverage(iface: &InterfaceAcc) -> InterfaceCoverage {
    InterfaceCoverage {
        id: iface.id.clone(),
        kind: if iface.transit_gateway { "transit-gateway-attachment" } else { "network-interface" }.to_owned(),
        records: iface.records,
        nodata: iface.nodata,
        skipdata: iface.skipdata,
        skipdata_windows: iface.skip_windows.iter().map(|&(s, e)| [time(s), time(e)]).collect(),
        own_addresses: [iface.own_v4.single(), iface.own_v6.single()]
            .into_iter()
            .flatten()
            .map(|a| a.to_string())
            .collect(),
        instance_id: iface.instance_id.clone(),
        requester_managed: iface.requester_managed && iface.instance_id.is_none(),
        forwarded_records: iface.forwarding,
        vpc_id: iface.vpc_id.clone(),
        subnet_id: iface.subnet_id.clone(),
        account_id: iface.account_id.clone(),
        region: iface.region.clone(),
        az_id: iface.az_id.clone(),
        ecs_service: iface.ecs_service.clone(),
        first_seen: time(iface.first),
        last_seen: time(iface.last),
    }
}

/// Names endpoints and remembers what it named, to list the assets afterwards.
struct Namer<'a> {
    inventory: &'a Inventory,
    learned: &'a BTreeMap<IpAddr, &'a InterfaceAcc>,
    seen: BTreeMap<String, AssetEntry>,
}

impl Namer<'_> {
    fn name(&mut self, endpoint: Endpoint) -> String {
        let entry = match endpoint {
            Endpoint::Asset(index) => {
                let Some(asset) = self.inventory.assets().get(index as usize) else {
                    return "unknown".into();
                };
                return asset.id.clone();
            }
            Endpoint::Internet => AssetEntry::bare("internet", AssetKind::Internet, "flow-log"),
            Endpoint::Service(index) => {
                let service = self.inventory.services().get(usize::from(index)).map_or("UNKNOWN", String::as_str);
                AssetEntry::bare(&format!("aws:{service}"), AssetKind::AwsService, "ip-ranges")
            }
            Endpoint::Address(addr) => match self.learned.get(&addr) {
                Some(iface) => {
                    let (id, kind) = match &iface.instance_id {
                        Some(instance) => (instance.clone(), AssetKind::Instance),
                        None => (iface.id.clone(), AssetKind::NetworkInterface),
                    };
                    let mut entry = AssetEntry::bare(&id, kind, "flow-log");
                    entry.name = iface.ecs_service.clone();
                    entry.vpc_id = iface.vpc_id.clone();
                    entry.subnet_id = iface.subnet_id.clone();
                    entry.addresses = vec![addr.to_string()];
                    entry.interfaces = vec![iface.id.clone()];
                    entry
                }
                None => {
                    let mut entry = AssetEntry::bare(&format!("ip:{addr}"), AssetKind::Unknown, "flow-log");
                    entry.addresses = vec![addr.to_string()];
                    if is_public(addr) {
                        entry.kind = AssetKind::Internet;
                    }
                    entry
                }
            },
        };
        let id = entry.id.clone();
        self.seen
            .entry(id.clone())
            .and_modify(|e| {
                for a in &entry.addresses {
                    if !e.addresses.contains(a) {
                        e.addresses.push(a.clone());
                    }
                }
                for i in &entry.interfaces {
                    if !e.interfaces.contains(i) {
                        e.interfaces.push(i.clone());
                    }
                }
            })
            .or_insert(entry);
        id
    }

    fn assets(mut self, client_edges: &BTreeMap<String, u64>, server_edges: &BTreeMap<String, u64>) -> Vec<AssetEntry> {
        for asset in self.inventory.assets() {
            self.seen.entry(asset.id.clone()).or_insert_with(|| AssetEntry {
                id: asset.id.clone(),
                name: asset.name.clone(),
                kind: asset.kind.clone(),
                interface_type: asset.interface_type.clone(),
                tags: asset.tags.clone(),
                vpc_id: asset.vpc_id.clone(),
                subnet_id: asset.subnet_id.clone(),
                addresses: asset
                    .prefixes
                    .iter()
                    .map(|p| if p.is_host() { p.addr().to_string() } else { p.to_string() })
                    .collect(),
                interfaces: asset.interfaces.clone(),
                source: asset.source.clone(),
                client_edges: 0,
                server_edges: 0,
            });
        }
        let mut assets: Vec<AssetEntry> = self.seen.into_values().collect();
        for asset in &mut assets {
            asset.addresses.sort();
            asset.interfaces.sort();
            asset.client_edges = client_edges.get(&asset.id).copied().unwrap_or(0);
            asset.server_edges = server_edges.get(&asset.id).copied().unwrap_or(0);
        }
        assets.sort_by(|a, b| a.id.cmp(&b.id));
        assets
    }
}

impl AssetEntry {
    fn bare(id: &str, kind: AssetKind, source: &str) -> Self {
        Self {
            id: id.to_owned(),
            name: None,
            kind,
            interface_type: None,
            tags: BTreeMap::new(),
            vpc_id: None,
            subnet_id: None,
            addresses: Vec::new(),
            interfaces: Vec::new(),
            source: source.to_owned(),
            client_edges: 0,
            server_edges: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_days_are_runs_of_dates_and_read_back() {
        let day = |date: &str| u32::try_from(parse_rfc3339(&format!("{date}T00:00:00Z")).unwrap() / 86_400).unwrap();
        let mut set = crate::aggregate::DaySet::default();
        // A weekly job, out of order, one day twice, and a run over a month's end.
        for date in ["2025-12-15", "2025-12-01", "2025-12-08", "2025-12-08", "2025-12-30", "2025-12-31", "2026-01-01"] {
            set.insert(day(date));
        }
        let text = day_ranges(set.as_slice());
        assert_eq!(text, ["2025-12-01", "2025-12-08", "2025-12-15", "2025-12-30/2026-01-01"]);
        assert_eq!(parse_day_ranges(&text).unwrap(), set.as_slice());
        assert_eq!(set.as_slice().len(), 6);
        assert!(parse_day_ranges(&["2025-12-05/2025-12-01".into()]).is_none(), "a reversed range");
        assert!(parse_day_ranges(&["yesterday".into()]).is_none());
        assert!(day_ranges(&[]).is_empty());
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_418_530_010), "2014-12-14T04:06:50Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn rfc3339_parses_back() {
        for ts in [0, 951_782_400, 1_418_530_010, 1_764_547_200, 4_102_444_799] {
            assert_eq!(parse_rfc3339(&rfc3339(ts)), Some(ts));
        }
        for bad in
            ["2025-13-01T00:00:00Z", "2025-12-01 00:00:00Z", "2025-12-01T00:00:00", "", "2025-12-01T00:00:00+01:00"]
        {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
