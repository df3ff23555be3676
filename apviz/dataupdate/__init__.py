"""``apviz data update``: fresh data for a gateway that has internet, never a broken file.

The installed data (``scripts/install-data.sh``) is pinned and ages. This package fetches the newest
upstream copies of the same data into a directory of its own (``[data] dir``, by default
``/var/lib/apviz/data``), one module per concern:

* :mod:`.sources`: what is fetched, from where, and into which file;
* :mod:`.fetch`: one conditional, size-limited, deadline-bound download into a temporary file;
* :mod:`.checks`: does the downloaded file hold what it should (an mmdb answers a known address,
  a list has enough rules, the PSL knows ``co.uk``)?
* :mod:`.state`: ETag / Last-Modified and the last result of each source, kept beside the data;
* :mod:`.update`: the run: lock, fetch, check, rename over, one line per source.

The running service watches those files (:mod:`apviz.enrich.mmdb`, :mod:`apviz.enrich.reload`) and
takes a renamed-over file into use within seconds; a systemd timer runs the update weekly.
"""

from apviz.dataupdate.sources import SOURCES, Source, configured_sources
from apviz.dataupdate.update import Outcome, run_update

__all__ = ["SOURCES", "Outcome", "Source", "configured_sources", "run_update"]
