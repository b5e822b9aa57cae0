//! Money: `rust_decimal` at each currency's ISO 4217 minor-unit scale. Never a float.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest amount accepted in any one command or posting, in major units.
/// Sums of many such amounts stay far inside `Decimal`'s 96-bit range.
pub const AMOUNT_MAJOR_UNITS_MAX: i64 = 1_000_000_000_000;

/// Longest amount string accepted before parsing (sign, digits and point).
const AMOUNT_TEXT_LENGTH_MAX: usize = 32;

/// The currencies the ledger holds, with their ISO 4217 minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Currency {
    /// Euro, 2 decimals.
    Eur,
    /// US dollar, 2 decimals.
    Usd,
    /// Pound sterling, 2 decimals.
    Gbp,
    /// Swiss franc, 2 decimals.
    Chf,
    /// Yen, 0 decimals.
    Jpy,
    /// Swedish krona, 2 decimals.
    Sek,
    /// Norwegian krone, 2 decimals.
    Nok,
    /// Danish krone, 2 decimals.
    Dkk,
    /// Zloty, 2 decimals.
    Pln,
    /// Czech koruna, 2 decimals.
    Czk,
    /// Forint: ISO 4217 gives 2 decimals (the fillér), though cash rounds to whole forints.
    Huf,
    /// Australian dollar, 2 decimals.
    Aud,
    /// Canadian dollar, 2 decimals.
    Cad,
    /// Kuwaiti dinar, 3 decimals.
    Kwd,
}

impl Currency {
    /// Every supported currency.
    pub const ALL: [Currency; 14] = [
        Currency::Eur,
        Currency::Usd,
        Currency::Gbp,
        Currency::Chf,
        Currency::Jpy,
        Currency::Sek,
        Currency::Nok,
        Currency::Dkk,
        Currency::Pln,
        Currency::Czk,
        Currency::Huf,
        Currency::Aud,
        Currency::Cad,
        Currency::Kwd,
    ];

    /// The ISO 4217 alphabetic code.
    pub fn code(self) -> &'static str {
        match self {
            Currency::Eur => "EUR",
            Currency::Usd => "USD",
            Currency::Gbp => "GBP",
            Currency::Chf => "CHF",
            Currency::Jpy => "JPY",
            Currency::Sek => "SEK",
            Currency::Nok => "NOK",
            Currency::Dkk => "DKK",
            Currency::Pln => "PLN",
            Currency::Czk => "CZK",
            Currency::Huf => "HUF",
            Currency::Aud => "AUD",
            Currency::Cad => "CAD",
            Currency::Kwd => "KWD",
        }
    }

    /// The ISO 4217 minor units: how many decimals an amount has.
    pub fn minor_units(self) -> u32 {
        match self {
            Currency::Jpy => 0,
            Currency::Kwd => 3,
            Currency::Eur
            | Currency::Usd
            | Currency::Gbp
            | Currency::Chf
            | Currency::Sek
            | Currency::Nok
            | Currency::Dkk
            | Currency::Pln
            | Currency::Czk
            | Currency::Huf
            | Currency::Aud
            | Currency::Cad => 2,
        }
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, MoneyError> {
        Currency::ALL
            .into_iter()
            .find(|c| c.code() == s)
            .ok_or(MoneyError::UnknownCurrency)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why an amount is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The currency code is not one the ledger holds.
    #[error("unknown currency")]
    UnknownCurrency,
    /// The text is not a plain decimal number (digits, one optional point).
    #[error("amount must be a plain decimal string such as \"125.50\"")]
    Syntax,
    /// More decimals than the currency's minor units.
    #[error("amount has more decimals than the currency allows")]
    TooManyDecimals,
    /// Fewer decimals than the currency's minor units, where the exact form is required.
    #[error("amount must have exactly the currency's number of decimals")]
    NotCanonical,
    /// Zero or negative where a positive amount is required.
    #[error("amount must be greater than zero")]
    NotPositive,
    /// Above [`AMOUNT_MAJOR_UNITS_MAX`].
    #[error("amount is too large")]
    TooLarge,
    /// Arithmetic left the representable range.
    #[error("arithmetic overflow")]
    Overflow,
    /// Two amounts of different currencies were combined.
    #[error("currency mismatch")]
    CurrencyMismatch,
}

/// How strictly to read amount text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// From a client: fewer decimals are normalised ("125.5" -> "125.50").
    Lenient,
    /// From an event: exactly the currency's decimals.
    Exact,
}

