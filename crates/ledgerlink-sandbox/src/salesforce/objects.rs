//! The org's schema: which sObjects exist, their key prefixes and fields.
//!
//! Layout: [`FieldType`] and [`FieldDef`] describe one field (type, required, who may write it, external id);
//! [`ObjectDef`] one sObject; [`builtin`] lists the standard objects the QuickBooks flows use, and custom fields
//! defined through the admin API are merged in by [`object_def`]. Everything else (describe, field-level
//! security) grows from these tables.

use serde::{Deserialize, Serialize};

/// A field's data type, as far as validation, SOQL comparison and ordering need to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    Id,
    /// A lookup to one of these objects.
    Reference(Vec<String>),
    Text,
    Picklist(Vec<String>),
    Boolean,
    Currency,
    Double,
    Percent,
    Int,
    Date,
    DateTime,
    Email,
    Phone,
    Url,
    TextArea,
}

impl FieldType {
    pub fn is_numeric(&self) -> bool {
        matches!(
            self,
            FieldType::Currency | FieldType::Double | FieldType::Percent | FieldType::Int
        )
    }

    pub fn is_textual(&self) -> bool {
        matches!(
            self,
            FieldType::Id
                | FieldType::Reference(_)
                | FieldType::Text
                | FieldType::Picklist(_)
                | FieldType::Email
                | FieldType::Phone
                | FieldType::Url
                | FieldType::TextArea
        )
    }

    /// The name describe and error messages use.
    pub fn name(&self) -> &'static str {
        match self {
            FieldType::Id => "id",
            FieldType::Reference(_) => "reference",
            FieldType::Text => "string",
            FieldType::Picklist(_) => "picklist",
            FieldType::Boolean => "boolean",
            FieldType::Currency => "currency",
            FieldType::Double => "double",
            FieldType::Percent => "percent",
            FieldType::Int => "int",
            FieldType::Date => "date",
            FieldType::DateTime => "datetime",
            FieldType::Email => "email",
            FieldType::Phone => "phone",
            FieldType::Url => "url",
            FieldType::TextArea => "textarea",
        }
    }
}

/// One field of an sObject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDef {
    pub name: String,
    pub ty: FieldType,
    /// Must be non-null on insert (and may not be cleared on update).
    pub required: bool,
    pub createable: bool,
    pub updateable: bool,
    pub external_id: bool,
    pub custom: bool,
}

impl FieldDef {
    fn new(name: &str, ty: FieldType) -> Self {
        FieldDef {
            name: name.to_string(),
            ty,
            required: false,
            createable: true,
            updateable: true,
            external_id: false,
            custom: false,
        }
    }

    fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// System-maintained or derived: nobody writes it through the API.
    fn read_only(mut self) -> Self {
        self.createable = false;
        self.updateable = false;
        self
    }

    /// Set on insert, fixed afterwards (e.g. a line item's opportunity).
    fn create_only(mut self) -> Self {
        self.updateable = false;
        self
    }

    /// The relationship name SOQL uses to walk this lookup (`AccountId` → `Account`, `Foo__c` → `Foo__r`).
    pub fn relationship_name(&self) -> Option<String> {
        if !matches!(self.ty, FieldType::Reference(_)) {
            return None;
        }
        if let Some(stem) = self.name.strip_suffix("__c") {
            Some(format!("{stem}__r"))
        } else {
            self.name.strip_suffix("Id").map(str::to_string)
        }
    }
}

/// The field a multi-currency org has on its records: the record's ISO currency code.
pub const MULTI_CURRENCY_FIELD: &str = "CurrencyIsoCode";

/// A custom field defined at run time (persisted with the org). `CurrencyIsoCode` may be defined the same way:
/// it stands for the org having multi-currency turned on (for that object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomField {
    pub object: String,
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default, rename = "externalId")]
    pub external_id: bool,
    #[serde(default)]
    pub required: bool,
}

