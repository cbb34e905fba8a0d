//! Streaming aggregation of records into partial maps. Memory grows with edges, assets and
//! interfaces, not with records: records are folded into per-edge counters as they arrive; only
//! records whose orientation must wait for global evidence are held, per connection, until the
//! end. Partials merge in any order to the same result.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use foldhash::fast::RandomState;

use crate::format::LogKind;
use crate::inventory::{Endpoint, Inventory};
use crate::noise::{self, NoiseFacts, NoiseKind};
use crate::orient::{self, Basis, ServerSide};
use crate::record::{Action, FlowDirection, LineShape, LogStatus, Record};
use crate::sketch::{Distinct, hash_bytes, hash_endpoint};

pub(crate) type Map<K, V> = HashMap<K, V, RandomState>;
pub(crate) type Set<K> = HashSet<K, RandomState>;

/// What the aggregation needs to know about the format of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FormatFacts {
    pub kind: LogKind,
    /// The format has `instance-id`, so a `-` there means a requester-managed interface.
    pub has_instance_id: bool,
}

/// Sentinel for "no timestamp yet" in `first`.
pub(crate) const NO_TIME: u64 = u64::MAX;

/// An oriented edge: who (client) talks to what (server) on which protocol and service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct EdgeKey {
    pub client: Endpoint,
    pub server: Endpoint,
    pub protocol: u8,
    pub port: u16,
}

/// Counters of one edge over all vantage points.
#[derive(Clone, Debug)]
pub(crate) struct EdgeAcc {
    pub records: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub first: u64,
    pub last: u64,
    pub hours: [u64; 24],
    /// Days with records (by their `start`).
    pub days: DaySet,
    pub connections: Distinct,
    pub client_addresses: Distinct,
    pub basis: [u64; 5],
    pub max_packets: u64,
    pub handshake: bool,
    /// Packets and bytes per vantage point (interface or TGW attachment; 0 when unknown).
    /// Few per edge, so a list: one hash lookup per record instead of two.
    pub views: Vec<(u64, ViewAcc)>,
}

impl Default for EdgeAcc {
    fn default() -> Self {
        Self {
            records: 0,
            accepted: 0,
            rejected: 0,
            first: NO_TIME,
            last: 0,
            hours: [0; 24],
            days: DaySet::Empty,
            connections: Distinct::default(),
            client_addresses: Distinct::default(),
            basis: [0; 5],
            max_packets: 0,
            handshake: false,
            views: Vec::new(),
        }
    }
}

impl EdgeAcc {
    /// Adds a view from vantage point `vantage`.
    pub(crate) fn add_view(&mut self, vantage: u64, view: &ViewAcc) {
        match self.views.iter_mut().find(|(v, _)| *v == vantage) {
            Some((_, existing)) => existing.merge(view),
            None => self.views.push((vantage, *view)),
        }
    }

    pub(crate) fn merge(&mut self, other: &EdgeAcc) {
        self.records += other.records;
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
        for (a, b) in self.hours.iter_mut().zip(other.hours) {
            *a += b;
        }
        self.days.merge(&other.days);
        self.connections.merge(&other.connections);
        self.client_addresses.merge(&other.client_addresses);
        for (a, b) in self.basis.iter_mut().zip(other.basis) {
            *a += b;
        }
        self.max_packets = self.max_packets.max(other.max_packets);
        self.handshake |= other.handshake;
        for (vantage, view) in &other.views {
            self.add_view(*vantage, view);
        }
    }
}

/// Packets and bytes of one edge as seen from one vantage point (interface or TGW attachment).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ViewAcc {
    pub records: u64,
    pub packets: u64,
    pub bytes: u64,
    pub ingress_packets: u64,
    pub ingress_bytes: u64,
    pub ingress_records: u64,
}

impl ViewAcc {
    /// Adds another view. Packets and bytes come from input and saturate rather than wrap.
    pub(crate) fn merge(&mut self, other: &ViewAcc) {
        self.records += other.records;
        self.packets = self.packets.saturating_add(other.packets);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.ingress_packets = self.ingress_packets.saturating_add(other.ingress_packets);
        self.ingress_bytes = self.ingress_bytes.saturating_add(other.ingress_bytes);
        self.ingress_records += other.ingress_records;
    }
}

/// The days (UTC, counted from 1970-01-01) on which an edge had records, sorted and distinct:
/// how many days an edge was active, not just the span from its first to its last record.
/// Most edges of a short window, and most held conversations, have one day: kept inline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum DaySet {
    #[default]
    Empty,
    One(u32),
    Many(Vec<u32>),
}

impl DaySet {
    /// The day of a timestamp in seconds.
    pub(crate) fn day_of(ts: u64) -> u32 {
        u32::try_from(ts / 86_400).unwrap_or(u32::MAX)
    }

