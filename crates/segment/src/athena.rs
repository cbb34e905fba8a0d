//! The traffic map as SQL, for Amazon Athena (Trino) where the flow logs already live.
//!
//! The query computes what the built-in aggregator computes before its final step — oriented
//! edges, their views per vantage point, vantage points, noise — and returns them as rows of the
//! `zerogate.query-result/v1` CSV that `zerogate map --from-query-result` turns into the same map,
//! with the same final step (naming, de-duplication across vantage points, probe gate).
//!
//! Like the built-in aggregator, the query settles each input object (`"$path"`) with that
//! object's own evidence first (listeners proven by a SYN-ACK, fan-in), then the rest with the
//! evidence of all input. What still differs, by design of a set-based engine: the built-in also
//! settles an object early when more than 64k connections wait in it, with the evidence seen so
//! far; IPv6 prefixes of the inventory and public *clients* named only by `ip-ranges.json` are not
//! known inside the query (such clients are grouped as the internet; public servers are returned
//! by address and named afterwards); counts are exact, where the built-in estimates above 128;
//! SKIPDATA windows are counted, not listed.
//!
//! The query uses only functions that Athena (Trino) has; the tests run it on DuckDB with a
//! prelude of three macros (`regexp_like`, `bitwise_and`, `array_join`) and compare the maps.

use std::fmt::Write as _;
use std::net::IpAddr;

use zerogate_flow::inventory::Inventory;
use zerogate_flow::{Field, LogFormat, LogKind};

/// The schema of the query's result, checked when it is read back.
pub const RESULT_SCHEMA: &str = "zerogate.query-result/v1";

/// The column name of a field in the table (Athena and Parquet spell `-` as `_`).
pub fn column_name(name: &str) -> String {
    name.replace('-', "_")
}

fn columns(format: &LogFormat) -> Vec<String> {
    let mut unknown = format.unknown_fields().iter();
    format
        .columns()
        .iter()
        .map(|c| match c {
            Some(f) => column_name(f.name()),
            None => column_name(unknown.next().map_or("unknown", String::as_str)),
        })
        .collect()
}

/// `CREATE EXTERNAL TABLE` for text flow logs in S3 with a header line, partitioned by day with
/// partition projection (no crawler, no `MSCK REPAIR`). `location` is the S3 URI of
/// `…/AWSLogs/<account>/vpcflowlogs/<region>/`.
pub fn athena_ddl(format: &LogFormat, table: &str, location: &str) -> String {
    let location = if location.ends_with('/') { location.to_owned() } else { format!("{location}/") };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "-- zerogate: table over {} flow logs",
        if format.kind() == LogKind::TransitGateway { "Transit Gateway" } else { "VPC" }
    );
    let _ = writeln!(out, "CREATE EXTERNAL TABLE IF NOT EXISTS {table} (");
    let cols = columns(format);
    for (i, c) in cols.iter().enumerate() {
        let _ = writeln!(out, "  `{c}` string{}", if i + 1 < cols.len() { "," } else { "" });
    }
    let _ = writeln!(out, ")");
    let _ = writeln!(out, "PARTITIONED BY (`day` string)");
    let _ = writeln!(out, "ROW FORMAT DELIMITED FIELDS TERMINATED BY ' '");
    let _ = writeln!(out, "LOCATION '{location}'");
    let _ = writeln!(out, "TBLPROPERTIES (");
    let _ = writeln!(out, "  'skip.header.line.count' = '1',");
    let _ = writeln!(out, "  'projection.enabled' = 'true',");
    let _ = writeln!(out, "  'projection.day.type' = 'date',");
    let _ = writeln!(out, "  'projection.day.format' = 'yyyy/MM/dd',");
    let _ = writeln!(out, "  'projection.day.range' = '2020/01/01,NOW',");
    let _ = writeln!(out, "  'projection.day.interval' = '1',");
    let _ = writeln!(out, "  'projection.day.interval.unit' = 'DAYS',");
    let _ = writeln!(out, "  'storage.location.template' = '{location}${{day}}'");
    let _ = writeln!(out, ");");
    out
}

