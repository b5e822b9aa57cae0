//! Auto-pay rules (DESIGN section 3): a standing approval that passes the approval gate
//! only, for the payouts that match it, within a ceiling per payout and a total per UTC
//! day. Its terms never change; a new rule replaces it.

use std::collections::BTreeSet;

use rust_decimal::Decimal;

use crate::ids::{AccountId, PayeeId, PrincipalId};
use crate::money::Money;
use crate::time::Timestamp;

/// Most payees one rule may cover.
pub const RULE_PAYEES_MAX: usize = 100;

/// Where a rule stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleStatus {
    /// Proposed, waiting for a second admin.
    Proposed,
    /// Enabled by a second admin with 2FA: it approves what matches.
    Enabled,
    /// Disabled for good.
    Disabled,
}

impl RuleStatus {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            RuleStatus::Proposed => "proposed",
            RuleStatus::Enabled => "enabled",
            RuleStatus::Disabled => "disabled",
        }
    }
}

/// A rule's terms and what it approved today.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutopayRule {
    /// The one source account.
    pub account: AccountId,
    /// The payees it covers.
    pub payees: BTreeSet<PayeeId>,
    /// The ceiling per payout (its currency is the rule's).
    pub max_amount: Money,
    /// The most it approves per UTC day.
    pub daily_limit: Money,
    /// The admin who proposed it.
    pub proposer: PrincipalId,
    /// The admin who enabled it.
    pub enabler: Option<PrincipalId>,
    /// Where it stands.
    pub status: RuleStatus,
    /// The UTC day of its last approval (days since 1970-01-01).
    pub day: i64,
    /// What it approved on `day`.
    pub day_total: Decimal,
}

/// What a payout request offers a rule to match.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Source account.
    pub account: &'a AccountId,
    /// Payee.
    pub payee: &'a PayeeId,
    /// Amount.
    pub money: &'a Money,
    /// Who requested it.
    pub requester: &'a PrincipalId,
    /// When.
    pub at: Timestamp,
}

/// Why a rule does not approve a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoMatch {
    /// The rule is not enabled.
    #[error("the rule is not enabled")]
    NotEnabled,
    /// Another account, payee or currency.
    #[error("the payout is outside the rule's account, payees or currency")]
    Terms,
    /// Over the ceiling per payout.
    #[error("the amount is over the rule's ceiling")]
    Ceiling,
    /// It would take the day's total over the limit.
    #[error("the amount would take the rule's day over its limit")]
    DailyLimit,
    /// The requester proposed or enabled the rule.
    #[error("the requester proposed or enabled the rule")]
    OwnRule,
    /// A rule approves a payout only in the batch of its request, as its first approval.
    #[error("an auto-pay approval follows its payout's request in the same batch")]
    NotInRequestBatch,
}

impl NoMatch {
    /// The stable reason code (the verifier's break code).
    pub fn code(self) -> &'static str {
        match self {
            NoMatch::NotEnabled => "autopay_not_enabled",
            NoMatch::Terms => "autopay_terms",
            NoMatch::Ceiling => "autopay_ceiling",
            NoMatch::DailyLimit => "autopay_daily_limit",
            NoMatch::OwnRule => "autopay_own_rule",
            NoMatch::NotInRequestBatch => "autopay_batch",
        }
    }
}

impl AutopayRule {
    /// What the rule approved on the UTC day of `at`.
    pub fn used_on(&self, at: Timestamp) -> Decimal {
        if self.day == at.utc_day() {
            self.day_total
        } else {
            Decimal::ZERO
        }
    }

    /// Whether the rule approves `request`, and if not, why.
    pub fn approves(&self, request: &Request<'_>) -> Result<(), NoMatch> {
        if self.status != RuleStatus::Enabled {
            return Err(NoMatch::NotEnabled);
        }
        if request.account != &self.account
            || !self.payees.contains(request.payee)
            || request.money.currency() != self.max_amount.currency()
        {
            return Err(NoMatch::Terms);
        }
        if request.money.amount() > self.max_amount.amount() {
            return Err(NoMatch::Ceiling);
        }
        let total = self
            .used_on(request.at)
            .checked_add(request.money.amount())
            .ok_or(NoMatch::DailyLimit)?;
        if total > self.daily_limit.amount() {
            return Err(NoMatch::DailyLimit);
        }
        if request.requester == &self.proposer || self.enabler.as_ref() == Some(request.requester) {
            return Err(NoMatch::OwnRule);
        }
        Ok(())
    }

