# The customer portal (spec/portal.md) arrives with its own issue; it has no models yet.