    pub(crate) fn insert(&mut self, day: u32) {
        match self {
            DaySet::Empty => *self = DaySet::One(day),
            DaySet::One(d) if *d == day => {}
            DaySet::One(d) => {
                let (a, b) = if *d < day { (*d, day) } else { (day, *d) };
                *self = DaySet::Many(vec![a, b]);
            }
            // Records come roughly in time order: the last day is the usual answer.
            DaySet::Many(days) => match days.last() {
                Some(&last) if last == day => {}
                Some(&last) if last < day => days.push(day),
                _ => {
                    if let Err(at) = days.binary_search(&day) {
                        days.insert(at, day);
                    }
                }
            },
        }
    }

    pub(crate) fn merge(&mut self, other: &DaySet) {
        for &day in other.as_slice() {
            self.insert(day);
        }
    }

    pub(crate) fn as_slice(&self) -> &[u32] {
        match self {
            DaySet::Empty => &[],
            DaySet::One(d) => std::slice::from_ref(d),
            DaySet::Many(days) => days,
        }
    }
}

/// Records of hours for a held connection: usually one hour, so kept small.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HourCounts {
    None,
    One(u8, u64),
    Many(Box<[u64; 24]>),
}

impl HourCounts {
    fn add(&mut self, hour: u8, count: u64) {
        match self {
            HourCounts::None => *self = HourCounts::One(hour, count),
            HourCounts::One(h, c) if *h == hour => *c += count,
            HourCounts::One(h, c) => {
                let mut all = Box::new([0u64; 24]);
                if let Some(slot) = all.get_mut(usize::from(*h)) {
                    *slot += *c;
                }
                if let Some(slot) = all.get_mut(usize::from(hour)) {
                    *slot += count;
                }
                *self = HourCounts::Many(all);
            }
            HourCounts::Many(all) => {
                if let Some(slot) = all.get_mut(usize::from(hour)) {
                    *slot += count;
                }
            }
        }
    }

    fn merge(&mut self, other: &HourCounts) {
        match other {
            HourCounts::None => {}
            HourCounts::One(h, c) => self.add(*h, *c),
            HourCounts::Many(all) => {
                for (h, &c) in all.iter().enumerate() {
                    if c > 0 {
                        self.add(h as u8, c);
                    }
                }
            }
        }
    }

    fn add_to(&self, hours: &mut [u64; 24]) {
        match self {
            HourCounts::None => {}
            HourCounts::One(h, c) => {
                if let Some(slot) = hours.get_mut(usize::from(*h)) {
                    *slot += c;
                }
            }
            HourCounts::Many(all) => {
                for (a, b) in hours.iter_mut().zip(all.iter()) {
                    *a += b;
                }
            }
        }
    }
}

/// A conversation whose orientation waits for evidence: both ends, in a canonical order (the
/// smaller address and port first), so that both directions and every vantage point of one
/// connection share one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PendingKey {
    pub lo: IpAddr,
    pub lo_port: u16,
    pub hi: IpAddr,
    pub hi_port: u16,
    pub protocol: u8,
}

/// What a held conversation has accumulated.
#[derive(Clone, Debug)]
pub(crate) struct PendingAcc {
    pub lo: Endpoint,
    pub hi: Endpoint,
    /// Per vantage point; usually one or two.
    pub views: Vec<(u64, ViewAcc)>,
    pub records: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub first: u64,
    pub last: u64,
    /// When each direction was first seen (for protocols without ports).
    pub first_from_lo: u64,
    pub first_from_hi: u64,
    pub max_packets: u64,
    pub hours: HourCounts,
    pub days: DaySet,
}

impl PendingAcc {
    fn add_view(&mut self, vantage: u64, view: &ViewAcc) {
        match self.views.iter_mut().find(|(v, _)| *v == vantage) {
            Some((_, existing)) => existing.merge(view),
            None => self.views.push((vantage, *view)),
        }
    }

    fn merge(&mut self, other: &PendingAcc) {
        for (vantage, view) in &other.views {
            self.add_view(*vantage, view);
        }
        self.records += other.records;
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
        self.first_from_lo = self.first_from_lo.min(other.first_from_lo);
        self.first_from_hi = self.first_from_hi.min(other.first_from_hi);
        self.max_packets = self.max_packets.max(other.max_packets);
        self.hours.merge(&other.hours);
        self.days.merge(&other.days);
        // The same addresses resolve the same way; keep the smaller for determinism anyway.
        self.lo = self.lo.min(other.lo);
        self.hi = self.hi.min(other.hi);
    }
}

/// The addresses an interface could own: those present in every one of its records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum OwnAddress {
    #[default]
    Unseen,
    Candidates(Vec<IpAddr>),
}

impl OwnAddress {
    /// Intersects the candidates with a record's interface-level addresses. An interface's IPv4
    /// address is always private (AWS), so public IPv4 addresses are never candidates.
    fn observe(&mut self, a: IpAddr, b: IpAddr) {
        let eligible = |x: IpAddr| !(x.is_ipv4() && crate::inventory::is_public(x));
        match self {
            OwnAddress::Unseen => {
                let mut c: Vec<IpAddr> = [a, b].into_iter().filter(|x| eligible(*x)).collect();
                c.dedup();
                *self = OwnAddress::Candidates(c);
            }
            OwnAddress::Candidates(c) => c.retain(|x| *x == a || *x == b),
        }
    }

