"""Pure, cached lookups that add meaning to an address, a domain or a MAC."""
