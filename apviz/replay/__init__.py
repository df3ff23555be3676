"""Recordings of the public view: write them (``apviz record``, ``apviz serve --record``), read
them, and play them back (``apviz replay``, the kiosk's attract mode).

A recording holds only what the public screen already showed (the anonymised view and its
deltas), never a source event: no DNS name, hostname or address that the screen did not show can
reach the disk through it.
"""
