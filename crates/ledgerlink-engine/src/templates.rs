//! The shipped flow templates, embedded in the binary.

/// (name, flow file text).
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "salesforce-closed-won-to-quickbooks-invoice",
        include_str!("../../../templates/salesforce-closed-won-to-quickbooks-invoice.toml"),
    ),
    (
        "salesforce-account-to-quickbooks-customer",
        include_str!("../../../templates/salesforce-account-to-quickbooks-customer.toml"),
    ),
    (
        "quickbooks-customer-to-salesforce-account",
        include_str!("../../../templates/quickbooks-customer-to-salesforce-account.toml"),
    ),
    (
        "quickbooks-invoice-status-to-salesforce",
        include_str!("../../../templates/quickbooks-invoice-status-to-salesforce.toml"),
    ),
    (
        "salesforce-products-to-quickbooks-items",
        include_str!("../../../templates/salesforce-products-to-quickbooks-items.toml"),
    ),
    (
        "quickbooks-estimate-to-salesforce-opportunity",
        include_str!("../../../templates/quickbooks-estimate-to-salesforce-opportunity.toml"),
    ),
    (
        "quickbooks-overdue-invoice-follow-up",
        include_str!("../../../templates/quickbooks-overdue-invoice-follow-up.toml"),
    ),
    (
        "salesforce-quickbooks-weekly-reconciliation",
        include_str!("../../../templates/salesforce-quickbooks-weekly-reconciliation.toml"),
    ),
];

pub fn get(name: &str) -> Option<&'static str> {
    TEMPLATES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

pub fn names() -> Vec<&'static str> {
    TEMPLATES.iter().map(|(n, _)| *n).collect()
}

/// Loads a template with parameters, or says which templates exist.
pub fn load(name: &str, params: &std::collections::BTreeMap<String, String>) -> anyhow::Result<ledgerlink_flow::Flow> {
    let text = get(name).ok_or_else(|| anyhow::anyhow!("no template named `{name}` (available: {})", names().join(", ")))?;
    ledgerlink_flow::parse_flow(text, &format!("templates/{name}.toml"), params).map_err(|e| anyhow::anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_template_loads_with_its_defaults_and_names_itself() {
        for name in names() {
            let flow = load(name, &std::collections::BTreeMap::new()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(flow.name, name, "a template's flow name is its file name");
            assert!(!flow.description.is_empty(), "{name} has a description");
        }
        assert!(load("no-such-template", &Default::default()).unwrap_err().to_string().contains("available"));
    }
}
