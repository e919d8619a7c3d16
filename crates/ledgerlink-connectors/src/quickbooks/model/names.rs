//! Name-list entities: who and what transactions refer to. QuickBooks never deletes these; they are made
//! inactive. TaxCode and TaxRate are read-only through the API.

use rust_decimal::Decimal;

use super::common::{EmailAddress, PhysicalAddress, Ref, TelephoneNumber, WebAddress};
use super::{entity, money};

entity! {
    /// A customer (or a sub-customer/job when `ParentRef` is set). `DisplayName` is unique across customers,
    /// vendors and employees.
    Customer, removal = Deactivate;
    {
        display_name: String,
        given_name: String,
        middle_name: String,
        family_name: String,
        company_name: String,
        fully_qualified_name: String,
        print_on_check_name: String,
        primary_email_addr: EmailAddress,
        primary_phone: TelephoneNumber,
        web_addr: WebAddress,
        bill_addr: PhysicalAddress,
        ship_addr: PhysicalAddress,
        notes: String,
        active: bool,
        taxable: bool,
        parent_ref: Ref,
        sales_term_ref: Ref,
        currency_ref: Ref,
        #[serde(with = "money")]
        balance: Decimal,
    }
}

entity! {
    /// A vendor (supplier).
    Vendor, removal = Deactivate;
    {
        display_name: String,
        given_name: String,
        family_name: String,
        company_name: String,
        print_on_check_name: String,
        primary_email_addr: EmailAddress,
        primary_phone: TelephoneNumber,
        bill_addr: PhysicalAddress,
        acct_num: String,
        #[serde(rename = "Vendor1099")]
        vendor_1099: bool,
        active: bool,
        term_ref: Ref,
        currency_ref: Ref,
        #[serde(with = "money")]
        balance: Decimal,
    }
}

entity! {
    /// An employee (time activities and journal lines refer to them).
    Employee, removal = Deactivate;
    {
        display_name: String,
        given_name: String,
        family_name: String,
        primary_email_addr: EmailAddress,
        primary_phone: TelephoneNumber,
        primary_addr: PhysicalAddress,
        employee_number: String,
        active: bool,
        billable_time: bool,
        #[serde(with = "money")]
        bill_rate: Decimal,
    }
}

entity! {
    /// A product or service. `Type` is `Service`, `NonInventory`, `Inventory` or `Category`.
    Item, removal = Deactivate;
    {
        name: String,
        sku: String,
        description: String,
        #[serde(rename = "Type")]
        item_type: String,
        active: bool,
        taxable: bool,
        #[serde(with = "money")]
        unit_price: Decimal,
        #[serde(with = "money")]
        purchase_cost: Decimal,
        #[serde(with = "money")]
        qty_on_hand: Decimal,
        income_account_ref: Ref,
        expense_account_ref: Ref,
        asset_account_ref: Ref,
        parent_ref: Ref,
        fully_qualified_name: String,
    }
}

entity! {
    /// A ledger account. The name may not contain `:` or `"`.
    Account, removal = Deactivate;
    {
        name: String,
        acct_num: String,
        description: String,
        account_type: String,
        account_sub_type: String,
        classification: String,
        fully_qualified_name: String,
        active: bool,
        sub_account: bool,
        parent_ref: Ref,
        currency_ref: Ref,
        #[serde(with = "money")]
        current_balance: Decimal,
    }
}

entity! {
    /// Payment terms (`Net 30`).
    Term, removal = Deactivate;
    {
        name: String,
        active: bool,
        #[serde(rename = "Type")]
        term_type: String,
        due_days: i64,
        discount_days: i64,
        #[serde(with = "money")]
        discount_percent: Decimal,
    }
}

entity! {
    /// A sales tax code (read-only through the API).
    TaxCode, removal = None, cdc = false;
    {
        name: String,
        description: String,
        active: bool,
        taxable: bool,
        tax_group: bool,
    }
}

entity! {
    /// A sales tax rate (read-only through the API).
    TaxRate, removal = None, cdc = false;
    {
        name: String,
        description: String,
        active: bool,
        #[serde(with = "money")]
        rate_value: Decimal,
        agency_ref: Ref,
    }
}

entity! {
    /// A class (tracking category); sub-classes have `ParentRef`.
    Class, removal = Deactivate;
    {
        name: String,
        fully_qualified_name: String,
        active: bool,
        sub_class: bool,
        parent_ref: Ref,
    }
}

entity! {
    /// A department (location); sub-departments have `ParentRef`.
    Department, removal = Deactivate;
    {
        name: String,
        fully_qualified_name: String,
        active: bool,
        sub_department: bool,
        parent_ref: Ref,
    }
}
