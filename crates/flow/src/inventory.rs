//! The inventory: what the addresses in flow logs belong to. It reads the JSON that
//! `aws ec2 describe-instances` and `aws ec2 describe-network-interfaces` print, AWS's published
//! `ip-ranges.json`, and a simple CSV (`cidr,name,tag=value…`) for everything else, and resolves an
//! address to an [`Endpoint`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use serde::Serialize;
use serde_json::Value;

use crate::prefix::{Prefix, PrefixTable};

/// AWS service codes that name every customer's addresses, not a service: treated as the internet.
const NOT_A_SERVICE: &[&str] = &["AMAZON", "EC2"];

/// Service codes AWS documents for `pkt-src-aws-service`; `ip-ranges.json` may add more.
const KNOWN_SERVICES: &[&str] = &[
    "AMAZON_APPFLOW",
    "AMAZON_CONNECT",
    "API_GATEWAY",
    "CHIME_MEETINGS",
    "CHIME_VOICECONNECTOR",
    "CLOUD9",
    "CLOUDFRONT",
    "CODEBUILD",
    "DYNAMODB",
    "EBS",
    "EC2_INSTANCE_CONNECT",
    "GLOBALACCELERATOR",
    "KINESIS_VIDEO_STREAMS",
    "ROUTE53",
    "ROUTE53_HEALTHCHECKS",
    "ROUTE53_HEALTHCHECKS_PUBLISHING",
    "ROUTE53_RESOLVER",
    "S3",
    "WORKSPACES_GATEWAYS",
];

/// What one side of a flow resolves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// An asset named by the inventory (index into [`Inventory::assets`]).
    Asset(u32),
    /// An address no inventory names and that is not on the internet: kept explicit.
    Address(IpAddr),
    /// An AWS service's public addresses (index into [`Inventory::services`]).
    Service(u16),
    /// Any other public address.
    Internet,
}

impl Endpoint {
    /// Whether the endpoint is public and not named by the user: where scans come from.
    pub fn is_public_unnamed(self) -> bool {
        matches!(self, Endpoint::Internet | Endpoint::Service(_))
    }
}

/// What kind of thing an asset is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AssetKind {
    /// An EC2 instance.
    Instance,
    /// A network interface that is not an instance's (NAT gateway, endpoint, load balancer, …).
    NetworkInterface,
    /// A CIDR the user named in the CSV inventory.
    Named,
    /// An AWS service's public address ranges.
    AwsService,
    /// Every other public address.
    Internet,
    /// A private address nothing names.
    Unknown,
}

/// An asset of the inventory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Asset {
    /// Stable identifier: the instance or interface id, or the CSV name.
    pub id: String,
    /// A readable name (the `Name` tag), where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What it is.
    pub kind: AssetKind,
    /// The AWS interface type for network interfaces (`nat_gateway`, `vpc_endpoint`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface_type: Option<String>,
    /// Tags from AWS or the CSV.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// VPC, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<String>,
    /// Subnet, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    /// Addresses and networks the inventory gives for it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<Prefix>,
    /// Network interfaces attached to it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    /// Known listening ports (`protocol number`, `port`), from a `listen` tag or the interface type.
    #[serde(skip)]
    pub listeners: BTreeSet<(u8, u16)>,
    /// Which inventory source named it.
    pub source: String,
    /// When its addresses were its own: flows outside are not attributed to it (an address
    /// reused by another instance, a CIDR handed to another team).
    #[serde(skip)]
    pub validity: Validity,
}

/// When an asset held its addresses: from (included) until (excluded), in seconds since the
/// epoch; an open end is unbounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Validity {
    /// From.
    pub from: Option<u64>,
    /// Until.
    pub until: Option<u64>,
}

impl Validity {
    /// Whether `time` is within.
    pub fn contains(&self, time: u64) -> bool {
        self.from.is_none_or(|from| time >= from) && self.until.is_none_or(|until| time < until)
    }

    /// Whether it is unbounded at both ends.
    pub fn is_always(&self) -> bool {
        self.from.is_none() && self.until.is_none()
    }
}

