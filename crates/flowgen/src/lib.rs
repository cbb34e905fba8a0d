//! `zerogate-flowgen` writes realistic AWS VPC flow logs of any size for tests and benchmarks, with
//! the ground truth beside them: a small three-tier estate (load balancers, web, an API on a port in
//! the ephemeral range, a database, a cache, DNS, NTP peers, a bastion, a weekly batch job), egress
//! through a NAT gateway, monitoring across a Transit Gateway, S3 through AWS addresses, and internet
//! scans and backscatter. Every connection is logged the way AWS logs it: per interface, both
//! directions, per aggregation window, with tcp-flags; NAT and TGW interfaces log it again. Output is
//! deterministic for a seed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// splitmix64: small, fast, deterministic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi]`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let i = self.range(0, items.len() as u64 - 1) as usize;
        &items[i.min(items.len() - 1)]
    }
}

/// Record formats the generator writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// The default version 2 format.
    V2,
    /// A custom version 3 format with `tcp-flags` and `pkt-*` (field order as in the AWS guide).
    V3,
    /// Every field of versions 2 to 5.
    V5,
    /// Every field of versions 2 to 8 (ECS fields and `reject-reason`).
    V8,
    /// Each file a different one of the above.
    Mixed,
}

const V2: &str = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status";
const V3: &str = "version vpc-id subnet-id instance-id interface-id account-id type srcaddr dstaddr srcport dstport pkt-srcaddr pkt-dstaddr protocol bytes packets start end action tcp-flags log-status";
const V5: &str = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status vpc-id subnet-id instance-id tcp-flags type pkt-srcaddr pkt-dstaddr region az-id sublocation-type sublocation-id pkt-src-aws-service pkt-dst-aws-service flow-direction traffic-path";
const V8: &str = "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status vpc-id subnet-id instance-id tcp-flags type pkt-srcaddr pkt-dstaddr region az-id sublocation-type sublocation-id pkt-src-aws-service pkt-dst-aws-service flow-direction traffic-path ecs-cluster-arn ecs-cluster-name ecs-container-instance-arn ecs-container-instance-id ecs-container-id ecs-second-container-id ecs-service-name ecs-task-definition-arn ecs-task-arn ecs-task-id reject-reason";

impl Format {
    fn header(self, file_index: usize) -> &'static str {
        match self {
            Format::V2 => V2,
            Format::V3 => V3,
            Format::V5 => V5,
            Format::V8 => V8,
            Format::Mixed => [V2, V3, V5, V8][file_index % 4],
        }
    }
}

/// S3 key layouts, as AWS delivers them, or one flat directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// All files in the output directory.
    Flat,
    /// `AWSLogs/<account>/vpcflowlogs/<region>/<y>/<m>/<d>/`
    Default,
    /// `AWSLogs/aws-account-id=…/aws-service=vpcflowlogs/aws-region=…/year=…/month=…/day=…/`
    Hive,
    /// Default, with `<hour>/`.
    Hourly,
    /// Hive, with `hour=…/`.
    HiveHourly,
}

/// What to generate.
#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    /// Seed: the same seed gives the same bytes.
    pub seed: u64,
    /// About this many records in all (scans included).
    pub records: u64,
    /// Share of records that are internet scans and backscatter.
    pub scan_share: f64,
    /// Number of files.
    pub files: usize,
    /// Record format.
    pub format: Format,
    /// gzip the files (as S3 delivers them).
    pub gzip: bool,
    /// Directory layout.
    pub layout: Layout,
    /// Unix time of the first window.
    pub start: u64,
    /// Days the traffic spans.
    pub days: u64,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            seed: 1,
            records: 10_000,
            scan_share: 0.1,
            files: 4,
            format: Format::Mixed,
            gzip: true,
            layout: Layout::Default,
            start: 1_764_547_200, // 2025-12-01T00:00:00Z, a Monday
            days: 1,
        }
    }
}

/// One host of the estate.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    /// Inventory name.
    pub name: String,
    /// Tier tag.
    pub tier: &'static str,
    /// Private address.
    pub addr: Ipv4Addr,
    /// Its network interface.
    pub eni: String,
    /// Its instance.
    pub instance: String,
    /// Whether its interface has flow logs.
    pub logged: bool,
}

