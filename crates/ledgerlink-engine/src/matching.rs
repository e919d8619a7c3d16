//! Comparing names of records that share no id: normalisation and similarity. Pure functions, no I/O.
//!
//! Normalising lowers case, turns punctuation into spaces, folds `&` into `and`, drops legal suffixes (Inc, LLC,
//! Ltd, GmbH, …) and a leading "The", and collapses whitespace, so "The Acme Co., Inc." and "ACME co" compare
//! equal. Similarity is Jaro-Winkler on normalised names: it rewards a shared beginning, which is how company
//! names usually differ ("Acme Plumbing" / "Acme Plumbing & Heating").

/// Legal-form words that do not tell two companies apart.
const LEGAL_SUFFIXES: &[&str] = &[
    "inc", "incorporated", "llc", "l l c", "ltd", "limited", "corp", "corporation", "co", "company", "gmbh", "ag",
    "sa", "sarl", "srl", "bv", "nv", "plc", "pty", "pte", "lp", "llp", "pc", "oy", "ab", "as", "kg", "ug", "spa",
];

/// A name reduced to what distinguishes it.
pub fn normalize_name(name: &str) -> String {
    let lowered: String = name
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| if c.is_alphanumeric() || c == '&' { c } else { ' ' })
        .collect();
    let mut words: Vec<&str> = lowered.split_whitespace().map(|w| if w == "&" { "and" } else { w }).collect();
    // Trailing legal forms, possibly several ("Acme Holdings Co. Ltd").
    while words.len() > 1 {
        let last = words.len() - 1;
        if LEGAL_SUFFIXES.contains(&words[last]) {
            words.pop();
        } else if last >= 2 && LEGAL_SUFFIXES.contains(&format!("{} {} {}", words[last - 2], words[last - 1], words[last]).as_str()) {
            words.truncate(last - 2);
        } else {
            break;
        }
    }
    if words.len() > 1 && words[0] == "the" {
        words.remove(0);
    }
    words.join(" ")
}

/// Jaro-Winkler similarity of the normalised names, 0.0–1.0.
pub fn similarity(a: &str, b: &str) -> f64 {
    strsim::jaro_winkler(&normalize_name(a), &normalize_name(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_ignores_case_punctuation_whitespace_and_legal_forms() {
        for (a, b) in [
            ("Acme Plumbing, Inc.", "ACME plumbing"),
            ("The Acme Co., Ltd", "acme"),
            ("Müller GmbH", "müller"),
            ("Smith & Sons LLC", "smith and sons"),
            ("  O'Brien   Logistics ", "o brien logistics"),
            ("Acme L.L.C.", "acme"),
        ] {
            assert_eq!(normalize_name(a), normalize_name(b), "{a} vs {b}");
        }
        assert_ne!(normalize_name("Acme Plumbing"), normalize_name("Acme Heating"));
        // A name that is only a legal form is kept, not emptied.
        assert_eq!(normalize_name("Inc"), "inc");
    }

    #[test]
    fn similarity_ranks_near_names_above_different_ones() {
        let near = similarity("Acme Plumbing", "Acme Plumbing & Heating");
        let typo = similarity("Northwind Traders", "Nortwind Traders");
        let far = similarity("Acme Plumbing", "Zenith Dental");
        assert!(typo > 0.95, "{typo}");
        assert!(near > 0.85, "{near}");
        assert!(far < 0.6, "{far}");
        assert_eq!(similarity("Acme, Inc.", "ACME"), 1.0);
    }
}
