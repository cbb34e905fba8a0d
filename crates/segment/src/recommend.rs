//! Least-privilege recommendations from a traffic map: assets grouped into segments, one allow
//! rule per (client segment, server segment, protocol, server port) that the map shows was used,
//! each with its evidence and a stability state, segments ranked by what they protect, and the
//! platform services flow logs never show stated as explicit default rules.
//!
//! Pure: a parsed map in, a [`Recommendation`] out. What is *not* a rule is as deliberate as what
//! is: the map has already set scans and backscatter aside as noise (never edges); an edge whose
//! records were all refused (`REJECT`) is an attempt, not a need; an edge oriented only by port
//! ranges is held back for review instead of guessed into a rule, unless stronger evidence from
//! other edges already makes the same rule. Rules name server ports only,
//! never client ephemeral ports, because the map's edges are oriented.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use zerogate_flow::map::{parse_day_ranges, parse_rfc3339, rfc3339};

/// The map schema this module reads.
pub const MAP_SCHEMA: &str = "zerogate.traffic-map/v1";

/// The part of a traffic map (`zerogate map -o map.json`) that recommendations use; other
/// members are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct MapInput {
    /// Must be [`MAP_SCHEMA`].
    pub schema: String,
    /// The time the map covers.
    pub window: WindowInput,
    /// Every asset.
    pub assets: Vec<AssetInput>,
    /// Oriented edges.
    pub edges: Vec<EdgeInput>,
}

/// The map's window.
#[derive(Debug, Clone, Deserialize)]
pub struct WindowInput {
    /// RFC 3339, UTC.
    pub first_seen: Option<String>,
    /// RFC 3339, UTC.
    pub last_seen: Option<String>,
}

/// An asset of the map.
#[derive(Debug, Clone, Deserialize)]
pub struct AssetInput {
    /// Stable id.
    pub id: String,
    /// Readable name.
    #[serde(default)]
    pub name: Option<String>,
    /// `instance`, `network-interface`, `named`, `aws-service`, `internet`, `unknown`.
    pub kind: String,
    /// Inventory tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Addresses or networks.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// VPC, where known.
    #[serde(default)]
    pub vpc_id: Option<String>,
}

/// An edge of the map.
#[derive(Debug, Clone, Deserialize)]
pub struct EdgeInput {
    /// Client asset id.
    pub client: String,
    /// Server asset id.
    pub server: String,
    /// IANA protocol number.
    pub protocol: u8,
    /// `tcp`, `udp`, …
    pub protocol_name: String,
    /// Server port.
    pub port: u16,
    /// Connections.
    pub connections: u64,
    /// Bytes.
    pub bytes: u64,
    /// `ACCEPT` records.
    pub accepted: u64,
    /// `REJECT` records.
    pub rejected: u64,
    /// RFC 3339.
    pub first_seen: Option<String>,
    /// RFC 3339.
    pub last_seen: Option<String>,
    /// How the edge was oriented.
    pub orientation: OrientationInput,
    /// Days with records, as the map writes them (dates and date intervals); maps from before
    /// per-day activity have none.
    #[serde(default)]
    pub active_days: Vec<String>,
    /// `active_days` as day numbers (days since 1970-01-01), filled by [`parse_map`].
    #[serde(skip)]
    pub days: Vec<u32>,
}

/// An edge's orientation.
#[derive(Debug, Clone, Deserialize)]
pub struct OrientationInput {
    /// `high`, `medium` or `low`.
    pub confidence: String,
    /// The strongest basis.
    pub basis: String,
}

/// Why a map cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecommendError {
    /// Not JSON, or not the shape of a map.
    #[error("{path}: not a zerogate traffic map: {reason}")]
    NotAMap {
        /// The file.
        path: String,
        /// What the parser said.
        reason: String,
    },
    /// Another schema version.
    #[error("{path}: schema `{found}` is not `{MAP_SCHEMA}`")]
    Schema {
        /// The file.
        path: String,
        /// The schema it names.
        found: String,
    },
    /// An edge names an asset the map does not hold.
    #[error("{path}: edges[{index}] names asset `{asset}`, which the map's assets do not hold")]
    UnknownAsset {
        /// The file.
        path: String,
        /// The edge.
        index: usize,
        /// The asset id.
        asset: String,
    },
}

