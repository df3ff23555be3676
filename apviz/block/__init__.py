"""Tracker blocking's kernel side: apviz's own nftables table and the element changes applied to it."""
