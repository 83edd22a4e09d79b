//! Addresses name one object of the configuration and of the state:
//! `machine.db`, `machine.web["a"]` (a `for_each` instance),
//! `machine.web[0]` (a `count` instance), `recovery_plan.shop`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The kinds of managed objects, in the order plans list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Vault,
    Site,
    Policy,
    Machine,
    Protection,
    RecoveryPlan,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Vault,
        Kind::Site,
        Kind::Policy,
        Kind::Machine,
        Kind::Protection,
        Kind::RecoveryPlan,
    ];

    /// The block type that declares this kind (`recovery_plan`).
    pub fn block_name(self) -> &'static str {
        match self {
            Kind::Vault => "vault",
            Kind::Site => "site",
            Kind::Policy => "policy",
            Kind::Machine => "machine",
            Kind::Protection => "protection",
            Kind::RecoveryPlan => "recovery_plan",
        }
    }

    pub fn from_block_name(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.block_name() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.block_name())
    }
}

/// The key of one instance of a repeated block, written as Terraform
/// writes it: `[0]` for `count`, `["a"]` for `for_each`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// A `count` instance: `count.index`. Sorts numerically, before names.
    Index(u64),
    /// A `for_each` instance: its key.
    Name(String),
}

impl Key {
    /// The key as `each.key` / a map key reads it: `0`, `a`.
    pub fn text(&self) -> String {
        match self {
            Key::Index(i) => i.to_string(),
            Key::Name(s) => s.clone(),
        }
    }
}

impl fmt::Display for Key {
    /// `[0]` or `["a"]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Index(i) => write!(f, "[{i}]"),
            Key::Name(s) => write!(f, "[{}]", quote(s)),
        }
    }
}

/// `KIND.NAME`, `KIND.NAME["KEY"]` for an instance made by `for_each`, or
/// `KIND.NAME[N]` for one made by `count`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    pub kind: Kind,
    pub name: String,
    pub key: Option<Key>,
}

impl Address {
    pub fn new(kind: Kind, name: impl Into<String>) -> Address {
        Address {
            kind,
            name: name.into(),
            key: None,
        }
    }

    /// A `for_each` instance: `KIND.NAME["KEY"]`.
    pub fn keyed(kind: Kind, name: impl Into<String>, key: impl Into<String>) -> Address {
        Address {
            kind,
            name: name.into(),
            key: Some(Key::Name(key.into())),
        }
    }

    /// A `count` instance: `KIND.NAME[N]`.
    pub fn indexed(kind: Kind, name: impl Into<String>, index: u64) -> Address {
        Address {
            kind,
            name: name.into(),
            key: Some(Key::Index(index)),
        }
    }

    /// `NAME`, `NAME["KEY"]` or `NAME[N]`, without the kind: used in file
    /// names and labels.
    pub fn instance_name(&self) -> String {
        match &self.key {
            None => self.name.clone(),
            Some(k) => format!("{}{k}", self.name),
        }
    }

    /// The spelling standby used for a `count` instance before it wrote
    /// Terraform's (`machine.web["0"]` for `machine.web[0]`), which state
    /// recorded then may still hold.
    pub fn old_count_spelling(&self) -> Option<Address> {
        match &self.key {
            Some(Key::Index(i)) => {
                Some(Address::keyed(self.kind, self.name.clone(), i.to_string()))
            }
            _ => None,
        }
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kind, self.instance_name())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{input:?} is not an address: {reason} (expected KIND.NAME, KIND.NAME[\"KEY\"] or KIND.NAME[N], e.g. machine.db)"
)]
pub struct ParseAddressError {
    pub input: String,
    pub reason: &'static str,
}

impl Address {
    /// `kind.name` (any kind), or a bare `name` taken as of `kind`
    /// (`db` -> `machine.db`), as commands accept them.
    pub fn parse_as(s: &str, kind: Kind) -> Result<Address, ParseAddressError> {
        if s.contains('.') {
            s.parse()
        } else {
            Ok(Address::new(kind, s))
        }
    }
}

impl FromStr for Address {
    type Err = ParseAddressError;

    fn from_str(s: &str) -> Result<Address, ParseAddressError> {
        let err = |reason| ParseAddressError {
            input: s.to_string(),
            reason,
        };
        let (kind, rest) = s
            .split_once('.')
            .ok_or_else(|| err("no '.' after the kind"))?;
        let kind = Kind::from_block_name(kind).ok_or_else(|| err("unknown kind"))?;
        let (name, key) = match rest.split_once('[') {
            None => (rest, None),
            Some((name, tail)) => {
                let inner = tail.strip_suffix(']').ok_or_else(|| err("missing ']'"))?;
                // `[0]`: a count index, digits only (as Terraform writes it).
                let key =
                    if !inner.is_empty()
                        && inner.bytes().all(|b| b.is_ascii_digit())
                        && (inner == "0" || !inner.starts_with('0'))
                    {
                        Key::Index(inner.parse().map_err(|_| err("the index is too large"))?)
                    } else {
                        Key::Name(serde_json::from_str(inner).map_err(|_| {
                            err("the key must be a quoted string or a whole number")
                        })?)
                    };
                (name, Some(key))
            }
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(err("the name must be letters, digits, '_' or '-'"));
        }
        Ok(Address {
            kind,
            name: name.to_string(),
            key,
        })
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Address, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_plain_and_keyed() {
        for s in [
            "machine.db",
            "recovery_plan.shop",
            "machine.web[\"a b\"]",
            "machine.web[0]",
            "machine.web[\"0\"]",
            "protection.web[12]",
        ] {
            let a: Address = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
        }
        let a: Address = "protection.web[\"x\"]".parse().unwrap();
        assert_eq!(a.key, Some(Key::Name("x".into())));
        let a: Address = "machine.web[3]".parse().unwrap();
        assert_eq!(a, Address::indexed(Kind::Machine, "web", 3));
        assert_eq!(
            a.old_count_spelling(),
            Some(Address::keyed(Kind::Machine, "web", "3"))
        );
        // Count instances sort by number, as Terraform lists them.
        assert!(
            Address::indexed(Kind::Machine, "web", 2) < Address::indexed(Kind::Machine, "web", 10)
        );
    }

    #[test]
    fn rejects_bad_addresses() {
        assert!("db".parse::<Address>().is_err());
        assert!("disk.db".parse::<Address>().is_err());
        assert!("machine.web[a]".parse::<Address>().is_err());
        assert!("machine.web[01]".parse::<Address>().is_err());
        assert!("machine.web[-1]".parse::<Address>().is_err());
        assert!("machine.".parse::<Address>().is_err());
    }
}