/// Parses signed decimal text at the currency's scale. Refuses exponents, `+`, spaces,
/// leading zeros other than a lone `0`, and more decimals than the currency has.
fn parse_scaled(text: &str, currency: Currency, form: Form) -> Result<Decimal, MoneyError> {
    if text.is_empty() || text.len() > AMOUNT_TEXT_LENGTH_MAX {
        return Err(MoneyError::Syntax);
    }
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (unsigned, None),
    };
    let digits_only = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits_only(whole) || (whole.len() > 1 && whole.starts_with('0')) {
        return Err(MoneyError::Syntax);
    }
    let scale = currency.minor_units();
    let fraction_len = match fraction {
        None => 0,
        Some(f) if digits_only(f) => f.len(),
        Some(_) => return Err(MoneyError::Syntax),
    };
    if fraction_len > scale as usize {
        return Err(MoneyError::TooManyDecimals);
    }
    if form == Form::Exact && fraction_len != scale as usize {
        return Err(MoneyError::NotCanonical);
    }
    let mut value = Decimal::from_str(text).map_err(|_| MoneyError::Syntax)?;
    if value.abs() > Decimal::from(AMOUNT_MAJOR_UNITS_MAX) {
        return Err(MoneyError::TooLarge);
    }
    value.rescale(scale);
    Ok(value)
}

/// A positive amount in one currency, at that currency's scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    /// Reads a client's amount: "125.5" EUR becomes "125.50"; "125.505" EUR, "-1",
    /// "0", "1e3", "+1" and floats are refused.
    pub fn parse(text: &str, currency: Currency) -> Result<Self, MoneyError> {
        Self::positive(parse_scaled(text, currency, Form::Lenient)?, currency)
    }

    /// Reads an amount as events carry it: exactly the currency's decimals.
    pub fn parse_exact(text: &str, currency: Currency) -> Result<Self, MoneyError> {
        Self::positive(parse_scaled(text, currency, Form::Exact)?, currency)
    }

    fn positive(amount: Decimal, currency: Currency) -> Result<Self, MoneyError> {
        if amount <= Decimal::ZERO {
            return Err(MoneyError::NotPositive);
        }
        Ok(Self { amount, currency })
    }

    /// The amount (always positive, at the currency's scale).
    pub fn amount(&self) -> Decimal {
        self.amount
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The amount as events carry it, e.g. "125.50".
    pub fn to_text(&self) -> String {
        self.amount.to_string()
    }

    /// The negated amount, as a posting debit.
    pub fn debit(&self) -> SignedAmount {
        SignedAmount {
            amount: -self.amount,
            currency: self.currency,
        }
    }

    /// The amount as a posting credit.
    pub fn credit(&self) -> SignedAmount {
        SignedAmount {
            amount: self.amount,
            currency: self.currency,
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// A signed amount (a posting line or a balance), at the currency's scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignedAmount {
    amount: Decimal,
    currency: Currency,
}

impl SignedAmount {
    /// Zero in `currency`, at its scale.
    pub fn zero(currency: Currency) -> Self {
        let mut amount = Decimal::ZERO;
        amount.rescale(currency.minor_units());
        Self { amount, currency }
    }

    /// Reads a posting amount as events carry it ("-125.50"): exact scale, non-zero.
    pub fn parse_exact(text: &str, currency: Currency) -> Result<Self, MoneyError> {
        let amount = parse_scaled(text, currency, Form::Exact)?;
        if amount.is_zero() {
            return Err(MoneyError::NotPositive);
        }
        Ok(Self { amount, currency })
    }

    /// The signed value.
    pub fn amount(&self) -> Decimal {
        self.amount
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Whether the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.amount.is_sign_negative() && !self.amount.is_zero()
    }

    /// Checked addition; refuses other currencies and overflow.
    pub fn checked_add(&self, other: SignedAmount) -> Result<SignedAmount, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch);
        }
        let mut amount = self
            .amount
            .checked_add(other.amount)
            .ok_or(MoneyError::Overflow)?;
        amount.rescale(self.currency.minor_units());
        Ok(SignedAmount {
            amount,
            currency: self.currency,
        })
    }

    /// The text form, e.g. "-125.50" (a zero is "0.00").
    pub fn to_text(&self) -> String {
        let mut amount = self.amount;
        if amount.is_zero() {
            amount.set_sign_positive(true);
        }
        amount.to_string()
    }
}

