//! Record formats: the column order of a flow log, read from a header line, from an AWS
//! `LogFormat` string (`${version} ${srcaddr} …`), or the default version 2 format.

use crate::field::Field;

/// The default format of VPC flow logs: the version 2 fields in documentation order.
pub const DEFAULT_V2: &[Field] = &[
    Field::Version,
    Field::AccountId,
    Field::InterfaceId,
    Field::SrcAddr,
    Field::DstAddr,
    Field::SrcPort,
    Field::DstPort,
    Field::Protocol,
    Field::Packets,
    Field::Bytes,
    Field::Start,
    Field::End,
    Field::Action,
    Field::LogStatus,
];

/// Which kind of flow log a format describes; Transit Gateway logs are told apart by their fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogKind {
    /// A VPC, subnet or network-interface flow log.
    Vpc,
    /// A Transit Gateway or Transit Gateway attachment flow log.
    TransitGateway,
}

/// The columns of a flow log in order; a column AWS added after this build is `None` and ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFormat {
    columns: Vec<Option<Field>>,
    unknown: Vec<String>,
}

/// Why a header line or `LogFormat` string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The format names no field at all.
    #[error("the format names no field")]
    Empty,
    /// A field appears twice.
    #[error("field `{0}` appears twice")]
    Duplicate(String),
    /// A `LogFormat` token is not of the form `${name}`.
    #[error("`{0}` is not a `${{field}}` token")]
    BadToken(String),
    /// None of the columns is a field this build knows.
    #[error("no known flow-log field among `{0}`")]
    NothingKnown(String),
}

impl LogFormat {
    /// The default version 2 format.
    pub fn default_v2() -> Self {
        Self::from_fields(DEFAULT_V2)
    }

    /// A format made of known fields.
    pub fn from_fields(fields: &[Field]) -> Self {
        Self { columns: fields.iter().copied().map(Some).collect(), unknown: Vec::new() }
    }

    /// Parses the header line of an S3 text object: field names separated by spaces.
    pub fn from_header(line: &str) -> Result<Self, FormatError> {
        Self::from_names(line.split_ascii_whitespace(), line)
    }

    /// Parses an AWS `LogFormat` string such as `${version} ${srcaddr} ${dstaddr}`.
    pub fn from_log_format(spec: &str) -> Result<Self, FormatError> {
        let mut names = Vec::new();
        for token in spec.split_ascii_whitespace() {
            let name = token
                .strip_prefix("${")
                .and_then(|t| t.strip_suffix('}'))
                .filter(|n| !n.is_empty() && !n.contains(['$', '{', '}']))
                .ok_or_else(|| FormatError::BadToken(token.to_owned()))?;
            names.push(name);
        }
        Self::from_names(names.into_iter(), spec)
    }

    fn from_names<'a>(names: impl Iterator<Item = &'a str>, raw: &str) -> Result<Self, FormatError> {
        let mut columns = Vec::new();
        let mut unknown = Vec::new();
        for name in names {
            match Field::from_name(name) {
                Some(field) => {
                    if columns.contains(&Some(field)) {
                        return Err(FormatError::Duplicate(name.to_owned()));
                    }
                    columns.push(Some(field));
                }
                None => {
                    if unknown.iter().any(|u| u == name) {
                        return Err(FormatError::Duplicate(name.to_owned()));
                    }
                    unknown.push(name.to_owned());
                    columns.push(None);
                }
            }
        }
        if columns.is_empty() {
            return Err(FormatError::Empty);
        }
        if columns.iter().all(Option::is_none) {
            return Err(FormatError::NothingKnown(raw.chars().take(120).collect()));
        }
        Ok(Self { columns, unknown })
    }

    /// The columns in order.
    pub fn columns(&self) -> &[Option<Field>] {
        &self.columns
    }

    /// Column names this build does not know; they are skipped.
    pub fn unknown_fields(&self) -> &[String] {
        &self.unknown
    }

    /// Whether the format contains `field`.
    pub fn has(&self, field: Field) -> bool {
        self.columns.contains(&Some(field))
    }

    /// The highest version among the known fields, as AWS computes `version` for custom formats.
    pub fn version(&self) -> u8 {
        self.columns.iter().flatten().map(|f| f.version()).max().unwrap_or(2).max(2)
    }

    /// Whether this is a Transit Gateway flow log.
    pub fn kind(&self) -> LogKind {
        if self.columns.iter().flatten().any(|f| f.is_transit_gateway_only()) {
            LogKind::TransitGateway
        } else {
            LogKind::Vpc
        }
    }

    /// The format as AWS names it, in `LogFormat` syntax (unknown columns by their own names).
    pub fn to_log_format(&self) -> String {
        let mut unknown = self.unknown.iter();
        let names: Vec<String> = self
            .columns
            .iter()
            .map(|c| match c {
                Some(f) => format!("${{{}}}", f.name()),
                None => format!("${{{}}}", unknown.next().map_or("?", String::as_str)),
            })
            .collect();
        names.join(" ")
    }
}

