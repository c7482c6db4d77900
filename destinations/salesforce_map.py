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