impl CustomField {
    /// Checks the definition and returns the field it adds.
    pub fn to_field_def(&self) -> Result<FieldDef, String> {
        if builtin_def(&self.object).is_none() {
            return Err(format!(
                "object `{}` does not exist in this org",
                self.object
            ));
        }
        // Turning on multi-currency adds this standard picklist to the org's objects; the sandbox adds it per
        // object through the same call as a custom field.
        if self.name == MULTI_CURRENCY_FIELD {
            return Ok(FieldDef::new(MULTI_CURRENCY_FIELD, FieldType::Picklist(vec![])));
        }
        let stem = self
            .name
            .strip_suffix("__c")
            .ok_or_else(|| format!("custom field name `{}` must end in `__c`", self.name))?;
        if stem.is_empty()
            || !stem.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            || !stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || stem.contains("__")
            || stem.ends_with('_')
        {
            return Err(format!(
                "custom field name `{}` must start with a letter and use only letters, digits and single underscores before `__c`",
                self.name
            ));
        }
        let ty = match self.ty.to_ascii_lowercase().as_str() {
            "text" | "string" => FieldType::Text,
            "textarea" | "longtextarea" => FieldType::TextArea,
            "number" | "double" => FieldType::Double,
            "currency" => FieldType::Currency,
            "percent" => FieldType::Percent,
            "checkbox" | "boolean" => FieldType::Boolean,
            "date" => FieldType::Date,
            "datetime" => FieldType::DateTime,
            "email" => FieldType::Email,
            "phone" => FieldType::Phone,
            "url" => FieldType::Url,
            other => {
                return Err(format!(
                    "custom field type `{other}` is not supported (Text, TextArea, Number, Currency, Percent, Checkbox, Date, DateTime, Email, Phone, Url)"
                ));
            }
        };
        if self.external_id && !matches!(ty, FieldType::Text | FieldType::Double | FieldType::Email)
        {
            return Err(format!(
                "field `{}`: only Text, Number and Email fields can be external ids",
                self.name
            ));
        }
        let mut def = FieldDef::new(&self.name, ty);
        def.external_id = self.external_id;
        def.required = self.required;
        def.custom = true;
        Ok(def)
    }
}

/// One sObject type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDef {
    pub name: &'static str,
    /// The three-character key prefix of its ids.
    pub prefix: &'static str,
    pub createable: bool,
    pub fields: Vec<FieldDef>,
}

impl ObjectDef {
    /// Field lookup is case-insensitive, as in the API; the returned definition carries the canonical name.
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// Finds a lookup field by its relationship name (`Account` → `AccountId`).
    pub fn relationship(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| {
            f.relationship_name()
                .is_some_and(|r| r.eq_ignore_ascii_case(name))
        })
    }

    pub fn has_field(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.name == name)
    }
}

/// The opportunity stages in pipeline order, with default probability, closed and won flags.
pub const STAGES: &[(&str, u32, bool, bool)] = &[
    ("Prospecting", 10, false, false),
    ("Qualification", 10, false, false),
    ("Needs Analysis", 20, false, false),
    ("Value Proposition", 50, false, false),
    ("Proposal/Price Quote", 75, false, false),
    ("Negotiation/Review", 90, false, false),
    ("Closed Won", 100, true, true),
    ("Closed Lost", 0, true, false),
];

pub const OBJECT_NAMES: &[&str] = &[
    "Account",
    "Contact",
    "Opportunity",
    "OpportunityLineItem",
    "Product2",
    "Pricebook2",
    "PricebookEntry",
    "Task",
    "User",
];

/// Task statuses; `Completed` closes the task.
pub const TASK_STATUSES: &[&str] = &[
    "Not Started",
    "In Progress",
    "Completed",
    "Waiting on someone else",
    "Deferred",
];

/// Child relationships: (parent, child object, lookup field on the child, relationship name). These are what SOQL
/// subqueries (`(SELECT … FROM OpportunityLineItems)`) and describe's `childRelationships` know.
pub const CHILD_RELATIONSHIPS: &[(&str, &str, &str, &str)] = &[
    ("Account", "Contact", "AccountId", "Contacts"),
    ("Account", "Opportunity", "AccountId", "Opportunities"),
    ("Account", "Account", "ParentId", "ChildAccounts"),
    ("Account", "Task", "WhatId", "Tasks"),
    ("Contact", "Task", "WhoId", "Tasks"),
    (
        "Opportunity",
        "OpportunityLineItem",
        "OpportunityId",
        "OpportunityLineItems",
    ),
    ("Opportunity", "Task", "WhatId", "Tasks"),
    (
        "Product2",
        "PricebookEntry",
        "Product2Id",
        "PricebookEntries",
    ),
    (
        "Pricebook2",
        "PricebookEntry",
        "Pricebook2Id",
        "PricebookEntries",
    ),
    (
        "PricebookEntry",
        "OpportunityLineItem",
        "PricebookEntryId",
        "OpportunityLineItems",
    ),
];