    fn merge(&mut self, other: &OwnAddress) {
        match (&mut *self, other) {
            (_, OwnAddress::Unseen) => {}
            (OwnAddress::Unseen, o) => *self = o.clone(),
            (OwnAddress::Candidates(c), OwnAddress::Candidates(o)) => c.retain(|x| o.contains(x)),
        }
    }

    /// The interface's own address, when exactly one candidate is left.
    pub(crate) fn single(&self) -> Option<IpAddr> {
        match self {
            OwnAddress::Candidates(c) if c.len() == 1 => c.first().copied(),
            _ => None,
        }
    }
}

/// What a vantage point (network interface or TGW attachment) has shown.
#[derive(Clone, Debug, Default)]
pub(crate) struct InterfaceAcc {
    pub id: String,
    pub transit_gateway: bool,
    pub records: u64,
    pub nodata: u64,
    pub skipdata: u64,
    pub skip_windows: BTreeSet<(u64, u64)>,
    pub own_v4: OwnAddress,
    pub own_v6: OwnAddress,
    pub forwarding: u64,
    pub instance_id: Option<String>,
    pub requester_managed: bool,
    pub vpc_id: Option<String>,
    pub subnet_id: Option<String>,
    pub account_id: Option<String>,
    pub region: Option<String>,
    pub az_id: Option<String>,
    pub ecs_service: Option<String>,
    pub first: u64,
    pub last: u64,
    /// The input whose first record described the interface (while reading).
    pub described_by: Option<usize>,
}

/// Keep at most this many SKIPDATA windows per interface (the earliest).
const MAX_SKIP_WINDOWS: usize = 32;

/// Keeps the smallest value seen (so that merging in any order gives the same result).
fn keep_min(slot: &mut Option<String>, value: Option<&[u8]>) {
    if let Some(v) = value
        && slot.as_deref().is_none_or(|s| v < s.as_bytes())
    {
        *slot = Some(String::from_utf8_lossy(v).into_owned());
    }
}

fn keep_min_owned(slot: &mut Option<String>, value: &Option<String>) {
    keep_min(slot, value.as_deref().map(str::as_bytes));
}

impl InterfaceAcc {
    fn merge(&mut self, other: &InterfaceAcc) {
        self.transit_gateway |= other.transit_gateway;
        self.records += other.records;
        self.nodata += other.nodata;
        self.skipdata += other.skipdata;
        self.skip_windows.extend(other.skip_windows.iter().copied());
        while self.skip_windows.len() > MAX_SKIP_WINDOWS {
            self.skip_windows.pop_last();
        }
        self.own_v4.merge(&other.own_v4);
        self.own_v6.merge(&other.own_v6);
        self.forwarding += other.forwarding;
        keep_min_owned(&mut self.instance_id, &other.instance_id);
        self.requester_managed |= other.requester_managed;
        keep_min_owned(&mut self.vpc_id, &other.vpc_id);
        keep_min_owned(&mut self.subnet_id, &other.subnet_id);
        keep_min_owned(&mut self.account_id, &other.account_id);
        keep_min_owned(&mut self.region, &other.region);
        keep_min_owned(&mut self.az_id, &other.az_id);
        keep_min_owned(&mut self.ecs_service, &other.ecs_service);
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
    }
}

/// Noise summarised per target, kind and protocol: never per scanner address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct NoiseKey {
    pub target: Endpoint,
    pub protocol: u8,
    pub kind: NoiseKind,
}

/// Counters of one noise bucket.
#[derive(Clone, Debug)]
pub(crate) struct NoiseAcc {
    pub records: u64,
    pub packets: u64,
    pub bytes: u64,
    pub rejected: u64,
    pub sources: Distinct,
    pub ports: Distinct,
    pub first: u64,
    pub last: u64,
}

impl Default for NoiseAcc {
    fn default() -> Self {
        Self {
            records: 0,
            packets: 0,
            bytes: 0,
            rejected: 0,
            sources: Distinct::default(),
            ports: Distinct::default(),
            first: NO_TIME,
            last: 0,
        }
    }
}

impl NoiseAcc {
    pub(crate) fn merge(&mut self, other: &NoiseAcc) {
        self.records += other.records;
        self.packets = self.packets.saturating_add(other.packets);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.rejected += other.rejected;
        self.sources.merge(&other.sources);
        self.ports.merge(&other.ports);
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
    }
}

/// One problem with the input: where and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// Index of the input in the map's `inputs`.
    pub input: usize,
    /// 1-based line (or row) number; 0 for a problem with the whole input.
    pub line: u64,
    /// What is wrong.
    pub reason: String,
}