    /// Counts an approval of `money` at `at` into the day's total.
    pub fn count(&mut self, money: &Money, at: Timestamp) {
        let day = at.utc_day();
        if self.day != day {
            self.day = day;
            self.day_total = Decimal::ZERO;
        }
        self.day_total = match self.day_total.checked_add(money.amount()) {
            Some(total) => total,
            None => panic!("invariant: an auto-pay day total overflows"),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;

    fn id<T: std::str::FromStr>(s: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        s.parse().expect(s)
    }

    fn eur(text: &str) -> Money {
        Money::parse_exact(text, Currency::Eur).expect(text)
    }

    fn rule() -> AutopayRule {
        AutopayRule {
            account: id("acct_ops"),
            payees: [id("pay_lark")].into_iter().collect(),
            max_amount: eur("100.00"),
            daily_limit: eur("250.00"),
            proposer: id("usr_admin"),
            enabler: Some(id("usr_root")),
            status: RuleStatus::Enabled,
            day: i64::MIN,
            day_total: Decimal::ZERO,
        }
    }

    const DAY: i64 = 86_400_000_000;

    /// Each refusal of DESIGN section 3, then the day's limit counted by event time and
    /// reset at the next UTC midnight.
    #[test]
    fn a_rule_approves_only_what_it_covers_within_its_day() {
        let (account, other_account) = (id("acct_ops"), id("acct_other"));
        let (payee, other_payee) = (id("pay_lark"), id("pay_wren"));
        let (ann, admin, root) = (id("usr_ann"), id("usr_admin"), id("usr_root"));
        let at = Timestamp::from_unix_micros(20_000 * DAY + 1);
        let (fifty, hundred, over) = (eur("50.00"), eur("100.00"), eur("100.01"));
        let yen = Money::parse_exact("50", Currency::Jpy).expect("yen");
        let request = |account, payee, money, requester, at| Request {
            account,
            payee,
            money,
            requester,
            at,
        };
        let mut rule = rule();
        let ok = request(&account, &payee, &hundred, &ann, at);
        assert_eq!(rule.approves(&ok), Ok(()));
        for (refused, why) in [
            (request(&account, &payee, &over, &ann, at), NoMatch::Ceiling),
            (
                request(&other_account, &payee, &fifty, &ann, at),
                NoMatch::Terms,
            ),
            (
                request(&account, &other_payee, &fifty, &ann, at),
                NoMatch::Terms,
            ),
            (request(&account, &payee, &yen, &ann, at), NoMatch::Terms),
            (
                request(&account, &payee, &fifty, &admin, at),
                NoMatch::OwnRule,
            ),
            (
                request(&account, &payee, &fifty, &root, at),
                NoMatch::OwnRule,
            ),
        ] {
            assert_eq!(rule.approves(&refused), Err(why), "{refused:?}");
        }
        rule.count(&hundred, at);
        rule.count(&hundred, at);
        assert_eq!(rule.used_on(at), Decimal::new(20_000, 2));
        assert_eq!(rule.approves(&ok), Err(NoMatch::DailyLimit));
        let fits = request(&account, &payee, &fifty, &ann, at);
        assert_eq!(rule.approves(&fits), Ok(()));
        let tomorrow = Timestamp::from_unix_micros(20_001 * DAY);
        assert_eq!(rule.used_on(tomorrow), Decimal::ZERO);
        let next_day = request(&account, &payee, &hundred, &ann, tomorrow);
        assert_eq!(rule.approves(&next_day), Ok(()));
        rule.status = RuleStatus::Disabled;
        assert_eq!(rule.approves(&next_day), Err(NoMatch::NotEnabled));
    }
}
