//! Request throttling as ECS does it: token buckets per account, region and operation family;
//! an empty bucket answers `ThrottlingException` (HTTP 400), which SDKs and agents retry.

use std::collections::HashMap;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::{ApiError, ErrorCode};

/// Operations are throttled by family, each with its own buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Describe* and List*.
    Read,
    /// Everything people and CI change.
    Write,
    /// What ECS agents call: registration and state reports.
    Agent,
}

impl Family {
    pub const ALL: [Family; 3] = [Family::Read, Family::Write, Family::Agent];

    pub fn name(self) -> &'static str {
        match self {
            Family::Read => "read",
            Family::Write => "write",
            Family::Agent => "agent",
        }
    }

    /// Requests per second refilled, and the bucket size.
    pub fn default_rate(self) -> Rate {
        match self {
            Family::Read => Rate {
                per_second: 100,
                burst: 200,
            },
            Family::Write => Rate {
                per_second: 40,
                burst: 100,
            },
            Family::Agent => Rate {
                per_second: 500,
                burst: 1000,
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl std::str::FromStr for Rate {
    type Err = String;

    /// `RATE/BURST`, e.g. `40/100`.
    fn from_str(s: &str) -> Result<Rate, String> {
        let (rate, burst) = s.split_once('/').ok_or("expected RATE/BURST, e.g. 40/100")?;
        let parse = |v: &str| v.trim().parse::<u32>().ok().filter(|v| *v > 0);
        match (parse(rate), parse(burst)) {
            (Some(per_second), Some(burst)) => Ok(Rate { per_second, burst }),
            _ => Err("RATE and BURST must be positive whole numbers".into()),
        }
    }
}

/// The buckets; `None` when throttling is off.
pub struct Throttle {
    limiters: Option<HashMap<Family, DefaultKeyedRateLimiter<(String, String)>>>,
}

impl Throttle {
    pub fn off() -> Throttle {
        Throttle { limiters: None }
    }

    /// Throttling with the default rates, replaced where `overrides` name a family.
    pub fn new(overrides: &[(Family, Rate)]) -> Throttle {
        let limiters = Family::ALL
            .iter()
            .map(|family| {
                let rate = overrides
                    .iter()
                    .rev()
                    .find(|(f, _)| f == family)
                    .map_or_else(|| family.default_rate(), |(_, r)| *r);
                let quota = Quota::per_second(NonZeroU32::new(rate.per_second).unwrap_or(NonZeroU32::MIN))
                    .allow_burst(NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN));
                (*family, RateLimiter::keyed(quota))
            })
            .collect();
        Throttle {
            limiters: Some(limiters),
        }
    }

    /// Takes a token from the bucket of (account, region, family), or says why not.
    pub fn check(&self, account: &str, region: &str, family: Family) -> Result<(), ApiError> {
        let Some(limiter) = self.limiters.as_ref().and_then(|l| l.get(&family)) else {
            return Ok(());
        };
        limiter
            .check_key(&(account.to_owned(), region.to_owned()))
            .map_err(|_| {
                metrics::counter!(crate::monitoring::THROTTLED, "family" => family.name()).increment(1);
                ApiError::new(ErrorCode::ThrottlingException, "Rate exceeded")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_per_account_region_and_family() {
        let throttle = Throttle::new(&[(
            Family::Write,
            Rate {
                per_second: 1,
                burst: 2,
            },
        )]);
        throttle.check("a", "r", Family::Write).unwrap();
        throttle.check("a", "r", Family::Write).unwrap();
        let err = throttle.check("a", "r", Family::Write).unwrap_err();
        assert_eq!(err.code, ErrorCode::ThrottlingException);
        throttle.check("b", "r", Family::Write).unwrap();
        throttle.check("a", "other", Family::Write).unwrap();
        throttle.check("a", "r", Family::Read).unwrap();
    }

    #[test]
    fn off_never_throttles() {
        let throttle = Throttle::off();
        for _ in 0..10_000 {
            throttle.check("a", "r", Family::Agent).unwrap();
        }
    }

    #[test]
    fn rates_parse() {
        assert_eq!(
            "40/100".parse::<Rate>().unwrap(),
            Rate {
                per_second: 40,
                burst: 100
            }
        );
        assert!("40".parse::<Rate>().is_err());
        assert!("0/1".parse::<Rate>().is_err());
    }
}