/// Per-input counters.
#[derive(Clone, Debug)]
pub(crate) struct InputAcc {
    pub lines: u64,
    pub records: u64,
    pub bad: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub formats: BTreeSet<String>,
    pub kinds: BTreeSet<LogKind>,
    pub versions: BTreeSet<u8>,
    pub first: u64,
    pub last: u64,
    pub bytes_read: u64,
    pub compression: Option<&'static str>,
    pub unreadable: bool,
    pub truncated: bool,
}

impl Default for InputAcc {
    fn default() -> Self {
        Self {
            lines: 0,
            records: 0,
            bad: 0,
            accepted: 0,
            rejected: 0,
            formats: BTreeSet::new(),
            kinds: BTreeSet::new(),
            versions: BTreeSet::new(),
            first: NO_TIME,
            last: 0,
            bytes_read: 0,
            compression: None,
            unreadable: false,
            truncated: false,
        }
    }
}

impl InputAcc {
    fn merge(&mut self, v: &InputAcc) {
        self.lines += v.lines;
        self.records += v.records;
        self.bad += v.bad;
        self.accepted += v.accepted;
        self.rejected += v.rejected;
        self.formats.extend(v.formats.iter().cloned());
        self.kinds.extend(v.kinds.iter().copied());
        self.versions.extend(v.versions.iter().copied());
        self.first = self.first.min(v.first);
        self.last = self.last.max(v.last);
        self.bytes_read += v.bytes_read;
        self.compression = self.compression.or(v.compression);
        self.unreadable |= v.unreadable;
        self.truncated |= v.truncated;
    }
}

/// Totals over everything.
#[derive(Clone, Debug, Default)]
pub(crate) struct Totals {
    pub records: u64,
    pub traffic: u64,
    pub nodata: u64,
    pub skipdata: u64,
    pub noise: u64,
    pub unmappable: u64,
    pub millisecond_timestamps: u64,
    pub irregular_spacing: u64,
    pub cloudwatch_prefixed: u64,
    pub bad: u64,
}

/// Keep this many problems per input, in line order.
const PROBLEMS_PER_INPUT: usize = 20;

/// A partial traffic map over some inputs.
#[derive(Debug, Default)]
pub struct Partial {
    pub(crate) edges: Map<EdgeKey, EdgeAcc>,
    /// Connections of the input being read whose orientation waits for evidence.
    pub(crate) pending: Map<PendingKey, PendingAcc>,
    /// Connections that the evidence of their own input could not orient: they wait for all input.
    pub(crate) held: Map<PendingKey, PendingAcc>,
    /// Listeners proven by a SYN-ACK, in inputs already settled.
    pub(crate) listeners: Set<(IpAddr, u8, u16)>,
    /// Listeners proven by a SYN-ACK in the input being read.
    pub(crate) input_listeners: Set<(IpAddr, u8, u16)>,
    pub(crate) interfaces: Map<u64, InterfaceAcc>,
    pub(crate) noise: Map<NoiseKey, NoiseAcc>,
    pub(crate) inputs: BTreeMap<usize, InputAcc>,
    /// The input being read, kept out of the map on the hot path.
    current: Option<(usize, InputAcc)>,
    /// Recently resolved addresses (see `resolve_address`).
    resolved: Vec<Option<(IpAddr, Endpoint)>>,
    pub(crate) problems: Vec<Problem>,
    pub(crate) problem_reasons: BTreeMap<String, u64>,
    pub(crate) unknown_fields: BTreeSet<String>,
    pub(crate) totals: Totals,
}

/// The facts of one or more traffic records that aggregation needs.
struct Observed {
    view: ViewAcc,
    accepted: u64,
    rejected: u64,
    first: u64,
    last: u64,
    max_packets: u64,
}

fn hour_of(ts: u64) -> u8 {
    ((ts % 86_400) / 3_600) as u8
}

impl Partial {
    /// The counters of input `input` (cheap when it is the input being read).
    pub(crate) fn input_mut(&mut self, input: usize) -> &mut InputAcc {
        if self.current.as_ref().is_none_or(|(i, _)| *i != input) {
            self.flush_input();
            let acc = self.inputs.remove(&input).unwrap_or_default();
            self.current = Some((input, acc));
        }
        match &mut self.current {
            Some((_, acc)) => acc,
            None => unreachable!("set just above"),
        }
    }

    /// Moves the current input's counters into the map.
    pub(crate) fn flush_input(&mut self) {
        if let Some((index, acc)) = self.current.take() {
            self.inputs.entry(index).or_default().merge(&acc);
        }
    }

    /// Counts a problem with input `input` at `line`, keeping the first few of each input.
    pub(crate) fn problem(&mut self, input: usize, line: u64, reason: String, class: &str) {
        self.totals.bad += 1;
        self.input_mut(input).bad += 1;
        *self.problem_reasons.entry(class.to_owned()).or_default() += 1;
        let kept = self.problems.iter().filter(|p| p.input == input).count();
        if kept < PROBLEMS_PER_INPUT {
            self.problems.push(Problem { input, line, reason });
        }
    }