/// Who owns a prefix of the inventory: one asset for all time, or several, each for a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Always(u32),
    /// Index into `Inventory::owners_by_time`.
    ByTime(u32),
}

/// Why an inventory file was refused.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The JSON is not one of the shapes zerogate reads.
    #[error("{path}: {reason}")]
    Shape {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A CSV line is malformed.
    #[error("{path}:{line}: {reason}")]
    Csv {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The assets zerogate knows, and the tables that resolve addresses to them.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    assets: Vec<Asset>,
    services: Vec<String>,
    interfaces: HashMap<String, u32>,
    user_prefixes: Vec<(Prefix, u32)>,
    aws_prefixes: Vec<(Prefix, u16)>,
    user_table: PrefixTable<Owner>,
    /// Assets that held the same prefix at different times.
    owners_by_time: Vec<Vec<u32>>,
    aws_table: PrefixTable<u16>,
    service_index: HashMap<String, u16>,
    sources: Vec<String>,
}

impl Inventory {
    /// An empty inventory.
    pub fn new() -> Self {
        let mut inventory = Self::default();
        for service in KNOWN_SERVICES {
            inventory.service(service);
        }
        inventory
    }

    /// All assets, in load order.
    pub fn assets(&self) -> &[Asset] {
        &self.assets
    }

    /// AWS service group names (`S3`, `DYNAMODB`, …).
    pub fn services(&self) -> &[String] {
        &self.services
    }

    /// Descriptions of the loaded sources.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// The asset that owns a network interface id.
    pub fn asset_of_interface(&self, interface_id: &str) -> Option<u32> {
        self.interfaces.get(interface_id).copied()
    }

    /// The index of a service name, if known.
    pub fn service_index(&self, name: &str) -> Option<u16> {
        if NOT_A_SERVICE.contains(&name) { None } else { self.service_index.get(name).copied() }
    }

    fn service(&mut self, name: &str) -> u16 {
        if let Some(&i) = self.service_index.get(name) {
            return i;
        }
        let index = u16::try_from(self.services.len()).unwrap_or(u16::MAX);
        self.services.push(name.to_owned());
        self.service_index.insert(name.to_owned(), index);
        index
    }

    /// Resolves an address as the inventory stands now (for an address that changed hands:
    /// its present owner); `aws_service` is the record's `pkt-*-aws-service` value, if any.
    pub fn resolve(&self, addr: IpAddr, aws_service: Option<&str>) -> Endpoint {
        self.resolve_at(addr, aws_service, None)
    }

    /// Resolves an address as it was at `time` (seconds): an address that changed hands goes
    /// to the asset that held it then, or to no asset when none did. Without a time, to its
    /// present owner.
    pub fn resolve_at(&self, addr: IpAddr, aws_service: Option<&str>, time: Option<u64>) -> Endpoint {
        self.resolve_timed(addr, aws_service, time).0
    }

    /// [`Inventory::resolve_at`], and whether the answer depends on the time (the address
    /// changed hands), so that a caller caching answers by address knows which it may keep.
    pub fn resolve_timed(&self, addr: IpAddr, aws_service: Option<&str>, time: Option<u64>) -> (Endpoint, bool) {
        let by_time = match self.user_table.lookup(addr) {
            Some(Owner::Always(asset)) => return (Endpoint::Asset(*asset), false),
            Some(Owner::ByTime(group)) => match self.owner_at(*group, time) {
                Some(asset) => return (Endpoint::Asset(asset), true),
                None => true,
            },
            None => false,
        };
        let endpoint = if !is_public(addr) {
            Endpoint::Address(addr)
        } else if let Some(index) = aws_service.and_then(|s| self.service_index(s)) {
            Endpoint::Service(index)
        } else {
            match self.aws_table.lookup(addr) {
                Some(&index) => Endpoint::Service(index),
                None => Endpoint::Internet,
            }
        };
        (endpoint, by_time)
    }

    /// [`Inventory::resolve_at`] with the service name as the bytes of a record.
    pub fn resolve_raw(&self, addr: IpAddr, aws_service: Option<&[u8]>, time: Option<u64>) -> Endpoint {
        self.resolve_at(addr, aws_service.and_then(|s| std::str::from_utf8(s).ok()), time)
    }

    fn owner_at(&self, group: u32, time: Option<u64>) -> Option<u32> {
        let owners = self.owners_by_time.get(group as usize)?;
        let validity = |asset: u32| self.assets.get(asset as usize).map(|a| a.validity).unwrap_or_default();
        match time {
            Some(time) => owners.iter().copied().find(|&a| validity(a).contains(time)),
            // Now: the owner whose time has not ended, else the one that held it last.
            None => owners
                .iter()
                .copied()
                .find(|&a| validity(a).until.is_none())
                .or_else(|| owners.iter().copied().max_by_key(|&a| validity(a).until)),
        }
    }

    /// Whether a user-named asset listens on `port` for `protocol`.
    pub fn listens(&self, asset: u32, protocol: u8, port: u16) -> bool {
        self.assets.get(asset as usize).is_some_and(|a| a.listeners.contains(&(protocol, port)))
    }

    /// Loads one inventory file, telling its shape from its content.
    pub fn load(&mut self, path: &str, content: &str) -> Result<(), InventoryError> {
        let trimmed = content.trim_start();
        if trimmed.starts_with('{') || trimmed.starts_with('[') {
            let json: Value = serde_json::from_str(content)
                .map_err(|e| InventoryError::Shape { path: path.to_owned(), reason: format!("invalid JSON: {e}") })?;
            let shape_err = |reason: &str| InventoryError::Shape { path: path.to_owned(), reason: reason.to_owned() };
            if json.get("Reservations").is_some() {
                self.load_instances(path, &json).map_err(|r| shape_err(&r))?;
            } else if json.get("NetworkInterfaces").is_some() {
                self.load_interfaces(path, &json).map_err(|r| shape_err(&r))?;
            } else if json.get("prefixes").is_some() {
                self.load_ip_ranges(path, &json).map_err(|r| shape_err(&r))?;
            } else {
                return Err(shape_err(
                    "expected the output of `aws ec2 describe-instances` (`Reservations`), \
                     `aws ec2 describe-network-interfaces` (`NetworkInterfaces`) or ip-ranges.json (`prefixes`)",
                ));
            }
        } else {
            self.load_csv(path, content)?;
        }
        self.rebuild();
        Ok(())
    }

    fn rebuild(&mut self) {
        // One owner per prefix, unless the inventory says the prefix changed hands.
        let mut order: Vec<Prefix> = Vec::new();
        let mut holders: HashMap<Prefix, Vec<u32>> = HashMap::new();
        for &(prefix, asset) in &self.user_prefixes {
            let list = holders.entry(prefix).or_insert_with(|| {
                order.push(prefix);
                Vec::new()
            });
            if !list.contains(&asset) {
                list.push(asset);
            }
        }
        self.owners_by_time.clear();
        let mut entries = Vec::with_capacity(order.len());
        for prefix in order {
            let list = holders.remove(&prefix).unwrap_or_default();
            let timed = list.iter().any(|&a| self.assets.get(a as usize).is_some_and(|a| !a.validity.is_always()));
            let owner = match list.first() {
                Some(&first) if !timed => Owner::Always(first),
                Some(_) => {
                    self.owners_by_time.push(list);
                    Owner::ByTime(u32::try_from(self.owners_by_time.len() - 1).unwrap_or(u32::MAX))
                }
                None => continue,
            };
            entries.push((prefix, owner));
        }
        self.user_table = PrefixTable::build(entries);
        self.aws_table = PrefixTable::build(self.aws_prefixes.clone());
    }

    fn add_asset(&mut self, asset: Asset) -> u32 {
        if let Some(existing) = self.assets.iter().position(|a| a.id == asset.id) {
            // The same asset from two sources (instances and interfaces): merge what is new.
            let index = existing as u32;
            if let Some(known) = self.assets.get_mut(existing) {
                for prefix in asset.prefixes {
                    if !known.prefixes.contains(&prefix) {
                        known.prefixes.push(prefix);
                        self.user_prefixes.push((prefix, index));
                    }
                }
                for interface in asset.interfaces {
                    if !known.interfaces.contains(&interface) {
                        self.interfaces.insert(interface.clone(), index);
                        known.interfaces.push(interface);
                    }
                }
                for (k, v) in asset.tags {
                    known.tags.entry(k).or_insert(v);
                }
                known.listeners.extend(asset.listeners);
                known.name = known.name.take().or(asset.name);
                if known.validity.is_always() {
                    known.validity = asset.validity;
                }
            }
            return index;
        }
        let index = self.assets.len() as u32;
        for prefix in &asset.prefixes {
            self.user_prefixes.push((*prefix, index));
        }
        for interface in &asset.interfaces {
            self.interfaces.insert(interface.clone(), index);
        }
        self.assets.push(asset);
        index
    }

    fn load_instances(&mut self, path: &str, json: &Value) -> Result<(), String> {
        let reservations = json.get("Reservations").and_then(Value::as_array).ok_or("`Reservations` is not a list")?;
        let mut count = 0;
        for (r, reservation) in reservations.iter().enumerate() {
            let instances = reservation
                .get("Instances")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("`Reservations[{r}].Instances` is not a list"))?;
            for (i, instance) in instances.iter().enumerate() {
                let id = str_at(instance, "InstanceId")
                    .ok_or_else(|| format!("`Reservations[{r}].Instances[{i}]` has no `InstanceId`"))?;
                let tags = aws_tags(instance.get("Tags"));
                let mut prefixes = Vec::new();
                let mut interfaces = Vec::new();
                // The instance's addresses are its own since its primary interface was attached
                // (its creation; a stop and start keeps it).
                let mut validity = Validity::default();
                for (e, eni) in
                    instance.get("NetworkInterfaces").and_then(Value::as_array).into_iter().flatten().enumerate()
                {
                    if eni.pointer("/Attachment/DeviceIndex").and_then(Value::as_u64) == Some(0) {
                        validity.from =
                            attach_time(eni, &format!("Reservations[{r}].Instances[{i}].NetworkInterfaces[{e}]"))?;
                    }
                }
                for key in ["PrivateIpAddress", "PublicIpAddress", "Ipv6Address"] {
                    push_addr(&mut prefixes, str_at(instance, key));
                }
                for eni in instance.get("NetworkInterfaces").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(eni_id) = str_at(eni, "NetworkInterfaceId") {
                        interfaces.push(eni_id.to_owned());
                    }
                    collect_interface_addresses(eni, &mut prefixes);
                }
                let listeners = listeners_from_tags(&tags);
                self.add_asset(Asset {
                    id: id.to_owned(),
                    name: tags.get("Name").cloned(),
                    kind: AssetKind::Instance,
                    interface_type: None,
                    vpc_id: str_at(instance, "VpcId").map(str::to_owned),
                    subnet_id: str_at(instance, "SubnetId").map(str::to_owned),
                    tags,
                    prefixes,
                    interfaces,
                    listeners,
                    source: "describe-instances".into(),
                    validity,
                });
                count += 1;
            }
        }
        self.sources.push(format!("{path}: describe-instances, {count} instances"));
        Ok(())
    }

    fn load_interfaces(&mut self, path: &str, json: &Value) -> Result<(), String> {
        let list =
            json.get("NetworkInterfaces").and_then(Value::as_array).ok_or("`NetworkInterfaces` is not a list")?;
        for (i, eni) in list.iter().enumerate() {
            let eni_id = str_at(eni, "NetworkInterfaceId")
                .ok_or_else(|| format!("`NetworkInterfaces[{i}]` has no `NetworkInterfaceId`"))?;
            let tags = aws_tags(eni.get("TagSet").or_else(|| eni.get("Tags")));
            let mut prefixes = Vec::new();
            collect_interface_addresses(eni, &mut prefixes);
            let interface_type = str_at(eni, "InterfaceType").map(str::to_owned);
            let instance = eni.get("Attachment").and_then(|a| str_at(a, "InstanceId"));
            let mut listeners = listeners_from_tags(&tags);
            if interface_type.as_deref() == Some("vpc_endpoint")
                || interface_type.as_deref() == Some("interface") && eni_is_endpoint(eni)
            {
                listeners.insert((6, 443));
            }
            let (id, kind, name) = match instance {
                Some(instance) => (instance.to_owned(), AssetKind::Instance, tags.get("Name").cloned()),
                None => (
                    eni_id.to_owned(),
                    AssetKind::NetworkInterface,
                    tags.get("Name")
                        .cloned()
                        .or_else(|| str_at(eni, "Description").filter(|d| !d.is_empty()).map(str::to_owned)),
                ),
            };
            self.add_asset(Asset {
                id,
                name,
                interface_type: if kind == AssetKind::NetworkInterface { interface_type } else { None },
                kind,
                vpc_id: str_at(eni, "VpcId").map(str::to_owned),
                subnet_id: str_at(eni, "SubnetId").map(str::to_owned),
                tags,
                prefixes,
                interfaces: vec![eni_id.to_owned()],
                listeners,
                source: "describe-network-interfaces".into(),
                validity: Validity { from: attach_time(eni, &format!("NetworkInterfaces[{i}]"))?, until: None },
            });
        }
        self.sources.push(format!("{path}: describe-network-interfaces, {} interfaces", list.len()));
        Ok(())
    }

    fn load_ip_ranges(&mut self, path: &str, json: &Value) -> Result<(), String> {
        let mut count = 0;
        for (list, key) in [("prefixes", "ip_prefix"), ("ipv6_prefixes", "ipv6_prefix")] {
            let Some(entries) = json.get(list) else {
                continue;
            };
            let entries = entries.as_array().ok_or_else(|| format!("`{list}` is not a list"))?;
            for (i, entry) in entries.iter().enumerate() {
                let cidr = str_at(entry, key).ok_or_else(|| format!("`{list}[{i}]` has no `{key}`"))?;
                let service = str_at(entry, "service").ok_or_else(|| format!("`{list}[{i}]` has no `service`"))?;
                let prefix: Prefix = cidr.parse().map_err(|e| format!("`{list}[{i}]`: {e}"))?;
                if NOT_A_SERVICE.contains(&service) {
                    continue;
                }
                let index = self.service(service);
                self.aws_prefixes.push((prefix, index));
                count += 1;
            }
        }
        self.sources.push(format!("{path}: ip-ranges.json, {count} service prefixes"));
        Ok(())
    }

    fn load_csv(&mut self, path: &str, content: &str) -> Result<(), InventoryError> {
        let mut count = 0;
        for (n, raw) in content.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let csv_err = |reason: String| InventoryError::Csv { path: path.to_owned(), line: n + 1, reason };
            let mut cells = line.split(',').map(str::trim);
            let cidr = cells.next().unwrap_or_default();
            if n == 0 && cidr.eq_ignore_ascii_case("cidr") {
                continue;
            }
            let prefix: Prefix = cidr.parse().map_err(|e: crate::prefix::PrefixError| csv_err(e.to_string()))?;
            let name =
                cells.next().filter(|s| !s.is_empty()).ok_or_else(|| csv_err("missing name after the CIDR".into()))?;
            let mut tags = BTreeMap::new();
            for cell in cells {
                if cell.is_empty() {
                    continue;
                }
                let (k, v) = cell.split_once('=').ok_or_else(|| csv_err(format!("`{cell}` is not `tag=value`")))?;
                tags.insert(k.trim().to_owned(), v.trim().to_owned());
            }
            let listeners = listeners_from_tags(&tags);
            if tags.contains_key("listen") && listeners.is_empty() {
                return Err(csv_err("`listen` expects ports like `443/tcp 53/udp`".into()));
            }
            let mut time_tag = |key: &str| -> Result<Option<u64>, InventoryError> {
                match tags.remove(key) {
                    None => Ok(None),
                    Some(text) => crate::map::parse_rfc3339(&text)
                        .map(Some)
                        .ok_or_else(|| csv_err(format!("`{key}={text}` is not a time like 2025-12-01T00:00:00Z"))),
                }
            };
            let validity = Validity { from: time_tag("valid_from")?, until: time_tag("valid_until")? };
            if let (Some(from), Some(until)) = (validity.from, validity.until)
                && until <= from
            {
                return Err(csv_err("`valid_until` is not after `valid_from`".into()));
            }
            self.add_asset(Asset {
                id: name.to_owned(),
                name: None,
                kind: AssetKind::Named,
                interface_type: None,
                vpc_id: None,
                subnet_id: None,
                tags,
                prefixes: vec![prefix],
                interfaces: Vec::new(),
                listeners,
                source: "csv".into(),
                validity,
            });
            count += 1;
        }
        self.sources.push(format!("{path}: csv, {count} entries"));
        Ok(())
    }
}