/// Parses a map file's bytes; `path` names it in errors.
pub fn parse_map(path: &str, bytes: &[u8]) -> Result<MapInput, RecommendError> {
    let mut map: MapInput = serde_json::from_slice(bytes)
        .map_err(|e| RecommendError::NotAMap { path: path.to_owned(), reason: e.to_string() })?;
    if map.schema != MAP_SCHEMA {
        return Err(RecommendError::Schema { path: path.to_owned(), found: map.schema });
    }
    let ids: BTreeSet<&str> = map.assets.iter().map(|a| a.id.as_str()).collect();
    for (index, edge) in map.edges.iter().enumerate() {
        for asset in [&edge.client, &edge.server] {
            if !ids.contains(asset.as_str()) {
                return Err(RecommendError::UnknownAsset { path: path.to_owned(), index, asset: asset.clone() });
            }
        }
    }
    for (index, edge) in map.edges.iter_mut().enumerate() {
        edge.days = parse_day_ranges(&edge.active_days).ok_or_else(|| RecommendError::NotAMap {
            path: path.to_owned(),
            reason: format!(
                "edges[{index}].active_days: expected dates (YYYY-MM-DD) and date intervals (YYYY-MM-DD/YYYY-MM-DD)"
            ),
        })?;
    }
    Ok(map)
}

/// How assets become segments and which edges may become rules.
#[derive(Debug, Clone)]
pub struct Options {
    /// Tags that name an asset's segment, first present wins (default `segment`, `tier`, `role`,
    /// `app`). Assets without any are grouped by behaviour, or alone.
    pub segment_tags: Vec<String>,
    /// Asset id or name → segment, overriding tags.
    pub overrides: BTreeMap<String, String>,
    /// Make rules from edges oriented by port ranges alone (held back by default).
    pub include_low_confidence: bool,
    /// Group assets that no override or tag places by their observed behaviour (default on).
    pub group_by_behaviour: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            segment_tags: ["segment", "tier", "role", "app"].map(str::to_owned).to_vec(),
            overrides: BTreeMap::new(),
            include_low_confidence: false,
            group_by_behaviour: true,
        }
    }
}

/// A rule's stability: how long the set of rules into its server segment has stopped changing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stability {
    /// New rules appeared within the last day of the window (or the window is shorter than a day).
    Learning,
    /// No new rule for at least a day.
    Stabilizing,
    /// No new rule for at least [`STABLE_AFTER_DAYS`] days of a window of at least twice that.
    Stable,
}

/// Days without a new rule after which a segment's rules count as stable.
pub const STABLE_AFTER_DAYS: u64 = 7;

/// What supports a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// Map edges (asset pairs) behind the rule.
    pub edges: u64,
    /// Connections.
    pub connections: u64,
    /// Bytes.
    pub bytes: u64,
    /// First seen (RFC 3339).
    pub first_seen: Option<String>,
    /// Last seen (RFC 3339).
    pub last_seen: Option<String>,
    /// Calendar days (UTC) from first to last seen, both included.
    pub span_days: u64,
    /// Days (UTC) on which at least one of the rule's edges had flows: daily traffic has as
    /// many as it spans, a weekly job a seventh. `None` for a map without per-day activity.
    pub days_seen: Option<u64>,
    /// The strongest orientation confidence among the rule's edges (a rule exists only when
    /// at least one edge is oriented by more than port ranges, unless low confidence was asked for).
    pub orientation: String,
}

/// One least-privilege allow rule between segments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Stable id: `<client>-to-<server>-<protocol>-<port>`.
    pub id: String,
    /// Client segment.
    pub client: String,
    /// Server segment.
    pub server: String,
    /// IANA protocol number.
    pub protocol: u8,
    /// `tcp`, `udp`, …
    pub protocol_name: String,
    /// The server port used (0 for protocols without ports).
    pub port: u16,
    /// Why the rule exists.
    pub evidence: Evidence,
    /// How settled it is.
    pub stability: Stability,
}

/// An edge that did not become a rule, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeldBack {
    /// Client asset.
    pub client: String,
    /// Server asset.
    pub server: String,
    /// Protocol name.
    pub protocol_name: String,
    /// Server port.
    pub port: u16,
    /// Why.
    pub reason: String,
}