    /// Aggregates one parsed record of input `input`.
    pub(crate) fn ingest(
        &mut self,
        inventory: &Inventory,
        input: usize,
        record: &Record<'_>,
        shape: LineShape,
        format: FormatFacts,
    ) {
        self.totals.records += 1;
        if shape.irregular_spacing {
            self.totals.irregular_spacing += 1;
        }
        if shape.cloudwatch_timestamp {
            self.totals.cloudwatch_prefixed += 1;
        }
        if record.millis {
            self.totals.millisecond_timestamps += 1;
        }
        let first = record.start.unwrap_or(NO_TIME);
        let last = record.end.or(record.start).unwrap_or(0);
        {
            let acc = self.input_mut(input);
            acc.records += 1;
            if let Some(v) = record.version
                && acc.versions.last() != Some(&v)
            {
                acc.versions.insert(v);
            }
            match record.action {
                Some(Action::Accept) => acc.accepted += 1,
                Some(Action::Reject) => acc.rejected += 1,
                None => {}
            }
            acc.first = acc.first.min(first);
            acc.last = acc.last.max(last);
        }

        let vantage = self.vantage(record, format, input, first, last);

        if record.is_coverage_marker() {
            if let Some(iface) = vantage.and_then(|v| self.interfaces.get_mut(&v)) {
                if record.log_status == Some(LogStatus::SkipData) {
                    iface.skipdata += 1;
                    if iface.skip_windows.len() < MAX_SKIP_WINDOWS
                        || iface.skip_windows.last().is_some_and(|w| *w > (first, last))
                    {
                        iface.skip_windows.insert((first.min(last), last));
                        while iface.skip_windows.len() > MAX_SKIP_WINDOWS {
                            iface.skip_windows.pop_last();
                        }
                    }
                } else {
                    iface.nodata += 1;
                }
            }
            if record.log_status == Some(LogStatus::SkipData) {
                self.totals.skipdata += 1;
            } else {
                self.totals.nodata += 1;
            }
            return;
        }

        let (Some(src), Some(dst)) = (record.source(), record.destination()) else {
            self.totals.unmappable += 1;
            return;
        };
        // A format without `protocol` still shows who talks to whom: protocol 255 (IANA reserved).
        let protocol = record.protocol.unwrap_or(255);
        self.totals.traffic += 1;
        // Addresses that changed hands resolve to their owner at the record's start.
        let source = self.resolve_address(inventory, src, record.pkt_src_aws_service, record.start);
        let destination = self.resolve_address(inventory, dst, record.pkt_dst_aws_service, record.start);
        let (sport, dport) = if orient::has_ports(protocol) {
            (record.srcport.unwrap_or(0), record.dstport.unwrap_or(0))
        } else {
            (0, 0)
        };
        let packets = record.packets.unwrap_or(0);
        let bytes = record.bytes.unwrap_or(0);
        let ingress = record.flow_direction == Some(FlowDirection::Ingress);
        let observed = Observed {
            view: ViewAcc {
                records: 1,
                packets,
                bytes,
                ingress_packets: if ingress { packets } else { 0 },
                ingress_bytes: if ingress { bytes } else { 0 },
                ingress_records: u64::from(ingress),
            },
            accepted: u64::from(record.action == Some(Action::Accept)),
            rejected: u64::from(record.action == Some(Action::Reject)),
            first,
            last,
            max_packets: packets,
        };
        let mut hours = HourCounts::None;
        let mut days = DaySet::Empty;
        if let Some(start) = record.start {
            hours.add(hour_of(start), 1);
            days.insert(DaySet::day_of(start));
        }

        let facts = NoiseFacts {
            protocol,
            packets: record.packets,
            tcp_flags: record.tcp_flags,
            action: record.action,
            source_public: source.is_public_unnamed(),
            destination_public: destination.is_public_unnamed(),
        };
        if let Some(kind) = noise::classify(&facts) {
            let (target, port) = if facts.source_public { (destination, dport) } else { (source, sport) };
            let peer = if facts.source_public { src } else { dst };
            self.add_noise(NoiseKey { target, protocol, kind }, peer, port, &observed);
            return;
        }

        // Orientation that needs no other record: the record's own flags, then the inventory.
        let decided = match record.tcp_flags.filter(|_| protocol == 6).and_then(orient::by_tcp_flags) {
            Some(side) => {
                if record.tcp_flags.is_some_and(orient::proves_listener) {
                    self.input_listeners.insert((src, protocol, sport));
                }
                Some((side, Basis::TcpFlags))
            }
            None if orient::has_ports(protocol) => {
                by_inventory(inventory, source, sport, destination, dport, protocol).map(|s| (s, Basis::Inventory))
            }
            None => None,
        };
        let vantage = vantage.unwrap_or(0);
        match decided {
            Some((side, basis)) => {
                let handshake = basis == Basis::TcpFlags && side == ServerSide::Source;
                let (key, client, client_port) = match side {
                    ServerSide::Destination => {
                        (EdgeKey { client: source, server: destination, protocol, port: dport }, src, sport)
                    }
                    ServerSide::Source => {
                        (EdgeKey { client: destination, server: source, protocol, port: sport }, dst, dport)
                    }
                };
                self.fold(key, vantage, client, client_port, basis, &observed, handshake, &hours, &days);
            }
            None => {
                let from_lo = (src, sport) <= (dst, dport);
                let (key, lo, hi) = if from_lo {
                    (PendingKey { lo: src, lo_port: sport, hi: dst, hi_port: dport, protocol }, source, destination)
                } else {
                    (PendingKey { lo: dst, lo_port: dport, hi: src, hi_port: sport, protocol }, destination, source)
                };
                let acc = PendingAcc {
                    lo,
                    hi,
                    views: vec![(vantage, observed.view)],
                    records: observed.view.records,
                    accepted: observed.accepted,
                    rejected: observed.rejected,
                    first,
                    last,
                    first_from_lo: if from_lo { first } else { NO_TIME },
                    first_from_hi: if from_lo { NO_TIME } else { first },
                    max_packets: observed.max_packets,
                    hours,
                    days,
                };
                match self.pending.get_mut(&key) {
                    Some(existing) => existing.merge(&acc),
                    None => {
                        self.pending.insert(key, acc);
                        if self.pending.len() >= PENDING_CAP {
                            self.settle(inventory, false);
                        }
                    }
                }
            }
        }
    }

