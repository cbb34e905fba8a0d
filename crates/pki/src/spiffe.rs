//! SPIFFE IDs and trust domains, parsed by the rules of the SPIFFE-ID specification: what is
//! constructed here is valid, so code holding a [`SpiffeId`] never checks it again.

use std::fmt;

/// Why a string is not a SPIFFE ID or trust domain. One variant per rule, so each has a test.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// Nothing was given.
    #[error("the SPIFFE ID is empty")]
    Empty,
    /// The scheme is not `spiffe://`.
    #[error("the scheme must be `spiffe://`")]
    WrongScheme,
    /// `spiffe://` with nothing after it, or straight into the path.
    #[error("the trust domain is missing")]
    MissingTrustDomain,
    /// A character outside `a-z 0-9 . - _` in the trust domain (upper case included).
    #[error("the trust domain may hold only lowercase letters, digits, `.`, `-` and `_`")]
    BadTrustDomainChar,
    /// A character outside `a-z A-Z 0-9 . - _` in a path segment.
    #[error("path segments may hold only letters, digits, `.`, `-` and `_`")]
    BadPathChar,
    /// `//` in the path.
    #[error("the path has an empty segment")]
    EmptySegment,
    /// `.` or `..` as a segment.
    #[error("the path has a dot segment")]
    DotSegment,
    /// The path ends in `/`.
    #[error("the path has a trailing slash")]
    TrailingSlash,
    /// A workload or device identity needs a path (`spiffe://example.org` names the domain).
    #[error("the SPIFFE ID has no path; only a trust domain is named")]
    NoPath,
    /// Userinfo, port, query or fragment: not allowed in a SPIFFE ID.
    #[error("userinfo, port, query and fragment are not allowed")]
    ExtraUriPart,
    /// `%` escapes are not allowed.
    #[error("percent-encoding is not allowed")]
    PercentEncoded,
    /// Over 2048 bytes in all, or a trust domain over 255.
    #[error("too long (at most 2048 bytes, trust domain at most 255)")]
    TooLong,
    /// The ID belongs to another trust domain than the one that was expected.
    #[error("`{id}` is outside the trust domain `{expected}`")]
    OutsideTrustDomain {
        /// The ID given.
        id: String,
        /// The trust domain it had to be in.
        expected: String,
    },
}

/// A trust domain (`example.org`): the security boundary one CA speaks for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust domain name (`example.org`) or its SPIFFE ID (`spiffe://example.org`).
    pub fn parse(text: &str) -> Result<Self, SpiffeIdError> {
        let name = text.strip_prefix("spiffe://").unwrap_or(text);
        if name.is_empty() {
            return Err(SpiffeIdError::MissingTrustDomain);
        }
        check_trust_domain(name)?;
        Ok(Self(name.to_owned()))
    }

    /// The name (`example.org`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `spiffe://example.org`: the trust domain's own ID (used in CA certificates).
    pub fn id_uri(&self) -> String {
        format!("spiffe://{}", self.0)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SPIFFE ID with a path: `spiffe://example.org/device/laptop-42`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    uri: String,
    /// Byte offset where the path starts (just after the trust domain).
    path_start: usize,
}

const MAX_ID: usize = 2048;
const MAX_TRUST_DOMAIN: usize = 255;

