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


@pytest.mark.parametrize("policy", [
    PasswordPolicy(max_length=12),  # below generated_length (16): was 16 long, and failed
    PasswordPolicy(min_length=4, max_length=4, require_symbol=True),  # one of each class exactly
    PasswordPolicy(min_length=1, max_length=1, require_upper=False, require_digit=False),
    PasswordPolicy(min_length=60, max_length=60, generated_length=16),
])
def test_generated_passwords_meet_policies_whose_bounds_differ_from_the_generated_length(policy):
    for _ in range(200):
        pw = generate_password(policy)
        assert policy.violations(pw) == []
        assert policy.min_length <= len(pw) <= policy.max_length


@pytest.mark.parametrize(("fields", "reason"), [
    ({"min_length": 20, "max_length": 12}, "min_length 20 is greater than max_length 12"),
    ({"min_length": 1, "max_length": 3, "require_symbol": True},
     "4 required character classes do not fit in max_length 3"),
])
def test_a_policy_no_password_can_meet_is_refused(fields, reason):
    with pytest.raises(ValueError, match=reason):
        PasswordPolicy(**fields)