    /// Resolves an address through a small direct-mapped cache (the same few addresses recur);
    /// addresses whose owner depends on the time are resolved every time.
    fn resolve_address(
        &mut self,
        inventory: &Inventory,
        addr: IpAddr,
        aws_service: Option<&[u8]>,
        time: Option<u64>,
    ) -> Endpoint {
        if aws_service.is_some() {
            return inventory.resolve_raw(addr, aws_service, time);
        }
        if self.resolved.is_empty() {
            self.resolved = vec![None; RESOLVE_CACHE];
        }
        let slot = (hash_endpoint(addr, 0) as usize) % RESOLVE_CACHE;
        if let Some(Some((cached, endpoint))) = self.resolved.get(slot)
            && *cached == addr
        {
            return *endpoint;
        }
        let (endpoint, by_time) = inventory.resolve_timed(addr, None, time);
        if !by_time && let Some(entry) = self.resolved.get_mut(slot) {
            *entry = Some((addr, endpoint));
        }
        endpoint
    }

    /// The vantage point of a record, with what the record says about it.
    fn vantage(
        &mut self,
        record: &Record<'_>,
        format: FormatFacts,
        input: usize,
        first: u64,
        last: u64,
    ) -> Option<u64> {
        let (id, transit_gateway) = match (format.kind, record.interface_id, record.tgw_attachment_id) {
            (_, Some(eni), _) => (eni, false),
            (_, None, Some(attachment)) => (attachment, true),
            _ => return None,
        };
        let key = hash_bytes(id) ^ u64::from(transit_gateway);
        let iface = self.interfaces.entry(key).or_insert_with(|| InterfaceAcc {
            id: String::from_utf8_lossy(id).into_owned(),
            transit_gateway,
            first: NO_TIME,
            ..InterfaceAcc::default()
        });
        iface.first = iface.first.min(first);
        iface.last = iface.last.max(last);
        if record.is_coverage_marker() {
            keep_min(&mut iface.account_id, record.account_id);
            return Some(key);
        }
        iface.records += 1;
        if !transit_gateway && let (Some(a), Some(b)) = (record.srcaddr, record.dstaddr) {
            if a.is_ipv4() {
                iface.own_v4.observe(a, b);
            } else {
                iface.own_v6.observe(a, b);
            }
            let translated = record.pkt_srcaddr.is_some_and(|p| p != a) || record.pkt_dstaddr.is_some_and(|p| p != b);
            if translated {
                iface.forwarding += 1;
            }
        }
        if !transit_gateway {
            // `instance-id` is `-` on requester-managed interfaces (NAT gateway, TGW, endpoints).
            match record.instance_id {
                // Compared only when it differs from the kept one (it rarely does).
                Some(instance) if iface.instance_id.as_deref().map(str::as_bytes) != Some(instance) => {
                    keep_min(&mut iface.instance_id, Some(instance));
                }
                Some(_) => {}
                None if format.has_instance_id => iface.requester_managed = true,
                None => {}
            }
        }
        // What describes the interface is the same on all its records (AWS): read it from the
        // first record of each input, not from every record.
        if iface.described_by != Some(input) {
            iface.described_by = Some(input);
            keep_min(&mut iface.vpc_id, record.vpc_id);
            keep_min(&mut iface.subnet_id, record.subnet_id);
            keep_min(&mut iface.account_id, record.account_id);
            keep_min(&mut iface.region, record.region);
            keep_min(&mut iface.az_id, record.az_id);
            keep_min(&mut iface.ecs_service, record.ecs_service_name);
        }
        Some(key)
    }

