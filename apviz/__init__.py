"""apviz: shows, live, which companies and countries the devices on a Wi-Fi network talk to."""

__version__ = "0.1.0"
