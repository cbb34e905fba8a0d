//! The catalogue of flow-log fields: every field of VPC flow logs versions 2 to 8, the Transit
//! Gateway fields, and the newer fields that AWS documents without a version number.

use std::fmt;

macro_rules! fields {
    ($( $variant:ident = $name:literal, $version:literal; )*) => {
        /// One field of a flow-log format, as named in the AWS `LogFormat` syntax (`${name}`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[allow(missing_docs, reason = "each variant is the AWS field of the same name")]
        pub enum Field {
            $( $variant, )*
        }

        impl Field {
            /// Every known field, in the order of the AWS documentation.
            pub const ALL: &'static [Field] = &[ $( Field::$variant, )* ];

            /// The hyphenated name AWS uses in headers and `LogFormat` strings.
            pub const fn name(self) -> &'static str {
                match self { $( Field::$variant => $name, )* }
            }

            /// The flow-log version that introduced the field (0 where AWS gives none).
            pub const fn version(self) -> u8 {
                match self { $( Field::$variant => $version, )* }
            }
        }
    };
}

fields! {
    Version = "version", 2;
    AccountId = "account-id", 2;
    InterfaceId = "interface-id", 2;
    SrcAddr = "srcaddr", 2;
    DstAddr = "dstaddr", 2;
    SrcPort = "srcport", 2;
    DstPort = "dstport", 2;
    Protocol = "protocol", 2;
    Packets = "packets", 2;
    Bytes = "bytes", 2;
    Start = "start", 2;
    End = "end", 2;
    Action = "action", 2;
    LogStatus = "log-status", 2;
    VpcId = "vpc-id", 3;
    SubnetId = "subnet-id", 3;
    InstanceId = "instance-id", 3;
    TcpFlags = "tcp-flags", 3;
    Type = "type", 3;
    PktSrcAddr = "pkt-srcaddr", 3;
    PktDstAddr = "pkt-dstaddr", 3;
    Region = "region", 4;
    AzId = "az-id", 4;
    SublocationType = "sublocation-type", 4;
    SublocationId = "sublocation-id", 4;
    PktSrcAwsService = "pkt-src-aws-service", 5;
    PktDstAwsService = "pkt-dst-aws-service", 5;
    FlowDirection = "flow-direction", 5;
    TrafficPath = "traffic-path", 5;
    ResourceType = "resource-type", 6;
    TgwId = "tgw-id", 6;
    TgwAttachmentId = "tgw-attachment-id", 6;
    TgwSrcVpcAccountId = "tgw-src-vpc-account-id", 6;
    TgwDstVpcAccountId = "tgw-dst-vpc-account-id", 6;
    TgwSrcVpcId = "tgw-src-vpc-id", 6;
    TgwDstVpcId = "tgw-dst-vpc-id", 6;
    TgwSrcSubnetId = "tgw-src-subnet-id", 6;
    TgwDstSubnetId = "tgw-dst-subnet-id", 6;
    TgwSrcEni = "tgw-src-eni", 6;
    TgwDstEni = "tgw-dst-eni", 6;
    TgwSrcAzId = "tgw-src-az-id", 6;
    TgwDstAzId = "tgw-dst-az-id", 6;
    TgwPairAttachmentId = "tgw-pair-attachment-id", 6;
    PacketsLostNoRoute = "packets-lost-no-route", 6;
    PacketsLostBlackhole = "packets-lost-blackhole", 6;
    PacketsLostMtuExceeded = "packets-lost-mtu-exceeded", 6;
    PacketsLostTtlExpired = "packets-lost-ttl-expired", 6;
    EcsClusterArn = "ecs-cluster-arn", 7;
    EcsClusterName = "ecs-cluster-name", 7;
    EcsContainerInstanceArn = "ecs-container-instance-arn", 7;
    EcsContainerInstanceId = "ecs-container-instance-id", 7;
    EcsContainerId = "ecs-container-id", 7;
    EcsSecondContainerId = "ecs-second-container-id", 7;
    EcsServiceName = "ecs-service-name", 7;
    EcsTaskDefinitionArn = "ecs-task-definition-arn", 7;
    EcsTaskArn = "ecs-task-arn", 7;
    EcsTaskId = "ecs-task-id", 7;
    RejectReason = "reject-reason", 8;
    ResourceId = "resource-id", 0;
    EncryptionStatus = "encryption-status", 0;
}

impl Field {
    /// Looks a field up by its hyphenated name; Parquet's underscore spelling is accepted too.
    pub fn from_name(name: &str) -> Option<Field> {
        let hyphenated;
        let name = if name.contains('_') {
            hyphenated = name.replace('_', "-");
            hyphenated.as_str()
        } else {
            name
        };
        Field::ALL.iter().copied().find(|f| f.name() == name)
    }

    /// True for the fields that only Transit Gateway flow logs carry.
    pub const fn is_transit_gateway_only(self) -> bool {
        matches!(
            self,
            Field::ResourceType
                | Field::TgwId
                | Field::TgwAttachmentId
                | Field::TgwSrcVpcAccountId
                | Field::TgwDstVpcAccountId
                | Field::TgwSrcVpcId
                | Field::TgwDstVpcId
                | Field::TgwSrcSubnetId
                | Field::TgwDstSubnetId
                | Field::TgwSrcEni
                | Field::TgwDstEni
                | Field::TgwSrcAzId
                | Field::TgwDstAzId
                | Field::TgwPairAttachmentId
                | Field::PacketsLostNoRoute
                | Field::PacketsLostBlackhole
                | Field::PacketsLostMtuExceeded
                | Field::PacketsLostTtlExpired
        )
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for field in Field::ALL {
            assert_eq!(Field::from_name(field.name()), Some(*field));
        }
        let mut names: Vec<_> = Field::ALL.iter().map(|f| f.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Field::ALL.len());
    }

    #[test]
    fn parquet_spelling_is_accepted() {
        assert_eq!(Field::from_name("pkt_srcaddr"), Some(Field::PktSrcAddr));
        assert_eq!(Field::from_name("log_status"), Some(Field::LogStatus));
        assert_eq!(Field::from_name("no-such-field"), None);
    }
}