/// `Attachment.AttachTime` of an interface in the AWS CLI's forms (`2025-11-20T10:00:00+00:00`,
/// `2025-11-20T10:00:00.000Z`), in seconds; `where_` names the interface for the error.
fn attach_time(eni: &Value, where_: &str) -> Result<Option<u64>, String> {
    let Some(text) = eni.pointer("/Attachment/AttachTime").and_then(Value::as_str) else { return Ok(None) };
    let bad = || format!("`{where_}.Attachment.AttachTime` is `{text}`, not an ISO 8601 UTC time");
    let (base, rest) = (text.get(..19).ok_or_else(bad)?, text.get(19..).ok_or_else(bad)?);
    let rest = match rest.strip_prefix('.') {
        Some(fraction) => fraction.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    };
    if !matches!(rest, "Z" | "+00:00") {
        return Err(bad());
    }
    crate::map::parse_rfc3339(&format!("{base}Z")).map(Some).ok_or_else(bad)
}

/// Whether an address is on the public internet (documentation ranges count as public, as in
/// AWS's own examples).
pub fn is_public(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments().first().copied().unwrap_or(0);
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

fn eni_is_endpoint(eni: &Value) -> bool {
    str_at(eni, "Description").is_some_and(|d| d.starts_with("VPC Endpoint Interface"))
}

fn str_at<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn push_addr(prefixes: &mut Vec<Prefix>, addr: Option<&str>) {
    if let Some(addr) = addr.and_then(|a| a.parse::<IpAddr>().ok()) {
        let prefix = Prefix::host(addr);
        if !prefixes.contains(&prefix) {
            prefixes.push(prefix);
        }
    }
}

fn collect_interface_addresses(eni: &Value, prefixes: &mut Vec<Prefix>) {
    push_addr(prefixes, str_at(eni, "PrivateIpAddress"));
    for private in eni.get("PrivateIpAddresses").and_then(Value::as_array).into_iter().flatten() {
        push_addr(prefixes, str_at(private, "PrivateIpAddress"));
        push_addr(prefixes, private.get("Association").and_then(|a| str_at(a, "PublicIp")));
    }
    push_addr(prefixes, eni.get("Association").and_then(|a| str_at(a, "PublicIp")));
    for v6 in eni.get("Ipv6Addresses").and_then(Value::as_array).into_iter().flatten() {
        push_addr(prefixes, str_at(v6, "Ipv6Address"));
    }
}

fn aws_tags(tags: Option<&Value>) -> BTreeMap<String, String> {
    tags.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| Some((str_at(t, "Key")?.to_owned(), str_at(t, "Value").unwrap_or_default().to_owned())))
        .collect()
}

