//! The balances read model's rows as columns (`projection_balances`).

use ledger_core::ids::{AccountId, TenantId};
use projections::AccountBalance;

use crate::projection::columns::parse_as;
use crate::StoreError;

#[derive(sqlx::FromRow)]
pub(crate) struct BalanceColumns {
    pub(crate) account: String,
    pub(crate) currency: String,
    pub(crate) available: String,
    pub(crate) held: String,
    pub(crate) released: String,
    pub(crate) deposited: String,
}

impl BalanceColumns {
    pub(crate) fn into_row(
        self,
        tenant: &TenantId,
    ) -> Result<(AccountId, AccountBalance), StoreError> {
        Ok((
            parse_as(tenant, "account", &self.account)?,
            AccountBalance {
                currency: parse_as(tenant, "currency", &self.currency)?,
                available: parse_as(tenant, "available", &self.available)?,
                held: parse_as(tenant, "held", &self.held)?,
                released: parse_as(tenant, "released", &self.released)?,
                deposited: parse_as(tenant, "deposited", &self.deposited)?,
            },
        ))
    }
}

pub(crate) const BALANCE_UPDATE: &str = " ON CONFLICT (tenant_id, account) DO UPDATE SET \
     currency = excluded.currency, available = excluded.available, held = excluded.held, \
     released = excluded.released, deposited = excluded.deposited";

pub(crate) const BALANCE_INSERT: &str =
    "INSERT INTO projection_balances (tenant_id, account, currency, \
     available, held, released, deposited) ";
