"""The single stateful core: devices, flows, and which name each flow belongs to."""
