"""Pure, cached lookups that add meaning to an address, a domain or a MAC.

One module per concern (``geo``, ``asn``, ``domains``, ``companies``, ``ghostery``, ``trackers``,
``macvendor``, ``special``, ``labdb``), composed by :class:`Enricher`. Every lookup takes hostile
text, never raises, and keeps its answers in a bounded cache; a missing data file is a logged
warning and thinner answers, never a crash.
"""

from apviz.enrich._common import EnrichOptionError
from apviz.enrich.asn import AsnInfo, AsnLookup
from apviz.enrich.companies import CATEGORIES, CompanyInfo, CompanyMap
from apviz.enrich.domains import DomainInfo, DomainParser
from apviz.enrich.enricher import AddressInfo, EnrichConfig, Enricher, NameInfo
from apviz.enrich.geo import GeoInfo, GeoLookup
from apviz.enrich.ghostery import TrackerDb
from apviz.enrich.macvendor import MacInfo, MacVendorLookup
from apviz.enrich.special import SpecialInfo, SpecialRanges
from apviz.enrich.trackers import BlocklistSpec, TrackerClassifier, TrackerMatch

__all__ = [
    "CATEGORIES",
    "AddressInfo",
    "AsnInfo",
    "AsnLookup",
    "BlocklistSpec",
    "CompanyInfo",
    "CompanyMap",
    "DomainInfo",
    "DomainParser",
    "EnrichConfig",
    "EnrichOptionError",
    "Enricher",
    "GeoInfo",
    "GeoLookup",
    "MacInfo",
    "MacVendorLookup",
    "NameInfo",
    "SpecialInfo",
    "SpecialRanges",
    "TrackerClassifier",
    "TrackerDb",
    "TrackerMatch",
]
