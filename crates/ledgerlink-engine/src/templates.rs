//! The shipped flow templates, embedded in the binary.

/// (name, flow file text).
pub const TEMPLATES: &[(&str, &str)] = &[(
    "salesforce-closed-won-to-quickbooks-invoice",
    include_str!("../../../templates/salesforce-closed-won-to-quickbooks-invoice.toml"),
)];

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
