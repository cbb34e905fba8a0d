//! The public AWS samples in `examples/flowlogs` (see its README for provenance), mapped with
//! the library as the CLI does, and the hard cases each of them stands for.

use std::path::PathBuf;

use zerogate_flow::map::{Edge, Vantage};
use zerogate_flow::orient::Basis;
use zerogate_flow::{Inventory, Progress, ReadOptions, TrafficMap, build_map, discover};

fn sample(name: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/flowlogs");
    root.join(name).display().to_string()
}

fn map_of(paths: &[String]) -> TrafficMap {
    map_with(paths, &Inventory::new(), &ReadOptions::default())
}

fn map_with(paths: &[String], inventory: &Inventory, options: &ReadOptions) -> TrafficMap {
    build_map(&discover(paths), inventory, options, &Progress::default()).expect("not strict")
}

fn edge<'a>(map: &'a TrafficMap, client: &str, server: &str, port: u16) -> &'a Edge {
    map.edges
        .iter()
        .find(|e| e.client == client && e.server == server && e.port == port)
        .unwrap_or_else(|| panic!("no edge {client} -> {server}:{port} in {:#?}", map.edges))
}

#[test]
fn tcp_flags_orient_and_count_each_connection_once() {
    let map = map_of(&[sample("awsdocs-vpc-user-guide/v3-tcp-flag-sequence.log")]);
    assert_eq!(map.edges.len(), 1, "{:#?}", map.edges);
    let e = edge(&map, "internet", "i-01234567890123456", 5001);
    assert_eq!(e.protocol_name, "tcp");
    assert_eq!(e.records, 8);
    assert_eq!(e.connections, 3, "client ports 43416, 43418, 43638");
    assert_eq!(e.bytes, 568 + 376 + 100_701 + 632 + 63_388 + 23_294_588 + 1_260 + 967);
    assert_eq!(e.packets, 8 + 7 + 70 + 12 + 1219 + 15774 + 17 + 14);
    assert_eq!(e.orientation.basis, Basis::TcpFlags);
    assert_eq!(e.vantage, Vantage::ServerInterface);
    assert_eq!(e.accepted, 8);
    assert_eq!(e.first_seen.as_deref(), Some("2019-08-26T19:47:55Z"));
    assert_eq!(map.coverage.irregular_spacing_lines, 1, "the guide's double space");
    assert_eq!(map.dropped.problems, 0);
}

#[test]
fn nat_gateway_translated_leg_is_not_a_second_edge() {
    let map = map_of(&[sample("awsdocs-vpc-user-guide/custom-nat-gateway.log")]);
    assert_eq!(map.edges.len(), 1, "{:#?}", map.edges);
    let e = edge(&map, "i-01234567890123456", "internet", 0);
    assert_eq!(e.records, 4, "instance ENI and the NAT ENI's untranslated leg");
    assert_eq!(e.connections, 1);
    assert_eq!(e.protocol_name, "unknown", "the format has no protocol");
    assert_eq!(map.coverage.nat_translated_records, 2);
    let nat = map.coverage.interfaces.iter().find(|i| i.id == "eni-1235b8ca123456789").unwrap();
    assert_eq!(nat.own_addresses, ["10.0.0.220"]);
    assert!(nat.requester_managed);
    assert!(nat.forwarded_records > 0);
}

#[test]
fn transit_gateway_path_counts_one_connection() {
    let map = map_of(&[sample("awsdocs-vpc-user-guide/v3-transit-gateway-path.log")]);
    assert_eq!(map.edges.len(), 1, "{:#?}", map.edges);
    let e = edge(&map, "ip:10.20.33.164", "ip:10.40.2.236", 80);
    assert_eq!(e.records, 4);
    assert_eq!(e.connections, 1);
    assert_eq!(e.orientation.basis, Basis::TcpFlags);
    assert_eq!(map.coverage.interfaces.len(), 3);
}

