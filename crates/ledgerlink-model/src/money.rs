//! Exact money. Amounts are `rust_decimal::Decimal` and always travel with their currency, so two amounts in
//! different currencies can never be added by accident.

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// An ISO 4217 currency code: three upper-case ASCII letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    #[error("`{0}` is not an ISO 4217 currency code (three letters, such as USD)")]
    BadCurrency(String),
    #[error("cannot combine {0} with {1}: amounts in different currencies")]
    CurrencyMismatch(Currency, Currency),
    #[error("`{0}` is not a decimal amount")]
    BadAmount(String),
}

impl Currency {
    pub const USD: Currency = Currency(*b"USD");

    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let up = code.trim().to_ascii_uppercase();
        let bytes = up.as_bytes();
        if bytes.len() == 3 && bytes.iter().all(u8::is_ascii_uppercase) {
            Ok(Currency([bytes[0], bytes[1], bytes[2]]))
        } else {
            Err(MoneyError::BadCurrency(code.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        // Constructed only from ASCII upper-case letters.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }

    /// Minor units (decimal places) used when rounding amounts in this currency.
    pub fn minor_units(&self) -> u32 {
        match self.as_str() {
            "JPY" | "KRW" | "VND" | "CLP" | "ISK" => 0,
            "BHD" | "KWD" | "OMR" | "JOD" | "TND" => 3,
            _ => 2,
        }
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Currency::parse(&value)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_string()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An exact amount in one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount: Decimal, currency: Currency) -> Self {
        Money { amount, currency }
    }

    pub fn zero(currency: Currency) -> Self {
        Money { amount: Decimal::ZERO, currency }
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, other.currency));
        }
        Ok(Money::new(self.amount + other.amount, self.currency))
    }

    /// Rounded to the currency's minor units, half away from zero (what invoices print).
    pub fn rounded(self) -> Money {
        Money::new(
            self.amount
                .round_dp_with_strategy(self.currency.minor_units(), RoundingStrategy::MidpointAwayFromZero),
            self.currency,
        )
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

/// Parses a decimal amount from its text, accepting what JSON numbers and spreadsheets print ("1500", "1500.50",
/// "1.5e3"). Used at the boundary where a value arrives from an external system or an expression.
pub fn parse_decimal(text: &str) -> Result<Decimal, MoneyError> {
    let t = text.trim();
    Decimal::from_str(t)
        .or_else(|_| Decimal::from_scientific(t))
        .map_err(|_| MoneyError::BadAmount(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_parses_iso_codes_only() {
        assert_eq!(Currency::parse("usd").unwrap(), Currency::USD);
        assert!(Currency::parse("US").is_err());
        assert!(Currency::parse("U5D").is_err());
    }

    #[test]
    fn adding_different_currencies_is_refused() {
        let a = Money::new(Decimal::new(100, 0), Currency::USD);
        let b = Money::new(Decimal::new(100, 0), Currency::parse("EUR").unwrap());
        assert!(matches!(a.checked_add(b), Err(MoneyError::CurrencyMismatch(..))));
    }

    #[test]
    fn rounding_is_half_away_from_zero_in_minor_units() {
        let m = Money::new(Decimal::new(10005, 3), Currency::USD);
        assert_eq!(m.rounded().amount, Decimal::new(1001, 2));
        let yen = Money::new(Decimal::new(1005, 1), Currency::parse("JPY").unwrap());
        assert_eq!(yen.rounded().amount, Decimal::new(101, 0));
    }

    #[test]
    fn parse_decimal_accepts_json_number_text() {
        assert_eq!(parse_decimal("1500.50").unwrap(), Decimal::new(150050, 2));
        assert_eq!(parse_decimal("1.5e3").unwrap(), Decimal::new(1500, 0));
        assert!(parse_decimal("abc").is_err());
    }
}