/// The child relationships of a parent object: (child object, field, relationship name).
pub fn child_relationships(
    parent: &str,
) -> impl Iterator<Item = (&'static str, &'static str, &'static str)> + '_ {
    CHILD_RELATIONSHIPS
        .iter()
        .filter(move |(p, ..)| *p == parent)
        .map(|(_, c, f, r)| (*c, *f, *r))
}

/// An object's label and plural label, as describe shows them.
pub fn object_labels(name: &str) -> (&'static str, &'static str) {
    match name {
        "Account" => ("Account", "Accounts"),
        "Contact" => ("Contact", "Contacts"),
        "Opportunity" => ("Opportunity", "Opportunities"),
        "OpportunityLineItem" => ("Opportunity Product", "Opportunity Product"),
        "Product2" => ("Product", "Products"),
        "Pricebook2" => ("Price Book", "Price Books"),
        "PricebookEntry" => ("Price Book Entry", "Price Book Entries"),
        "Task" => ("Task", "Tasks"),
        _ => ("User", "Users"),
    }
}

/// A readable label from an API name: `BillingPostalCode` → `Billing Postal Code`, `AccountId` → `Account ID`,
/// `QuickBooks_Invoice_Id__c` → `QuickBooks Invoice Id`.
pub fn field_label(name: &str, is_reference: bool) -> String {
    if let Some(stem) = name.strip_suffix("__c") {
        return stem.replace('_', " ");
    }
    if name == "Id" {
        return "Record ID".into();
    }
    let stem = if is_reference {
        name.strip_suffix("Id").unwrap_or(name)
    } else {
        name
    };
    let mut out = String::new();
    let chars: Vec<char> = stem.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let boundary = i > 0
            && c.is_ascii_uppercase()
            && (chars[i - 1].is_ascii_lowercase()
                || chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase()));
        if boundary {
            out.push(' ');
        }
        out.push(*c);
    }
    if is_reference {
        format!("{out} ID")
    } else {
        out
    }
}

fn reference(target: &str) -> FieldType {
    FieldType::Reference(vec![target.to_string()])
}

fn system_fields(with_owner: bool) -> Vec<FieldDef> {
    let mut v = vec![
        FieldDef::new("Id", FieldType::Id).read_only(),
        FieldDef::new("IsDeleted", FieldType::Boolean).read_only(),
    ];
    if with_owner {
        v.push(FieldDef::new("OwnerId", reference("User")));
    }
    v.extend([
        FieldDef::new("CreatedDate", FieldType::DateTime).read_only(),
        FieldDef::new("CreatedById", reference("User")).read_only(),
        FieldDef::new("LastModifiedDate", FieldType::DateTime).read_only(),
        FieldDef::new("LastModifiedById", reference("User")).read_only(),
        FieldDef::new("SystemModstamp", FieldType::DateTime).read_only(),
    ]);
    v
}

fn address(prefix: &str) -> Vec<FieldDef> {
    ["Street", "City", "State", "PostalCode", "Country"]
        .iter()
        .map(|part| {
            FieldDef::new(
                &format!("{prefix}{part}"),
                if *part == "Street" {
                    FieldType::TextArea
                } else {
                    FieldType::Text
                },
            )
        })
        .collect()
}

/// The standard definition of an object (without custom fields), by exact or case-insensitive name.
pub fn builtin_def(name: &str) -> Option<ObjectDef> {
    let canonical = OBJECT_NAMES.iter().find(|n| n.eq_ignore_ascii_case(name))?;
    Some(builtin(canonical))
}

