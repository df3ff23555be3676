"""Attribution: answers are credited to the client that asked and to the name it asked for."""

from apviz.events import DnsAnswer, DnsAnswerKind, DnsQuery
from apviz.live.names import NameMemory, NameSource

R = DnsAnswerKind.REPLY


def q(serial, client, name, ts=100.0, qtype="A"):
    return DnsQuery(ts=ts, serial=serial, client=client, qtype=qtype, name=name)


def a(serial, client, name, address=None, ts=100.1, cname=False, kind=R):
    return DnsAnswer(ts=ts, serial=serial, client=client, kind=kind, name=name, address=address, cname=cname)


def test_same_address_two_clients_two_names():
    m = NameMemory()
    m.on_query(q(1, "10.0.0.2", "graph.facebook.com"))
    m.on_query(q(2, "10.0.0.3", "www.instagram.com"))
    m.on_answer(a(2, "10.0.0.3", "www.instagram.com", "198.18.1.1"))
    m.on_answer(a(1, "10.0.0.2", "graph.facebook.com", "198.18.1.1"))
    assert m.lookup("10.0.0.2", "198.18.1.1", 101).name == "graph.facebook.com"
    assert m.lookup("10.0.0.3", "198.18.1.1", 101).name == "www.instagram.com"
    # a third client never asked: it gets the most recent shared answer, marked as such
    hit = m.lookup("10.0.0.4", "198.18.1.1", 101)
    assert hit.source is NameSource.SHARED and hit.name == "graph.facebook.com"


def test_cname_chain_with_serial_credits_asked_name():
    m = NameMemory()
    m.on_query(q(7, "10.0.0.2", "www.netflix.com"))
    m.on_answer(a(7, "10.0.0.2", "www.netflix.com", cname=True))
    m.on_answer(a(7, "10.0.0.2", "www.geo.netflix.com", cname=True))
    b = m.on_answer(a(7, "10.0.0.2", "edge.nflxvideo.net", "198.18.2.2"))
    assert [x.name for x in b] == ["www.netflix.com"]
    assert m.lookup("10.0.0.2", "198.18.2.2", 101).name == "www.netflix.com"


def test_cname_chain_without_serial():
    m = NameMemory()
    m.on_query(q(None, "10.0.0.2", "www.apple.com"))
    m.on_answer(a(None, None, "www.apple.com", cname=True))
    m.on_answer(a(None, None, "www.apple.com.edgekey.net", cname=True))
    m.on_answer(a(None, None, "e6858.dscx.akamaiedge.net", "198.18.3.3"))
    m.on_answer(a(None, None, "e6858.dscx.akamaiedge.net", "198.18.3.4"))
    hit = m.lookup("10.0.0.2", "198.18.3.4", 101)
    assert hit.name == "www.apple.com" and hit.source is NameSource.ASKED


def test_merged_duplicate_query_credits_both_clients():
    m = NameMemory()
    m.on_query(q(1, "10.0.0.2", "icloud.com"))
    m.on_query(q(2, "10.0.0.3", "icloud.com"))
    m.on_answer(a(1, "10.0.0.2", "icloud.com", "198.18.4.4"))
    m.on_answer(a(1, "10.0.0.2", "icloud.com", "198.18.4.5"))
    for client in ("10.0.0.2", "10.0.0.3"):
        for addr in ("198.18.4.4", "198.18.4.5"):
            assert m.lookup(client, addr, 101).source is NameSource.ASKED


def test_hold_bounds_bindings_and_unknown_is_none():
    m = NameMemory(hold=60)
    m.on_query(q(1, "10.0.0.2", "x.example"))
    m.on_answer(a(1, "10.0.0.2", "x.example", "198.18.0.9"))
    assert m.lookup("10.0.0.2", "198.18.0.9", 150) is not None
    assert m.lookup("10.0.0.2", "198.18.0.9", 161) is None
    assert m.lookup("10.0.0.2", "198.18.0.10", 101) is None


def test_orphan_answers_are_counted_not_bound():
    m = NameMemory()
    assert m.on_answer(a(99, "10.0.0.2", "x.example", "198.18.0.9")) == []
    assert m.orphans == 1
    assert m.lookup("10.0.0.2", "198.18.0.9", 101) is None


def test_tables_are_bounded():
    m = NameMemory(max_clients=10, max_per_client=5, max_pending=20, max_addresses=50)
    for i in range(1000):
        client = f"10.0.{i % 30}.1"
        m.on_query(q(i, client, f"n{i}.example"))
        m.on_answer(a(i, client, f"n{i}.example", f"198.18.{i // 256}.{i % 256}"))
    s = m.stats()
    assert s["clients"] <= 10 and s["pending"] <= 20 and s["addresses"] <= 50
