//! Reconciliation: two lists of amounts that should agree (deals won and invoices made), compared by key.
//!
//! Layout: [`Entry`] is one element of a side, already evaluated (key, label, exact amount, currency);
//! [`compare`] pairs the two sides by key and names every [`Finding`]; [`Reconciliation::text`] writes the
//! report as a person reads it and [`Reconciliation::body`] the same as JSON for the store and the API. Amounts
//! are `Decimal` with their currency end to end; nothing is a float, and amounts in different currencies are
//! never added together (totals are per currency).

use std::collections::BTreeMap;

use ledgerlink_model::{Currency, Money};
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// One element of a side.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub label: String,
    pub amount: Money,
}

/// What the comparison found wrong.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// On the left only (a deal without an invoice).
    OnlyLeft(Entry),
    /// On the right only (an invoice without a deal).
    OnlyRight(Entry),
    /// Both sides have the key, with different amounts or currencies.
    Differs { left: Entry, right: Entry },
    /// One side has the key more than once (two invoices for one deal); `which` is `left` or `right`.
    Duplicate { which: &'static str, entries: Vec<Entry> },
}

/// The result of one comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconciliation {
    pub left_name: String,
    pub right_name: String,
    pub left_count: usize,
    pub right_count: usize,
    pub matched: usize,
    /// Totals per currency, per side.
    pub left_totals: BTreeMap<Currency, Decimal>,
    pub right_totals: BTreeMap<Currency, Decimal>,
    pub findings: Vec<Finding>,
}