/// A DuckDB prelude that makes the query run locally: the three Trino functions DuckDB lacks, and
/// a view named `table` over the given files (header line skipped, every column text).
pub fn duckdb_prelude(format: &LogFormat, table: &str, files: &[String]) -> String {
    let mut out = String::from(
        "CREATE OR REPLACE MACRO regexp_like(s, p) AS regexp_matches(s, p);\n\
         CREATE OR REPLACE MACRO bitwise_and(a, b) AS (a & b);\n\
         CREATE OR REPLACE MACRO array_join(l, sep) AS array_to_string(l, sep);\n",
    );
    let list: Vec<String> = files.iter().map(|f| format!("'{}'", f.replace('\'', "''"))).collect();
    let cols: Vec<String> = columns(format).iter().map(|c| format!("'{c}': 'VARCHAR'")).collect();
    let _ = writeln!(
        out,
        "CREATE OR REPLACE VIEW {table} AS SELECT * EXCLUDE (filename), filename AS \"$path\" FROM read_csv([{}], \
         delim = ' ', header = false, skip = 1, auto_detect = false, quote = '', escape = '', filename = true, columns = {{{}}});",
        list.join(", "),
        cols.join(", ")
    );
    out
}

fn ipv4_range(prefix: &zerogate_flow::prefix::Prefix) -> Option<(u64, u64)> {
    match prefix.addr() {
        IpAddr::V4(v4) => {
            let first = u64::from(u32::from(v4));
            let span = (1u64 << (32 - u32::from(prefix.length()))) - 1;
            Some((first, first + span))
        }
        IpAddr::V6(_) => None,
    }
}

/// Public IPv4 ranges the inventory names: their addresses are not "the internet".
fn named_public_rows(inventory: &Inventory) -> Vec<String> {
    let mut rows = vec!["(CAST(-1 AS BIGINT), CAST(-2 AS BIGINT))".to_owned()];
    for asset in inventory.assets() {
        for prefix in &asset.prefixes {
            if !zerogate_flow::inventory::is_public(prefix.addr()) {
                continue;
            }
            if let Some((lo, hi)) = ipv4_range(prefix) {
                rows.push(format!("({lo}, {hi})"));
            }
        }
    }
    rows.sort();
    rows.dedup();
    rows
}

/// Inventory listeners (IPv4): `(lo, hi, protocol, port)`.
fn listener_rows(inventory: &Inventory) -> Vec<String> {
    let mut rows = vec!["(CAST(-1 AS BIGINT), CAST(-2 AS BIGINT), -1, -1)".to_owned()];
    for asset in inventory.assets() {
        for (protocol, port) in &asset.listeners {
            for prefix in &asset.prefixes {
                if let Some((lo, hi)) = ipv4_range(prefix) {
                    rows.push(format!("({lo}, {hi}, {protocol}, {port})"));
                }
            }
        }
    }
    rows.sort();
    rows.dedup();
    rows
}

const PRIVATE_V4: &str = r"^(10\.|127\.|0\.0\.0\.0$|255\.255\.255\.255$|169\.254\.|192\.168\.|172\.(1[6-9]|2[0-9]|3[01])\.|100\.(6[4-9]|[7-9][0-9]|1[01][0-9]|12[0-7])\.|22[4-9]\.|23[0-9]\.)";
const PRIVATE_V6: &str =
    r"^(f[cd][0-9a-f]{2}:|fe[89ab][0-9a-f]:|ff[0-9a-f]{2}:|::1$|::$|::ffff:(10|127|192\.168|169\.254)\.)";

fn ipv4_to_int(a: &str) -> String {
    format!(
        "CASE WHEN regexp_like({a}, '^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$') THEN \
         TRY_CAST(split_part({a}, '.', 1) AS BIGINT) * 16777216 + TRY_CAST(split_part({a}, '.', 2) AS BIGINT) * 65536 + \
         TRY_CAST(split_part({a}, '.', 3) AS BIGINT) * 256 + TRY_CAST(split_part({a}, '.', 4) AS BIGINT) END"
    )
}