    fn add_noise(&mut self, key: NoiseKey, peer: IpAddr, port: u16, observed: &Observed) {
        self.totals.noise += 1;
        let acc = self.noise.entry(key).or_default();
        acc.records += 1;
        acc.packets = acc.packets.saturating_add(observed.view.packets);
        acc.bytes = acc.bytes.saturating_add(observed.view.bytes);
        acc.rejected += observed.rejected;
        acc.sources.insert(hash_endpoint(peer, 0));
        acc.ports.insert(crate::sketch::hash_u64(u64::from(port)));
        acc.first = acc.first.min(observed.first);
        acc.last = acc.last.max(observed.last);
    }

    #[allow(clippy::too_many_arguments, reason = "one record's facts, folded in one place")]
    fn fold(
        &mut self,
        key: EdgeKey,
        vantage: u64,
        client: IpAddr,
        client_port: u16,
        basis: Basis,
        observed: &Observed,
        handshake: bool,
        hours: &HourCounts,
        days: &DaySet,
    ) {
        let edge = self.edges.entry(key).or_default();
        edge.records += observed.view.records;
        edge.accepted += observed.accepted;
        edge.rejected += observed.rejected;
        edge.first = edge.first.min(observed.first);
        edge.last = edge.last.max(observed.last);
        hours.add_to(&mut edge.hours);
        edge.days.merge(days);
        edge.connections.insert(hash_endpoint(client, client_port));
        edge.client_addresses.insert(hash_endpoint(client, 0));
        if let Some(slot) = edge.basis.get_mut(basis as usize) {
            *slot += observed.view.records;
        }
        edge.max_packets = edge.max_packets.max(observed.max_packets);
        edge.handshake |= handshake;
        edge.add_view(vantage, &observed.view);
    }

    /// Merges another partial into this one.
    pub fn merge(&mut self, mut other: Partial) {
        self.flush_input();
        other.flush_input();
        for (k, v) in other.edges {
            match self.edges.get_mut(&k) {
                Some(e) => e.merge(&v),
                None => {
                    self.edges.insert(k, v);
                }
            }
        }
        debug_assert!(other.pending.is_empty() && other.input_listeners.is_empty(), "merge settled partials");
        merge_pending(&mut self.held, other.held);
        merge_pending(&mut self.held, other.pending);
        self.listeners.extend(other.listeners);
        self.listeners.extend(other.input_listeners);
        for (k, v) in other.interfaces {
            match self.interfaces.get_mut(&k) {
                Some(e) => e.merge(&v),
                None => {
                    self.interfaces.insert(k, v);
                }
            }
        }
        for (k, v) in other.noise {
            self.noise.entry(k).or_default().merge(&v);
        }
        for (k, v) in &other.inputs {
            self.inputs.entry(*k).or_default().merge(v);
        }
        self.problems.extend(other.problems);
        for (k, v) in other.problem_reasons {
            *self.problem_reasons.entry(k).or_default() += v;
        }
        self.unknown_fields.extend(other.unknown_fields);
        let (a, b) = (&mut self.totals, other.totals);
        a.records += b.records;
        a.traffic += b.traffic;
        a.nodata += b.nodata;
        a.skipdata += b.skipdata;
        a.noise += b.noise;
        a.unmappable += b.unmappable;
        a.millisecond_timestamps += b.millisecond_timestamps;
        a.irregular_spacing += b.irregular_spacing;
        a.cloudwatch_prefixed += b.cloudwatch_prefixed;
        a.bad += b.bad;
    }

    /// Orients the connections of the input being read with that input's own evidence (listeners
    /// proven by a SYN-ACK, fan-in) and holds the rest for the end. Called at the end of each
    /// input and whenever too many connections wait, so memory stays bounded; the outcome
    /// depends only on the input's content, never on which thread read it or when.
    pub(crate) fn settle(&mut self, inventory: &Inventory, end_of_input: bool) {
        let pending = std::mem::take(&mut self.pending);
        let listeners = std::mem::take(&mut self.input_listeners);
        let unresolved = self.resolve(pending, &listeners, inventory, false);
        merge_pending(&mut self.held, unresolved);
        if end_of_input {
            self.listeners.extend(listeners);
        } else {
            self.input_listeners = listeners;
        }
    }

    /// Orients every held connection with the evidence of all inputs and folds it into the edges.
    pub(crate) fn resolve_held(&mut self, inventory: &Inventory) {
        self.settle(inventory, true);
        let held = std::mem::take(&mut self.held);
        let listeners = std::mem::take(&mut self.listeners);
        let rest = self.resolve(held, &listeners, inventory, true);
        debug_assert!(rest.is_empty());
        self.listeners = listeners;
    }

