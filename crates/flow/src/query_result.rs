//! Reading back the result of the SQL that `zerogate map --emit-sql` prints (schema
//! `zerogate.query-result/v1`): CSV rows of edges, views per vantage point, vantage points, noise
//! and totals, as Athena or DuckDB write them. They become a partial map and go through the same
//! final step as flow logs read directly, so both paths give the same map.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::aggregate::{
    DaySet, EdgeAcc, EdgeKey, InterfaceAcc, NO_TIME, NoiseAcc, NoiseKey, OwnAddress, Partial, ViewAcc,
};
use crate::inventory::{Endpoint, Inventory};
use crate::map::{TrafficMap, finalize};
use crate::noise::NoiseKind;
use crate::sketch::{Distinct, hash_endpoint, hash_str};
use crate::source::InputInfo;

/// Why a query result was refused.
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {reason}")]
pub struct QueryResultError {
    path: String,
    line: usize,
    reason: String,
}

/// Splits one CSV record (RFC 4180 quoting; Athena quotes every value). Returns `None` for an
/// unterminated quote.
fn split_csv(line: &str) -> Option<Vec<String>> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') if cell.is_empty() => {
                quoted = true;
                was_quoted = true;
            }
            (false, ',') => {
                cells.push(std::mem::take(&mut cell));
                was_quoted = false;
            }
            (false, c) => cell.push(c),
        }
    }
    if quoted {
        return None;
    }
    let _ = was_quoted;
    cells.push(cell);
    Some(cells)
}

struct Row<'a> {
    columns: &'a HashMap<String, usize>,
    cells: Vec<String>,
}

impl Row<'_> {
    fn text(&self, name: &str) -> Option<&str> {
        let cell = self.cells.get(*self.columns.get(name)?)?;
        (!cell.is_empty() && cell != "NULL").then_some(cell.as_str())
    }

    fn number(&self, name: &str) -> Result<Option<u64>, String> {
        match self.text(name) {
            None => Ok(None),
            Some(t) => {
                // DuckDB may print integral sums as `12.0`.
                let t = t.strip_suffix(".0").unwrap_or(t);
                t.parse::<u64>().map(Some).map_err(|_| format!("column `{name}` has `{t}`, expected a count"))
            }
        }
    }

    fn count(&self, name: &str) -> Result<u64, String> {
        Ok(self.number(name)?.unwrap_or(0))
    }
}

/// Resolves a key of the result: an address, `internet`, or `aws:<SERVICE>`.
fn endpoint(inventory: &Inventory, key: &str) -> Result<Endpoint, String> {
    if key == "internet" {
        return Ok(Endpoint::Internet);
    }
    if let Some(service) = key.strip_prefix("aws:") {
        return Ok(inventory.service_index(service).map_or(Endpoint::Internet, Endpoint::Service));
    }
    let addr: IpAddr =
        key.parse().map_err(|_| format!("`{key}` is neither an address, `internet` nor `aws:<service>`"))?;
    Ok(inventory.resolve(addr, None))
}

fn time(v: Option<u64>) -> u64 {
    v.unwrap_or(NO_TIME)
}

const REQUIRED: &[&str] = &["row_type", "client", "server", "protocol", "port", "vantage", "kind", "records"];

