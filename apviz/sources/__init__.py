"""Fact sources: each reads one thing (conntrack, dnsmasq's log, leases, neighbours) and yields
typed events from :mod:`apviz.events`. None of them knows what the live state does with them."""
