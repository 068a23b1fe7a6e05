"""The mobile node's one-line diagnosis (mipnode/core/mn_diagnosis.py) and how `status` shows it."""

from __future__ import annotations

from typing import Any

import pytest

from mipnode.cli import print_status
from mipnode.core.mn_diagnosis import (
    AccessFacts,
    CheckFacts,
    rejection_text,
    unacknowledged_text,
    unreachable_text,
)

HA6, HA4 = "2001:db8:1::1", "203.0.113.2"
ACCESS = AccessFacts("eth0", "2001:db8:a::2", "10.0.4.2")


def native(**kw: Any) -> CheckFacts:
    return CheckFacts(
        **{
            "kind": "T-native",
            "family": 6,
            "address": HA6,
            "port": None,
            "state": "failed",
            "checks_sent": 3,
            "checks_answered": 0,
            **kw,
        }
    )


def udp6(**kw: Any) -> CheckFacts:
    return CheckFacts(
        **{
            "kind": "T-udp",
            "family": 6,
            "address": HA6,
            "port": 4191,
            "state": "failed",
            "checks_sent": 3,
            "checks_answered": 0,
            **kw,
        }
    )


def udp4(**kw: Any) -> CheckFacts:
    return CheckFacts(
        **{
            "kind": "T-udp",
            "family": 4,
            "address": HA4,
            "port": 4191,
            "state": "failed",
            "checks_sent": 3,
            "checks_answered": 0,
            **kw,
        }
    )


# -- public texts ------------------------------------------------------------------------------
def test_silence_on_every_candidate_names_each_one_and_the_likely_firewall() -> None:
    text = unreachable_text([native(), udp6(), udp4()], ACCESS)
    assert text == (
        "home agent unreachable: no answer from T-native 2001:db8:1::1 (protocol 41, 3 checks), "
        "T-udp [2001:db8:1::1]:4191 (3 checks), T-udp 203.0.113.2:4191 (3 checks); "
        "a firewall in front of the home agent or the mobile node may drop them (RFC 4487 §5.3)"
    )


def test_no_access_network() -> None:
    text = unreachable_text([], AccessFacts("eth0", None, None))
    assert text == (
        "home agent unreachable: no access network "
        "(no IPv6 care-of address and no IPv4 address on eth0)"
    )
    assert "on any interface" in unreachable_text([], AccessFacts(None, None, None))


def test_an_access_network_with_no_t_path_to_try_points_at_the_settings() -> None:
    text = unreachable_text([], AccessFacts("eth0", None, "10.0.4.2"))
    assert text.startswith("home agent unreachable: no T path to try from this access network")
    assert "IPv6 none, IPv4 10.0.4.2 on eth0" in text
    assert "home_agent_ipv4" in text


def test_a_native_answer_through_nat66_is_reported_as_unusable_not_as_silence() -> None:
    text = unreachable_text(
        [native(state="nat", checks_answered=3, mapped="2001:db8:f1::2"), udp6()], ACCESS
    )
    assert text == (
        "home agent unreachable: no answer from T-udp [2001:db8:1::1]:4191 (3 checks); "
        "T-native 2001:db8:1::1 answered only through an address translator, "
        "the home agent saw 2001:db8:f1::2: not used; "
        "a firewall in front of the home agent or the mobile node may drop them (RFC 4487 §5.3)"
    )


def test_answers_after_the_check_gave_up_are_not_called_silence() -> None:
    text = unreachable_text([udp6(checks_answered=1)], ACCESS)
    assert text == (
        "home agent unreachable: T-udp [2001:db8:1::1]:4191 answered only after its check gave "
        "up (1 of 3 checks)"
    )
    assert "firewall" not in text


def test_a_check_that_could_not_be_sent_says_why() -> None:
    text = unreachable_text([native(), udp4(send_error="ENETUNREACH", checks_sent=1)], ACCESS)
    assert text == (
        "home agent unreachable: no answer from T-native 2001:db8:1::1 (protocol 41, 3 checks); "
        "checks on T-udp 203.0.113.2:4191 could not be sent (ENETUNREACH); "
        "a firewall in front of the home agent or the mobile node may drop them (RFC 4487 §5.3)"
    )


def test_an_answered_candidate_that_was_not_used_is_not_hidden() -> None:
    text = unreachable_text([udp6(state="succeeded", checks_answered=3)], ACCESS)
    assert text == (
        "home agent unreachable: T-udp [2001:db8:1::1]:4191 answered (3 of 3 checks) "
        "but was not usable"
    )


def test_the_same_facts_give_the_same_text() -> None:
    # The daemon logs a text again only when it changes: no counters or times in it.
    facts = [native(), udp6(), udp4()]
    assert unreachable_text(facts, ACCESS) == unreachable_text(list(facts), ACCESS)


@pytest.mark.parametrize(
    ("status", "meaning"),
    [(129, "administratively prohibited"), (146, "auth failed"), (250, "unknown status")],
)
def test_rejection_names_the_status(status: int, meaning: str) -> None:
    assert rejection_text(status) == (
        f"home agent rejected the binding update: status {status} ({meaning}, RFC 6275 §6.1.8)"
    )


def test_unacknowledged_binding_update() -> None:
    text = unacknowledged_text(udp4(state="succeeded", checks_answered=3), 12.0)
    assert text.startswith(
        "home agent does not acknowledge the binding update: no Binding Acknowledgement "
        "within 12 s over T-udp 203.0.113.2:4191"
    )
    assert "SPI or home address" in text


def test_acknowledgements_failing_authentication_point_at_the_key() -> None:
    text = unacknowledged_text(native(state="succeeded", checks_answered=3), 12.0, 4)
    assert text == (
        "home agent does not acknowledge the binding update: the Binding Acknowledgements over "
        "T-native 2001:db8:1::1 within 12 s failed authentication; the MN-HA key or SPI differs "
        "from the home agent's (RFC 4285)"
    )
    assert text == unacknowledged_text(native(state="succeeded", checks_answered=3), 12.0, 3)


# -- `mipnode status` human output ------------------------------------------------------------
def _mn_status(diagnosis: str | None, since: float | None) -> dict[str, Any]:
    return {
        "role": "mn",
        "home_address": "2001:db8:1::100",
        "home_agent": HA6,
        "state": "idle",
        "access": {"interface": "eth0", "ipv6": "2001:db8:a::2", "ipv4": None},
        "rtt_ms": None,
        "registration_ms": None,
        "diagnosis": diagnosis,
        "diagnosis_since": since,
        "candidates": [],
        "bindings": [],
        "drops": {},
    }


def test_status_shows_the_diagnosis_right_under_the_headline(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = unreachable_text([native(), udp6()], ACCESS)
    print_status(_mn_status(text, 1_800_000_000.0))
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith(f"  ! {text}  (since ")


def test_status_without_a_diagnosis_has_no_such_line(capsys: pytest.CaptureFixture[str]) -> None:
    print_status(_mn_status(None, None))
    assert "!" not in capsys.readouterr().out


def test_what_the_network_answered_is_named_instead_of_blaming_a_firewall() -> None:
    """An ICMP error read from the socket's error queue is the network's answer: said as it is,
    and no firewall hint when every candidate was answered that way."""
    text = unreachable_text(
        [
            native(send_error="administratively prohibited from 2001:db8:f::1"),
            udp6(send_error="port unreachable from 2001:db8:1::1"),
        ],
        ACCESS,
    )
    assert (
        "T-native 2001:db8:1::1 were refused: administratively prohibited from 2001:db8:f::1"
        in (text)
    )
    assert "were refused: port unreachable from 2001:db8:1::1" in text
    assert "firewall" not in text