/// Builds the map from a query result.
pub fn build_map(path: &str, content: &str, inventory: &Inventory) -> Result<TrafficMap, QueryResultError> {
    let err = |line: usize, reason: String| QueryResultError { path: path.to_owned(), line, reason };
    let mut lines = content.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| err(1, "empty query result".into()))?;
    let names = split_csv(header).ok_or_else(|| err(1, "unterminated quote in the header".into()))?;
    let columns: HashMap<String, usize> =
        names.iter().enumerate().map(|(i, n)| (n.trim().to_ascii_lowercase(), i)).collect();
    for required in REQUIRED {
        if !columns.contains_key(*required) {
            return Err(err(1, format!("missing column `{required}`: not a result of `zerogate map --emit-sql`")));
        }
    }
    let mut part = Partial::default();
    let mut parsed = Vec::new();
    for (n, line) in lines {
        let cells = split_csv(line).ok_or_else(|| err(n + 1, "unterminated quote".into()))?;
        if cells.len() != names.len() {
            return Err(err(n + 1, format!("expected {} columns, found {}", names.len(), cells.len())));
        }
        parsed.push((n + 1, Row { columns: &columns, cells }));
    }
    let rows = parsed.len() as u64;
    // Vantage points first: a view needs to know whether its vantage is a TGW attachment.
    let mut tgw = std::collections::HashSet::new();
    for (n, row) in &parsed {
        if row.text("row_type") == Some("interface") && row.text("kind") == Some("transit-gateway") {
            tgw.insert(row.text("vantage").ok_or_else(|| err(*n, "empty `vantage`".into()))?.to_owned());
        }
    }
    for (n, row) in &parsed {
        add_row(&mut part, inventory, row, &tgw).map_err(|reason| err(*n, reason))?;
    }
    let input = InputInfo::query_result(path);
    let acc = part.input_mut(0);
    acc.lines = rows + 1;
    acc.compression = Some("none");
    acc.formats.insert("zerogate.query-result/v1".to_owned());
    Ok(finalize(part, inventory, &[input]))
}

