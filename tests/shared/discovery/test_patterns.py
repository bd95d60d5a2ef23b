"""Value patterns: each shape recognised, and look-alikes refused."""

from __future__ import annotations

import pytest

from shared.discovery.patterns import text_patterns


@pytest.mark.parametrize(
    "value,expected",
    [
        ("jane.doe@mail.example", {"email"}),
        ("not an @ email", set()),
        ("303-555-0100", {"phone"}),
        ("(303) 555-0100", {"phone"}),
        ("+1 303.555.0100", {"phone"}),
        ("3035550100", {"phone", "integer"}),
        ("2024-02-29", {"date"}),
        ("02/29/2024", {"date"}),
        ("2024-02-29T08:30:00", {"datetime"}),
        ("2024-02-29 08:30", {"datetime"}),
        ("D1110", {"cdt_code"}),
        ("d2740", {"cdt_code"}),
        ("D12345", set()),
        ("14", {"tooth", "integer"}),
        ("T", {"tooth"}),
        ("AS", {"tooth"}),
        ("MOD", {"surface"}),
        ("5", {"surface", "tooth", "integer"}),
        ("MM", set()),
        ("$1,250.00", {"money"}),
        ("125.50", {"money"}),
        ("80203", {"zip", "integer"}),
        ("80203-1234", {"zip"}),
        ("Smith", set()),
        ("", set()),
    ],
)
def test_text_patterns(value: str, expected: set[str]) -> None:
    assert set(text_patterns(value)) == expected
