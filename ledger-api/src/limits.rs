//! Rate limits: per API key and per client IP, tighter on the endpoints that check
//! secrets a person types: per client IP on invite redemption and TOTP confirmation, per
//! API key on the requests that carry a TOTP code (GCRA, from `governor`).

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Requests per second allowed.
#[derive(Debug, Clone, Copy)]
pub struct LimitConfig {
    /// Per API key, per second.
    pub per_key: u32,
    /// Per client IP, per second.
    pub per_ip: u32,
    /// Per minute: per client IP on invite redemption and TOTP confirmation, and per API
    /// key on a person's requests that carry a TOTP code.
    pub sensitive_per_minute: u32,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            per_key: 2_000,
            per_ip: 5_000,
            sensitive_per_minute: 20,
        }
    }
}

/// The limiters.
pub struct Limits {
    per_key: DefaultKeyedRateLimiter<String>,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    sensitive: DefaultKeyedRateLimiter<IpAddr>,
    sensitive_per_key: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").finish_non_exhaustive()
    }
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl Limits {
    /// Limiters for `config`.
    pub fn new(config: LimitConfig) -> Self {
        Self {
            per_key: RateLimiter::keyed(Quota::per_second(nonzero(config.per_key))),
            per_ip: RateLimiter::keyed(Quota::per_second(nonzero(config.per_ip))),
            sensitive: RateLimiter::keyed(Quota::per_minute(nonzero(config.sensitive_per_minute))),
            sensitive_per_key: RateLimiter::keyed(Quota::per_minute(nonzero(
                config.sensitive_per_minute,
            ))),
            clock: DefaultClock::default(),
        }
    }

    fn wait(&self, not_until: governor::NotUntil<governor::clock::QuantaInstant>) -> u64 {
        not_until.wait_time_from(self.clock.now()).as_secs() + 1
    }

    /// `Err(seconds)` when `ip` is over its limit.
    pub fn check_ip(&self, ip: IpAddr, sensitive: bool) -> Result<(), u64> {
        self.per_ip.check_key(&ip).map_err(|n| self.wait(n))?;
        if sensitive {
            self.sensitive.check_key(&ip).map_err(|n| self.wait(n))?;
        }
        Ok(())
    }

    /// `Err(seconds)` when the key is over its limit.
    pub fn check_key(&self, key_id: &str) -> Result<(), u64> {
        self.per_key
            .check_key(&key_id.to_owned())
            .map_err(|n| self.wait(n))
    }

    /// `Err(seconds)` when the key is over its limit of requests that carry a TOTP code
    /// (counted besides [`Limits::check_key`]).
    pub fn check_key_sensitive(&self, key_id: &str) -> Result<(), u64> {
        self.sensitive_per_key
            .check_key(&key_id.to_owned())
            .map_err(|n| self.wait(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_endpoints_are_limited_per_ip() {
        let limits = Limits::new(LimitConfig {
            per_key: 1000,
            per_ip: 1000,
            sensitive_per_minute: 3,
        });
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        for _ in 0..3 {
            assert!(limits.check_ip(ip, true).is_ok());
        }
        let wait = limits.check_ip(ip, true).expect_err("limited");
        assert!(wait >= 1);
        let other: IpAddr = "10.0.0.2".parse().expect("ip");
        assert!(limits.check_ip(other, true).is_ok(), "per IP");
        assert!(
            limits.check_ip(ip, false).is_ok(),
            "ordinary endpoints unaffected"
        );
    }

    #[test]
    fn requests_with_a_code_are_limited_per_key() {
        let limits = Limits::new(LimitConfig {
            per_key: 1000,
            per_ip: 1000,
            sensitive_per_minute: 2,
        });
        for _ in 0..2 {
            assert!(limits.check_key_sensitive("key_a").is_ok());
        }
        let wait = limits.check_key_sensitive("key_a").expect_err("limited");
        assert!(wait >= 1);
        assert!(limits.check_key_sensitive("key_b").is_ok(), "per key");
        assert!(
            limits.check_key("key_a").is_ok(),
            "the key's other requests are unaffected"
        );
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        assert!(
            limits.check_ip(ip, true).is_ok(),
            "apart from the per-IP limit"
        );
    }
}