fn builtin(name: &'static str) -> ObjectDef {
    use FieldType as T;
    let (prefix, createable, mut fields) = match name {
        "Account" => {
            let mut f = system_fields(true);
            f.push(FieldDef::new("Name", T::Text).required());
            f.push(FieldDef::new("AccountNumber", T::Text));
            f.push(FieldDef::new("Type", T::Picklist(vec![])));
            f.push(FieldDef::new("Industry", T::Picklist(vec![])));
            f.push(FieldDef::new("ParentId", reference("Account")));
            f.extend(address("Billing"));
            f.extend(address("Shipping"));
            f.push(FieldDef::new("Phone", T::Phone));
            f.push(FieldDef::new("Fax", T::Phone));
            f.push(FieldDef::new("Website", T::Url));
            f.push(FieldDef::new("AnnualRevenue", T::Currency));
            f.push(FieldDef::new("NumberOfEmployees", T::Int));
            f.push(FieldDef::new("Description", T::TextArea));
            ("001", true, f)
        }
        "Contact" => {
            let mut f = system_fields(true);
            f.push(FieldDef::new("AccountId", reference("Account")));
            f.push(FieldDef::new("FirstName", T::Text));
            f.push(FieldDef::new("LastName", T::Text).required());
            f.push(FieldDef::new("Name", T::Text).read_only());
            f.push(FieldDef::new("Title", T::Text));
            f.push(FieldDef::new("Email", T::Email));
            f.push(FieldDef::new("Phone", T::Phone));
            f.push(FieldDef::new("MobilePhone", T::Phone));
            f.extend(address("Mailing"));
            f.push(FieldDef::new("Description", T::TextArea));
            ("003", true, f)
        }
        "Opportunity" => {
            let mut f = system_fields(true);
            f.push(FieldDef::new("AccountId", reference("Account")));
            f.push(FieldDef::new("Name", T::Text).required());
            f.push(
                FieldDef::new(
                    "StageName",
                    T::Picklist(STAGES.iter().map(|s| s.0.to_string()).collect()),
                )
                .required(),
            );
            f.push(FieldDef::new("CloseDate", T::Date).required());
            f.push(FieldDef::new("Amount", T::Currency));
            f.push(FieldDef::new("Probability", T::Percent));
            f.push(FieldDef::new("IsClosed", T::Boolean).read_only());
            f.push(FieldDef::new("IsWon", T::Boolean).read_only());
            f.push(FieldDef::new("Pricebook2Id", reference("Pricebook2")));
            f.push(FieldDef::new("HasOpportunityLineItem", T::Boolean).read_only());
            f.push(FieldDef::new("Type", T::Picklist(vec![])));
            f.push(FieldDef::new("LeadSource", T::Picklist(vec![])));
            f.push(FieldDef::new("NextStep", T::Text));
            f.push(FieldDef::new("Description", T::TextArea));
            ("006", true, f)
        }
        "OpportunityLineItem" => {
            let mut f = system_fields(false);
            f.push(
                FieldDef::new("OpportunityId", reference("Opportunity"))
                    .required()
                    .create_only(),
            );
            f.push(
                FieldDef::new("PricebookEntryId", reference("PricebookEntry"))
                    .required()
                    .create_only(),
            );
            f.push(FieldDef::new("Product2Id", reference("Product2")).create_only());
            f.push(FieldDef::new("Name", T::Text).read_only());
            f.push(FieldDef::new("ProductCode", T::Text).read_only());
            f.push(FieldDef::new("Quantity", T::Double).required());
            f.push(FieldDef::new("UnitPrice", T::Currency));
            f.push(FieldDef::new("ListPrice", T::Currency).read_only());
            f.push(FieldDef::new("Subtotal", T::Currency).read_only());
            f.push(FieldDef::new("Discount", T::Percent));
            f.push(FieldDef::new("TotalPrice", T::Currency));
            f.push(FieldDef::new("ServiceDate", T::Date));
            f.push(FieldDef::new("Description", T::Text));
            ("00k", true, f)
        }
        "Product2" => {
            let mut f = system_fields(false);
            f.push(FieldDef::new("Name", T::Text).required());
            f.push(FieldDef::new("ProductCode", T::Text));
            f.push(FieldDef::new("Family", T::Picklist(vec![])));
            f.push(FieldDef::new("IsActive", T::Boolean));
            f.push(FieldDef::new("Description", T::TextArea));
            ("01t", true, f)
        }
        "Pricebook2" => {
            let mut f = system_fields(false);
            f.push(FieldDef::new("Name", T::Text).required());
            f.push(FieldDef::new("IsActive", T::Boolean));
            f.push(FieldDef::new("IsStandard", T::Boolean).read_only());
            f.push(FieldDef::new("Description", T::TextArea));
            ("01s", true, f)
        }
        "PricebookEntry" => {
            let mut f = system_fields(false);
            f.push(
                FieldDef::new("Pricebook2Id", reference("Pricebook2"))
                    .required()
                    .create_only(),
            );
            f.push(
                FieldDef::new("Product2Id", reference("Product2"))
                    .required()
                    .create_only(),
            );
            f.push(FieldDef::new("Name", T::Text).read_only());
            f.push(FieldDef::new("ProductCode", T::Text).read_only());
            f.push(FieldDef::new("UnitPrice", T::Currency).required());
            f.push(FieldDef::new("IsActive", T::Boolean));
            f.push(FieldDef::new("UseStandardPrice", T::Boolean));
            ("01u", true, f)
        }
        "Task" => {
            let mut f = system_fields(true);
            f.push(FieldDef::new(
                "WhatId",
                T::Reference(vec!["Account".into(), "Opportunity".into()]),
            ));
            f.push(FieldDef::new("WhoId", reference("Contact")));
            f.push(FieldDef::new("Subject", T::Text));
            f.push(FieldDef::new("ActivityDate", T::Date));
            f.push(FieldDef::new(
                "Status",
                T::Picklist(TASK_STATUSES.iter().map(|s| s.to_string()).collect()),
            ));
            f.push(FieldDef::new(
                "Priority",
                T::Picklist(vec!["High".into(), "Normal".into(), "Low".into()]),
            ));
            f.push(FieldDef::new("IsClosed", T::Boolean).read_only());
            f.push(FieldDef::new("Description", T::TextArea));
            ("00T", true, f)
        }
        _ => {
            let mut f = system_fields(false);
            f.push(FieldDef::new("Username", T::Text).read_only());
            f.push(FieldDef::new("FirstName", T::Text).read_only());
            f.push(FieldDef::new("LastName", T::Text).read_only());
            f.push(FieldDef::new("Name", T::Text).read_only());
            f.push(FieldDef::new("Alias", T::Text).read_only());
            f.push(FieldDef::new("Email", T::Email).read_only());
            f.push(FieldDef::new("IsActive", T::Boolean).read_only());
            f.push(FieldDef::new("TimeZoneSidKey", T::Text).read_only());
            ("005", false, f)
        }
    };
    fields.shrink_to_fit();
    ObjectDef {
        name,
        prefix,
        createable,
        fields,
    }
}