    /// Orients what it can of `pending` and folds it; returns the rest. `last` uses every rule,
    /// down to port ranges; otherwise only listeners, the inventory and fan-in decide.
    fn resolve(
        &mut self,
        pending: Map<PendingKey, PendingAcc>,
        listeners: &Set<(IpAddr, u8, u16)>,
        inventory: &Inventory,
        last: bool,
    ) -> Map<PendingKey, PendingAcc> {
        let mut rest = Map::default();
        if pending.is_empty() {
            return rest;
        }
        // Fan-in: distinct peers (address and port) of each address and port among held
        // conversations (each key is one conversation).
        let mut peers: Map<(IpAddr, u16, u8), u32> = Map::default();
        for k in pending.keys() {
            *peers.entry((k.lo, k.lo_port, k.protocol)).or_default() += 1;
            *peers.entry((k.hi, k.hi_port, k.protocol)).or_default() += 1;
        }

        // Every rule below is symmetric in the two ends, so both directions agree. `Source`
        // means the `lo` end is the server.
        for (k, v) in pending {
            let (side, basis) = if orient::has_ports(k.protocol) {
                let lo_listens = listeners.contains(&(k.lo, k.protocol, k.lo_port));
                let hi_listens = listeners.contains(&(k.hi, k.protocol, k.hi_port));
                if lo_listens != hi_listens {
                    (if lo_listens { ServerSide::Source } else { ServerSide::Destination }, Basis::TcpFlags)
                } else if let Some(side) = by_inventory(inventory, v.lo, k.lo_port, v.hi, k.hi_port, k.protocol) {
                    (side, Basis::Inventory)
                } else {
                    let lp = peers.get(&(k.lo, k.lo_port, k.protocol)).copied().unwrap_or(0);
                    let hp = peers.get(&(k.hi, k.hi_port, k.protocol)).copied().unwrap_or(0);
                    match orient::by_fan_in(lp, hp) {
                        Some(side) => (side, Basis::PortStats),
                        // Ties go to the textually smaller address, as the emitted SQL decides.
                        None if last => (
                            orient::by_port_range(k.lo_port, k.hi_port, k.lo.to_string() < k.hi.to_string()),
                            Basis::PortRange,
                        ),
                        None => {
                            rest.insert(k, v);
                            continue;
                        }
                    }
                }
            } else if !last {
                rest.insert(k, v);
                continue;
            } else {
                // Protocols without ports: the end that sent first is the client.
                let (forward, reverse) = (v.first_from_lo, v.first_from_hi);
                let lo_first = forward < reverse || (forward == reverse && k.lo.to_string() <= k.hi.to_string());
                (if lo_first { ServerSide::Destination } else { ServerSide::Source }, Basis::FirstSeen)
            };
            let (key, client, client_port) = match side {
                ServerSide::Destination => {
                    (EdgeKey { client: v.lo, server: v.hi, protocol: k.protocol, port: k.hi_port }, k.lo, k.lo_port)
                }
                ServerSide::Source => {
                    (EdgeKey { client: v.hi, server: v.lo, protocol: k.protocol, port: k.lo_port }, k.hi, k.hi_port)
                }
            };
            let edge = self.edges.entry(key).or_default();
            edge.records += v.records;
            edge.accepted += v.accepted;
            edge.rejected += v.rejected;
            edge.first = edge.first.min(v.first);
            edge.last = edge.last.max(v.last);
            v.hours.add_to(&mut edge.hours);
            edge.days.merge(&v.days);
            edge.connections.insert(hash_endpoint(client, client_port));
            edge.client_addresses.insert(hash_endpoint(client, 0));
            if let Some(slot) = edge.basis.get_mut(basis as usize) {
                *slot += v.records;
            }
            edge.max_packets = edge.max_packets.max(v.max_packets);
            for (vantage, view) in &v.views {
                edge.add_view(*vantage, view);
            }
        }
        rest
    }
}

/// Slots of the address cache (see `resolve_address`).
const RESOLVE_CACHE: usize = 1024;

/// Connections waiting at once for one input before they are settled early.
const PENDING_CAP: usize = 1 << 16;

fn merge_pending(into: &mut Map<PendingKey, PendingAcc>, from: Map<PendingKey, PendingAcc>) {
    if into.is_empty() {
        *into = from;
        return;
    }
    for (k, v) in from {
        match into.get_mut(&k) {
            Some(e) => e.merge(&v),
            None => {
                into.insert(k, v);
            }
        }
    }
}

/// The inventory's word on which side listens: a `listen` tag (or an interface endpoint).
fn by_inventory(
    inventory: &Inventory,
    source: Endpoint,
    source_port: u16,
    destination: Endpoint,
    destination_port: u16,
    protocol: u8,
) -> Option<ServerSide> {
    let listens = |ep: Endpoint, port: u16| match ep {
        Endpoint::Asset(a) => inventory.listens(a, protocol, port),
        _ => false,
    };
    match (listens(source, source_port), listens(destination, destination_port)) {
        (true, false) => Some(ServerSide::Source),
        (false, true) => Some(ServerSide::Destination),
        _ => None,
    }
}