fn add_row(
    part: &mut Partial,
    inventory: &Inventory,
    row: &Row<'_>,
    tgw: &std::collections::HashSet<String>,
) -> Result<(), String> {
    let kind = row.text("row_type").ok_or("empty `row_type`")?;
    let key = || -> Result<EdgeKey, String> {
        Ok(EdgeKey {
            client: endpoint(inventory, row.text("client").ok_or("empty `client`")?)?,
            server: endpoint(inventory, row.text("server").ok_or("empty `server`")?)?,
            protocol: u8::try_from(row.count("protocol")?).map_err(|_| "protocol above 255")?,
            port: u16::try_from(row.count("port")?).map_err(|_| "port above 65535")?,
        })
    };
    match kind {
        "edge" => {
            let mut hours = [0u64; 24];
            for (h, slot) in hours.iter_mut().enumerate() {
                *slot = row.count(&format!("h{h:02}"))?;
            }
            let mut days = DaySet::Empty;
            for day in row.text("days").unwrap_or("").split(' ').filter(|d| !d.is_empty()) {
                // DuckDB may print integral values as `20423.0`.
                let day = day.strip_suffix(".0").unwrap_or(day);
                days.insert(day.parse().map_err(|_| format!("`{day}` in `days` is not a day number"))?);
            }
            let acc = EdgeAcc {
                records: row.count("records")?,
                accepted: row.count("accepted")?,
                rejected: row.count("rejected")?,
                first: time(row.number("first_seen")?),
                last: row.count("last_seen")?,
                hours,
                days,
                connections: Distinct::from_count(row.count("distinct_a")?),
                client_addresses: match row.text("client_set") {
                    // Up to 128 client addresses come as a set, so rows that name the same edge
                    // (several public servers) unite exactly, as in the built-in aggregator.
                    Some(set) => {
                        let mut d = Distinct::default();
                        for addr in set.split(' ').filter(|a| !a.is_empty()) {
                            let addr: IpAddr =
                                addr.parse().map_err(|_| format!("`{addr}` in `client_set` is not an address"))?;
                            d.insert(hash_endpoint(addr, 0));
                        }
                        d
                    }
                    None => Distinct::from_count(row.count("distinct_b")?),
                },
                basis: [
                    row.count("basis_tcp_flags")?,
                    row.count("basis_inventory")?,
                    row.count("basis_port_stats")?,
                    row.count("basis_port_range")?,
                    row.count("basis_first_seen")?,
                ],
                max_packets: row.count("max_packets")?,
                handshake: row.count("handshake")? > 0,
                views: Vec::new(),
            };
            let k = key()?;
            match part.edges.get_mut(&k) {
                Some(e) => e.merge(&acc),
                None => {
                    part.edges.insert(k, acc);
                }
            }
        }
        "view" => {
            let vantage = row.text("vantage").map_or(0, |v| hash_str(v) ^ u64::from(tgw.contains(v)));
            let view = ViewAcc {
                records: row.count("records")?,
                packets: row.count("packets")?,
                bytes: row.count("bytes")?,
                ingress_records: row.count("ingress_records")?,
                ingress_packets: row.count("ingress_packets")?,
                ingress_bytes: row.count("ingress_bytes")?,
            };
            part.edges.entry(key()?).or_default().add_view(vantage, &view);
        }
        "interface" => {
            let id = row.text("vantage").ok_or("empty `vantage`")?;
            let transit_gateway = row.text("kind") == Some("transit-gateway");
            let own = |name: &str| -> Result<OwnAddress, String> {
                Ok(match row.text(name) {
                    Some(a) => OwnAddress::Candidates(vec![a.parse().map_err(|_| format!("`{a}` is not an address"))?]),
                    None => OwnAddress::Candidates(Vec::new()),
                })
            };
            let text = |name: &str| row.text(name).map(str::to_owned);
            let iface = InterfaceAcc {
                id: id.to_owned(),
                transit_gateway,
                records: row.count("records")?,
                nodata: row.count("accepted")?,
                skipdata: row.count("rejected")?,
                skip_windows: Default::default(),
                own_v4: own("own_v4")?,
                own_v6: own("own_v6")?,
                forwarding: row.count("packets")?,
                instance_id: text("instance_id"),
                requester_managed: row.count("bytes")? > 0,
                vpc_id: text("vpc_id"),
                subnet_id: text("subnet_id"),
                account_id: text("account_id"),
                region: text("region"),
                az_id: text("az_id"),
                ecs_service: text("ecs_service"),
                described_by: None,
                first: time(row.number("first_seen")?),
                last: row.count("last_seen")?,
            };
            part.interfaces.insert(hash_str(id) ^ u64::from(transit_gateway), iface);
        }
        "noise" => {
            let target = endpoint(inventory, row.text("client").ok_or("empty noise target")?)?;
            let kind = match row.text("kind") {
                Some("scan") => NoiseKind::Scan,
                Some("backscatter") => NoiseKind::Backscatter,
                Some("scan-reply") => NoiseKind::ScanReply,
                other => return Err(format!("unknown noise kind `{}`", other.unwrap_or_default())),
            };
            let protocol = u8::try_from(row.count("protocol")?).map_err(|_| "protocol above 255")?;
            let acc = NoiseAcc {
                records: row.count("records")?,
                packets: row.count("packets")?,
                bytes: row.count("bytes")?,
                rejected: row.count("rejected")?,
                sources: Distinct::from_count(row.count("distinct_a")?),
                ports: Distinct::from_count(row.count("distinct_b")?),
                first: time(row.number("first_seen")?),
                last: row.count("last_seen")?,
            };
            part.totals.noise += acc.records;
            part.noise.entry(NoiseKey { target, protocol, kind }).or_default().merge(&acc);
        }
        "totals" => {
            let t = &mut part.totals;
            t.records += row.count("records")?;
            t.traffic += row.count("accepted")?;
            t.nodata += row.count("rejected")?;
            t.skipdata += row.count("packets")?;
            t.unmappable += row.count("bytes")?;
            t.millisecond_timestamps += row.count("ingress_records")?;
            let acc = part.input_mut(0);
            acc.records += row.count("records")?;
            acc.first = acc.first.min(time(row.number("first_seen")?));
            acc.last = acc.last.max(row.count("last_seen")?);
        }
        other => return Err(format!("unknown row type `{other}`")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting() {
        assert_eq!(split_csv(r#""a","b,c","d""e",,x"#).unwrap(), ["a", "b,c", "d\"e", "", "x"]);
        assert_eq!(split_csv("1,2").unwrap(), ["1", "2"]);
        assert!(split_csv(r#""open"#).is_none());
    }

    #[test]
    fn refuses_other_csv() {
        let err = build_map("q.csv", "a,b\n1,2\n", &Inventory::new()).unwrap_err();
        assert!(err.to_string().contains("missing column `row_type`"), "{err}");
    }
}