#[test]
fn aws_service_named_from_the_record() {
    let map = map_of(&[sample("awsdocs-vpc-user-guide/v5-service-path-direction.log")]);
    let e = edge(&map, "i-0c50d5961bcb2d47b", "aws:S3", 80);
    assert_eq!(e.orientation.basis, Basis::TcpFlags, "SYN-ACK+FIN from S3");
    assert_eq!(e.bytes, 15_044 + 471);
    let iface = &map.coverage.interfaces[0];
    assert_eq!(iface.region.as_deref(), Some("ap-southeast-2"));
    assert_eq!(iface.az_id.as_deref(), Some("apse2-az3"));
}

#[test]
fn default_format_coverage_icmp_and_ipv6() {
    let map = map_of(&[sample("awsdocs-vpc-user-guide/v2-default-examples.log")]);
    assert_eq!(map.coverage.nodata_records, 1);
    assert_eq!(map.coverage.skipdata_records, 1);
    let gap = map.coverage.interfaces.iter().find(|i| i.id == "eni-11111111aaaaaaaaa").unwrap();
    assert_eq!(gap.skipdata, 1);
    assert_eq!(gap.skipdata_windows[0][0].as_deref(), Some("2015-05-10T18:01:16Z"));
    let ssh = edge(&map, "ip:172.31.16.139", "ip:172.31.16.21", 22);
    assert_eq!(ssh.orientation.basis, Basis::PortRange);
    let rdp = edge(&map, "ip:172.31.9.69", "ip:172.31.9.12", 3389);
    assert_eq!(rdp.rejected, 1);
    assert_eq!(rdp.accepted, 0);
    let ping = edge(&map, "internet", "ip:172.31.16.139", 0);
    assert_eq!(ping.protocol_name, "icmp");
    assert_eq!(ping.orientation.basis, Basis::FirstSeen, "the request came first");
    assert_eq!((ping.accepted, ping.rejected), (1, 1));
    assert_eq!(map.inputs[0].traffic_type, "accept-and-reject");
}

#[test]
fn real_s3_gzip_object_with_header() {
    let map = map_of(&[sample("loki_lambda-promtail_vpcflowlog.log.gz")]);
    assert_eq!(map.inputs[0].compression, "gzip");
    assert_eq!(map.coverage.records, 3);
    let https = edge(&map, "eni-0050644426037aa0f", "internet", 443);
    assert_eq!(https.connections, 1);
    assert_eq!(https.records, 2);
    assert_eq!(map.dropped.problems, 0);
}

#[test]
fn parquet_with_surprising_types() {
    let map = map_of(&[sample("flowlogs-reader_flows.parquet")]);
    assert_eq!(map.inputs[0].compression, "parquet");
    assert_eq!(map.coverage.records, 2, "two rows parse");
    assert_eq!(map.coverage.nodata_records, 1, "`None` strings are missing values");
    assert_eq!(map.edges.len(), 1);
    assert_eq!(map.edges[0].port, 443);
    assert_eq!(map.edges[0].bytes, 840);
    // The third row claims protocol 8080: refused with its row number and field.
    assert_eq!(map.dropped.problems, 1);
    let p = &map.dropped.examples[0];
    assert_eq!(p.line, 3);
    assert!(p.reason.contains("`protocol`") && p.reason.contains("8080"), "{}", p.reason);
}

#[test]
fn the_whole_sample_directory_at_once() {
    let all =
        map_of(&[PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/flowlogs").display().to_string()]);
    assert_eq!(all.inputs.len(), 7, "{:#?}", all.inputs.iter().map(|i| &i.path).collect::<Vec<_>>());
    assert!(all.inputs.windows(2).all(|w| w[0].path < w[1].path), "sorted");
    let formats: std::collections::BTreeSet<_> = all.inputs.iter().flat_map(|i| i.formats.clone()).collect();
    assert_eq!(formats.len(), 5, "mixed formats in one run: {formats:#?}");
    assert_eq!(all.window.first_seen.as_deref(), Some("2014-12-14T04:06:50Z"));
}

#[test]
fn same_input_same_bytes_whatever_the_threads() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/flowlogs").display().to_string();
    let one =
        map_with(std::slice::from_ref(&root), &Inventory::new(), &ReadOptions { threads: 1, ..ReadOptions::default() });
    let many = map_with(&[root], &Inventory::new(), &ReadOptions { threads: 4, ..ReadOptions::default() });
    assert_eq!(serde_json::to_string(&one).unwrap(), serde_json::to_string(&many).unwrap());
}