/// Reads the `listen` (CSV) or `zerogate:listen` (AWS) tag: ports like `443/tcp 53/udp`,
/// separated by spaces, `|` or `;`.
fn listeners_from_tags(tags: &BTreeMap<String, String>) -> BTreeSet<(u8, u16)> {
    let mut listeners = BTreeSet::new();
    for key in ["listen", "zerogate:listen"] {
        let Some(spec) = tags.get(key) else { continue };
        for item in spec.split([' ', '|', ';']).filter(|s| !s.is_empty()) {
            let (port, proto) = item.split_once('/').unwrap_or((item, "tcp"));
            let proto = match proto.to_ascii_lowercase().as_str() {
                "tcp" => 6,
                "udp" => 17,
                other => match other.parse::<u8>() {
                    Ok(p) => p,
                    Err(_) => continue,
                },
            };
            if let Ok(port) = port.parse::<u16>() {
                listeners.insert((proto, port));
            }
        }
    }
    listeners
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn csv_names_and_tags() {
        let mut inv = Inventory::new();
        inv.load("inv.csv", "cidr,name,tags\n10.0.1.0/24,web,tier=web,listen=443/tcp 80/tcp\n10.0.1.7/32,web-admin\n")
            .unwrap();
        let Endpoint::Asset(web) = inv.resolve(ip("10.0.1.9"), None) else { panic!() };
        assert_eq!(inv.assets()[web as usize].id, "web");
        assert!(inv.listens(web, 6, 443));
        assert!(!inv.listens(web, 17, 443));
        let Endpoint::Asset(admin) = inv.resolve(ip("10.0.1.7"), None) else { panic!() };
        assert_eq!(inv.assets()[admin as usize].id, "web-admin");
        assert_eq!(inv.resolve(ip("10.0.2.1"), None), Endpoint::Address(ip("10.0.2.1")));
        assert_eq!(inv.resolve(ip("8.8.8.8"), None), Endpoint::Internet);
    }

    #[test]
    fn csv_errors_name_file_and_line() {
        let mut inv = Inventory::new();
        let err = inv.load("inv.csv", "10.0.0.0/8,ok\n10.0.0.1/8,bad\n").unwrap_err();
        assert_eq!(err.to_string(), "inv.csv:2: `10.0.0.1/8` is not a CIDR prefix: host bits are set");
        let err = inv.load("inv.csv", "10.0.0.0/8,ok,notatag\n").unwrap_err();
        assert!(err.to_string().contains("`notatag` is not `tag=value`"));
    }

    #[test]
    fn an_address_that_changed_hands_resolves_to_its_owner_at_the_time() {
        let t = |text: &str| crate::map::parse_rfc3339(text).unwrap();
        let mut inv = Inventory::new();
        inv.load(
            "inv.csv",
            "cidr,name,tags\n\
             10.0.3.5/32,old-db,tier=db,valid_until=2025-12-10T00:00:00Z\n\
             10.0.3.5/32,new-web,tier=web,valid_from=2025-12-10T00:00:00Z\n\
             10.0.3.6/32,steady,tier=api\n",
        )
        .unwrap();
        let name = |e: Endpoint| match e {
            Endpoint::Asset(a) => inv.assets()[a as usize].id.clone(),
            other => format!("{other:?}"),
        };
        let addr = ip("10.0.3.5");
        assert_eq!(name(inv.resolve_at(addr, None, Some(t("2025-12-09T23:59:59Z")))), "old-db");
        assert_eq!(name(inv.resolve_at(addr, None, Some(t("2025-12-10T00:00:00Z")))), "new-web");
        assert_eq!(name(inv.resolve(addr, None)), "new-web", "now: the present owner");
        assert!(inv.resolve_timed(addr, None, None).1 && !inv.resolve_timed(ip("10.0.3.6"), None, None).1);
        assert_eq!(name(inv.resolve_at(ip("10.0.3.6"), None, Some(0))), "steady");
        // The validity tags are not tags.
        assert!(!inv.assets().iter().any(|a| a.tags.contains_key("valid_from") || a.tags.contains_key("valid_until")));

        // Before anyone named in the inventory held it, an address belongs to no asset.
        let mut inv = Inventory::new();
        inv.load("inv.csv", "10.0.3.7/32,late,valid_from=2025-12-10T00:00:00Z\n").unwrap();
        assert_eq!(
            inv.resolve_at(ip("10.0.3.7"), None, Some(t("2025-12-01T00:00:00Z"))),
            Endpoint::Address(ip("10.0.3.7"))
        );

        let err = Inventory::new().load("inv.csv", "10.0.3.7/32,x,valid_from=yesterday\n").unwrap_err();
        assert_eq!(err.to_string(), "inv.csv:1: `valid_from=yesterday` is not a time like 2025-12-01T00:00:00Z");
        let err = Inventory::new()
            .load("inv.csv", "10.0.3.7/32,x,valid_from=2025-12-10T00:00:00Z,valid_until=2025-12-09T00:00:00Z\n")
            .unwrap_err();
        assert!(err.to_string().contains("`valid_until` is not after `valid_from`"), "{err}");
    }

    #[test]
    fn an_instance_owns_its_addresses_from_the_attachment_of_its_primary_interface() {
        let t = |text: &str| crate::map::parse_rfc3339(text).unwrap();
        let json = |attach: &str| {
            format!(
                r#"{{"Reservations":[{{"Instances":[{{"InstanceId":"i-new","PrivateIpAddress":"10.0.4.9",
                "NetworkInterfaces":[{{"NetworkInterfaceId":"eni-1","PrivateIpAddress":"10.0.4.9",
                "Attachment":{{"AttachTime":"{attach}","DeviceIndex":0}}}}]}}]}}]}}"#
            )
        };
        for attach in ["2025-12-10T08:00:00+00:00", "2025-12-10T08:00:00.000Z"] {
            let mut inv = Inventory::new();
            inv.load("instances.json", &json(attach)).unwrap();
            let addr = ip("10.0.4.9");
            assert_eq!(inv.resolve_at(addr, None, Some(t("2025-12-10T07:59:00Z"))), Endpoint::Address(addr));
            assert!(matches!(inv.resolve_at(addr, None, Some(t("2025-12-10T08:00:00Z"))), Endpoint::Asset(_)));
        }
        let err = Inventory::new().load("instances.json", &json("last tuesday")).unwrap_err();
        assert!(
            err.to_string().contains(
                "`Reservations[0].Instances[0].NetworkInterfaces[0].Attachment.AttachTime` is `last tuesday`"
            ),
            "{err}"
        );
    }

    #[test]
    fn ip_ranges_name_services_but_not_ec2() {
        let mut inv = Inventory::new();
        let json = r#"{"syncToken":"1","createDate":"2026-01-01-00-00-00","prefixes":[
            {"ip_prefix":"52.95.128.0/21","region":"ap-southeast-2","service":"AMAZON","network_border_group":"ap-southeast-2"},
            {"ip_prefix":"52.95.128.0/21","region":"ap-southeast-2","service":"S3","network_border_group":"ap-southeast-2"},
            {"ip_prefix":"3.0.0.0/15","region":"us-east-1","service":"EC2","network_border_group":"us-east-1"}],
            "ipv6_prefixes":[{"ipv6_prefix":"2600:1f00::/24","region":"GLOBAL","service":"CLOUDFRONT","network_border_group":"GLOBAL"}]}"#;
        inv.load("ip-ranges.json", json).unwrap();
        let s3 = inv.service_index("S3").unwrap();
        assert_eq!(inv.resolve(ip("52.95.128.179"), None), Endpoint::Service(s3));
        assert_eq!(inv.resolve(ip("3.0.0.1"), None), Endpoint::Internet);
        assert_eq!(inv.resolve(ip("3.0.0.1"), Some("EC2")), Endpoint::Internet);
        assert_eq!(inv.resolve(ip("8.8.8.8"), Some("S3")), Endpoint::Service(s3));
        assert!(matches!(inv.resolve(ip("2600:1f00::1"), None), Endpoint::Service(_)));
    }

    #[test]
    fn public_and_private() {
        for a in ["10.1.1.1", "172.16.0.1", "192.168.1.1", "100.64.0.1", "169.254.169.254", "fd00::1", "fe80::1"] {
            assert!(!is_public(ip(a)), "{a}");
        }
        for a in ["8.8.8.8", "203.0.113.5", "52.95.128.179", "2001:db8::1", "2600::1"] {
            assert!(is_public(ip(a)), "{a}");
        }
    }

    #[test]
    fn unknown_json_shape_is_refused() {
        let mut inv = Inventory::new();
        let err = inv.load("x.json", r#"{"Foo":[]}"#).unwrap_err();
        assert!(err.to_string().starts_with("x.json: expected the output of"));
        assert!(inv.load("x.json", "{ nope").unwrap_err().to_string().contains("invalid JSON"));
    }
}
