//! Pictures of the map: Graphviz DOT and Mermaid flowcharts. Node ids are derived from asset ids
//! and every label is escaped, so asset names from inventories cannot break the picture.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::map::{Edge, TrafficMap};

fn label_of(map: &TrafficMap) -> BTreeMap<&str, String> {
    map.assets
        .iter()
        .map(|a| {
            let label = match &a.name {
                Some(name) if name != &a.id => format!("{name}\n{}", a.id),
                _ => a.id.clone(),
            };
            (a.id.as_str(), label)
        })
        .collect()
}

fn edge_label(e: &Edge) -> String {
    let service = if e.port == 0 { e.protocol_name.clone() } else { format!("{}/{}", e.protocol_name, e.port) };
    format!("{service} ({} conn)", e.connections)
}

/// Node ids: `n` followed by the index of the asset in the map's sorted asset list.
fn node_ids(map: &TrafficMap) -> BTreeMap<&str, String> {
    map.assets.iter().enumerate().map(|(i, a)| (a.id.as_str(), format!("n{i}"))).collect()
}

fn dot_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The map as a Graphviz DOT digraph (only assets that take part in an edge).
pub fn to_dot(map: &TrafficMap) -> String {
    let ids = node_ids(map);
    let labels = label_of(map);
    let used = used_assets(map);
    let mut out = String::from("digraph zerogate {\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n");
    for asset in map.assets.iter().filter(|a| used.contains(a.id.as_str())) {
        let id = ids.get(asset.id.as_str()).map_or("", String::as_str);
        let label = labels.get(asset.id.as_str()).map_or(asset.id.as_str(), String::as_str);
        let _ = writeln!(out, "  {id} [label=\"{}\"];", dot_escape(label));
    }
    for e in &map.edges {
        let (Some(c), Some(s)) = (ids.get(e.client.as_str()), ids.get(e.server.as_str())) else {
            continue;
        };
        let style = if e.orientation.confidence == crate::orient::Confidence::Low { ", style=dashed" } else { "" };
        let _ = writeln!(out, "  {c} -> {s} [label=\"{}\"{style}];", dot_escape(&edge_label(e)));
    }
    out.push_str("}\n");
    out
}

fn mermaid_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '\n' => out.push_str("<br/>"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '|' => out.push_str("#124;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The map as a Mermaid flowchart (only assets that take part in an edge).
pub fn to_mermaid(map: &TrafficMap) -> String {
    let ids = node_ids(map);
    let labels = label_of(map);
    let used = used_assets(map);
    let mut out = String::from("flowchart LR\n");
    for asset in map.assets.iter().filter(|a| used.contains(a.id.as_str())) {
        let id = ids.get(asset.id.as_str()).map_or("", String::as_str);
        let label = labels.get(asset.id.as_str()).map_or(asset.id.as_str(), String::as_str);
        let _ = writeln!(out, "  {id}[\"{}\"]", mermaid_escape(label));
    }
    for e in &map.edges {
        let (Some(c), Some(s)) = (ids.get(e.client.as_str()), ids.get(e.server.as_str())) else {
            continue;
        };
        let arrow = if e.orientation.confidence == crate::orient::Confidence::Low { "-.->" } else { "-->" };
        let _ = writeln!(out, "  {c} {arrow}|\"{}\"| {s}", mermaid_escape(&edge_label(e)));
    }
    out
}

fn used_assets(map: &TrafficMap) -> std::collections::BTreeSet<&str> {
    map.edges.iter().flat_map(|e| [e.client.as_str(), e.server.as_str()]).collect()
}
