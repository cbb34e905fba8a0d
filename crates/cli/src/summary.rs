//! The readable terminal summary of a traffic map.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use zerogate_flow::TrafficMap;

/// Bytes in binary units.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS.get(unit).unwrap_or(&"B")) }
}

/// A count with thousands separators.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Renders the summary; `top` edges are listed, by connections.
pub fn render(map: &TrafficMap, top: usize, written_to: Option<&Path>) -> String {
    let mut out = String::new();
    let c = &map.coverage;
    let _ = writeln!(
        out,
        "zerogate map: {} inputs, {} records ({} traffic, {} NODATA, {} SKIPDATA)",
        map.inputs.len(),
        count(c.records),
        count(c.traffic_records),
        count(c.nodata_records),
        count(c.skipdata_records)
    );
    if let (Some(first), Some(last)) = (&map.window.first_seen, &map.window.last_seen) {
        let _ = writeln!(out, "window: {first} .. {last}");
    }

    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for a in &map.assets {
        let kind = serde_json::to_value(&a.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        *kinds.entry(kind).or_default() += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let _ = writeln!(out, "\nassets: {} ({})", map.assets.len(), kinds.join(", "));

    let _ = writeln!(out, "\nedges: {}", map.edges.len());
    let mut edges: Vec<_> = map.edges.iter().collect();
    edges.sort_by(|a, b| b.connections.cmp(&a.connections).then(b.bytes.cmp(&a.bytes)));
    if !edges.is_empty() {
        let rows: Vec<[String; 7]> = edges
            .iter()
            .take(top)
            .map(|e| {
                let service =
                    if e.port == 0 { e.protocol_name.clone() } else { format!("{}/{}", e.protocol_name, e.port) };
                [
                    e.client.clone(),
                    e.server.clone(),
                    service,
                    count(e.connections),
                    count(e.records),
                    human_bytes(e.bytes),
                    e.orientation.basis.name().to_owned(),
                ]
            })
            .collect();
        let header = ["CLIENT", "SERVER", "SERVICE", "CONNS", "RECORDS", "BYTES", "BASIS"].map(str::to_owned);
        let mut widths = header.clone().map(|h| h.len());
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for row in std::iter::once(&header).chain(rows.iter()) {
            let mut line = String::from(" ");
            for (cell, w) in row.iter().zip(widths) {
                let _ = write!(line, " {cell:<w$}");
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        if edges.len() > top {
            let _ = writeln!(out, "  … {} more (see the map)", edges.len() - top);
        }
    }

    let n = &map.noise;
    let kinds: Vec<String> = n.by_kind.iter().map(|(k, v)| format!("{k} {}", count(*v))).collect();
    let _ = writeln!(
        out,
        "\nnoise: {} records{} against {} targets (never edges)",
        count(n.records),
        if kinds.is_empty() { String::new() } else { format!(" ({})", kinds.join(", ")) },
        n.targets.iter().map(|t| &t.target).collect::<std::collections::BTreeSet<_>>().len()
    );

    let gaps = c.interfaces.iter().filter(|i| i.skipdata > 0).count();
    let _ = writeln!(
        out,
        "\ncoverage: {} vantage points, {} with SKIPDATA gaps; {} NAT-translated records counted once",
        c.interfaces.len(),
        gaps,
        count(c.nat_translated_records)
    );
    let mut types: BTreeMap<&str, usize> = BTreeMap::new();
    for i in &map.inputs {
        *types.entry(i.traffic_type.as_str()).or_default() += 1;
    }
    let types: Vec<String> = types.iter().map(|(k, v)| format!("{v} {k}")).collect();
    let _ = writeln!(out, "  inputs by traffic captured: {}", types.join(", "));
    if c.millisecond_timestamps > 0 {
        let _ = writeln!(out, "  {} records had millisecond timestamps (converted)", count(c.millisecond_timestamps));
    }
    if c.unmappable_records > 0 {
        let _ = writeln!(out, "  {} traffic records had no addresses in their format", count(c.unmappable_records));
    }
    let _ = writeln!(out, "  never in flow logs (allow explicitly): DNS resolver, instance metadata, time sync, DHCP");

    let d = &map.dropped;
    if d.problems > 0 {
        let reasons: Vec<String> = d.by_reason.iter().map(|(k, v)| format!("{k} {}", count(*v))).collect();
        let _ = writeln!(out, "\ndropped: {} problems ({})", count(d.problems), reasons.join(", "));
        for p in d.examples.iter().take(10) {
            let _ = writeln!(out, "  {}:{}: {}", p.input, p.line, p.reason);
        }
        if d.examples.len() > 10 || d.problems > d.examples.len() as u64 {
            let _ = writeln!(out, "  … all are counted in the map's `dropped`");
        }
    } else {
        let _ = writeln!(out, "\ndropped: nothing");
    }
    if !d.unknown_fields.is_empty() {
        let _ = writeln!(out, "  unknown fields ignored: {}", d.unknown_fields.join(", "));
    }
    if let Some(path) = written_to {
        let _ = writeln!(out, "\nmap written to {}", path.display());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