/// The full definition of an object: standard fields plus the org's custom fields.
pub fn object_def(name: &str, custom: &[CustomField]) -> Option<ObjectDef> {
    let mut def = builtin_def(name)?;
    for c in custom.iter().filter(|c| c.object == def.name) {
        if let Ok(f) = c.to_field_def() {
            def.fields.push(f);
        }
    }
    Some(def)
}

/// The object a record id belongs to, from its key prefix.
pub fn object_for_prefix(id: &str) -> Option<&'static str> {
    let prefix = id.get(..3)?;
    OBJECT_NAMES
        .iter()
        .copied()
        .find(|n| builtin(n).prefix == prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relationship_names_follow_the_lookup_fields() {
        let opp = builtin_def("opportunity").unwrap();
        assert_eq!(opp.name, "Opportunity");
        assert_eq!(opp.relationship("account").unwrap().name, "AccountId");
        assert_eq!(opp.relationship("Owner").unwrap().name, "OwnerId");
        assert!(opp.relationship("Name").is_none());
        assert_eq!(
            object_for_prefix("00kXX0000000001AAA"),
            Some("OpportunityLineItem")
        );
        assert_eq!(object_for_prefix("zzz"), None);
    }

    #[test]
    fn custom_field_definitions_are_checked() {
        let ok = CustomField {
            object: "Account".into(),
            name: "QB_Id__c".into(),
            ty: "Text".into(),
            external_id: true,
            required: false,
        };
        assert!(ok.to_field_def().unwrap().external_id);
        let bad_name = CustomField {
            name: "QB Id".into(),
            ..ok.clone()
        };
        assert!(bad_name.to_field_def().unwrap_err().contains("__c"));
        let bad_obj = CustomField {
            object: "Nope".into(),
            ..ok.clone()
        };
        assert!(bad_obj.to_field_def().unwrap_err().contains("Nope"));
        let bad_ext = CustomField {
            ty: "Checkbox".into(),
            ..ok
        };
        assert!(bad_ext.to_field_def().unwrap_err().contains("external"));
    }
}