/// A segment: assets that share a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Segment {
    /// Its name.
    pub name: String,
    /// Where the name came from: `override`, `tag:<key>`, `behaviour`, `asset`, `internet`,
    /// `aws-service`.
    pub source: String,
    /// Member asset ids.
    pub members: Vec<String>,
    /// The highest sensitivity among its members' tags (`sensitivity` or `data-classification`).
    pub sensitivity: Option<String>,
}

/// A segment ranked by what it protects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Priority {
    /// Segment name.
    pub segment: String,
    /// Higher first.
    pub score: u64,
    /// What the score is made of.
    pub reasons: Vec<String>,
}

/// A platform service flow logs never show, allowed by default and stated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlatformRule {
    /// What it is.
    pub name: &'static str,
    /// Where.
    pub destination: &'static str,
    /// Protocol and port.
    pub service: &'static str,
    /// Why it is allowed and why no flow shows it.
    pub why: &'static str,
}

/// The services every instance needs that VPC flow logs do not record.
pub const PLATFORM_RULES: [PlatformRule; 4] = [
    PlatformRule {
        name: "Amazon DNS resolver",
        destination: "169.254.169.253 and the VPC base address + 2",
        service: "udp/53, tcp/53",
        why: "name resolution; traffic to the Amazon DNS server is not logged by flow logs and not filtered by security groups",
    },
    PlatformRule {
        name: "Instance metadata service",
        destination: "169.254.169.254 (fd00:ec2::254)",
        service: "tcp/80",
        why: "credentials and instance identity; not logged and not filtered by security groups",
    },
    PlatformRule {
        name: "Amazon Time Sync",
        destination: "169.254.169.123 (fd00:ec2::123)",
        service: "udp/123",
        why: "clock synchronization, which certificates and tokens depend on; not logged and not filtered",
    },
    PlatformRule {
        name: "DHCP",
        destination: "the VPC's DHCP service",
        service: "udp/67-68",
        why: "address assignment; not logged by flow logs",
    },
];

/// Everything `zerogate recommend` produces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recommendation {
    /// The map's window.
    pub window: (Option<String>, Option<String>),
    /// Segments, by name.
    pub segments: Vec<Segment>,
    /// Allow rules, by client, server, protocol and port.
    pub rules: Vec<Rule>,
    /// Edges that did not become rules.
    pub held_back: Vec<HeldBack>,
    /// Segments that receive traffic, most valuable first.
    pub priorities: Vec<Priority>,
    /// Platform services allowed by default.
    pub platform: Vec<PlatformRule>,
}

const DAY: u64 = 86_400;

fn sensitivity_rank(value: &str) -> u64 {
    match value.to_ascii_lowercase().as_str() {
        "critical" | "restricted" | "secret" => 4,
        "high" | "confidential" | "pii" | "pci" => 3,
        "medium" | "internal" => 2,
        _ => 1,
    }
}

fn sensitivity_of(tags: &BTreeMap<String, String>) -> Option<&String> {
    tags.get("sensitivity").or_else(|| tags.get("data-classification"))
}

fn confidence_rank(confidence: &str) -> u8 {
    match confidence {
        "high" => 3,
        "medium" => 2,
        _ => 1,
    }
}

