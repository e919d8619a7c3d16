//! Canonical sales documents. A flow maps a source record into an [`Invoice`]; a connector encodes it for its
//! system. All arithmetic here is exact and in one currency; totals are checked before anything is written.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::{Currency, Money};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    #[error("line {line}: quantity must not be negative (got {value})")]
    NegativeQuantity { line: usize, value: Decimal },
    #[error("line {line}: discount must be between 0 and 100 percent (got {value})")]
    BadDiscount { line: usize, value: Decimal },
    #[error("an invoice needs at least one line")]
    NoLines,
    #[error("line {line}: needs an item")]
    MissingItem { line: usize },
    #[error("an invoice needs a customer")]
    MissingCustomer,
    #[error("lines total {lines} but the expected total is {expected}")]
    TotalMismatch { lines: Money, expected: Money },
}

/// One billable line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    /// The target system's item id (already resolved by the flow).
    pub item_id: String,
    pub item_name: Option<String>,
    pub description: Option<String>,
    pub quantity: Decimal,
    pub unit_price: Decimal,
    /// Percent discount on this line, 0–100.
    #[serde(default)]
    pub discount_percent: Decimal,
    pub service_date: Option<NaiveDate>,
}

impl InvoiceLine {
    /// quantity × unit price × (1 − discount / 100), rounded to the currency's minor units.
    pub fn amount(&self, currency: Currency) -> Money {
        let gross = self.quantity * self.unit_price;
        let net = gross - gross * self.discount_percent / Decimal::ONE_HUNDRED;
        Money::new(net, currency).rounded()
    }

    /// The price per unit after the line discount, exact (what a system that has no line discount field is sent).
    pub fn net_unit_price(&self) -> Decimal {
        self.unit_price - self.unit_price * self.discount_percent / Decimal::ONE_HUNDRED
    }
}

/// An invoice as ledgerlink understands it, independent of any system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    pub customer_id: String,
    pub customer_name: Option<String>,
    pub doc_number: Option<String>,
    pub txn_date: Option<NaiveDate>,
    pub due_date: Option<NaiveDate>,
    pub currency: Currency,
    pub lines: Vec<InvoiceLine>,
    pub memo: Option<String>,
    /// Free-form references (e.g. the source opportunity id) a connector may store in a custom or private field.
    #[serde(default)]
    pub source_reference: Option<String>,
}

impl Invoice {
    /// Checks what every system would reject later, so a bad mapping goes to review before any call is made.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.customer_id.trim().is_empty() {
            return Err(ModelError::MissingCustomer);
        }
        if self.lines.is_empty() {
            return Err(ModelError::NoLines);
        }
        for (i, line) in self.lines.iter().enumerate() {
            let n = i + 1;
            if line.item_id.trim().is_empty() {
                return Err(ModelError::MissingItem { line: n });
            }
            if line.quantity.is_sign_negative() {
                return Err(ModelError::NegativeQuantity { line: n, value: line.quantity });
            }
            if line.discount_percent.is_sign_negative() || line.discount_percent > Decimal::ONE_HUNDRED {
                return Err(ModelError::BadDiscount { line: n, value: line.discount_percent });
            }
        }
        Ok(())
    }

    /// Sum of the line amounts (each already rounded, as the systems total them).
    pub fn total(&self) -> Money {
        self.lines
            .iter()
            .fold(Money::zero(self.currency), |acc, l| Money::new(acc.amount + l.amount(self.currency).amount, self.currency))
    }

    /// Checks the lines add up to what the source said the document is worth.
    pub fn check_total(&self, expected: Money) -> Result<(), ModelError> {
        let lines = self.total();
        if lines != expected.rounded() {
            return Err(ModelError::TotalMismatch { lines, expected });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn line(q: &str, p: &str, disc: &str) -> InvoiceLine {
        InvoiceLine {
            item_id: "1".into(),
            item_name: None,
            description: None,
            quantity: d(q),
            unit_price: d(p),
            discount_percent: d(disc),
            service_date: None,
        }
    }

    #[test]
    fn line_amount_applies_discount_exactly() {
        assert_eq!(line("3", "19.99", "10").amount(Currency::USD).amount, d("53.97"));
        assert_eq!(line("1", "0.10", "0").amount(Currency::USD).amount, d("0.10"));
    }

    #[test]
    fn totals_are_exact_and_checked() {
        let inv = Invoice {
            customer_id: "5".into(),
            customer_name: None,
            doc_number: None,
            txn_date: None,
            due_date: None,
            currency: Currency::USD,
            lines: vec![line("10", "0.10", "0"), line("2", "1500", "15")],
            memo: None,
            source_reference: None,
        };
        inv.validate().unwrap();
        assert_eq!(inv.total().amount, d("2551.00"));
        assert!(inv.check_total(Money::new(d("2551"), Currency::USD)).is_ok());
        assert!(inv.check_total(Money::new(d("2550.99"), Currency::USD)).is_err());
    }

    #[test]
    fn validation_names_the_bad_line() {
        let mut inv = Invoice {
            customer_id: "5".into(),
            customer_name: None,
            doc_number: None,
            txn_date: None,
            due_date: None,
            currency: Currency::USD,
            lines: vec![line("1", "1", "0"), line("1", "1", "120")],
            memo: None,
            source_reference: None,
        };
        assert_eq!(inv.validate(), Err(ModelError::BadDiscount { line: 2, value: d("120") }));
        inv.lines.clear();
        assert_eq!(inv.validate(), Err(ModelError::NoLines));
    }
}
