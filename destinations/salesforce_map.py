"""Salesforce's default mapping of Segment identify traits to Lead and Contact fields.

Segment's spec names the reserved traits in camelCase (`lastName`, `address.postalCode`);
the default mappings of Segment's Salesforce (Actions) destination read snake_case
(`traits.last_name`, `traits.address.postal_code`). Both are read; the paths are listed
snake_case first so that, when an event carries both, the camelCase value wins (a later
path overwrites an earlier one for the same field).
"""

from __future__ import annotations

PERSON = {"email": "Email", "first_name": "FirstName", "firstName": "FirstName",
          "last_name": "LastName", "lastName": "LastName", "phone": "Phone", "title": "Title"}
LEAD_FIELDS = {**PERSON, "company": "Company", "company.name": "Company", "website": "Website",
               "address.street": "Street", "address.city": "City", "address.state": "State",
               "address.postal_code": "PostalCode", "address.postalCode": "PostalCode",
               "address.country": "Country"}
CONTACT_FIELDS = {**PERSON, "address.street": "MailingStreet", "address.city": "MailingCity",
                  "address.state": "MailingState", "address.postal_code": "MailingPostalCode",
                  "address.postalCode": "MailingPostalCode", "address.country": "MailingCountry"}

# Group calls -> Account: the default mapping of the Account action of Segment's Salesforce
# (Actions) destination, whose paths are event paths (it reads `$.groupId` besides traits):
# name -> Name, groupId -> AccountNumber, employees -> NumberOfEmployees, address.* ->
# Billing*, phone, description, website. The spec's `address.postalCode` is read too and
# wins over the action's `address.postal_code`, as for Leads above.
ACCOUNT_FIELDS = {"traits.name": "Name", "groupId": "AccountNumber",
                  "traits.employees": "NumberOfEmployees",
                  "traits.address.street": "BillingStreet", "traits.address.city": "BillingCity",
                  "traits.address.state": "BillingState",
                  "traits.address.postal_code": "BillingPostalCode",
                  "traits.address.postalCode": "BillingPostalCode",
                  "traits.address.country": "BillingCountry", "traits.phone": "Phone",
                  "traits.description": "Description", "traits.website": "Website"}
