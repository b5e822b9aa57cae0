//! Typed identifiers. Every id is validated on construction; fields are private.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string is empty or longer than the id's limit.
    #[error("{kind} must be 1 to {max} characters")]
    Length {
        /// Which id.
        kind: &'static str,
        /// The limit.
        max: usize,
    },
    /// The string does not have the id's prefix.
    #[error("{kind} must start with {prefix:?}")]
    Prefix {
        /// Which id.
        kind: &'static str,
        /// The prefix it needs.
        prefix: &'static str,
    },
    /// The string has a character outside the id's alphabet.
    #[error("{kind} may only contain {alphabet}")]
    Alphabet {
        /// Which id.
        kind: &'static str,
        /// What is allowed.
        alphabet: &'static str,
    },
}

/// Longest id body (after the prefix) accepted anywhere.
pub const ID_LENGTH_MAX: usize = 64;

/// The prefix of an auto-pay rule's principal, `rule:apr_…`.
pub const RULE_PRINCIPAL_PREFIX: &str = "rule:";

/// The operator's principal id (a service id no tenant can be given: services get random
/// ids).
pub const OPERATOR_PRINCIPAL: &str = "svc_operator";

fn is_body_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-'
}

fn check_prefixed(kind: &'static str, prefix: &'static str, s: &str) -> Result<(), IdError> {
    let body = s
        .strip_prefix(prefix)
        .ok_or(IdError::Prefix { kind, prefix })?;
    if body.is_empty() || body.len() > ID_LENGTH_MAX {
        return Err(IdError::Length {
            kind,
            max: ID_LENGTH_MAX + prefix.len(),
        });
    }
    if !body.bytes().all(is_body_char) {
        return Err(IdError::Alphabet {
            kind,
            alphabet: "a-z, 0-9, '_' and '-' after the prefix",
        });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $check:expr) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(smol_str::SmolStr);

        impl $name {
            /// Validates and wraps `s`.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                let check: fn(&str) -> Result<(), IdError> = $check;
                check(s)?;
                Ok(Self(smol_str::SmolStr::new(s)))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", $kind, self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A tenant slug: `[a-z0-9][a-z0-9-]{0,62}`.
    TenantId,
    "TenantId",
    |s| {
        let kind = "tenant id";
        if s.is_empty() || s.len() > 63 {
            return Err(IdError::Length { kind, max: 63 });
        }
        let bytes = s.as_bytes();
        let first_ok = bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit();
        let rest_ok = bytes[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
        if first_ok && rest_ok {
            Ok(())
        } else {
            Err(IdError::Alphabet {
                kind,
                alphabet: "a-z, 0-9 and '-' (not first)",
            })
        }
    }
);

string_id!(
    /// A principal: a user `usr_…` (a person) or a service `svc_…`.
    PrincipalId,
    "PrincipalId",
    |s| {
        if s.starts_with("svc_") {
            check_prefixed("principal id", "svc_", s)
        } else if let Some(rule) = s.strip_prefix(RULE_PRINCIPAL_PREFIX) {
            check_prefixed("principal id", "apr_", rule)
        } else {
            check_prefixed("principal id", "usr_", s)
        }
    }
);

impl PrincipalId {
    /// Whether the principal is a person or a service.
    pub fn kind(&self) -> PrincipalKind {
        if self.0.starts_with("svc_") {
            PrincipalKind::Service
        } else if self.0.starts_with(RULE_PRINCIPAL_PREFIX) {
            PrincipalKind::Rule
        } else {
            PrincipalKind::User
        }
    }

    /// The principal an auto-pay rule acts as: `rule:apr_…`, distinct from every person
    /// and service (DESIGN section 3).
    pub fn of_rule(rule: &AutopayRuleId) -> PrincipalId {
        PrincipalId(smol_str::format_smolstr!("{RULE_PRINCIPAL_PREFIX}{rule}"))
    }

    /// The rule this principal is, for `rule:apr_…`.
    pub fn rule(&self) -> Option<AutopayRuleId> {
        let rule = self.0.strip_prefix(RULE_PRINCIPAL_PREFIX)?;
        AutopayRuleId::parse(rule).ok()
    }

    /// The operator: the principal of `ledger-api tenant suspend|resume`, run on the
    /// server by whoever runs the service, not by any tenant's user.
    pub fn operator() -> PrincipalId {
        PrincipalId(smol_str::SmolStr::new_static(OPERATOR_PRINCIPAL))
    }
}

/// The two kinds of principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A person (`usr_…`): money movement needs a 2FA proof.
    User,
    /// A service (`svc_…`), e.g. the settlement system.
    Service,
    /// An auto-pay rule (`rule:apr_…`), the approver of the payouts it matches.
    Rule,
}

string_id!(
    /// A tenant account `acct_…`.
    AccountId,
    "AccountId",
    |s| check_prefixed("account id", "acct_", s)
);
string_id!(
    /// A payee `pay_…`.
    PayeeId,
    "PayeeId",
    |s| check_prefixed("payee id", "pay_", s)
);
string_id!(
    /// A payout `po_…`.
    PayoutId,
    "PayoutId",
    |s| check_prefixed("payout id", "po_", s)
);
string_id!(
    /// An auto-pay rule `apr_…`.
    AutopayRuleId,
    "AutopayRuleId",
    |s| check_prefixed("auto-pay rule id", "apr_", s)
);
string_id!(
    /// An API key id `key_…` (the public half of `<key_id>.<secret>`).
    ApiKeyId,
    "ApiKeyId",
    |s| check_prefixed("api key id", "key_", s)
);
string_id!(
    /// A signing key id such as `ckpt-2026-11` or `2fa-1`.
    KeyId,
    "KeyId",
    |s| {
        let kind = "key id";
        if s.is_empty() || s.len() > ID_LENGTH_MAX {
            return Err(IdError::Length {
                kind,
                max: ID_LENGTH_MAX,
            });
        }
        if s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        {
            Ok(())
        } else {
            Err(IdError::Alphabet {
                kind,
                alphabet: "A-Z, a-z, 0-9, '-', '_' and '.'",
            })
        }
    }
);

/// An event id: a UUID in its hyphenated lowercase form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(uuid::Uuid);

impl EventId {
    /// Wraps a UUID made by the shell (the core makes no randomness).
    pub fn from_uuid(id: uuid::Uuid) -> Self {
        Self(id)
    }

    /// Parses the hyphenated lowercase form, and only that form.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let invalid = IdError::Alphabet {
            kind: "event id",
            alphabet: "a hyphenated lowercase UUID",
        };
        let id = uuid::Uuid::try_parse(s).map_err(|_| invalid.clone())?;
        let mut buffer = uuid::Uuid::encode_buffer();
        if id.hyphenated().encode_lower(&mut buffer) != s {
            return Err(invalid);
        }
        Ok(Self(id))
    }

    /// The UUID.
    pub fn uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buffer = uuid::Uuid::encode_buffer();
        serializer.serialize_str(self.0.hyphenated().encode_lower(&mut buffer))
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: std::fmt::Debug>(parsed: Result<T, IdError>, ok: bool) {
        assert_eq!(parsed.is_ok(), ok, "{parsed:?}");
    }

    #[test]
    fn tenant_slugs() {
        check(TenantId::parse("acme"), true);
        check(TenantId::parse("0-a"), true);
        check(TenantId::parse(&"a".repeat(63)), true);
        check(TenantId::parse(&"a".repeat(64)), false);
        check(TenantId::parse(""), false);
        check(TenantId::parse("-acme"), false);
        check(TenantId::parse("Acme"), false);
        check(TenantId::parse("ac me"), false);
        check(TenantId::parse("acme_x"), false);
    }

    #[test]
    fn prefixed_ids() {
        check(PrincipalId::parse("usr_alice"), true);
        check(PrincipalId::parse("svc_settlement"), true);
        check(PrincipalId::parse("usr_"), false);
        check(PrincipalId::parse("adm_x"), false);
        check(PrincipalId::parse("usr_Alice"), false);
        check(PayoutId::parse("po_0"), true);
        check(PayoutId::parse("po_0:x"), false);
        check(AccountId::parse("acct_ops"), true);
        check(AccountId::parse("acct_ops:held"), false);
        check(PayeeId::parse("pay_lark"), true);
        check(KeyId::parse("ckpt-2026-11"), true);
        check(KeyId::parse("2fa 1"), false);
        assert_eq!(
            PrincipalId::parse("svc_x").map(|p| p.kind()),
            Ok(PrincipalKind::Service)
        );
    }

    #[test]
    fn event_ids_are_lowercase_hyphenated() {
        check(EventId::parse("ca02135e-92b1-43f2-8ede-0d7ac3baea9e"), true);
        check(
            EventId::parse("CA02135E-92B1-43F2-8EDE-0D7AC3BAEA9E"),
            false,
        );
        check(EventId::parse("ca02135e92b143f28ede0d7ac3baea9e"), false);
    }
}
