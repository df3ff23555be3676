"""Decoders of a connection's first packets: TLS ClientHello, QUIC Initial, plain DNS answers.

Pure functions on bytes: no I/O, no clocks, no global state beyond a bounded key cache, and every
input is bounded (a hello over 16 KiB and a stream past its limit are refused, a CNAME chain is
followed for 16 links at most). Anything a visitor's device wrote is hostile: the decoders raise
only their documented ``ValueError`` subclasses, which the caller counts and skips, and every name
comes out through the rule of :mod:`apviz.sniff.names`, as plain ASCII text that cannot carry
markup or control codes.
"""