/// Whether a first line is a header rather than a record: lowercase field-like tokens, at least
/// half of them known field names.
pub fn looks_like_header(line: &str) -> bool {
    let mut tokens = 0usize;
    let mut known = 0usize;
    for token in line.split_ascii_whitespace() {
        tokens += 1;
        let shaped = token.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
            && token.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !shaped {
            return false;
        }
        if Field::from_name(token).is_some() {
            known += 1;
        }
    }
    tokens > 0 && known * 2 >= tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_log_format_agree() {
        let header = LogFormat::from_header("version account-id srcaddr dstaddr").unwrap();
        let spec = LogFormat::from_log_format("${version} ${account-id} ${srcaddr} ${dstaddr}").unwrap();
        assert_eq!(header, spec);
        assert_eq!(spec.to_log_format(), "${version} ${account-id} ${srcaddr} ${dstaddr}");
    }

    #[test]
    fn unknown_fields_are_kept_out_of_the_way() {
        let f = LogFormat::from_header("version srcaddr future-field dstaddr").unwrap();
        assert_eq!(f.columns().len(), 4);
        assert_eq!(f.columns()[2], None);
        assert_eq!(f.unknown_fields(), ["future-field"]);
    }

    #[test]
    fn bad_formats_are_refused_with_a_reason() {
        assert_eq!(LogFormat::from_header(""), Err(FormatError::Empty));
        assert_eq!(LogFormat::from_header("srcaddr srcaddr"), Err(FormatError::Duplicate("srcaddr".into())));
        assert!(matches!(LogFormat::from_log_format("${version} srcaddr"), Err(FormatError::BadToken(_))));
        assert!(matches!(LogFormat::from_header("foo bar"), Err(FormatError::NothingKnown(_))));
    }

    #[test]
    fn version_and_kind() {
        assert_eq!(LogFormat::default_v2().version(), 2);
        assert_eq!(LogFormat::default_v2().kind(), LogKind::Vpc);
        let tgw = LogFormat::from_header("version resource-type tgw-id srcaddr dstaddr").unwrap();
        assert_eq!(tgw.kind(), LogKind::TransitGateway);
        assert_eq!(LogFormat::from_header("srcaddr reject-reason").unwrap().version(), 8);
    }

    #[test]
    fn header_detection() {
        assert!(looks_like_header("version account-id interface-id srcaddr"));
        assert!(looks_like_header("instance-id interface-id srcaddr dstaddr pkt-srcaddr pkt-dstaddr"));
        assert!(!looks_like_header("2 123456789010 eni-1235b8ca123456789 - - - - - - - 1 2 - NODATA"));
        assert!(!looks_like_header("- eni-1235b8ca123456789 10.0.1.5 10.0.0.220 10.0.1.5 203.0.113.5"));
    }
}