/// A service edge of the ground truth, by inventory names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct TruthEdge {
    /// Client asset.
    pub client: String,
    /// Server asset.
    pub server: String,
    /// IANA protocol number.
    pub protocol: u8,
    /// Server port.
    pub port: u16,
    /// Connections: distinct client (address, port) pairs, as the map counts them.
    pub connections: u64,
    /// Packets, both directions, counted once.
    pub packets: u64,
    /// Bytes, both directions, counted once.
    pub bytes: u64,
}

/// What was generated.
#[derive(Debug, Clone, Serialize)]
pub struct Truth {
    /// The spec.
    pub spec: Spec,
    /// Records written.
    pub records: u64,
    /// Of which scans, backscatter and scan replies.
    pub noise_records: u64,
    /// Connections generated (each counted once).
    pub connections: u64,
    /// The real edges.
    pub edges: Vec<TruthEdge>,
    /// Files written.
    pub files: Vec<String>,
}

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
const VPC: &str = "vpc-0a1b2c3d4e5f60718";
const NAT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const NAT_ENI: &str = "eni-0nat00000000000001";
const TGW_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 200);
const TGW_ENI: &str = "eni-0tgw00000000000001";
const MONITOR: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 50);

/// The estate's hosts.
pub fn hosts() -> Vec<Host> {
    let mut hosts = Vec::new();
    let mut add = |tier: &'static str, subnet: u8, count: u8| {
        for i in 0..count {
            let n = hosts.len();
            hosts.push(Host {
                name: format!("{tier}-{}", i + 1),
                tier,
                addr: Ipv4Addr::new(10, 0, subnet, 10 + i),
                eni: format!("eni-0{:016x}", 0xa000 + n),
                instance: format!("i-0{:016x}", 0xb000 + n),
                logged: true,
            });
        }
    };
    add("lb", 1, 2);
    add("web", 2, 6);
    add("api", 3, 4);
    add("db", 4, 2);
    add("cache", 5, 2);
    add("dns", 6, 1);
    add("ntp", 7, 2);
    add("batch", 8, 1);
    add("bastion", 9, 1);
    hosts
}

/// The inventory CSV of the estate (`cidr,name,tag=value…`).
pub fn inventory_csv(hosts: &[Host]) -> String {
    let mut out = String::from("cidr,name,tags\n");
    for h in hosts {
        let _ = writeln!(out, "{}/32,{},tier={},env=prod,instance={}", h.addr, h.name, h.tier, h.instance);
    }
    let _ = writeln!(out, "198.51.100.0/24,office,tier=office,sensitivity=low");
    let _ = writeln!(out, "10.1.0.50/32,monitoring,tier=shared,vpc=shared-services");
    out
}

/// A minimal `ip-ranges.json` for the estate's AWS addresses (same shape as AWS's file).
pub fn ip_ranges_json() -> String {
    r#"{"syncToken":"0","createDate":"2025-12-01-00-00-00","prefixes":[
{"ip_prefix":"52.216.0.0/15","region":"us-east-1","service":"AMAZON","network_border_group":"us-east-1"},
{"ip_prefix":"52.216.0.0/15","region":"us-east-1","service":"S3","network_border_group":"us-east-1"}],
"ipv6_prefixes":[]}
"#
    .to_owned()
}

/// One direction of a connection in one window, as one interface logs it.
#[derive(Debug, Clone)]
struct Rec {
    eni: String,
    instance: Option<String>,
    subnet: String,
    srcaddr: Ipv4Addr,
    dstaddr: Ipv4Addr,
    pkt_src: Ipv4Addr,
    pkt_dst: Ipv4Addr,
    srcport: u16,
    dstport: u16,
    protocol: u8,
    packets: u64,
    bytes: u64,
    start: u64,
    end: u64,
    reject: bool,
    flags: Option<u8>,
    ingress: bool,
    src_service: Option<&'static str>,
    dst_service: Option<&'static str>,
    traffic_path: Option<u8>,
}