/// A name safe for ids: lowercase ASCII letters, digits and `-`.
pub fn slug(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

/// Groups the map's assets into segments, then recommends.
pub fn recommend(map: &MapInput, options: &Options) -> Recommendation {
    // Segment of every asset.
    let mut segment_of: BTreeMap<&str, (String, String)> = BTreeMap::new();
    for asset in &map.assets {
        let by_override = options
            .overrides
            .get(&asset.id)
            .or_else(|| asset.name.as_ref().and_then(|name| options.overrides.get(name)));
        let (name, source) = if let Some(segment) = by_override {
            (segment.clone(), "override".to_owned())
        } else if asset.kind == "internet" {
            ("internet".to_owned(), "internet".to_owned())
        } else if asset.kind == "aws-service" {
            (asset.id.clone(), "aws-service".to_owned())
        } else if let Some((key, value)) =
            options.segment_tags.iter().find_map(|key| asset.tags.get(key).map(|value| (key, value)))
        {
            (value.clone(), format!("tag:{key}"))
        } else {
            (asset.name.clone().unwrap_or_else(|| asset.id.clone()), "asset".to_owned())
        };
        segment_of.insert(asset.id.as_str(), (name, source));
    }
    if options.group_by_behaviour {
        group_by_behaviour(map, &mut segment_of);
    }
    let mut segments: BTreeMap<String, Segment> = BTreeMap::new();
    for asset in &map.assets {
        let Some((name, source)) = segment_of.get(asset.id.as_str()) else { continue };
        let segment = segments.entry(name.clone()).or_insert_with(|| Segment {
            name: name.clone(),
            source: source.clone(),
            members: Vec::new(),
            sensitivity: None,
        });
        segment.members.push(asset.id.clone());
        if let Some(value) = sensitivity_of(&asset.tags)
            && segment.sensitivity.as_deref().is_none_or(|current| sensitivity_rank(value) > sensitivity_rank(current))
        {
            segment.sensitivity = Some(value.clone());
        }
    }

    // Rules: edges folded by (client segment, server segment, protocol, port).
    struct Acc {
        protocol_name: String,
        edges: u64,
        connections: u64,
        bytes: u64,
        first: Option<u64>,
        last: Option<u64>,
        strongest: u8,
        days: BTreeSet<u32>,
    }
    let mut folded: BTreeMap<(String, String, u8, u16), Acc> = BTreeMap::new();
    let mut held_back = Vec::new();
    let key_of = |edge: &EdgeInput| -> Option<(String, String, u8, u16)> {
        let (client, _) = segment_of.get(edge.client.as_str())?;
        let (server, _) = segment_of.get(edge.server.as_str())?;
        Some((client.clone(), server.clone(), edge.protocol, edge.port))
    };
    // Edges oriented by port ranges alone join a rule only when stronger evidence from other
    // edges already makes it (same segments, protocol and port): corroborated, not guessed.
    let corroborated: BTreeSet<(String, String, u8, u16)> =
        map.edges.iter().filter(|e| e.accepted > 0 && e.orientation.confidence != "low").filter_map(key_of).collect();
    for edge in &map.edges {
        let hold = |reason: &str| HeldBack {
            client: edge.client.clone(),
            server: edge.server.clone(),
            protocol_name: edge.protocol_name.clone(),
            port: edge.port,
            reason: reason.to_owned(),
        };
        if edge.accepted == 0 {
            held_back.push(hold("every record was refused (REJECT): an attempt, not a need"));
            continue;
        }
        let Some(key) = key_of(edge) else { continue };
        if edge.orientation.confidence == "low" && !options.include_low_confidence && !corroborated.contains(&key) {
            held_back.push(hold(&format!(
                "oriented by {} alone: which side serves is a guess; confirm, then add it or pass --include-low-confidence",
                edge.orientation.basis
            )));
            continue;
        }
        let acc = folded.entry(key).or_insert_with(|| Acc {
            protocol_name: edge.protocol_name.clone(),
            edges: 0,
            connections: 0,
            bytes: 0,
            first: None,
            last: None,
            strongest: 0,
            days: BTreeSet::new(),
        });
        acc.days.extend(edge.days.iter().copied());
        acc.edges += 1;
        acc.connections += edge.connections;
        acc.bytes += edge.bytes;
        if let Some(t) = edge.first_seen.as_deref().and_then(parse_rfc3339) {
            acc.first = Some(acc.first.map_or(t, |f| f.min(t)));
        }
        if let Some(t) = edge.last_seen.as_deref().and_then(parse_rfc3339) {
            acc.last = Some(acc.last.map_or(t, |l| l.max(t)));
        }
        acc.strongest = acc.strongest.max(confidence_rank(&edge.orientation.confidence));
    }

    // Stability per server segment: how long since a rule into it first appeared.
    let window_start = map.window.first_seen.as_deref().and_then(parse_rfc3339);
    let window_end = map.window.last_seen.as_deref().and_then(parse_rfc3339);
    let mut newest_into: BTreeMap<&str, u64> = BTreeMap::new();
    for ((_, server, _, _), acc) in &folded {
        if let Some(first) = acc.first {
            let newest = newest_into.entry(server.as_str()).or_insert(first);
            *newest = (*newest).max(first);
        }
    }
    let stability = |server: &str| -> Stability {
        let (Some(start), Some(end)) = (window_start, window_end) else { return Stability::Learning };
        let quiet = newest_into.get(server).map_or(0, |newest| end.saturating_sub(*newest));
        if end.saturating_sub(start) >= 2 * STABLE_AFTER_DAYS * DAY && quiet >= STABLE_AFTER_DAYS * DAY {
            Stability::Stable
        } else if quiet >= DAY {
            Stability::Stabilizing
        } else {
            Stability::Learning
        }
    };
    let rules: Vec<Rule> = folded
        .iter()
        .map(|((client, server, protocol, port), acc)| {
            let span_days = match (acc.first, acc.last) {
                (Some(first), Some(last)) => last / DAY - first / DAY + 1,
                _ => 0,
            };
            Rule {
                id: format!("{}-to-{}-{}-{port}", slug(client), slug(server), slug(&acc.protocol_name)),
                client: client.clone(),
                server: server.clone(),
                protocol: *protocol,
                protocol_name: acc.protocol_name.clone(),
                port: *port,
                evidence: Evidence {
                    edges: acc.edges,
                    connections: acc.connections,
                    bytes: acc.bytes,
                    first_seen: acc.first.map(rfc3339),
                    last_seen: acc.last.map(rfc3339),
                    span_days,
                    days_seen: (!acc.days.is_empty()).then_some(acc.days.len() as u64),
                    orientation: match acc.strongest {
                        3 => "high",
                        2 => "medium",
                        _ => "low",
                    }
                    .to_owned(),
                },
                stability: stability(server),
            }
        })
        .collect();

    let priorities = prioritize(&segments, &rules);
    Recommendation {
        window: (map.window.first_seen.clone(), map.window.last_seen.clone()),
        segments: segments.into_values().collect(),
        rules,
        held_back,
        priorities,
        platform: PLATFORM_RULES.to_vec(),
    }
}

/// What an asset does, at the level rules are written: (serves?, peer segment, protocol, port).
type Behaviour = BTreeSet<(bool, String, u8, u16)>;

/// Groups the assets that no override or tag placed when they behave alike: (nearly) the same
/// services served to the same peer segments and used on the same peer segments. Peers
/// count by their segment, so the grouping is repeated (a few rounds) as peers themselves group.
/// A group is named `observed:<first member>+<others>`; an asset like no other stays alone.
fn group_by_behaviour<'a>(map: &'a MapInput, segment_of: &mut BTreeMap<&'a str, (String, String)>) {
    let names: BTreeMap<&str, &str> =
        map.assets.iter().map(|a| (a.id.as_str(), a.name.as_deref().unwrap_or(a.id.as_str()))).collect();
    for _round in 0..4 {
        let mut behaviour: BTreeMap<&str, Behaviour> = BTreeMap::new();
        for edge in map.edges.iter().filter(|e| e.accepted > 0) {
            let (Some((client, _)), Some((server, _))) =
                (segment_of.get(edge.client.as_str()), segment_of.get(edge.server.as_str()))
            else {
                continue;
            };
            behaviour.entry(edge.client.as_str()).or_default().insert((
                false,
                server.clone(),
                edge.protocol,
                edge.port,
            ));
            behaviour.entry(edge.server.as_str()).or_default().insert((true, client.clone(), edge.protocol, edge.port));
        }
        let mut alike: BTreeMap<&Behaviour, Vec<&str>> = BTreeMap::new();
        for (asset, seen) in &behaviour {
            let regroupable =
                segment_of.get(asset).is_some_and(|(_, source)| source == "asset" || source == "behaviour");
            if regroupable {
                alike.entry(seen).or_default().push(asset);
            }
        }
        let mut changed = false;
        for members in similar_groups(&alike) {
            let Some(first) = members.first() else { continue };
            let (name, source) = if members.len() > 1 {
                (format!("observed:{}+{}", names.get(first).unwrap_or(first), members.len() - 1), "behaviour")
            } else {
                ((*names.get(first).unwrap_or(first)).to_owned(), "asset")
            };
            for member in members {
                let fresh = (name.clone(), source.to_owned());
                if segment_of.get(member) != Some(&fresh) {
                    segment_of.insert(member, fresh);
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
}

/// Two behaviours are alike enough to share a segment when they share at least half of all
/// they do (Jaccard) and, for servers, at least one service they serve: one web server that is
/// also scraped by monitoring stays with the web tier; a bastion that serves SSH does not join
/// the web servers it reaches over SSH.
const SIMILAR: f64 = 0.5;

/// How many candidate groups one behaviour is compared with (bounds the work on huge untagged
/// estates; beyond it, groups stay exact).
const MAX_CANDIDATES: usize = 64;

fn similar(a: &Behaviour, b: &Behaviour) -> bool {
    let common = a.intersection(b).count();
    let all = a.len() + b.len() - common;
    if all == 0 || (common as f64) < SIMILAR * all as f64 {
        return false;
    }
    let served = |x: &Behaviour| x.iter().filter(|k| k.0).map(|k| (k.2, k.3)).collect::<BTreeSet<_>>();
    let (served_a, served_b) = (served(a), served(b));
    served_a.is_empty() && served_b.is_empty() || !served_a.is_disjoint(&served_b)
}

/// Groups of identical behaviour, joined where every behaviour of one group is [`similar`] to
/// every behaviour of the other (complete linkage, so similarity never chains across tiers).
fn similar_groups<'b, 'a>(alike: &'b BTreeMap<&'b Behaviour, Vec<&'a str>>) -> Vec<Vec<&'a str>> {
    let mut clusters: Vec<(Vec<&Behaviour>, Vec<&'a str>)> = Vec::new();
    // Candidate clusters by what their members serve (or, for pure clients, use).
    let mut by_service: BTreeMap<(bool, u8, u16), Vec<usize>> = BTreeMap::new();
    for (seen, members) in alike {
        let serves = seen.iter().any(|k| k.0);
        let keys: BTreeSet<(bool, u8, u16)> = seen.iter().filter(|k| k.0 == serves).map(|k| (k.0, k.2, k.3)).collect();
        let candidates: BTreeSet<usize> =
            keys.iter().filter_map(|k| by_service.get(k)).flatten().copied().take(MAX_CANDIDATES).collect();
        let joined = candidates.into_iter().find(|&c| {
            clusters.get(c).is_some_and(|(behaviours, _)| behaviours.iter().all(|other| similar(seen, other)))
        });
        let index = match joined {
            Some(c) => c,
            None => {
                clusters.push((Vec::new(), Vec::new()));
                clusters.len() - 1
            }
        };
        if let Some((behaviours, cluster_members)) = clusters.get_mut(index) {
            behaviours.push(seen);
            cluster_members.extend(members.iter().copied());
        }
        for key in keys {
            let list = by_service.entry(key).or_default();
            if !list.contains(&index) {
                list.push(index);
            }
        }
    }
    clusters
        .into_iter()
        .map(|(_, mut members)| {
            members.sort_unstable();
            members
        })
        .collect()
}

/// Ranks the segments that serve someone: sensitivity weighs most, then exposure to the
/// internet, then how many segments are its clients, then its own lateral reach.
fn prioritize(segments: &BTreeMap<String, Segment>, rules: &[Rule]) -> Vec<Priority> {
    // Who each segment serves and reaches, in one pass (segments × rules would be quadratic on
    // an untagged estate, where every asset is a segment).
    let mut clients_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut reach_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for rule in rules {
        clients_of.entry(rule.server.as_str()).or_default().insert(rule.client.as_str());
        reach_of.entry(rule.client.as_str()).or_default().insert(rule.server.as_str());
    }
    let none = BTreeSet::new();
    let mut out = Vec::new();
    for segment in segments.values() {
        let Some(clients) = clients_of.get(segment.name.as_str()) else { continue };
        if segment.source == "internet" || segment.source == "aws-service" {
            continue;
        }
        let sensitivity = segment.sensitivity.as_deref().map_or(1, sensitivity_rank);
        let internet = clients.contains("internet");
        let reach = reach_of.get(segment.name.as_str()).unwrap_or(&none);
        let score = sensitivity * 100 + u64::from(internet) * 50 + clients.len() as u64 * 5 + reach.len() as u64;
        let mut reasons = vec![format!("sensitivity {}", segment.sensitivity.as_deref().unwrap_or("not tagged"))];
        if internet {
            reasons.push("reachable from the internet".to_owned());
        }
        reasons.push(format!("{} client segment(s)", clients.len()));
        reasons.push(format!("reaches {} segment(s) itself", reach.len()));
        out.push(Priority { segment: segment.name.clone(), score, reasons });
    }
    out.sort_by(|a, b| b.score.cmp(&a.score).then_with(|| a.segment.cmp(&b.segment)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_id_safe() {
        assert_eq!(slug("Web Tier/EU"), "web-tier-eu");
        assert_eq!(slug("aws:S3"), "aws-s3");
        assert_eq!(slug("\"); drop"), "drop");
    }
}
