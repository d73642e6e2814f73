//! Who is calling and what they may do: SigV4 verification ([`sigv4`]) against the principals
//! of a credentials file ([`policy`]), and the [`Regions`] served. A handler only ever sees a
//! [`Caller`] that was verified.

pub mod policy;
pub mod sigv4;

use std::sync::Arc;

pub use policy::{Keys, Principal};

/// A request's verified identity: the principal whose key signed it, and the region it was
/// signed for. Only [`sigv4::verify`] makes one.
#[derive(Clone, Debug)]
pub struct Caller {
    pub principal: Arc<Principal>,
    pub region: String,
}

/// The regions a server answers for. Each region is a world of its own (ARNs carry it; nothing
/// crosses), so serving every region costs nothing until a region is used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Regions {
    /// Every well-formed region name, as an AWS partition's endpoints would.
    #[default]
    All,
    /// Only these.
    Only(Vec<String>),
}

impl Regions {
    /// Whether requests signed for `region` are served.
    pub fn serves(&self, region: &str) -> bool {
        is_region_name(region)
            && match self {
                Regions::All => true,
                Regions::Only(list) => list.iter().any(|r| r == region),
            }
    }

    /// What the server answers for, as a refusal names it.
    pub fn describe(&self) -> String {
        match self {
            Regions::All => "any region (such as us-east-1 or eu-west-1)".into(),
            Regions::Only(list) => list.join(", "),
        }
    }
}

/// Whether `name` is shaped like an AWS region: `us-east-1`, `us-gov-west-1`, `us-isob-east-1`.
pub fn is_region_name(name: &str) -> bool {
    // [a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d
    let mut parts = name.split('-');
    let lower = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase());
    if !parts.next().is_some_and(|country| country.len() == 2 && lower(country)) {
        return false;
    }
    let mut rest: Vec<&str> = parts.collect();
    if rest.len() == 3 {
        let partition = rest.remove(0);
        let iso = partition
            .strip_prefix("iso")
            .is_some_and(|tail| tail.bytes().all(|b| b.is_ascii_lowercase()));
        if partition != "gov" && !iso {
            return false;
        }
    }
    match rest.as_slice() {
        [area, number] => lower(area) && number.len() == 1 && number.bytes().all(|b| b.is_ascii_digit()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names_are_checked_for_shape() {
        for good in [
            "us-east-1",
            "eu-west-1",
            "ap-southeast-2",
            "us-gov-west-1",
            "us-iso-east-1",
            "us-isob-east-1",
        ] {
            assert!(is_region_name(good), "{good}");
        }
        for bad in [
            "",
            "us-east",
            "useast-1",
            "us-east-12",
            "US-EAST-1",
            "u-east-1",
            "us-foo-east-1",
            "us--1",
            "x",
        ] {
            assert!(!is_region_name(bad), "{bad}");
        }
    }

    #[test]
    fn every_region_or_only_some() {
        assert!(Regions::All.serves("eu-west-1"));
        assert!(!Regions::All.serves("moon-base-1"));
        let some = Regions::Only(vec!["us-east-1".into()]);
        assert!(some.serves("us-east-1"));
        assert!(!some.serves("eu-west-1"));
    }
}