struct Conn {
    client: Ipv4Addr,
    client_port: u16,
    server: Ipv4Addr,
    server_port: u16,
    protocol: u8,
    start: u64,
    windows: u64,
    path: Path_,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path_ {
    Direct,
    Nat,
    Tgw,
}

fn write_record(out: &mut String, header: &str, r: &Rec) {
    let dash = || "-".to_owned();
    let mut first = true;
    for field in header.split(' ') {
        if !first {
            out.push(' ');
        }
        first = false;
        let value = match field {
            "version" => match header {
                V2 => "2".to_owned(),
                V3 => "3".to_owned(),
                V5 => "5".to_owned(),
                _ => "8".to_owned(),
            },
            "account-id" => ACCOUNT.to_owned(),
            "interface-id" => r.eni.clone(),
            "srcaddr" => r.srcaddr.to_string(),
            "dstaddr" => r.dstaddr.to_string(),
            "srcport" => r.srcport.to_string(),
            "dstport" => r.dstport.to_string(),
            "protocol" => r.protocol.to_string(),
            "packets" => r.packets.to_string(),
            "bytes" => r.bytes.to_string(),
            "start" => r.start.to_string(),
            "end" => r.end.to_string(),
            "action" => if r.reject { "REJECT" } else { "ACCEPT" }.to_owned(),
            "log-status" => "OK".to_owned(),
            "vpc-id" => VPC.to_owned(),
            "subnet-id" => r.subnet.clone(),
            "instance-id" => r.instance.clone().unwrap_or_else(dash),
            "tcp-flags" => r.flags.map_or_else(dash, |f| f.to_string()),
            "type" => "IPv4".to_owned(),
            "pkt-srcaddr" => r.pkt_src.to_string(),
            "pkt-dstaddr" => r.pkt_dst.to_string(),
            "region" => REGION.to_owned(),
            "az-id" => "use1-az1".to_owned(),
            "pkt-src-aws-service" => r.src_service.map_or_else(dash, str::to_owned),
            "pkt-dst-aws-service" => r.dst_service.map_or_else(dash, str::to_owned),
            "flow-direction" => if r.ingress { "ingress" } else { "egress" }.to_owned(),
            "traffic-path" => match (r.ingress, r.traffic_path) {
                (false, Some(p)) => p.to_string(),
                _ => dash(),
            },
            "reject-reason" => dash(),
            _ => dash(),
        };
        out.push_str(&value);
    }
    out.push('\n');
}

struct Writer {
    files: Vec<(PathBuf, Box<dyn Write>, String)>,
    buffers: Vec<String>,
    spec: Spec,
    written: u64,
}

impl Writer {
    fn new(dir: &Path, spec: &Spec) -> io::Result<Self> {
        let mut files = Vec::new();
        for i in 0..spec.files.max(1) {
            let t = spec.start + (i as u64 * spec.days * 86_400) / spec.files.max(1) as u64;
            let (y, m, d, hh, mm) = civil(t);
            let sub = match spec.layout {
                Layout::Flat => PathBuf::new(),
                Layout::Default => format!("AWSLogs/{ACCOUNT}/vpcflowlogs/{REGION}/{y:04}/{m:02}/{d:02}").into(),
                Layout::Hourly => format!("AWSLogs/{ACCOUNT}/vpcflowlogs/{REGION}/{y:04}/{m:02}/{d:02}/{hh:02}").into(),
                Layout::Hive => format!(
                    "AWSLogs/aws-account-id={ACCOUNT}/aws-service=vpcflowlogs/aws-region={REGION}/year={y:04}/month={m:02}/day={d:02}"
                )
                .into(),
                Layout::HiveHourly => format!(
                    "AWSLogs/aws-account-id={ACCOUNT}/aws-service=vpcflowlogs/aws-region={REGION}/year={y:04}/month={m:02}/day={d:02}/hour={hh:02}"
                )
                .into(),
            };
            let folder = dir.join(sub);
            std::fs::create_dir_all(&folder)?;
            let name = format!(
                "{ACCOUNT}_vpcflowlogs_{REGION}_fl-0123456789abcdef0_{y:04}{m:02}{d:02}T{hh:02}{mm:02}Z_{:08x}.log{}",
                i,
                if spec.gzip { ".gz" } else { "" }
            );
            let path = folder.join(name);
            let file = BufWriter::with_capacity(1 << 20, File::create(&path)?);
            let mut w: Box<dyn Write> = if spec.gzip {
                Box::new(flate2::write::GzEncoder::new(file, flate2::Compression::new(6)))
            } else {
                Box::new(file)
            };
            let header = spec.format.header(i);
            w.write_all(header.as_bytes())?;
            w.write_all(b"\n")?;
            files.push((path, w, header.to_owned()));
        }
        let buffers = vec![String::new(); files.len()];
        Ok(Self { files, buffers, spec: spec.clone(), written: 0 })
    }