/// Pairs `left` and `right` by key. Findings come in a stable order: duplicates, then by key.
pub fn compare(left_name: &str, left: Vec<Entry>, right_name: &str, right: Vec<Entry>) -> Reconciliation {
    let totals = |side: &[Entry]| {
        let mut t: BTreeMap<Currency, Decimal> = BTreeMap::new();
        for e in side {
            *t.entry(e.amount.currency).or_default() += e.amount.amount;
        }
        t
    };
    let group = |side: Vec<Entry>| {
        let mut g: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for e in side {
            g.entry(e.key.clone()).or_default().push(e);
        }
        g
    };
    let (left_count, right_count) = (left.len(), right.len());
    let (left_totals, right_totals) = (totals(&left), totals(&right));
    let (mut l, mut r) = (group(left), group(right));
    let mut findings = Vec::new();
    for (which, side) in [("left", &mut l), ("right", &mut r)] {
        for entries in side.values_mut() {
            if entries.len() > 1 {
                findings.push(Finding::Duplicate { which, entries: entries.clone() });
                // The first stands for the key in the pairing below.
                entries.truncate(1);
            }
        }
    }
    let mut keys: Vec<&String> = l.keys().chain(r.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut matched = 0;
    for key in keys {
        match (l.get(key).and_then(|v| v.first()), r.get(key).and_then(|v| v.first())) {
            (Some(a), Some(b)) if a.amount == b.amount => matched += 1,
            (Some(a), Some(b)) => findings.push(Finding::Differs { left: a.clone(), right: b.clone() }),
            (Some(a), None) => findings.push(Finding::OnlyLeft(a.clone())),
            (None, Some(b)) => findings.push(Finding::OnlyRight(b.clone())),
            (None, None) => {}
        }
    }
    Reconciliation {
        left_name: left_name.to_string(),
        right_name: right_name.to_string(),
        left_count,
        right_count,
        matched,
        left_totals,
        right_totals,
        findings,
    }
}

/// `1200.50`: the amount with at least the currency's minor units (never rounded: a finer amount keeps its digits).
pub fn amount_text(m: &Money) -> String {
    let mut amount = m.amount;
    if amount.scale() < m.currency.minor_units() {
        amount.rescale(m.currency.minor_units());
    }
    amount.to_string()
}

/// `1200.50 USD`: [`amount_text`], then the code.
pub fn money_text(m: &Money) -> String {
    format!("{} {}", amount_text(m), m.currency)
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

fn totals_text(t: &BTreeMap<Currency, Decimal>) -> String {
    if t.is_empty() {
        return "nothing".into();
    }
    t.iter().map(|(c, a)| money_text(&Money::new(*a, *c))).collect::<Vec<_>>().join(" + ")
}

fn entry_text(e: &Entry) -> String {
    if e.label == e.key { format!("{} — {}", e.label, money_text(&e.amount)) } else { format!("{} ({}) — {}", e.label, e.key, money_text(&e.amount)) }
}

impl Reconciliation {
    /// How many findings there are of each kind.
    pub fn counts(&self) -> Value {
        let count = |f: fn(&Finding) -> bool| self.findings.iter().filter(|x| f(x)).count();
        json!({
            "left": self.left_count,
            "right": self.right_count,
            "matched": self.matched,
            "mismatches": self.findings.len(),
            "only_left": count(|f| matches!(f, Finding::OnlyLeft(_))),
            "only_right": count(|f| matches!(f, Finding::OnlyRight(_))),
            "amount_differs": count(|f| matches!(f, Finding::Differs { .. })),
            "duplicates": count(|f| matches!(f, Finding::Duplicate { .. })),
        })
    }

    /// One line per finding, in words.
    pub fn finding_lines(&self) -> Vec<String> {
        let (l, r) = (&self.left_name, &self.right_name);
        self.findings
            .iter()
            .map(|f| match f {
                Finding::OnlyLeft(e) => format!("{l} without {r}: {}", entry_text(e)),
                Finding::OnlyRight(e) => format!("{r} without {l}: {}", entry_text(e)),
                Finding::Differs { left, right } => format!(
                    "different amounts for {}: {l} {} but {r} {} {} (difference {})",
                    if left.label == left.key { left.key.clone() } else { format!("{} ({})", left.label, left.key) },
                    money_text(&left.amount),
                    right.label,
                    money_text(&right.amount),
                    if left.amount.currency == right.amount.currency {
                        money_text(&Money::new(right.amount.amount - left.amount.amount, left.amount.currency))
                    } else {
                        "in different currencies".to_string()
                    }
                ),
                Finding::Duplicate { which, entries } => {
                    let noun = if *which == "left" { l } else { r };
                    format!(
                        "{} {noun}s share the key {}: {}",
                        entries.len(),
                        entries[0].key,
                        entries.iter().map(entry_text).collect::<Vec<_>>().join("; ")
                    )
                }
            })
            .collect()
    }

    /// The head of the report: counts and totals of both sides.
    fn head(&self) -> String {
        format!(
            "{}: {} totalling {}.\n{}: {} totalling {}.\n{} matched; {}.",
            capitalised(&format!("{}s", self.left_name)),
            self.left_count,
            totals_text(&self.left_totals),
            capitalised(&format!("{}s", self.right_name)),
            self.right_count,
            totals_text(&self.right_totals),
            self.matched,
            if self.findings.is_empty() { "no mismatches".to_string() } else { plural(self.findings.len(), "mismatch").replace("mismatchs", "mismatches") },
        )
    }

    /// The whole report in plain text.
    pub fn text(&self) -> String {
        let mut out = self.head();
        for line in self.finding_lines() {
            out.push_str("\n- ");
            out.push_str(&line);
        }
        out
    }

    /// The report cut to at most `max_chars` characters: whole finding lines only, then how many were left out
    /// and `more` (where to read the rest).
    pub fn summary(&self, max_chars: usize, more: &str) -> String {
        let lines = self.finding_lines();
        let mut out = self.head();
        for (i, line) in lines.iter().enumerate() {
            let left_out = lines.len() - i;
            let tail = format!("\n… and {left_out} more: {more}");
            if out.chars().count() + line.chars().count() + 3 + tail.chars().count() > max_chars {
                out.push_str(&tail);
                return out;
            }
            out.push_str("\n- ");
            out.push_str(line);
        }
        out
    }

    /// The report as JSON: counts, totals (decimal strings) and each finding with its amounts and currency.
    pub fn body(&self) -> Value {
        let entry = |e: &Entry| json!({"key": e.key, "label": e.label, "amount": amount_text(&e.amount), "currency": e.amount.currency.to_string()});
        let totals = |t: &BTreeMap<Currency, Decimal>| -> Value {
            t.iter().map(|(c, a)| (c.to_string(), json!(amount_text(&Money::new(*a, *c))))).collect::<serde_json::Map<_, _>>().into()
        };
        let lines = self.finding_lines();
        let findings: Vec<Value> = self
            .findings
            .iter()
            .zip(lines)
            .map(|(f, text)| match f {
                Finding::OnlyLeft(e) => json!({"kind": "only_left", "text": text, "left": entry(e)}),
                Finding::OnlyRight(e) => json!({"kind": "only_right", "text": text, "right": entry(e)}),
                Finding::Differs { left, right } => json!({"kind": "amount_differs", "text": text, "left": entry(left), "right": entry(right)}),
                Finding::Duplicate { which, entries } => json!({"kind": "duplicate", "side": which, "text": text, "entries": entries.iter().map(entry).collect::<Vec<_>>()}),
            })
            .collect();
        json!({
            "left": {"name": self.left_name, "count": self.left_count, "totals": totals(&self.left_totals)},
            "right": {"name": self.right_name, "count": self.right_count, "totals": totals(&self.right_totals)},
            "counts": self.counts(),
            "findings": findings,
        })
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(key: &str, amount: &str, currency: &str) -> Entry {
        Entry { key: key.into(), label: format!("L{key}"), amount: Money::new(amount.parse().unwrap(), Currency::parse(currency).unwrap()) }
    }

    #[test]
    fn every_kind_of_mismatch_is_named_and_equal_amounts_in_any_form_match() {
        let r = compare(
            "deal",
            vec![e("1", "100.5", "USD"), e("2", "200", "USD"), e("3", "300", "USD"), e("5", "50", "EUR")],
            "invoice",
            vec![e("1", "100.50", "USD"), e("2", "199.99", "USD"), e("4", "40", "USD"), e("4", "40", "USD"), e("5", "50", "USD")],
        );
        assert_eq!(r.matched, 1, "100.5 and 100.50 are the same amount");
        let lines = r.finding_lines();
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(lines[0].starts_with("2 invoices share the key 4"), "{}", lines[0]);
        assert_eq!(lines[1], "different amounts for L2 (2): deal 200.00 USD but invoice L2 199.99 USD (difference -0.01 USD)");
        assert_eq!(lines[2], "deal without invoice: L3 (3) — 300.00 USD");
        assert_eq!(lines[3], "invoice without deal: L4 (4) — 40.00 USD");
        assert!(lines[4].contains("50.00 EUR") && lines[4].contains("50.00 USD") && lines[4].contains("different currencies"), "{}", lines[4]);
        assert_eq!(r.counts()["only_left"], 1);
        assert_eq!(r.body()["right"]["totals"]["USD"], "430.49", "100.50 + 199.99 + 40 + 40 + 50");
        assert!(r.text().starts_with("Deals: 4 totalling 50.00 EUR + 600.50 USD."), "{}", r.text());
    }

    #[test]
    fn the_summary_keeps_whole_lines_and_says_how_many_are_left_out() {
        let left: Vec<Entry> = (0..100).map(|i| e(&format!("{i:03}"), "10", "USD")).collect();
        let r = compare("deal", left, "invoice", Vec::new());
        let s = r.summary(600, "ledgerlink reports show 7");
        assert!(s.chars().count() <= 600);
        assert!(s.ends_with("more: ledgerlink reports show 7"), "{s}");
        assert_eq!(r.summary(100_000, "x"), r.text(), "nothing cut when it fits");
    }
}
