"""The block decision without a kernel: which (device . address) elements are added and removed."""

from __future__ import annotations

from apviz.block.table import script
from apviz.live.blocking import BlockAction, BlockDecider, Op

PHONE, OTHER = "10.0.0.2", "10.0.0.3"
TRACKERS = {"stats.g.doubleclick.net", "googleads.g.doubleclick.net", "ads.example"}


def decider() -> tuple[BlockDecider, list[BlockAction]]:
    actions: list[BlockAction] = []
    return BlockDecider(TRACKERS.__contains__, actions.append, timeout=60), actions


def test_nothing_is_blocked_while_off() -> None:
    d, actions = decider()
    d.on_answer(PHONE, ["stats.g.doubleclick.net"], ["198.18.2.21"])
    assert actions == [] and d.collateral(PHONE) == {"naive": 0, "rule": 0}


def test_switching_on_blocks_what_was_already_resolved_and_off_flushes() -> None:
    d, actions = decider()
    d.on_answer(PHONE, ["stats.g.doubleclick.net"], ["198.18.2.21"])
    d.enable(PHONE)
    assert actions == [BlockAction(Op.ADD, PHONE, "198.18.2.21", 60)]
    d.disable(PHONE)
    assert actions[-1] == BlockAction(Op.FLUSH, PHONE)


def test_an_address_shared_with_a_non_tracker_stays_open_either_order() -> None:
    d, actions = decider()
    d.enable(PHONE)
    d.on_answer(PHONE, ["googleads.g.doubleclick.net"], ["198.18.2.10"])
    assert actions == [BlockAction(Op.ADD, PHONE, "198.18.2.10", 60)]
    d.on_answer(PHONE, ["www.google.com"], ["198.18.2.10"])  # the search page on the same address
    assert actions[-1] == BlockAction(Op.REMOVE, PHONE, "198.18.2.10")
    d.on_answer(PHONE, ["googleads.g.doubleclick.net"], ["198.18.2.10"])  # asked again: still open
    assert len(actions) == 2
    assert d.collateral(PHONE) == {"naive": 1, "rule": 0}


def test_per_device_and_the_operator_switch_for_everyone() -> None:
    d, actions = decider()
    d.enable(PHONE)
    d.on_answer(OTHER, ["ads.example"], ["198.18.9.9"])
    assert actions == []  # the other phone did not ask for blocking
    d.set_everyone(True)
    assert actions == [BlockAction(Op.ADD, OTHER, "198.18.9.9", 60)]
    d.set_everyone(False)
    assert actions[-1] == BlockAction(Op.FLUSH, OTHER)
    assert d.active(PHONE) and not d.active(OTHER)


def test_forget_removes_elements_and_counts() -> None:
    d, actions = decider()
    d.enable(PHONE)
    d.on_answer(PHONE, ["ads.example"], ["198.18.9.9"])
    d.on_blocked_attempt(PHONE, "198.18.9.9", 3)
    assert d.summary(PHONE) == {"on": True, "attempts": 3, "trackers": 1, "blocked_addresses": 1}
    d.forget(PHONE)
    assert actions[-1] == BlockAction(Op.FLUSH, PHONE)
    assert d.summary(PHONE) == {"on": False, "attempts": 0, "trackers": 0, "blocked_addresses": 0}


def test_bad_input_is_skipped_and_families_do_not_mix() -> None:
    d, actions = decider()
    d.enable(PHONE)
    d.on_answer("<script>", ["ads.example"], ["198.18.9.9"])
    d.on_answer(PHONE, ["ads.example"], ["not an address", "2001:db8::1", ""])
    d.on_answer("fe80::1%x } ; flush ruleset", ["ads.example"], ["fe80::2"])
    d.on_answer("fe80::1", ["ads.example"], ["fe80::2%x } ; flush ruleset"])
    assert actions == []
    # Nor does the table's text take an address that is not canonical, whoever made the action.
    hostile = BlockAction(Op.ADD, "fe80::1%x }; flush ruleset", "fe80::2", 60)
    assert script([hostile, BlockAction(Op.ADD, PHONE, "198.18.009.9", 60)], {}) == ""


def test_bounded_per_device() -> None:
    actions: list[BlockAction] = []
    d = BlockDecider(TRACKERS.__contains__, actions.append, max_addresses=2)
    d.enable(PHONE)
    for i in range(3):
        d.on_answer(PHONE, ["ads.example"], [f"198.18.9.{i}"])
    assert set(d.blocked[PHONE]) == {"198.18.9.1", "198.18.9.2"}
    assert BlockAction(Op.REMOVE, PHONE, "198.18.9.0") in actions


def test_nft_script_batches_and_flush_uses_what_is_present() -> None:
    present: dict[str, set[str]] = {}
    text = script(
        [BlockAction(Op.ADD, PHONE, "198.18.9.9", 30), BlockAction(Op.ADD, "fd00::2", "2001:db8::9", 30)],
        present,
    )
    assert "blocked4 { 10.0.0.2 . 198.18.9.9 timeout 30s }" in text
    assert "blocked6 { fd00::2 . 2001:db8::9 timeout 30s }" in text
    flush = script([BlockAction(Op.FLUSH, PHONE)], present)
    assert "delete element inet apviz_block blocked4 { 10.0.0.2 . 198.18.9.9 }" in flush
    assert PHONE not in present and script([BlockAction(Op.FLUSH, PHONE)], present) == ""


def test_an_answer_after_half_the_timeout_renews_the_element() -> None:
    now = [0.0]
    actions: list[BlockAction] = []
    d = BlockDecider(TRACKERS.__contains__, actions.append, timeout=60, clock=lambda: now[0])
    d.enable(PHONE)
    d.on_answer(PHONE, ["ads.example"], ["198.18.9.9"])
    now[0] = 20.0
    d.on_answer(PHONE, ["ads.example"], ["198.18.9.9"])
    assert len(actions) == 1  # still fresh
    now[0] = 40.0
    d.on_answer(PHONE, ["ads.example"], ["198.18.9.9"])
    assert actions == [BlockAction(Op.ADD, PHONE, "198.18.9.9", 60)] * 2
    present: dict[str, set[str]] = {}
    text = script(actions, present)
    assert text.count("timeout 60s") == 2 and text.count("delete element") == 1
