"""Generated passwords meet the policy; violations are named without echoing the password."""

import pytest

from agent.model.passwords import PasswordPolicy, generate_password


@pytest.mark.parametrize("policy", [PasswordPolicy(), PasswordPolicy(require_symbol=True),
                                    PasswordPolicy(min_length=40)])
def test_generated_passwords_always_meet_the_policy(policy):
    for _ in range(200):
        pw = generate_password(policy)
        assert policy.violations(pw) == []


def test_generated_passwords_differ():
    assert len({generate_password(PasswordPolicy()) for _ in range(50)}) == 50


def test_violations_list_what_is_missing_and_never_the_password():
    v = PasswordPolicy().violations("secretpw")
    assert v == ["an uppercase letter", "a digit"]
    assert not any("secretpw" in s for s in v)
    assert PasswordPolicy().violations("aB3") == ["at least 8 characters"]
