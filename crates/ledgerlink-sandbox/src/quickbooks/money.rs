//! Amounts on the wire.
//!
//! Layout: [`decimal_of`] reads a JSON number (or numeric string) exactly through its text, [`number`] writes a
//! [`Decimal`] as a JSON number, [`cents`] rounds like QBO (half away from zero). All arithmetic stays in
//! `rust_decimal`; a float only appears as the final JSON representation, which is what QBO itself emits
//! (`150.0`).

use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value;

/// The exact decimal written in a JSON number or numeric string; `None` for anything else.
pub fn decimal_of(value: &Value) -> Option<Decimal> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => return None,
    };
    Decimal::from_str(&text)
        .ok()
        .or_else(|| Decimal::from_scientific(&text).ok())
}

/// A decimal as a JSON number. The value goes through its decimal text, so the float chosen is the one nearest
/// to the exact amount and prints back as the same digits.
pub fn number(d: Decimal) -> Value {
    let text = d.normalize().to_string();
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .unwrap_or(Value::String(text))
}

/// Rounds to cents, half away from zero.
pub fn cents(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_numbers_exactly_and_writes_them_back() {
        let d = decimal_of(&json!(0.1)).unwrap();
        assert_eq!(d, Decimal::from_str("0.1").unwrap());
        assert_eq!(number(d).to_string(), "0.1");
        assert_eq!(number(Decimal::from(150)).to_string(), "150.0");
        assert_eq!(decimal_of(&json!("12.345")).unwrap().to_string(), "12.345");
        assert_eq!(decimal_of(&json!(true)), None);
    }

    #[test]
    fn rounds_half_away_from_zero() {
        assert_eq!(
            cents(Decimal::from_str("2.345").unwrap()).to_string(),
            "2.35"
        );
        assert_eq!(
            cents(Decimal::from_str("-2.345").unwrap()).to_string(),
            "-2.35"
        );
        assert_eq!(
            cents(Decimal::from_str("2.344").unwrap()).to_string(),
            "2.34"
        );
    }
}
