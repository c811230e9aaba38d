"""Development tools, outside the product package: benchmarks and fault drills (``bench``), the
dependency audit's fallback (``dep_audit``) and the policy mutation check (``policy_mutation``).
Product code (``services``) never imports them; the ``accord`` CLI reaches them lazily."""
