"""The survivor's side of contact: safe-contact preferences and the one gate every notice to
a survivor goes through (docs/safe-contact.md)."""