impl fmt::Display for SignedAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_text(), self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, currency: &str, expected: Result<&str, MoneyError>) {
        let currency: Currency = currency.parse().expect("currency");
        let got = Money::parse(text, currency).map(|m| m.to_text());
        assert_eq!(got.as_deref(), expected.as_deref(), "{text} {currency}");
    }

    #[test]
    fn client_amounts_are_normalised_or_refused() {
        use MoneyError::*;
        check("125.50", "EUR", Ok("125.50"));
        check("125.5", "EUR", Ok("125.50"));
        check("125", "EUR", Ok("125.00"));
        check("125.505", "EUR", Err(TooManyDecimals));
        check("125.500", "EUR", Err(TooManyDecimals));
        check("0.01", "EUR", Ok("0.01"));
        check("0.00", "EUR", Err(NotPositive));
        check("0", "EUR", Err(NotPositive));
        check("-1.00", "EUR", Err(NotPositive));
        check("1200", "JPY", Ok("1200"));
        check("1200.5", "JPY", Err(TooManyDecimals));
        check("1200.0", "JPY", Err(TooManyDecimals));
        check("1200.", "JPY", Err(Syntax));
        check("12.34", "HUF", Ok("12.34"));
        check("12.345", "HUF", Err(TooManyDecimals));
        check("1.5", "KWD", Ok("1.500"));
        check("1e3", "EUR", Err(Syntax));
        check("+1", "EUR", Err(Syntax));
        check(" 1", "EUR", Err(Syntax));
        check("01", "EUR", Err(Syntax));
        check(".5", "EUR", Err(Syntax));
        check("1.2.3", "EUR", Err(Syntax));
        check("NaN", "EUR", Err(Syntax));
        check("", "EUR", Err(Syntax));
        check("1000000000000", "EUR", Ok("1000000000000.00"));
        check("1000000000000.01", "EUR", Err(TooLarge));
        check("99999999999999999999999999999999999", "EUR", Err(Syntax));
    }

    #[test]
    fn every_listed_currency_has_its_iso_scale() {
        for (code, scale) in [
            ("EUR", 2),
            ("USD", 2),
            ("GBP", 2),
            ("CHF", 2),
            ("JPY", 0),
            ("SEK", 2),
            ("NOK", 2),
            ("DKK", 2),
            ("PLN", 2),
            ("CZK", 2),
            ("HUF", 2),
            ("AUD", 2),
            ("CAD", 2),
            ("KWD", 3),
        ] {
            let currency: Currency = code.parse().expect(code);
            assert_eq!(currency.minor_units(), scale, "{code}");
            assert_eq!(currency.code(), code);
        }
        assert_eq!("eur".parse::<Currency>(), Err(MoneyError::UnknownCurrency));
        assert_eq!("XXX".parse::<Currency>(), Err(MoneyError::UnknownCurrency));
    }

    #[test]
    fn event_amounts_must_be_exact() {
        let eur = Currency::Eur;
        assert!(Money::parse_exact("125.50", eur).is_ok());
        assert_eq!(
            Money::parse_exact("125.5", eur),
            Err(MoneyError::NotCanonical)
        );
        assert_eq!(
            SignedAmount::parse_exact("-125.50", eur).map(|a| a.to_text()),
            Ok("-125.50".to_owned())
        );
        assert_eq!(
            SignedAmount::parse_exact("0.00", eur),
            Err(MoneyError::NotPositive)
        );
    }

    #[test]
    fn signed_arithmetic_is_checked() {
        let eur = Currency::Eur;
        let a = SignedAmount::parse_exact("-1.25", eur).expect("a");
        let b = SignedAmount::parse_exact("1.25", eur).expect("b");
        let sum = a.checked_add(b).expect("sum");
        assert_eq!(sum.to_text(), "0.00");
        assert!(!sum.is_negative());
        let usd = SignedAmount::parse_exact("1.00", Currency::Usd).expect("usd");
        assert_eq!(a.checked_add(usd), Err(MoneyError::CurrencyMismatch));
    }
}
