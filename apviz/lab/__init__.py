"""The virtual gateway: network namespaces, a real dnsmasq, a fake internet and simulated phones."""