impl SpiffeId {
    /// Parses and validates `text`.
    pub fn parse(text: &str) -> Result<Self, SpiffeIdError> {
        if text.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if text.len() > MAX_ID {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = text.strip_prefix("spiffe://").ok_or(SpiffeIdError::WrongScheme)?;
        if rest.contains(['?', '#', '@']) {
            return Err(SpiffeIdError::ExtraUriPart);
        }
        if rest.contains('%') {
            return Err(SpiffeIdError::PercentEncoded);
        }
        let (domain, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if domain.is_empty() {
            return Err(SpiffeIdError::MissingTrustDomain);
        }
        check_trust_domain(domain)?;
        if path.is_empty() {
            return Err(SpiffeIdError::NoPath);
        }
        check_path(path)?;
        Ok(Self { uri: text.to_owned(), path_start: "spiffe://".len() + domain.len() })
    }

    /// Parses `text` and checks that it belongs to `domain`.
    pub fn parse_in(text: &str, domain: &TrustDomain) -> Result<Self, SpiffeIdError> {
        let id = Self::parse(text)?;
        if id.trust_domain_str() != domain.as_str() {
            return Err(SpiffeIdError::OutsideTrustDomain { id: text.to_owned(), expected: domain.to_string() });
        }
        Ok(id)
    }

    /// The whole URI.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// The trust domain name.
    pub fn trust_domain_str(&self) -> &str {
        self.uri.get("spiffe://".len()..self.path_start).unwrap_or_default()
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_str().to_owned())
    }

    /// The path, starting with `/`.
    pub fn path(&self) -> &str {
        self.uri.get(self.path_start..).unwrap_or_default()
    }

    /// The kind of identity by zerogate's convention: the first path segment (`device`,
    /// `workload`, `user`, …).
    pub fn kind(&self) -> &str {
        self.path().trim_start_matches('/').split('/').next().unwrap_or_default()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

fn check_trust_domain(domain: &str) -> Result<(), SpiffeIdError> {
    if domain.len() > MAX_TRUST_DOMAIN {
        return Err(SpiffeIdError::TooLong);
    }
    if domain.contains(':') {
        return Err(SpiffeIdError::ExtraUriPart); // a port
    }
    if !domain.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')) {
        return Err(SpiffeIdError::BadTrustDomainChar);
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), SpiffeIdError> {
    // `path` starts with '/', so the first split piece is empty.
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() {
            return Err(if segments.peek().is_none() {
                SpiffeIdError::TrailingSlash
            } else {
                SpiffeIdError::EmptySegment
            });
        }
        if segment == "." || segment == ".." {
            return Err(SpiffeIdError::DotSegment);
        }
        if !segment.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) {
            return Err(SpiffeIdError::BadPathChar);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use SpiffeIdError as E;

    #[test]
    fn valid_ids() {
        let id = SpiffeId::parse("spiffe://example.org/device/laptop-42").unwrap();
        assert_eq!(id.trust_domain_str(), "example.org");
        assert_eq!(id.path(), "/device/laptop-42");
        assert_eq!(id.kind(), "device");
        for ok in ["spiffe://a/b", "spiffe://my_domain-1.example/Work.Load_x/-/9", "spiffe://1.2.3.4/x"] {
            assert!(SpiffeId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn one_test_per_rule() {
        let long = format!("spiffe://example.org/{}", "a".repeat(2040));
        let long_domain = format!("spiffe://{}/x", "a".repeat(256));
        let cases: &[(&str, E)] = &[
            ("", E::Empty),
            ("http://example.org/x", E::WrongScheme),
            ("SPIFFE://example.org/x", E::WrongScheme),
            ("example.org/x", E::WrongScheme),
            ("spiffe://", E::MissingTrustDomain),
            ("spiffe:///path", E::MissingTrustDomain),
            ("spiffe://Example.org/x", E::BadTrustDomainChar),
            ("spiffe://exa mple.org/x", E::BadTrustDomainChar),
            ("spiffe://example.org/a b", E::BadPathChar),
            ("spiffe://example.org/a/é", E::BadPathChar),
            ("spiffe://example.org/a\0b", E::BadPathChar),
            ("spiffe://example.org//a", E::EmptySegment),
            ("spiffe://example.org/a//b", E::EmptySegment),
            ("spiffe://example.org/a/./b", E::DotSegment),
            ("spiffe://example.org/..", E::DotSegment),
            ("spiffe://example.org/a/", E::TrailingSlash),
            ("spiffe://example.org/", E::TrailingSlash),
            ("spiffe://example.org", E::NoPath),
            ("spiffe://user@example.org/x", E::ExtraUriPart),
            ("spiffe://example.org:443/x", E::ExtraUriPart),
            ("spiffe://example.org/x?q=1", E::ExtraUriPart),
            ("spiffe://example.org/x#f", E::ExtraUriPart),
            ("spiffe://example.org/a%2Fb", E::PercentEncoded),
            ("spiffe://example.org/victim%00evil", E::PercentEncoded),
            (&long, E::TooLong),
            (&long_domain, E::TooLong),
        ];
        for (text, want) in cases {
            assert_eq!(SpiffeId::parse(text).unwrap_err(), *want, "{text:?}");
        }
    }

    #[test]
    fn trust_domain_membership() {
        let td = TrustDomain::parse("example.org").unwrap();
        assert!(SpiffeId::parse_in("spiffe://example.org/workload/api", &td).is_ok());
        let err = SpiffeId::parse_in("spiffe://example.org.evil/workload/api", &td).unwrap_err();
        assert!(matches!(err, E::OutsideTrustDomain { .. }), "{err:?}");
        assert_eq!(TrustDomain::parse("spiffe://example.org").unwrap(), td);
        assert_eq!(TrustDomain::parse("Example.org").unwrap_err(), E::BadTrustDomainChar);
        assert_eq!(TrustDomain::parse("").unwrap_err(), E::MissingTrustDomain);
    }
}