    fn file_for(&self, t: u64) -> usize {
        let span = (self.spec.days * 86_400).max(1);
        let offset = t.saturating_sub(self.spec.start).min(span - 1);
        ((offset * self.files.len() as u64) / span) as usize
    }

    fn emit(&mut self, r: &Rec) -> io::Result<()> {
        let i = self.file_for(r.start).min(self.files.len() - 1);
        let (_, w, header) = &mut self.files[i];
        let buf = &mut self.buffers[i];
        write_record(buf, header, r);
        self.written += 1;
        if buf.len() > 1 << 16 {
            w.write_all(buf.as_bytes())?;
            buf.clear();
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<Vec<String>> {
        let mut paths = Vec::new();
        for ((path, mut w, _), buf) in self.files.drain(..).zip(self.buffers.drain(..)) {
            w.write_all(buf.as_bytes())?;
            w.flush()?;
            drop(w);
            paths.push(path.display().to_string());
        }
        Ok(paths)
    }
}

fn civil(ts: u64) -> (i64, u32, u32, u64, u64) {
    let secs = ts % 86_400;
    let (y, m, d) = zerogate_civil::civil_from_days(i64::try_from(ts / 86_400).unwrap_or(i64::MAX));
    (y, m, d, secs / 3600, (secs % 3600) / 60)
}

fn subnet_of(addr: Ipv4Addr) -> String {
    format!("subnet-0{:016x}", u32::from(addr) >> 8)
}

/// Client, server, protocol, port.
type EdgeName = (String, String, u8, u16);
/// Client (address, port) pairs, packets, bytes.
type EdgeTally = (BTreeSet<(Ipv4Addr, u16)>, u64, u64);

/// Generates the estate's flow logs into `dir` and returns the ground truth.
pub fn generate(dir: &Path, spec: &Spec) -> io::Result<Truth> {
    let hosts = hosts();
    std::fs::create_dir_all(dir)?;
    let mut rng = Rng::new(spec.seed);
    let mut writer = Writer::new(dir, spec)?;
    let by_tier = |tier: &str| hosts.iter().filter(|h| h.tier == tier).cloned().collect::<Vec<_>>();
    let (lb, web, api, db, cache, dns, ntp, batch, bastion) = (
        by_tier("lb"),
        by_tier("web"),
        by_tier("api"),
        by_tier("db"),
        by_tier("cache"),
        by_tier("dns"),
        by_tier("ntp"),
        by_tier("batch"),
        by_tier("bastion"),
    );
    let find = |addr: Ipv4Addr| hosts.iter().find(|h| h.addr == addr);
    let name_of = |addr: Ipv4Addr| -> String {
        if let Some(h) = find(addr) {
            h.name.clone()
        } else if addr == MONITOR {
            "monitoring".into()
        } else if addr.octets()[..3] == [198, 51, 100] {
            "office".into()
        } else if addr.octets()[0] == 52 && addr.octets()[1] & 0xfe == 216 {
            "aws:S3".into()
        } else {
            "internet".into()
        }
    };
    let span = spec.days * 86_400;
    let mut truth: BTreeMap<EdgeName, EdgeTally> = BTreeMap::new();
    let mut next_port: BTreeMap<Ipv4Addr, u64> = BTreeMap::new();
    let mut connections = 0u64;
    let mut noise_records = 0u64;
    let noise_target = (spec.records as f64 * spec.scan_share) as u64;
    let traffic_target = spec.records.saturating_sub(noise_target);
    let mut traffic_records = 0u64;

    while traffic_records < traffic_target {
        let t = spec.start + rng.range(0, span - 61);
        let kind = rng.range(0, 99);
        let public_client = || Ipv4Addr::new(203, 0, 113, 0);
        let (client, server, protocol, port, path) = match kind {
            0..=17 => {
                let c = Ipv4Addr::from(u32::from(public_client()) + rng.range(1, 254) as u32);
                let c = if rng.chance(0.5) { Ipv4Addr::new(192, 0, 2, rng.range(1, 254) as u8) } else { c };
                (c, rng.pick(&lb).addr, 6, 443, Path_::Direct)
            }
            18..=37 => (rng.pick(&lb).addr, rng.pick(&web).addr, 6, 8080, Path_::Direct),
            38..=52 => (rng.pick(&web).addr, rng.pick(&api).addr, 6, 50051, Path_::Direct),
            53..=62 => (rng.pick(&api).addr, rng.pick(&db).addr, 6, 5432, Path_::Direct),
            63..=70 => {
                let c = if rng.chance(0.5) { rng.pick(&web).addr } else { rng.pick(&api).addr };
                (c, rng.pick(&cache).addr, 6, 6379, Path_::Direct)
            }
            71..=78 => {
                let pool: Vec<&Host> = hosts.iter().filter(|h| h.tier != "dns").collect();
                (rng.pick(&pool).addr, dns[0].addr, 17, 53, Path_::Direct)
            }
            79..=80 => (ntp[0].addr, ntp[1].addr, 17, 123, Path_::Direct),
            81..=86 => {
                let dst = Ipv4Addr::new(93, 184, rng.range(0, 3) as u8, rng.range(1, 254) as u8);
                (rng.pick(&web).addr, dst, 6, 443, Path_::Nat)
            }
            87..=90 => {
                let dst = Ipv4Addr::new(52, 216, rng.range(0, 255) as u8, rng.range(1, 254) as u8);
                (rng.pick(&api).addr, dst, 6, 443, Path_::Direct)
            }
            91..=94 => (MONITOR, rng.pick(&web).addr, 6, 9100, Path_::Tgw),
            95..=96 => (Ipv4Addr::new(198, 51, 100, rng.range(1, 50) as u8), bastion[0].addr, 6, 22, Path_::Direct),
            97 => (bastion[0].addr, rng.pick(&web).addr, 6, 22, Path_::Direct),
            _ => {
                // The weekly batch job: only on Sundays (or on the first day of a shorter window).
                let day = (t - spec.start) / 86_400;
                let weekday = ((t / 86_400) + 4) % 7; // 1970-01-01 was a Thursday
                if weekday != 0 && !(spec.days < 7 && day == 0) {
                    continue;
                }
                (batch[0].addr, rng.pick(&db).addr, 6, 5432, Path_::Direct)
            }
        };
        // NTP peers use 123 on both ends; everything else an ephemeral client port.
        // Client ports cycle through the Linux ephemeral range, so none repeats for one client.
        let counter = next_port.entry(client).or_insert_with(|| rng.range(0, 28_231));
        *counter += 1;
        let client_port = if port == 123 { 123 } else { (32_768 + (*counter * 7_919) % 28_232) as u16 };
        let windows = if rng.chance(0.1) { rng.range(2, 6) } else { 1 };
        let conn = Conn { client, client_port, server, server_port: port, protocol, start: t, windows, path };
        let (records, packets, bytes) = emit_connection(&mut writer, &conn, &hosts, &mut rng)?;
        let edge = truth.entry((name_of(client), name_of(server), protocol, port)).or_default();
        edge.0.insert((client, client_port));
        edge.1 += packets;
        edge.2 += bytes;
        connections += 1;
        traffic_records += records;
    }

    // Internet noise: scans of random ports, backscatter, and our one-packet answers.
    let exposed: Vec<&Host> = hosts.iter().filter(|h| h.tier == "lb" || h.tier == "bastion").collect();
    while noise_records < noise_target {
        let target = *rng.pick(&exposed);
        let scanner = Ipv4Addr::from(rng.range(0x0b00_0000, 0xdf00_0000) as u32);
        if !is_public(scanner) {
            continue;
        }
        let t = spec.start + rng.range(0, span - 61);
        let kind = rng.range(0, 9);
        let (flags, port, sport, inbound) = match kind {
            0..=6 => (2u8, rng.range(1, 65535) as u16, rng.range(1024, 65535) as u16, true), // SYN scan
            7..=8 => (if rng.chance(0.5) { 18 } else { 4 }, rng.range(32768, 60999) as u16, 80, true), // backscatter
            _ => (4, 22, rng.range(1024, 65535) as u16, false),                              // our RST to a scanner
        };
        let (src, dst, sp, dp) =
            if inbound { (scanner, target.addr, sport, port) } else { (target.addr, scanner, port, sport) };
        let r = Rec {
            eni: target.eni.clone(),
            instance: Some(target.instance.clone()),
            subnet: subnet_of(target.addr),
            srcaddr: src,
            dstaddr: dst,
            pkt_src: src,
            pkt_dst: dst,
            srcport: sp,
            dstport: dp,
            protocol: 6,
            packets: 1,
            bytes: if flags == 2 { 60 } else { 40 },
            start: t,
            end: t + rng.range(0, 59),
            reject: inbound && !(port == 443 || port == 22),
            flags: Some(flags),
            ingress: inbound,
            src_service: None,
            dst_service: None,
            traffic_path: None,
        };
        writer.emit(&r)?;
        noise_records += 1;
    }

    let records = writer.written;
    let files = writer.finish()?;
    std::fs::write(dir.join("inventory.csv"), inventory_csv(&hosts))?;
    std::fs::write(dir.join("ip-ranges.json"), ip_ranges_json())?;
    let truth = Truth {
        spec: spec.clone(),
        records,
        noise_records,
        connections,
        edges: truth
            .into_iter()
            .map(|((client, server, protocol, port), (clients, packets, bytes))| TruthEdge {
                client,
                server,
                protocol,
                port,
                connections: clients.len() as u64,
                packets,
                bytes,
            })
            .collect(),
        files,
    };
    let json = serde_json::to_string_pretty(&truth).map_err(io::Error::other)?;
    std::fs::write(dir.join("truth.json"), json)?;
    Ok(truth)
}

fn is_public(a: Ipv4Addr) -> bool {
    let [x, y, ..] = a.octets();
    !(a.is_private()
        || a.is_loopback()
        || a.is_link_local()
        || (x == 100 && (64..128).contains(&y))
        || x >= 224
        || x == 0)
}

/// Writes every record AWS would write for one connection; returns how many, and the packets and
/// bytes of the connection (both directions, once).
fn emit_connection(writer: &mut Writer, c: &Conn, hosts: &[Host], rng: &mut Rng) -> io::Result<(u64, u64, u64)> {
    let host = |a: Ipv4Addr| hosts.iter().find(|h| h.addr == a);
    let mut count = 0;
    let (mut packets, mut bytes) = (0, 0);
    let s3 = |a: Ipv4Addr| (a.octets()[0] == 52 && a.octets()[1] & 0xfe == 216).then_some("S3");
    for w in 0..c.windows {
        let start = c.start + w * 60;
        let end = start + rng.range(1, 59);
        let single = c.windows == 1;
        let (fwd_flags, rev_flags) = match (c.protocol, single, w) {
            (6, true, _) => (Some(3), Some(19)),
            (6, false, 0) => (Some(2), Some(18)),
            (6, false, w) if w + 1 == c.windows => (Some(1), Some(1)),
            (6, _, _) => (Some(0), Some(0)),
            _ => (None, None),
        };
        let fwd_packets = rng.range(2, 40);
        let rev_packets = rng.range(2, 60);
        let fwd_bytes = fwd_packets * rng.range(60, 400);
        let rev_bytes = rev_packets * rng.range(60, 1400);
        packets += fwd_packets + rev_packets;
        bytes += fwd_bytes + rev_bytes;
        let base = Rec {
            eni: String::new(),
            instance: None,
            subnet: String::new(),
            srcaddr: c.client,
            dstaddr: c.server,
            pkt_src: c.client,
            pkt_dst: c.server,
            srcport: c.client_port,
            dstport: c.server_port,
            protocol: c.protocol,
            packets: fwd_packets,
            bytes: fwd_bytes,
            start,
            end,
            reject: false,
            flags: fwd_flags,
            ingress: false,
            src_service: None,
            dst_service: s3(c.server),
            traffic_path: None,
        };
        let reverse = |r: &Rec| Rec {
            srcaddr: r.dstaddr,
            dstaddr: r.srcaddr,
            pkt_src: r.pkt_dst,
            pkt_dst: r.pkt_src,
            srcport: r.dstport,
            dstport: r.srcport,
            packets: rev_packets,
            bytes: rev_bytes,
            flags: rev_flags,
            ingress: !r.ingress,
            src_service: r.dst_service,
            dst_service: r.src_service,
            ..r.clone()
        };
        // The client's own interface: egress forward, ingress reverse.
        if let Some(h) = host(c.client).filter(|h| h.logged) {
            let fwd = Rec {
                eni: h.eni.clone(),
                instance: Some(h.instance.clone()),
                subnet: subnet_of(h.addr),
                traffic_path: Some(match c.path {
                    Path_::Nat => 1,
                    _ if s3(c.server).is_some() => 2,
                    _ => 1,
                }),
                ..base.clone()
            };
            writer.emit(&fwd)?;
            writer.emit(&reverse(&fwd))?;
            count += 2;
        }
        // The server's own interface: ingress forward, egress reverse.
        if let Some(h) = host(c.server).filter(|h| h.logged) {
            let fwd = Rec {
                eni: h.eni.clone(),
                instance: Some(h.instance.clone()),
                subnet: subnet_of(h.addr),
                ingress: true,
                ..base.clone()
            };
            let rev = Rec { traffic_path: Some(1), ..reverse(&fwd) };
            writer.emit(&fwd)?;
            writer.emit(&rev)?;
            count += 2;
        }
        match c.path {
            Path_::Direct => {}
            Path_::Nat => {
                let nat_port = rng.range(1024, 65535) as u16;
                let nat = |src, dst, ps, pd, sp, dp, packets, bytes, flags, ingress| Rec {
                    eni: NAT_ENI.into(),
                    instance: None,
                    subnet: subnet_of(NAT_ADDR),
                    srcaddr: src,
                    dstaddr: dst,
                    pkt_src: ps,
                    pkt_dst: pd,
                    srcport: sp,
                    dstport: dp,
                    packets,
                    bytes,
                    flags,
                    ingress,
                    traffic_path: if ingress { None } else { Some(8) },
                    ..base.clone()
                };
                let (cl, sv, cp, sp) = (c.client, c.server, c.client_port, c.server_port);
                let records = [
                    nat(cl, NAT_ADDR, cl, sv, cp, sp, fwd_packets, fwd_bytes, fwd_flags, true),
                    nat(NAT_ADDR, sv, NAT_ADDR, sv, nat_port, sp, fwd_packets, fwd_bytes, fwd_flags, false),
                    nat(sv, NAT_ADDR, sv, NAT_ADDR, sp, nat_port, rev_packets, rev_bytes, rev_flags, true),
                    nat(NAT_ADDR, cl, sv, cl, sp, cp, rev_packets, rev_bytes, rev_flags, false),
                ];
                for r in &records {
                    writer.emit(r)?;
                }
                count += 4;
            }
            Path_::Tgw => {
                let fwd = Rec {
                    eni: TGW_ENI.into(),
                    instance: None,
                    subnet: subnet_of(TGW_ADDR),
                    srcaddr: TGW_ADDR,
                    ingress: false,
                    ..base.clone()
                };
                let rev = Rec { dstaddr: TGW_ADDR, ..reverse(&Rec { srcaddr: c.client, ..fwd.clone() }) };
                writer.emit(&fwd)?;
                writer.emit(&rev)?;
                count += 2;
            }
        }
    }
    Ok((count, packets, bytes))
}