/// The query over `table` whose result `zerogate map --from-query-result` reads.
pub fn map_query(format: &LogFormat, inventory: &Inventory, table: &str) -> String {
    let col = |f: Field| {
        if format.has(f) {
            format!("NULLIF(\"{}\", '-')", column_name(f.name()))
        } else {
            "CAST(NULL AS VARCHAR)".to_owned()
        }
    };
    let requester_managed = if format.has(Field::InstanceId) {
        "bool_or(NOT marker AND NOT is_tgw AND instance_id IS NULL)"
    } else {
        "false"
    };
    let ports = "(6, 17, 132, 136)";
    let service = |s: &str| format!("({s} IS NOT NULL AND {s} NOT IN ('AMAZON', 'EC2'))");
    let hours: String = (0..24).map(|h| format!(",\n    count_if(hour = {h}) AS h{h:02}")).collect();
    let no_hours: String = (0..24).map(|h| format!(", CAST(NULL AS BIGINT) AS h{h:02}")).collect();
    format!(
        r#"-- zerogate traffic map aggregates ({RESULT_SCHEMA}); read back with `zerogate map --from-query-result`
WITH
named_public (lo, hi) AS (VALUES {named}),
listeners_inventory (lo, hi, proto, port) AS (VALUES {listeners}),
raw AS (
  SELECT
    {interface_id} AS interface_id,
    {tgw_attachment_id} AS tgw_attachment_id,
    {srcaddr} AS eni_src,
    {dstaddr} AS eni_dst,
    {pkt_srcaddr} AS pkt_src,
    {pkt_dstaddr} AS pkt_dst,
    COALESCE(TRY_CAST({protocol} AS INTEGER), 255) AS proto,
    TRY_CAST({srcport} AS INTEGER) AS srcport,
    TRY_CAST({dstport} AS INTEGER) AS dstport,
    TRY_CAST({packets} AS BIGINT) AS packets,
    TRY_CAST({bytes} AS BIGINT) AS bytes,
    TRY_CAST({start} AS BIGINT) AS start_raw,
    TRY_CAST({end} AS BIGINT) AS end_raw,
    {action} AS action,
    {log_status} AS log_status,
    TRY_CAST({tcp_flags} AS INTEGER) AS flags,
    {instance_id} AS instance_id,
    {flow_direction} AS flow_direction,
    {pkt_src_aws_service} AS src_service,
    {pkt_dst_aws_service} AS dst_service,
    {vpc_id} AS vpc_id,
    {subnet_id} AS subnet_id,
    {account_id} AS account_id,
    {region} AS region,
    {az_id} AS az_id,
    {ecs_service_name} AS ecs_service,
    "$path" AS input_file
  FROM {table}
),
rec AS (
  SELECT raw.*,
    CASE WHEN start_raw > 2147483647 THEN CAST(floor(start_raw / 1000) AS BIGINT) ELSE start_raw END AS t_start,
    CASE WHEN end_raw > 2147483647 THEN CAST(floor(end_raw / 1000) AS BIGINT) ELSE end_raw END AS t_end,
    (start_raw > 2147483647 OR end_raw > 2147483647) AS millis,
    COALESCE(interface_id, tgw_attachment_id) AS vantage,
    (interface_id IS NULL AND tgw_attachment_id IS NOT NULL) AS is_tgw,
    COALESCE(log_status, 'OK') IN ('NODATA', 'SKIPDATA') AS marker,
    COALESCE(pkt_src, eni_src) AS src,
    COALESCE(pkt_dst, eni_dst) AS dst,
    CASE WHEN proto IN {ports} THEN COALESCE(srcport, 0) ELSE 0 END AS sport,
    CASE WHEN proto IN {ports} THEN COALESCE(dstport, 0) ELSE 0 END AS dport
  FROM raw
),
traffic AS (
  SELECT rec.*,
    COALESCE(t_end, t_start) AS t_last,
    CAST(floor(mod(t_start, 86400) / 3600) AS INTEGER) AS hour
  FROM rec WHERE NOT marker AND src IS NOT NULL AND dst IS NOT NULL
),
addresses AS (
  SELECT a,
    (regexp_like(a, '{private_v4}') OR regexp_like(lower(a), '{private_v6}')) AS private,
    EXISTS (SELECT 1 FROM named_public n WHERE {a_int} BETWEEN n.lo AND n.hi) AS named
  FROM (SELECT src AS a FROM traffic UNION SELECT dst AS a FROM traffic) AS all_addresses
),
classified AS (
  SELECT t.*,
    (NOT s.private AND NOT s.named) AS src_public,
    (NOT d.private AND NOT d.named) AS dst_public
  FROM traffic t JOIN addresses s ON s.a = t.src JOIN addresses d ON d.a = t.dst
),
gated AS (
  SELECT c.*,
    CASE
      WHEN src_public = dst_public THEN NULL
      WHEN proto = 6 AND packets = 1 AND NOT src_public THEN 'scan-reply'
      WHEN proto = 6 AND packets = 1 AND (bitwise_and(COALESCE(flags, 0), 18) = 18 OR bitwise_and(COALESCE(flags, 0), 4) <> 0) THEN 'backscatter'
      WHEN proto = 6 AND packets = 1 THEN 'scan'
      WHEN proto = 6 AND src_public AND action = 'REJECT' AND packets <= 3 AND bitwise_and(COALESCE(flags, 0), 16) = 0
        THEN CASE WHEN bitwise_and(COALESCE(flags, 0), 4) <> 0 THEN 'backscatter' ELSE 'scan' END
      WHEN proto <> 6 AND src_public AND action = 'REJECT' THEN 'scan'
    END AS noise_kind
  FROM classified c
),
flows AS (
  SELECT g.*,
    CASE WHEN proto = 6 AND bitwise_and(flags, 18) = 2 THEN 'dst'
         WHEN proto = 6 AND bitwise_and(flags, 18) = 18 THEN 'src' END AS flag_side,
    EXISTS (SELECT 1 FROM listeners_inventory l WHERE {src_int} BETWEEN l.lo AND l.hi AND l.proto = g.proto AND l.port = g.sport) AS src_inventory,
    EXISTS (SELECT 1 FROM listeners_inventory l WHERE {dst_int} BETWEEN l.lo AND l.hi AND l.proto = g.proto AND l.port = g.dport) AS dst_inventory
  FROM gated g WHERE noise_kind IS NULL
),
decided AS (
  SELECT f.*,
    COALESCE(flag_side, CASE WHEN proto IN {ports} AND src_inventory AND NOT dst_inventory THEN 'src'
                             WHEN proto IN {ports} AND dst_inventory AND NOT src_inventory THEN 'dst' END) AS side0,
    CASE WHEN flag_side IS NOT NULL THEN 0 ELSE 1 END AS basis0
  FROM flows f
),
held AS (SELECT * FROM decided WHERE side0 IS NULL),
-- Each input is settled first with its own evidence (listeners proven by a SYN-ACK in that input,
-- fan-in among its held flows), as the built-in aggregator does; the rest with all evidence.
local_listeners AS (
  SELECT DISTINCT input_file, src AS a, proto, sport AS port FROM decided WHERE flag_side = 'src'
),
local_conversations AS (
  SELECT DISTINCT input_file,
    CASE WHEN src < dst OR (src = dst AND sport <= dport) THEN src ELSE dst END AS a1,
    CASE WHEN src < dst OR (src = dst AND sport <= dport) THEN sport ELSE dport END AS p1,
    CASE WHEN src < dst OR (src = dst AND sport <= dport) THEN dst ELSE src END AS a2,
    CASE WHEN src < dst OR (src = dst AND sport <= dport) THEN dport ELSE sport END AS p2,
    proto
  FROM held
),
local_peers AS (
  SELECT input_file, a, p, proto, count(*) AS n FROM (
    SELECT input_file, a1 AS a, p1 AS p, proto FROM local_conversations
    UNION ALL SELECT input_file, a2 AS a, p2 AS p, proto FROM local_conversations
  ) AS ends GROUP BY input_file, a, p, proto
),
held_local AS (
  SELECT h.*,
    (ls.a IS NOT NULL) AS src_listens, (ld.a IS NOT NULL) AS dst_listens,
    COALESCE(ps.n, 0) AS sp, COALESCE(pd.n, 0) AS dp
  FROM held h
  LEFT JOIN local_listeners ls ON ls.input_file = h.input_file AND ls.a = h.src AND ls.proto = h.proto AND ls.port = h.sport
  LEFT JOIN local_listeners ld ON ld.input_file = h.input_file AND ld.a = h.dst AND ld.proto = h.proto AND ld.port = h.dport
  LEFT JOIN local_peers ps ON ps.input_file = h.input_file AND ps.a = h.src AND ps.p = h.sport AND ps.proto = h.proto
  LEFT JOIN local_peers pd ON pd.input_file = h.input_file AND pd.a = h.dst AND pd.p = h.dport AND pd.proto = h.proto
),
local_decided AS (
  SELECT l.*,
    CASE
      WHEN proto NOT IN {ports} THEN NULL
      WHEN src_listens <> dst_listens THEN 0
      WHEN {fan_in} THEN 2
    END AS basis1
  FROM held_local l
),
leftover AS (
  SELECT src, dst, sport, dport, proto, vantage, packets, bytes, flow_direction, action, t_start, t_last, hour,
         src_public, dst_public, src_service, dst_service, flag_side
  FROM local_decided WHERE basis1 IS NULL
),
proven_listeners AS (
  SELECT DISTINCT a, proto, port FROM local_listeners
),
conversations AS (
  SELECT DISTINCT
    CASE WHEN src < dst OR (src = dst AND sport <= dport) THEN src ELSE dst END AS a1,
    CASE WHEN src < dst OR (src = dst AND sport <= dport) THEN sport ELSE dport END AS p1,
    CASE WHEN src < dst OR (src = dst AND sport <= dport) THEN dst ELSE src END AS a2,
    CASE WHEN src < dst OR (src = dst AND sport <= dport) THEN dport ELSE sport END AS p2,
    proto
  FROM leftover
),
peers AS (
  SELECT a, p, proto, count(*) AS n FROM (
    SELECT a1 AS a, p1 AS p, proto FROM conversations UNION ALL SELECT a2 AS a, p2 AS p, proto FROM conversations
  ) AS ends GROUP BY a, p, proto
),
first_sent AS (
  SELECT src, dst, proto, min(COALESCE(t_start, 9223372036854775807)) AS t FROM leftover WHERE proto NOT IN {ports} GROUP BY src, dst, proto
),
leftover_evidence AS (
  SELECT h.*,
    (ls.a IS NOT NULL) AS src_listens, (ld.a IS NOT NULL) AS dst_listens,
    COALESCE(ps.n, 0) AS sp, COALESCE(pd.n, 0) AS dp,
    fw.t AS forward, COALESCE(rv.t, 9223372036854775807) AS reverse
  FROM leftover h
  LEFT JOIN proven_listeners ls ON ls.a = h.src AND ls.proto = h.proto AND ls.port = h.sport
  LEFT JOIN proven_listeners ld ON ld.a = h.dst AND ld.proto = h.proto AND ld.port = h.dport
  LEFT JOIN peers ps ON ps.a = h.src AND ps.p = h.sport AND ps.proto = h.proto
  LEFT JOIN peers pd ON pd.a = h.dst AND pd.p = h.dport AND pd.proto = h.proto
  LEFT JOIN first_sent fw ON fw.src = h.src AND fw.dst = h.dst AND fw.proto = h.proto
  LEFT JOIN first_sent rv ON rv.src = h.dst AND rv.dst = h.src AND rv.proto = h.proto
),
leftover_decided AS (
  SELECT e.*,
    CASE
      WHEN proto NOT IN {ports} THEN 4
      WHEN src_listens <> dst_listens THEN 0
      WHEN {fan_in} THEN 2
      ELSE 3
    END AS basis1
  FROM leftover_evidence e
),
held_oriented AS (
  SELECT src, dst, sport, dport, proto, vantage, packets, bytes, flow_direction, action, t_start, t_last, hour,
         src_public, dst_public, src_service, dst_service, basis1,
         CASE basis1 WHEN 0 THEN CASE WHEN src_listens THEN 'src' ELSE 'dst' END ELSE {fan_in_side} END AS side1
  FROM local_decided WHERE basis1 IS NOT NULL
  UNION ALL
  SELECT src, dst, sport, dport, proto, vantage, packets, bytes, flow_direction, action, t_start, t_last, hour,
         src_public, dst_public, src_service, dst_service, basis1,
    CASE basis1
      WHEN 0 THEN CASE WHEN src_listens THEN 'src' ELSE 'dst' END
      WHEN 2 THEN {fan_in_side}
      WHEN 3 THEN CASE
        WHEN sport = dport THEN CASE WHEN src < dst THEN 'dst' ELSE 'src' END
        WHEN (sport < 1024) <> (dport < 1024) THEN CASE WHEN sport < 1024 THEN 'src' ELSE 'dst' END
        WHEN (sport >= 32768) <> (dport >= 32768) THEN CASE WHEN dport >= 32768 THEN 'src' ELSE 'dst' END
        WHEN sport < dport THEN 'src' ELSE 'dst' END
      ELSE CASE WHEN forward < reverse OR (forward = reverse AND src <= dst) THEN 'dst' ELSE 'src' END
    END AS side1
  FROM leftover_decided
),
oriented AS (
  SELECT src, dst, sport, dport, proto, vantage, packets, bytes, flow_direction, action, t_start, t_last, hour,
         src_public, dst_public, src_service, dst_service, side0 AS side, basis0 AS basis, (flag_side = 'src') AS handshake
  FROM decided WHERE side0 IS NOT NULL
  UNION ALL
  SELECT src, dst, sport, dport, proto, vantage, packets, bytes, flow_direction, action, t_start, t_last, hour,
         src_public, dst_public, src_service, dst_service, side1 AS side, basis1 AS basis, false AS handshake
  FROM held_oriented
),
edges AS (
  SELECT
    CASE WHEN side = 'dst' THEN src ELSE dst END AS client_addr,
    CASE WHEN side = 'dst' THEN sport ELSE dport END AS client_port,
    CASE
      WHEN side = 'dst' AND NOT src_public THEN src
      WHEN side = 'dst' AND {src_service} THEN 'aws:' || src_service
      WHEN side = 'dst' THEN 'internet'
      WHEN NOT dst_public THEN dst
      WHEN {dst_service} THEN 'aws:' || dst_service
      ELSE 'internet'
    END AS client,
    CASE
      WHEN side = 'dst' AND dst_public AND {dst_service} THEN 'aws:' || dst_service
      WHEN side = 'dst' THEN dst
      WHEN src_public AND {src_service} THEN 'aws:' || src_service
      ELSE src
    END AS server,
    CASE WHEN side = 'dst' THEN dport ELSE sport END AS port,
    o.*
  FROM oriented o
),
interfaces AS (
  SELECT vantage, bool_or(is_tgw) AS is_tgw,
    count_if(NOT marker) AS records,
    count_if(log_status = 'NODATA') AS nodata,
    count_if(log_status = 'SKIPDATA') AS skipdata,
    count_if(NOT marker AND NOT is_tgw AND eni_src IS NOT NULL AND eni_dst IS NOT NULL
             AND ((pkt_src IS NOT NULL AND pkt_src <> eni_src) OR (pkt_dst IS NOT NULL AND pkt_dst <> eni_dst))) AS forwarding,
    min(CASE WHEN NOT marker THEN instance_id END) AS instance_id,
    {requester_managed_marked} AS requester_managed,
    min(CASE WHEN NOT marker THEN vpc_id END) AS vpc_id,
    min(CASE WHEN NOT marker THEN subnet_id END) AS subnet_id,
    min(account_id) AS account_id,
    min(CASE WHEN NOT marker THEN region END) AS region,
    min(CASE WHEN NOT marker THEN az_id END) AS az_id,
    min(CASE WHEN NOT marker THEN ecs_service END) AS ecs_service,
    min(t_start) AS first_seen,
    max(COALESCE(t_end, t_start)) AS last_seen
  FROM rec WHERE vantage IS NOT NULL GROUP BY vantage
),
observed AS (
  SELECT vantage, eni_src, eni_dst, CASE WHEN strpos(eni_src, ':') > 0 THEN 6 ELSE 4 END AS family
  FROM rec WHERE vantage IS NOT NULL AND NOT is_tgw AND NOT marker AND eni_src IS NOT NULL AND eni_dst IS NOT NULL
),
observed_totals AS (SELECT vantage, family, count(*) AS n FROM observed GROUP BY vantage, family),
own_candidates AS (
  SELECT o.vantage, o.family, o.a FROM (
    SELECT vantage, family, a, count(*) AS n FROM (
      SELECT vantage, family, eni_src AS a FROM observed
      UNION ALL SELECT vantage, family, eni_dst AS a FROM observed WHERE eni_dst <> eni_src
    ) AS ends GROUP BY vantage, family, a
  ) o JOIN observed_totals t ON t.vantage = o.vantage AND t.family = o.family AND t.n = o.n
  WHERE NOT (o.family = 4 AND NOT regexp_like(o.a, '{private_v4}'))
),
own AS (
  SELECT vantage,
    min(CASE WHEN family = 4 THEN a END) AS own_v4, count_if(family = 4) AS v4_candidates,
    min(CASE WHEN family = 6 THEN a END) AS own_v6, count_if(family = 6) AS v6_candidates
  FROM own_candidates GROUP BY vantage
)
SELECT 'edge' AS row_type, client, server, proto AS protocol, port, CAST(NULL AS VARCHAR) AS vantage, CAST(NULL AS VARCHAR) AS kind,
    count(*) AS records, count_if(action = 'ACCEPT') AS accepted, count_if(action = 'REJECT') AS rejected,
    CAST(NULL AS BIGINT) AS packets, CAST(NULL AS BIGINT) AS bytes,
    CAST(NULL AS BIGINT) AS ingress_records, CAST(NULL AS BIGINT) AS ingress_packets, CAST(NULL AS BIGINT) AS ingress_bytes,
    min(t_start) AS first_seen, max(t_last) AS last_seen,
    count(DISTINCT client_addr || '|' || CAST(client_port AS VARCHAR)) AS distinct_a, count(DISTINCT client_addr) AS distinct_b,
    count_if(basis = 0) AS basis_tcp_flags, count_if(basis = 1) AS basis_inventory, count_if(basis = 2) AS basis_port_stats,
    count_if(basis = 3) AS basis_port_range, count_if(basis = 4) AS basis_first_seen,
    max(COALESCE(packets, 0)) AS max_packets, CASE WHEN bool_or(handshake) THEN 1 ELSE 0 END AS handshake,
    CAST(NULL AS VARCHAR) AS own_v4, CAST(NULL AS VARCHAR) AS own_v6, CAST(NULL AS VARCHAR) AS instance_id,
    CAST(NULL AS VARCHAR) AS vpc_id, CAST(NULL AS VARCHAR) AS subnet_id, CAST(NULL AS VARCHAR) AS account_id,
    CAST(NULL AS VARCHAR) AS region, CAST(NULL AS VARCHAR) AS az_id, CAST(NULL AS VARCHAR) AS ecs_service,
    CASE WHEN count(DISTINCT client_addr) <= 128 THEN array_join(array_agg(DISTINCT client_addr), ' ') END AS client_set{hours},
    array_join(array_agg(DISTINCT CAST(CAST(floor(t_start / 86400) AS BIGINT) AS VARCHAR)) FILTER (WHERE t_start IS NOT NULL), ' ') AS days
  FROM edges GROUP BY client, server, proto, port
UNION ALL
SELECT 'view', client, server, proto, port, vantage, NULL,
    count(*), NULL, NULL, sum(COALESCE(packets, 0)), sum(COALESCE(bytes, 0)),
    count_if(flow_direction = 'ingress'), sum(CASE WHEN flow_direction = 'ingress' THEN COALESCE(packets, 0) ELSE 0 END),
    sum(CASE WHEN flow_direction = 'ingress' THEN COALESCE(bytes, 0) ELSE 0 END),
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL{no_hours}, NULL
  FROM edges GROUP BY client, server, proto, port, vantage
UNION ALL
SELECT 'noise',
    CASE WHEN src_public THEN dst ELSE src END, NULL, proto, NULL, NULL, noise_kind,
    count(*), NULL, count_if(action = 'REJECT'), sum(COALESCE(packets, 0)), sum(COALESCE(bytes, 0)), NULL, NULL, NULL,
    min(t_start), max(t_last),
    count(DISTINCT CASE WHEN src_public THEN src ELSE dst END), count(DISTINCT CASE WHEN src_public THEN dport ELSE sport END),
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL{no_hours}, NULL
  FROM gated WHERE noise_kind IS NOT NULL GROUP BY CASE WHEN src_public THEN dst ELSE src END, proto, noise_kind
UNION ALL
SELECT 'interface', NULL, NULL, NULL, NULL, i.vantage, CASE WHEN i.is_tgw THEN 'transit-gateway' ELSE 'network-interface' END,
    i.records, i.nodata, i.skipdata, i.forwarding, CASE WHEN i.requester_managed THEN 1 ELSE 0 END, NULL, NULL, NULL,
    i.first_seen, i.last_seen, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    CASE WHEN own.v4_candidates = 1 THEN own.own_v4 END, CASE WHEN own.v6_candidates = 1 THEN own.own_v6 END,
    i.instance_id, i.vpc_id, i.subnet_id, i.account_id, i.region, i.az_id, i.ecs_service, NULL{no_hours}, NULL
  FROM interfaces i LEFT JOIN own ON own.vantage = i.vantage
UNION ALL
SELECT 'totals', NULL, NULL, NULL, NULL, NULL, NULL,
    count(*), count_if(NOT marker AND src IS NOT NULL AND dst IS NOT NULL), count_if(log_status = 'NODATA'),
    count_if(log_status = 'SKIPDATA'), count_if(NOT marker AND (src IS NULL OR dst IS NULL)), count_if(millis), NULL, NULL,
    min(t_start), max(COALESCE(t_end, t_start)), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL{no_hours}, NULL
  FROM rec
"#,
        named = named_public_rows(inventory).join(", "),
        listeners = listener_rows(inventory).join(", "),
        interface_id = col(Field::InterfaceId),
        tgw_attachment_id = col(Field::TgwAttachmentId),
        srcaddr = col(Field::SrcAddr),
        dstaddr = col(Field::DstAddr),
        pkt_srcaddr = col(Field::PktSrcAddr),
        pkt_dstaddr = col(Field::PktDstAddr),
        protocol = col(Field::Protocol),
        srcport = col(Field::SrcPort),
        dstport = col(Field::DstPort),
        packets = col(Field::Packets),
        bytes = col(Field::Bytes),
        start = col(Field::Start),
        end = col(Field::End),
        action = col(Field::Action),
        log_status = col(Field::LogStatus),
        tcp_flags = col(Field::TcpFlags),
        instance_id = col(Field::InstanceId),
        flow_direction = col(Field::FlowDirection),
        pkt_src_aws_service = col(Field::PktSrcAwsService),
        pkt_dst_aws_service = col(Field::PktDstAwsService),
        vpc_id = col(Field::VpcId),
        subnet_id = col(Field::SubnetId),
        account_id = col(Field::AccountId),
        region = col(Field::Region),
        az_id = col(Field::AzId),
        ecs_service_name = col(Field::EcsServiceName),
        private_v4 = PRIVATE_V4,
        private_v6 = PRIVATE_V6,
        a_int = ipv4_to_int("a"),
        src_int = ipv4_to_int("g.src"),
        dst_int = ipv4_to_int("g.dst"),
        src_service = service("src_service"),
        dst_service = service("dst_service"),
        requester_managed_marked = requester_managed,
        fan_in = "(sp >= 2 AND dp <= 1) OR (dp >= 2 AND sp <= 1) OR (sp >= 4 * greatest(dp, 1) AND sp >= 8) OR (dp >= 4 * greatest(sp, 1) AND dp >= 8)",
        fan_in_side = "CASE WHEN (sp >= 2 AND dp <= 1) OR (sp >= 4 * greatest(dp, 1) AND sp >= 8) AND NOT (dp >= 2 AND sp <= 1) THEN 'src' ELSE 'dst' END",
    )
}
